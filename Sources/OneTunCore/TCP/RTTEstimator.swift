/// The retransmission timer's inputs (RFC 6298): one segment timed at a time, SRTT and RTTVAR, and the
/// RTO with its exponential backoff.
///
/// Karn's rule (RFC 6298 §3): a retransmitted segment is never timed, since its ACK cannot say which copy
/// it answers; `retransmitted(from:length:)` cancels a measurement the retransmission covers.
struct RTTEstimator {
    let minimumRTO: UInt64
    let maximumRTO: UInt64
    private(set) var srtt: UInt64 = 0
    private(set) var rttvar: UInt64 = 0
    /// False until the first measurement (RFC 6298 §2.2 starts the variables from it).
    private(set) var hasSample = false
    /// The RTO in force: computed, or backed off after timeouts.
    private(set) var rto: UInt64
    /// The segment being timed, and when it was sent.
    private(set) var timedSeq: SeqNumber?
    private var timedAt = Instant.zero

    init(initialRTO: UInt64, minimumRTO: UInt64, maximumRTO: UInt64) {
        self.minimumRTO = minimumRTO
        self.maximumRTO = maximumRTO
        rto = initialRTO
    }

    var isTiming: Bool { timedSeq != nil }

    /// Starts timing the segment that begins at `seq`, sent now.
    mutating func time(_ seq: SeqNumber, sentAt now: Instant) {
        timedSeq = seq
        timedAt = now
    }

    /// RFC 6298 §2: a measurement from the ACK of `ack` (nil: the timed segment was SACKed), if it covers
    /// the timed segment. Returns the sample, which the congestion controller also takes.
    mutating func measure(ack: SeqNumber?, now: Instant) -> UInt64? {
        guard let timed = timedSeq, ack.map({ $0 > timed }) ?? true else { return nil }
        timedSeq = nil
        let r = max(now.since(timedAt), 1)
        if !hasSample {
            // §2.2: SRTT <- R, RTTVAR <- R/2.
            srtt = r
            rttvar = r / 2
            hasSample = true
        } else {
            // §2.3: RTTVAR <- 3/4 RTTVAR + 1/4 |SRTT - R'|, SRTT <- 7/8 SRTT + 1/8 R'.
            let delta = srtt > r ? srtt - r : r - srtt
            rttvar = (3 * rttvar + delta) / 4
            srtt = (7 * srtt + r) / 8
        }
        rto = computedRTO
        return r
    }

    /// Karn's rule: `length` octets from `seq` were sent again.
    mutating func retransmitted(from seq: SeqNumber, length: Int) {
        if let timed = timedSeq, timed >= seq, timed - seq <= length { timedSeq = nil }
    }

    /// A timeout: nothing in flight may be timed.
    mutating func cancel() { timedSeq = nil }

    /// RFC 6298 §5.5: the timer expired; double the RTO.
    mutating func backOff() { rto = min(rto * 2, maximumRTO) }

    /// Forward progress ends the backoff (as Linux does): without it a lossy path whose retransmissions are
    /// never timed (Karn) would keep the backed-off RTO for good.
    mutating func endBackoff() { if hasSample { rto = computedRTO } }

    /// RFC 6298 §2.3: RTO = SRTT + max(G, 4·RTTVAR), clamped to the configured bounds.
    var computedRTO: UInt64 {
        min(max(srtt + max(Nanos.millisecond, 4 * rttvar), minimumRTO), maximumRTO)
    }
}
