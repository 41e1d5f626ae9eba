/// The Internet checksum (RFC 1071): the one's complement of the one's complement sum of 16-bit words.
///
/// An accumulator, so a caller can add the pseudo-header fields and then the segment, in pieces:
///
///     var sum = Checksum.pseudoHeader(src: s, dst: d, protocol: .tcp, length: segment.count)
///     sum.add(segment)
///     let field = sum.finalize()          // store big-endian; over data that contains it, finalize() == 0
///
/// Pieces may have any length, odd ones included: the accumulator remembers whether the next byte is a high
/// or a low byte, and a piece that starts on a low byte contributes its own sum byte-swapped (RFC 1071 §2(B):
/// the sum is byte-order independent, and swapping is multiplying by 2^8 modulo 2^16 − 1).
@_spi(OneTunInternals) public struct Checksum: Sendable, BitwiseCopyable {
    /// The network-order partial sum, folded to 16 bits after every addition.
    @usableFromInline var sum: UInt32
    /// True when an odd number of bytes has been added, so the next byte is the low byte of a word.
    @usableFromInline var odd: Bool

    @inlinable public init() {
        sum = 0
        odd = false
    }

    /// Adds bytes to the sum, 8 at a time.
    @inlinable public mutating func add(_ bytes: UnsafeRawBufferPointer) {
        var s = UInt32(Checksum.partialSum(bytes))
        if odd { s = (s >> 8 | s << 8) & 0xFFFF }
        accumulate(s)
        if bytes.count & 1 == 1 { odd.toggle() }
    }

    /// Adds a 16-bit field, as its two big-endian bytes.
    @inlinable public mutating func add(_ word: UInt16) {
        var s = UInt32(word)
        if odd { s = (s >> 8 | s << 8) & 0xFFFF }
        accumulate(s)
    }

    /// Adds a 32-bit field, as its four big-endian bytes.
    @inlinable public mutating func add(_ word: UInt32) {
        add(UInt16(truncatingIfNeeded: word >> 16))
        add(UInt16(truncatingIfNeeded: word))
    }

    @inlinable public mutating func add(_ address: IPv4Address) { add(address.rawValue) }

    @inlinable public mutating func add(_ address: IPv6Address) {
        add(UInt32(truncatingIfNeeded: address.high >> 32))
        add(UInt32(truncatingIfNeeded: address.high))
        add(UInt32(truncatingIfNeeded: address.low >> 32))
        add(UInt32(truncatingIfNeeded: address.low))
    }

    /// The checksum field's value: the one's complement of the sum. Over data that already holds a correct
    /// checksum field this is zero, which is how the views verify.
    @inlinable public func finalize() -> UInt16 { ~UInt16(truncatingIfNeeded: sum) }

    /// The checksum of one buffer.
    @inlinable public static func compute(_ bytes: UnsafeRawBufferPointer) -> UInt16 {
        var c = Checksum()
        c.add(bytes)
        return c.finalize()
    }

    @inlinable mutating func accumulate(_ s: UInt32) {
        let t = sum &+ s
        sum = (t & 0xFFFF) &+ (t >> 16)
    }

    /// The one's complement sum of `bytes` (zero-padded to even length), folded to 16 bits, in network order.
    ///
    /// Words are loaded 8 bytes at a time in host order and added with end-around carry: 2^64 − 1 is a
    /// multiple of 2^16 − 1, so a 64-bit one's complement sum folds to the 16-bit one; and a sum of
    /// byte-swapped words is the byte-swapped sum (RFC 1071 §2(B)), so one swap at the end fixes the order.
    @inlinable static func partialSum(_ bytes: UnsafeRawBufferPointer) -> UInt16 {
        guard let base = bytes.baseAddress else { return 0 }
        let n = bytes.count
        var a0: UInt64 = 0
        var a1: UInt64 = 0
        var a2: UInt64 = 0
        var a3: UInt64 = 0
        var i = 0
        // Four accumulators so the carries of one do not wait on the others.
        while n - i >= 32 {
            a0 = addCarry(a0, base.loadUnaligned(fromByteOffset: i, as: UInt64.self))
            a1 = addCarry(a1, base.loadUnaligned(fromByteOffset: i + 8, as: UInt64.self))
            a2 = addCarry(a2, base.loadUnaligned(fromByteOffset: i + 16, as: UInt64.self))
            a3 = addCarry(a3, base.loadUnaligned(fromByteOffset: i + 24, as: UInt64.self))
            i += 32
        }
        while n - i >= 8 {
            a0 = addCarry(a0, base.loadUnaligned(fromByteOffset: i, as: UInt64.self))
            i += 8
        }
        if i < n {
            // The last 1–7 bytes, zero-padded in memory order: an odd final byte becomes the high byte of a
            // network word whose low byte is zero, exactly as RFC 1071 pads.
            var tail: UInt64 = 0
            withUnsafeMutableBytes(of: &tail) { $0.baseAddress!.copyMemory(from: base + i, byteCount: n - i) }
            a1 = addCarry(a1, tail)
        }
        var acc = addCarry(addCarry(a0, a1), addCarry(a2, a3))
        acc = (acc & 0xFFFF_FFFF) &+ (acc >> 32)
        acc = (acc & 0xFFFF_FFFF) &+ (acc >> 32)
        acc = (acc & 0xFFFF) &+ (acc >> 16)
        acc = (acc & 0xFFFF) &+ (acc >> 16)
        acc = (acc & 0xFFFF) &+ (acc >> 16)
        return UInt16(bigEndian: UInt16(truncatingIfNeeded: acc))
    }

    @inlinable @inline(__always) static func addCarry(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (s, overflow) = a.addingReportingOverflow(b)
        return s &+ (overflow ? 1 : 0)
    }
}

// MARK: - Pseudo-headers

extension Checksum {
    /// The IPv4 pseudo-header for TCP and UDP (RFC 9293 §3.1, RFC 768): source, destination, a zero byte,
    /// the protocol, and the TCP/UDP length (header plus data).
    @inlinable public static func pseudoHeader(
        src: IPv4Address, dst: IPv4Address, protocol proto: IPProtocol, length: Int
    ) -> Checksum {
        var c = Checksum()
        c.add(src)
        c.add(dst)
        c.add(UInt16(proto.rawValue))
        c.add(UInt16(truncatingIfNeeded: length))
        return c
    }

    /// The IPv6 pseudo-header (RFC 8200 §8.1): source, destination, the 32-bit upper-layer packet length,
    /// three zero bytes and the upper-layer Next Header value (not that of an extension header).
    @inlinable public static func pseudoHeader(
        src: IPv6Address, dst: IPv6Address, protocol proto: IPProtocol, length: Int
    ) -> Checksum {
        var c = Checksum()
        c.add(src)
        c.add(dst)
        c.add(UInt32(truncatingIfNeeded: length))
        c.add(UInt32(proto.rawValue))
        return c
    }

    /// The pseudo-header of whichever family the addresses are; both must be the same family.
    @inlinable public static func pseudoHeader(
        src: IPAddress, dst: IPAddress, protocol proto: IPProtocol, length: Int
    ) -> Checksum {
        switch (src, dst) {
        case let (.v4(s), .v4(d)): pseudoHeader(src: s, dst: d, protocol: proto, length: length)
        case let (.v6(s), .v6(d)): pseudoHeader(src: s, dst: d, protocol: proto, length: length)
        default: preconditionFailure("pseudo-header addresses must be of one family")
        }
    }
}
