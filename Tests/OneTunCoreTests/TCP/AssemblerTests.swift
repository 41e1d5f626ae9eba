import Testing
@_spi(OneTunInternals) @testable import OneTunCore

/// The islands of an assembler, in offset order.
func tcpBufIslands(_ a: Assembler) -> [Range<Int>] {
    (0..<a.islandCount).map { a.island($0) }
}

/// Maximal runs of `true` in a received-bytes bitmap: what the islands must be.
func tcpBufRuns(_ received: [Bool]) -> [Range<Int>] {
    var runs: [Range<Int>] = []
    var i = 0
    while i < received.count {
        if received[i] {
            var j = i
            while j < received.count && received[j] { j += 1 }
            runs.append(i..<j)
            i = j
        } else {
            i += 1
        }
    }
    return runs
}

@Suite struct AssemblerTests {
    @Test func inOrderDataIsImmediatelyContiguous() {
        var a = Assembler()
        #expect(a.isEmpty)
        #expect(a.add(offset: 0, length: 100) == true)
        #expect(a.removeFront() == 100)
        #expect(a.isEmpty)
        #expect(a.removeFront() == 0)
        #expect(a.add(offset: 0, length: 0) == true)
        #expect(a.isEmpty)
    }

    @Test func mergesOverlapsDuplicatesAndNeighbours() {
        var a = Assembler()
        #expect(a.add(offset: 100, length: 100) == true)
        #expect(a.add(offset: 300, length: 100) == true)
        #expect(a.add(offset: 500, length: 100) == true)
        #expect(tcpBufIslands(a) == [100..<200, 300..<400, 500..<600])
        #expect(a.add(offset: 120, length: 30) == true)  // duplicate inside
        #expect(tcpBufIslands(a) == [100..<200, 300..<400, 500..<600])
        #expect(a.add(offset: 200, length: 50) == true)  // touches the end
        #expect(tcpBufIslands(a) == [100..<250, 300..<400, 500..<600])
        #expect(a.add(offset: 280, length: 20) == true)  // touches the start
        #expect(tcpBufIslands(a) == [100..<250, 280..<400, 500..<600])
        #expect(a.add(offset: 240, length: 300) == true)  // bridges three
        #expect(tcpBufIslands(a) == [100..<600])
        #expect(a.removeFront() == 0)
        #expect(a.add(offset: 50, length: 10) == true)
        #expect(a.add(offset: 0, length: 50) == true)
        #expect(tcpBufIslands(a) == [0..<60, 100..<600])
        #expect(a.removeFront() == 60)
        #expect(tcpBufIslands(a) == [40..<540])  // shifted by 60
        #expect(a.add(offset: 0, length: 1000) == true)  // covers everything
        #expect(a.removeFront() == 1000)
        #expect(a.isEmpty)
    }

    @Test func refusesANewIslandWhenFullWithoutChangingState() {
        var a = Assembler()
        for k in 0..<Assembler.maxIslands {
            #expect(a.add(offset: 10 + 20 * k, length: 10) == true)
        }
        #expect(a.islandCount == Assembler.maxIslands)
        let before = tcpBufIslands(a)
        let sackBefore = a.sackBlocks(relativeTo: SeqNumber(1000))
        #expect(a.add(offset: 10_000, length: 5) == false)  // beyond everything
        #expect(a.add(offset: 22, length: 5) == false)  // strictly inside a hole
        #expect(tcpBufIslands(a) == before)
        #expect(a.sackBlocks(relativeTo: SeqNumber(1000)) == sackBefore)
        // The next in-order bytes always go through, even with every island taken; the islands shift.
        #expect(a.add(offset: 0, length: 5) == true)
        #expect(a.removeFront() == 5)
        #expect(a.islandCount == Assembler.maxIslands)
        #expect(a.island(0) == 5..<15)
        #expect(a.add(offset: 0, length: 5) == true)  // touches island 0 now: merges
        #expect(a.removeFront() == 15)
        #expect(a.islandCount == Assembler.maxIslands - 1)
        // A fresh full table for the merge checks below.
        var b = Assembler()
        for k in 0..<Assembler.maxIslands { _ = b.add(offset: 10 + 20 * k, length: 10) }
        a = b
        // Ranges that merge still fit.
        #expect(a.add(offset: 15, length: 15) == true)  // overlaps one, touches the next
        #expect(a.islandCount == Assembler.maxIslands - 1)
        #expect(a.island(0) == 10..<40)
        #expect(a.add(offset: 0, length: 10) == true)
        #expect(a.removeFront() == 40)
        #expect(a.islandCount == Assembler.maxIslands - 2)
        #expect(a.island(0) == 10..<20)
    }

    @Test func sackBlocksMostRecentFirst() {
        var a = Assembler()
        let base = SeqNumber(UInt32.max - 150)  // the blocks wrap the sequence space
        #expect(a.add(offset: 100, length: 100) == true)  // A
        #expect(a.add(offset: 300, length: 100) == true)  // B
        #expect(a.add(offset: 500, length: 100) == true)  // C
        #expect(a.add(offset: 700, length: 100) == true)  // D
        #expect(a.add(offset: 900, length: 100) == true)  // E
        #expect(a.add(offset: 350, length: 10) == true)  // a duplicate lands in B: B is now the newest
        func block(_ r: Range<Int>) -> TCPSackBlock {
            TCPSackBlock(left: (base + r.lowerBound).rawValue, right: (base + r.upperBound).rawValue)
        }
        #expect(Array(a.sackBlocks(relativeTo: base)) == [block(300..<400), block(900..<1000), block(700..<800), block(500..<600)])
        // With timestamps only three fit (RFC 2018 §3).
        #expect(Array(a.sackBlocks(relativeTo: base, maxBlocks: 3)) == [block(300..<400), block(900..<1000), block(700..<800)])
        #expect(a.sackBlocks(relativeTo: base, maxBlocks: 0).isEmpty)
        // A segment bridging C and D makes the merged block first.
        #expect(a.add(offset: 600, length: 100) == true)
        #expect(Array(a.sackBlocks(relativeTo: base)) == [block(500..<800), block(300..<400), block(900..<1000), block(100..<200)])
        #expect(a.sackBlocks(relativeTo: base)[0].left == UInt32(349))  // wrapped: (2^32 - 151) + 500
        // In-order data is acknowledged cumulatively, never SACKed.
        #expect(a.add(offset: 0, length: 100) == true)
        #expect(Array(a.sackBlocks(relativeTo: base)) == [block(500..<800), block(300..<400), block(900..<1000)])
        #expect(a.removeFront() == 200)
        let rcvNxt = base + 200
        #expect(Array(a.sackBlocks(relativeTo: rcvNxt)) == [block(500..<800), block(300..<400), block(900..<1000)])
    }

    /// Segments of a stream in random order, with duplicates and overlapping retransmissions, checked after
    /// every step against a bitmap; refused ranges are retried later, as a sender would retransmit them.
    @Test(arguments: [7, 8, 9, 1234, 98765] as [UInt64])
    func randomArrivalOrdersReassemble(seed: UInt64) {
        var rng = seed &* 0xD129_1B5A_2C3E_4F67 | 1
        var refusals = 0
        for round in 0..<40 {
            // Odd rounds use many small segments, so more than `maxIslands` holes open up and some are refused.
            let small = round % 2 == 1
            let length = 1 + tcpBufBelow(small ? 10_000 : 50_000, &rng)
            // Cut the stream into segments, then add overlapping re-segmentations and duplicates.
            var segments: [Range<Int>] = []
            var at = 0
            while at < length {
                let n = min(1 + tcpBufBelow(small ? 100 : 1500, &rng), length - at)
                segments.append(at..<at + n)
                at += n
            }
            for _ in 0..<segments.count / 3 {
                let s = tcpBufBelow(length, &rng)
                segments.append(s..<min(length, s + 1 + tcpBufBelow(small ? 150 : 3000, &rng)))
            }
            var a = Assembler()
            var rcvNxt = 0
            var received = [Bool](repeating: false, count: length)
            var pending = segments
            var steps = 0
            while rcvNxt < length {
                steps += 1
                guard steps < 1_000_000, !pending.isEmpty else {
                    Issue.record("stalled at \(rcvNxt)/\(length) (seed \(seed) round \(round))")
                    return
                }
                let pick = tcpBufBelow(pending.count, &rng)
                let segment = pending[pick]
                // Trim what is already acknowledged (RFC 9293 §3.10.7.4), as the receiver would.
                let start = max(segment.lowerBound, rcvNxt)
                if start < segment.upperBound {
                    let accepted = a.add(offset: start - rcvNxt, length: segment.upperBound - start)
                    if accepted {
                        for i in start..<segment.upperBound { received[i] = true }
                        pending.swapAt(pick, pending.count - 1)
                        if tcpBufBelow(4, &rng) != 0 { pending.removeLast() }  // else: it will arrive again
                    }
                    else { refusals += 1 }  // it stays pending, i.e. it is retransmitted
                } else {
                    pending.swapAt(pick, pending.count - 1)
                    pending.removeLast()
                }
                rcvNxt += a.removeFront()
                // Invariant: islands are exactly the received runs past rcvNxt, shifted.
                let expected = tcpBufRuns(Array(received[rcvNxt...])).map { ($0.lowerBound)..<($0.upperBound) }
                let islands = tcpBufIslands(a).map { $0 }
                guard islands == expected, rcvNxt == length || !received[rcvNxt],
                    a.islandCount <= Assembler.maxIslands
                else {
                    Issue.record("diverged: \(a) vs \(expected) at \(rcvNxt) (seed \(seed) round \(round))")
                    return
                }
            }
            #expect(a.isEmpty)
        }
        #expect(refusals > 0, "the island table never filled up (seed \(seed))")
    }

    /// The receive path end to end: segments in random order into a `ByteRing` + `Assembler`, the
    /// application draining at random; the bytes delivered must be the stream.
    @Test(arguments: [11, 12, 13] as [UInt64])
    func receivePathDeliversTheStream(seed: UInt64) {
        var rng = seed &* 0x2545_F491_4F6C_DD1D | 1
        let length = 300_000
        let window = 1 + tcpBufBelow(70_000, &rng)
        let ring = ByteRing(limit: window)
        var a = Assembler()
        var rcvNxt = 0
        var delivered: [UInt8] = []
        delivered.reserveCapacity(length)
        var sent = 0  // highest byte the "sender" has transmitted
        var inFlight: [Range<Int>] = []
        var steps = 0
        while delivered.count < length {
            steps += 1
            guard steps < 2_000_000 else {
                Issue.record("stalled at \(rcvNxt) (seed \(seed))")
                return
            }
            switch tcpBufBelow(6, &rng) {
            case 0, 1:
                // The sender fills the advertised window (RCV.NXT + free) in segments, or retransmits from RCV.NXT.
                let edge = rcvNxt + ring.free  // RCV.NXT + RCV.WND (RFC 9293 §3.3.2)
                if sent < edge && tcpBufBelow(4, &rng) != 0 {
                    let n = min(1 + tcpBufBelow(1460, &rng), edge - sent, length - sent)
                    if n > 0 {
                        inFlight.append(sent..<sent + n)
                        sent += n
                    }
                } else if rcvNxt < sent {
                    inFlight.append(rcvNxt..<min(sent, rcvNxt + 1 + tcpBufBelow(3000, &rng)))
                }
            case 2, 3:
                // Deliver a random in-flight segment (reordering), sometimes twice.
                guard !inFlight.isEmpty else { continue }
                let pick = tcpBufBelow(inFlight.count, &rng)
                let segment = inFlight[pick]
                if tcpBufBelow(5, &rng) != 0 {
                    inFlight.swapAt(pick, inFlight.count - 1)
                    inFlight.removeLast()
                }
                let start = max(segment.lowerBound, rcvNxt)
                guard start < segment.upperBound else { continue }
                let bytes = tcpBufStream(start..<segment.upperBound)
                let kept = bytes.withUnsafeBytes { ring.write(at: start - rcvNxt, from: $0) }
                if kept > 0 { _ = a.add(offset: start - rcvNxt, length: kept) }
                let n = a.removeFront()
                ring.commit(n)
                rcvNxt += n
            default:
                // The application reads some.
                let chunk = ring.readable()
                let n = tcpBufBelow(chunk.count + 1, &rng)
                delivered += chunk[0..<n]
                ring.consume(n)
                if ring.isEmpty && tcpBufBelow(8, &rng) == 0 { ring.compact() }
            }
        }
        #expect(delivered == tcpBufStream(0..<length), "seed \(seed)")
        #expect(a.isEmpty)
    }
}
