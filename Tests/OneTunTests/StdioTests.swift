import Foundation
import Glibc
import Testing

/// `--stdio HOST:PORT`: one connection through the tunnel over standard input and output, against a real
/// wireguard-go peer's echo service.
@Suite(.serialized) struct StdioTests {
    static var needsNamespaces: Bool { ForwarderTests.needsNamespaces }

    /// 16 MiB through the echo service, standard input and output as pipes and then as files: the same
    /// bytes come back, nothing else reaches standard output (logs go to standard error), and onetun
    /// exits 0 by itself once both directions are done.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(2)))
    func oneConnectionOverStandardInputAndOutput() throws {
        try withForwardSession { s in
            try s.startServer(addresses: ["192.168.4.1"])
            let (file, digest) = try s.randomFile("in.bin", size: 16 << 20)
            let command = ([onetunExecutable] + s.onetunArguments([], extra: ["--stdio", "192.168.4.1:\(ServicePort.echo)", "--log", "debug"]))
                .map { "'\($0)'" }.joined(separator: " ")
            let started = Date()
            let piped = try s.namespace.run(["sh", "-c", "cat '\(file.path)' | \(command) 2>'\(s.directory.path)/stdio-pipe.log' | sha256sum"], timeout: 90)
            let pipeSeconds = Date().timeIntervalSince(started)
            let pipeLog = (try? String(contentsOfFile: "\(s.directory.path)/stdio-pipe.log", encoding: .utf8)) ?? ""
            #expect(piped.hasPrefix(digest), "\(piped)\n\(pipeLog.suffix(3000))")
            #expect(pipeLog.contains("--stdio: done, 16777216 bytes sent, 16777216 received"), "\(pipeLog.suffix(3000))")

            let out = s.directory.appendingPathComponent("out.bin")
            let again = Date()
            _ = try s.namespace.run(["sh", "-c", "\(command) <'\(file.path)' >'\(out.path)' 2>'\(s.directory.path)/stdio-file.log'"], timeout: 90)
            let fileSeconds = Date().timeIntervalSince(again)
            let copied = try Command.run(["sha256sum", out.path])
            let fileLog = (try? String(contentsOfFile: "\(s.directory.path)/stdio-file.log", encoding: .utf8)) ?? ""
            #expect(copied.hasPrefix(digest), "\(copied)\n\(fileLog.suffix(3000))")
            print("onetun --stdio: 16 MiB echoed through pipes in \(String(format: "%.2f", pipeSeconds)) s, through files in \(String(format: "%.2f", fileSeconds)) s")

            // wireproxy's [STDIOTunnel] from a configuration file does the same.
            let conf = s.directory.appendingPathComponent("stdio.conf")
            try "[STDIOTunnel]\nTarget = 192.168.4.1:\(ServicePort.echo)\n".write(to: conf, atomically: true, encoding: .utf8)
            let viaFile = try s.namespace.run(["sh", "-c", "echo 'hello through the tunnel' | " + ([onetunExecutable] + s.onetunArguments([], extra: ["-c", conf.path])).map { "'\($0)'" }.joined(separator: " ")], timeout: 30)
            #expect(viaFile == "hello through the tunnel\n", "\(viaFile)")

            // A destination that refuses: onetun says so on standard error and exits 1.
            let refused = try Command.execute(["ip", "netns", "exec", s.namespace.name, "sh", "-c",
                                               ([onetunExecutable] + s.onetunArguments([], extra: ["--stdio", "192.168.4.1:\(ServicePort.unused)"])).map { "'\($0)'" }.joined(separator: " ") + " </dev/null"], timeout: 30)
            #expect(refused.status == 1 && refused.stdout.isEmpty && refused.stderr.contains("--stdio"), "\(refused.status) \(refused.stdout) \(refused.stderr)")
        }
    }
}
