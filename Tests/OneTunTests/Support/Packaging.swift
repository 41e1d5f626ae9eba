import Foundation
import Glibc

// Helpers of the packaging tests (SystemdUnitTests, CompletionTests, DistTarballTests, DebianPackageTests).

/// The package's root directory (this file is Tests/OneTunTests/Support/Packaging.swift).
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent()

/// A scratch directory for one test, removed by `close()` (and by `deinit`).
final class ScratchDirectory {
    let url: URL
    init(_ name: String) throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("onetun-\(name)-\(randomHex(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    deinit { close() }
    func close() { try? FileManager.default.removeItem(at: url) }
    func path(_ component: String) -> String { url.appendingPathComponent(component).path }
}

/// Runs `args`, expecting success; its standard output, or a thrown error with its standard error.
@discardableResult
func runChecked(_ args: [String], environment: [String: String]? = nil, timeout: Double = 60) throws -> String {
    let outcome = try Command.execute(args, environment: environment, timeout: timeout)
    guard outcome.status == 0 else {
        throw HarnessError("`\(args.joined(separator: " "))` failed (\(outcome.status)): \(outcome.stderr.trimmed) \(outcome.stdout.trimmed)")
    }
    return outcome.stdout
}

/// What `make dist` and `make deb` leave in the package root (`make test` makes both first), or where
/// ONETUN_DIST_TARBALL and ONETUN_DEB say; the newest when there are several.
enum DistArtifacts {
    static let tarball = find("ONETUN_DIST_TARBALL") { $0.hasPrefix("onetun-") && $0.hasSuffix(".tar.gz") && $0.contains("-linux-") }
    static let deb = find("ONETUN_DEB") { $0.hasPrefix("onetun_") && $0.hasSuffix(".deb") }

    /// With ONETUN_REQUIRE_E2E=1 (CI) the packaging tests run, and fail when `make test` made nothing.
    static let tarballTestsEnabled = tarball != nil || TestNamespace.isRequired
    static let debTestsEnabled = (deb != nil && getuid() == 0) || TestNamespace.isRequired

    private static func find(_ variable: String, _ matches: (String) -> Bool) -> URL? {
        if let path = ProcessInfo.processInfo.environment[variable], !path.isEmpty { return URL(fileURLWithPath: path) }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: packageRoot.path)) ?? []
        return names.filter(matches).map { packageRoot.appendingPathComponent($0) }.max { modified($0) < modified($1) }
    }

    private static func modified(_ url: URL) -> Date {
        ((try? FileManager.default.attributesOfItem(atPath: url.path))?[.modificationDate] as? Date) ?? .distantPast
    }
}

/// The libraries `ldd` says `binary` loads: (name, resolved path), the vDSO with no path.
func sharedLibraries(of binary: String) throws -> [(name: String, path: String?)] {
    try runChecked(["ldd", binary]).split(separator: "\n").map { line in
        let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        if fields.count >= 3 && fields[1] == "=>" { return (fields[0], fields[2].hasPrefix("/") ? fields[2] : nil) }
        return (fields.first ?? "", fields.first.flatMap { $0.hasPrefix("/") ? $0 : nil })
    }
}
