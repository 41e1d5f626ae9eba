/// Out-of-order reassembly bookkeeping for the receive side: which byte ranges past `RCV.NXT` have arrived.
///
/// RFC 9293 §3.10.7.4 lets a receiver keep segments that arrive ahead of `RCV.NXT` ("segments with higher
/// beginning sequence numbers may be held for later processing"); the bytes themselves go into the receive
/// `ByteRing` with `write(at:from:)`, and this type remembers which of them are there. Offsets are relative to
/// the contiguous point (`RCV.NXT`): offset 0 is the next in-order byte. Once `add` has covered offset 0,
/// `removeFront()` says how many bytes became contiguous; the caller commits them to the ring and advances
/// `RCV.NXT` by that much, and every remaining offset shifts down with it.
///
/// Ranges ("islands") are kept sorted, disjoint and never touching, in a fixed inline table of
/// `maxIslands` entries: no allocation, and every call is O(number of islands). When a new range would need
/// a 33rd island, `add` refuses it and changes nothing; the caller drops the segment (not acknowledged, not
/// SACKed), and the sender retransmits it later (RFC 9293 §3.10.7.4 permits discarding any segment that is
/// not the next in order). A range that touches or overlaps an existing island always fits, since it merges,
/// and so does the next in-order segment (offset 0): refusing it would stall the connection for good.
///
/// Each island remembers when it last received data, so SACK blocks come out in the order RFC 2018 §4 asks for.
struct Assembler: CustomStringConvertible {
    /// How many disjoint ranges can be pending at once (32 islands means 32 holes in front of them).
    static let maxIslands = 32

    private struct Island {
        var start: UInt32
        var end: UInt32
        /// Value of `clock` when a segment last landed in this island.
        var stamp: UInt64
    }

    private var islands = InlineArray<32, Island>(repeating: Island(start: 0, end: 0, stamp: 0))
    private(set) var islandCount = 0
    private var clock: UInt64 = 0
    /// In-order bytes accepted while every island was taken; `removeFront` hands them over.
    private var detachedFront: UInt32 = 0

    init() {}

    /// True when nothing is held beyond the contiguous point.
    var isEmpty: Bool { islandCount == 0 }

    /// The `index`-th pending range in offset order.
    func island(_ index: Int) -> Range<Int> {
        precondition(index >= 0 && index < islandCount)
        return Int(islands[index].start)..<Int(islands[index].end)
    }

    /// Records that bytes `offset ..< offset + length` (relative to the contiguous point) have arrived,
    /// merging with any island they overlap or touch. Duplicates and overlaps are fine; a range that lies
    /// entirely inside one island only marks that island as the most recently updated.
    ///
    /// Returns false, leaving everything as it was, when the range would need a new island and all
    /// `maxIslands` are taken: drop the segment.
    mutating func add(offset: Int, length: Int) -> Bool {
        precondition(offset >= 0 && length >= 0 && offset + length <= Int(UInt32.max), "Assembler range out of bounds")
        guard length > 0 else { return true }
        let s = UInt32(offset)
        let e = UInt32(offset + length)
        // First island that ends at or after `s`: it and later ones may merge.
        var i = 0
        while i < islandCount && islands[i].end < s { i += 1 }
        // One past the last island that starts at or before `e`.
        var j = i
        while j < islandCount && islands[j].start <= e { j += 1 }

        if i == j {
            // No overlap or contact: a new island at index `i`.
            if islandCount == Self.maxIslands {
                // Full. The next in-order bytes still go through, without an island of their own.
                guard s == 0 else { return false }
                detachedFront = e
                return true
            }
            clock += 1
            var k = islandCount
            while k > i {
                islands[k] = islands[k - 1]
                k -= 1
            }
            islands[i] = Island(start: s, end: e, stamp: clock)
            islandCount += 1
            return true
        }

        // Islands i..<j collapse into one at index i.
        clock += 1
        islands[i] = Island(start: min(s, islands[i].start), end: max(e, islands[j - 1].end), stamp: clock)
        let removed = j - i - 1
        if removed > 0 {
            var k = i + 1
            while k + removed < islandCount {
                islands[k] = islands[k + removed]
                k += 1
            }
            islandCount -= removed
        }
        return true
    }

    /// If the island at offset 0 is complete, removes it and returns its length (the bytes by which
    /// `RCV.NXT` may advance, RFC 9293 §3.10.7.4 "RCV.NXT is set to ... the next sequence number expected");
    /// the other islands shift down by that much. Returns 0 when the next in-order byte is still missing.
    mutating func removeFront() -> Int {
        if detachedFront > 0 {
            let advanced = detachedFront
            detachedFront = 0
            for k in 0..<islandCount {
                islands[k].start -= advanced
                islands[k].end -= advanced
            }
            return Int(advanced)
        }
        guard islandCount > 0, islands[0].start == 0 else { return 0 }
        let advanced = islands[0].end
        var k = 1
        while k < islandCount {
            var island = islands[k]
            island.start -= advanced
            island.end -= advanced
            islands[k - 1] = island
            k += 1
        }
        islandCount -= 1
        return Int(advanced)
    }

    /// Forgets everything (e.g. the connection was reset).
    mutating func removeAll() {
        islandCount = 0
        detachedFront = 0
    }

    /// Up to `maxBlocks` SACK blocks (RFC 2018 §3) for the islands, with `base` = `RCV.NXT`.
    ///
    /// RFC 2018 §4: "The first SACK block (i.e., the one immediately following the kind and length fields in
    /// the option) MUST specify the contiguous block of data containing the segment which triggered this
    /// ACK", and the receiver "SHOULD include as many distinct SACK blocks as possible", repeating "the most
    /// recently reported SACK blocks ... in order of the most recent reception". The island that received the
    /// latest `add` is by construction the one holding the triggering segment, so ordering islands by their
    /// last update gives both rules without the caller naming the segment. If the triggering segment filled
    /// the front (it was in order), it is cumulatively acknowledged and not a SACK block, as §4 intends.
    ///
    /// `maxBlocks` is 4 at most (RFC 2018 §3: the option is 2 + 8n bytes in 40), 3 when the Timestamps option
    /// (RFC 7323 §3.2, 10 bytes + padding) shares the header. Call after `removeFront()`; an island at
    /// offset 0 would be covered by the cumulative ACK, so it is never reported.
    func sackBlocks(relativeTo base: SeqNumber, maxBlocks: Int = TCPSackBlocks.capacity) -> TCPSackBlocks {
        var blocks = TCPSackBlocks()
        let wanted = min(max(maxBlocks, 0), TCPSackBlocks.capacity)
        var below = UInt64.max  // stamps are unique, so "largest stamp below the last one taken" walks them
        while blocks.count < wanted {
            var best = -1
            var bestStamp: UInt64 = 0
            for k in 0..<islandCount {
                let island = islands[k]
                if island.start != 0, island.stamp < below, best < 0 || island.stamp > bestStamp {
                    best = k
                    bestStamp = island.stamp
                }
            }
            guard best >= 0 else { break }
            let island = islands[best]
            blocks.append(TCPSackBlock(
                left: (base + Int(island.start)).rawValue, right: (base + Int(island.end)).rawValue))
            below = bestStamp
        }
        return blocks
    }

    var description: String {
        var s = "Assembler["
        for k in 0..<islandCount {
            if k > 0 { s += ", " }
            s += "\(islands[k].start)..<\(islands[k].end)"
        }
        return s + "]"
    }
}
