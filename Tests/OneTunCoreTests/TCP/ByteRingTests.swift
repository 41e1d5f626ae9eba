import Testing
@_spi(OneTunInternals) @testable import OneTunCore

@Suite struct ByteRingTests {
    @Test func allocatesLazilyAndGrowsByDoublingPreservingContent() {
        let ring = ByteRing(limit: 1 << 20)
        #expect(ring.capacity == 0)
        #expect(ring.readable().count == 0)
        #expect(ring.free == 1 << 20)

        tcpBufWrite(ring, tcpBufStream(0..<100))
        #expect(ring.capacity == ByteRing.initialCapacity)
        // Make the data wrap before growth, so growth must linearise it.
        ring.consume(60)
        tcpBufWrite(ring, tcpBufStream(100..<4000))
        #expect(ring.capacity == 4096)
        ring.consume(3000)
        tcpBufWrite(ring, tcpBufStream(4000..<7000))
        #expect(ring.capacity == 4096)
        #expect(ring.readable().count < ring.count)  // wrapped
        tcpBufWrite(ring, tcpBufStream(7000..<12000))
        #expect(ring.capacity == 16384)
        #expect(ring.count == 12000 - 3060)
        #expect(tcpBufContents(ring) == tcpBufStream(3060..<12000))
        #expect(ring.readable().count == ring.count)  // growth linearised it
    }

    @Test func respectsTheLimitAndCanRaiseIt() {
        let ring = ByteRing(limit: 6000)
        #expect(tcpBufWrite(ring, tcpBufStream(0..<10000)) == 6000)
        #expect(ring.free == 0)
        #expect(ring.capacity == 6000)  // last growth step clamped to the limit
        #expect(tcpBufWrite(ring, [1, 2, 3]) == 0)
        ring.consume(1000)
        #expect(ring.free == 1000)
        #expect(tcpBufWrite(ring, tcpBufStream(6000..<10000)) == 1000)
        ring.capacityLimit = 20000
        #expect(ring.free == 14000)
        #expect(tcpBufWrite(ring, tcpBufStream(7000..<10000)) == 3000)
        #expect(ring.capacity == 16384)
        #expect(tcpBufContents(ring) == tcpBufStream(1000..<10000))
        // Small limits never allocate more than the limit.
        let tiny = ByteRing(limit: 100)
        #expect(tcpBufWrite(tiny, tcpBufStream(0..<1000)) == 100)
        #expect(tiny.capacity == 100)
    }

    @Test func wrapAroundReadPeekAndChunks() {
        let ring = ByteRing(limit: 4096)
        tcpBufWrite(ring, tcpBufStream(0..<3000))
        ring.consume(2500)
        #expect(tcpBufWrite(ring, tcpBufStream(3000..<6000)) == 3000)
        #expect(ring.capacity == 4096)
        let (first, second) = ring.readableChunks()
        #expect(first.count == 4096 - 2500)
        #expect(second.count == 3500 - first.count)
        #expect(Array(first) + Array(second) == tcpBufStream(2500..<6000))
        #expect(Array(ring.readable()) == Array(first))
        // A peek straddling the physical end.
        var buffer = [UInt8](repeating: 0, count: 1000)
        let n = buffer.withUnsafeMutableBytes { ring.peek(at: 1200, into: $0) }
        #expect(n == 1000)
        #expect(buffer == tcpBufStream(3700..<4700))
        // A peek near the end is cut short at the data.
        let m = buffer.withUnsafeMutableBytes { ring.peek(at: 3000, into: $0) }
        #expect(m == 500)
        #expect(Array(buffer[0..<500]) == tcpBufStream(5500..<6000))
        #expect(buffer.withUnsafeMutableBytes { ring.peek(at: 3500, into: $0) } == 0)
    }

    @Test func outOfOrderBytesWaitForCommit() {
        let ring = ByteRing(limit: 10000)
        tcpBufWrite(ring, tcpBufStream(0..<100))
        // Bytes 300..<400 arrive first: stored, not readable.
        #expect(tcpBufStream(300..<400).withUnsafeBytes { ring.write(at: 200, from: $0) } == 100)
        #expect(ring.count == 100)
        // Growth must keep the out-of-order tail.
        #expect(tcpBufStream(9000..<9500).withUnsafeBytes { ring.write(at: 8900, from: $0) } == 500)
        #expect(ring.capacity == 10000)
        // Only the part inside the limit is kept.
        #expect(tcpBufStream(9500..<11000).withUnsafeBytes { ring.write(at: 9400, from: $0) } == 500)
        #expect(tcpBufStream(20000..<20010).withUnsafeBytes { ring.write(at: 19900, from: $0) } == 0)
        #expect(tcpBufStream(100..<300).withUnsafeBytes { ring.write(at: 0, from: $0) } == 200)
        ring.commit(300)
        #expect(tcpBufContents(ring) == tcpBufStream(0..<400))
        ring.consume(400)
        // The tail is still at its offset from the (moved) front.
        #expect(tcpBufStream(400..<9000).withUnsafeBytes { ring.write(at: 0, from: $0) } == 8600)
        ring.commit(9600)
        #expect(ring.free == 400)
        #expect(tcpBufContents(ring) == tcpBufStream(400..<10000))
    }

    @Test func writableRegionFillsInPlace() {
        let ring = ByteRing(limit: 4096)
        tcpBufWrite(ring, tcpBufStream(0..<4000))
        ring.consume(3900)
        // 100 bytes held at physical 3900..<4000: the free space wraps.
        let region = ring.writableRegion(maxBytes: 1000)
        #expect(region.count == 96)
        for k in 0..<region.count { region[k] = tcpBufStreamByte(4000 + k) }
        ring.commit(region.count)
        let again = ring.writableRegion(maxBytes: 1000)
        #expect(again.count == 1000)
        for k in 0..<again.count { again[k] = tcpBufStreamByte(4096 + k) }
        ring.commit(again.count)
        #expect(tcpBufContents(ring) == tcpBufStream(3900..<5096))
        #expect(ring.writableRegion(maxBytes: 1 << 20).count == ring.free)
    }

    /// Past 1 MiB storage grows by a quarter (64 KiB units), not to the next power of two: 2.2 MB held
    /// takes 2.5 MiB of a 4 MiB limit, not all of it.
    @Test func growthPastOneMiBIsByAQuarter() {
        #expect(ByteRing.steppedCapacity(for: 1 << 20, limit: 4 << 20) == 1 << 20)
        #expect(ByteRing.steppedCapacity(for: (1 << 20) + 1, limit: 4 << 20) == 1_310_720)
        let ring = ByteRing(limit: 4 << 20)
        tcpBufWrite(ring, tcpBufStream(0..<2_200_000))
        #expect(ring.capacity == 2_621_440)
        #expect(tcpBufContents(ring) == tcpBufStream(0..<2_200_000))
        #expect(ByteRing.steppedCapacity(for: 4_000_000, limit: 4 << 20) == 4_128_768)
        #expect(ByteRing.steppedCapacity(for: 4_150_000, limit: 4 << 20) == 4 << 20)  // the last step clamped
    }

    @Test func compactShrinksAndFrees() {
        let ring = ByteRing(limit: 1 << 20)
        tcpBufWrite(ring, tcpBufStream(0..<100_000))
        #expect(ring.capacity == 131_072)
        ring.consume(99_000)
        ring.compact()
        #expect(ring.capacity == 4096)
        #expect(tcpBufContents(ring) == tcpBufStream(99_000..<100_000))
        ring.consume(1000)
        ring.compact()
        #expect(ring.capacity == 0)
        #expect(tcpBufWrite(ring, [7]) == 1)
        #expect(tcpBufContents(ring) == [7])
        ring.reset()
        #expect(ring.count == 0 && ring.capacity == 0)
    }

    /// Thousands of random operations against a plain `[UInt8]` model, several seeds.
    @Test(arguments: [1, 2, 3, 0xDEAD_BEEF, 42_424_242] as [UInt64])
    func matchesAReferenceModel(seed: UInt64) {
        var rng = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        var limit = 1 + tcpBufBelow(20_000, &rng)
        let ring = ByteRing(limit: limit)
        var model: [UInt8] = []
        var next = 0  // stream position of the next byte to write
        for step in 0..<6_000 {
            let where_ = "seed \(seed) step \(step)"
            switch tcpBufBelow(10, &rng) {
            case 0, 1, 2:
                let length = tcpBufBelow(tcpBufBelow(2, &rng) == 0 ? 64 : 9000, &rng)
                let taken = tcpBufWrite(ring, tcpBufStream(next..<next + length))
                let expected = min(length, limit - model.count)
                guard taken == expected else {
                    Issue.record("write took \(taken), expected \(expected) (\(where_))")
                    return
                }
                model += tcpBufStream(next..<next + taken)
                next += taken
            case 3:
                // Fill in place.
                let region = ring.writableRegion(maxBytes: tcpBufBelow(5000, &rng))
                for k in 0..<region.count { region[k] = tcpBufStreamByte(next + k) }
                ring.commit(region.count)
                model += tcpBufStream(next..<next + region.count)
                next += region.count
            case 4, 5, 6:
                let n = tcpBufBelow(model.count + 1, &rng)
                ring.consume(n)
                model.removeFirst(n)
            case 7:
                let offset = tcpBufBelow(model.count + 1, &rng)
                var buffer = [UInt8](repeating: 0, count: tcpBufBelow(6000, &rng))
                let n = buffer.withUnsafeMutableBytes { ring.peek(at: offset, into: $0) }
                guard n == min(buffer.count, model.count - offset),
                    buffer[0..<n].elementsEqual(model[offset..<offset + n])
                else {
                    Issue.record("peek mismatch (\(where_))")
                    return
                }
            case 8:
                let chunk = ring.readable()
                guard chunk.count <= model.count, chunk.count > 0 || model.isEmpty,
                    chunk.elementsEqual(model[0..<chunk.count])
                else {
                    Issue.record("readable mismatch (\(where_))")
                    return
                }
                // Deliver it, as the driver would after a socket write.
                ring.consume(chunk.count)
                model.removeFirst(chunk.count)
            default:
                if tcpBufBelow(2, &rng) == 0 {
                    ring.compact()
                } else {
                    limit += tcpBufBelow(4000, &rng)
                    ring.capacityLimit = limit
                }
            }
            guard ring.count == model.count, ring.free == limit - model.count,
                ring.capacity <= limit
            else {
                Issue.record("counters diverged (\(where_))")
                return
            }
            if step % 97 == 0, tcpBufContents(ring) != model {
                Issue.record("contents diverged (\(where_))")
                return
            }
        }
        #expect(tcpBufContents(ring) == model)
    }
}
