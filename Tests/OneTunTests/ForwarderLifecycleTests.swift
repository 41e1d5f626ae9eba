import Foundation
import Testing

/// The forwarder's edges against a real wireguard-go peer: an unreachable destination, and shutting down
/// with connections open.
@Suite(.serialized) struct ForwarderLifecycleTests {
    static var needsNamespaces: Bool { ForwarderTests.needsNamespaces }

    /// The peer's kernel forwards (ip_forward=1) but has no route to 10.99.0.1: it answers our SYN with
    /// ICMP net unreachable, which must end the virtual connection and reset the client at once (no two
    /// minutes of SYN retries).
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func unreachableDestinationResetsTheClientPromptly() throws {
        let s = try ForwardSession()
        defer { s.close() }
        _ = try s.namespace.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        try s.startOnetun(s.onetunArguments(["127.0.0.1:18020:10.99.0.1:80"]))
        let result = try s.client(18020, "closes")
        #expect(["reset", "eof"].contains(result[string: "outcome"]), "\(result)\n\(s.onetunLog)")
        #expect((result[double: "seconds"] ?? 99) < 1, "\(result)")
        #expect(s.onetunLog.contains("unreachable"), "\(s.onetunLog)")
    }

    /// 100 connections whose destination sends a goodbye, its FIN and at once a RST: each client sees the
    /// connection end, and onetun keeps no descriptor of any of them (a RST refused by libuv while a
    /// shutdown is in flight must still close the socket).
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func finThenResetLeavesNoDescriptorBehind() throws {
        let s = try ForwardSession()
        defer { s.close() }
        try s.startServer(addresses: ["192.168.4.1"])
        try s.startOnetun(s.onetunArguments(["127.0.0.1:18022:192.168.4.1:\(ServicePort.finreset)"], extra: ["--log", "debug"]))
        let onetun = try #require(s.onetun)
        func descriptors() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(onetun.pid)/fd").count) ?? -1 }
        _ = try s.client(18022, "closes")
        // The first connection's teardown is done when its debug line is out; the count then is the
        // baseline (the first connection also creates what libuv makes lazily).
        try s.waitFor(onetun, " bytes down", seconds: 5)
        let before = descriptors()
        let result = try s.client(18022, "closes-many", ["100"])
        let outcomes = result.fields["outcomes"] as? [String: Any] ?? [:]
        let ended = outcomes.filter { ["reset", "eof"].contains($0.key) }.values.compactMap { ($0 as? NSNumber)?.intValue }.reduce(0, +)
        #expect(ended == 100, "\(result)")
        // Teardown completes in the loop iteration after the last connection; give it a moment.
        var after = descriptors()
        for _ in 0..<20 where after > before {
            usleep(100_000)
            after = descriptors()
        }
        #expect(before > 0 && after == before, "onetun had \(before) descriptors, now \(after)")
        #expect(onetun.isRunning, "\(s.onetunLog.suffix(3000))")
    }

    /// A jumbo tunnel MTU (8920, the peer's interface set to match): the datagrams are larger than the
    /// loop's usual 2 KiB send slots, which must grow with the MTU. 8 MiB echo, byte-equal.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func jumboMTUForwards() throws {
        let s = try ForwardSession()
        defer { s.close() }
        _ = try s.namespace.run(["ip", "link", "set", s.peer.peer.interface, "mtu", "8920"])
        try s.startServer(addresses: ["192.168.4.1"])
        try s.startOnetun(s.onetunArguments(["127.0.0.1:18024:192.168.4.1:\(ServicePort.echo)", "--max-transmission-unit", "8920"], extra: []))
        let echo = try s.client(18024, "echo", ["4", String(2 << 20)])
        #expect(echo[int: "ok"] == 4, "\(echo)\n\(s.onetunLog.suffix(3000))")
        #expect(s.onetun?.isRunning == true, "\(s.onetunLog.suffix(3000))")
    }

    /// `--pcap` into a FIFO whose reader takes the file header and leaves: the next write fails with
    /// EPIPE. onetun must log that capture stopped and go on forwarding, not die of SIGPIPE.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func pcapReaderLeavingStopsCaptureNotForwarding() throws {
        let s = try ForwardSession()
        defer { s.close() }
        try s.startServer(addresses: ["192.168.4.1"])
        let fifo = s.directory.appendingPathComponent("capture.fifo").path
        #expect(mkfifo(fifo, 0o600) == 0)
        let reader = try s.namespace.spawn(["head", "-c", "24", fifo], logName: "fifo-reader.log")
        defer { _ = reader.terminate(grace: 1) }
        try s.startOnetun(s.onetunArguments(["127.0.0.1:18023:192.168.4.1:\(ServicePort.echo)", "--pcap", fifo], extra: []))
        let onetun = try #require(s.onetun)
        #expect(reader.waitForExit(seconds: 5), "the FIFO reader did not get the pcap header")
        for _ in 0..<3 {
            let echo = try s.client(18023, "echo", ["2", String(64 << 10)])
            #expect(echo[int: "ok"] == 2, "\(echo)\n\(s.onetunLog.suffix(3000))")
        }
        #expect(onetun.isRunning, "onetun died: \(s.onetunLog.suffix(3000))")
        try s.waitFor(onetun, "capture to \(fifo) stopped", seconds: 5)
    }

    /// SIGTERM with a connection open: onetun resets it (the destination sees the connection end, it is
    /// not left half-open), closes everything and exits 0; SIGINT the same.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)), arguments: [SIGTERM, SIGINT])
    func signalWithConnectionsOpenExitsZero(signal: Int32) throws {
        let s = try ForwardSession()
        defer { s.close() }
        try s.startServer(addresses: ["192.168.4.1"])
        try s.startOnetun(s.onetunArguments(["127.0.0.1:18021:192.168.4.1:\(ServicePort.echo)"]))
        // A client that connects, proves the echo works, then holds the connection open until it ends.
        let holder = try s.namespace.spawn(["python3", "-u", "-c", """
            import socket, time
            c = socket.create_connection(("127.0.0.1", 18021), timeout=20)
            c.sendall(b"ping"); assert c.recv(4) == b"ping"
            print("open", flush=True)
            t = time.time()
            try:
                d = c.recv(10)
                print("ended", "eof" if not d else "data", round(time.time() - t, 3), flush=True)
            except OSError as e:
                print("ended", type(e).__name__, round(time.time() - t, 3), flush=True)
            """], logName: "holder.log")
        defer { _ = holder.terminate() }
        try s.waitFor(holder, "open", seconds: 10)
        let onetun = try #require(s.onetun)
        kill(onetun.pid, signal)
        #expect(onetun.waitForExit(seconds: 5), "onetun still running after signal \(signal)")
        #expect(onetun.exitCode == 0, "\(s.onetunLog)")
        #expect(s.onetunLog.contains("shutting down"), "\(s.onetunLog)")
        // The local client learns that its connection is gone.
        try s.waitFor(holder, "ended", seconds: 5)
    }
}
