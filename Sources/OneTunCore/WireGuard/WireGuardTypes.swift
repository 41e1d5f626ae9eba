/// Configuration of a WireGuard tunnel to one peer: our static key and the peer's, which carries every
/// address (allowed IPs `0.0.0.0/0` and `::/0`) from wherever the driver says it is. A device with several
/// peers is configured with ``PeerConfig``s instead.
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
    /// Diffie-Hellman work (paper §5.3); `0` means always under load (for tests). The default, 512, is
    /// wireguard-go's mark (an eighth of its handshake queue) and a quarter of a core's worth of
    /// handshakes here: a hub whose hundred peers all call at once after a restart answers every one
    /// of them at once instead of sending most a cookie and a five-second wait.
    public var handshakeLoadThreshold: Int

    public init(
        privateKey: Key32, peerPublicKey: Key32, presharedKey: Key32 = .zero,
        persistentKeepaliveSeconds: UInt16 = 0, mtu: Int = 1420, handshakeLoadThreshold: Int = 512
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
    /// No peer's allowed IPs hold the outgoing packet's destination (cryptokey routing, paper §2).
    case noRoute
    /// The decrypted packet's source is not among the sending peer's allowed IPs (paper §2: a peer may
    /// only speak for the addresses it is allowed).
    case sourceNotAllowed
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
    /// Initiations that decrypted to a static key of no peer of ours (no state kept for them).
    public var droppedUnknownPeer = 0
    /// Outgoing packets for a destination no peer's allowed IPs hold.
    public var droppedNoRoute = 0
    /// Decrypted packets whose source the sending peer is not allowed.
    public var droppedSourceNotAllowed = 0
    public init() {}

    /// Adds every counter of `other` (a device's totals are its own counters and its peers').
    public mutating func add(_ other: WireGuardStats) {
        handshakeInitiationsSent += other.handshakeInitiationsSent
        handshakeResponsesSent += other.handshakeResponsesSent
        handshakesCompleted += other.handshakesCompleted
        cookieRepliesSent += other.cookieRepliesSent
        cookieRepliesReceived += other.cookieRepliesReceived
        packetsSent += other.packetsSent
        packetsReceived += other.packetsReceived
        bytesSent += other.bytesSent
        bytesReceived += other.bytesReceived
        keepalivesSent += other.keepalivesSent
        keepalivesReceived += other.keepalivesReceived
        stagedDropped += other.stagedDropped
        dropped += other.dropped
        droppedReplayed += other.droppedReplayed
        droppedDecryption += other.droppedDecryption
        droppedMalformed += other.droppedMalformed
        droppedHandshake += other.droppedHandshake
        droppedUnknownSource += other.droppedUnknownSource
        endpointChanges += other.endpointChanges
        droppedUnknownPeer += other.droppedUnknownPeer
        droppedNoRoute += other.droppedNoRoute
        droppedSourceNotAllowed += other.droppedSourceNotAllowed
    }
}

@_spi(OneTunInternals) public enum Encapsulated: Equatable, Sendable {
    /// The datagram to send is `buffer[0..<n]`.
    case send(Int)
    /// No usable session: the packet was copied into the peer's bounded staging queue and a handshake
    /// started (unless the peer has no known endpoint: then it waits for the peer to contact us);
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

/// What the tunnel has to tell its driver about a peer's session, for logs and for deciding whether to
/// take new work; polled with `pollEvent` (or with the peer's key, `pollPeerEvent`).
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

/// A session event and the peer it is about.
public struct PeerEvent: Sendable, Equatable {
    /// The peer's static public key.
    public var publicKey: Key32
    public var event: TunnelEvent

    public init(publicKey: Key32, event: TunnelEvent) {
        self.publicKey = publicKey
        self.event = event
    }
}

/// Opaque bytes naming where a datagram came from or goes (address and port). The tunnel compares them
/// with its peers' endpoints, and a responder under load binds its cookies to them (paper §5.4.7);
/// nothing else looks inside. Empty bytes name "the driver's endpoint": a driver that gives the core no
/// addresses sends every datagram to its one peer.
public struct EndpointAddress: Sendable, Hashable {
    var storage = InlineArray<18, UInt8>(repeating: 0)
    var count = 0

    /// The address bytes then the port's (network order): 6 for IPv4, 18 for IPv6; more is cut.
    public init(bytes: UnsafeRawBufferPointer) {
        count = min(bytes.count, 18)
        for i in 0..<count { storage[i] = bytes[i] }
    }

    public init() {}

    /// No bytes: the driver's endpoint.
    public var isEmpty: Bool { count == 0 }

    public static func == (a: EndpointAddress, b: EndpointAddress) -> Bool {
        guard a.count == b.count else { return false }
        for i in 0..<a.count where a.storage[i] != b.storage[i] { return false }
        return true
    }

    public func hash(into hasher: inout Hasher) {
        withUnsafeBytes { hasher.combine(bytes: $0) }
        hasher.combine(count)
    }

    /// The bytes given at `init(bytes:)`.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        storage.span.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
    }
}


/// One peer of a device with several: its key, the addresses it carries, where it is.
public struct PeerConfig: Sendable, Equatable {
    public var publicKey: Key32
    /// All zeros when no preshared key is configured (paper §5.2: Q defaults to 0^32).
    public var presharedKey: Key32
    /// The addresses the peer carries (cryptokey routing, paper §2): an outgoing packet goes to the peer
    /// whose prefix holding its destination is the longest, and a packet from the peer is accepted only
    /// from a source for which the peer is that one. When two peers list the same prefix, the one added
    /// later takes it (as `wg set` does).
    public var allowedIPs: [IPPrefix]
    /// Where the peer is; nil when unknown (a peer that will contact us: we cannot send to it, nor start
    /// a handshake, until it does). An empty `EndpointAddress` is the driver's endpoint (one-peer drivers
    /// that never name an address). Either way the endpoint then follows the source of the peer's latest
    /// authenticated packet (paper §2.1).
    public var endpoint: EndpointAddress?
    /// Seconds between keepalives sent whatever the traffic; 0 disables (wg's `persistent-keepalive`).
    public var persistentKeepaliveSeconds: UInt16

    public init(
        publicKey: Key32, presharedKey: Key32 = .zero, allowedIPs: [IPPrefix], endpoint: EndpointAddress? = nil,
        persistentKeepaliveSeconds: UInt16 = 0
    ) {
        self.publicKey = publicKey
        self.presharedKey = presharedKey
        self.allowedIPs = allowedIPs
        self.endpoint = endpoint
        self.persistentKeepaliveSeconds = persistentKeepaliveSeconds
    }

    /// The one peer of a `WireGuardConfig`: every address, at the driver's endpoint.
    public init(_ config: WireGuardConfig) {
        self.init(
            publicKey: config.peerPublicKey, presharedKey: config.presharedKey, allowedIPs: PeerConfig.everything,
            endpoint: EndpointAddress(), persistentKeepaliveSeconds: config.persistentKeepaliveSeconds)
    }

    /// `0.0.0.0/0` and `::/0`.
    public static let everything = [
        IPPrefix(address: .v4(IPv4Address(rawValue: 0)), length: 0), IPPrefix(address: .v6(IPv6Address(high: 0, low: 0)), length: 0),
    ]
}

/// A peer as the device sees it now (wg show's view): where it is, when it last completed a handshake,
/// what it carried.
public struct PeerStatus: Sendable, Equatable {
    public var publicKey: Key32
    /// Its current endpoint: as configured, or the source of its latest authenticated packet; nil while unknown.
    public var endpoint: EndpointAddress?
    /// The prefixes it holds now, sorted (a prefix a later peer took is no longer among them).
    public var allowedIPs: [IPPrefix]
    public var persistentKeepaliveSeconds: UInt16
    /// The `now` of its latest completed handshake; nil if none completed.
    public var lastHandshake: Instant?
    /// True while a session with it is up.
    public var isEstablished: Bool
    /// Why handshakes with it are failing while no session works; nil otherwise.
    public var handshakeProblem: HandshakeProblem?
    /// While its session is lost (nothing authenticated came back for Keepalive-Timeout + Rekey-Timeout
    /// after data went out) or expired with traffic waiting: the `now` of its last authenticated packet
    /// before that. nil while sessions work, and after an idle expiry.
    public var outageSince: Instant?
    /// Its counters: bytes and packets each way, handshakes, keepalives, its drops.
    public var stats: WireGuardStats
}
