import CSodium

/// libsodium must be initialised once before its RNG and X25519 are used; a global `let` is lazy and
/// thread-safe in Swift.
let sodiumInitialised: Bool = sodium_init() >= 0

/// The primitives of the WireGuard paper §5.4: HASH, MAC, HMAC, KDF_n, DH and AEAD/XAEAD.
/// All of them work on caller-owned memory and allocate nothing.
public enum WGCrypto {
    /// HASH(a || b): BLAKE2s-256.
    public static func hash(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) -> Key32 {
        var state = Blake2s()
        state.update(a)
        state.update(b)
        var out = Key32.zero
        out.withUnsafeMutableBytes { state.finalize(into: $0) }
        return out
    }

    public static func hash(_ a: Key32, _ b: UnsafeRawBufferPointer) -> Key32 {
        a.withUnsafeBytes { hash($0, b) }
    }

    /// MAC(key, data): keyed BLAKE2s with a 16-byte output, written to `out`.
    public static func mac(key: UnsafeRawBufferPointer, _ data: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) {
        var state = Blake2s(outputLength: 16, key: key)
        state.update(data)
        state.finalize(into: out)
    }

    /// HMAC(key, data) with BLAKE2s-256 (RFC 2104, 64-byte block).
    public static func hmac(key: Key32, _ data: UnsafeRawBufferPointer) -> Key32 {
        var pad = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        var inner = Key32.zero
        withUnsafeMutableBytes(of: &pad) { p in
            key.withUnsafeBytes { p.copyMemory(from: $0) }
            for i in 0..<64 { p[i] ^= 0x36 }
            var state = Blake2s()
            state.update(UnsafeRawBufferPointer(p))
            state.update(data)
            inner.withUnsafeMutableBytes { state.finalize(into: $0) }
            for i in 0..<64 { p[i] ^= 0x36 ^ 0x5c }
        }
        var out = Key32.zero
        withUnsafeMutableBytes(of: &pad) { p in
            var state = Blake2s()
            state.update(UnsafeRawBufferPointer(p))
            inner.withUnsafeBytes { state.update($0) }
            out.withUnsafeMutableBytes { state.finalize(into: $0) }
            sodium_memzero(p.baseAddress, 64)
        }
        inner.wipe()
        return out
    }

    /// KDF_1..3 (paper §5.4): τ0 = HMAC(key, input), τ1 = HMAC(τ0, 0x1), τi = HMAC(τ0, τ(i-1) || i).
    public static func kdf1(key: Key32, input: UnsafeRawBufferPointer) -> Key32 { kdf(key, input, 1).0 }

    public static func kdf2(key: Key32, input: UnsafeRawBufferPointer) -> (Key32, Key32) {
        let r = kdf(key, input, 2)
        return (r.0, r.1)
    }

    public static func kdf3(key: Key32, input: UnsafeRawBufferPointer) -> (Key32, Key32, Key32) { kdf(key, input, 3) }

    private static func kdf(_ key: Key32, _ input: UnsafeRawBufferPointer, _ n: Int) -> (Key32, Key32, Key32) {
        var t0 = hmac(key: key, input)
        defer { t0.wipe() }
        var one: UInt8 = 1
        let t1 = withUnsafeBytes(of: &one) { hmac(key: t0, $0) }
        guard n >= 2 else { return (t1, .zero, .zero) }
        var buffer = (Key32.zero, UInt8(2))
        buffer.0 = t1
        let t2 = withUnsafeBytes(of: &buffer) { hmac(key: t0, UnsafeRawBufferPointer(rebasing: $0[0..<33])) }
        guard n >= 3 else { return (t1, t2, .zero) }
        buffer = (t2, 3)
        let t3 = withUnsafeBytes(of: &buffer) { hmac(key: t0, UnsafeRawBufferPointer(rebasing: $0[0..<33])) }
        buffer.0.wipe()
        return (t1, t2, t3)
    }

    // MARK: X25519 (RFC 7748)

    public static func x25519PublicKey(privateKey: Key32) -> Key32 {
        precondition(sodiumInitialised)
        var out = Key32.zero
        out.withUnsafeMutableBytes { o in
            privateKey.withUnsafeBytes { k in
                _ = crypto_scalarmult_curve25519_base(o.baseAddress!.assumingMemoryBound(to: UInt8.self), k.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        return out
    }

    /// DH(private, public); nil when the result is all zeros (a low-order public key), which the
    /// handshake must refuse.
    public static func x25519(privateKey: Key32, publicKey: Key32) -> Key32? {
        precondition(sodiumInitialised)
        var out = Key32.zero
        let rc = out.withUnsafeMutableBytes { o in
            privateKey.withUnsafeBytes { k in
                publicKey.withUnsafeBytes { p in
                    crypto_scalarmult_curve25519(
                        o.baseAddress!.assumingMemoryBound(to: UInt8.self), k.baseAddress!.assumingMemoryBound(to: UInt8.self),
                        p.baseAddress!.assumingMemoryBound(to: UInt8.self))
                }
            }
        }
        return rc == 0 && !out.isZero ? out : nil
    }

    /// A new X25519 private key, clamped as RFC 7748 §5 describes (as `wg genkey` does).
    public static func generatePrivateKey(using random: RandomSource) -> Key32 {
        var key = Key32.zero
        key.withUnsafeMutableBytes { k in
            random.fill(k)
            k[0] &= 248
            k[31] &= 127
            k[31] |= 64
        }
        return key
    }

    // MARK: AEAD (RFC 8439) and XAEAD (draft-irtf-cfrg-xchacha)

    /// ChaCha20-Poly1305 with WireGuard's nonce: 32 zero bits, then the counter little-endian.
    @inline(__always)
    public static func seal(key: Key32, counter: UInt64, aad: UnsafeRawBufferPointer, inPlace data: UnsafeMutableRawBufferPointer, tag: UnsafeMutableRawPointer) {
        var packed = (UInt32(0), UInt32(0), UInt32(0))
        withUnsafeMutableBytes(of: &packed) { p in
            p.storeBytes(of: counter.littleEndian, toByteOffset: 4, as: UInt64.self)
            sealIETF(key: key, nonce: p.baseAddress!, aad: aad, inPlace: data, tag: tag)
        }
    }

    @inline(__always)
    public static func open(key: Key32, counter: UInt64, aad: UnsafeRawBufferPointer, inPlace data: UnsafeMutableRawBufferPointer, tag: UnsafeRawPointer) -> Bool {
        var packed = (UInt32(0), UInt32(0), UInt32(0))
        return withUnsafeMutableBytes(of: &packed) { p in
            p.storeBytes(of: counter.littleEndian, toByteOffset: 4, as: UInt64.self)
            return openIETF(key: key, nonce: p.baseAddress!, aad: aad, inPlace: data, tag: tag)
        }
    }

    /// ChaCha20-Poly1305 IETF with an arbitrary 12-byte nonce (for the RFC 8439 vector).
    @inline(__always)
    static func sealIETF(key: Key32, nonce: UnsafeRawPointer, aad: UnsafeRawBufferPointer, inPlace data: UnsafeMutableRawBufferPointer, tag: UnsafeMutableRawPointer) {
        let m = data.baseAddress ?? tag
        key.withUnsafeBytes { k in
            _ = crypto_aead_chacha20poly1305_ietf_encrypt_detached(
                m.assumingMemoryBound(to: UInt8.self), tag.assumingMemoryBound(to: UInt8.self), nil,
                m.assumingMemoryBound(to: UInt8.self), UInt64(data.count),
                aad.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(aad.count), nil,
                nonce.assumingMemoryBound(to: UInt8.self), k.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
    }

    @inline(__always)
    static func openIETF(key: Key32, nonce: UnsafeRawPointer, aad: UnsafeRawBufferPointer, inPlace data: UnsafeMutableRawBufferPointer, tag: UnsafeRawPointer) -> Bool {
        let m = data.baseAddress ?? UnsafeMutableRawPointer(mutating: tag)
        return key.withUnsafeBytes { k in
            crypto_aead_chacha20poly1305_ietf_decrypt_detached(
                m.assumingMemoryBound(to: UInt8.self), nil, m.assumingMemoryBound(to: UInt8.self), UInt64(data.count),
                tag.assumingMemoryBound(to: UInt8.self),
                aad.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(aad.count),
                nonce.assumingMemoryBound(to: UInt8.self), k.baseAddress!.assumingMemoryBound(to: UInt8.self)) == 0
        }
    }

    /// XChaCha20-Poly1305 with a 24-byte nonce (cookie replies, paper §5.4.7).
    public static func xseal(key: Key32, nonce: UnsafeRawBufferPointer, aad: UnsafeRawBufferPointer, inPlace data: UnsafeMutableRawBufferPointer, tag: UnsafeMutableRawPointer) {
        precondition(nonce.count == 24)
        let m = data.baseAddress ?? tag
        key.withUnsafeBytes { k in
            _ = crypto_aead_xchacha20poly1305_ietf_encrypt_detached(
                m.assumingMemoryBound(to: UInt8.self), tag.assumingMemoryBound(to: UInt8.self), nil,
                m.assumingMemoryBound(to: UInt8.self), UInt64(data.count),
                aad.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(aad.count), nil,
                nonce.baseAddress!.assumingMemoryBound(to: UInt8.self), k.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
    }

    public static func xopen(key: Key32, nonce: UnsafeRawBufferPointer, aad: UnsafeRawBufferPointer, inPlace data: UnsafeMutableRawBufferPointer, tag: UnsafeRawPointer) -> Bool {
        guard nonce.count == 24 else { return false }
        let m = data.baseAddress ?? UnsafeMutableRawPointer(mutating: tag)
        return key.withUnsafeBytes { k in
            crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
                m.assumingMemoryBound(to: UInt8.self), nil, m.assumingMemoryBound(to: UInt8.self), UInt64(data.count),
                tag.assumingMemoryBound(to: UInt8.self),
                aad.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(aad.count),
                nonce.baseAddress!.assumingMemoryBound(to: UInt8.self), k.baseAddress!.assumingMemoryBound(to: UInt8.self)) == 0
        }
    }

    /// Constant-time comparison of 16 bytes (MACs).
    public static func equal16(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer) -> Bool {
        sodium_memcmp(a, b, 16) == 0
    }
}
