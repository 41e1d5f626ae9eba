import Foundation
import Glibc
import Testing

/// onetun left running while the world changes around it, against a real wireguard-go peer: the peer
/// restarts, its name moves to another address, the tunnel cannot come up, a destination never answers,
/// too many clients come.
@Suite(.serialized) struct ResilienceTests {
    static var needsNamespaces: Bool { ForwarderTests.needsNamespaces }

    /// The peer's wireguard-go is killed and started again 10 s later with the same keys: a connection
    /// open across the outage carries on byte-exact (TCP retransmits, nobody resets), the log says the
    /// session was lost and how long the outage was, and a new client works as soon as the new session
    /// is up (at most Keepalive-Timeout + Rekey-Timeout, 15 s, after the first data that went unanswered).
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(2)))
    func peerRestartIsSurvived() throws {
        try withForwardSession { s in
            try s.startServer(addresses: ["192.168.4.1"])
            try s.startOnetun(s.onetunArguments(["127.0.0.1:18030:192.168.4.1:\(ServicePort.echo)"], extra: ["--log", "debug"]))
            let longLived = try s.startClient(18030, "echo-paced", ["30"], logName: "paced.log")
            try s.waitFor(try #require(s.onetun), "client accepted", seconds: 10)
            sleep(2)
            try s.peer.restart(downFor: 10)
            let restarted = Date()
            let fresh = try s.client(18030, "echo", ["1", "65536"], timeout: 40)
            let took = Date().timeIntervalSince(restarted)
            #expect(fresh[int: "ok"] == 1, "\(fresh)")
            #expect(took < 16, "a new client waited \(took) s after the peer came back")
            let result = try s.finish(longLived, seconds: 75)
            #expect(result[bool: "equal"] == true && result[string: "error"] == nil, "\(result)")
            #expect((result[int: "sent"] ?? 0) > 1 << 20, "\(result)")
            #expect(s.onetunLog.contains("session with the peer lost"), "\(s.onetunLog.suffix(3000))")
            #expect(s.onetunLog.contains("the session is back after"), "\(s.onetunLog.suffix(3000))")
            print("onetun peer restart: a new client worked \(String(format: "%.1f", took)) s after the peer came back; the long connection moved \(result[int: "sent"] ?? 0) bytes each way in \(String(format: "%.1f", result[double: "seconds"] ?? 0)) s")
        }
    }

    /// The endpoint is a name (the namespace's /etc/hosts says where it is). The peer's old address
    /// disappears and the name is pointed at a new one: onetun notices that handshakes go unanswered,
    /// resolves the name again without blocking, switches, and clients get through again.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(2)))
    func endpointNameIsResolvedAgain() throws {
        try withForwardSession { s in
            defer { s.namespace.removeHosts() }
            func point(to address: String) throws { try s.namespace.setHosts("\(address) wg-peer.test\n") }
            try point(to: "10.88.0.1")
            _ = try s.namespace.run(["ip", "addr", "add", "10.88.0.1/32", "dev", "lo"])
            _ = try s.namespace.run(["ip", "addr", "add", "10.88.0.2/32", "dev", "lo"])
            try s.startServer(addresses: ["192.168.4.1"])
            var arguments = s.onetunArguments(["127.0.0.1:18031:192.168.4.1:\(ServicePort.echo)"], extra: ["--log", "debug"])
            let endpoint = try #require(arguments.firstIndex(of: "--endpoint-addr"))
            arguments[endpoint + 1] = "wg-peer.test:\(s.peer.peer.listenPort)"
            try s.startOnetun(arguments)
            let first = try s.client(18031, "echo", ["1", "65536"])
            #expect(first[int: "ok"] == 1, "\(first)")
            // The peer "moves": its old address is gone, the name says where it is now.
            _ = try s.namespace.run(["ip", "addr", "del", "10.88.0.1/32", "dev", "lo"])
            try point(to: "10.88.0.2")
            let moved = Date()
            var attempts = 0
            var last: CheckResult?
            while Date().timeIntervalSince(moved) < 80 {
                attempts += 1
                let r = try s.client(18031, "echo", ["1", "4096"], timeout: 30)
                if r[int: "ok"] == 1 {
                    last = r
                    break
                }
                sleep(1)
            }
            let took = Date().timeIntervalSince(moved)
            #expect(last?[int: "ok"] == 1, "no client got through after the move (\(attempts) attempts)\n\(s.onetunLog.suffix(4000))")
            #expect(s.onetunLog.contains("wg-peer.test now resolves to 10.88.0.2"), "\(s.onetunLog.suffix(4000))")
            print("onetun endpoint re-resolution: clients through again \(String(format: "%.1f", took)) s after the name moved (\(attempts) attempts)")
        }
    }

    /// With the wrong peer key nothing answers: once that is known the log says so in words and new
    /// clients are reset at once instead of waiting.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func clientsAreToldWhenTheTunnelIsDown() throws {
        try withForwardSession { s in
            var arguments = s.onetunArguments(["127.0.0.1:18032:192.168.4.1:\(ServicePort.echo)"], extra: [])
            let key = try #require(arguments.firstIndex(of: "--endpoint-public-key"))
            arguments[key + 1] = CommandLineTests.key
            try s.startOnetun(arguments)
            try s.waitFor(try #require(s.onetun), "handshake with the peer failing: no reply from 127.0.0.1:", seconds: 15)
            let late = try s.client(18032, "closes")
            #expect(late[string: "outcome"] == "reset", "\(late)")
            #expect((late[double: "seconds"] ?? 99) < 0.5, "\(late)")
            #expect(s.onetunLog.contains("reset: the tunnel is down (no reply to handshake initiations)"), "\(s.onetunLog)")
        }
    }

    /// A destination that never answers (the peer, not forwarding, drops what is not its own without a
    /// word): the client is reset at the connect time-out, not after two minutes of SYNs, and the log
    /// says why.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func anUnansweredOpenEndsAtTheConnectTimeout() throws {
        try withForwardSession { s in
            try s.startOnetun(s.onetunArguments(["127.0.0.1:18036:10.99.0.1:80"], extra: ["--connect-timeout", "2"]))
            try s.waitFor(try #require(s.onetun), "handshake with the peer complete", seconds: 10)
            let client = try s.client(18036, "closes", timeout: 20)
            #expect(client[string: "outcome"] == "reset", "\(client)")
            #expect((client[double: "seconds"] ?? 0) >= 1.9 && (client[double: "seconds"] ?? 99) < 4, "\(client)")
            #expect(s.onetunLog.contains("no answer from the destination within the connect time-out"), "\(s.onetunLog)")
        }
    }

    /// An endpoint whose port is closed answers with ICMP port unreachable: said as such.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func aClosedEndpointPortIsSaidAsSuch() throws {
        try withForwardSession { s in
            var arguments = s.onetunArguments(["127.0.0.1:18033:192.168.4.1:\(ServicePort.echo)"], extra: [])
            let endpoint = try #require(arguments.firstIndex(of: "--endpoint-addr"))
            arguments[endpoint + 1] = "127.0.0.1:9"
            try s.startOnetun(arguments)
            try s.waitFor(try #require(s.onetun), "refused our datagrams: connection refused", seconds: 15)
            let client = try s.client(18033, "closes")
            #expect(client[string: "outcome"] == "reset" && (client[double: "seconds"] ?? 99) < 0.5, "\(client)")
        }
    }

    /// Past --max-connections a client is closed at once with a warning; once connections close there
    /// is room again.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func connectionLimitRefusesTheOneTooMany() throws {
        try withForwardSession { s in
            try s.startServer(addresses: ["192.168.4.1"])
            try s.startOnetun(s.onetunArguments(
                ["127.0.0.1:18034:192.168.4.1:\(ServicePort.echo)"], extra: ["--max-connections", "2", "--log", "debug"]))
            let a = try s.startClient(18034, "echo-paced", ["4"], logName: "a.log")
            let b = try s.startClient(18034, "echo-paced", ["4"], logName: "b.log")
            let onetun = try #require(s.onetun)
            for _ in 0..<100 where onetun.output.components(separatedBy: "client accepted").count < 3 { usleep(50_000) }
            let third = try s.client(18034, "closes")
            #expect(["reset", "eof"].contains(third[string: "outcome"]) && (third[double: "seconds"] ?? 99) < 0.5, "\(third)")
            #expect(s.onetunLog.contains("refused: 2 connections open (--max-connections)"), "\(s.onetunLog)")
            for child in [a, b] {
                let r = try s.finish(child, seconds: 30)
                #expect(r[bool: "equal"] == true, "\(r)")
            }
            // onetun has closed both (each says so at debug) before the next client comes.
            for _ in 0..<100 where onetun.output.components(separatedBy: " bytes down").count < 3 { usleep(50_000) }
            // Room again once they closed.
            let after = try s.client(18034, "echo", ["1", "4096"])
            #expect(after[int: "ok"] == 1, "\(after)")
        }
    }
}

extension ResilienceTests {
    /// `--pcap` into a FIFO whose reader takes 64 KiB a second: a 16 MiB echo still runs at full speed
    /// (forwarding never waits for the capture), the loss is said once, and what the reader got is a
    /// valid pcap stream (whole records only).
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func aSlowCaptureReaderNeverStallsForwarding() throws {
        try withForwardSession { s in
            try s.startServer(addresses: ["192.168.4.1"])
            let fifo = s.directory.appendingPathComponent("capture.fifo").path
            let copy = s.directory.appendingPathComponent("capture.pcap").path
            guard mkfifo(fifo, 0o600) == 0 else { throw HarnessError("mkfifo: \(String(cString: strerror(errno)))") }
            let reader = try s.namespace.spawn(["python3", "-c", """
                import sys, time
                with open(sys.argv[1], "rb") as f, open(sys.argv[2], "wb") as out:
                    while True:
                        d = f.read(6554)
                        if not d:
                            break
                        out.write(d)
                        out.flush()
                        time.sleep(0.1)
                """, fifo, copy], logName: "pcap-reader.log")
            defer { reader.terminate() }
            try s.startOnetun(s.onetunArguments(["127.0.0.1:18035:192.168.4.1:\(ServicePort.echo)"], extra: ["--pcap", fifo]))
            let echo = try s.client(18035, "echo", ["1", String(16 << 20)], timeout: 60)
            #expect(echo[int: "ok"] == 1, "\(echo)")
            #expect((echo[double: "seconds"] ?? 99) < 20, "\(echo)")
            #expect(s.onetunLog.contains("its reader is behind by 1 MiB"), "\(s.onetunLog.suffix(2000))")
            // Whole records: every record the reader got so far is an IP packet of a sane length (only
            // the last may be cut short, by where the reader stopped).
            let check = try s.namespace.run(["python3", "-c", """
                import struct, sys
                d = open(sys.argv[1], "rb").read()
                assert struct.unpack("<I", d[:4])[0] == 0xA1B2C3D4, "magic"
                i, n = 24, 0
                while i + 16 <= len(d):
                    incl, orig = struct.unpack("<II", d[i + 8:i + 16])
                    assert 20 <= incl <= 65535 and orig >= incl, "record %d at %d: %d/%d" % (n, i, incl, orig)
                    if i + 16 + incl > len(d):
                        break
                    assert d[i + 16] >> 4 in (4, 6), "record %d is not IP" % n
                    i += 16 + incl
                    n += 1
                print(n)
                """, copy], timeout: 30)
            let frames = Int(check.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
            #expect(frames > 10, "\(check)")
            print("onetun --pcap to a slow FIFO: 16 MiB echoed in \(String(format: "%.2f", echo[double: "seconds"] ?? 0)) s; the reader got \(frames) packets")
        }
    }
}

extension ResilienceTests {
    /// Remote UDP flows idle for --udp-timeout close and give their descriptors back, oldest first,
    /// without anything else happening (their own timer, not the next datagram, notices).
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func idleRemoteUDPFlowsCloseByThemselves() throws {
        try withForwardSession { s in
            try s.startRemoteUDPEcho(address: "127.0.0.1", port: 7008)
            try s.startOnetun(s.onetunArguments(["--remote", "5558:127.0.0.1:7008:UDP"], extra: ["--udp-timeout", "2", "--log", "debug"]))
            let onetun = try #require(s.onetun)
            try s.waitFor(onetun, "handshake with the peer complete", seconds: 10)
            func descriptors() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(onetun.pid)/fd").count) ?? -1 }
            let before = descriptors()
            let echo = try s.remoteUDPEcho(host: "192.168.4.3", port: 5558, clients: 8, total: 200, window: 4)
            #expect(echo[int: "ok"] == 200, "\(echo)")
            let during = descriptors()
            #expect(during == before + 8, "\(before) descriptors before, \(during) with 8 flows")
            var after = during
            for _ in 0..<100 where after > before {
                usleep(100_000)
                after = descriptors()
            }
            #expect(after == before, "\(after) descriptors 10 s later, \(before) before the flows")
            #expect(s.onetunLog.components(separatedBy: "idle, closed").count == 9, "\(s.onetunLog.suffix(3000))")
        }
    }
}

extension ResilienceTests {
    /// Out of descriptors (onetun's limit lowered to 8 above what it holds, 14 clients at once): accepting pauses with
    /// one warning, the clients it cannot take yet wait in the listen queue instead of being closed (what
    /// libuv's own listener does), and each is served as soon as an earlier one leaves.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func runningOutOfDescriptorsMakesClientsWaitNotFail() throws {
        try withForwardSession { s in
            try s.startServer(addresses: ["192.168.4.1"])
            try s.startOnetun(s.onetunArguments(["127.0.0.1:18037:192.168.4.1:\(ServicePort.echo)"], extra: ["--log", "debug"]))
            let onetun = try #require(s.onetun)
            try s.waitFor(onetun, "handshake with the peer complete", seconds: 10)
            // Room for 8 clients beyond what onetun holds now.
            let open = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(onetun.pid)/fd").count
            _ = try Command.run(["prlimit", "--pid", String(onetun.pid), "--nofile=\(open + 8):\(open + 8)"])
            let clients = try (0..<14).map { try s.startClient(18037, "echo-paced", ["3"], logName: "emfile-\($0).log") }
            var results: [CheckResult] = []
            for client in clients { results.append(try s.finish(client, seconds: 45)) }
            for r in results { #expect(r[bool: "equal"] == true && r[string: "error"] == nil, "\(r)") }
            #expect(s.onetunLog.contains("clients wait until a descriptor is free"), "\(s.onetunLog.suffix(3000))")
            #expect(onetun.isRunning)
            let longest = results.compactMap { $0[double: "seconds"] }.max() ?? 0
            print("onetun out of descriptors: 14 clients served with room for 8; the slowest finished in \(String(format: "%.1f", longest)) s")
        }
    }
}

extension ResilienceTests {
    /// A client that sends data and then resets its connection: the destination sees a reset, not the
    /// end of a complete upload (Linux reads such a RST as end of stream; onetun looks at SO_ERROR).
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func aClientResetReachesTheDestinationAsAReset() throws {
        try withForwardSession { s in
            try s.startServer(addresses: ["192.168.4.1"])
            try s.startOnetun(s.onetunArguments(["127.0.0.1:18038:192.168.4.1:\(ServicePort.sink)"]))
            _ = try s.client(18038, "abort", ["65536"])
            let deadline = Date().addingTimeInterval(5)
            while !s.serverLog.contains("sink: ended by a reset") && Date() < deadline { usleep(20_000) }
            #expect(s.serverLog.contains("sink: ended by a reset"), "\(s.serverLog)\n\(s.onetunLog.suffix(2000))")
        }
    }
}
