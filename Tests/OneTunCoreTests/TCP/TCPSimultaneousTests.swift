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
}
