/// Delivery-rate rounds for the congestion controller's model: a round ends when data sent after it began
/// is delivered (an edge past `end`, SND.MAX when the round began), so it lasts at least one round trip;
/// its rate is what it delivered over how long it lasted.
struct DeliveryRounds {
    /// Octets delivered over the connection's life: cumulatively acknowledged or newly SACKed.
    private(set) var delivered = 0
    private var start = Instant.zero
    private var deliveredAtStart = 0
    private var end: SeqNumber
    /// The round was held back by the application or the receiver, not the path: its rate says little.
    var appLimited = false
    /// Octets sent again during the round.
    var retransmitted = 0
    /// The highest per-ACK delivery-rate sample of the round (`DeliveryRateSampler`), bytes per second.
    private var bestSample = 0

    /// One finished round.
    struct Sample {
        /// Bytes per second.
        var rate: Int
        var appLimited: Bool
        var delivered: Int
        var retransmitted: Int
    }

    init(sndMax: SeqNumber) { end = sndMax }

    mutating func add(_ bytes: Int) { delivered += max(bytes, 0) }

    /// A per-ACK rate sample taken during the round.
    mutating func sample(_ rate: Int) { bestSample = max(bestSample, rate) }

    /// Data was delivered up to `deliveredEdge` (the highest SACKed octet or SND.UNA): the first call starts
    /// a round; one past `end` finishes it and starts the next, returning its sample. A round lasts at least
    /// `minRTT`: a shorter one means a burst of old SACKed data was counted again (after the scoreboard
    /// forgot it), not a faster path.
    mutating func advance(deliveredEdge: SeqNumber, sndMax: SeqNumber, minRTT: UInt64, now: Instant) -> Sample? {
        if start == .zero {
            restart(sndMax: sndMax, now: now)
            return nil
        }
        guard deliveredEdge > end else { return nil }
        let interval = max(now.since(start), minRTT)
        var sample: Sample?
        if interval > 0 {
            let average = Int(Double(delivered - deliveredAtStart) * 1e9 / Double(interval))
            sample = Sample(
                rate: bestSample > 0 ? bestSample : average, appLimited: appLimited,
                delivered: delivered - deliveredAtStart, retransmitted: retransmitted)
        }
        restart(sndMax: sndMax, now: now)
        return sample
    }

    private mutating func restart(sndMax: SeqNumber, now: Instant) {
        start = now
        deliveredAtStart = delivered
        retransmitted = 0
        end = sndMax
        appLimited = false
        bestSample = 0
    }
}
