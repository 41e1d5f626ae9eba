/// Spreads a connection's data segments over time at the congestion controller's pacing rate, so a window
/// leaves as a stream rather than as one burst at the speed of the machine.
///
/// Without pacing, a window opened by a burst of ACKs (or the whole window after a timeout) leaves in one
/// train of datagrams; a receiver's socket buffer or a router's queue on the path overflows, and the
/// losses are taken for congestion or, worse, go unseen by a model that ignores loss. BBR paces by design
/// (draft-cardwell-iccrg-bbr-congestion-control §4.2.1, pacing_rate = pacing_gain · BtlBw), and Linux paces
/// every TCP flow since 4.13 (tcp_update_pacing_rate: 2·cwnd/srtt in slow start, 1.2·cwnd/srtt after).
///
/// A virtual departure clock: each segment moves it on by `bytes / rate`. The clock may lag `now` by at
/// most one burst (about `burstTime` of data, at least two segments, at most `maximumBurst`), so a
/// connection that was idle may send a small burst at once, and a driver whose timer fires in whole
/// milliseconds loses no rate to rounding up to about 0.5 Gbit/s per connection (128 KiB per 2 ms);
/// above that a connection woken only by its timer is capped there, one woken by ACKs is not.
struct Pacer {
    /// When the next segment may leave.
    private(set) var nextDeparture = Instant.zero
    /// A segment is waiting for `nextDeparture`: the connection's deadline includes it.
    var waiting = false

    static let burstTime: UInt64 = 2 * Nanos.millisecond
    static let maximumBurst = 128 << 10

    func allows(_ now: Instant) -> Bool { nextDeparture <= now }

    /// Above this many bytes per second (a terabyte: an in-memory path whose RTT rounds to nothing),
    /// segments are not paced.
    static let unpacedRate = 1 << 40

    /// `bytes` left now at `rate` bytes per second (0: not paced).
    mutating func departed(_ bytes: Int, rate: Int, mss: Int, now: Instant) {
        guard rate > 0 && rate < Self.unpacedRate else {
            nextDeparture = now
            return
        }
        let burst = min(max(rate / Int(Nanos.second / Self.burstTime), 2 * mss), Self.maximumBurst)
        let slack = UInt64(burst) * Nanos.second / UInt64(rate)
        let floor = Instant(nanoseconds: now.nanoseconds > slack ? now.nanoseconds - slack : 0)
        nextDeparture = max(nextDeparture, floor).adding(UInt64(bytes) * Nanos.second / UInt64(rate))
    }
}
