/// Our static identity and what derives from it alone, computed once per device: the private key, and
/// the keys that check what any peer sends us. A class so the secret lives in one place and is wiped when
/// the device goes away.
final class LocalIdentity {
    var privateKey: Key32
    let publicKey: Key32
    /// HASH(LABEL_MAC1 || S_pub_ours): keys mac1 on messages we receive (paper §5.4.4).
    let mac1KeyIncoming: Key32
    /// HASH(LABEL_COOKIE || S_pub_ours): seals cookie replies we send (paper §5.4.7).
    let cookieKeyOutgoing: Key32
    /// HASH(HASH(CONSTRUCTION) || IDENTIFIER) mixed with our static key: where a responder's hash starts.
    let initialHashToUs: Key32
    static let initialChainingKey: Key32 = WireGuardLabels.construction.withUnsafeBytes { WGCrypto.hash($0) }
    static let initialHash: Key32 = WireGuardLabels.identifier.withUnsafeBytes {
        WGCrypto.hash(initialChainingKey, $0)
    }

    init(privateKey: Key32) {
        self.privateKey = privateKey
        publicKey = WGCrypto.x25519PublicKey(privateKey: privateKey)
        mac1KeyIncoming = labelled(WireGuardLabels.mac1, publicKey)
        cookieKeyOutgoing = labelled(WireGuardLabels.cookie, publicKey)
        initialHashToUs = publicKey.withUnsafeBytes { WGCrypto.hash(Self.initialHash, $0) }
    }

    deinit { privateKey.wipe() }
}

/// What derives from one peer's static key (and ours), computed once when the peer is added.
final class PeerIdentity {
    let publicKey: Key32
    var presharedKey: Key32
    /// DH(S_priv, S_pub_peer), the same for every handshake with this peer (wireguard-go
    /// `precomputedStaticStatic`); nil for a degenerate (low-order) peer key, with which no handshake works.
    var staticStatic: Key32?
    /// HASH(LABEL_MAC1 || S_pub_peer): keys mac1 on messages we send (paper §5.4.4).
    let mac1KeyOutgoing: Key32
    /// HASH(LABEL_COOKIE || S_pub_peer): opens cookie replies the peer sends us (paper §5.4.7).
    let cookieKeyIncoming: Key32
    /// HASH(HASH(CONSTRUCTION) || IDENTIFIER) mixed with the peer's static key: where an initiator's hash starts.
    let initialHashToPeer: Key32

    init(publicKey: Key32, presharedKey: Key32, local: LocalIdentity) {
        self.publicKey = publicKey
        self.presharedKey = presharedKey
        staticStatic = WGCrypto.x25519(privateKey: local.privateKey, publicKey: publicKey)
        mac1KeyOutgoing = labelled(WireGuardLabels.mac1, publicKey)
        cookieKeyIncoming = labelled(WireGuardLabels.cookie, publicKey)
        initialHashToPeer = publicKey.withUnsafeBytes { WGCrypto.hash(LocalIdentity.initialHash, $0) }
    }

    deinit {
        presharedKey.wipe()
        staticStatic?.wipe()
    }
}

/// HASH(label || key): the mac1 and cookie keys (paper §5.4.4, §5.4.7).
private func labelled(_ label: [UInt8], _ key: Key32) -> Key32 {
    label.withUnsafeBytes { l in key.withUnsafeBytes { k in WGCrypto.hash(l, k) } }
}

/// A TAI64N timestamp (paper §5.4.2): 8 bytes of seconds with the 2^62 label (and TAI's 10 s offset,
/// as wireguard-go writes it), 4 bytes of nanoseconds, big-endian so byte order is time order.
struct TAI64N: Comparable {
    var seconds: UInt64
    var nanoseconds: UInt32

    static let zero = TAI64N(seconds: 0, nanoseconds: 0)

    /// From wall-clock nanoseconds since the Unix epoch. The nanoseconds are rounded down to 2^24 ns
    /// (~16.8 ms) so the timestamp does not leak fine timing (wireguard-go's whitening).
    init(unixNanoseconds: Int64) {
        let clamped = UInt64(max(unixNanoseconds, 0))
        seconds = 0x4000_0000_0000_000a &+ clamped / Nanos.second
        nanoseconds = UInt32(clamped % Nanos.second) & ~UInt32(0xff_ffff)
    }

    init(seconds: UInt64, nanoseconds: UInt32) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }

    init(_ bytes: UnsafeRawBufferPointer) {
        seconds = UInt64(bigEndian: bytes.loadUnaligned(as: UInt64.self))
        nanoseconds = UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
    }

    func write(_ out: UnsafeMutableRawBufferPointer) {
        out.storeBytes(of: seconds.bigEndian, toByteOffset: 0, as: UInt64.self)
        out.storeBytes(of: nanoseconds.bigEndian, toByteOffset: 8, as: UInt32.self)
    }

    static func < (a: TAI64N, b: TAI64N) -> Bool {
        (a.seconds, a.nanoseconds) < (b.seconds, b.nanoseconds)
    }
}

/// Why a handshake message was refused after it passed the length and mac1 checks.
@_spi(OneTunInternals) public enum HandshakeFailure: Error, Equatable, Sendable {
    case decryptionFailed
    case unknownStaticKey
    case replayedTimestamp
    case initiationFlood
    case unexpectedResponse
    case degenerateKey
}

/// What the responder knows after the first half of an initiation, before it knows the peer: who sent
/// it (the static key it decrypted with our private key) and the state to finish it with that peer's keys
/// (wireguard-go's `ConsumeMessageInitiation` up to its peer lookup).
struct InitiationHalf {
    var hash: Key32
    var chainingKey: Key32
    var remoteEphemeral: Key32
    var initiatorStatic: Key32

    mutating func wipe() {
        hash.wipe()
        chainingKey.wipe()
    }
}

/// What the responder keeps between consuming an initiation and writing its response.
struct ConsumedInitiation {
    var hash: Key32
    var chainingKey: Key32
    var remoteEphemeral: Key32
    var remoteIndex: UInt32
}

/// What the initiator keeps between sending an initiation and consuming the response.
struct PendingInitiation {
    var hash: Key32
    var chainingKey: Key32
    var ephemeralPrivate: Key32
    var localIndex: UInt32
    var sentAt: Instant

    mutating func wipe() {
        hash.wipe()
        chainingKey.wipe()
        ephemeralPrivate.wipe()
    }
}

/// Transport keys derived at the end of a handshake (paper §5.4.5).
struct SessionKeys {
    var send: Key32
    var receive: Key32
    var localIndex: UInt32
    var remoteIndex: UInt32
}

/// Noise_IKpsk2 (paper §5.4), both roles, written line by line against the paper's pseudo-code.
/// It fills the bodies of handshake messages; the peer adds the macs and decides when to send. Our side's
/// keys come from the device's `LocalIdentity`, the other side's from the peer's `PeerIdentity`.
enum Noise {
    /// Writes an initiation's fields up to mac1 (paper §5.4.2).
    static func createInitiation(
        _ m: UnsafeMutableRawBufferPointer, local: LocalIdentity, peer: PeerIdentity, localIndex: UInt32,
        timestamp: TAI64N, random: RandomSource, now: Instant
    ) throws(HandshakeFailure) -> PendingInitiation {
        guard let staticStatic = peer.staticStatic else { throw .degenerateKey }
        // msg.message_type = 1; msg.reserved_zero = { 0, 0, 0 }; msg.sender_index = little_endian(initiator.sender_index)
        storeLE32(WireGuardMessageType.initiation.rawValue, m, at: 0)
        storeLE32(localIndex, m, at: InitiationField.sender)
        // initiator.chaining_key = HASH(CONSTRUCTION)
        var ck = LocalIdentity.initialChainingKey
        // initiator.hash = HASH(HASH(initiator.chaining_key || IDENTIFIER) || responder.static_public)
        var h = peer.initialHashToPeer
        // initiator.ephemeral_private = DH_GENERATE()
        var ephemeral = WGCrypto.generatePrivateKey(using: random)
        // msg.unencrypted_ephemeral = DH_PUBKEY(initiator.ephemeral_private)
        let ephemeralPublic = WGCrypto.x25519PublicKey(privateKey: ephemeral)
        ephemeralPublic.withUnsafeBytes { m.baseAddress!.advanced(by: InitiationField.ephemeral).copyMemory(from: $0.baseAddress!, byteCount: 32) }
        // initiator.hash = HASH(initiator.hash || msg.unencrypted_ephemeral)
        h = ephemeralPublic.withUnsafeBytes { WGCrypto.hash(h, $0) }
        // temp = HMAC(initiator.chaining_key, msg.unencrypted_ephemeral); initiator.chaining_key = HMAC(temp, 0x1)
        ck = ephemeralPublic.withUnsafeBytes { WGCrypto.kdf1(key: ck, input: $0) }
        // temp = HMAC(initiator.chaining_key, DH(initiator.ephemeral_private, responder.static_public))
        guard var es = WGCrypto.x25519(privateKey: ephemeral, publicKey: peer.publicKey) else {
            ephemeral.wipe()
            throw .degenerateKey
        }
        var key: Key32
        (ck, key) = es.withUnsafeBytes { WGCrypto.kdf2(key: ck, input: $0) }
        es.wipe()
        // msg.encrypted_static = AEAD(key, 0, initiator.static_public, initiator.hash)
        let staticField = UnsafeMutableRawBufferPointer(rebasing: m[InitiationField.encryptedStatic..<InitiationField.encryptedStatic + 32])
        local.publicKey.withUnsafeBytes { staticField.copyMemory(from: $0) }
        h.withUnsafeBytes { aad in
            WGCrypto.seal(key: key, counter: 0, aad: aad, inPlace: staticField, tag: m.baseAddress! + InitiationField.encryptedStatic + 32)
        }
        // initiator.hash = HASH(initiator.hash || msg.encrypted_static)
        h = WGCrypto.hash(h, UnsafeRawBufferPointer(rebasing: m[InitiationField.encryptedStatic..<InitiationField.encryptedStatic + 48]))
        // temp = HMAC(initiator.chaining_key, DH(initiator.static_private, responder.static_public))
        (ck, key) = staticStatic.withUnsafeBytes { WGCrypto.kdf2(key: ck, input: $0) }
        // msg.encrypted_timestamp = AEAD(key, 0, TAI64N(), initiator.hash)
        let timestampField = UnsafeMutableRawBufferPointer(rebasing: m[InitiationField.encryptedTimestamp..<InitiationField.encryptedTimestamp + 12])
        timestamp.write(timestampField)
        h.withUnsafeBytes { aad in
            WGCrypto.seal(key: key, counter: 0, aad: aad, inPlace: timestampField, tag: m.baseAddress! + InitiationField.encryptedTimestamp + 12)
        }
        key.wipe()
        // initiator.hash = HASH(initiator.hash || msg.encrypted_timestamp)
        h = WGCrypto.hash(h, UnsafeRawBufferPointer(rebasing: m[InitiationField.encryptedTimestamp..<InitiationField.encryptedTimestamp + 28]))
        return PendingInitiation(hash: h, chainingKey: ck, ephemeralPrivate: ephemeral, localIndex: localIndex, sentAt: now)
    }

    /// Reads the first half of an initiation as the responder (paper §5.4.2, the responder's side), up to
    /// the initiator's static key: enough to know which peer sent it. Costs one Diffie-Hellman.
    static func openInitiationStatic(_ msg: WireGuardMessage, local: LocalIdentity) throws(HandshakeFailure) -> InitiationHalf {
        var ck = LocalIdentity.initialChainingKey
        var h = local.initialHashToUs
        let ephemeral = Key32(msg.slice(InitiationField.ephemeral, 32))
        // responder.hash = HASH(responder.hash || msg.unencrypted_ephemeral); chaining_key = KDF1(ck, ephemeral)
        h = ephemeral.withUnsafeBytes { WGCrypto.hash(h, $0) }
        ck = ephemeral.withUnsafeBytes { WGCrypto.kdf1(key: ck, input: $0) }
        // temp = HMAC(chaining_key, DH(responder.static_private, msg.unencrypted_ephemeral))
        guard var es = WGCrypto.x25519(privateKey: local.privateKey, publicKey: ephemeral) else { throw .degenerateKey }
        var key: Key32
        (ck, key) = es.withUnsafeBytes { WGCrypto.kdf2(key: ck, input: $0) }
        es.wipe()
        defer { key.wipe() }
        // initiator.static_public = AEAD_OPEN(key, 0, msg.encrypted_static, responder.hash)
        var initiatorStatic = Key32.zero
        let opened = initiatorStatic.withUnsafeMutableBytes { out -> Bool in
            out.copyMemory(from: msg.slice(InitiationField.encryptedStatic, 32))
            return h.withUnsafeBytes { aad in
                WGCrypto.open(key: key, counter: 0, aad: aad, inPlace: out, tag: msg.bytes.baseAddress! + InitiationField.encryptedStatic + 32)
            }
        }
        guard opened else { throw .decryptionFailed }
        // responder.hash = HASH(responder.hash || msg.encrypted_static)
        h = WGCrypto.hash(h, msg.slice(InitiationField.encryptedStatic, 48))
        return InitiationHalf(hash: h, chainingKey: ck, remoteEphemeral: ephemeral, initiatorStatic: initiatorStatic)
    }

    /// The second half, once the device found the peer whose static key the first half revealed: returns
    /// the state the response needs and the initiation's timestamp (the peer checks it against the last).
    static func finishInitiation(
        _ msg: WireGuardMessage, _ half: InitiationHalf, peer: PeerIdentity
    ) throws(HandshakeFailure) -> (ConsumedInitiation, TAI64N) {
        guard let staticStatic = peer.staticStatic else { throw .degenerateKey }
        var ck = half.chainingKey
        var h = half.hash
        var key: Key32
        // temp = HMAC(chaining_key, DH(responder.static_private, initiator.static_public))
        (ck, key) = staticStatic.withUnsafeBytes { WGCrypto.kdf2(key: ck, input: $0) }
        // timestamp = AEAD_OPEN(key, 0, msg.encrypted_timestamp, responder.hash)
        var scratch: (UInt64, UInt64) = (0, 0)
        var timestamp = TAI64N.zero
        let openedTimestamp = withUnsafeMutableBytes(of: &scratch) { s -> Bool in
            let out = UnsafeMutableRawBufferPointer(rebasing: s[0..<12])
            out.copyMemory(from: msg.slice(InitiationField.encryptedTimestamp, 12))
            let ok = h.withUnsafeBytes { aad in
                WGCrypto.open(key: key, counter: 0, aad: aad, inPlace: out, tag: msg.bytes.baseAddress! + InitiationField.encryptedTimestamp + 12)
            }
            if ok { timestamp = TAI64N(UnsafeRawBufferPointer(out)) }
            return ok
        }
        key.wipe()
        guard openedTimestamp else {
            ck.wipe()
            throw .decryptionFailed
        }
        // responder.hash = HASH(responder.hash || msg.encrypted_timestamp)
        h = WGCrypto.hash(h, msg.slice(InitiationField.encryptedTimestamp, 28))
        return (ConsumedInitiation(hash: h, chainingKey: ck, remoteEphemeral: half.remoteEphemeral, remoteIndex: msg.senderIndex), timestamp)
    }

    /// Writes a response's fields up to mac1 and derives the responder's transport keys (paper §5.4.3, §5.4.5).
    static func createResponse(
        _ m: UnsafeMutableRawBufferPointer, to initiation: ConsumedInitiation, peer: PeerIdentity,
        localIndex: UInt32, random: RandomSource
    ) throws(HandshakeFailure) -> SessionKeys {
        var ck = initiation.chainingKey
        var h = initiation.hash
        // msg.message_type = 2; msg.sender_index; msg.receiver_index = initiator's sender index
        storeLE32(WireGuardMessageType.response.rawValue, m, at: 0)
        storeLE32(localIndex, m, at: ResponseField.sender)
        storeLE32(initiation.remoteIndex, m, at: ResponseField.receiver)
        // responder.ephemeral_private = DH_GENERATE(); msg.unencrypted_ephemeral = DH_PUBKEY(...)
        var ephemeral = WGCrypto.generatePrivateKey(using: random)
        defer { ephemeral.wipe() }
        let ephemeralPublic = WGCrypto.x25519PublicKey(privateKey: ephemeral)
        ephemeralPublic.withUnsafeBytes { m.baseAddress!.advanced(by: ResponseField.ephemeral).copyMemory(from: $0.baseAddress!, byteCount: 32) }
        // responder.hash = HASH(responder.hash || msg.unencrypted_ephemeral); chaining_key = KDF1(ck, ephemeral)
        h = ephemeralPublic.withUnsafeBytes { WGCrypto.hash(h, $0) }
        ck = ephemeralPublic.withUnsafeBytes { WGCrypto.kdf1(key: ck, input: $0) }
        // chaining_key = KDF1(ck, DH(responder.ephemeral_private, initiator.ephemeral_public))
        guard var ee = WGCrypto.x25519(privateKey: ephemeral, publicKey: initiation.remoteEphemeral) else { throw .degenerateKey }
        ck = ee.withUnsafeBytes { WGCrypto.kdf1(key: ck, input: $0) }
        ee.wipe()
        // chaining_key = KDF1(ck, DH(responder.ephemeral_private, initiator.static_public))
        guard var se = WGCrypto.x25519(privateKey: ephemeral, publicKey: peer.publicKey) else { throw .degenerateKey }
        ck = se.withUnsafeBytes { WGCrypto.kdf1(key: ck, input: $0) }
        se.wipe()
        // (chaining_key, temp2, key) = KDF3(chaining_key, preshared_key); responder.hash = HASH(hash || temp2)
        var (ck3, tau, key) = peer.presharedKey.withUnsafeBytes { WGCrypto.kdf3(key: ck, input: $0) }
        ck = ck3
        h = tau.withUnsafeBytes { WGCrypto.hash(h, $0) }
        tau.wipe()
        // msg.encrypted_nothing = AEAD(key, 0, ε, responder.hash)
        h.withUnsafeBytes { aad in
            WGCrypto.seal(key: key, counter: 0, aad: aad, inPlace: UnsafeMutableRawBufferPointer(start: m.baseAddress! + ResponseField.encryptedNothing, count: 0),
                          tag: m.baseAddress! + ResponseField.encryptedNothing)
        }
        key.wipe()
        // (T_recv_r, T_send_r) = KDF2(chaining_key, ε): the initiator's send key is our receive key.
        let (first, second) = WGCrypto.kdf2(key: ck, input: UnsafeRawBufferPointer(start: nil, count: 0))
        ck.wipe()
        return SessionKeys(send: second, receive: first, localIndex: localIndex, remoteIndex: initiation.remoteIndex)
    }

    /// Reads a response as the initiator (paper §5.4.3) and derives its transport keys.
    static func consumeResponse(
        _ msg: WireGuardMessage, pending: PendingInitiation, local: LocalIdentity, peer: PeerIdentity
    ) throws(HandshakeFailure) -> SessionKeys {
        var ck = pending.chainingKey
        var h = pending.hash
        let ephemeral = Key32(msg.slice(ResponseField.ephemeral, 32))
        h = ephemeral.withUnsafeBytes { WGCrypto.hash(h, $0) }
        ck = ephemeral.withUnsafeBytes { WGCrypto.kdf1(key: ck, input: $0) }
        // chaining_key = KDF1(ck, DH(initiator.ephemeral_private, responder.ephemeral_public))
        guard var ee = WGCrypto.x25519(privateKey: pending.ephemeralPrivate, publicKey: ephemeral) else { throw .degenerateKey }
        ck = ee.withUnsafeBytes { WGCrypto.kdf1(key: ck, input: $0) }
        ee.wipe()
        // chaining_key = KDF1(ck, DH(initiator.static_private, responder.ephemeral_public))
        guard var se = WGCrypto.x25519(privateKey: local.privateKey, publicKey: ephemeral) else { throw .degenerateKey }
        ck = se.withUnsafeBytes { WGCrypto.kdf1(key: ck, input: $0) }
        se.wipe()
        var (ck3, tau, key) = peer.presharedKey.withUnsafeBytes { WGCrypto.kdf3(key: ck, input: $0) }
        ck = ck3
        h = tau.withUnsafeBytes { WGCrypto.hash(h, $0) }
        tau.wipe()
        // AEAD_OPEN(key, 0, msg.encrypted_nothing, hash) must authenticate
        let ok = h.withUnsafeBytes { aad in
            WGCrypto.open(key: key, counter: 0, aad: aad, inPlace: UnsafeMutableRawBufferPointer(start: nil, count: 0),
                          tag: msg.bytes.baseAddress! + ResponseField.encryptedNothing)
        }
        key.wipe()
        guard ok else { throw .decryptionFailed }
        // (T_send_i, T_recv_i) = KDF2(chaining_key, ε)
        let (first, second) = WGCrypto.kdf2(key: ck, input: UnsafeRawBufferPointer(start: nil, count: 0))
        ck.wipe()
        return SessionKeys(send: first, receive: second, localIndex: pending.localIndex, remoteIndex: msg.senderIndex)
    }
}
