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
/// most one burst: about `burstTime` of data, at least two segments below the cap, at most `maximumBurst`.
/// So a connection that was idle may send a small burst at once, and one that only its timer wakes (a
/// driver's timer fires in whole milliseconds, and up to one late) loses no rate up to a pacing rate of
/// 64 KiB per 2 ms, about 0.26 Gbit/s, and above that still sends one 64 KiB burst per wake-up; a
/// connection woken by its ACKs is not capped. The cap is Linux's (tcp_tso_autosize: at most 64 KiB a
/// burst). A cap of 128 KiB overflowed the receive buffer of a wireguard-go peer short of CPU (about 90
/// datagrams by default): in five interleaved pairs of runs, direct and at 50 ms, single-stream uploads
/// were higher with 1 ms bursts capped at 64 KiB than with 2 ms capped at 128 KiB; the burst stayed 2 ms
/// below the cap because 1 ms cost timer-driven uploads at 50 ms their rate.
struct Pacer {
    /// When the next segment may leave.
    private(set) var nextDeparture = Instant.zero
    /// A segment is waiting for `nextDeparture`: the connection's deadline includes it.
    var waiting = false

    static let burstTime: UInt64 = 2 * Nanos.millisecond
    static let maximumBurst = 64 << 10

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
