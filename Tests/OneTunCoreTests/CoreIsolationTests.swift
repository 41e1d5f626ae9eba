import Foundation
import Testing

/// OneTunCore must stay sans-I/O: no libuv, no Foundation (its networking, Date, timers), no clock reads,
/// no threads or Dispatch, no sockets. This reads the sources and the manifest, so a change that breaks
/// the rule fails here even if it compiles.
@Suite struct CoreIsolationTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func coreSources() throws -> [(String, String)] {
        let dir = root.appendingPathComponent("Sources/OneTunCore")
        let files = FileManager.default.enumerator(at: dir, includingPropertiesForKeys: nil)!
            .compactMap { $0 as? URL }.filter { $0.pathExtension == "swift" }
        return try files.map { ($0.lastPathComponent, try String(contentsOf: $0, encoding: .utf8)) }
    }

    /// Only the standard library and libsodium may be imported.
    @Test func importsOnlyTheStandardLibraryAndLibsodium() throws {
        let sources = try Self.coreSources()
        #expect(sources.count > 30)
        for (name, text) in sources {
            for line in text.split(separator: "\n") where line.hasPrefix("import ") || line.contains(" import ") && line.hasPrefix("@") {
                let module = line.split(separator: " ").last.map(String.init) ?? ""
                #expect(["CSodium"].contains(module), "\(name): \(line)")
            }
        }
    }

    /// No clock, sleep, thread, socket or event-loop call anywhere in the core.
    @Test func readsNoClockAndOpensNoSocket() throws {
        let forbidden = [
            "clock_gettime", "gettimeofday", "time(nil)", "Date(", "DispatchTime", "ContinuousClock", "SuspendingClock",
            "ProcessInfo", "usleep", "nanosleep", "Thread", "pthread_", "DispatchQueue", "Task {", "async ", "await ",
            "socket(", "sendto(", "recvfrom(", "sendmmsg", "uv_", "getaddrinfo", "FileManager", "fopen(", "Glibc",
        ]
        for (name, text) in try Self.coreSources() {
            // Comments may mention these; code may not.
            let code = text.split(separator: "\n").filter { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("//") }.joined(separator: "\n")
            for word in forbidden {
                #expect(!code.contains(word), "\(name) uses \(word)")
            }
        }
    }

    /// The manifest gives OneTunCore no dependency but libsodium.
    @Test func manifestGivesTheCoreOnlyLibsodium() throws {
        let manifest = try String(contentsOf: Self.root.appendingPathComponent("Package.swift"), encoding: .utf8)
        let line = try #require(manifest.split(separator: "\n").first { $0.contains(".target(name: \"OneTunCore\"") })
        #expect(line.contains("dependencies: [\"CSodium\"]"), "\(line)")
    }
}
