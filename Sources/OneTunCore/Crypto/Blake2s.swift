/// BLAKE2s (RFC 7693), streaming, with the state and the block buffer held inline: no heap allocation.
///
/// libsodium ships BLAKE2b only, and WireGuard needs BLAKE2s for HASH, MAC and HMAC (paper §5.4), so it is
/// written here. The compression function works on `UInt32` locals with the ten rounds spelled out, one
/// line per round with the message words in that round's σ order (RFC 7693 §2.7), so the optimiser keeps
/// the whole working vector in registers and a reviewer can check each line against the table.
struct Blake2s {
    /// The chained state h[0..7] (RFC 7693 §3.3).
    private var h: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32)
    /// The pending input block, 64 bytes.
    private var block: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
    /// Bytes of `block` in use, 0...64. A full block stays here until more input arrives, because only
    /// `finalize` knows which block is the last one and must carry the final flag.
    private var filled = 0
    /// The byte counter t (RFC 7693 §3.2), a 2×32-bit word in the spec.
    private var counter: UInt64 = 0
    private let outputLength: Int

    /// `outputLength` is nn, 1...32 bytes; `key` is the optional key, at most 32 bytes (RFC 7693 §2.1).
    init(outputLength: Int = 32, key: UnsafeRawBufferPointer? = nil) {
        precondition(outputLength >= 1 && outputLength <= 32, "BLAKE2s output is 1...32 bytes")
        let keyLength = key?.count ?? 0
        precondition(keyLength <= 32, "BLAKE2s key is at most 32 bytes")
        self.outputLength = outputLength
        h = (Self.iv0, Self.iv1, Self.iv2, Self.iv3, Self.iv4, Self.iv5, Self.iv6, Self.iv7)
        // h[0] ^= 0x0101kknn: parameter block word 0 with fanout 1, depth 1, key length kk and digest
        // length nn (RFC 7693 §3.3); the other parameter words are zero for sequential hashing.
        h.0 ^= 0x0101_0000 ^ UInt32(keyLength) << 8 ^ UInt32(outputLength)
        if let key, keyLength > 0 {
            // The key, zero padded, is a block of its own before the message (§3.3). `block` is zero, so
            // copying the key and calling the block full is exactly the padding.
            withUnsafeMutableBytes(of: &block) { $0.baseAddress!.copyMemory(from: key.baseAddress!, byteCount: keyLength) }
            filled = 64
        }
    }

    mutating func update(_ data: UnsafeRawBufferPointer) {
        guard var input = data.baseAddress, data.count > 0 else { return }
        var remaining = data.count
        let room = 64 - filled
        if remaining > room {
            // The buffered block is complete and more input follows, so it is not the last one.
            withUnsafeMutableBytes(of: &block) { buffer in
                (buffer.baseAddress! + filled).copyMemory(from: input, byteCount: room)
                counter &+= 64
                Self.compress(&h, UnsafeRawPointer(buffer.baseAddress!), counter: counter, last: false)
            }
            input += room
            remaining -= room
            filled = 0
            // Whole blocks straight from the input, still keeping back the last (possibly full) one.
            while remaining > 64 {
                counter &+= 64
                Self.compress(&h, UnsafeRawPointer(input), counter: counter, last: false)
                input += 64
                remaining -= 64
            }
        }
        let offset = filled
        withUnsafeMutableBytes(of: &block) { ($0.baseAddress! + offset).copyMemory(from: input, byteCount: remaining) }
        filled += remaining
    }

    /// Writes the digest; `out.count` must be the output length. The hasher is spent afterwards (its
    /// state and buffer are zeroed, which matters when it held a key or an HMAC pad).
    mutating func finalize(into out: UnsafeMutableRawBufferPointer) {
        precondition(out.count == outputLength, "output buffer must match the digest length")
        // The last block: zero padded, t counts only the real bytes, f0 = all ones (§3.3).
        counter &+= UInt64(filled)
        let offset = filled
        withUnsafeMutableBytes(of: &block) { buffer in
            (buffer.baseAddress! + offset).initializeMemory(as: UInt8.self, repeating: 0, count: 64 - offset)
            Self.compress(&h, UnsafeRawPointer(buffer.baseAddress!), counter: counter, last: true)
        }
        // The digest is h in little-endian byte order, truncated to nn bytes.
        var digest = (h.0.littleEndian, h.1.littleEndian, h.2.littleEndian, h.3.littleEndian,
                      h.4.littleEndian, h.5.littleEndian, h.6.littleEndian, h.7.littleEndian)
        withUnsafeBytes(of: &digest) { out.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: outputLength) }
        digest = (0, 0, 0, 0, 0, 0, 0, 0)
        h = (0, 0, 0, 0, 0, 0, 0, 0)
        block = (0, 0, 0, 0, 0, 0, 0, 0)
        filled = 0
    }

    // RFC 7693 §2.6: the IV is SHA-256's initial hash value.
    private static var iv0: UInt32 { 0x6A09_E667 }
    private static var iv1: UInt32 { 0xBB67_AE85 }
    private static var iv2: UInt32 { 0x3C6E_F372 }
    private static var iv3: UInt32 { 0xA54F_F53A }
    private static var iv4: UInt32 { 0x510E_527F }
    private static var iv5: UInt32 { 0x9B05_688C }
    private static var iv6: UInt32 { 0x1F83_D9AB }
    private static var iv7: UInt32 { 0x5BE0_CD19 }

    /// The working vector v[0..15].
    private typealias Work = (
        UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32,
        UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32
    )

    /// RFC 7693 §3.2, function F, on the 64 bytes at `m` (any alignment).
    @inline(__always)
    private static func compress(
        _ h: inout (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32),
        _ m: UnsafeRawPointer, counter: UInt64, last: Bool
    ) {
        @inline(__always) func word(_ i: Int) -> UInt32 {
            UInt32(littleEndian: m.loadUnaligned(fromByteOffset: i &* 4, as: UInt32.self))
        }
        let m0 = word(0), m1 = word(1), m2 = word(2), m3 = word(3)
        let m4 = word(4), m5 = word(5), m6 = word(6), m7 = word(7)
        let m8 = word(8), m9 = word(9), m10 = word(10), m11 = word(11)
        let m12 = word(12), m13 = word(13), m14 = word(14), m15 = word(15)

        // v[0..7] = h, v[8..15] = IV; v12 ^= t0, v13 ^= t1, v14 ^= f0 (all ones on the last block).
        var v: Work = (
            h.0, h.1, h.2, h.3, h.4, h.5, h.6, h.7,
            iv0, iv1, iv2, iv3,
            iv4 ^ UInt32(truncatingIfNeeded: counter), iv5 ^ UInt32(truncatingIfNeeded: counter >> 32),
            last ? ~iv6 : iv6, iv7
        )

        // Each row: message words in the order σ[r][0..15] of RFC 7693 §2.7.
        round(&v, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15)
        round(&v, m14, m10, m4, m8, m9, m15, m13, m6, m1, m12, m0, m2, m11, m7, m5, m3)
        round(&v, m11, m8, m12, m0, m5, m2, m15, m13, m10, m14, m3, m6, m7, m1, m9, m4)
        round(&v, m7, m9, m3, m1, m13, m12, m11, m14, m2, m6, m5, m10, m4, m0, m15, m8)
        round(&v, m9, m0, m5, m7, m2, m4, m10, m15, m14, m1, m11, m12, m6, m8, m3, m13)
        round(&v, m2, m12, m6, m10, m0, m11, m8, m3, m4, m13, m7, m5, m15, m14, m1, m9)
        round(&v, m12, m5, m1, m15, m14, m13, m4, m10, m0, m7, m6, m3, m9, m2, m8, m11)
        round(&v, m13, m11, m7, m14, m12, m1, m3, m9, m5, m0, m15, m4, m8, m6, m2, m10)
        round(&v, m6, m15, m14, m9, m11, m3, m0, m8, m12, m2, m13, m7, m1, m4, m10, m5)
        round(&v, m10, m2, m8, m4, m7, m6, m1, m5, m15, m11, m9, m14, m3, m12, m13, m0)

        // h[i] ^= v[i] ^ v[i + 8].
        h.0 ^= v.0 ^ v.8
        h.1 ^= v.1 ^ v.9
        h.2 ^= v.2 ^ v.10
        h.3 ^= v.3 ^ v.11
        h.4 ^= v.4 ^ v.12
        h.5 ^= v.5 ^ v.13
        h.6 ^= v.6 ^ v.14
        h.7 ^= v.7 ^ v.15
    }

    /// One round of F: G on the four columns, then on the four diagonals (RFC 7693 §3.2). `s0...s15`
    /// are the message words already permuted by this round's σ.
    @inline(__always)
    private static func round(
        _ v: inout Work,
        _ s0: UInt32, _ s1: UInt32, _ s2: UInt32, _ s3: UInt32, _ s4: UInt32, _ s5: UInt32, _ s6: UInt32, _ s7: UInt32,
        _ s8: UInt32, _ s9: UInt32, _ s10: UInt32, _ s11: UInt32, _ s12: UInt32, _ s13: UInt32, _ s14: UInt32, _ s15: UInt32
    ) {
        g(&v.0, &v.4, &v.8, &v.12, s0, s1)
        g(&v.1, &v.5, &v.9, &v.13, s2, s3)
        g(&v.2, &v.6, &v.10, &v.14, s4, s5)
        g(&v.3, &v.7, &v.11, &v.15, s6, s7)
        g(&v.0, &v.5, &v.10, &v.15, s8, s9)
        g(&v.1, &v.6, &v.11, &v.12, s10, s11)
        g(&v.2, &v.7, &v.8, &v.13, s12, s13)
        g(&v.3, &v.4, &v.9, &v.14, s14, s15)
    }

    /// The mixing function G with BLAKE2s's rotations R1..R4 = 16, 12, 8, 7 (RFC 7693 §3.1).
    @inline(__always)
    private static func g(_ a: inout UInt32, _ b: inout UInt32, _ c: inout UInt32, _ d: inout UInt32, _ x: UInt32, _ y: UInt32) {
        a = a &+ b &+ x
        d = rotr(d ^ a, 16)
        c = c &+ d
        b = rotr(b ^ c, 12)
        a = a &+ b &+ y
        d = rotr(d ^ a, 8)
        c = c &+ d
        b = rotr(b ^ c, 7)
    }

    @inline(__always)
    private static func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { x &>> n | x &<< (32 &- n) }
}
