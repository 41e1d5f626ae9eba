import CSodium

/// libsodium must be initialised once: `sodium_init` seeds its RNG and picks the fastest ChaCha20, Poly1305
/// and X25519 code for this CPU. A global `let` is initialised lazily, once, thread-safely; after that a read
/// costs one predicate check, so every function that reaches libsodium touches it through `requireSodium()`.
let sodiumInitialised: Bool = sodium_init() >= 0

@inline(__always)
func requireSodium() { precondition(sodiumInitialised, "libsodium failed to initialise") }

/// The primitives of the WireGuard paper §5.4: HASH, MAC, HMAC, KDF_n, DH and AEAD/XAEAD.
/// All of them work on caller-owned memory and allocate nothing.
@_spi(OneTunInternals) public enum WGCrypto {
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

    /// HMAC(key, data) with BLAKE2s-256 (RFC 2104, block size B = 64): the 32-byte key is zero padded to one
    /// block, HMAC = H((K ^ opad) || H((K ^ ipad) || data)).
    public static func hmac(key: Key32, _ data: UnsafeRawBufferPointer) -> Key32 {
        var pad = (key, Key32.zero)
        var inner = Key32.zero
        var out = Key32.zero
        withUnsafeMutableBytes(of: &pad) { block in
            for i in 0..<64 { block[i] ^= 0x36 }
            var state = Blake2s()
            state.update(UnsafeRawBufferPointer(block))
            state.update(data)
            inner.withUnsafeMutableBytes { state.finalize(into: $0) }
            // ipad ^ opad turns K ^ ipad into K ^ opad without a second copy of the key.
            for i in 0..<64 { block[i] ^= 0x36 ^ 0x5c }
            state = Blake2s()
            state.update(UnsafeRawBufferPointer(block))
            inner.withUnsafeBytes { state.update($0) }
            out.withUnsafeMutableBytes { state.finalize(into: $0) }
            sodium_memzero(block.baseAddress, 64)
        }
        inner.wipe()
        return out
    }

    /// KDF_n(key, input) (paper §5.4): τ0 = HMAC(key, input), τ1 = HMAC(τ0, 0x1),
    /// τi = HMAC(τ0, τ(i-1) || i); returns τ1...τn. τ0 is wiped.
    public static func kdf1(key: Key32, input: UnsafeRawBufferPointer) -> Key32 { kdf(key, input, 1).0 }

    public static func kdf2(key: Key32, input: UnsafeRawBufferPointer) -> (Key32, Key32) {
        let r = kdf(key, input, 2)
        return (r.0, r.1)
    }

    public static func kdf3(key: Key32, input: UnsafeRawBufferPointer) -> (Key32, Key32, Key32) { kdf(key, input, 3) }

    /// The outputs past `n` are zero.
    @inline(__always)
    private static func kdf(_ key: Key32, _ input: UnsafeRawBufferPointer, _ n: Int) -> (Key32, Key32, Key32) {
        // τ0 = HMAC(key, input)
        var t0 = hmac(key: key, input)
        defer { t0.wipe() }
        // τ1 = HMAC(τ0, 0x1)
        var one: UInt8 = 1
        let t1 = withUnsafeBytes(of: &one) { hmac(key: t0, $0) }
        guard n >= 2 else { return (t1, .zero, .zero) }
        // τ2 = HMAC(τ0, τ1 || 0x2): the tuple's first 33 bytes are exactly τ1 || 2.
        var chain = (t1, UInt8(2))
        defer { chain.0.wipe() }
        let t2 = withUnsafeBytes(of: &chain) { hmac(key: t0, UnsafeRawBufferPointer(rebasing: $0[0..<33])) }
        guard n >= 3 else { return (t1, t2, .zero) }
        // τ3 = HMAC(τ0, τ2 || 0x3)
        chain = (t2, 3)
        let t3 = withUnsafeBytes(of: &chain) { hmac(key: t0, UnsafeRawBufferPointer(rebasing: $0[0..<33])) }
        return (t1, t2, t3)
    }

    // MARK: X25519 (RFC 7748)

    /// DH-PUBKEY(private) (paper §5.4): the private key times the base point.
    public static func x25519PublicKey(privateKey: Key32) -> Key32 {
        requireSodium()
        var out = Key32.zero
        out.withUnsafeMutableBytes { o in
            privateKey.withUnsafeBytes { k in
                _ = crypto_scalarmult_curve25519_base(o.baseAddress!.assumingMemoryBound(to: UInt8.self), k.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        return out
    }

    /// DH(private, public) (paper §5.4); nil when libsodium refuses the point or the result is all zeros
    /// (a low-order public key), which the handshake must refuse.
    public static func x25519(privateKey: Key32, publicKey: Key32) -> Key32? {
        requireSodium()
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

    /// DH-GENERATE() (paper §5.4): 32 random bytes clamped as RFC 7748 §5 describes (as `wg genkey` does).
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
    //
    // All four work in place with a detached 16-byte tag, which libsodium's `_detached` calls allow (c == m):
    // the packet buffer is encrypted where it lies (wireguard-go's offset trick, STYLE.md §4). Opening
    // verifies the tag before it decrypts, so unauthenticated plaintext is never released; but on failure
    // libsodium zeroes `data` (the ciphertext is gone), so a caller that wants a second try with another
    // key must open a copy.

    /// AEAD(key, counter, data, aad): ChaCha20-Poly1305 with WireGuard's nonce, 32 zero bits followed by
    /// the 64-bit counter little-endian (paper §5.4). Writes 16 bytes at `tag`.
    public static func seal(
        key: Key32, counter: UInt64, aad: UnsafeRawBufferPointer,
        inPlace data: UnsafeMutableRawBufferPointer, tag: UnsafeMutableRawPointer
    ) {
        var nonce = wireGuardNonce(counter)
        withUnsafeBytes(of: &nonce) { sealIETF(key: key, nonce: $0.baseAddress!, aad: aad, inPlace: data, tag: tag) }
    }

    /// `seal` from one place to another: encrypts `count` bytes at `plaintext` into `ciphertext` (which
    /// must not overlap it, or be it exactly), the copy done by the cipher itself.
    public static func seal(
        key: Key32, counter: UInt64, plaintext: UnsafeRawPointer, into ciphertext: UnsafeMutableRawPointer, count: Int,
        tag: UnsafeMutableRawPointer
    ) {
        var nonce = wireGuardNonce(counter)
        withUnsafeBytes(of: &nonce) {
            sealIETF(
                key: key, nonce: $0.baseAddress!, aad: UnsafeRawBufferPointer(start: nil, count: 0), plaintext: plaintext,
                into: ciphertext, count: count, tag: tag)
        }
    }

    /// The inverse of `seal`; false when the tag does not verify.
    public static func open(
        key: Key32, counter: UInt64, aad: UnsafeRawBufferPointer,
        inPlace data: UnsafeMutableRawBufferPointer, tag: UnsafeRawPointer
    ) -> Bool {
        var nonce = wireGuardNonce(counter)
        return withUnsafeBytes(of: &nonce) { openIETF(key: key, nonce: $0.baseAddress!, aad: aad, inPlace: data, tag: tag) }
    }

    /// 0x00000000 || LE64(counter) as three 32-bit words (a (UInt32, UInt64) tuple would be padded to 16).
    @inline(__always)
    private static func wireGuardNonce(_ counter: UInt64) -> (UInt32, UInt32, UInt32) {
        (0, UInt32(truncatingIfNeeded: counter).littleEndian, UInt32(truncatingIfNeeded: counter >> 32).littleEndian)
    }

    /// ChaCha20-Poly1305 IETF with an arbitrary 12-byte nonce at `nonce` (`seal` uses it; the tests reach
    /// RFC 8439 §2.8.2's vector, whose nonce is not a WireGuard counter, through it).
    @inline(__always)
    static func sealIETF(
        key: Key32, nonce: UnsafeRawPointer, aad: UnsafeRawBufferPointer,
        inPlace data: UnsafeMutableRawBufferPointer, tag: UnsafeMutableRawPointer
    ) {
        // An empty message (a keepalive) may have no base address; libsodium touches no message bytes then.
        let m = data.baseAddress ?? tag
        sealIETF(key: key, nonce: nonce, aad: aad, plaintext: m, into: m, count: data.count, tag: tag)
    }

    /// The one call to libsodium's encryption: `count` bytes at `plaintext` into `ciphertext`, the same
    /// place or one that does not overlap it.
    @inline(__always)
    static func sealIETF(
        key: Key32, nonce: UnsafeRawPointer, aad: UnsafeRawBufferPointer, plaintext: UnsafeRawPointer,
        into ciphertext: UnsafeMutableRawPointer, count: Int, tag: UnsafeMutableRawPointer
    ) {
        requireSodium()
        key.withUnsafeBytes { k in
            _ = crypto_aead_chacha20poly1305_ietf_encrypt_detached(
                ciphertext.assumingMemoryBound(to: UInt8.self), tag.assumingMemoryBound(to: UInt8.self), nil,
                plaintext.assumingMemoryBound(to: UInt8.self), UInt64(count),
                aad.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(aad.count), nil,
                nonce.assumingMemoryBound(to: UInt8.self), k.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
    }

    @inline(__always)
    static func openIETF(
        key: Key32, nonce: UnsafeRawPointer, aad: UnsafeRawBufferPointer,
        inPlace data: UnsafeMutableRawBufferPointer, tag: UnsafeRawPointer
    ) -> Bool {
        requireSodium()
        let m = (data.baseAddress ?? UnsafeMutableRawPointer(mutating: tag)).assumingMemoryBound(to: UInt8.self)
        return key.withUnsafeBytes { k in
            crypto_aead_chacha20poly1305_ietf_decrypt_detached(
                m, nil, m, UInt64(data.count), tag.assumingMemoryBound(to: UInt8.self),
                aad.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(aad.count),
                nonce.assumingMemoryBound(to: UInt8.self), k.baseAddress!.assumingMemoryBound(to: UInt8.self)) == 0
        }
    }

    /// XAEAD(key, nonce, data, aad): XChaCha20-Poly1305 with a 24-byte random nonce (cookie replies,
    /// paper §5.4.7). `nonce.count` must be 24.
    public static func xseal(
        key: Key32, nonce: UnsafeRawBufferPointer, aad: UnsafeRawBufferPointer,
        inPlace data: UnsafeMutableRawBufferPointer, tag: UnsafeMutableRawPointer
    ) {
        precondition(nonce.count == 24, "XChaCha20-Poly1305 needs a 24-byte nonce")
        requireSodium()
        let m = (data.baseAddress ?? tag).assumingMemoryBound(to: UInt8.self)
        key.withUnsafeBytes { k in
            _ = crypto_aead_xchacha20poly1305_ietf_encrypt_detached(
                m, tag.assumingMemoryBound(to: UInt8.self), nil, m, UInt64(data.count),
                aad.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(aad.count), nil,
                nonce.baseAddress!.assumingMemoryBound(to: UInt8.self), k.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
    }

    /// The inverse of `xseal`; false when the tag does not verify or the nonce is not 24 bytes (the
    /// nonce comes off the wire).
    public static func xopen(
        key: Key32, nonce: UnsafeRawBufferPointer, aad: UnsafeRawBufferPointer,
        inPlace data: UnsafeMutableRawBufferPointer, tag: UnsafeRawPointer
    ) -> Bool {
        guard nonce.count == 24 else { return false }
        requireSodium()
        let m = (data.baseAddress ?? UnsafeMutableRawPointer(mutating: tag)).assumingMemoryBound(to: UInt8.self)
        return key.withUnsafeBytes { k in
            crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
                m, nil, m, UInt64(data.count), tag.assumingMemoryBound(to: UInt8.self),
                aad.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(aad.count),
                nonce.baseAddress!.assumingMemoryBound(to: UInt8.self), k.baseAddress!.assumingMemoryBound(to: UInt8.self)) == 0
        }
    }

    /// Constant-time comparison of 16 bytes (MACs, paper §5.4.4).
    public static func equal16(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer) -> Bool {
        sodium_memcmp(a, b, 16) == 0
    }
}
