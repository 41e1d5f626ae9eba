import Foundation
import Glibc
import Testing

/// onetun's UDP forwards, end to end: a real wireguard-go peer in a namespace made by each test,
/// udp_check.py's echo and DNS services on the peer's tunnel addresses, onetun forwarding UDP ports on the
/// namespace's 127.0.0.1 to them, and udp_check.py's client checks against those ports.
@Suite(.serialized) struct UDPForwardTests {
    static let needsNamespaces = TestNamespace.canCreateNamespaces

    func seconds(_ result: CheckResult) -> String { String(format: "%.2f s", result[double: "seconds"] ?? -1) }

    /// 10,000 datagrams of 32–1232 bytes from 50 client sockets (distinct source ports, so 50 virtual
    /// ports), each keeping at most 4 outstanding: every datagram must come back, to the socket that sent
    /// it, byte for byte. UDP may drop when the machine is busy (with the whole suite running in
    /// parallel, wireguard-go's 208 KiB socket buffer overflows now and then, RcvbufErrors on its port),
    /// so the clients resend after 0.5 s, as a DNS client would; nothing may be lost for good, and nothing
    /// may reach the wrong client. On a loss it prints which sockets dropped (/proc/net/udp) and the
    /// namespace's UDP counters.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(3)))
    func tenThousandDatagramsFromFiftyClients() throws {
        try withForwardSession { s in
            _ = try s.startUDPServer(addresses: ["192.168.4.1"])
            try s.startOnetun(s.onetunArguments(["127.0.0.1:18100:192.168.4.1:\(UDPServicePort.echo):UDP"]))
            let direct = try s.udpClient(UDPServicePort.echo, "echo", ["50", "10000", "4"], host: "192.168.4.1")
            try #require(direct[int: "ok"] == 10000, "without onetun: \(direct)")
            let before = try s.udpCounters()
            let echo = try s.udpClient(18100, "echo", ["50", "10000", "4"])
            let after = try s.udpCounters()
            #expect(echo[int: "sourcePorts"] == 50, "\(echo)")
            #expect(echo[int: "sent"] == 10000, "\(echo)")
            #expect(echo[int: "foreign"] == 0, "a client got another client's datagram: \(echo)")
            #expect(echo[int: "corrupt"] == 0 && echo[int: "unexpected"] == 0, "\(echo)")
            #expect(echo[int: "ok"] == 10000 && echo[int: "lost"] == 0, "\(echo)")
            #expect(echo[int: "clientsAllOk"] == 50, "\(echo)")
            if echo[int: "ok"] != 10000 {
                print("sockets that dropped (local address, tx:rx queue, drops; wireguard-go is on port \(s.peer.peer.listenPort), onetun's forward on 18100):\n\(try s.udpSocketDrops())")
                _ = s.onetun?.terminate()
                let notes = s.onetunLog.split(separator: "\n").filter { $0.contains("drop") || $0.contains("shutting down") || $0.contains("handshake") }
                let kernel = after.keys.sorted().map { "\($0) +\(after[$0]! - (before[$0] ?? 0))" }.joined(separator: ", ")
                print("namespace UDP counters during the check: \(kernel)")
                print("onetun's log on drops:\n\(notes.prefix(40).joined(separator: "\n"))")
            }
            print("onetun UDP forward: 10,000 datagrams from 50 clients echoed in \(seconds(echo)) (\(seconds(direct)) without onetun); \(echo)")
        }
    }

    /// A DNS query built by hand through a UDP forward to a responder on 192.168.4.1:53; the answer parsed.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func dnsQueryThroughAForward() throws {
        try withForwardSession { s in
            _ = try s.startUDPServer(addresses: ["192.168.4.1"], name: "service.onetun.test", answer: "10.20.30.40")
            try s.startOnetun(s.onetunArguments(["127.0.0.1:18153:192.168.4.1:\(UDPServicePort.dns):UDP"], extra: []))
            let answer = try s.udpClient(18153, "dns", ["service.onetun.test"])
            #expect(answer[bool: "id"] == true && answer[bool: "response"] == true, "\(answer)")
            #expect(answer[int: "rcode"] == 0, "\(answer)")
            #expect(answer.fields["answers"] as? [String] == ["10.20.30.40"], "\(answer)")
            let missing = try s.udpClient(18153, "dns", ["other.onetun.test"])
            #expect(missing[int: "rcode"] == 3, "NXDOMAIN for another name: \(missing)")
            #expect((missing.fields["answers"] as? [String])?.isEmpty == true, "\(missing)")
            print("onetun UDP forward: DNS answer in \(String(format: "%.1f ms", (answer[double: "seconds"] ?? -1) * 1000))")
        }
    }

    /// A 1500-byte payload cannot cross a 1420-byte tunnel MTU unfragmented: onetun drops it (no reply),
    /// says so in its debug log, and the next normal datagram still goes through.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func datagramLargerThanTheMTUIsDropped() throws {
        try withForwardSession { s in
            _ = try s.startUDPServer(addresses: ["192.168.4.1"])
            try s.startOnetun(s.onetunArguments(["127.0.0.1:18100:192.168.4.1:\(UDPServicePort.echo):UDP"]))
            let direct = try s.udpClient(UDPServicePort.echo, "oversize", ["1500"], host: "192.168.4.1")
            try #require(direct[int: "bigReply"] == 1500, "without onetun the big one comes back: \(direct)")
            let result = try s.udpClient(18100, "oversize", ["1500"])
            #expect(result.fields["bigReply"] is NSNull, "the 1500-byte datagram came back: \(result)")
            #expect(result[bool: "smallReply"] == true, "\(result)")
            let drops = s.onetunLog.split(separator: "\n").filter { $0.contains("1500 bytes") && $0.contains("dropped") }
            #expect(drops.count == 1, "onetun's log should mention the drop once: \(s.onetunLog.suffix(3000))")
            // The largest payload that fits (1420 - 20 - 8) still goes through.
            let fits = try s.udpClient(18100, "oversize", ["1392"])
            #expect(fits[int: "bigReply"] == 1392, "\(fits)")
        }
    }

    /// Two UDP forwards to the same destination: a client of the second gets its replies from the second
    /// port. Its sockets are connected, so a reply sent from the first forward's socket would never reach
    /// them.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func twoForwardsToOneDestinationAnswerFromTheirOwnPort() throws {
        try withForwardSession { s in
            _ = try s.startUDPServer(addresses: ["192.168.4.1"])
            try s.startOnetun(s.onetunArguments([
                "127.0.0.1:18110:192.168.4.1:\(UDPServicePort.echo):UDP", "127.0.0.1:18111:192.168.4.1:\(UDPServicePort.echo):UDP",
            ], extra: []))
            for port: UInt16 in [18111, 18110, 18111] {
                let echo = try s.udpClient(port, "echo", ["4", "200", "4"])
                #expect(echo[int: "ok"] == 200 && echo[int: "lost"] == 0, "port \(port): \(echo)")
                #expect(echo[int: "foreign"] == 0 && echo[int: "corrupt"] == 0, "port \(port): \(echo)")
            }
        }
    }

    /// One client socket writing to two UDP forwards with different destinations shares one virtual port:
    /// each reply still comes back from the forward its destination belongs to.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func oneSocketTwoForwardsGetsBothReplies() throws {
        try withForwardSession { s in
            _ = try s.startUDPServer(addresses: ["192.168.4.1"])
            try s.startRemoteUDPEcho(address: "192.168.4.1", port: 7007)
            try s.startOnetun(s.onetunArguments([
                "127.0.0.1:18112:192.168.4.1:\(UDPServicePort.echo):UDP", "127.0.0.1:18113:192.168.4.1:7007:UDP",
            ], extra: []))
            let outcome = try s.peer.execute(["python3", "-c", """
                import socket
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("127.0.0.1", 0))
                s.settimeout(0.5)
                got = {}
                for attempt in range(10):
                    for port in (18112, 18113):
                        if port not in got:
                            s.sendto(b"to %d" % port, ("127.0.0.1", port))
                    try:
                        while len(got) < 2:
                            data, peer = s.recvfrom(2048)
                            if data == b"to %d" % peer[1]:
                                got[peer[1]] = True
                    except socket.timeout:
                        pass
                    if len(got) == 2:
                        break
                print(sorted(got))
                """], timeout: 20)
            #expect(outcome.stdout.trimmed == "[18112, 18113]", "\(outcome.stdout) \(outcome.stderr)")
        }
    }

    /// SIGINT while datagrams stream both ways through a local and a remote UDP forward, three times: with
    /// replies still queued in the core when the listeners close, onetun must neither abort (a send on a
    /// closing libuv handle) nor hang (a remote flow opened after shutdown); it exits 0 within 5 s.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(2)))
    func signalDuringUDPTrafficExitsZero() throws {
        try withForwardSession { s in
            _ = try s.startUDPServer(addresses: ["192.168.4.1"])
            try s.startRemoteUDPEcho(address: "127.0.0.1", port: 7007)
            for round in 1...3 {
                try s.startOnetun(s.onetunArguments([
                    "127.0.0.1:18100:192.168.4.1:\(UDPServicePort.echo):UDP", "--remote", "5557:127.0.0.1:7007:UDP",
                ], extra: []))
                let onetun = try #require(s.onetun)
                try s.waitFor(onetun, "handshake with the peer complete", seconds: 10)
                let local = try s.namespace.spawn(
                    ["python3", s.udpScript.path, "client", "127.0.0.1", "18100", "echo", "20", "1000000", "32"],
                    logName: "flood-local-\(round).log")
                let remote = try s.namespace.spawn(
                    ["python3", s.remoteScript.path, "udp-echo", "192.168.4.3", "5557", "20", "1000000", "32"],
                    logName: "flood-remote-\(round).log")
                defer {
                    _ = local.terminate(grace: 1)
                    _ = remote.terminate(grace: 1)
                }
                usleep(1_500_000)
                kill(onetun.pid, SIGINT)
                #expect(onetun.waitForExit(seconds: 5), "round \(round): onetun still running 5 s after SIGINT")
                #expect(onetun.exitCode == 0, "round \(round): exit \(String(describing: onetun.exitCode)): \(s.onetunLog.suffix(3000))")
                #expect(s.onetunLog.contains("shutting down"), "round \(round): \(s.onetunLog.suffix(3000))")
                if onetun.isRunning { _ = onetun.terminate(grace: 1) }
            }
        }
    }

    /// IPv6 inside the tunnel: onetun as fd00:4::3 forwarding to [fd00:4::1]:7000.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(2)))
    func echoOverIPv6Inside() throws {
        try withForwardSession { s in
            _ = try s.startUDPServer(addresses: ["fd00:4::1"])
            try s.startOnetun(s.onetunArguments(["127.0.0.1:18106:[fd00:4::1]:\(UDPServicePort.echo):UDP"], source: "fd00:4::3", extra: []))
            let echo = try s.udpClient(18106, "echo", ["10", "2000", "4"])
            #expect(echo[int: "ok"] == 2000 && echo[int: "lost"] == 0, "\(echo)")
            #expect(echo[int: "foreign"] == 0 && echo[int: "corrupt"] == 0 && echo[int: "unexpected"] == 0, "\(echo)")
            // The largest payload that fits in IPv6 (1420 - 40 - 8) comes back; one byte more does not.
            let fits = try s.udpClient(18106, "oversize", ["1372"])
            #expect(fits[int: "bigReply"] == 1372, "\(fits)")
            let big = try s.udpClient(18106, "oversize", ["1373"])
            #expect(big.fields["bigReply"] is NSNull && big[bool: "smallReply"] == true, "\(big)")
            print("onetun UDP forward, IPv6 inside: 2,000 datagrams from 10 clients echoed in \(seconds(echo))")
        }
    }
}
