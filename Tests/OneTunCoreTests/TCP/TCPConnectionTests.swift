import Testing
@_spi(OneTunInternals) @testable import OneTunCore

@Suite struct TCPConnectionTests {
    @Test func handshakeTransferAndOrderlyClose() throws {
        let pair = TCPPair(seed: 1)
        let up = TCPStreamApp(total: 1 << 20, tag: 1)
        let down = TCPStreamApp(total: 1 << 20, tag: 2)
        let done = pair.run(seconds: 60, app: {
            up.step(pair.client)
            if let s = pair.server { down.step(s) }
        }, until: { pair.client.state == .closed && pair.server?.state == .closed || (pair.client.state == .timeWait && pair.server?.state == .closed) })
        #expect(done, "client \(pair.client.state) server \(String(describing: pair.server?.state))")
        #expect(up.receivedIsStream(of: 1 << 20, tag: 2))
        #expect(down.receivedIsStream(of: 1 << 20, tag: 1))
        #expect(pair.client.error == nil && pair.server?.error == nil)
        #expect(pair.client.windowScaling && pair.server?.windowScaling == true)
    }

    @Test(arguments: [(0.01, UInt64(11)), (0.05, UInt64(12)), (0.05, UInt64(13))])
    func lossReorderDuplication(loss: Double, seed: UInt64) {
        let pair = TCPPair(seed: seed)
        pair.loss = loss
        pair.duplicate = 0.02
        pair.jitter = 10 * Nanos.millisecond
        let size = 2 << 20
        let up = TCPStreamApp(total: size, tag: 3)
        let down = TCPStreamApp(total: size, tag: 4)
        let done = pair.run(seconds: 600, app: {
            up.step(pair.client)
            if let s = pair.server { down.step(s) }
        }, until: { up.received.count == size && down.received.count == size && pair.client.isReadClosed && pair.server?.isReadClosed == true })
        #expect(done, "seed \(seed): up \(up.received.count) down \(down.received.count) client \(pair.client.state) \(String(describing: pair.client.error)) server \(String(describing: pair.server?.state)) \(String(describing: pair.server?.error))")
        #expect(up.receivedIsStream(of: size, tag: 4), "seed \(seed)")
        #expect(down.receivedIsStream(of: size, tag: 3), "seed \(seed)")
    }

    @Test func halfCloseEachDirection() {
        let pair = TCPPair(seed: 2)
        // The client sends 100 KiB and closes; the server keeps sending for a while afterwards.
        let up = TCPStreamApp(total: 100 << 10, tag: 5)
        let down = TCPStreamApp(total: 300 << 10, tag: 6, closeWhenDone: false)
        var serverSawEOFWhileSending = false
        pair.run(seconds: 60, app: {
            up.step(pair.client)
            if let s = pair.server {
                down.step(s)
                if s.isReadClosed && down.written < down.total { serverSawEOFWhileSending = true }
            }
        }, until: { down.written == down.total && up.received.count == down.total })
        #expect(serverSawEOFWhileSending || pair.server?.isReadClosed == true)
        #expect(down.receivedIsStream(of: 100 << 10, tag: 5))
        #expect(up.receivedIsStream(of: 300 << 10, tag: 6))
        #expect(pair.server?.state == .closeWait && pair.client.state == .finWait2)
        pair.server?.close()
        let closed = pair.run(seconds: 30, until: { pair.server?.state == .closed && (pair.client.state == .timeWait || pair.client.state == .closed) })
        #expect(closed)
    }

    @Test func resetMidTransfer() {
        let pair = TCPPair(seed: 3)
        let up = TCPStreamApp(total: 8 << 20, tag: 7)
        var serverReceived = 0
        pair.run(seconds: 10, app: {
            up.step(pair.client)
            if let s = pair.server {
                serverReceived += s.readable().count
                s.consume(s.readable().count)
            }
        }, until: { serverReceived > 1 << 20 })
        #expect(pair.client.state == .established)
        pair.server?.abort()
        let reset = pair.run(seconds: 5, app: { up.step(pair.client) }, until: { pair.client.state == .closed })
        #expect(reset)
        #expect(pair.client.error == .reset)
    }

    @Test func refusedConnection() {
        let pair = TCPPair(seed: 4)
        // The "server" answers the SYN with <SEQ=0><ACK=ISS+1><CTL=RST,ACK>, as the interface does for a closed port.
        pair.filter = { fromClient, repr, _ in
            if fromClient && repr.flags.contains(.syn) {
                let rst = TCPRepr(sourcePort: 80, destinationPort: 40000, sequenceNumber: 0, acknowledgmentNumber: repr.sequenceNumber &+ 1, flags: [.rst, .ack], window: 0)
                TCPPair.insert(.init(at: pair.now.nanoseconds + pair.latency, order: 0, repr: rst, payload: []), into: &pair.toClient)
                return false
            }
            return true
        }
        let refused = pair.run(seconds: 5, until: { pair.client.state == .closed })
        #expect(refused && pair.client.error == .refused)
    }

    @Test func synRetriedThenTimesOut() {
        let pair = TCPPair(seed: 5, client: TCPConfig(maximumSynRetransmissions: 3))
        pair.filter = { _, _, _ in false }
        let start = pair.now
        let gaveUp = pair.run(seconds: 60, until: { pair.client.state == .closed })
        #expect(gaveUp && pair.client.error == .timedOut)
        // 1 + 2 + 4 + 8 s of backoff.
        #expect(pair.now.since(start) >= 15 * Nanos.second && pair.now.since(start) < 16 * Nanos.second)
        #expect(pair.segmentsSent == 4)
    }

    @Test func slowReaderZeroWindowAndRecovery() {
        // A small receive buffer and a reader that stops for a while: the window closes, the sender probes,
        // and everything arrives once the reader resumes. Memory stays within the buffer caps throughout.
        let pair = TCPPair(seed: 6, server: TCPConfig(receiveBufferLimit: 64 << 10))
        let size = 1 << 20
        let up = TCPStreamApp(total: size, tag: 8)
        let down = TCPStreamApp(total: 0, tag: 9, closeWhenDone: false)
        var reading = false
        var sawZeroWindow = false
        pair.run(seconds: 5, app: {
            up.step(pair.client)
            if let s = pair.server {
                if reading { down.step(s) }
                if s.receiveWindow == 0 { sawZeroWindow = true }
                #expect(s.readableBytes <= 64 << 10)
            }
        }, until: { sawZeroWindow })
        #expect(sawZeroWindow)
        pair.run(seconds: 30) { false }
        #expect(pair.client.state == .established)
        reading = true
        let done = pair.run(seconds: 120, app: {
            up.step(pair.client)
            if let s = pair.server { down.step(s) }
        }, until: { down.received.count == size })
        #expect(done)
        #expect(down.receivedIsStream(of: size, tag: 8))
    }

    /// 100 Mbit/s, 50 ms RTT: after slow start one connection fills most of the link, lossless or at 1 %
    /// random loss (which a loss-based controller cannot do: Reno's bound there is about 3 Mbit/s).
    @Test(arguments: [(0.0, 90.0, CongestionAlgorithm.bbr), (0.01, 50.0, .bbr), (0.0, 90.0, .newReno)])
    func throughputOnALongFatLink(loss: Double, required: Double, algorithm: CongestionAlgorithm) {
        let config = TCPConfig(congestionControl: algorithm)
        let pair = TCPPair(seed: 7, client: config, server: config)
        pair.latency = 25 * Nanos.millisecond
        pair.bandwidth = 100_000_000 / 8
        let size = 24 << 20
        let up = TCPStreamApp(total: size, tag: 10, closeWhenDone: false)
        let down = TCPStreamApp(total: 0, tag: 11, closeWhenDone: false)
        var mark: (Instant, Int)?
        let done = pair.run(seconds: 120, app: {
            up.step(pair.client)
            if let s = pair.server { down.step(s) }
            if mark == nil && down.received.count >= 8 << 20 { mark = (pair.now, down.received.count) }
            if pair.now.nanoseconds > 1_001 * Nanos.second { pair.loss = loss }
        }, until: { down.received.count == size })
        #expect(done)
        let (start, bytes) = mark!
        let seconds = Double(pair.now.since(start)) / 1e9
        let rate = Double((size - bytes) * 8) / seconds / 1e6
        print("simulated 100 Mbit/s, 50 ms RTT, \(loss * 100)% loss, \(algorithm): \(Int(rate)) Mbit/s after slow start; client \(pair.client.stats)")
        #expect(rate >= required, "after slow start: \(rate) Mbit/s")
        #expect(down.receivedIsStream(of: size, tag: 10))
    }

    /// A path that reorders but never loses: the first retransmissions prove spurious (acknowledged
    /// sooner than a round trip after they were sent), so the duplicate threshold rises and later
    /// reordering no longer triggers retransmissions.
    @Test func reorderingRaisesTheDuplicateThreshold() {
        let pair = TCPPair(seed: 31)
        pair.latency = 10 * Nanos.millisecond
        pair.jitter = 3 * Nanos.millisecond
        pair.bandwidth = 100_000_000 / 8
        let size = 8 << 20
        let up = TCPStreamApp(total: size, tag: 12, closeWhenDone: false)
        let down = TCPStreamApp(total: 0, tag: 13, closeWhenDone: false)
        var retransmittedAtHalf: Int?
        let done = pair.run(seconds: 120, app: {
            up.step(pair.client)
            if let s = pair.server { down.step(s) }
            if retransmittedAtHalf == nil && down.received.count >= size / 2 {
                retransmittedAtHalf = pair.client.stats.retransmittedSegments
            }
        }, until: { down.received.count == size })
        #expect(done)
        #expect(down.receivedIsStream(of: size, tag: 12))
        let stats = pair.client.stats
        print("reordering, no loss: \(stats.retransmittedSegments) retransmissions (\(retransmittedAtHalf ?? -1) in the first half), \(pair.client.spuriousRetransmissions) found spurious, DupThresh \(pair.client.dupThresh)")
        #expect(pair.client.spuriousRetransmissions > 0)
        #expect(pair.client.dupThresh > SackScoreboard.defaultDupThresh)
        // Once adapted, the second half retransmits far less than the first.
        #expect(stats.retransmittedSegments - (retransmittedAtHalf ?? 0) < max(1, (retransmittedAtHalf ?? 0) / 2))
    }
}
