import Foundation
import Glibc
import Testing

/// The SOCKS5 proxy against real clients: curl, and a raw-socket client for the error replies, through a
/// real wireguard-go peer whose namespace runs Python's HTTP server.
@Suite(.serialized) struct ProxyTests {
    static var needsNamespaces: Bool { ForwarderTests.needsNamespaces }

    /// Python's HTTP server on every address of the peer's namespace (IPv4 and IPv6), serving the
    /// session's scratch directory; returns once it answers.
    func startHTTPServer(_ s: ForwardSession, port: UInt16 = 8000) throws {
        let server = try s.namespace.spawn(["python3", "-m", "http.server", String(port), "--bind", "::", "--directory", s.directory.path], logName: "http.log")
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if (try? s.namespace.run(["curl", "-sf", "-o", "/dev/null", "http://192.168.4.1:\(port)/"], timeout: 5)) != nil { return }
            usleep(100_000)
        }
        _ = server
        throw HarnessError("the HTTP server did not answer within 10 s")
    }

    /// Names for the namespace's resolver (`ip netns exec` bind-mounts this file over /etc/hosts).
    func hosts(_ s: ForwardSession, _ lines: String) throws -> String {
        let directory = "/etc/netns/\(s.namespace.name)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try "127.0.0.1 localhost\n\(lines)".write(toFile: directory + "/hosts", atomically: false, encoding: .utf8)
        return directory
    }

    func curl(_ s: ForwardSession, _ arguments: String, timeout: Double = 60) throws -> Command.Outcome {
        try Command.execute(["ip", "netns", "exec", s.namespace.name, "sh", "-c", "curl -sS --max-time 50 \(arguments)"], timeout: timeout)
    }

    /// curl through the SOCKS5 proxy: names resolved by onetun (--socks5-hostname) and by curl (--socks5),
    /// IPv4 and IPv6 destinations, 16 MiB each, SHA-256-equal.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(2)))
    func curlThroughSocks5() throws {
        try withForwardSession { s in
            let (_, digest) = try s.randomFile("big.bin", size: 16 << 20)
            let directory = try hosts(s, "192.168.4.1 web.test\nfd00:4::1 web6.test\n")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            try startHTTPServer(s)
            try s.startOnetun(s.onetunArguments([], source: "192.168.4.3,fd00:4::3", extra: ["--socks5", "11080", "--log", "debug"]))
            for (flag, url) in [
                ("--socks5-hostname", "http://web.test:8000/big.bin"), ("--socks5", "http://192.168.4.1:8000/big.bin"),
                ("--socks5-hostname", "http://web6.test:8000/big.bin"), ("--socks5", "http://[fd00:4::1]:8000/big.bin"),
            ] {
                let started = Date()
                let r = try curl(s, "\(flag) 127.0.0.1:11080 '\(url)' | sha256sum")
                #expect(r.stdout.hasPrefix(digest), "\(flag) \(url): \(r.stdout) \(r.stderr)\n\(s.onetunLog.suffix(2000))")
                print("onetun SOCKS5: curl \(flag) \(url), 16 MiB in \(String(format: "%.2f", Date().timeIntervalSince(started))) s")
            }
        }
    }

    /// With a user name and password (a wireproxy [Socks5] section, the password from the environment):
    /// the right ones get through, wrong ones and none are refused.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func socks5Authentication() throws {
        try withForwardSession { s in
            _ = try s.randomFile("small.bin", size: 1000)
            try startHTTPServer(s)
            let conf = s.directory.appendingPathComponent("proxy.conf")
            try "[Socks5]\nBindAddress = 127.0.0.1:11081\nUsername = alice\nPassword = $PROXY_PASSWORD\n".write(to: conf, atomically: true, encoding: .utf8)
            try s.startOnetun(s.onetunArguments([], extra: ["-c", conf.path, "--log", "debug"]), environment: ["PROXY_PASSWORD": "s3cret"])
            let good = try curl(s, "-o /dev/null -w '%{http_code}' --socks5 alice:s3cret@127.0.0.1:11081 http://192.168.4.1:8000/small.bin")
            #expect(good.stdout == "200", "\(good.stdout) \(good.stderr)")
            let wrong = try curl(s, "-o /dev/null --socks5 alice:guess@127.0.0.1:11081 http://192.168.4.1:8000/small.bin")
            #expect(wrong.status != 0 && wrong.stderr.contains("rejected"), "\(wrong.status) \(wrong.stderr)")
            let none = try curl(s, "-o /dev/null --socks5 127.0.0.1:11081 http://192.168.4.1:8000/small.bin")
            #expect(none.status != 0, "\(none.status) \(none.stderr)")
        }
    }

    /// The replies to bad and failing requests, from a raw client: each request in the table (after the
    /// greeting) and the reply code it must get.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func socks5ErrorReplies() throws {
        try withForwardSession { s in
            let directory = try hosts(s, "192.168.4.1 web.test\n")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            try s.startServer(addresses: ["192.168.4.1"])
            // Only IPv4 in the tunnel, and only 192.168.4.0/24 through the peer.
            let conf = s.directory.appendingPathComponent("peer.conf")
            try "[Peer]\nPublicKey = \(s.peer.peer.publicKey)\nAllowedIPs = 192.168.4.0/24\nEndpoint = 127.0.0.1:\(s.peer.peer.listenPort)\n"
                .write(to: conf, atomically: true, encoding: .utf8)
            try s.startOnetun(["-c", conf.path, "--private-key-file", s.peer.privateKeyFile.path, "--source-peer-ip", "192.168.4.3",
                               "--socks5", "11082", "--log", "debug", "--connect-timeout", "2"])
            let client = """
                import socket, struct, sys, json
                results = {}
                cases = json.loads(sys.argv[1])
                for name, request in cases.items():
                    s = socket.create_connection(("127.0.0.1", 11082), timeout=10)
                    s.sendall(b"\\x05\\x01\\x00" + bytes.fromhex(request))
                    reply = b""
                    try:
                        while len(reply) < 4:
                            d = s.recv(64)
                            if not d: break
                            reply += d
                    except OSError as e:
                        reply += b"!"
                    results[name] = reply.hex()
                    s.close()
                print(json.dumps(results))
                """
            let script = s.directory.appendingPathComponent("socks_client.py")
            try client.write(to: script, atomically: true, encoding: .utf8)
            func request(_ cmd: UInt8, _ address: String, _ port: UInt16) -> String {
                let p = String(format: "%04x", port)
                return String(format: "0501%02x", cmd) + address + p
            }
            let name = Array("nowhere.invalid".utf8)
            let cases: [String: (String, String)] = [
                // name: (request hex after VER NMETHODS METHODS, the reply's first four bytes)
                "connect": (request(1, "01c0a80401", ServicePort.echo), "05000001"),
                "refused": (request(1, "01c0a80401", ServicePort.unused), "05050001"),
                "bind": (String(format: "05020001c0a80401%04x", ServicePort.echo), "05070001"),
                "badAddressType": ("050100090000", "05080001"),
                "noRoute": (request(1, "010a090909", 80), "05040001"),
                "ipv6WithoutAddress": (request(1, "04fd000004000000000000000000000001", 80), "05080001"),
                "unknownName": (request(1, "03" + String(format: "%02x", name.count) + name.map { String(format: "%02x", $0) }.joined(), 80), "05040001"),
                "timeout": (request(1, "01c0a804fe", 80), "05060001"),
            ]
            let json = String(data: try JSONSerialization.data(withJSONObject: cases.mapValues { $0.0 }), encoding: .utf8)!
            let out = try s.namespace.run(["python3", script.path, json], timeout: 60)
            let replies = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: String])
            for (name, (_, expected)) in cases {
                // The method selection (05 00) first, then the reply.
                #expect(replies[name]?.hasPrefix("0500" + expected) == true, "\(name): \(replies[name] ?? "none"), expected 0500\(expected)…\n\(s.onetunLog.suffix(1500))")
            }
        }
    }
}
