import Testing
@_spi(OneTunInternals) @testable import OneTunCore

@Suite struct SeqNumberTests {
    @Test func ordersAndMeasuresWithoutWrap() {
        let a = SeqNumber(1000)
        let b = a + 500
        #expect(b.rawValue == 1500)
        #expect(a < b && a <= b && b > a && b >= a)
        #expect(!(b < a) && !(a > b))
        #expect(a <= a && a >= a && !(a < a))
        #expect(b - a == 500)
        #expect(a - b == -500)
        #expect(b - 500 == a)
        #expect(a + (-1000) == SeqNumber(0))
        #expect(max(a, b) == b && min(a, b) == a)
    }

    @Test func wrapsAroundTheTopOfTheSpace() {
        let top = SeqNumber(UInt32.max)
        let zero = top + 1
        #expect(zero == SeqNumber(0))
        #expect(top < zero)  // RFC 9293 §3.4: modular comparison
        #expect(SeqNumber(UInt32.max - 9) < SeqNumber(5))
        #expect(SeqNumber(5) - SeqNumber(UInt32.max - 9) == 15)
        #expect(SeqNumber(UInt32.max - 9) - SeqNumber(5) == -15)
        #expect(SeqNumber(3) - 10 == SeqNumber(UInt32.max - 6))
        #expect(max(SeqNumber(UInt32.max - 1), SeqNumber(2)) == SeqNumber(2))
        var s = SeqNumber(UInt32.max - 1)
        s += 4
        #expect(s == SeqNumber(2))
        s -= 4
        #expect(s == SeqNumber(UInt32.max - 1))
        // Distances up to 2^31 - 1 either way are exact.
        let far = SeqNumber(0) + Int(Int32.max)
        #expect(far - SeqNumber(0) == Int(Int32.max))
        #expect(SeqNumber(0) < far)
        #expect(SeqNumber(0) - far == -Int(Int32.max))
        // Int arguments wider than 32 bits wrap modulo 2^32.
        #expect(SeqNumber(7) + (1 << 32) == SeqNumber(7))
    }

    @Test func windowTestAcrossWrap() {
        let start = SeqNumber(UInt32.max - 99)
        #expect(start.isInWindow(start: start, length: 1))
        #expect((start + 99).isInWindow(start: start, length: 200))
        #expect((start + 100).isInWindow(start: start, length: 200))  // wrapped to 0
        #expect((start + 199).isInWindow(start: start, length: 200))
        #expect(!(start + 200).isInWindow(start: start, length: 200))
        #expect(!(start - 1).isInWindow(start: start, length: 200))
        #expect(!start.isInWindow(start: start, length: 0))  // RFC 9293 §3.10.7.4: zero window accepts no data
    }

    @Test func agreesWithTheSignedDifferenceEverywhere() {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for _ in 0..<10_000 {
            let a = SeqNumber(UInt32(truncatingIfNeeded: tcpBufNext(&state)))
            let d = Int(Int32(truncatingIfNeeded: tcpBufNext(&state)))
            guard d != Int(Int32.min) else { continue }
            let b = a + d
            #expect(b - a == d)
            #expect((a < b) == (d > 0))
            #expect((a == b) == (d == 0))
            #expect(b - d == a)
        }
    }
}
