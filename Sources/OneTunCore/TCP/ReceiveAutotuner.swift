/// Receive-buffer autotuning (after Linux's tcp_rcv_space_adjust): once per round trip, offer the peer
/// twice what the application read during it, up to the buffer's limit. A fast reader lets the sender's
/// window double every round trip; a slow one keeps the buffer, and memory, small.
struct ReceiveAutotuner {
    let limit: Int
    /// What the peer may have outstanding: the window offered, before what the application has not read.
    private(set) var space: Int
    private var stamp: Instant
    private var bytesRead = 0

    init(initialWindow: Int, limit: Int, now: Instant) {
        self.limit = limit
        space = max(min(initialWindow, limit), 0)
        stamp = now
    }

    /// The application read `bytes`.
    mutating func read(_ bytes: Int) { bytesRead += bytes }

    /// Data arrived: at most once per `rtt` (nil before the first measurement: 100 ms), grow the space to
    /// twice the bytes read per round trip.
    mutating func update(rtt: UInt64?, now: Instant) {
        guard space < limit else { return }
        let rtt = rtt.map { max($0, Nanos.millisecond) } ?? 100 * Nanos.millisecond
        let elapsed = now.since(stamp)
        guard elapsed >= rtt else { return }
        let perRTT = Int(Double(bytesRead) * Double(rtt) / Double(elapsed))
        if 2 * perRTT > space {
            space = min(limit, 2 * perRTT)
        }
        stamp = now
        bytesRead = 0
    }
}
