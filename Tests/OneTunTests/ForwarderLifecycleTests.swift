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
