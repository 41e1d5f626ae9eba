/// The sender's SACK scoreboard: which octets of the outstanding range `[SND.UNA, SND.NXT)` the receiver has
/// reported with RFC 2018 SACK blocks, and the RFC 6675 §4 routines that read it (`IsLost`, `NextSeg`,
/// `SetPipe`).
///
/// RFC 6675 §3: "The scoreboard ... stores SACK information ... to track those segments that have been
/// selectively acknowledged by the receiver." We keep it as at most `capacity` sorted, disjoint, non-adjacent
/// ranges; overlapping or touching blocks are merged as they arrive. The storage grows with the number of
/// ranges (none until the first SACK), up to enough for every other segment of a 4 MiB window to be
/// missing.
///
/// Conventions. Sequence numbers are plain `UInt32` compared modulo 2^32 relative to `una` (RFC 9293 §3.4),
/// so every stored octet is within 2^31 of `una`. Ranges are half-open `[start, end)`. The RFC's variables
/// name the *highest octet* of something (inclusive); here the matching arguments are *one past* it:
/// - RFC `HighACK` + 1 = `una` (SND.UNA, the first unacknowledged octet).
/// - RFC `HighData` + 1 = `nxt` (one past the highest octet ever sent, i.e. SND.NXT — or SND.MAX for a
///   sender that rewinds SND.NXT after a retransmission timeout).
/// - RFC `HighRxt` + 1 = `highRxt` (one past the highest octet retransmitted in this recovery episode;
///   `una` when nothing has been retransmitted yet).
///
/// The scoreboard only reads SACK state; the caller owns the RFC 6675 §5 recovery variables (`RecoveryPoint`,
/// `HighRxt`, `RescueRxt`) and the congestion window.
///
/// RFC 2018 §8: SACK is advisory — the receiver may renege — so nothing here lets the sender free buffered
/// data; only a cumulative ACK (`ackAdvanced(to:)`) does.
struct SackScoreboard {
    /// How many disjoint SACKed ranges are kept. A receiver reports at most 4 blocks per segment
    /// (RFC 2018 §3), and only the most recent ones: a range forgotten here is seldom reported again, so its
    /// hole is never found lost and the cumulative ACK waits on it. A startup that overshoots a shallow
    /// buffer loses hundreds of scattered segments of one window; 32 ranges (as this once was) left
    /// recovery repairing one hole per round trip.
    static let capacity = 2048

    /// RFC 6675 §2 `DupThresh`: "The number of duplicate acknowledgments required to trigger a fast
    /// retransmission. ... 3 as specified in [RFC5681]."
    static let defaultDupThresh = 3

    /// SND.UNA: every stored range lies in `[una, nxt)` for the `nxt` of the `addSack` that added it.
    private(set) var una: UInt32

    /// Total octets currently marked SACKed.
    private(set) var sackedBytes = 0

    /// Number of disjoint SACKed ranges, lowest first in `block(_:)`.
    private(set) var blockCount = 0

    // Absolute sequence numbers; sorted by offset from `una`, disjoint and never touching. Only the first
    // `blockCount` entries are in use.
    private var starts: [UInt32] = []
    private var ends: [UInt32] = []

    init(una: UInt32) {
        self.una = una
    }

    /// Forgets every SACKed range and restarts at `una` — at connection start, and after a retransmission
    /// timeout. RFC 2018 §8: "After a retransmit timeout the data sender SHOULD turn off all of the SACKed
    /// bits, since the timeout might indicate that the data receiver has reneged."
    mutating func reset(una: UInt32, releasingStorage: Bool = false) {
        self.una = una
        sackedBytes = 0
        blockCount = 0
        if releasingStorage {
            starts = []
            ends = []
        }
    }

    /// The `index`th SACKed range, lowest first (`0..<blockCount`).
    func block(_ index: Int) -> (start: UInt32, end: UInt32) {
        precondition(index >= 0 && index < blockCount)
        return (starts[index], ends[index])
    }

    /// One past the highest octet covered by any received SACK (RFC 6675 NextSeg rule 1.b's bound), or `nil`
    /// when nothing is SACKed.
    var highestSackedEnd: UInt32? {
        blockCount == 0 ? nil : ends[blockCount - 1]
    }

    /// Whether the octet `seq` lies in a SACKed range.
    func isSacked(_ seq: UInt32) -> Bool {
        let q = offset(seq)
        var i = 0
        while i < blockCount {
            if q < offset(starts[i]) { return false }
            if q < offset(ends[i]) { return true }
            i += 1
        }
        return false
    }

    /// The end of the SACKed range holding `seq`, or nil when `seq` is not SACKed. A go-back-N resend after a
    /// timeout skips such ranges.
    func sackedRangeEnd(containing seq: UInt32) -> UInt32? {
        let q = offset(seq)
        var i = 0
        while i < blockCount {
            if q < offset(starts[i]) { return nil }
            if q < offset(ends[i]) { return ends[i] }
            i += 1
        }
        return nil
    }

    /// SACKed octets below `seq`.
    func sackedBytes(below seq: UInt32) -> Int {
        let q = offset(seq)
        var total = 0
        var i = 0
        while i < blockCount {
            let s = offset(starts[i])
            if s >= q { break }
            total += min(offset(ends[i]), q) - s
            i += 1
        }
        return total
    }

    // MARK: - Updates (RFC 6675 §4 Update())

    /// A cumulative ACK moved SND.UNA to `newUna`: every range below it is dropped and a range straddling it
    /// is trimmed. An ACK that does not move forward changes nothing.
    mutating func ackAdvanced(to newUna: UInt32) {
        let shift = offset(newUna)
        guard shift > 0 else { return }
        var dropped = 0
        while dropped < blockCount, offset(ends[dropped]) <= shift {
            sackedBytes -= length(dropped)
            dropped += 1
        }
        if dropped < blockCount, offset(starts[dropped]) < shift {
            sackedBytes -= shift - offset(starts[dropped])
            starts[dropped] = newUna
        }
        removeBlocks(from: 0, count: dropped)
        una = newUna
    }

    /// Records the SACK block `[start, end)` (RFC 2018 §3: "Left Edge ... the first sequence number of this
    /// block", "Right Edge ... the sequence number immediately following the last sequence number of this
    /// block") and returns how many octets were newly SACKed.
    ///
    /// A positive result is what makes an ACK a "duplicate acknowledgment" in RFC 6675 §2's sense ("(b) the
    /// incoming acknowledgment carries a SACK option that indicates newly SACKed data").
    ///
    /// Blocks are validated before use: empty or backwards blocks and blocks whose right edge lies beyond
    /// `nxt` (data never sent) are ignored; a block entirely below `una` is a D-SACK (RFC 2883 §4) or stale
    /// and is ignored; a block straddling `una` is trimmed to `[una, end)`.
    ///
    /// When all `capacity` ranges are in use and the block would need a new one, the highest range is
    /// forgotten (or the block itself, if it would be the highest): recovery works upwards from `una`, and
    /// forgetting a SACK only ever causes a spurious retransmission, never a stall.
    @discardableResult
    mutating func addSack(start: UInt32, end: UInt32, nxt: UInt32) -> Int {
        let blockLength = end &- start
        guard blockLength != 0, blockLength < 0x8000_0000 else { return 0 }
        let limit = offset(nxt)
        let e = offset(end)
        guard e > 0, e <= limit else { return 0 }
        // From the right edge, so a left edge far below `una` cannot wrap around.
        let s = max(e - Int(blockLength), 0)

        // First range that reaches `s` (touching counts) and last range that starts at or before `e`.
        var first = 0
        while first < blockCount, offset(ends[first]) < s { first += 1 }
        var last = first - 1
        while last + 1 < blockCount, offset(starts[last + 1]) <= e { last += 1 }

        let before = sackedBytes
        if first > last {
            // Disjoint from every range: insert at `first`.
            if blockCount == Self.capacity {
                if first == blockCount { return 0 }
                sackedBytes -= length(blockCount - 1)
                blockCount -= 1
            }
            if blockCount == starts.count {
                starts.append(0)
                ends.append(0)
            }
            var i = blockCount
            while i > first {
                starts[i] = starts[i - 1]
                ends[i] = ends[i - 1]
                i -= 1
            }
            starts[first] = una &+ UInt32(s)
            ends[first] = una &+ UInt32(e)
            blockCount += 1
            sackedBytes += e - s
        } else {
            // Overlaps or touches `first...last`: merge them all into `first`.
            let mergedStart = min(s, offset(starts[first]))
            let mergedEnd = max(e, offset(ends[last]))
            var i = first
            while i <= last {
                sackedBytes -= length(i)
                i += 1
            }
            starts[first] = una &+ UInt32(mergedStart)
            ends[first] = una &+ UInt32(mergedEnd)
            sackedBytes += mergedEnd - mergedStart
            removeBlocks(from: first + 1, count: last - first)
        }
        return sackedBytes - before
    }

    // MARK: - RFC 6675 §4 routines

    /// RFC 6675 §4 IsLost (SeqNum): "This routine returns whether the given sequence number is considered to
    /// be lost. The routine returns true when either DupThresh discontiguous SACKed sequences have arrived
    /// above 'SeqNum' or more than (DupThresh - 1) * SMSS bytes with sequence numbers greater than 'SeqNum'
    /// have been SACKed. Otherwise, the routine returns false."
    func isLost(_ seq: UInt32, dupThresh: Int = defaultDupThresh, mss: Int) -> Bool {
        let q = offset(seq)
        let byteThreshold = (dupThresh - 1) * mss
        var blocksAbove = 0
        var bytesAbove = 0
        var i = blockCount - 1
        // Walk down from the highest range; only octets strictly greater than `seq` count.
        while i >= 0 {
            let e = offset(ends[i])
            guard e > q + 1 else { break }
            blocksAbove += 1
            bytesAbove += e - max(offset(starts[i]), q + 1)
            if blocksAbove >= dupThresh || bytesAbove > byteThreshold { return true }
            i -= 1
        }
        return false
    }

    /// Which NextSeg() rule of RFC 6675 §4 chose a segment; the caller's bookkeeping depends on it
    /// (RFC 6675 §5 (C.2)–(C.3)).
    enum NextSegRule: Equatable {
        /// Rule (1): the lowest unSACKed octet above HighRxt, below the highest SACKed octet, that IsLost().
        /// Caller sets HighRxt to the segment's end.
        case lost
        /// Rule (2): previously unsent data starting at HighData+1 (`nxt`). Caller advances SND.NXT.
        case newData
        /// Rule (3): the lowest unSACKed octet above HighRxt and below the highest SACKed octet, not yet
        /// deemed lost. Caller sets HighRxt to the segment's end.
        case unsackedBelowHighestSack
        /// Rule (4): the rescue retransmission. Caller sets RescueRxt to RecoveryPoint; "HighRxt MUST NOT be
        /// updated."
        case rescue
    }

    /// A range to (re)transmit, at most one SMSS long, chosen by `nextSegment`.
    struct Segment: Equatable {
        var start: UInt32
        var end: UInt32
        var rule: NextSegRule
        var length: Int { Int(end &- start) }
    }

    /// RFC 6675 §4 NextSeg(): "MUST return the sequence number range of the next segment that is to be
    /// transmitted", or `nil` — "If no sequence number ... can be found ... NextSeg () MUST indicate failure".
    ///
    /// - Parameters:
    ///   - highRxt: one past the highest octet retransmitted in this recovery (RFC HighRxt + 1).
    ///   - nxt: one past the highest octet sent (RFC HighData + 1).
    ///   - newDataAvailable: octets of unsent data that "the receiver's advertised window allows" (and the
    ///     send buffer holds) right now, for rule (2).
    ///   - mss: SMSS.
    ///   - rescueAllowed: whether rule (4) may fire — the caller's "HighACK is greater than RescueRxt (or
    ///     RescueRxt is undefined)".
    func nextSegment(
        highRxt: UInt32,
        nxt: UInt32,
        newDataAvailable: Int,
        mss: Int,
        dupThresh: Int = defaultDupThresh,
        rescueAllowed: Bool = false
    ) -> Segment? {
        precondition(mss > 0, "SMSS must be positive")
        let limit = offset(nxt)
        let floor = max(offset(highRxt), 0)
        var rule3: Segment?

        // The holes between SACKed ranges, lowest first. Only holes below a SACKed range satisfy (1.b)
        // "S2 is less than the highest octet covered by any received SACK".
        var i = 0
        var holeStart = 0
        while i < blockCount {
            let holeEnd = offset(starts[i])
            // (1.a) "S2 is greater than HighRxt."
            let s2 = max(holeStart, floor)
            if s2 < holeEnd {
                let segment = Segment(
                    start: una &+ UInt32(s2), end: una &+ UInt32(min(s2 + mss, holeEnd)), rule: .lost)
                // "(1) If there exists a smallest unSACKed sequence number 'S2' that meets the following three
                // criteria for determining loss, the sequence range of one segment of up to SMSS octets
                // starting with S2 MUST be returned." (1.c) "IsLost (S2) returns true." IsLost only gets
                // harder to satisfy as S2 grows, so if the smallest candidate is not lost, none is.
                if holeIsLost(i, dupThresh: dupThresh, mss: mss) { return segment }
                rule3 = Segment(start: segment.start, end: segment.end, rule: .unsackedBelowHighestSack)
                break
            }
            holeStart = offset(ends[i])
            i += 1
        }

        // "(2) If no sequence number 'S2' per rule (1) exists but there exists available unsent data and the
        // receiver's advertised window allows, the sequence range of one segment of up to SMSS octets of
        // previously unsent data starting with sequence number HighData+1 MUST be returned."
        if newDataAvailable > 0 {
            return Segment(start: nxt, end: nxt &+ UInt32(min(mss, newDataAvailable)), rule: .newData)
        }

        // "(3) If the conditions for rules (1) and (2) fail, but there exists an unSACKed sequence number 'S3'
        // that meets the criteria for detecting loss given in steps (1.a) and (1.b) above (specifically
        // excluding step (1.c)), then one segment of up to SMSS octets starting with S3 SHOULD be returned."
        if let rule3 { return rule3 }

        // "(4) If the conditions for (1), (2), and (3) fail, but there exists outstanding unSACKed data, we
        // provide the opportunity for a single "rescue" retransmission per entry into loss recovery. If
        // HighACK is greater than RescueRxt (or RescueRxt is undefined), then one segment of up to SMSS
        // octets that MUST include the highest outstanding unSACKed sequence number SHOULD be returned, and
        // RescueRxt set to RecoveryPoint. HighRxt MUST NOT be updated."
        guard rescueAllowed else { return nil }
        var hole = blockCount
        while hole >= 0 {
            let start = hole == 0 ? 0 : offset(ends[hole - 1])
            let end = hole == blockCount ? limit : offset(starts[hole])
            if start < end {
                return Segment(
                    start: una &+ UInt32(max(start, end - mss)), end: una &+ UInt32(end), rule: .rescue)
            }
            hole -= 1
        }
        return nil
    }

    /// RFC 6675 §4 SetPipe(): the octets believed to be in flight. "After initializing pipe to zero, the
    /// following steps are taken for each octet 'S1' in the sequence space between HighACK and HighData that
    /// has not been SACKed:
    /// (a) If IsLost (S1) returns false: Pipe is incremented by 1 octet. ...
    /// (b) If S1 <= HighRxt: Pipe is incremented by 1 octet. ...
    /// Note that octets retransmitted without being considered lost are counted twice by the above
    /// mechanism."
    ///
    /// Computed per hole rather than per octet: every unSACKed octet of one hole has the same SACKed ranges
    /// above it, so IsLost is the same for the whole hole.
    func pipe(highRxt: UInt32, nxt: UInt32, mss: Int, dupThresh: Int = defaultDupThresh) -> Int {
        let limit = offset(nxt)
        guard limit > 0 else { return 0 }
        let retransmitted = min(max(offset(highRxt), 0), limit)
        let byteThreshold = (dupThresh - 1) * mss
        var pipe = 0
        // From the top down, so the SACKed octets above each hole are a running sum: one pass, not one
        // per hole.
        var bytesAbove = 0
        var i = blockCount
        while i >= 0 {
            if i < blockCount { bytesAbove += length(i) }
            let holeStart = i == 0 ? 0 : offset(ends[i - 1])
            let holeEnd = i == blockCount ? limit : offset(starts[i])
            if holeStart < holeEnd {
                // (a) not lost: still in the network. The hole above every range has nothing SACKed above it.
                let lost = i < blockCount && (blockCount - i >= dupThresh || bytesAbove > byteThreshold)
                if !lost { pipe += holeEnd - holeStart }
                // (b) retransmitted: the retransmission is in the network.
                pipe += max(0, min(holeEnd, retransmitted) - holeStart)
            }
            i -= 1
        }
        return pipe
    }

    // MARK: - Helpers

    /// Signed distance from `una` to `seq` modulo 2^32 (RFC 9293 §3.4 comparison).
    @inline(__always)
    private func offset(_ seq: UInt32) -> Int {
        Int(Int32(bitPattern: seq &- una))
    }

    @inline(__always)
    private func length(_ index: Int) -> Int {
        Int(ends[index] &- starts[index])
    }

    /// IsLost for any octet of the hole just below range `index`: the ranges above it are `index..<blockCount`.
    private func holeIsLost(_ index: Int, dupThresh: Int, mss: Int) -> Bool {
        let blocksAbove = blockCount - index
        if blocksAbove >= dupThresh { return true }
        var bytesAbove = 0
        var i = index
        while i < blockCount {
            bytesAbove += length(i)
            i += 1
        }
        return bytesAbove > (dupThresh - 1) * mss
    }

    private mutating func removeBlocks(from index: Int, count removed: Int) {
        guard removed > 0 else { return }
        var i = index
        while i + removed < blockCount {
            starts[i] = starts[i + removed]
            ends[i] = ends[i + removed]
            i += 1
        }
        blockCount -= removed
    }
}
