/// Which congestion controller a connection uses.
public enum CongestionAlgorithm: Sendable, Equatable {
    /// A model-based controller after BBR v1 (draft-cardwell-iccrg-bbr-congestion-control-00): the window is
    /// twice the measured bandwidth-delay product, and random loss does not shrink it. It keeps a lossy
    /// long path full where a loss-based controller collapses (at 1 % loss and 50 ms RTT, Reno's
    /// MSS/RTT·1.22/√p bound is about 3 Mbit/s). Segments are paced at a gain times the bandwidth estimate
    /// (`Pacer`): 2.885 in startup, its inverse while the queue startup built drains, then BBR's ProbeBW
    /// cycle (1.25, 0.75, then 1 for six phases, each a minimum RTT long).
    case bbr
    /// RFC 5681 slow start and congestion avoidance, halving on loss (RFC 6582 / RFC 6675 recovery).
    case newReno
}

/// The congestion window and the path model behind it. The connection reports events (bytes delivered,
/// RTT samples, round ends, loss episodes, timeouts); `cwnd` is the answer.
struct CongestionControl {
    let algorithm: CongestionAlgorithm
    let mss: Int
    private(set) var cwnd: Int
    var ssthresh = Int.max
    /// Reno's congestion-avoidance byte counter (RFC 5681 §3.1, appropriate byte counting).
    private var bytesAckedInCA = 0

    // BBR's model.
    /// Windowed maximum of the per-round delivery rate, bytes per second, over the last `bandwidthRounds`.
    private var rateSamples = InlineArray<10, Int>(repeating: 0)
    private var rateIndex = 0
    private(set) var bottleneckBandwidth = 0
    /// Windowed minimum RTT (`minRTTWindow`), nanoseconds; 0 until the first sample.
    private(set) var minRTT: UInt64 = 0
    private var minRTTStamp = Instant.zero
    /// Startup ends when three rounds in a row fail to grow the bandwidth by a quarter (BBR "filled pipe").
    private(set) var filledPipe = false
    private var fullBandwidth = 0
    private var fullBandwidthRounds = 0
    /// While probing RTT the window drops to four segments for `probeRTTDuration`, so queues drain and
    /// the minimum RTT is measured afresh.
    private(set) var probingRTT = false
    /// ACK aggregation (Linux BBR's `extra_acked`): how much more arrived in a burst of ACKs than the
    /// bandwidth estimate explains. Batching (recvmmsg, GSO, a peer's delayed ACKs) makes data arrive in
    /// bursts; without this allowance a window of 2·BDP starves a fast path whose RTT is tiny.
    private var ackEpochStart = Instant.zero
    private var ackEpochBytes = 0
    private var extraAcked = InlineArray<2, Int>(repeating: 0)
    private var extraAckedSlot = 0
    private var roundsInSlot = 0
    /// BBR v2's `inflight_hi`: after a round losing more than `lossThreshold` of its data, the window may
    /// not exceed 0.7 times what it was; each round without loss raises the bound again, by 1, 2, 4, …
    /// segments. Random loss below the threshold leaves it alone; a shallow buffer overflowing does not.
    private(set) var inflightHigh = Int.max
    private var probeUpSegments = 1
    static let lossThreshold = 0.02
    /// ...and at least this many segments' worth of octets sent again in it (after BBR v2's
    /// bbr_full_loss_cnt, which counts loss events): at 1 % random loss a
    /// round of 80 segments loses more than 2 % one time in five by chance alone, and cutting the window
    /// each time pinned a 50 ms path at a twentieth of its speed.
    static let lossEvents = 8
    /// The allowance never exceeds one batch of the driver's datagrams.
    static let maximumAggregation = 64
    private var probeRTTDone: Instant?
    private var priorCwnd = 0
    /// After startup filled the pipe, pacing below the bandwidth drains the queue it built, until what is
    /// in flight is down to one BDP (BBR's DRAIN).
    private(set) var draining = false
    /// BBR's ProbeBW: the phase of the gain cycle, and when it began; each phase lasts one minimum RTT.
    private var cyclePhase = 2
    private var cycleStart = Instant.zero
    static let cycleGains: [Double] = [1.25, 0.75, 1, 1, 1, 1, 1, 1]

    static let bandwidthRounds = 10
    static let minRTTWindow: UInt64 = 10 * Nanos.second
    static let probeRTTDuration: UInt64 = 200 * Nanos.millisecond
    /// 2/ln 2: startup doubles the delivery rate every round.
    static let startupGain = 2.885
    static let cwndGain = 2.0

    init(algorithm: CongestionAlgorithm, mss: Int) {
        self.algorithm = algorithm
        self.mss = mss
        // RFC 6928: an initial window of ten segments.
        cwnd = 10 * mss
    }

    var minimumWindow: Int { 4 * mss }

    /// The bandwidth-delay product, or nil before the model has both halves.
    var bdp: Int? {
        guard bottleneckBandwidth > 0, minRTT > 0 else { return nil }
        return Int(Double(bottleneckBandwidth) * Double(minRTT) / 1e9)
    }

    // MARK: Events

    /// Newly delivered bytes (cumulatively acknowledged or newly SACKed), outside of Reno's recovery.
    mutating func delivered(_ bytes: Int, inRecovery: Bool) {
        guard bytes > 0 else { return }
        switch algorithm {
        case .newReno:
            guard !inRecovery else { return }
            if cwnd < ssthresh {
                // RFC 5681 §3.1 slow start with appropriate byte counting (RFC 3465, L = 2 SMSS).
                cwnd += min(bytes, 2 * mss)
            } else {
                bytesAckedInCA += bytes
                if bytesAckedInCA >= cwnd {
                    bytesAckedInCA -= cwnd
                    cwnd += mss
                }
            }
        case .bbr:
            if probingRTT { return }
            // BBR: the window grows by what was delivered, up to the model's target once the pipe is full.
            if let target = targetWindow {
                cwnd = filledPipe ? min(cwnd + bytes, target) : min(cwnd + bytes, max(cwnd, target))
            } else {
                cwnd += bytes
            }
            cwnd = max(min(cwnd, inflightHigh), minimumWindow)
        }
        cwnd = min(max(cwnd, mss), 1 << 30)
    }

    /// BBR's target: `cwndGain`·BDP after startup, `startupGain`·BDP during it, plus the ACK aggregation
    /// allowance (at most 100 ms of the bandwidth).
    private var targetWindow: Int? {
        guard let bdp else { return nil }
        let gain = filledPipe ? Self.cwndGain : Self.startupGain
        let aggregation = min(max(extraAcked[0], extraAcked[1]), bottleneckBandwidth / 10, Self.maximumAggregation * mss)
        return max(Int(Double(bdp) * gain) + aggregation, minimumWindow)
    }

    /// Measures ACK aggregation for `bytes` newly delivered now (Linux BBR's bbr_update_ack_aggregation).
    mutating func measureAggregation(_ bytes: Int, now: Instant) {
        guard algorithm == .bbr, bottleneckBandwidth > 0, filledPipe else { return }
        let expected = Int(Double(bottleneckBandwidth) * Double(now.since(ackEpochStart)) / 1e9)
        if ackEpochStart == .zero || ackEpochBytes <= expected || ackEpochBytes + bytes >= 1 << 22 {
            // The ACK rate fell back to the bandwidth estimate (or the epoch is stale): start a new epoch.
            ackEpochStart = now
            ackEpochBytes = 0
        }
        ackEpochBytes += bytes
        let extra = min(max(ackEpochBytes - (ackEpochStart == now ? 0 : expected), 0), cwnd)
        if extra > extraAcked[extraAckedSlot] { extraAcked[extraAckedSlot] = extra }
    }

    mutating func rttSample(_ rtt: UInt64, now: Instant) {
        if minRTT == 0 || rtt <= minRTT || now.since(minRTTStamp) > Self.minRTTWindow {
            minRTT = rtt
            minRTTStamp = now
        }
    }

    /// One round trip of data ended: `rate` bytes per second were delivered over it, `delivered` bytes in
    /// all, and `lost` bytes had to be sent again. A round the application left idle (`appLimited`) only
    /// counts if it raises the estimate.
    mutating func roundEnded(rate: Int, appLimited: Bool, inFlight: Int, delivered: Int, lost: Int, now: Instant) {
        guard algorithm == .bbr else { return }
        if lost >= Self.lossEvents * mss && Double(lost) > Self.lossThreshold * Double(delivered + lost) {
            // Never below 16 segments: a smaller window cannot gather the duplicate ACKs that fast
            // recovery needs, and every further loss would cost a timeout.
            inflightHigh = max(16 * mss, Int(Double(max(cwnd, inFlight)) * 0.7))
            cwnd = min(cwnd, inflightHigh)
            probeUpSegments = 1
            // Startup ends on heavy loss as well as on a filled pipe.
            if !filledPipe { endStartup() }
        } else if lost == 0 && inflightHigh != Int.max && !appLimited {
            inflightHigh += probeUpSegments * mss
            probeUpSegments = min(probeUpSegments * 2, 1 << 12)
        }
        // Two slots of five rounds each: the aggregation estimate is the max over the last 5–10 rounds.
        roundsInSlot += 1
        if roundsInSlot >= 5 {
            roundsInSlot = 0
            extraAckedSlot ^= 1
            extraAcked[extraAckedSlot] = 0
        }
        if !appLimited || rate > bottleneckBandwidth {
            rateSamples[rateIndex] = rate
        } else {
            rateSamples[rateIndex] = 0
        }
        rateIndex = (rateIndex + 1) % Self.bandwidthRounds
        var best = 0
        for i in 0..<Self.bandwidthRounds { best = max(best, rateSamples[i]) }
        // Keep the previous estimate through a run of application-limited rounds.
        if best > 0 { bottleneckBandwidth = best }
        if !filledPipe && !appLimited {
            if bottleneckBandwidth >= fullBandwidth + fullBandwidth / 4 {
                fullBandwidth = bottleneckBandwidth
                fullBandwidthRounds = 0
            } else {
                fullBandwidthRounds += 1
                if fullBandwidthRounds >= 3 {
                    endStartup()
                    // Drain: the window falls to the steady-state target; the excess leaves the queue.
                    if let target = targetWindow { cwnd = min(cwnd, target) }
                }
            }
        }
        updateProbeRTT(inFlight: inFlight, now: now)
    }

    /// STARTUP is over (the pipe is full, or losses say so): DRAIN empties the queue it built.
    mutating func endStartup() {
        filledPipe = true
        draining = true
    }

    /// Called on every ACK while probing, and at round ends: enters or leaves PROBE_RTT.
    mutating func updateProbeRTT(inFlight: Int, now: Instant) {
        guard algorithm == .bbr, minRTT > 0 else { return }
        if !probingRTT {
            guard filledPipe, now.since(minRTTStamp) > Self.minRTTWindow else { return }
            probingRTT = true
            probeRTTDone = nil
            priorCwnd = max(priorCwnd, cwnd)
            cwnd = minimumWindow
            return
        }
        if probeRTTDone == nil, inFlight <= minimumWindow {
            probeRTTDone = now.adding(Self.probeRTTDuration)
        }
        if let done = probeRTTDone, now >= done {
            probingRTT = false
            // Whatever was sampled during the probe is the new minimum.
            minRTTStamp = now
            cwnd = max(cwnd, priorCwnd)
            priorCwnd = 0
        }
    }

    // MARK: Pacing

    /// Bytes per second to pace at, 0 before there is anything to base it on. `srtt` serves NewReno, and
    /// BBR before its first bandwidth sample.
    func pacingRate(srtt: UInt64) -> Int {
        switch algorithm {
        case .newReno:
            guard srtt > 0 else { return 0 }
            // Linux's tcp_update_pacing_rate: 200 % of cwnd/srtt in slow start, 120 % after.
            return Self.rate((cwnd < ssthresh ? 2.0 : 1.2) * Double(cwnd) * 1e9 / Double(srtt))
        case .bbr:
            if filledPipe && bottleneckBandwidth > 0 {
                let gain = probingRTT ? 1 : draining ? 1 / Self.startupGain : Self.cycleGains[cyclePhase]
                return Self.rate(gain * Double(bottleneckBandwidth))
            }
            // Startup: the window doubles every round; pace at the startup gain over what it implies.
            let rtt = minRTT > 0 ? minRTT : srtt
            guard rtt > 0 else { return 0 }
            return Self.rate(Self.startupGain * max(Double(bottleneckBandwidth), Double(cwnd) * 1e9 / Double(rtt)))
        }
    }

    /// Bytes per second as an Int, saturating at the rate the pacer treats as unpaced.
    private static func rate(_ value: Double) -> Int { value < Double(Pacer.unpacedRate) ? Int(value) : Pacer.unpacedRate }

    /// On every ACK that delivered data: leaves DRAIN once the queue is gone, and moves the ProbeBW gain
    /// cycle on once a phase has lasted a minimum RTT (the 0.75 phase ends early once in flight is down
    /// to the BDP).
    mutating func advanceCycle(inFlight: Int, now: Instant) {
        guard algorithm == .bbr, filledPipe, let bdp else { return }
        if draining {
            guard inFlight <= bdp else { return }
            draining = false
            cyclePhase = 2
            cycleStart = now
            return
        }
        let elapsed = now.since(cycleStart) > minRTT
        let advance: Bool
        switch cyclePhase {
        case 1: advance = elapsed || inFlight <= bdp
        default: advance = elapsed
        }
        if advance {
            cyclePhase = (cyclePhase + 1) % Self.cycleGains.count
            cycleStart = now
        }
    }

    /// Loss recovery begins (RFC 6675 §5 step 4.2 / RFC 6582 §3.2 step 2).
    mutating func lossDetected(flightSize: Int) {
        switch algorithm {
        case .newReno:
            ssthresh = max(flightSize / 2, 2 * mss)
            cwnd = ssthresh
            bytesAckedInCA = 0
        case .bbr:
            // Random loss says nothing about the bottleneck; BBR keeps its model.
            break
        }
    }

    /// NewReno without SACK: each further duplicate ACK inflates the window by a segment (RFC 6582 §3.2).
    mutating func inflate() { if algorithm == .newReno { cwnd += mss } }

    /// NewReno without SACK: a partial ACK deflates by the amount acknowledged (RFC 6582 §3.2 step 3).
    mutating func deflate(acked: Int) { if algorithm == .newReno { cwnd = max(cwnd - acked + mss, mss) } }

    /// Recovery ended with a full acknowledgment.
    mutating func recoveryEnded(flightSize: Int) {
        switch algorithm {
        case .newReno:
            // RFC 6582 §3.2 step 3: deflate to ssthresh.
            cwnd = min(ssthresh, max(flightSize, mss) + mss)
        case .bbr:
            if priorCwnd > 0 && !probingRTT {
                cwnd = max(cwnd, min(priorCwnd, inflightHigh))
                priorCwnd = 0
            }
        }
    }

    /// RFC 5681 §3.1: after a retransmission timeout the window is one segment.
    mutating func timedOut(flightSize: Int) {
        switch algorithm {
        case .newReno:
            ssthresh = max(flightSize / 2, 2 * mss)
        case .bbr:
            // Restored when the data outstanding at the timeout has been acknowledged.
            if !probingRTT { priorCwnd = max(priorCwnd, cwnd) }
        }
        cwnd = mss
        bytesAckedInCA = 0
    }
}
