/// BLAKE2s (RFC 7693), streaming, with the state and block buffer held inline: no heap allocation.
/// libsodium has BLAKE2b only, and WireGuard needs BLAKE2s for HASH, MAC and HMAC (paper §5.4).
struct Blake2s {
    // RFC 7693 §2.6: the IV is SHA-256's.
    static let iv: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32) = (
        0x6A09_E667, 0xBB67_AE85, 0x3C6E_F372, 0xA54F_F53A, 0x510E_527F, 0x9B05_688C, 0x1F83_D9AB, 0x5BE0_CD19
    )

    private var h: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32)
    private var block: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
    private var filled = 0
    private var counter: UInt64 = 0
    private let outputLength: Int

    init(outputLength: Int = 32, key: UnsafeRawBufferPointer? = nil) {
        precondition(outputLength >= 1 && outputLength <= 32, "BLAKE2s output is 1...32 bytes")
        let keyLength = key?.count ?? 0
        precondition(keyLength <= 32, "BLAKE2s key is at most 32 bytes")
        self.outputLength = outputLength
        h = Self.iv
        // Parameter block word 0: digest length, key length, fanout 1, depth 1 (RFC 7693 §2.5).
        h.0 ^= 0x0101_0000 ^ UInt32(keyLength) << 8 ^ UInt32(outputLength)
        if let key, keyLength > 0 {
            // A key is processed as a first block of its own, zero padded (§3.3).
            update(key)
            filled = 64
        }
    }

    mutating func update(_ data: UnsafeRawBufferPointer) {
        guard data.count > 0 else { return }
        var offset = 0
        var remaining = data.count
        var local = block
        defer { block = local }
        withUnsafeMutableBytes(of: &local) { blockBytes in
            while remaining > 0 {
                if filled == 64 {
                    // Compress only when more input follows: the last block is compressed by finalize.
                    counter &+= 64
                    compress(blockBytes, last: false)
                    filled = 0
                }
                let take = min(64 - filled, remaining)
                (blockBytes.baseAddress! + filled).copyMemory(from: data.baseAddress! + offset, byteCount: take)
                filled += take
                offset += take
                remaining -= take
            }
        }
    }

    mutating func finalize(into out: UnsafeMutableRawBufferPointer) {
        precondition(out.count == outputLength, "output buffer must match the digest length")
        var local = block
        withUnsafeMutableBytes(of: &local) { blockBytes in
            counter &+= UInt64(filled)
            if filled < 64 { (blockBytes.baseAddress! + filled).initializeMemory(as: UInt8.self, repeating: 0, count: 64 - filled) }
            compress(blockBytes, last: true)
            blockBytes.initializeMemory(as: UInt8.self, repeating: 0)
        }
        block = local
        withUnsafeBytes(of: &h) { state in
            // The state words are little-endian on every platform we build for.
            out.copyMemory(from: UnsafeRawBufferPointer(rebasing: state[0..<outputLength]))
        }
    }

    @inline(__always)
    private static func g(_ v: inout (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32,
                                      UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32),
                          _ a: Int, _ b: Int, _ c: Int, _ d: Int, _ x: UInt32, _ y: UInt32) {
        withUnsafeMutableBytes(of: &v) { raw in
            let p = raw.baseAddress!.assumingMemoryBound(to: UInt32.self)
            // RFC 7693 §3.1, rotations 16, 12, 8, 7.
            p[a] = p[a] &+ p[b] &+ x
            p[d] = rotr(p[d] ^ p[a], 16)
            p[c] = p[c] &+ p[d]
            p[b] = rotr(p[b] ^ p[c], 12)
            p[a] = p[a] &+ p[b] &+ y
            p[d] = rotr(p[d] ^ p[a], 8)
            p[c] = p[c] &+ p[d]
            p[b] = rotr(p[b] ^ p[c], 7)
        }
    }

    @inline(__always) private static func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { x >> n | x << (32 - n) }

    static let sigma: [[Int]] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
        [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
        [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
        [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
        [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
        [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
        [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
        [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
        [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
    ]

    /// RFC 7693 §3.2, function F.
    private mutating func compress(_ blockBytes: UnsafeMutableRawBufferPointer, last: Bool) {
        var m = (UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0),
                 UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0), UInt32(0))
        withUnsafeMutableBytes(of: &m) { words in
            for i in 0..<16 {
                words.storeBytes(of: UInt32(littleEndian: blockBytes.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)),
                                 toByteOffset: i * 4, as: UInt32.self)
            }
        }
        var v = (h.0, h.1, h.2, h.3, h.4, h.5, h.6, h.7,
                 Self.iv.0, Self.iv.1, Self.iv.2, Self.iv.3,
                 Self.iv.4 ^ UInt32(truncatingIfNeeded: counter), Self.iv.5 ^ UInt32(truncatingIfNeeded: counter >> 32),
                 last ? ~Self.iv.6 : Self.iv.6, Self.iv.7)
        withUnsafeBytes(of: m) { raw in
            let w = raw.baseAddress!.assumingMemoryBound(to: UInt32.self)
            for round in 0..<10 {
                let s = Self.sigma[round]
                Self.g(&v, 0, 4, 8, 12, w[s[0]], w[s[1]])
                Self.g(&v, 1, 5, 9, 13, w[s[2]], w[s[3]])
                Self.g(&v, 2, 6, 10, 14, w[s[4]], w[s[5]])
                Self.g(&v, 3, 7, 11, 15, w[s[6]], w[s[7]])
                Self.g(&v, 0, 5, 10, 15, w[s[8]], w[s[9]])
                Self.g(&v, 1, 6, 11, 12, w[s[10]], w[s[11]])
                Self.g(&v, 2, 7, 8, 13, w[s[12]], w[s[13]])
                Self.g(&v, 3, 4, 9, 14, w[s[14]], w[s[15]])
            }
        }
        h.0 ^= v.0 ^ v.8
        h.1 ^= v.1 ^ v.9
        h.2 ^= v.2 ^ v.10
        h.3 ^= v.3 ^ v.11
        h.4 ^= v.4 ^ v.12
        h.5 ^= v.5 ^ v.13
        h.6 ^= v.6 ^ v.14
        h.7 ^= v.7 ^ v.15
    }
}
