import Testing
@_spi(OneTunInternals) @testable import OneTunCore

/// Segment sizing and window updates at the edges: SACK blocks take header room out of the MSS, a window
/// that reopened after a zero window is announced, and the peer's newest window is the one sent within.
@Suite struct TCPSegmentSizeTests {
    /// Two connections opened at once (as in TCPSimultaneousTests) and established, SACK on both.
    func establishedPair() -> TCPSimultaneousTests.Wire {
        let wire = TCPSimultaneousTests.Wire()
        for _ in 0..<3 { wire.step() }
        return wire
    }

    /// A segment from b to a, made by hand.
    func fromB(_ wire: TCPSimultaneousTests.Wire, seq: SeqNumber, payload: [UInt8]) {
        let repr = TCPRepr(
            sourcePort: 7001, destinationPort: 7000, sequenceNumber: seq.rawValue,
            acknowledgmentNumber: wire.a.sndNxt.rawValue, flags: .ack, window: 65_535)
        payload.withUnsafeBytes { wire.a.handleSegment(repr, payload: $0, now: wire.now) }
    }

    /// Four holes in what a received (1-byte islands 2 bytes apart): every data segment a sends then
    /// carries four SACK blocks (36 option bytes), and options plus data must still fit the MSS, or the IP
    /// packet would exceed the MTU (or not fit the driver's buffer).
    @Test func sackBlocksComeOutOfTheMSS() throws {
        let wire = establishedPair()
        try #require(wire.a.state == .established && wire.a.sackEnabled)
        let base = wire.b.sndNxt
        for k in 1...4 { fromB(wire, seq: base + 2 * k, payload: [UInt8(k)]) }
        let data = [UInt8](repeating: 0x5a, count: 8 * 1380)
        #expect(data.withUnsafeBytes { wire.a.send($0) } == data.count)
        let segments = wire.collect(wire.a).filter { !$0.1.isEmpty }
        try #require(!segments.isEmpty)
        for (repr, payload) in segments {
            let options = repr.headerLength - TCPSegment.minimumHeaderLength
            #expect(options + payload.count <= wire.a.effectiveMSS, "\(options) option bytes + \(payload.count) data > MSS \(wire.a.effectiveMSS)")
        }
        #expect(segments.contains { $0.0.sackBlocks.count == 4 }, "the segments report the four islands")
        // Once the holes are filled the full MSS is used again.
        fromB(wire, seq: base, payload: [0, 1, 0, 2, 0, 3, 0, 4])
        #expect(wire.a.assembler.isEmpty)
        let more = [UInt8](repeating: 0x33, count: 4 * 1380)
        #expect(more.withUnsafeBytes { wire.a.send($0) } == more.count)
        let full = wire.collect(wire.a).filter { !$0.1.isEmpty }
        #expect(full.contains { $0.1.count == wire.a.effectiveMSS }, "\(full.map { $0.1.count })")
    }

    /// RFC 5681 §4.2: a segment that fills a gap is acknowledged at once, the last gap too (the receive
    /// queue then holds nothing out of order), not after the delayed-ACK timer or a second full segment:
    /// the sender in recovery waits for exactly that ACK.
    @Test func segmentFillingTheLastHoleIsAcknowledgedAtOnce() throws {
        let wire = establishedPair()
        let base = wire.b.sndNxt
        let mss = wire.a.effectiveMSS
        fromB(wire, seq: base + mss, payload: [UInt8](repeating: 2, count: mss))
        let dupAck = wire.collect(wire.a)
        #expect(dupAck.count == 1 && dupAck[0].0.acknowledgmentNumber == base.rawValue, "out of order: a duplicate ACK at once")
        fromB(wire, seq: base, payload: [UInt8](repeating: 1, count: mss))
        #expect(wire.a.assembler.isEmpty)
        let acks = wire.collect(wire.a)
        #expect(acks.map { $0.0.acknowledgmentNumber } == [(base + 2 * mss).rawValue], "the hole filled: one ACK of both, at once")
    }

    /// b SACKs a's first segment but its cumulative ACK never covers it (RFC 2018 §8: a receiver may
    /// renege): at the first timeout a resends from SND.UNA, that segment included, instead of skipping it
    /// for three backed-off timeouts.
    @Test func renegedSACKIsForgottenAtTheFirstTimeout() throws {
        let wire = establishedPair()
        let una = wire.a.sndUna
        let data = [UInt8](repeating: 0x11, count: 3 * 1380)
        #expect(data.withUnsafeBytes { wire.a.send($0) } == data.count)
        let lost = wire.collect(wire.a).filter { !$0.1.isEmpty }
        try #require(lost.count == 3 && lost[0].0.sequenceNumber == una.rawValue)
        var ack = TCPRepr(
            sourcePort: 7001, destinationPort: 7000, sequenceNumber: wire.b.sndNxt.rawValue,
            acknowledgmentNumber: una.rawValue, flags: .ack, window: 65_535)
        ack.sackBlocks = [TCPSackBlock(left: una.rawValue, right: (una + 1380).rawValue)]
        wire.a.handleSegment(ack, payload: UnsafeRawBufferPointer(start: nil, count: 0), now: wire.now)
        let deadline = try #require(wire.a.nextDeadline())
        wire.now = deadline
        wire.a.handleTimeout(now: deadline)
        let resent = wire.collect(wire.a).filter { !$0.1.isEmpty }
        #expect(resent.first?.0.sequenceNumber == una.rawValue, "first resend at \(resent.first.map { $0.0.sequenceNumber - una.rawValue } ?? 0) past SND.UNA")
    }

    /// b fills a's receive buffer while a reads nothing, so a advertises a zero window. Then a reads in
    /// chunks between one and two MSS: the first read must already send a window update (no waiting for
    /// b's persist timer), and b's data must flow again with no timer firing.
    @Test func windowReopenedByReadsBetweenOneAndTwoMSSIsAnnounced() throws {
        let wire = establishedPair()
        try #require(wire.b.state == .established)
        let data = [UInt8](repeating: 0x42, count: 4 << 20)
        var sent = 0
        for _ in 0..<2000 where wire.b.sndWnd > 0 || sent == 0 {  // until b sees a's window closed
            sent += data[sent...].withUnsafeBytes { wire.b.send($0) }
            wire.step()
        }
        try #require(wire.a.receiveWindow < wire.a.config.mss && wire.b.sndWnd == 0, "window \(wire.a.receiveWindow), b sees \(wire.b.sndWnd); buffered \(wire.a.readableBytes), space \(wire.a.receiveSpace), free \(wire.a.receiveBuffer.free), sent \(sent)")
        let chunk = 2000
        try #require(chunk > wire.a.config.mss && chunk < 2 * wire.a.config.mss)
        wire.a.consume(chunk)
        let update = wire.collect(wire.a)
        #expect(update.contains { $0.0.window > 0 }, "a read of \(chunk) bytes after a zero window sent no window update")
        for (repr, payload) in update { payload.withUnsafeBytes { wire.b.handleSegment(repr, payload: $0, now: wire.now) } }
        #expect(wire.b.sndWnd > 0)
        // Reading on in the same chunks keeps data coming, each round well before any timer.
        let before = wire.a.readableBytes
        var read = 0
        for _ in 0..<50 {
            let n = min(chunk, wire.a.readableBytes)
            wire.a.consume(n)
            read += n
            wire.step()
        }
        #expect(read + wire.a.readableBytes > before + 10 * chunk, "b sent little more: read \(read), \(wire.a.readableBytes) buffered, had \(before)")
        #expect(wire.b.stats.timeouts == 0)
    }

    /// b's segment at RCV.NXT is lost; its next one (numbered above, SND.WL1 from then on) offers a window
    /// of two MSS, which a fills. b then resends the lost segment: numbered below SND.WL1 but sent later,
    /// it acknowledges everything and closes the window. RFC 9293's SND.WL1 test alone calls it old and
    /// keeps SND.WND, which counts from the SND.UNA that just moved: a would send two MSS past anything b
    /// offered (RFC 9293 §3.8.6.2.1). An ACK that moves SND.UNA updates the window, as in Linux.
    @Test func resentSegmentBelowWL1ThatMovesSNDUNAUpdatesTheWindow() throws {
        let wire = establishedPair()
        try #require(wire.a.state == .established)
        let una = wire.a.sndUna
        let base = wire.b.sndNxt
        let shift = Int(wire.a.sendShift)
        let offered = 2 * wire.a.effectiveMSS
        func fromB(seq: SeqNumber, ack: SeqNumber, window: Int, payload: [UInt8]) {
            let repr = TCPRepr(
                sourcePort: 7001, destinationPort: 7000, sequenceNumber: seq.rawValue,
                acknowledgmentNumber: ack.rawValue, flags: .ack, window: UInt16(window >> shift))
            payload.withUnsafeBytes { wire.a.handleSegment(repr, payload: $0, now: wire.now) }
        }
        fromB(seq: base + 100, ack: una, window: offered, payload: [UInt8](repeating: 2, count: 100))
        let edge = una + ((offered >> shift) << shift)
        let data = [UInt8](repeating: 0x77, count: 8 * 1380)
        #expect(data.withUnsafeBytes { wire.a.send($0) } == data.count)
        let first = wire.collect(wire.a).filter { !$0.1.isEmpty }
        try #require(!first.isEmpty)
        #expect(first.allSatisfy { SeqNumber($0.0.sequenceNumber) + $0.1.count <= edge })
        try #require(wire.a.sndMax == edge, "a filled \(wire.a.sndMax - una) of the \(edge - una) bytes offered")
        // The resend of the lost segment: everything acknowledged, the window closed.
        fromB(seq: base, ack: edge, window: 0, payload: [UInt8](repeating: 1, count: 100))
        #expect(wire.a.sndUna == edge && wire.a.sndWnd == 0, "SND.WND \(wire.a.sndWnd) after b closed its window")
        let past = wire.collect(wire.a).filter { !$0.1.isEmpty }.map { (SeqNumber($0.0.sequenceNumber) - edge, $0.1.count) }
        #expect(past.isEmpty, "new data past b's right edge (offset, length): \(past)")
    }
}
