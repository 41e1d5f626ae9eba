/// Delivery-rate samples per ACK (draft-cheng-iccrg-delivery-rate-estimation), from snapshots taken as new
/// data leaves rather than from a record per segment: at most `capacity` snapshots, one every `spacing`
/// octets, so memory is bounded whatever the window.
///
/// A snapshot is the connection's delivery state when a segment was sent (P.delivered, P.delivered_time,
/// P.first_sent_time) and that segment's send time. When the data it ends has been delivered, the sample is
/// what was delivered since over the longer of the send and the ACK intervals: max() guards against ACK
/// compression (a burst of ACKs makes the ACK interval short), and a sample shorter than the minimum RTT
/// is discarded, as the draft says. The model takes the highest sample of each round: a probe at 1.25 times
/// the bandwidth shows as such, where a round's average dilutes it.
struct DeliveryRateSampler {
    struct Snapshot {
        var end: SeqNumber
        var delivered: Int
        var deliveredTime: Instant
        var firstSentTime: Instant
        var sentTime: Instant
    }

    static let capacity = 32
    /// A ring, allocated at the first snapshot.
    private var ring: [Snapshot] = []
    private var head = 0
    private var count = 0
    private var lastEnd: SeqNumber?
    /// C.delivered_time and C.first_sent_time of the draft.
    private var deliveredTime = Instant.zero
    private var firstSentTime = Instant.zero

    /// New data up to `end` left now; `delivered` is the connection's delivered count, `wasIdle` says
    /// nothing was in flight before it (the draft restarts both clocks then).
    mutating func sent(end: SeqNumber, delivered: Int, wasIdle: Bool, spacing: Int, now: Instant) {
        if wasIdle {
            firstSentTime = now
            deliveredTime = now
        }
        if let last = lastEnd, count > 0, end - last < spacing { return }
        guard count < Self.capacity else { return }
        let snapshot = Snapshot(end: end, delivered: delivered, deliveredTime: deliveredTime, firstSentTime: firstSentTime, sentTime: now)
        if ring.isEmpty { ring = Array(repeating: snapshot, count: Self.capacity) }
        ring[(head + count) % Self.capacity] = snapshot
        count += 1
        lastEnd = end
    }

    /// Data up to `edge` has been delivered, `delivered` in all: the rate sample in bytes per second, or
    /// nil when no snapshot was passed or its interval is shorter than `minRTT`.
    mutating func delivered(upTo edge: SeqNumber, delivered: Int, minRTT: UInt64, now: Instant) -> Int? {
        deliveredTime = now
        var newest: Snapshot?
        while count > 0, ring[head].end <= edge {
            newest = ring[head]
            head = (head + 1) % Self.capacity
            count -= 1
        }
        guard let p = newest else { return nil }
        firstSentTime = p.sentTime
        let interval = max(p.sentTime.since(p.firstSentTime), now.since(p.deliveredTime))
        guard interval > 0, interval >= minRTT else { return nil }
        return Int(Double(delivered - p.delivered) * 1e9 / Double(interval))
    }

    /// After a timeout SND.NXT rewinds: snapshots of data sent before it describe a flight that is gone.
    /// `releasingStorage` also gives the ring back (the connection has ended).
    mutating func reset(releasingStorage: Bool = false) {
        head = 0
        count = 0
        lastEnd = nil
        if releasingStorage { ring = [] }
    }
}
