import Testing
@_spi(OneTunInternals) @testable import OneTunCore

/// Two actively opening connections wired back to back (RFC 9293 §3.5 figure 8 and §3.6 figure 13), with
/// segments exchanged in lock step so both sides' segments cross on the wire.
@Suite struct TCPSimultaneousTests {
    final class Wire {
        var now = Instant(nanoseconds: 100 * Nanos.second)
        let a = TCPConnection(localPort: 7000, remotePort: 7001, iss: 1_000, now: Instant(nanoseconds: 100 * Nanos.second))
        let b = TCPConnection(localPort: 7001, remotePort: 7000, iss: 9_000_000, now: Instant(nanoseconds: 100 * Nanos.second))
        var scratch = [UInt8](repeating: 0, count: 2048)
        var log: [String] = []

        func collect(_ c: TCPConnection) -> [(TCPRepr, [UInt8])] {
            var out: [(TCPRepr, [UInt8])] = []
            for _ in 0..<1000 {
                guard let (repr, n) = scratch.withUnsafeMutableBytes({ c.pollSegment(payload: $0, now: now) }) else { break }
                out.append((repr, Array(scratch[0..<n])))
            }
            return out
        }

        /// One round: both sides emit, then both receive what the other emitted (the segments cross).
        func step() {
            let fromA = collect(a)
            let fromB = collect(b)
            for (repr, payload) in fromA {
                log.append("A→B \(repr.flags)")
                payload.withUnsafeBytes { b.handleSegment(repr, payload: $0, now: now) }
            }
            for (repr, payload) in fromB {
                log.append("B→A \(repr.flags)")
                payload.withUnsafeBytes { a.handleSegment(repr, payload: $0, now: now) }
            }
            now = now.adding(Nanos.millisecond)
            for c in [a, b] { if let d = c.nextDeadline(), d <= now { c.handleTimeout(now: now) } }
        }
    }

    @Test func simultaneousOpenThenData() {
        let wire = Wire()
        // Round 1: both SYNs cross; each side moves to SYN-RECEIVED and answers SYN,ACK.
        wire.step()
        #expect(wire.a.state == .synReceived && wire.b.state == .synReceived, "\(wire.log)")
        // Round 2: the SYN,ACKs cross; both are established.
        wire.step()
        #expect(wire.a.state == .established && wire.b.state == .established, "\(wire.log)")
        let hello = Array("hello".utf8)
        #expect(hello.withUnsafeBytes { wire.a.send($0) } == 5)
        for _ in 0..<5 { wire.step() }
        #expect(Array(wire.b.readable()) == hello)
    }

    @Test func simultaneousCloseGoesThroughClosing() {
        let wire = Wire()
        for _ in 0..<3 { wire.step() }
        #expect(wire.a.state == .established && wire.b.state == .established)
        // Both close at once: the FINs cross, both pass through CLOSING to TIME-WAIT, then CLOSED.
        wire.a.close()
        wire.b.close()
        wire.step()
        #expect(wire.a.state == .closing && wire.b.state == .closing, "\(wire.a.state) \(wire.b.state) \(wire.log)")
        wire.step()
        #expect(wire.a.state == .timeWait && wire.b.state == .timeWait, "\(wire.a.state) \(wire.b.state)")
        wire.now = wire.now.adding(wire.a.config.timeWait)
        wire.step()
        #expect(wire.a.state == .closed && wire.b.state == .closed)
        #expect(wire.a.error == nil && wire.b.error == nil)
    }

    /// We closed first and the peer's last bytes wait unread in TIME-WAIT: reading them sends no window
    /// update (the peer has sent its FIN; it would only meet a closed socket), and a RST that arrives
    /// anyway is ignored (RFC 1337 §3), so the bytes stay readable and the connection did not fail.
    @Test func timeWaitIgnoresAResetAndKeepsUnreadBytes() {
        let wire = Wire()
        for _ in 0..<3 { wire.step() }
        let data = [UInt8](repeating: 7, count: 1000)
        #expect(data.withUnsafeBytes { wire.b.send($0) } == 1000)
        wire.a.close()
        for _ in 0..<5 { wire.step() }
        wire.b.close()
        for _ in 0..<5 { wire.step() }
        #expect(wire.a.state == .timeWait, "\(wire.a.state)")
        #expect(wire.a.readableBytes == 1000)
        wire.a.consume(500)
        #expect(wire.collect(wire.a).isEmpty, "a window update after the peer's FIN")
        let rst = TCPRepr(sourcePort: 7001, destinationPort: 7000, sequenceNumber: wire.a.rcvNxt.rawValue, flags: .rst, window: 0)
        [UInt8]().withUnsafeBytes { wire.a.handleSegment(rst, payload: $0, now: wire.now) }
        #expect(wire.a.state == .timeWait && wire.a.error == nil, "\(wire.a.state) \(String(describing: wire.a.error))")
        #expect(wire.a.readableBytes == 500)
    }
}
