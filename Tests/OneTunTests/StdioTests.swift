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

            // SIGTERM while standard input is still open: onetun stops at once and says it did not finish (exit 1).
            // Standard input a FIFO whose writer (a sleep, killed by its PID below) never writes.
            let fifo = s.directory.appendingPathComponent("stdin.fifo").path
            let sleeper = s.directory.appendingPathComponent("sleep.pid").path
            let waiting = try s.namespace.spawn(["sh", "-c", "mkfifo '\(fifo)'; (sleep 30 >'\(fifo)' & echo $! >'\(sleeper)'); " + ([onetunExecutable] + s.onetunArguments([], extra: ["--stdio", "192.168.4.1:\(ServicePort.echo)", "--log", "debug"])).map { "'\($0)'" }.joined(separator: " ") + " <'\(fifo)'; echo exit=$?"], logName: "stdio-term.log")
            defer {
                if let pid = (try? String(contentsOfFile: sleeper, encoding: .utf8)).flatMap({ Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }) { kill(pid, SIGKILL) }
            }
            try s.waitFor(waiting, "--stdio: connection", seconds: 10)
            let pids = try Command.run(["pgrep", "-P", String(waiting.pid)]).split(separator: "\n").compactMap { Int32($0) }
            for pid in pids where ((try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? "").hasPrefix("onetun") {
                kill(pid, SIGTERM)
            }
            try s.waitFor(waiting, "exit=", seconds: 10)
            let termLog = (try? String(contentsOf: s.directory.appendingPathComponent("stdio-term.log"), encoding: .utf8)) ?? ""
            #expect(termLog.contains("exit=1") && termLog.contains("--stdio: interrupted"), "\(termLog.suffix(1500))")

            // A destination that refuses: onetun says so on standard error and exits 1.
            let refused = try Command.execute(["ip", "netns", "exec", s.namespace.name, "sh", "-c",
                                               ([onetunExecutable] + s.onetunArguments([], extra: ["--stdio", "192.168.4.1:\(ServicePort.unused)"])).map { "'\($0)'" }.joined(separator: " ") + " </dev/null"], timeout: 30)
            #expect(refused.status == 1 && refused.stdout.isEmpty && refused.stderr.contains("--stdio"), "\(refused.status) \(refused.stdout) \(refused.stderr)")
        }
    }

    /// ssh with `ProxyCommand onetun … --stdio %h:%p` and nothing else set up: an sshd in the peer's
    /// namespace (a throw-away host key, listening only on the tunnel address) runs `sha256sum` over
    /// 16 MiB sent on ssh's standard input, and the digest comes back.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(2)))
    func sshThroughStdio() throws {
        try withForwardSession { s in
            let dir = s.directory.path
            try FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true)
            _ = try Command.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "\(dir)/host_key"])
            _ = try Command.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "\(dir)/client_key"])
            try FileManager.default.copyItem(atPath: "\(dir)/client_key.pub", toPath: "\(dir)/authorized_keys")
            let sshd = try s.namespace.spawn([
                "/usr/sbin/sshd", "-D", "-e", "-f", "/dev/null", "-o", "ListenAddress=192.168.4.1", "-o", "Port=2222",
                "-o", "HostKey=\(dir)/host_key", "-o", "AuthorizedKeysFile=\(dir)/authorized_keys", "-o", "PidFile=none",
                "-o", "StrictModes=no", "-o", "UsePAM=no", "-o", "PermitRootLogin=yes", "-o", "PasswordAuthentication=no",
            ], logName: "sshd.log")
            try s.waitFor(sshd, "Server listening", seconds: 10)
            let (file, digest) = try s.randomFile("in.bin", size: 16 << 20)
            let proxy = ([onetunExecutable] + s.onetunArguments([], extra: ["--stdio", "%h:%p"])).map { "'\($0)'" }.joined(separator: " ")
            let started = Date()
            let out = try s.namespace.run([
                "sh", "-c",
                "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "
                    + "-i '\(dir)/client_key' -p 2222 -o \"ProxyCommand=\(proxy)\" root@192.168.4.1 sha256sum <'\(file.path)'",
            ], timeout: 90)
            #expect(out.hasPrefix(digest), "\(out)")
            print("ssh through onetun --stdio: sha256sum of 16 MiB on the far side in \(String(format: "%.2f", Date().timeIntervalSince(started))) s")
        }
    }
}
