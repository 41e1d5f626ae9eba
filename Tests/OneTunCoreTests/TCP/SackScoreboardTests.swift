import Testing
@_spi(OneTunInternals) @testable import OneTunCore


private func blocks(_ board: SackScoreboard) -> [(UInt32, UInt32)] {
    (0..<board.blockCount).map { let b = board.block($0); return (b.start, b.end) }
}

private func sameBlocks(_ board: SackScoreboard, _ expected: [(UInt32, UInt32)]) -> Bool {
    let actual = blocks(board)
    return actual.count == expected.count && zip(actual, expected).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
}

// MARK: - RFC 6675 scenarios

/// Ten 100-byte segments [1000, 2000); the first is lost and the other nine are SACKed one ACK at a time.
@Test func oneLostSegmentAmongTen() {
    let mss = 100
    let nxt: UInt32 = 2000
    var board = SackScoreboard(una: 1000)
    #expect(board.pipe(highRxt: 1000, nxt: nxt, mss: mss) == 1000)

    // Duplicate ACKs 1 and 2: 200 SACKed bytes are not "more than (DupThresh - 1) * SMSS".
    #expect(board.addSack(start: 1100, end: 1200, nxt: nxt) == 100)
    #expect(board.addSack(start: 1100, end: 1300, nxt: nxt) == 100)
    #expect(!board.isLost(1000, mss: mss))
    #expect(board.nextSegment(highRxt: 1000, nxt: nxt, newDataAvailable: 0, mss: mss)
        == .init(start: 1000, end: 1100, rule: .unsackedBelowHighestSack))
    // Nothing lost yet: every unSACKed octet counts once.
    #expect(board.pipe(highRxt: 1000, nxt: nxt, mss: mss) == 800)

    // Duplicate ACK 3: 300 bytes above 1000 → IsLost(1000).
    #expect(board.addSack(start: 1100, end: 1400, nxt: nxt) == 100)
    #expect(board.isLost(1000, mss: mss))
    #expect(!board.isLost(1400, mss: mss))
    #expect(board.nextSegment(highRxt: 1000, nxt: nxt, newDataAvailable: 0, mss: mss)
        == .init(start: 1000, end: 1100, rule: .lost))
    // The lost hole leaves the pipe; [1400, 2000) is still in flight.
    #expect(board.pipe(highRxt: 1000, nxt: nxt, mss: mss) == 600)

    // The remaining SACKs.
    var seq: UInt32 = 1500
    while seq <= 2000 {
        #expect(board.addSack(start: 1100, end: seq, nxt: nxt) == 100)
        seq += 100
    }
    #expect(board.sackedBytes == 900)
    #expect(board.blockCount == 1)
    #expect(board.highestSackedEnd == 2000)
    #expect(board.isLost(1000, mss: mss))
    #expect(board.nextSegment(highRxt: 1000, nxt: nxt, newDataAvailable: 0, mss: mss)
        == .init(start: 1000, end: 1100, rule: .lost))
    #expect(board.pipe(highRxt: 1000, nxt: nxt, mss: mss) == 0)

    // After retransmitting it (HighRxt + 1 = 1100) the retransmission is in flight.
    #expect(board.pipe(highRxt: 1100, nxt: nxt, mss: mss) == 100)
    // Rule 1 and 3 are exhausted; rule 2 sends new data when there is some.
    #expect(board.nextSegment(highRxt: 1100, nxt: nxt, newDataAvailable: 0, mss: mss) == nil)
    #expect(board.nextSegment(highRxt: 1100, nxt: nxt, newDataAvailable: 5000, mss: mss)
        == .init(start: 2000, end: 2100, rule: .newData))
    #expect(board.nextSegment(highRxt: 1100, nxt: nxt, newDataAvailable: 40, mss: mss)
        == .init(start: 2000, end: 2040, rule: .newData))
    // Rule 4: the rescue retransmission covers the highest unSACKed octet (1099).
    #expect(board.nextSegment(highRxt: 1100, nxt: nxt, newDataAvailable: 0, mss: mss, rescueAllowed: true)
        == .init(start: 1000, end: 1100, rule: .rescue))

    // The cumulative ACK for everything clears the scoreboard.
    board.ackAdvanced(to: 2000)
    #expect(board.blockCount == 0)
    #expect(board.sackedBytes == 0)
    #expect(board.highestSackedEnd == nil)
    #expect(board.pipe(highRxt: 1100, nxt: nxt, mss: mss) == 0)
}

/// Rule (1) before rule (2): a lost hole is retransmitted even when new data is waiting.
@Test func lossRetransmissionTakesPrecedenceOverNewData() {
    var board = SackScoreboard(una: 0)
    board.addSack(start: 100, end: 1000, nxt: 1000)
    #expect(board.nextSegment(highRxt: 0, nxt: 1000, newDataAvailable: 10_000, mss: 100)
        == .init(start: 0, end: 100, rule: .lost))
}

/// Segments 2, 5 and 9 of twenty are lost after segments 0 and 1 were acknowledged.
@Test func multipleHoles() {
    let mss = 100
    let nxt: UInt32 = 2000
    var board = SackScoreboard(una: 0)
    board.ackAdvanced(to: 200)
    board.addSack(start: 300, end: 500, nxt: nxt)
    board.addSack(start: 600, end: 900, nxt: nxt)
    board.addSack(start: 1000, end: 2000, nxt: nxt)
    #expect(sameBlocks(board, [(300, 500), (600, 900), (1000, 2000)]))
    #expect(board.sackedBytes == 1500)
    #expect(board.isLost(200, mss: mss))
    #expect(board.isLost(500, mss: mss))
    #expect(board.isLost(900, mss: mss))
    #expect(!board.isLost(1800, mss: mss))  // 199 SACKed bytes above, one block
    #expect(board.pipe(highRxt: 200, nxt: nxt, mss: mss) == 0)

    // NextSeg walks the holes upwards as HighRxt advances.
    var highRxt: UInt32 = 200
    var sent: [(UInt32, UInt32)] = []
    while let seg = board.nextSegment(highRxt: highRxt, nxt: nxt, newDataAvailable: 0, mss: mss) {
        #expect(seg.rule == .lost)
        sent.append((seg.start, seg.end))
        highRxt = seg.end
    }
    #expect(sent.count == 3 && sent[0] == (200, 300) && sent[1] == (500, 600) && sent[2] == (900, 1000))
    // Each retransmitted (lost) octet is in the pipe once.
    #expect(board.pipe(highRxt: highRxt, nxt: nxt, mss: mss) == 300)

    // The first retransmission arrives: the ACK jumps to the next hole.
    board.ackAdvanced(to: 500)
    #expect(board.una == 500)
    #expect(sameBlocks(board, [(600, 900), (1000, 2000)]))
    #expect(board.pipe(highRxt: highRxt, nxt: nxt, mss: mss) == 200)
}

@Test func holeLargerThanMSSAndHighRxtInsideIt() {
    var board = SackScoreboard(una: 0)
    board.addSack(start: 500, end: 1000, nxt: 1000)
    #expect(board.nextSegment(highRxt: 0, nxt: 1000, newDataAvailable: 0, mss: 100)
        == .init(start: 0, end: 100, rule: .lost))
    #expect(board.nextSegment(highRxt: 450, nxt: 1000, newDataAvailable: 0, mss: 100)
        == .init(start: 450, end: 500, rule: .lost))
    // SetPipe (b) counts only the retransmitted part of the hole.
    #expect(board.pipe(highRxt: 450, nxt: 1000, mss: 100) == 450)
}

/// Not yet lost, but below the highest SACK: rule (3) when there is no new data.
@Test func rule3WhenNotYetLost() {
    let mss = 100
    var board = SackScoreboard(una: 0)
    board.addSack(start: 100, end: 200, nxt: 2000)
    board.addSack(start: 300, end: 400, nxt: 2000)
    #expect(!board.isLost(0, mss: mss))
    #expect(board.nextSegment(highRxt: 0, nxt: 2000, newDataAvailable: 1, mss: mss)
        == .init(start: 2000, end: 2001, rule: .newData))
    #expect(board.nextSegment(highRxt: 0, nxt: 2000, newDataAvailable: 0, mss: mss)
        == .init(start: 0, end: 100, rule: .unsackedBelowHighestSack))
    #expect(board.nextSegment(highRxt: 100, nxt: 2000, newDataAvailable: 0, mss: mss)
        == .init(start: 200, end: 300, rule: .unsackedBelowHighestSack))
    #expect(board.nextSegment(highRxt: 300, nxt: 2000, newDataAvailable: 0, mss: mss) == nil)
    // Rescue: the highest unSACKed octet is 1999, above every SACK.
    #expect(board.nextSegment(highRxt: 300, nxt: 2000, newDataAvailable: 0, mss: mss, rescueAllowed: true)
        == .init(start: 1900, end: 2000, rule: .rescue))
    // SetPipe: nothing lost; (b) adds the octets below HighRxt again (retransmitted, not lost).
    #expect(board.pipe(highRxt: 0, nxt: 2000, mss: mss) == 1800)
    #expect(board.pipe(highRxt: 300, nxt: 2000, mss: mss) == 1800 + 200)
}

/// "DupThresh discontiguous SACKed sequences" is enough on its own, however few bytes they hold.
@Test func isLostByDiscontiguousBlocks() {
    var board = SackScoreboard(una: 0)
    board.addSack(start: 300, end: 310, nxt: 1000)
    board.addSack(start: 320, end: 330, nxt: 1000)
    board.addSack(start: 340, end: 350, nxt: 1000)
    #expect(board.isLost(0, mss: 1460))
    #expect(board.isLost(299, mss: 1460))
    #expect(!board.isLost(315, mss: 1460))  // only two blocks above
    #expect(!board.isLost(0, dupThresh: 4, mss: 1460))
    // A block counts when part of it lies above the octet: 305 has [305+1, 310), [320, 330), [340, 350) above.
    #expect(board.isLost(305, mss: 1460))
    #expect(!board.isLost(309, mss: 1460))
}

// MARK: - Sequence-space wrap-around

@Test func wrapAroundNearTwoToThe32() {
    let mss = 100
    let una: UInt32 = 0xFFFF_FF00
    let nxt = una &+ 1000
    var board = SackScoreboard(una: una)
    // [una + 100, una + 400) crosses 2^32 (una + 256 == 0).
    #expect(board.addSack(start: una &+ 100, end: una &+ 400, nxt: nxt) == 300)
    #expect(board.addSack(start: una &+ 600, end: una &+ 700, nxt: nxt) == 100)
    #expect(board.blockCount == 2)
    #expect(board.isSacked(0))
    #expect(board.isSacked(una &+ 100))
    #expect(!board.isSacked(una))
    #expect(!board.isSacked(una &+ 400))
    #expect(board.highestSackedEnd == una &+ 700)
    #expect(board.isLost(una, mss: mss))
    #expect(!board.isLost(una &+ 400, mss: mss))
    #expect(board.nextSegment(highRxt: una, nxt: nxt, newDataAvailable: 0, mss: mss)
        == .init(start: una, end: una &+ 100, rule: .lost))
    #expect(board.nextSegment(highRxt: una &+ 100, nxt: nxt, newDataAvailable: 0, mss: mss)
        == .init(start: una &+ 400, end: una &+ 500, rule: .unsackedBelowHighestSack))
    // Lost [una, una+100) out; [una+400, una+600) and [una+700, nxt) in flight.
    #expect(board.pipe(highRxt: una, nxt: nxt, mss: mss) == 200 + 300)

    // The ACK crosses zero and lands inside the first SACKed range.
    board.ackAdvanced(to: una &+ 300)
    #expect(board.una == 44)
    #expect(sameBlocks(board, [(44, 144), (una &+ 600, una &+ 700)]))
    #expect(board.sackedBytes == 200)
    // A block from before the wrap, now entirely below SND.UNA, is a D-SACK and ignored.
    #expect(board.addSack(start: una &+ 100, end: una &+ 200, nxt: nxt) == 0)
    #expect(board.sackedBytes == 200)
}

// MARK: - Block handling

@Test func outOfOrderAndOverlappingBlocksMerge() {
    var board = SackScoreboard(una: 0)
    let nxt: UInt32 = 1000
    #expect(board.addSack(start: 500, end: 600, nxt: nxt) == 100)
    #expect(board.addSack(start: 200, end: 300, nxt: nxt) == 100)
    #expect(sameBlocks(board, [(200, 300), (500, 600)]))
    #expect(board.addSack(start: 250, end: 550, nxt: nxt) == 200)
    #expect(sameBlocks(board, [(200, 600)]))
    #expect(board.addSack(start: 600, end: 700, nxt: nxt) == 100)  // touching merges
    #expect(board.addSack(start: 100, end: 150, nxt: nxt) == 50)
    #expect(sameBlocks(board, [(100, 150), (200, 700)]))
    #expect(board.addSack(start: 200, end: 700, nxt: nxt) == 0)  // duplicate
    #expect(board.addSack(start: 300, end: 400, nxt: nxt) == 0)  // contained
    #expect(board.addSack(start: 120, end: 800, nxt: nxt) == 150)  // spans both
    #expect(sameBlocks(board, [(100, 800)]))
    #expect(board.sackedBytes == 700)
    // Spans several blocks at once.
    board.reset(una: 0)
    for s in stride(from: 100 as UInt32, to: 900, by: 200) { board.addSack(start: s, end: s + 50, nxt: nxt) }
    #expect(board.blockCount == 4)
    #expect(board.addSack(start: 140, end: 520, nxt: nxt) == 450 - 150)
    #expect(sameBlocks(board, [(100, 550), (700, 750)]))
    #expect(board.sackedBytes == 500)
}

@Test func invalidBlocksAreIgnoredOrTrimmed() {
    var board = SackScoreboard(una: 1000)
    let nxt: UInt32 = 2000
    #expect(board.addSack(start: 1500, end: 2001, nxt: nxt) == 0)  // beyond SND.NXT
    #expect(board.addSack(start: 1500, end: 1500, nxt: nxt) == 0)  // empty
    #expect(board.addSack(start: 1600, end: 1500, nxt: nxt) == 0)  // backwards
    #expect(board.addSack(start: 900, end: 1000, nxt: nxt) == 0)  // D-SACK below SND.UNA
    #expect(board.addSack(start: 0, end: 0x9000_0000, nxt: nxt) == 0)  // nonsense
    #expect(board.blockCount == 0)
    #expect(board.addSack(start: 900, end: 1100, nxt: nxt) == 100)  // straddles SND.UNA: trimmed
    #expect(sameBlocks(board, [(1000, 1100)]))
    #expect(board.addSack(start: 1900, end: 2000, nxt: nxt) == 100)  // ends exactly at SND.NXT
}

@Test func ackAdvancesThroughSackedRanges() {
    var board = SackScoreboard(una: 0)
    board.addSack(start: 200, end: 300, nxt: 1000)
    board.addSack(start: 400, end: 500, nxt: 1000)
    board.addSack(start: 600, end: 700, nxt: 1000)
    board.ackAdvanced(to: 150)  // below every range
    #expect(board.blockCount == 3 && board.sackedBytes == 300)
    board.ackAdvanced(to: 450)  // drops one, trims the next
    #expect(sameBlocks(board, [(450, 500), (600, 700)]))
    #expect(board.sackedBytes == 150)
    board.ackAdvanced(to: 400)  // an old ACK changes nothing
    #expect(board.una == 450 && board.sackedBytes == 150)
    board.ackAdvanced(to: 600)  // exactly at a range's start
    #expect(sameBlocks(board, [(600, 700)]))
    board.ackAdvanced(to: 700)
    #expect(board.blockCount == 0 && board.sackedBytes == 0)
}

@Test func capacityKeepsTheLowestRanges() {
    var board = SackScoreboard(una: 0)
    let capacity = SackScoreboard.capacity
    let nxt = UInt32(capacity * 100 + 10_000)
    for i in 0..<capacity {
        #expect(board.addSack(start: UInt32(100 + i * 100), end: UInt32(150 + i * 100), nxt: nxt) == 50)
    }
    #expect(board.blockCount == capacity)
    // A new highest range does not fit.
    #expect(board.addSack(start: nxt - 200, end: nxt - 100, nxt: nxt) == 0)
    #expect(board.highestSackedEnd == UInt32(150 + (capacity - 1) * 100))
    // A new lowest range evicts the highest one.
    #expect(board.addSack(start: 10, end: 20, nxt: nxt) == 10 - 50)
    #expect(board.blockCount == capacity)
    #expect(board.block(0) == (10, 20))
    #expect(board.highestSackedEnd == UInt32(150 + (capacity - 2) * 100))
    #expect(board.sackedBytes == (capacity - 1) * 50 + 10)
    // Merging still works when full.
    #expect(board.addSack(start: 150, end: 200, nxt: nxt) == 50)
    #expect(board.blockCount == capacity - 1)
}

/// A startup that overshot loses hundreds of scattered segments of one window; the receiver reports each
/// range once, newest first. Every hole must be known, and found lost, or recovery repairs one per round trip.
@Test func hundredsOfHolesAreAllRecoverable() {
    var board = SackScoreboard(una: 0)
    let mss = 1000
    let holes = 500
    let nxt = UInt32(2 * holes * mss)
    // Every other segment arrives; each range reported once, highest first as a receiver would.
    for i in (0..<holes).reversed() {
        board.addSack(start: UInt32((2 * i + 1) * mss), end: UInt32((2 * i + 2) * mss), nxt: nxt)
    }
    #expect(board.blockCount == holes)
    var highRxt: UInt32 = 0
    var resent = 0
    while let next = board.nextSegment(highRxt: highRxt, nxt: nxt, newDataAvailable: 0, mss: mss), next.rule == .lost {
        resent += 1
        highRxt = next.end
    }
    // All but the top DupThresh - 1 holes have enough SACKed data above them to count as lost.
    #expect(resent == holes - (SackScoreboard.defaultDupThresh - 1))
}

// MARK: - Against a per-octet model

/// The RFC's definitions evaluated octet by octet over a bitmap, compared with the scoreboard after every
/// step of a random run that starts just below 2^32 so it wraps.
@Test(arguments: [7, 1234, 0xC0FFEE] as [UInt64])
func matchesPerOctetModel(seed: UInt64) {
    var rng = XorShift64(seed: seed)
    let base: UInt32 = 0xFFFF_FE00
    let space = 6000
    let mss = 50
    var sacked = [Bool](repeating: false, count: space)
    var u = 0  // model SND.UNA as an offset from base
    var n = 0  // model SND.NXT
    var board = SackScoreboard(una: base)
    func abs(_ k: Int) -> UInt32 { base &+ UInt32(truncatingIfNeeded: k) }
    var rulesSeen: Set<String> = []
    var maxBlocks = 0
    var wrapped = false

    func modelIsLost(_ k: Int, _ dupThresh: Int) -> Bool {
        var runs = 0
        var bytes = 0
        var inRun = false
        for j in (k + 1)..<max(n, k + 1) {
            if sacked[j] {
                bytes += 1
                if !inRun { runs += 1 }
            }
            inRun = sacked[j]
        }
        return runs >= dupThresh || bytes > (dupThresh - 1) * mss
    }

    for step in 0..<3000 {
        let context = Comment(rawValue: "seed \(seed) step \(step)")
        switch rng.below(10) {
        case 0..<3 where n + 200 < space && n - u < 1500:
            n += 1 + rng.below(120)  // send
        case 3..<7 where n > u:
            // A SACK block, sometimes invalid: beyond nxt, below una, straddling una.
            let s = u - 20 + rng.below(n - u + 40)
            let e = s + rng.below(3 * mss)
            var expected = 0
            if e > u && e <= n && s < e {
                for j in max(s, u)..<e where !sacked[j] {
                    sacked[j] = true
                    expected += 1
                }
            }
            #expect(board.addSack(start: abs(s), end: abs(e), nxt: abs(n)) == expected, context)
        case 7 where n > u:
            let a = u + rng.below(n - u + 1)  // cumulative ACK
            for j in u..<a { sacked[j] = false }
            u = a
            board.ackAdvanced(to: abs(u))
        case 8 where rng.below(20) == 0:
            for j in u..<n { sacked[j] = false }  // RTO: forget SACKs
            board.reset(una: abs(u))
        default:
            break
        }

        // Scoreboard contents.
        let modelSacked = sacked[u..<n].filter { $0 }.count
        #expect(board.sackedBytes == modelSacked, context)
        #expect(board.una == abs(u), context)
        var k = u
        while k < n {
            #expect(board.isSacked(abs(k)) == sacked[k], context)
            k += 1 + rng.below(7)
        }
        let top = (u..<n).last { sacked[$0] }.map { $0 + 1 }
        #expect(board.highestSackedEnd == top.map(abs), context)

        // IsLost at a few points.
        for _ in 0..<3 where n > u {
            let q = u + rng.below(n - u)
            let dupThresh = 2 + rng.below(3)
            #expect(board.isLost(abs(q), dupThresh: dupThresh, mss: mss) == modelIsLost(q, dupThresh), context)
        }

        // SetPipe and NextSeg for a random HighRxt.
        let highRxt = n > u ? u + rng.below(n - u + 1) : u
        var pipe = 0
        for j in u..<n where !sacked[j] {
            if !modelIsLost(j, 3) { pipe += 1 }
            if j < highRxt { pipe += 1 }
        }
        #expect(board.pipe(highRxt: abs(highRxt), nxt: abs(n), mss: mss) == pipe, context)

        func segment(from s: Int) -> (Int, Int) {
            var e = s
            while e < n && e < s + mss && !sacked[e] { e += 1 }
            return (s, e)
        }
        let candidates = (max(u, highRxt)..<n).filter { !sacked[$0] && top != nil && $0 < top! }
        let rule1 = candidates.first { modelIsLost($0, 3) }
        let rule3 = candidates.first
        let highestUnsacked = (u..<n).last { !sacked[$0] }
        let newData = rng.below(3) == 0 ? rng.below(2 * mss) + 1 : 0
        let rescue = rng.below(2) == 0
        let expected: SackScoreboard.Segment?
        if let s = rule1 {
            let (a, b) = segment(from: s)
            expected = .init(start: abs(a), end: abs(b), rule: .lost)
        } else if newData > 0 {
            expected = .init(start: abs(n), end: abs(n + min(mss, newData)), rule: .newData)
        } else if let s = rule3 {
            let (a, b) = segment(from: s)
            expected = .init(start: abs(a), end: abs(b), rule: .unsackedBelowHighestSack)
        } else if rescue, let h = highestUnsacked {
            var a = h
            while a > u && a > h + 1 - mss && !sacked[a - 1] { a -= 1 }
            expected = .init(start: abs(a), end: abs(h + 1), rule: .rescue)
        } else {
            expected = nil
        }
        let actual = board.nextSegment(
            highRxt: abs(highRxt), nxt: abs(n), newDataAvailable: newData, mss: mss, rescueAllowed: rescue)
        #expect(actual == expected, context)
        rulesSeen.insert(actual.map { "\($0.rule)" } ?? "none")
        maxBlocks = max(maxBlocks, board.blockCount)
        wrapped = wrapped || board.una < base
    }
    // The run really exercised every rule, several holes and the wrap.
    #expect(rulesSeen == ["lost", "newData", "unsackedBelowHighestSack", "rescue", "none"])
    #expect(maxBlocks >= 4)
    #expect(wrapped)
}
