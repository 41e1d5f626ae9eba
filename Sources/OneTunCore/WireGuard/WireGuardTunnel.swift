/// Configuration of one WireGuard tunnel: our static key and the one peer's (onetun talks to one peer).
public struct WireGuardConfig: Sendable {
    public var privateKey: Key32
    public var peerPublicKey: Key32
    /// All zeros when no preshared key is configured (paper §5.2: Q defaults to 0^32).
    public var presharedKey: Key32
    /// Seconds between keepalives sent whatever the traffic; 0 disables (wg's `persistent-keepalive`).
    public var persistentKeepaliveSeconds: UInt16
    /// The tunnel MTU; transport padding never grows a packet past it (wireguard-go `calculatePaddingSize`).
    public var mtu: Int
    /// Handshake messages per second above which we answer with cookie replies instead of doing
    /// Diffie-Hellman work (paper §5.3); `0` means always under load (for tests).
    public var handshakeLoadThreshold: Int

    public init(
        privateKey: Key32, peerPublicKey: Key32, presharedKey: Key32 = .zero,
        persistentKeepaliveSeconds: UInt16 = 0, mtu: Int = 1420, handshakeLoadThreshold: Int = 64
    ) {
        self.privateKey = privateKey
        self.peerPublicKey = peerPublicKey
        self.presharedKey = presharedKey
        self.persistentKeepaliveSeconds = persistentKeepaliveSeconds
        self.mtu = mtu
        self.handshakeLoadThreshold = handshakeLoadThreshold
    }
}

/// Why an input was dropped. Data-path drops are counted results, never thrown.
@_spi(OneTunInternals) public enum DropReason: Equatable, Sendable {
    case malformed(WireGuardWireError)
    case invalidMac1
    /// We are under load and the message had no valid mac2: a cookie reply went back instead.
    case cookieRequired
    case handshake(HandshakeFailure)
    case unknownReceiverIndex
    /// From an address other than the endpoint's, and not one of our sessions' or handshakes' messages:
    /// refused before any cryptography.
    case unknownSource
    case invalidCookieReply
    case expiredKeys
    case decryptionFailed
    case replayed
    /// The decrypted payload is not an IPv4 or IPv6 packet of a consistent length.
    case invalidInnerPacket
    /// The outgoing packet does not fit the buffer's tailroom or is larger than a datagram can be.
    case packetTooLarge
}

/// Counters for everything the tunnel did or refused.
public struct WireGuardStats: Sendable, Equatable {
    public var handshakeInitiationsSent = 0
    public var handshakeResponsesSent = 0
    public var handshakesCompleted = 0
    public var cookieRepliesSent = 0
    public var cookieRepliesReceived = 0
    public var packetsSent = 0
    public var packetsReceived = 0
    public var bytesSent = 0
    public var bytesReceived = 0
    public var keepalivesSent = 0
    public var keepalivesReceived = 0
    public var stagedDropped = 0
    public var dropped = 0
    public var droppedReplayed = 0
    public var droppedDecryption = 0
    public var droppedMalformed = 0
    public var droppedHandshake = 0
    /// Datagrams from an address other than the endpoint's that could not be ours (`.unknownSource`).
    public var droppedUnknownSource = 0
    /// Times the peer's address changed: it roamed, and its packet from the new one authenticated.
    public var endpointChanges = 0
    public init() {}
}

@_spi(OneTunInternals) public enum Encapsulated: Equatable, Sendable {
    /// The datagram to send is `buffer[0..<n]`.
    case send(Int)
    /// No usable session: the packet was copied into the bounded staging queue and a handshake started;
    /// `pollTransmit` sends it once the session exists.
    case queued
    case dropped(DropReason)
}

@_spi(OneTunInternals) public enum Decapsulated: Equatable, Sendable {
    /// A decrypted inner IP packet: `buffer[range]`, valid until the buffer is reused.
    case packet(Range<Int>)
    /// A handshake message, cookie reply or keepalive: nothing to deliver; call `pollTransmit`.
    case consumed
    case dropped(DropReason)

    var isDropped: Bool {
        if case .dropped = self { return true }
        return false
    }
}

/// Why handshakes are not completing, in the terms a user can act on.
public enum HandshakeProblem: Equatable, Sendable, CustomStringConvertible {
    /// Initiations went out and nothing came back.
    case noReply
    /// A response came back and did not decrypt (or its mac1 was wrong): a key does not match.
    case replyRefused
    /// Transport data came for a session we do not have: the peer kept a session we lost (we restarted,
    /// or our keys were wiped), or the packets are stale.
    case unknownSession
    /// The peer answered with a cookie reply: it is under load and wants proof of our address first.
    case cookieRequired
    /// The driver heard the endpoint refuse our datagrams (an ICMP port or host unreachable).
    case endpointUnreachable

    public var description: String {
        switch self {
        case .noReply: "no reply to handshake initiations"
        case .replyRefused: "the reply did not decrypt: check both public keys and the preshared key"
        case .unknownSession: "the peer sends on a session we do not have (unknown receiver index): we restarted or forgot it"
        case .cookieRequired: "cookie required: the peer is under load"
        case .endpointUnreachable: "the endpoint refused our datagrams (ICMP unreachable)"
        }
    }
}

/// What the tunnel has to tell its driver about the session, for logs and for deciding whether to take
/// new work; polled with `pollEvent`.
public enum TunnelEvent: Equatable, Sendable {
    /// A handshake completed. `rekey` when a working session was replaced on schedule; `outage` (ns) when
    /// it ended an outage: the time since the last authenticated packet before the session was lost.
    case sessionEstablished(rekey: Bool, outage: UInt64?)
    /// Data went out and nothing authenticated came back within KEEPALIVE_TIMEOUT + REKEY_TIMEOUT: the
    /// session is presumed lost and a new handshake starts (paper §6.5).
    case sessionLost
    /// The session reached REJECT_AFTER_TIME with no new handshake: nothing passes until one completes.
    /// `idle` when nothing was waiting to go: the next packet starts a handshake, and that is no outage.
    case sessionExpired(idle: Bool)
    /// The session was presumed lost, but the peer's packets authenticate on it again: it was a pause,
    /// `outage` (ns) long since the last one before it.
    case sessionResumed(outage: UInt64)
    /// Handshakes are not completing, for this reason; said again only when the reason changes.
    case handshakeFailing(HandshakeProblem)
    /// REKEY_ATTEMPT_TIME passed without a handshake: retries stop until there is something to send.
    case handshakeGaveUp
    /// The peer's packet authenticated from a new address, which is the endpoint from now on (paper §2.1).
    case endpointChanged
}

/// Opaque bytes naming where a datagram came from (address and port; empty for "unknown"). The tunnel
/// compares them with its endpoint's, and a responder under load binds its cookies to them (paper
/// §5.4.7); nothing else looks inside.
public struct EndpointAddress: Sendable, Equatable {
    var storage = InlineArray<18, UInt8>(repeating: 0)
    var count = 0

    /// The address bytes then the port's (network order): 6 for IPv4, 18 for IPv6; more is cut.
    public init(bytes: UnsafeRawBufferPointer) {
        count = min(bytes.count, 18)
        for i in 0..<count { storage[i] = bytes[i] }
    }

    public init() {}

    public static func == (a: EndpointAddress, b: EndpointAddress) -> Bool {
        guard a.count == b.count else { return false }
        for i in 0..<a.count where a.storage[i] != b.storage[i] { return false }
        return true
    }

    /// The bytes given at `init(bytes:)`.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        storage.span.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
    }
}

/// A WireGuard tunnel to one peer, sans-I/O: both handshake roles, transport, cookies and the five timers
/// of wireguard-go, driven entirely by its inputs.
///
/// Contract (the same as the core's): inputs are `encapsulate`, `decapsulate`, `initiateHandshake` and
/// `handleTimeout`, each with a monotonic `now`. After any input the driver calls `pollTransmit` until it
/// returns nil, then re-arms its timer to `nextDeadline()`. A spurious `handleTimeout` is a no-op.
/// Buffers belong to the caller; an outgoing packet sits at `buffer[headroom...]` with `tailroom` bytes
/// free behind it and is sealed in place; an incoming datagram is opened in place.
@_spi(OneTunInternals) public final class WireGuardTunnel {
    public static let headroom = TransportField.content
    public static let tailroom = 32
    /// The largest handshake or cookie message; `pollTransmit` needs at least this much or mtu + 32.
    public static let maxControlMessage = InitiationField.size

    public let config: WireGuardConfig
    /// Wall-clock nanoseconds since the Unix epoch minus the monotonic `now`, set by the driver. Only the
    /// TAI64N timestamp of initiations needs wall time: the peer refuses a timestamp older than its last.
    public var wallClockOffset: Int64 = 0
    @exclusivity(unchecked) public private(set) var stats = WireGuardStats()
    public var publicKey: Key32 { identity.publicKey }

    let identity: StaticIdentity
    let random: RandomSource

    // Keypairs (paper §6.2: current, previous, next).
    @exclusivity(unchecked) var current: Keypair?
    var previous: Keypair?
    var next: Keypair?
    var pending: PendingInitiation?

    // Responder state.
    var lastTimestamp = TAI64N.zero
    var lastInitiationConsumed: Instant?
    var cookieSecret = Key32.zero
    var cookieSecretSetAt: Instant?
    var loadWindowStart = Instant.zero
    var loadCount = 0

    /// Where the peer is: datagrams from elsewhere pass only if they could be our peer's (and then move
    /// it, once they authenticate). Empty: unknown, anyone may be the peer.
    public var endpoint = EndpointAddress()

    // What the driver is told (`pollEvent`).
    var events: [TunnelEvent] = []
    /// The last authenticated packet from the peer.
    var lastReceived: Instant?
    /// Set while the session is lost or expired: the last authenticated packet before that.
    var lostSince: Instant?
    /// What the current attempt heard (nil: nothing), and what was last reported.
    var heard: HandshakeProblem?
    /// Why handshakes are failing while no session works (none yet, or lost or expired); nil otherwise.
    public private(set) var handshakeProblem: HandshakeProblem?

    // Initiator's cookie state (paper §5.4.7).
    var receivedCookie: (UInt64, UInt64) = (0, 0)
    var receivedCookieAt: Instant?
    var lastMac1Sent: (UInt64, UInt64) = (0, 0)
    var lastMac1SenderIndex: UInt32?

    var lastSentHandshake: Instant?
    var handshakeAttempts = 0
    @exclusivity(unchecked) var needAnotherKeepalive = false
    var sentLastMinuteHandshake = false

    /// Handshake and cookie messages waiting for `pollTransmit`, each with where it goes (nil: the
    /// endpoint; a cookie reply goes to whoever sent the message it answers).
    var control: [(bytes: [UInt8], to: EndpointAddress?)] = []
    /// Where the datagram the last `pollTransmit` wrote goes: nil for the endpoint.
    public private(set) var transmitDestination: EndpointAddress?
    /// Packets waiting for a session (wireguard-go's staged queue). Empty arrays are keepalives.
    @exclusivity(unchecked) var staged: [[UInt8]] = []
    @exclusivity(unchecked) var stagedHead = 0

    /// The five timers of wireguard-go's device/timers.go, and one that notices when the current session
    /// reaches REJECT_AFTER_TIME (for the driver's log; sending already checks the age); `.max` means not
    /// armed.
    enum Timer: Int, CaseIterable {
        case retransmitHandshake, sendKeepalive, newHandshake, zeroKeyMaterial, persistentKeepalive, sessionExpiry
    }
    @exclusivity(unchecked) var deadlines = InlineArray<6, UInt64>(repeating: .max)

    public init(config: WireGuardConfig, random: RandomSource) {
        self.config = config
        self.random = random
        identity = StaticIdentity(privateKey: config.privateKey, peerPublicKey: config.peerPublicKey, presharedKey: config.presharedKey)
    }

    public var isEstablished: Bool { current != nil }

    // MARK: Timers

    @inline(__always) func isArmed(_ t: Timer) -> Bool { deadlines[t.rawValue] != .max }
    @inline(__always) func arm(_ t: Timer, _ now: Instant, after ns: UInt64) { deadlines[t.rawValue] = now.adding(ns).nanoseconds }
    @inline(__always) func disarm(_ t: Timer) { deadlines[t.rawValue] = .max }

    func jitter() -> UInt64 { random.uniform(below: WireGuardConstants.rekeyTimeoutJitterMax) }

    public func nextDeadline() -> Instant? {
        var earliest = UInt64.max
        for i in 0..<6 { earliest = min(earliest, deadlines[i]) }
        return earliest == .max ? nil : Instant(nanoseconds: earliest)
    }

    public func handleTimeout(now: Instant) {
        for t in Timer.allCases where deadlines[t.rawValue] <= now.nanoseconds {
            disarm(t)
            switch t {
            case .retransmitHandshake: expiredRetransmitHandshake(now)
            case .sendKeepalive:
                sendKeepalive(now)
                if needAnotherKeepalive {
                    needAnotherKeepalive = false
                    arm(.sendKeepalive, now, after: WireGuardConstants.keepaliveTimeout)
                }
            case .newHandshake:
                // Data went out but nothing authenticated came back for KEEPALIVE + REKEY_TIMEOUT: the
                // session may be dead on the peer's side, so start a new one (paper §6.5).
                if current != nil && lostSince == nil {
                    lostSince = lastReceived ?? now
                    emit(.sessionLost)
                }
                sendHandshakeInitiation(now, isRetry: false)
            case .zeroKeyMaterial:
                // Paper §6.3: after REJECT_AFTER_TIME × 3 with no new session, forget every key.
                current = nil
                previous = nil
                next = nil
                pending?.wipe()
                pending = nil
            case .persistentKeepalive:
                if config.persistentKeepaliveSeconds > 0 { sendKeepalive(now) }
            case .sessionExpiry:
                if let keypair = current, !keypair.canReceive(now: now) {
                    // Something waits to go (data unanswered, or staged for a handshake): an outage.
                    let idle = !isArmed(.newHandshake) && stagedHead == staged.count
                    if !idle && lostSince == nil { lostSince = lastReceived ?? keypair.created }
                    emit(.sessionExpired(idle: idle))
                }
            }
        }
    }

    func expiredRetransmitHandshake(_ now: Instant) {
        // The initiation went unanswered, or its answer failed: say why, and listen afresh for the next.
        report(heard ?? .noReply)
        heard = nil
        if handshakeAttempts > WireGuardConstants.maxTimerHandshakes {
            // REKEY_ATTEMPT_TIME is over: give up, drop what waited for this session.
            emit(.handshakeGaveUp)
            heard = nil
            stats.stagedDropped += staged.count - stagedHead
            staged.removeAll()
            stagedHead = 0
            disarm(.sendKeepalive)
            if !isArmed(.zeroKeyMaterial) { arm(.zeroKeyMaterial, now, after: WireGuardConstants.rejectAfterTime * 3) }
            return
        }
        handshakeAttempts += 1
        sendHandshakeInitiation(now, isRetry: true)
    }

    // Hooks named after wireguard-go's timers.go; "should be called after …" each event.
    @inline(__always) func timersDataSent(_ now: Instant) {
        if !isArmed(.newHandshake) {
            arm(.newHandshake, now, after: WireGuardConstants.keepaliveTimeout + WireGuardConstants.rekeyTimeout + jitter())
        }
    }

    @inline(__always) func timersDataReceived(_ now: Instant) {
        if !isArmed(.sendKeepalive) {
            arm(.sendKeepalive, now, after: WireGuardConstants.keepaliveTimeout)
        } else {
            needAnotherKeepalive = true
        }
    }

    @inline(__always) func timersAnyAuthenticatedPacketSent() { disarm(.sendKeepalive) }
    @inline(__always) func timersAnyAuthenticatedPacketReceived(_ now: Instant) {
        disarm(.newHandshake)
        lastReceived = now
    }

    @inline(__always) func timersAnyAuthenticatedPacketTraversal(_ now: Instant) {
        if config.persistentKeepaliveSeconds > 0 {
            arm(.persistentKeepalive, now, after: UInt64(config.persistentKeepaliveSeconds) * Nanos.second)
        }
    }

    func timersHandshakeComplete(_ now: Instant) {
        disarm(.retransmitHandshake)
        handshakeAttempts = 0
        stats.handshakesCompleted += 1
        let outage = lostSince.map { now.since($0) }
        let rekey = outage == nil && stats.handshakesCompleted > 1 && handshakeProblem == nil
        emit(.sessionEstablished(rekey: rekey, outage: outage))
        if outage != nil { recovered = true }
        lostSince = nil
        heard = nil
        handshakeProblem = nil
        if let keypair = current { deadlines[Timer.sessionExpiry.rawValue] = keypair.created.adding(WireGuardConstants.rejectAfterTime).nanoseconds }
    }

    /// Set when a handshake ended an outage; the core clears it after letting its connections know.
    @_spi(OneTunInternals) public var recovered = false

    /// The driver heard the endpoint refuse our datagrams (an ICMP error from it).
    public func endpointRefused() { noteProblem(.endpointUnreachable) }

    /// Something the current handshake attempt heard: said at once when there is no working session,
    /// otherwise kept for when the attempt's retransmission timer fires.
    func noteProblem(_ problem: HandshakeProblem) {
        heard = problem
        report(problem)
    }

    /// Sets `handshakeProblem`, and says so, when no session works: a rekey that fails while the current
    /// session still carries traffic is not an outage (yet).
    func report(_ problem: HandshakeProblem) {
        guard current == nil || lostSince != nil, problem != handshakeProblem else { return }
        handshakeProblem = problem
        emit(.handshakeFailing(problem))
    }

    /// Queues an event; a driver that never polls loses the oldest, never memory.
    func emit(_ event: TunnelEvent) {
        if events.count >= 16 { events.removeFirst() }
        events.append(event)
    }

    /// The next thing the driver should hear about the session; nil when there is none.
    public func pollEvent() -> TunnelEvent? {
        events.isEmpty ? nil : events.removeFirst()
    }

    func timersSessionDerived(_ now: Instant) {
        arm(.zeroKeyMaterial, now, after: WireGuardConstants.rejectAfterTime * 3)
    }

    // MARK: Handshake initiation

    public func initiateHandshake(now: Instant) { sendHandshakeInitiation(now, isRetry: false) }

    /// Starts a handshake unless one is under way (its retransmission timer armed).
    public func retryHandshake(now: Instant) {
        if !isArmed(.retransmitHandshake) { sendHandshakeInitiation(now, isRetry: false) }
    }

    func newLocalIndex() -> UInt32 {
        while true {
            let index = random.nextUInt32()
            if index != current?.localIndex && index != previous?.localIndex && index != next?.localIndex
                && index != pending?.localIndex
            {
                return index
            }
        }
    }

    func sendHandshakeInitiation(_ now: Instant, isRetry: Bool) {
        if !isRetry { handshakeAttempts = 0 }
        // At most one initiation per REKEY_TIMEOUT (paper §6.1).
        if let last = lastSentHandshake, now.since(last) < WireGuardConstants.rekeyTimeout { return }
        lastSentHandshake = now
        var message = [UInt8](repeating: 0, count: InitiationField.size)
        let wall = Int64(bitPattern: now.nanoseconds) &+ wallClockOffset
        let created = message.withUnsafeMutableBytes { m -> Bool in
            do {
                pending?.wipe()
                pending = try Noise.createInitiation(
                    m, identity: identity, localIndex: newLocalIndex(), timestamp: TAI64N(unixNanoseconds: wall),
                    random: random, now: now)
            } catch {
                return false
            }
            addMacs(m, mac1At: InitiationField.mac1, senderIndex: pending!.localIndex, now: now)
            return true
        }
        guard created else { return }
        control.append((message, nil))
        stats.handshakeInitiationsSent += 1
        timersAnyAuthenticatedPacketTraversal(now)
        timersAnyAuthenticatedPacketSent()
        arm(.retransmitHandshake, now, after: WireGuardConstants.rekeyTimeout + jitter())
    }

    /// mac1 always; mac2 when we hold a fresh cookie from the peer (paper §5.4.4).
    func addMacs(_ m: UnsafeMutableRawBufferPointer, mac1At: Int, senderIndex: UInt32, now: Instant) {
        let mac1 = UnsafeMutableRawBufferPointer(rebasing: m[mac1At..<mac1At + 16])
        identity.mac1KeyOutgoing.withUnsafeBytes { WGCrypto.mac(key: $0, UnsafeRawBufferPointer(rebasing: m[0..<mac1At]), into: mac1) }
        withUnsafeMutableBytes(of: &lastMac1Sent) { $0.copyMemory(from: UnsafeRawBufferPointer(mac1)) }
        lastMac1SenderIndex = senderIndex
        let mac2 = UnsafeMutableRawBufferPointer(rebasing: m[mac1At + 16..<mac1At + 32])
        if let at = receivedCookieAt, now.since(at) < WireGuardConstants.cookieRefreshTime {
            withUnsafeBytes(of: receivedCookie) { WGCrypto.mac(key: $0, UnsafeRawBufferPointer(rebasing: m[0..<mac1At + 16]), into: mac2) }
        } else {
            mac2.initializeMemory(as: UInt8.self, repeating: 0)
        }
    }

    // MARK: Sending

    /// Seals the IP packet at `buffer[headroom ..< headroom + packetLength]` in place when a session is
    /// usable, or stages a copy and starts a handshake when not.
    public func encapsulate(_ buffer: UnsafeMutableRawBufferPointer, packetLength: Int, now: Instant) -> Encapsulated {
        guard packetLength >= 0, buffer.count >= Self.headroom + packetLength + Self.tailroom else {
            stats.dropped += 1
            return .dropped(.packetTooLarge)
        }
        return sealOrStage(buffer, UnsafeRawBufferPointer(rebasing: buffer[Self.headroom..<Self.headroom + packetLength]), from: nil, now: now)
    }

    /// `encapsulate` for a packet kept elsewhere (a queue's slot): seals `packet[0..<packetLength]` into
    /// `buffer` after the headroom, the cipher doing the copy. `packet` must have room to pad to the MTU
    /// (`packet.count >= min(mtu, packetLength rounded up to 16)`); the padding is written there.
    public func encapsulate(
        _ buffer: UnsafeMutableRawBufferPointer, copying packet: UnsafeMutableRawBufferPointer, packetLength: Int, now: Instant
    ) -> Encapsulated {
        guard packetLength >= 0, packetLength <= packet.count, buffer.count >= Self.headroom + packetLength + Self.tailroom,
            packet.count >= min(config.mtu, (packetLength + 15) & ~15)
        else {
            stats.dropped += 1
            return .dropped(.packetTooLarge)
        }
        return sealOrStage(buffer, UnsafeRawBufferPointer(rebasing: packet[0..<packetLength]), from: packet.baseAddress, now: now)
    }

    /// Both `encapsulate`s once the sizes are checked: seals `packet` now when a session can carry it (in
    /// place when `source` is nil, else from `source`, which is `packet`'s start with room to pad), or
    /// stages a copy and starts a handshake.
    @inline(__always)
    func sealOrStage(
        _ buffer: UnsafeMutableRawBufferPointer, _ packet: UnsafeRawBufferPointer, from source: UnsafeMutableRawPointer?, now: Instant
    ) -> Encapsulated {
        if stagedHead == staged.count, let keypair = current, keypair.canSend(now: now) {
            return .send(seal(buffer, packetLength: packet.count, from: source, keypair: keypair, now: now))
        }
        stage(packet)
        sendStagedOrHandshake(now)
        return .queued
    }

    func stage(_ packet: UnsafeRawBufferPointer) {
        if staged.count - stagedHead >= WireGuardConstants.maxStagedPackets {
            // wireguard-go drops the oldest staged packet when the queue is full.
            stagedHead += 1
            stats.stagedDropped += 1
        }
        if stagedHead > 0 && stagedHead * 2 >= staged.count {
            staged.removeFirst(stagedHead)
            stagedHead = 0
        }
        staged.append(Array(packet))
    }

    /// wireguard-go `SendStagedPackets`: with no usable session, make one.
    func sendStagedOrHandshake(_ now: Instant) {
        guard let keypair = current, keypair.canSend(now: now) else {
            sendHandshakeInitiation(now, isRetry: false)
            return
        }
    }

    func sendKeepalive(_ now: Instant) {
        if stagedHead == staged.count { staged.append([]) }
        sendStagedOrHandshake(now)
    }

    /// Writes the transport header, pads, seals (paper §5.4.6): in place, or from `source` (which has room
    /// for the padding) into `buffer` after the headroom. Returns the datagram length.
    @inline(__always)
    func seal(
        _ buffer: UnsafeMutableRawBufferPointer, packetLength: Int, from source: UnsafeMutableRawPointer? = nil,
        keypair: Keypair, now: Instant
    ) -> Int {
        var padded = (packetLength + 15) & ~15
        if padded > config.mtu { padded = max(packetLength, config.mtu) }
        let base = buffer.baseAddress!
        let plaintext = source ?? base + Self.headroom
        if padded > packetLength {
            (plaintext + packetLength).initializeMemory(as: UInt8.self, repeating: 0, count: padded - packetLength)
        }
        let counter = keypair.sendCounter
        keypair.sendCounter = counter + 1
        storeLE32(WireGuardMessageType.transport.rawValue, buffer, at: 0)
        storeLE32(keypair.remoteIndex, buffer, at: TransportField.receiver)
        storeLE64(counter, buffer, at: TransportField.counter)
        if let source, padded > 0 {
            WGCrypto.seal(
                key: keypair.sendKey, counter: counter, plaintext: source, into: base + Self.headroom, count: padded,
                tag: base + Self.headroom + padded)
        } else {
            WGCrypto.seal(
                key: keypair.sendKey, counter: counter, aad: UnsafeRawBufferPointer(start: base, count: 0),
                inPlace: UnsafeMutableRawBufferPointer(start: base + Self.headroom, count: padded),
                tag: base + Self.headroom + padded)
        }
        stats.packetsSent += 1
        stats.bytesSent += packetLength
        timersAnyAuthenticatedPacketTraversal(now)
        timersAnyAuthenticatedPacketSent()
        if packetLength > 0 {
            timersDataSent(now)
        } else {
            stats.keepalivesSent += 1
        }
        // keepKeyFreshSending (paper §6.2): the initiator rekeys after REKEY_AFTER_TIME; anyone after
        // REKEY_AFTER_MESSAGES.
        if counter >= WireGuardConstants.rekeyAfterMessages
            || (keypair.isInitiator && now.since(keypair.created) >= WireGuardConstants.rekeyAfterTime)
        {
            sendHandshakeInitiation(now, isRetry: false)
        }
        return Self.headroom + padded + 16
    }

    /// The next datagram to send, written to `buffer` (at least `max(maxControlMessage, mtu + 32)` bytes):
    /// handshake and cookie messages first, then staged packets once a session can carry them.
    public func pollTransmit(into buffer: UnsafeMutableRawBufferPointer, now: Instant) -> Int? {
        transmitDestination = nil
        if !control.isEmpty {
            let (message, to) = control.removeFirst()
            message.withUnsafeBytes { buffer.copyMemory(from: $0) }
            if let to, to != endpoint { transmitDestination = to }
            return message.count
        }
        guard stagedHead < staged.count, let keypair = current, keypair.canSend(now: now) else { return nil }
        let packet = staged[stagedHead]
        guard buffer.count >= Self.headroom + packet.count + Self.tailroom else { return nil }
        staged[stagedHead] = []
        stagedHead += 1
        if stagedHead == staged.count {
            staged.removeAll(keepingCapacity: true)
            stagedHead = 0
        }
        packet.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: buffer[Self.headroom...]).copyMemory(from: $0) }
        return seal(buffer, packetLength: packet.count, keypair: keypair, now: now)
    }

    // MARK: Receiving

    /// Processes one datagram from the peer, opening transport data in place.
    public func decapsulate(
        _ buffer: UnsafeMutableRawBufferPointer, datagramLength: Int, from source: EndpointAddress, now: Instant
    ) -> Decapsulated {
        let result = open(buffer, datagramLength: datagramLength, from: source, now: now)
        if case .dropped(let reason) = result { lastDrop = reason }
        return result
    }

    /// Why the most recent datagram was dropped, for diagnostics (a wrong key shows as a handshake failure).
    @exclusivity(unchecked) public private(set) var lastDrop: DropReason?

    func open(
        _ buffer: UnsafeMutableRawBufferPointer, datagramLength: Int, from source: EndpointAddress, now: Instant
    ) -> Decapsulated {
        let bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<min(datagramLength, buffer.count)])
        let message: WireGuardMessage
        do {
            message = try WireGuardMessage(validating: bytes)
        } catch {
            stats.droppedMalformed += 1
            return drop(.malformed(error))
        }
        let fromEndpoint = endpoint.count == 0 || source == endpoint
        if !fromEndpoint && !couldBeFromPeer(message) {
            stats.droppedUnknownSource += 1
            return drop(.unknownSource)
        }
        let result: Decapsulated
        switch message.type {
        case .transport: result = receiveTransport(buffer, message, now)
        case .cookieReply: return receiveCookieReply(message, now)
        default: result = receiveHandshake(message, source, now)
        }
        if !fromEndpoint, source.count > 0, !result.isDropped {
            // It authenticated (a transport packet inside the replay window, or a handshake message):
            // the peer roamed, and we follow it (paper §2.1).
            endpoint = source
            stats.endpointChanges += 1
            emit(.endpointChanged)
        }
        return result
    }

    /// The cheap test a datagram from a stranger must pass before any cryptography: it names one of our
    /// sessions or the handshake we are waiting on. Initiations pass to their mac1 check (which needs
    /// our public key): a peer that roamed and lost its session starts again with one.
    func couldBeFromPeer(_ message: WireGuardMessage) -> Bool {
        switch message.type {
        case .transport:
            let index = message.receiverIndex
            return current?.localIndex == index || next?.localIndex == index || previous?.localIndex == index
        case .response: return pending?.localIndex == message.receiverIndex
        case .cookieReply: return lastMac1SenderIndex == message.receiverIndex
        default: return true
        }
    }

    func drop(_ reason: DropReason) -> Decapsulated {
        stats.dropped += 1
        return .dropped(reason)
    }

    func receiveTransport(_ buffer: UnsafeMutableRawBufferPointer, _ message: WireGuardMessage, _ now: Instant) -> Decapsulated {
        let index = message.receiverIndex
        let keypair: Keypair
        if let k = current, k.localIndex == index {
            keypair = k
        } else if let k = next, k.localIndex == index {
            keypair = k
        } else if let k = previous, k.localIndex == index {
            keypair = k
        } else {
            noteProblem(.unknownSession)
            return drop(.unknownReceiverIndex)
        }
        guard keypair.canReceive(now: now) else { return drop(.expiredKeys) }
        let counter = message.counter
        // A replay costs no decryption; the window itself moves only once the packet authenticates.
        guard keypair.replay.mayAccept(counter) else {
            stats.droppedReplayed += 1
            return drop(.replayed)
        }
        let length = message.bytes.count - TransportField.minimumSize
        let base = buffer.baseAddress!
        let opened = WGCrypto.open(
            key: keypair.receiveKey, counter: counter, aad: UnsafeRawBufferPointer(start: base, count: 0),
            inPlace: UnsafeMutableRawBufferPointer(start: base + TransportField.content, count: length),
            tag: base + TransportField.content + length)
        guard opened else {
            stats.droppedDecryption += 1
            return drop(.decryptionFailed)
        }
        guard keypair.replay.accept(counter) else {
            stats.droppedReplayed += 1
            return drop(.replayed)
        }
        if let since = lostSince, keypair === current {
            // The peer answers on the session we thought lost: it was only a pause.
            lostSince = nil
            heard = nil
            handshakeProblem = nil
            recovered = true
            emit(.sessionResumed(outage: now.since(since)))
        }
        // The first packet under `next` confirms the responder's new session (paper §5.4.6).
        if keypair === next {
            previous = current
            current = keypair
            next = nil
            timersHandshakeComplete(now)
        }
        // keepKeyFreshReceiving: an initiator whose keys near REJECT_AFTER_TIME rekeys once.
        if keypair.isInitiator, !sentLastMinuteHandshake,
            now.since(keypair.created) >= WireGuardConstants.rejectAfterTime - WireGuardConstants.keepaliveTimeout
                - WireGuardConstants.rekeyTimeout
        {
            sentLastMinuteHandshake = true
            sendHandshakeInitiation(now, isRetry: false)
        }
        timersAnyAuthenticatedPacketTraversal(now)
        timersAnyAuthenticatedPacketReceived(now)
        stats.packetsReceived += 1
        if length == 0 {
            stats.keepalivesReceived += 1
            return .consumed
        }
        // Strip the padding: the inner IP header says how long the packet is.
        let content = UnsafeRawBufferPointer(start: base + TransportField.content, count: length)
        let innerLength: Int
        switch content[0] >> 4 {
        case 4 where length >= 20:
            innerLength = Int(UInt16(bigEndian: content.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
        case 6 where length >= 40:
            innerLength = 40 + Int(UInt16(bigEndian: content.loadUnaligned(fromByteOffset: 4, as: UInt16.self)))
        default:
            return drop(.invalidInnerPacket)
        }
        guard innerLength <= length, innerLength > 0 else { return drop(.invalidInnerPacket) }
        stats.bytesReceived += innerLength
        timersDataReceived(now)
        return .packet(TransportField.content..<TransportField.content + innerLength)
    }

    func receiveCookieReply(_ message: WireGuardMessage, _ now: Instant) -> Decapsulated {
        // Only for the handshake message we sent last (paper §5.4.7: its mac1 is the AAD).
        guard let index = lastMac1SenderIndex, message.receiverIndex == index else { return drop(.unknownReceiverIndex) }
        var cookie: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        let ok = withUnsafeMutableBytes(of: &cookie) { c -> Bool in
            c.copyMemory(from: message.slice(CookieReplyField.encryptedCookie, 32))
            return withUnsafeBytes(of: lastMac1Sent) { aad in
                WGCrypto.xopen(
                    key: identity.cookieKeyIncoming, nonce: message.slice(CookieReplyField.nonce, 24), aad: aad,
                    inPlace: UnsafeMutableRawBufferPointer(rebasing: c[0..<16]), tag: c.baseAddress! + 16)
            }
        }
        guard ok else { return drop(.invalidCookieReply) }
        receivedCookie = (cookie.0, cookie.1)
        receivedCookieAt = now
        stats.cookieRepliesReceived += 1
        noteProblem(.cookieRequired)
        return .consumed
    }

    /// Handshake messages seen in the current one-second window decide whether we are under load.
    func underLoad(_ now: Instant) -> Bool {
        if now.since(loadWindowStart) >= Nanos.second {
            loadWindowStart = now
            loadCount = 0
        }
        loadCount += 1
        return loadCount > config.handshakeLoadThreshold
    }

    func receiveHandshake(_ message: WireGuardMessage, _ source: EndpointAddress, _ now: Instant) -> Decapsulated {
        let mac1At = message.mac1Offset!
        // mac1 proves the sender knows our public key (paper §5.4.4); checked before any DH work.
        var expected: (UInt64, UInt64) = (0, 0)
        withUnsafeMutableBytes(of: &expected) { e in
            identity.mac1KeyIncoming.withUnsafeBytes { WGCrypto.mac(key: $0, message.slice(0, mac1At), into: e) }
        }
        let mac1Valid = withUnsafeBytes(of: expected) { WGCrypto.equal16($0.baseAddress!, message.bytes.baseAddress! + mac1At) }
        guard mac1Valid else {
            if message.type == .response, pending?.localIndex == message.receiverIndex { noteProblem(.replyRefused) }
            return drop(.invalidMac1)
        }
        if underLoad(now) {
            // Under load only messages with a valid mac2 (a fresh cookie of ours) get DH work.
            let cookie = currentCookie(for: source, now)
            withUnsafeMutableBytes(of: &expected) { e in
                withUnsafeBytes(of: cookie) { WGCrypto.mac(key: $0, message.slice(0, mac1At + 16), into: e) }
            }
            let mac2Valid = withUnsafeBytes(of: expected) { WGCrypto.equal16($0.baseAddress!, message.bytes.baseAddress! + mac1At + 16) }
            if !mac2Valid {
                sendCookieReply(to: message, from: source, cookie: cookie, mac1At: mac1At)
                return drop(.cookieRequired)
            }
        }
        do {
            if message.type == .initiation {
                try receiveInitiation(message, now)
            } else {
                try receiveResponse(message, now)
            }
            return .consumed
        } catch {
            stats.droppedHandshake += 1
            if message.type == .response, error != .unexpectedResponse { noteProblem(.replyRefused) }
            return drop(.handshake(error))
        }
    }

    /// Paper §5.4.7: cookie = MAC(R_m, source address), R_m a secret changing every two minutes.
    func currentCookie(for source: EndpointAddress, _ now: Instant) -> (UInt64, UInt64) {
        if cookieSecretSetAt == nil || now.since(cookieSecretSetAt!) >= WireGuardConstants.cookieRefreshTime {
            cookieSecret.withUnsafeMutableBytes { random.fill($0) }
            cookieSecretSetAt = now
        }
        var cookie: (UInt64, UInt64) = (0, 0)
        withUnsafeMutableBytes(of: &cookie) { c in
            cookieSecret.withUnsafeBytes { key in source.withUnsafeBytes { WGCrypto.mac(key: key, $0, into: c) } }
        }
        return cookie
    }

    func sendCookieReply(to message: WireGuardMessage, from source: EndpointAddress, cookie: (UInt64, UInt64), mac1At: Int) {
        var reply = [UInt8](repeating: 0, count: CookieReplyField.size)
        reply.withUnsafeMutableBytes { m in
            storeLE32(WireGuardMessageType.cookieReply.rawValue, m, at: 0)
            storeLE32(message.senderIndex, m, at: CookieReplyField.receiver)
            let nonce = UnsafeMutableRawBufferPointer(rebasing: m[CookieReplyField.nonce..<CookieReplyField.nonce + 24])
            random.fill(nonce)
            let sealed = UnsafeMutableRawBufferPointer(rebasing: m[CookieReplyField.encryptedCookie..<CookieReplyField.encryptedCookie + 16])
            withUnsafeBytes(of: cookie) { sealed.copyMemory(from: $0) }
            WGCrypto.xseal(
                key: identity.cookieKeyOutgoing, nonce: UnsafeRawBufferPointer(nonce), aad: message.slice(mac1At, 16),
                inPlace: sealed, tag: m.baseAddress! + CookieReplyField.encryptedCookie + 16)
        }
        control.append((reply, source))
        stats.cookieRepliesSent += 1
    }

    func receiveInitiation(_ message: WireGuardMessage, _ now: Instant) throws(HandshakeFailure) {
        let (consumed, timestamp) = try Noise.consumeInitiation(message, identity: identity)
        // Replay protection: the timestamp must grow (paper §5.1), and initiations come at most 50/s.
        guard lastTimestamp < timestamp else { throw .replayedTimestamp }
        if let last = lastInitiationConsumed, now.since(last) < WireGuardConstants.handshakeInitiationRate {
            throw .initiationFlood
        }
        lastTimestamp = timestamp
        lastInitiationConsumed = now
        timersAnyAuthenticatedPacketTraversal(now)
        timersAnyAuthenticatedPacketReceived(now)

        var response = [UInt8](repeating: 0, count: ResponseField.size)
        let localIndex = newLocalIndex()
        let created = response.withUnsafeMutableBytes { m -> Result<SessionKeys, HandshakeFailure> in
            do throws(HandshakeFailure) {
                let keys = try Noise.createResponse(m, to: consumed, identity: identity, localIndex: localIndex, random: random)
                addMacs(m, mac1At: ResponseField.mac1, senderIndex: localIndex, now: now)
                return .success(keys)
            } catch {
                return .failure(error)
            }
        }
        let keys = try created.get()
        control.append((response, nil))
        stats.handshakeResponsesSent += 1
        beginSession(keys, isInitiator: false, now)
        timersSessionDerived(now)
        timersAnyAuthenticatedPacketTraversal(now)
        timersAnyAuthenticatedPacketSent()
    }

    func receiveResponse(_ message: WireGuardMessage, _ now: Instant) throws(HandshakeFailure) {
        guard var initiation = pending, initiation.localIndex == message.receiverIndex else { throw .unexpectedResponse }
        let keys = try Noise.consumeResponse(message, pending: initiation, identity: identity)
        initiation.wipe()
        pending = nil
        timersAnyAuthenticatedPacketTraversal(now)
        timersAnyAuthenticatedPacketReceived(now)
        beginSession(keys, isInitiator: true, now)
        timersSessionDerived(now)
        timersHandshakeComplete(now)
        // The responder may use the session only once it hears from us (paper §5.4.6): confirm it now.
        sendKeepalive(now)
    }

    /// Installs new transport keys (wireguard-go `BeginSymmetricSession`).
    func beginSession(_ keys: SessionKeys, isInitiator: Bool, _ now: Instant) {
        let keypair = Keypair(
            sendKey: keys.send, receiveKey: keys.receive, created: now, isInitiator: isInitiator,
            localIndex: keys.localIndex, remoteIndex: keys.remoteIndex)
        if isInitiator {
            if let n = next {
                next = nil
                previous = n
            } else {
                previous = current
            }
            current = keypair
        } else {
            // Unconfirmed until the initiator's first transport message arrives.
            next = keypair
            previous = nil
        }
        sentLastMinuteHandshake = false
    }
}
