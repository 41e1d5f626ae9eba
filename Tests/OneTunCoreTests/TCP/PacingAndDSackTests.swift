import Testing

@_spi(OneTunInternals) @testable import OneTunCore

@Suite struct PacingAndDSackTests {
    @Test func pacerAllowsOneBurstThenSpacesSegments() {
        var pacer = Pacer()
        let start = Instant(nanoseconds: 1_000 * Nanos.second)
        // 1 MB/s, 1000-byte segments: a burst of 2 ms (2000 bytes) is credit on top of the segment due now.
        var sent = 0
        while pacer.allows(start) && sent < 100 {
            pacer.departed(1000, rate: 1_000_000, mss: 1000, now: start)
            sent += 1
        }
        #expect(sent == 3)
        // Then one segment per millisecond: 1000 more in one second, give or take the burst.
        var now = start
        var later = 0
        for _ in 0..<10_000 {
            now = now.adding(100_000)
            if now > start.adding(Nanos.second) { break }
            while pacer.allows(now) {
                pacer.departed(1000, rate: 1_000_000, mss: 1000, now: now)
                later += 1
            }
        }
        #expect(later >= 999 && later <= 1001)
        // Not paced: a rate of 0 or one too high to matter.
        var unpaced = Pacer()
        unpaced.departed(1000, rate: 0, mss: 1000, now: start)
        #expect(unpaced.allows(start))
        unpaced.departed(1000, rate: Pacer.unpacedRate, mss: 1000, now: start)
        #expect(unpaced.allows(start))
    }

    /// The burst is `burstTime` of data between two segments and `maximumBurst`: at 10 MB/s, 2 ms is
    /// 20 segments of 1000 bytes on top of the one due now; at 1 GB/s, 64 KiB caps it at 65.
    @Test func theBurstIsTwoMillisecondsOfDataUpTo64KiB() {
        for (rate, expected) in [(10_000_000, 21), (1_000_000_000, 66)] {
            var pacer = Pacer()
            let start = Instant(nanoseconds: 1_000 * Nanos.second)
            var sent = 0
            while pacer.allows(start) && sent < 1000 {
                pacer.departed(1000, rate: rate, mss: 1000, now: start)
                sent += 1
            }
            #expect(sent == expected, "rate \(rate)")
        }
    }

    @Test func deliveryRateSampleIsDeliveredOverTheLongerInterval() {
        var sampler = DeliveryRateSampler()
        let t0 = Instant(nanoseconds: 5 * Nanos.second)
        // 10 segments of 1000 bytes over 10 ms from idle, each a snapshot.
        for i in 1...10 {
            sampler.sent(end: SeqNumber(UInt32(i * 1000)), delivered: 0, wasIdle: i == 1, spacing: 1000, now: t0.adding(UInt64(i - 1) * Nanos.millisecond))
        }
        // All delivered 50 ms after the first left: 10,000 bytes since the last snapshot's delivered count
        // (0), over max(send interval 9 ms, ACK interval 50 ms).
        let rate = sampler.delivered(upTo: SeqNumber(10_000), delivered: 10_000, minRTT: 40 * Nanos.millisecond, now: t0.adding(50 * Nanos.millisecond))
        #expect(rate == 200_000)
        // A sample shorter than the minimum RTT is discarded.
        sampler.sent(end: SeqNumber(11_000), delivered: 10_000, wasIdle: true, spacing: 1000, now: t0.adding(60 * Nanos.millisecond))
        #expect(sampler.delivered(upTo: SeqNumber(11_000), delivered: 11_000, minRTT: 40 * Nanos.millisecond, now: t0.adding(61 * Nanos.millisecond)) == nil)
    }

    /// RFC 2883: data that arrives again below RCV.NXT is reported once, as the first SACK block.
    @Test func duplicateDataIsReportedOnceAsDSack() throws {
        let pair = TCPPair(seed: 3)
        var firstData: (TCPRepr, [UInt8])?
        pair.filter = { fromClient, repr, n in
            if fromClient && n > 0 && firstData == nil { firstData = (repr, []) }
            return true
        }
        let app = TCPStreamApp(total: 20_000, tag: 1, closeWhenDone: false)
        let sink = TCPStreamApp(total: 0, tag: 2, closeWhenDone: false)
        let done = pair.run(seconds: 5, app: {
            app.step(pair.client)
            if let server = pair.server { sink.step(server) }
        }, until: { sink.received.count == 20_000 })
        try #require(done)
        let server = try #require(pair.server)
        #expect(server.sackEnabled)
        let (repr, _) = try #require(firstData)
        let length = 1000
        let payload = [UInt8](repeating: 0, count: length)
        payload.withUnsafeBytes { server.handleSegment(repr, payload: $0, now: pair.now) }
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let ack = try #require(buffer.withUnsafeMutableBytes { server.pollSegment(payload: $0, now: pair.now) })
        #expect(ack.0.sackBlocks.first == TCPSackBlock(left: repr.sequenceNumber, right: repr.sequenceNumber &+ UInt32(length)))
        #expect(server.duplicateBlock == nil)
        // The next ACK no longer carries it.
        server.pending.insert(.ack)
        let next = try #require(buffer.withUnsafeMutableBytes { server.pollSegment(payload: $0, now: pair.now) })
        #expect(next.0.sackBlocks.isEmpty)
    }

    /// The send buffer holds what two windows carry (at least 256 KiB), not its whole 4 MiB limit.
    @Test func sendSpaceFollowsTheWindow() {
        let connection = TCPConnection(localPort: 1, remotePort: 2, iss: 7, now: Instant(nanoseconds: Nanos.second))
        #expect(connection.writableBytes == TCPConnection.minimumSendSpace)
        let chunk = [UInt8](repeating: 1, count: 300 << 10)
        let accepted = chunk.withUnsafeBytes { connection.send($0) }
        #expect(accepted == TCPConnection.minimumSendSpace)
        #expect(connection.writableBytes == 0)
    }

    /// A connection in TIME-WAIT or closed keeps no ring storage beyond what the application has to read.
    @Test func buffersAreReleasedWhenTheConnectionEnds() throws {
        let pair = TCPPair(seed: 5)
        let up = TCPStreamApp(total: 100_000, tag: 1)
        let down = TCPStreamApp(total: 50_000, tag: 2)
        let done = pair.run(seconds: 10, app: {
            up.step(pair.client)
            if let server = pair.server { down.step(server) }
        }, until: { pair.client.hasEnded && (pair.server?.hasEnded ?? false) })
        try #require(done)
        #expect(up.receivedIsStream(of: 50_000, tag: 2) && down.receivedIsStream(of: 100_000, tag: 1))
        for connection in [pair.client, try #require(pair.server)] {
            #expect(connection.sendBuffer.capacity == 0)
            #expect(connection.receiveBuffer.capacity == 0)
        }
    }
}
