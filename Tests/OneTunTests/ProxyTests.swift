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

    func curl(_ s: ForwardSession, _ arguments: String, timeout: Double = 60) throws -> Command.Outcome {
        try Command.execute(["ip", "netns", "exec", s.namespace.name, "sh", "-c", "curl -sS --max-time 50 \(arguments)"], timeout: timeout)
    }

    /// curl through the SOCKS5 proxy: names resolved by onetun (--socks5-hostname) and by curl (--socks5),
    /// IPv4 and IPv6 destinations, 16 MiB each, SHA-256-equal.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(2)))
    func curlThroughSocks5() throws {
        try withForwardSession { s in
            let (_, digest) = try s.randomFile("big.bin", size: 16 << 20)
            try s.namespace.setHosts("192.168.4.1 web.test\nfd00:4::1 web6.test\n")
            defer { s.namespace.removeHosts() }
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
            // A client that connected and said nothing does not hold up SIGTERM.
            let idle = try s.namespace.spawn(["python3", "-c", "import socket, time\ns = socket.create_connection(('127.0.0.1', 11080))\nprint('connected', flush=True)\ntime.sleep(30)"], logName: "idle.log")
            try s.waitFor(idle, "connected", seconds: 10)
            let forced = try #require(s.onetun).terminate(grace: 5)
            #expect(!forced, "onetun needed SIGKILL with a proxy client in its handshake\n\(s.onetunLog.suffix(1500))")
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
            try s.namespace.setHosts("192.168.4.1 web.test\n")
            defer { s.namespace.removeHosts() }
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
            // A client that sends everything at once and half-closes before the reply (1 KiB: its FIN is
            // read while the connection opens; 100 KiB: the handshake buffer fills first): its bytes reach
            // the echo service whole, then its FIN; the echo and the end come back after the reply.
            let eager = """
                import socket, struct, os, sys
                outcome = []
                for size in (1024, 100 * 1024):
                    data = os.urandom(size)
                    s = socket.create_connection(("127.0.0.1", 11082), timeout=10)
                    s.sendall(b"\\x05\\x01\\x00" + b"\\x05\\x01\\x00\\x01" + socket.inet_aton("192.168.4.1") + struct.pack("!H", \(ServicePort.echo)) + data)
                    s.shutdown(socket.SHUT_WR)
                    got = b""
                    while True:
                        d = s.recv(65536)
                        if not d: break
                        got += d
                    outcome.append("ok" if got[:2] == b"\\x05\\x00" and got[2:4] == b"\\x05\\x00" and got[12:] == data else "bad %d %d %s" % (size, len(got), got[:12].hex()))
                print(" ".join(outcome))
                """
            let eagerScript = s.directory.appendingPathComponent("socks_eager.py")
            try eager.write(to: eagerScript, atomically: true, encoding: .utf8)
            let eagerOut = try s.namespace.run(["python3", eagerScript.path], timeout: 60)
            #expect(eagerOut.trimmed == "ok ok", "\(eagerOut)\n\(s.onetunLog.suffix(1500))")
        }
    }

    /// Names only the peer's DNS server knows (dnsmasq, authoritative for tunnel.test, listening only on
    /// the tunnel address), asked through the tunnel: curl --socks5-hostname gets 16 MiB from
    /// web.tunnel.test, SHA-256-equal; a name that does not exist reaches curl as SOCKS5 reply 04; with a
    /// first server that never answers, the second is asked (failover); and a truncated UDP answer is
    /// asked again over TCP (a small server written here, on a second address). A port forward and --stdio
    /// to such a name too.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(2)))
    func namesThroughTheTunnel() throws {
        try withForwardSession { s in
            let (_, digest) = try s.randomFile("big.bin", size: 16 << 20)
            try startHTTPServer(s)
            try s.startServer(addresses: ["192.168.4.1"])
            _ = try s.namespace.spawn(["dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--bind-interfaces",
                                       "--listen-address=192.168.4.1", "--port=53", "--local=/tunnel.test/",
                                       "--host-record=web.tunnel.test,192.168.4.1", "--pid-file=", "--log-queries"], logName: "dnsmasq.log")
            // A server on 192.168.4.2 that truncates every UDP answer and answers in full over TCP.
            try s.namespace.run(["ip", "addr", "add", "192.168.4.2/32", "dev", s.peer.peer.interface])
            let truncating = s.directory.appendingPathComponent("tc_dns.py")
            try """
                import socket, struct, threading
                def answer(query, full):
                    ident, flags = struct.unpack("!HH", query[:4])
                    end = 12
                    while query[end] != 0: end += 1 + query[end]
                    question = query[12:end + 5]
                    qtype = struct.unpack("!H", query[end + 1:end + 3])[0]
                    if not full:
                        return struct.pack("!HHHHHH", ident, 0x8380, 1, 0, 0, 0) + question
                    records = b""
                    if qtype == 1:
                        records = b"\\xc0\\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton("192.168.4.1")
                    return struct.pack("!HHHHHH", ident, 0x8180, 1, 1 if records else 0, 0, 0) + question + records
                def udp():
                    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    u.bind(("192.168.4.2", 53))
                    while True:
                        q, a = u.recvfrom(512)
                        u.sendto(answer(q, False), a)
                def tcp():
                    t = socket.socket()
                    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    t.bind(("192.168.4.2", 53))
                    t.listen(16)
                    print("ready", flush=True)
                    while True:
                        c, _ = t.accept()
                        n = struct.unpack("!H", c.recv(2, socket.MSG_WAITALL))[0]
                        q = c.recv(n, socket.MSG_WAITALL)
                        r = answer(q, True)
                        c.sendall(struct.pack("!H", len(r)) + r)
                        c.close()
                threading.Thread(target=udp, daemon=True).start()
                tcp()
                """.write(to: truncating, atomically: true, encoding: .utf8)
            let tc = try s.namespace.spawn(["python3", "-u", truncating.path], logName: "tc_dns.log")
            try s.waitFor(tc, "ready", seconds: 10)

            // 192.168.4.9 does not exist: the first server never answers.
            try s.startOnetun(s.onetunArguments(["127.0.0.1:18090:web.tunnel.test:8000"], extra: ["--dns", "192.168.4.9,192.168.4.1", "--socks5", "11083", "--log", "debug"]))
            let started = Date()
            let big = try curl(s, "--socks5-hostname 127.0.0.1:11083 http://web.tunnel.test:8000/big.bin | sha256sum")
            #expect(big.stdout.hasPrefix(digest), "\(big.stdout) \(big.stderr)\n\(s.onetunLog.suffix(3000))")
            print("onetun SOCKS5 with DNS through the tunnel (first server silent): 16 MiB from web.tunnel.test in \(String(format: "%.2f", Date().timeIntervalSince(started))) s")
            // A port forward to a name only the tunnel's DNS knows: resolved for each client.
            for _ in 0..<2 {
                let forwarded = try curl(s, "http://127.0.0.1:18090/big.bin | sha256sum")
                #expect(forwarded.stdout.hasPrefix(digest), "\(forwarded.stdout) \(forwarded.stderr)\n\(s.onetunLog.suffix(3000))")
            }
            let missing = try curl(s, "--socks5-hostname 127.0.0.1:11083 http://nope.tunnel.test:8000/")
            #expect(missing.status == 97 && missing.stderr.contains("(4)"), "\(missing.status) \(missing.stderr)\n\(s.onetunLog.suffix(2000))")
            #expect(s.onetunLog.contains("nope.tunnel.test:8000 through the tunnel: no such name"), "\(s.onetunLog.suffix(2000))")
            s.onetun?.terminate()

            // Only the truncating server: the answer comes over TCP.
            try s.startOnetun(s.onetunArguments([], extra: ["--dns", "192.168.4.2", "--socks5", "11084", "--log", "debug"]))
            let viaTCP = try curl(s, "-o /dev/null -w '%{http_code}' --socks5-hostname 127.0.0.1:11084 http://anything.test:8000/big.bin")
            #expect(viaTCP.stdout == "200", "\(viaTCP.stdout) \(viaTCP.stderr)\n\(s.onetunLog.suffix(3000))")
            s.onetun?.terminate()

            // --stdio by a name the tunnel's DNS knows.
            let command = ([onetunExecutable] + s.onetunArguments([], extra: ["--dns", "192.168.4.1", "--stdio", "web.tunnel.test:\(ServicePort.echo)"]))
                .map { "'\($0)'" }.joined(separator: " ")
            let echoed = try s.namespace.run(["sh", "-c", "echo 'by name' | \(command)"], timeout: 30)
            #expect(echoed == "by name\n", "\(echoed)")
        }
    }

    /// curl through the HTTP proxy: a plain GET in absolute-form and a CONNECT tunnel (--proxytunnel),
    /// 16 MiB each, SHA-256-equal; two requests on one client connection (keep-alive, the upstream
    /// connection reused).
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(2)))
    func curlThroughTheHTTPProxy() throws {
        try withForwardSession { s in
            let (_, digest) = try s.randomFile("big.bin", size: 16 << 20)
            _ = try s.randomFile("small.bin", size: 1000)
            try s.namespace.setHosts("192.168.4.1 web.test\n")
            defer { s.namespace.removeHosts() }
            try startHTTPServer(s)
            try s.startOnetun(s.onetunArguments([], extra: ["--http-proxy", "18080", "--log", "debug"]))
            for (flags, what) in [("", "GET"), ("--proxytunnel", "CONNECT")] {
                let started = Date()
                let r = try curl(s, "\(flags) -x http://127.0.0.1:18080 http://web.test:8000/big.bin | sha256sum")
                #expect(r.stdout.hasPrefix(digest), "\(what): \(r.stdout) \(r.stderr)\n\(s.onetunLog.suffix(3000))")
                print("onetun HTTP proxy: \(what), 16 MiB in \(String(format: "%.2f", Date().timeIntervalSince(started))) s")
            }
            let twice = try curl(s, "-v -o /dev/null -o /dev/null -x http://127.0.0.1:18080 http://web.test:8000/small.bin http://web.test:8000/small.bin")
            #expect(twice.status == 0 && twice.stderr.components(separatedBy: "HTTP/1.1 200").count == 3, "\(twice.stderr)")
            #expect(twice.stderr.contains("Re-using existing connection") || twice.stderr.contains("Reusing existing"), "\(twice.stderr)")
        }
    }

    /// Credentials (Basic): 407 with a challenge without them or with wrong ones, through with the right
    /// ones; and the error replies to a table of requests from a raw client: malformed (400), a head over
    /// 16 KiB (431), TRACE (405), a refused destination (502), a name that does not resolve (502), a
    /// destination that never answers (504); a slowloris client is closed after the head time-out while
    /// another client is served.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(2)))
    func httpProxyAuthenticationAndErrors() throws {
        try withForwardSession { s in
            _ = try s.randomFile("small.bin", size: 1000)
            try startHTTPServer(s)
            try s.startServer(addresses: ["192.168.4.1"])
            let conf = s.directory.appendingPathComponent("http.conf")
            try "[http]\nBindAddress = 127.0.0.1:18081\nUsername = bob\nPassword = pw\n\n[http]\nBindAddress = 127.0.0.1:18082\n"
                .write(to: conf, atomically: true, encoding: .utf8)
            try s.startOnetun(s.onetunArguments([], extra: ["-c", conf.path, "--connect-timeout", "2", "--log", "debug"]))
            let none = try curl(s, "-o /dev/null -w '%{http_code}' -x http://127.0.0.1:18081 http://192.168.4.1:8000/small.bin")
            #expect(none.stdout == "407", "\(none.stdout) \(none.stderr)")
            let wrong = try curl(s, "-o /dev/null -w '%{http_code}' -x http://bob:nope@127.0.0.1:18081 http://192.168.4.1:8000/small.bin")
            #expect(wrong.stdout == "407", "\(wrong.stdout) \(wrong.stderr)")
            let good = try curl(s, "-o /dev/null -w '%{http_code}' -x http://bob:pw@127.0.0.1:18081 http://192.168.4.1:8000/small.bin")
            #expect(good.stdout == "200", "\(good.stdout) \(good.stderr)")

            let client = """
                import socket, sys, json, time
                results = {}
                for name, request in json.loads(sys.argv[1]).items():
                    s = socket.create_connection(("127.0.0.1", 18082), timeout=15)
                    s.sendall(request.encode())
                    reply = b""
                    try:
                        while b"\\r\\n" not in reply:
                            d = s.recv(4096)
                            if not d: break
                            reply += d
                    except OSError:
                        pass
                    results[name] = reply.split(b"\\r\\n")[0].decode(errors="replace")
                    s.close()
                # A slowloris: part of a head, then nothing; closed by the proxy while others are served.
                slow = socket.create_connection(("127.0.0.1", 18082), timeout=30)
                slow.sendall(b"GET http://192.168.4.1:8000/small.bin HTTP/1.1\\r\\nHost: x\\r\\n")
                started = time.monotonic()
                other = socket.create_connection(("127.0.0.1", 18082), timeout=10)
                other.sendall(b"GET http://192.168.4.1:8000/small.bin HTTP/1.1\\r\\nHost: 192.168.4.1\\r\\nConnection: close\\r\\n\\r\\n")
                results["otherDuringSlowloris"] = other.recv(4096).split(b"\\r\\n")[0].decode(errors="replace")
                try:
                    results["slowlorisClosedAfter"] = round(time.monotonic() - started, 1) if slow.recv(100) == b"" else -1
                except OSError:
                    results["slowlorisClosedAfter"] = round(time.monotonic() - started, 1)
                # 3,000 pipelined requests the proxy answers itself, from a client that reads nothing for
                # 2 s: every answer arrives, in order, once it reads.
                p = socket.create_connection(("127.0.0.1", 18082), timeout=15)
                p.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                p.sendall(b"OPTIONS http://192.168.4.1:8000/ HTTP/1.1\\r\\nHost: 192.168.4.1\\r\\nMax-Forwards: 0\\r\\n\\r\\n" * 3000)
                time.sleep(2)
                got = b""
                try:
                    while got.count(b"HTTP/1.1 200") < 3000:
                        d = p.recv(65536)
                        if not d: break
                        got += d
                except OSError:
                    pass
                results["pipelinedAnswers"] = got.count(b"HTTP/1.1 200")
                print(json.dumps(results))
                """
            let script = s.directory.appendingPathComponent("http_client.py")
            try client.write(to: script, atomically: true, encoding: .utf8)
            let cases: [String: (String, String)] = [
                "malformed": ("GET http://192.168.4.1:8000/ HTTP/1.1\r\nBad Header\r\n\r\n", "HTTP/1.1 400"),
                "tooLarge": ("GET http://192.168.4.1:8000/ HTTP/1.1\r\nX: " + String(repeating: "a", count: 17_000) + "\r\n\r\n", "HTTP/1.1 431"),
                "trace": ("TRACE http://192.168.4.1:8000/ HTTP/1.1\r\nHost: 192.168.4.1\r\n\r\n", "HTTP/1.1 405"),
                "refused": ("CONNECT 192.168.4.1:\(ServicePort.unused) HTTP/1.1\r\nHost: 192.168.4.1\r\n\r\n", "HTTP/1.1 502"),
                "unknownName": ("GET http://nowhere.invalid/ HTTP/1.1\r\nHost: nowhere.invalid\r\n\r\n", "HTTP/1.1 502"),
                "timeout": ("CONNECT 192.168.4.254:80 HTTP/1.1\r\nHost: 192.168.4.254\r\n\r\n", "HTTP/1.1 504"),
            ]
            let json = String(data: try JSONSerialization.data(withJSONObject: cases.mapValues { $0.0 }), encoding: .utf8)!
            let out = try s.namespace.run(["python3", script.path, json], timeout: 90)
            let results = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any], "\(out)")
            for (name, (_, expected)) in cases {
                #expect((results[name] as? String)?.hasPrefix(expected) == true, "\(name): \(results[name] ?? "none"), expected \(expected)\n\(s.onetunLog.suffix(1500))")
            }
            #expect((results["otherDuringSlowloris"] as? String)?.hasPrefix("HTTP/1.1 200") == true, "\(results)")
            #expect(results["pipelinedAnswers"] as? Int == 3000, "\(results)\n\(s.onetunLog.suffix(1500))")
            let closedAfter = results["slowlorisClosedAfter"] as? Double ?? -1
            #expect(closedAfter >= 8 && closedAfter <= 13, "the slowloris client was closed after \(closedAfter) s")
        }
    }

    /// SOCKS5 UDP ASSOCIATE from a small client written here: 1,000 datagrams echoed off a UDP echo
    /// service behind the peer, addressed by IP and then by a name only the peer's DNS server knows; each reply
    /// byte-equal and carrying the echo service's address in its header; a fragment (FRAG 1) is dropped.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(2)))
    func socks5UDPAssociate() throws {
        try withForwardSession { s in
            // udp_check.py's services: the echo, and a DNS responder that knows echo.tunnel.test.
            _ = try s.startUDPServer(addresses: ["192.168.4.1"], name: "echo.tunnel.test", answer: "192.168.4.1")
            try s.startOnetun(s.onetunArguments([], extra: ["--dns", "192.168.4.1", "--socks5", "11085", "--log", "debug"]))
            let client = """
                import socket, struct, sys, os, json
                def associate():
                    c = socket.create_connection(("127.0.0.1", 11085), timeout=10)
                    c.sendall(b"\\x05\\x01\\x00")
                    assert c.recv(2) == b"\\x05\\x00"
                    c.sendall(b"\\x05\\x03\\x00\\x01" + socket.inet_aton("0.0.0.0") + struct.pack("!H", 0))
                    r = c.recv(10)
                    assert r[1] == 0, r.hex()
                    return c, (socket.inet_ntoa(r[4:8]), struct.unpack("!H", r[8:10])[0])
                results = {}
                for name, header in (("address", b"\\x01" + socket.inet_aton("192.168.4.1")), ("name", b"\\x03" + bytes([16]) + b"echo.tunnel.test")):
                    control, relay = associate()
                    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    u.settimeout(5)
                    ok = 0
                    for i in range(int(os.environ.get("N", "1000"))):
                        payload = os.urandom(8 + i % 900)
                        u.sendto(b"\\x00\\x00\\x00" + header + struct.pack("!H", \(UDPServicePort.echo)) + payload, relay)
                        try:
                            reply, _ = u.recvfrom(2048)
                        except socket.timeout:
                            continue
                        if reply[:4] == b"\\x00\\x00\\x00\\x01" and reply[4:8] == socket.inet_aton("192.168.4.1") and struct.unpack("!H", reply[8:10])[0] == \(UDPServicePort.echo) and reply[10:] == payload:
                            ok += 1
                    # A fragment is dropped: no answer.
                    u.sendto(b"\\x00\\x00\\x01" + header + struct.pack("!H", \(UDPServicePort.echo)) + b"fragment", relay)
                    u.settimeout(1)
                    try:
                        u.recvfrom(2048)
                        fragment = "answered"
                    except socket.timeout:
                        fragment = "dropped"
                    results[name] = {"ok": ok, "fragment": fragment}
                    control.close()
                print(json.dumps(results))
                """
            let script = s.directory.appendingPathComponent("socks_udp.py")
            try client.write(to: script, atomically: true, encoding: .utf8)
            let started = Date()
            let out = try s.namespace.run(["env", "N=\(ProcessInfo.processInfo.environment["SOCKS_UDP_N"] ?? "1000")", "python3", script.path], timeout: 90)
            let results = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: [String: Any]], "\(out)")
            for name in ["address", "name"] {
                #expect(results[name]?["ok"] as? Int ?? 0 >= 990, "\(name): \(results[name] ?? [:])\n\(s.onetunLog.suffix(2000))")
                #expect(results[name]?["fragment"] as? String == "dropped", "\(name): \(results[name] ?? [:])")
            }
            print("onetun SOCKS5 UDP ASSOCIATE: 2 x 1,000 datagrams echoed (\(results["address"]?["ok"] ?? 0) by address, \(results["name"]?["ok"] ?? 0) by name) in \(String(format: "%.2f", Date().timeIntervalSince(started))) s")
        }
    }

    /// --remote-socks5: the peer's side uses onetun as its way out. curl on the peer's side (its packets
    /// go through wireguard-go to onetun) asks onetun's tunnel address for 127.0.0.1:8000, a server on
    /// onetun's side; 16 MiB arrive SHA-256-equal, by address and by name; a closed port is reply 05.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(2)))
    func remoteSocks5ForThePeers() throws {
        try withForwardSession { s in
            let (_, digest) = try s.randomFile("big.bin", size: 16 << 20)
            try startHTTPServer(s)
            try s.startOnetun(s.onetunArguments([], extra: ["--remote-socks5", "1080", "--log", "debug"]))
            for url in ["http://127.0.0.1:8000/big.bin", "http://localhost:8000/big.bin"] {
                let started = Date()
                let r = try curl(s, "--socks5-hostname 192.168.4.3:1080 '\(url)' | sha256sum")
                #expect(r.stdout.hasPrefix(digest), "\(url): \(r.stdout) \(r.stderr)\n\(s.onetunLog.suffix(3000))")
                print("onetun --remote-socks5: a peer fetched 16 MiB of \(url) in \(String(format: "%.2f", Date().timeIntervalSince(started))) s")
            }
            let refused = try curl(s, "--socks5 192.168.4.3:1080 http://127.0.0.1:\(ServicePort.unused)/")
            #expect(refused.status == 97 && refused.stderr.contains("(5)"), "\(refused.status) \(refused.stderr)\n\(s.onetunLog.suffix(2000))")
        }
    }

    /// --remote-socks5 UDP ASSOCIATE: a client on the peer's side asks onetun's tunnel address for a
    /// relay, then echoes 1,000 datagrams off a UDP echo service on onetun's side (127.0.0.1), by address
    /// and by a name onetun resolves on its own machine; each answer byte-equal with a header naming the
    /// echo service; a fragment is dropped; once the control connection closes the relay port is gone.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(2)))
    func remoteSocks5UDPAssociate() throws {
        try withForwardSession { s in
            _ = try s.startUDPServer(addresses: ["127.0.0.1"])
            try s.startOnetun(s.onetunArguments([], extra: ["--remote-socks5", "1080", "--log", "debug"]))
            let client = """
                import socket, struct, os, json
                def associate():
                    c = socket.create_connection(("192.168.4.3", 1080), timeout=10)
                    c.sendall(b"\\x05\\x01\\x00")
                    assert c.recv(2) == b"\\x05\\x00"
                    c.sendall(b"\\x05\\x03\\x00\\x01" + socket.inet_aton("0.0.0.0") + struct.pack("!H", 0))
                    r = b""
                    while len(r) < 10:
                        r += c.recv(10 - len(r))
                    assert r[1] == 0, r.hex()
                    return c, (socket.inet_ntoa(r[4:8]), struct.unpack("!H", r[8:10])[0])
                results = {}
                for name, header in (("address", b"\\x01" + socket.inet_aton("127.0.0.1")), ("name", b"\\x03" + bytes([9]) + b"localhost")):
                    control, relay = associate()
                    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    u.settimeout(5)
                    ok = 0
                    for i in range(1000):
                        payload = os.urandom(8 + i % 900)
                        u.sendto(b"\\x00\\x00\\x00" + header + struct.pack("!H", \(UDPServicePort.echo)) + payload, relay)
                        try:
                            reply, source = u.recvfrom(2048)
                        except socket.timeout:
                            continue
                        if source == relay and reply[:4] == b"\\x00\\x00\\x00\\x01" and reply[4:8] == socket.inet_aton("127.0.0.1") and struct.unpack("!H", reply[8:10])[0] == \(UDPServicePort.echo) and reply[10:] == payload:
                            ok += 1
                    u.sendto(b"\\x00\\x00\\x01" + header + struct.pack("!H", \(UDPServicePort.echo)) + b"fragment", relay)
                    u.settimeout(1)
                    try:
                        u.recvfrom(2048)
                        fragment = "answered"
                    except socket.timeout:
                        fragment = "dropped"
                    # The association ends with its control connection: onetun's FIN back says it has,
                    # and then the relay answers no more.
                    control.shutdown(socket.SHUT_WR)
                    while control.recv(100):
                        pass
                    control.close()
                    after = "dropped"
                    for _ in range(3):
                        u.sendto(b"\\x00\\x00\\x00" + header + struct.pack("!H", \(UDPServicePort.echo)) + b"late", relay)
                        try:
                            u.recvfrom(2048)
                            after = "answered"
                        except socket.timeout:
                            pass
                    results[name] = {"ok": ok, "fragment": fragment, "afterClose": after, "relay": relay[0]}
                print(json.dumps(results))
                """
            let script = s.directory.appendingPathComponent("remote_socks_udp.py")
            try client.write(to: script, atomically: true, encoding: .utf8)
            let started = Date()
            let out = try s.namespace.run(["python3", script.path], timeout: 90)
            let results = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: [String: Any]], "\(out)")
            for name in ["address", "name"] {
                #expect(results[name]?["ok"] as? Int ?? 0 >= 990, "\(name): \(results[name] ?? [:])\n\(s.onetunLog.suffix(2000))")
                #expect(results[name]?["fragment"] as? String == "dropped", "\(name): \(results[name] ?? [:])")
                #expect(results[name]?["afterClose"] as? String == "dropped", "\(name): \(results[name] ?? [:])")
                #expect(results[name]?["relay"] as? String == "192.168.4.3", "\(name): \(results[name] ?? [:])")
            }
            print("onetun --remote-socks5 UDP ASSOCIATE: 2 x 1,000 datagrams echoed (\(results["address"]?["ok"] ?? 0) by address, \(results["name"]?["ok"] ?? 0) by name) in \(String(format: "%.2f", Date().timeIntervalSince(started))) s")
        }
    }
}
