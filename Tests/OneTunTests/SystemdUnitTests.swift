import Foundation
import Glibc
import Testing

/// The systemd unit in dist/: what systemd itself says of it.
@Suite struct SystemdUnitTests {
    /// `systemd-analyze verify` loads the unit as systemd would (every directive, the specifiers, the
    /// ExecStart binary, the man: link in Documentation=). An instance of the template, with ExecStart
    /// pointing at the onetun under test (verify wants an executable there) and MANPATH at our manual.
    @Test func systemdAnalyzeVerifyAcceptsTheUnit() throws {
        let scratch = try ScratchDirectory("unit")
        let unit = try String(contentsOf: packageRoot.appendingPathComponent("dist/onetun@.service"), encoding: .utf8)
        #expect(unit.contains("\nExecStart=/usr/bin/onetun -c "), "the packages point ExecStart at PREFIX/bin/onetun")
        let instance = unit.replacingOccurrences(of: "\nExecStart=/usr/bin/onetun ", with: "\nExecStart=\(onetunExecutable) ")
        try instance.write(toFile: scratch.path("onetun@wg0.service"), atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: scratch.path("man/man1"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: packageRoot.appendingPathComponent("man/onetun.1").path,
                                         toPath: scratch.path("man/man1/onetun.1"))

        var environment = ProcessInfo.processInfo.environment
        environment["MANPATH"] = scratch.path("man")
        let verify = try Command.execute(["systemd-analyze", "verify", scratch.path("onetun@wg0.service")],
                                         environment: environment, timeout: 60)
        #expect(verify.status == 0 && verify.stderr.trimmed.isEmpty,
                "systemd-analyze verify (\(verify.status)): \(verify.stderr) \(verify.stdout)")

        // The hardening, as systemd scores it: 0 is the most locked down, 10 nothing at all. The unit
        // scores 1.2 with systemd 252; it keeps the network (its job) and the Internet and Unix sockets.
        let security = try Command.execute(
            ["systemd-analyze", "security", "--offline=yes", "--no-pager", scratch.path("onetun@wg0.service")],
            environment: environment, timeout: 60)
        let line = security.stdout.split(separator: "\n").first { $0.contains("Overall exposure level") } ?? ""
        let score = line.split(separator: ":").last.flatMap { Double($0.split(separator: " ").first ?? "") }
        #expect(score != nil && score! <= 2.0, "systemd-analyze security: \(line) \(security.stderr)")
        print("systemd-analyze security: \(line.trimmingCharacters(in: .whitespaces))")
    }
}
