/// Loss recovery (RFC 6675 §5 with SACK, RFC 6582 without), as the phase the sender is in and the data only
/// that phase needs.
enum LossRecovery: Equatable {
    /// Not recovering.
    case none
    /// Fast recovery, entered on DupThresh duplicate ACKs or a SND.UNA the scoreboard finds lost; it ends
    /// when `point` (RFC 6675 RecoveryPoint: one past HighData at entry) is cumulatively acknowledged.
    /// `highRxt` is one past RFC 6675 HighRxt (the highest octet resent in this episode); `rescueRxt` is
    /// RescueRxt, set by the one rescue retransmission rule (4) allows.
    case fast(point: SeqNumber, highRxt: SeqNumber, rescueRxt: SeqNumber?)
    /// After a retransmission timeout: everything unSACKed below `point` counts as lost and is resent in
    /// order from SND.UNA (SND.NXT rewinds), skipping SACKed ranges. `highRxt` as above.
    case afterTimeout(point: SeqNumber, highRxt: SeqNumber)

    var isActive: Bool { self != .none }

    var isAfterTimeout: Bool {
        if case .afterTimeout = self { return true }
        return false
    }

    /// RecoveryPoint, while recovering.
    var point: SeqNumber? {
        switch self {
        case .none: nil
        case .fast(let point, _, _), .afterTimeout(let point, _): point
        }
    }

    /// One past HighRxt, while recovering; setting it outside recovery does nothing.
    var highRxt: SeqNumber? {
        get {
            switch self {
            case .none: nil
            case .fast(_, let highRxt, _), .afterTimeout(_, let highRxt): highRxt
            }
        }
        set {
            guard let newValue else { return }
            switch self {
            case .none: break
            case .fast(let point, _, let rescue): self = .fast(point: point, highRxt: newValue, rescueRxt: rescue)
            case .afterTimeout(let point, _): self = .afterTimeout(point: point, highRxt: newValue)
            }
        }
    }

    /// HighRxt moves only forward (RFC 6675 §5 (C.2)–(C.3)).
    mutating func resent(through end: SeqNumber) {
        if let high = highRxt, end > high { highRxt = end }
    }
}

/// Two questions asked of a retransmission of the segment at SND.UNA, each with its own lifetime.
///
/// `SpuriousRetransmissionCheck`: was the retransmission needed at all? It lives until the cumulative ACK
/// passes the segment, across recovery episodes.
///
/// `LostRetransmissionWatch`: was the retransmitted copy lost too? It lives only within the recovery
/// episode that resent the segment: cleared when recovery starts or ends, restarted when SND.UNA moves to
/// a hole this episode already resent.
struct SpuriousRetransmissionCheck {
    /// The segment resent, and when: acknowledged sooner than a retransmission could be (¾ of the minimum
    /// RTT later), the original had arrived late, so the path reorders.
    var seq: SeqNumber
    var sentAt: Instant
}

struct LostRetransmissionWatch {
    /// SACKs arriving a reordering window (a quarter of the minimum RTT) after one round trip from `since`
    /// cover data sent after the retransmission; more than DupThresh segments' worth of them means it was
    /// lost as well (the idea of RFC 8985 RACK, for the one segment that blocks the cumulative ACK).
    var since: Instant
    var sackedSince = 0
}
