import Testing
@_spi(OneTunInternals) @testable import OneTunCore

/// The TCP engine's parts on their own, outside a connection: the RTT estimator (RFC 6298), the loss-recovery
/// phase (RFC 6675) and the receive-window autotuner.
@Suite struct TCPPartsTests {
    static let ms = Nanos.millisecond

    func at(_ milliseconds: UInt64) -> Instant { Instant(nanoseconds: milliseconds * Self.ms) }

    func estimator() -> RTTEstimator {
        RTTEstimator(initialRTO: 1000 * Self.ms, minimumRTO: 200 * Self.ms, maximumRTO: 60_000 * Self.ms)
    }

    /// RFC 6298 §2.2 and §2.3, worked by hand: the first sample sets SRTT = R and RTTVAR = R/2; the next
    /// moves RTTVAR by a quarter of |SRTT − R'| and SRTT by an eighth; RTO = SRTT + 4·RTTVAR, at least the
    /// minimum.
    @Test func rttEstimatorFollowsRFC6298() throws {
        var e = estimator()
        #expect(!e.hasSample && e.rto == 1000 * Self.ms)
        e.time(SeqNumber(100), sentAt: at(0))
        #expect(e.measure(ack: SeqNumber(100), now: at(80)) == nil, "an ACK that does not pass the timed octet")
        #expect(e.measure(ack: SeqNumber(101), now: at(80)) == 80 * Self.ms)
        #expect(e.srtt == 80 * Self.ms && e.rttvar == 40 * Self.ms)
        #expect(e.rto == 240 * Self.ms)  // 80 + 4 × 40
        e.time(SeqNumber(200), sentAt: at(100))
        #expect(e.measure(ack: SeqNumber(300), now: at(140)) == 40 * Self.ms)
        // RTTVAR = (3 × 40 + |80 − 40|) / 4 = 40; SRTT = (7 × 80 + 40) / 8 = 75.
        #expect(e.rttvar == 40 * Self.ms && e.srtt == 75 * Self.ms)
        #expect(e.rto == 235 * Self.ms)
        // Small samples: the minimum RTO holds.
        for k in 0..<40 {
            e.time(SeqNumber(1000 + UInt32(k) * 10), sentAt: at(1000 + UInt64(k) * 10))
            _ = e.measure(ack: SeqNumber(1000 + UInt32(k) * 10 + 1), now: at(1001 + UInt64(k) * 10))
        }
        #expect(e.rto == 200 * Self.ms)
    }

    /// Karn's rule (§3): a retransmission covering the timed octet cancels the measurement; one elsewhere
    /// does not. A timeout doubles the RTO up to the maximum (§5.5); progress ends the backoff.
    @Test func rttEstimatorKarnAndBackoff() {
        var e = estimator()
        e.time(SeqNumber(500), sentAt: at(0))
        e.retransmitted(from: SeqNumber(0), length: 100)
        #expect(e.isTiming, "a retransmission below the timed octet")
        e.retransmitted(from: SeqNumber(400), length: 200)
        #expect(!e.isTiming, "a retransmission covering it")
        #expect(e.measure(ack: SeqNumber(1000), now: at(50)) == nil)
        e.time(SeqNumber(1000), sentAt: at(100))
        _ = e.measure(ack: SeqNumber(1001), now: at(150))
        let computed = e.rto
        e.backOff()
        #expect(e.rto == 2 * computed)
        for _ in 0..<20 { e.backOff() }
        #expect(e.rto == 60_000 * Self.ms)
        e.endBackoff()
        #expect(e.rto == computed)
    }

    /// The recovery phase carries only its own data: HighRxt moves forward only, and setting it outside
    /// recovery does nothing.
    @Test func lossRecoveryPhases() {
        var r = LossRecovery.none
        #expect(!r.isActive && r.point == nil && r.highRxt == nil)
        r.resent(through: SeqNumber(10))
        #expect(r == .none)
        r = .fast(point: SeqNumber(5000), highRxt: SeqNumber(1000), rescueRxt: nil)
        r.resent(through: SeqNumber(2400))
        r.resent(through: SeqNumber(1500))
        #expect(r == .fast(point: SeqNumber(5000), highRxt: SeqNumber(2400), rescueRxt: nil))
        #expect(r.isActive && !r.isAfterTimeout && r.point == SeqNumber(5000))
        r = .afterTimeout(point: SeqNumber(9000), highRxt: SeqNumber(3000))
        r.resent(through: SeqNumber(4380))
        #expect(r == .afterTimeout(point: SeqNumber(9000), highRxt: SeqNumber(4380)) && r.isAfterTimeout)
    }

    /// After Linux's tcp_rcv_space_adjust: once a round trip, the offered space becomes twice what the
    /// application read in it, up to the limit; a slow reader leaves it where it was.
    @Test func receiveAutotunerGrowsWithTheReader() {
        var t = ReceiveAutotuner(initialWindow: 128 << 10, limit: 4 << 20, now: at(0))
        t.read(100 << 10)
        t.update(rtt: 50 * Self.ms, now: at(20))
        #expect(t.space == 128 << 10, "less than a round trip since the last adjustment")
        t.read(200 << 10)
        t.update(rtt: 50 * Self.ms, now: at(50))
        #expect(t.space == 600 << 10, "300 KiB read in one round trip: twice that")
        t.read(10 << 10)
        t.update(rtt: 50 * Self.ms, now: at(100))
        #expect(t.space == 600 << 10, "a slow round trip does not shrink it")
        t.read(8 << 20)
        t.update(rtt: 50 * Self.ms, now: at(150))
        #expect(t.space == 4 << 20, "never past the limit")
    }
}
