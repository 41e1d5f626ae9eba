/// A TCP sequence number: a point in the 2^32 sequence space, compared modulo 2^32.
///
/// RFC 9293 §3.4: "It is essential to remember that the actual sequence number space is finite, though
/// large. This space ranges from 0 to 2^32 - 1. Since the space is finite, all arithmetic dealing with
/// sequence numbers must be performed modulo 2^32." A comparison `a < b` therefore means "a comes before b"
/// and is decided by the sign of the 32-bit difference: `a < b` iff `Int32(bitPattern: a &- b) < 0`.
///
/// The order is only meaningful between numbers less than 2^31 apart, which TCP guarantees for every pair
/// it compares (windows are at most 2^30 bytes, RFC 7323 §2.3). `Comparable` is adopted for `<`, `max`, `min`
/// on such pairs; it is not a total order over the whole space (for `y = x + 2^31` both `x < y` and `y < x`
/// hold, and `x < y < z < x` is possible), so never sort an unbounded collection of these.
struct SeqNumber: Hashable, Sendable, BitwiseCopyable, Comparable, CustomStringConvertible {
    var rawValue: UInt32

    @inline(__always) init(_ rawValue: UInt32) { self.rawValue = rawValue }

    /// The number `n` positions later (earlier when negative), wrapping modulo 2^32 (RFC 9293 §3.4).
    @inline(__always) static func + (a: SeqNumber, n: Int) -> SeqNumber {
        SeqNumber(a.rawValue &+ UInt32(truncatingIfNeeded: n))
    }

    @inline(__always) static func - (a: SeqNumber, n: Int) -> SeqNumber {
        SeqNumber(a.rawValue &- UInt32(truncatingIfNeeded: n))
    }

    @inline(__always) static func += (a: inout SeqNumber, n: Int) { a = a + n }

    @inline(__always) static func -= (a: inout SeqNumber, n: Int) { a = a - n }

    /// The signed distance from `b` to `a` (`a - b`), in `-2^31 ..< 2^31`: positive when `a` comes after `b`.
    /// RFC 9293 §3.4 arithmetic; e.g. the bytes acknowledged by an ACK are `ack - snd.una`.
    @inline(__always) static func - (a: SeqNumber, b: SeqNumber) -> Int {
        Int(Int32(bitPattern: a.rawValue &- b.rawValue))
    }

    /// RFC 9293 §3.4: "a < b" in the modular sense.
    @inline(__always) static func < (a: SeqNumber, b: SeqNumber) -> Bool {
        Int32(bitPattern: a.rawValue &- b.rawValue) < 0
    }

    @inline(__always) static func <= (a: SeqNumber, b: SeqNumber) -> Bool {
        Int32(bitPattern: a.rawValue &- b.rawValue) <= 0
    }

    @inline(__always) static func > (a: SeqNumber, b: SeqNumber) -> Bool { b < a }

    @inline(__always) static func >= (a: SeqNumber, b: SeqNumber) -> Bool { b <= a }

    /// Whether `self` lies in `[start, start + length)`, the window test of RFC 9293 §3.10.7.4
    /// ("RCV.NXT =< SEG.SEQ < RCV.NXT+RCV.WND"). Always false for an empty window.
    @inline(__always) func isInWindow(start: SeqNumber, length: Int) -> Bool {
        let d = rawValue &- start.rawValue  // unsigned distance: wraps to a huge value when before `start`
        return length > 0 && UInt64(d) < UInt64(length)
    }

    var description: String { String(rawValue) }
}
