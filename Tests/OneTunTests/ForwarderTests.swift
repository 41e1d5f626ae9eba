import Foundation
import Glibc
import Testing

/// onetun as a port forwarder, end to end: a real wireguard-go peer in a namespace made by each test,
/// forward_check.py's services on the peer's tunnel addresses, onetun forwarding ports on the namespace's
/// 127.0.0.1 to them, and forward_check.py's client checks against those ports.
@Suite(.serialized) struct ForwarderTests {
    static let needsNamespaces = TestNamespace.canCreateNamespaces

    func seconds(_ result: CheckResult) -> String { String(format: "%.2f s", result[double: "seconds"] ?? -1) }

    // MARK: - Bulk transfer

    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(3)))
    func hundredMebibytesEachWayOverIPv4() throws {
        try withForwardSession { s in
            let size = 100 << 20
            let (file, digest) = try s.randomFile("download.bin", size: size)
            try s.startServer(addresses: ["192.168.4.1"], file: file)
            try s.startOnetun(s.onetunArguments([
                "127.0.0.1:18001:192.168.4.1:\(ServicePort.sink)", "127.0.0.1:18002:192.168.4.1:\(ServicePort.source)",
            ], extra: []))
            let upload = try s.client(18001, "upload", [file.path], timeout: 90)
            #expect(upload[int: "sent"] == size, "\(upload)")
            #expect(upload[string: "digest"] == digest, "upload: \(upload)")
            let download = try s.client(18002, "download", [String(size)], timeout: 90)
            #expect(download[int: "received"] == size, "\(download)")
            #expect(download[string: "digest"] == digest, "download: \(download)")
            print("onetun forward, IPv4 inside: 100 MiB up in \(seconds(upload)), 100 MiB down in \(seconds(download))")
        }
    }

    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(2)))
    func sixteenMebibytesEachWayOverIPv6() throws {
        try withForwardSession { s in
            let size = 16 << 20
            let (file, digest) = try s.randomFile("download.bin", size: size)
            try s.startServer(addresses: ["fd00:4::1"], file: file)
            try s.startOnetun(s.onetunArguments([
                "127.0.0.1:18001:[fd00:4::1]:\(ServicePort.sink)", "127.0.0.1:18002:[fd00:4::1]:\(ServicePort.source)",
            ], source: "fd00:4::3"))
            let upload = try s.client(18001, "upload", [file.path])
            #expect(upload[string: "digest"] == digest, "upload: \(upload)")
            let download = try s.client(18002, "download", [String(size)])
            #expect(download[int: "received"] == size, "\(download)")
            #expect(download[string: "digest"] == digest, "download: \(download)")
            print("onetun forward, IPv6 inside: 16 MiB up in \(seconds(upload)), 16 MiB down in \(seconds(download))")
        }
    }

    /// Dual-stack: one process with an IPv4 and an IPv6 tunnel address reaches an IPv4 and an IPv6
    /// destination, each from the address of its version (the server checks where connections come from).
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(2)))
    func oneProcessReachesIPv4AndIPv6Destinations() throws {
        try withForwardSession { s in
            let size = 4 << 20
            let (file, digest) = try s.randomFile("download.bin", size: size)
            try s.startServer(addresses: ["192.168.4.1", "fd00:4::1"], file: file)
            try s.startOnetun(s.onetunArguments([
                "127.0.0.1:18001:192.168.4.1:\(ServicePort.sink)", "127.0.0.1:18002:[fd00:4::1]:\(ServicePort.source)",
                "127.0.0.1:18003:[fd00:4::1]:\(ServicePort.sink)", "127.0.0.1:18004:192.168.4.1:\(ServicePort.source)",
            ], source: "192.168.4.3", extra: ["--source-peer-ip", "fd00:4::3", "--log", "debug"]))
            for (up, down) in [(UInt16(18001), UInt16(18002)), (18003, 18004)] {
                let upload = try s.client(up, "upload", [file.path])
                #expect(upload[string: "digest"] == digest, "upload: \(upload)")
                let download = try s.client(down, "download", [String(size)])
                #expect(download[string: "digest"] == digest, "download: \(download)")
            }
            // The connections came from our address of each version.
            let log = s.onetunLog
            #expect(log.contains("as 192.168.4.3 and fd00:4::3"), "\(log.suffix(2000))")
            let peers = try s.namespace.run(["ss", "-Htn", "state", "time-wait"])
            #expect(peers.contains("192.168.4.3:") && peers.contains("[fd00:4::3]:"), "\(peers)")
        }
    }

    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(3)))
    func twoHundredConcurrentEchoConnections() throws {
        try withForwardSession { s in
            try s.startServer(addresses: ["192.168.4.1"])
            try s.startOnetun(s.onetunArguments(["127.0.0.1:18003:192.168.4.1:\(ServicePort.echo)"]))
            // The same check straight to the service first (inside the namespace, no tunnel): proves the
            // harness itself handles 200 connections.
            let direct = try s.client(ServicePort.echo, "echo", ["200", String(1 << 20)], host: "192.168.4.1", timeout: 60)
            try #require(direct[int: "ok"] == 200, "without onetun: \(direct)")
            let echo = try s.client(18003, "echo", ["200", String(1 << 20)], timeout: 60)
            let closed = s.onetunLog.split(separator: "\n").filter { $0.contains(": closed after") }.count
            // A connection that stalls (seen twice under heavy load): the kernel's view of every TCP
            // connection still open on the service's side (send and receive queues, window, RTO and
            // back-off, retransmissions) says which direction waits for what.
            let sockets = echo[int: "ok"] == 200 ? "" : ((try? s.namespace.run(["ss", "-tin", "state", "established", "( sport = :\(ServicePort.echo) )"])) ?? "ss failed")
            #expect(echo[int: "ok"] == 200, "\(echo); onetun logged \(closed) connections closed\n\(sockets)\n\(s.onetunLog.suffix(3000))")
            print("onetun forward: 200 concurrent connections echoing 1 MiB each in \(seconds(echo)) (\(seconds(direct)) without onetun)")
        }
    }

    /// One connection echoing 64 MiB whose client starts reading only after 3 s: the client's side fills
    /// up, onetun's window to the destination closes, the echo server blocks in send and stops reading,
    /// so its window closes too. When the client reads, the windows must reopen.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func echoWithClosedWindowsBothWays() throws {
        try withForwardSession { s in
            try s.startServer(addresses: ["192.168.4.1"])
            try s.startOnetun(s.onetunArguments(["127.0.0.1:18003:192.168.4.1:\(ServicePort.echo)"]))
            let size = 64 << 20
            let direct = try s.client(ServicePort.echo, "echo-late", [String(size), "3"], host: "192.168.4.1")
            try #require(direct[bool: "equal"] == true, "without onetun: \(direct)")
            let echo = try s.client(18003, "echo-late", [String(size), "3"])
            #expect(echo[int: "received"] == size && echo[bool: "equal"] == true, "\(echo)")
            print("onetun forward: 64 MiB echo read back after 3 s in \(seconds(echo)) (\(seconds(direct)) without onetun)")
        }
    }

    // MARK: - Connection life cycle

    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func halfCloseBothWays() throws {
        try withForwardSession { s in
            try s.startServer(addresses: ["192.168.4.1"])
            try s.startOnetun(s.onetunArguments([
                "127.0.0.1:18001:192.168.4.1:\(ServicePort.sink)", "127.0.0.1:18005:192.168.4.1:\(ServicePort.halfclose)",
            ]))
            // (a) The client half-closes first: the sink answers only after our EOF reached it, and then
            // its own FIN reaches us.
            let a = try s.client(18001, "halfclose-client", [String(200_000)])
            #expect(a[string: "reply"] == a[string: "expected"], "\(a)")
            #expect(a[bool: "eof"] == true, "\(a)")
            // (b) The server half-closes first: we read its greeting and EOF, then still send, and the
            // server must receive all of it before our EOF.
            let b = try s.client(18005, "halfclose-server", [String(200_000)])
            #expect(b[string: "greeting"] == "greeting", "\(b)")
            let expected = "halfclose received \(b[int: "sent"] ?? -1) \(b[string: "expected"] ?? "?")"
            let deadline = Date().addingTimeInterval(5)
            while !s.serverLog.contains(expected) && Date() < deadline { usleep(20_000) }
            #expect(s.serverLog.contains(expected), "\(b); services log: \(s.serverLog)")
        }
    }

    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func resetAndRefusalReachTheClientPromptly() throws {
        try withForwardSession { s in
            try s.startServer(addresses: ["192.168.4.1"])
            try s.startOnetun(s.onetunArguments([
                "127.0.0.1:18004:192.168.4.1:\(ServicePort.reset)", "127.0.0.1:18009:192.168.4.1:\(ServicePort.unused)",
            ]))
            // The destination resets the connection right after accepting it.
            let reset = try s.client(18004, "closes")
            #expect(["reset", "eof"].contains(reset[string: "outcome"]), "\(reset)")
            #expect((reset[double: "seconds"] ?? 99) < 1, "\(reset)")
            // Nothing listens on the destination port: the peer's kernel answers the SYN with RST.
            let refused = try s.client(18009, "closes")
            #expect(["reset", "eof"].contains(refused[string: "outcome"]), "\(refused)")
            #expect((refused[double: "seconds"] ?? 99) < 1, "\(refused)")
            print("onetun forward: destination reset seen as \(reset[string: "outcome"] ?? "?") after \(seconds(reset)), refusal as \(refused[string: "outcome"] ?? "?") after \(seconds(refused))")
        }
    }

    // MARK: - Configuration

    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func configurationFromTheEnvironmentOnly() throws {
        try withForwardSession { s in
            try s.startServer(addresses: ["192.168.4.1"])
            try s.startOnetun([], environment: [
                "ONETUN_PORT_FORWARD_1": "127.0.0.1:18003:192.168.4.1:\(ServicePort.echo)",
                "ONETUN_PORT_FORWARD_2": "127.0.0.1:18001:192.168.4.1:\(ServicePort.sink)",
                "ONETUN_PRIVATE_KEY_FILE": s.peer.privateKeyFile.path,
                "ONETUN_ENDPOINT_PUBLIC_KEY": s.peer.peer.publicKey,
                "ONETUN_ENDPOINT_ADDR": "127.0.0.1:\(s.peer.peer.listenPort)",
                "ONETUN_SOURCE_PEER_IP": "192.168.4.3",
            ])
            let echo = try s.client(18003, "echo", ["1", String(1 << 20)])
            #expect(echo[int: "ok"] == 1, "\(echo)")
            let upload = try s.client(18001, "halfclose-client", [String(100_000)])
            #expect(upload[string: "reply"] == upload[string: "expected"], "\(upload)")
        }
    }

    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func commandLineWinsOverTheEnvironment() throws {
        try withForwardSession { s in
            try s.startServer(addresses: ["192.168.4.1"])
            // The environment names a source address the peer does not accept and a wrong endpoint; the
            // flags name the right ones. Forwards add up, as in onetun's config.rs: the environment's own
            // forward works too, and the one both give is opened once (a second listener would fail).
            try s.startOnetun(s.onetunArguments(["127.0.0.1:18003:192.168.4.1:\(ServicePort.echo)"]), environment: [
                "ONETUN_PORT_FORWARD_1": "127.0.0.1:18009:192.168.4.1:\(ServicePort.echo)",
                "ONETUN_PORT_FORWARD_2": "127.0.0.1:18003:192.168.4.1:\(ServicePort.echo)",
                "ONETUN_SOURCE_PEER_IP": "192.168.4.9",
                "ONETUN_ENDPOINT_ADDR": "127.0.0.1:9",
                "ONETUN_ENDPOINT_PUBLIC_KEY": CommandLineTests.key,
            ])
            let echo = try s.client(18003, "echo", ["1", String(1 << 20)])
            #expect(echo[int: "ok"] == 1, "\(echo)")
            let fromEnvironment = try s.client(18009, "echo", ["1", String(1 << 16)])
            #expect(fromEnvironment[int: "ok"] == 1, "\(fromEnvironment)")
        }
    }

    /// Notations the Rust onetun takes that a migrating user may have in a script: a private key in hex
    /// (from the environment), the peer's key in base64 without its padding, one `-r` followed by two
    /// remote forwards, the same local forward twice, and an env_logger filter for --log.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func onetunNotationsFromTheRustTool() throws {
        try withForwardSession { s in
            try s.startServer(addresses: ["192.168.4.1", "127.0.0.1"])
            let base64 = try String(contentsOf: s.peer.privateKeyFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            let hex = try #require(Data(base64Encoded: base64)).map { String(format: "%02x", $0) }.joined()
            let unpadded = s.peer.peer.publicKey.replacingOccurrences(of: "=", with: "")
            let forward = "127.0.0.1:18030:192.168.4.1:\(ServicePort.echo)"
            try s.startOnetun([
                forward, forward, "--endpoint-public-key", unpadded, "--endpoint-addr", "127.0.0.1:\(s.peer.peer.listenPort)",
                "--source-peer-ip", "192.168.4.3", "--log", "onetun=debug,smoltcp=off",
                "-r", "5561:127.0.0.1:\(ServicePort.echo)", "5562:127.0.0.1:\(ServicePort.echo)",
            ], environment: ["ONETUN_PRIVATE_KEY": hex])
            let echo = try s.client(18030, "echo", ["2", String(256 << 10)])
            #expect(echo[int: "ok"] == 2, "\(echo)")
            try s.waitFor(try #require(s.onetun), "handshake with the peer complete", seconds: 10)
            for port: UInt16 in [5561, 5562] {
                let remote = try s.client(port, "echo", ["1", String(64 << 10)], host: "192.168.4.3")
                #expect(remote[int: "ok"] == 1, "remote forward on \(port): \(remote)")
            }
            #expect(s.onetunLog.split(separator: "\n").filter { $0.contains("forwarding TCP") }.count == 1, "\(s.onetunLog)")
            #expect(s.onetunLog.contains("debug"), "onetun=debug should log at debug: \(s.onetunLog.suffix(2000))")
        }
    }

    // MARK: - Bad inputs

    /// onetun with a syntactically complete tunnel configuration (nothing listens at the endpoint) plus
    /// `args`. Inside a fresh namespace when possible, so a forward that wrongly starts binds nothing here.
    func onetunWithoutPeer(_ args: [String], namespace: TestNamespace? = nil) throws -> Command.Outcome {
        // The key comes from the environment: on the command line it would draw a warning on stderr.
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("ONETUN_") }
        environment["ONETUN_PRIVATE_KEY"] = CommandLineTests.key
        let tunnel = ["--endpoint-public-key", CommandLineTests.key, "--endpoint-addr", "127.0.0.1:9", "--source-peer-ip", "192.168.4.3"]
        if let namespace {
            return try Command.execute(["ip", "netns", "exec", namespace.name, onetunExecutable] + args + tunnel,
                                       environment: environment, timeout: 15)
        }
        if Self.needsNamespaces {
            let fresh = try TestNamespace()
            defer { fresh.close() }
            return try onetunWithoutPeer(args, namespace: fresh)
        }
        return try Command.execute([onetunExecutable] + args + tunnel, environment: environment, timeout: 15)
    }

    @Test(arguments: [
        (["127.0.0.1:99999:192.168.4.1:80"], "127.0.0.1:99999:192.168.4.1:80"),
        (["18001:192.168.4.1"], "18001:192.168.4.1"),
        (["127.0.0.1:18001:192.168.4.1:80:SCTP"], "127.0.0.1:18001:192.168.4.1:80:SCTP"),
        (["127.0.0.1:18001:[fd00:4::1]:80"], "same IP version"),
    ])
    func badForwardIsAUsageError(args: [String], message: String) throws {
        let outcome = try onetunWithoutPeer(args)
        #expect(outcome.status == 2, "\(outcome.status): \(outcome.stderr)")
        let lines = outcome.stderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("onetun: ") && lines[0].contains(message), "\(outcome.stderr)")
    }

    @Test func unresolvableDestinationIsARunTimeError() throws {
        let outcome = try onetunWithoutPeer(["127.0.0.1:18001:no-such-host.invalid:80"])
        #expect(outcome.status == 1, "\(outcome.status): \(outcome.stderr)")
        #expect(outcome.stderr.contains("cannot resolve 'no-such-host.invalid'"), "\(outcome.stderr)")
    }

    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason))
    func localPortInUseIsARunTimeError() throws {
        let namespace = try TestNamespace()
        defer { namespace.close() }
        let script = namespace.directory.appendingPathComponent("forward_check.py")
        try ForwardCheckScript.source.write(to: script, atomically: true, encoding: .utf8)
        // Something else already listens on 127.0.0.1:18001 in this namespace.
        let holder = try namespace.spawn(["python3", script.path, "serve", "127.0.0.1", "--echo", "18001"], logName: "holder.log")
        defer { holder.terminate() }
        for _ in 0..<250 where !holder.output.contains("ready") { usleep(20_000) }
        #expect(holder.output.contains("ready"), "\(holder.output)")
        let outcome = try onetunWithoutPeer(["127.0.0.1:18001:192.168.4.1:80"], namespace: namespace)
        #expect(outcome.status == 1, "\(outcome.status): \(outcome.stderr)")
        #expect(outcome.stderr.contains("cannot listen on 127.0.0.1:18001: address already in use"), "\(outcome.stderr)")
    }
}
