/// What a `TunnelCore` needs: our static key and the peers (one, or several routed by their allowed IPs),
/// the virtual addresses it speaks from, TCP settings.
public struct TunnelCoreConfig: Sendable {
    /// Our static private key.
    public var privateKey: Key32
    /// The peers, in order: the one-peer conveniences of `TunnelCore` (`endpoint`, `handshakeProblem`, …)
    /// speak of the first. When two list the same prefix, the later one takes it.
    public var peers: [PeerConfig]
    /// The tunnel MTU; transport padding never grows a packet past it.
    public var mtu: Int
    /// Handshake messages per second above which we answer with cookie replies instead of doing
    /// Diffie-Hellman work (paper §5.3); `0` means always under load (for tests). The default, 512, is
    /// wireguard-go's mark (an eighth of its handshake queue) and a quarter of a core's worth of
    /// handshakes here: a hub whose hundred peers all call at once after a restart answers every one
    /// of them at once instead of sending most a cookie and a five-second wait.
    public var handshakeLoadThreshold: Int
    /// The source peer IPs (one IPv4 and/or one IPv6); outgoing connections use the one of the
    /// destination's family.
    public var addresses: [IPAddress]
    public var tcp: TCPConfig
    /// A UDP forward's virtual port (and a driver's remote UDP flow) idle this long is let go.
    public var udpIdleTimeout: UInt64
    /// DNS servers (port 53) that `TunnelCore.resolve(name:now:)` asks through the tunnel, in order; those
    /// of a family we have no address of are left out. Empty (the default): no resolver.
    public var dnsServers: [IPAddress] = []
    /// The resolver's time-outs, cache and bounds.
    public var dnsOptions = DNSResolverOptions()

    /// One peer carrying every address (`0.0.0.0/0`, `::/0`), at the endpoint the driver sets.
    public init(
        wireGuard: WireGuardConfig, addresses: [IPAddress], tcp: TCPConfig = TCPConfig(), udpIdleTimeout: UInt64 = 60 * Nanos.second
    ) {
        self.init(
            privateKey: wireGuard.privateKey, peers: [PeerConfig(wireGuard)], addresses: addresses, mtu: wireGuard.mtu,
            handshakeLoadThreshold: wireGuard.handshakeLoadThreshold, tcp: tcp, udpIdleTimeout: udpIdleTimeout)
    }

    /// Several peers, each carrying its allowed IPs.
    public init(
        privateKey: Key32, peers: [PeerConfig], addresses: [IPAddress], mtu: Int = 1420, handshakeLoadThreshold: Int = 512,
        tcp: TCPConfig = TCPConfig(), udpIdleTimeout: UInt64 = 60 * Nanos.second
    ) {
        self.privateKey = privateKey
        self.peers = peers
        self.mtu = mtu
        self.handshakeLoadThreshold = handshakeLoadThreshold
        self.addresses = addresses
        self.udpIdleTimeout = udpIdleTimeout
        var tcp = tcp
        // MSS from the tunnel MTU: IPv4 (20) + TCP (20) headers; the stack takes 20 more off for IPv6. A
        // jumbo MTU gets jumbo segments; an MSS set below the default stays as set.
        let fromMTU = max(mtu - 40, 536)
        tcp.mss = tcp.mss == TCPConfig().mss ? fromMTU : min(tcp.mss, fromMTU)
        self.tcp = tcp
    }

    /// The first peer as a one-peer configuration (what `init(wireGuard:…)` was given).
    public var wireGuard: WireGuardConfig {
        let first = peers.first
        return WireGuardConfig(
            privateKey: privateKey, peerPublicKey: first?.publicKey ?? .zero, presharedKey: first?.presharedKey ?? .zero,
            persistentKeepaliveSeconds: first?.persistentKeepaliveSeconds ?? 0, mtu: mtu, handshakeLoadThreshold: handshakeLoadThreshold)
    }
}

/// The sans-I/O core of the forwarder: a WireGuard device (one peer, or several routed by their allowed
/// IPs) carrying a user-space IP interface with a TCP stack and a UDP port pool. It opens no socket, reads
/// no clock and starts no thread; a driver feeds it and drains it. See the article "Driving the core".
///
/// Methods come in four kinds (the shape of quinn-proto's `Connection`):
/// - **Inputs**, each with `now`: `handleDatagram` (a UDP datagram and the address it came from) and
///   `handleTimeout` (the deadline from `nextDeadline` has passed; early or spurious calls are cheap no-ops).
/// - **Commands** from the application: `start`, `retryHandshake`, `endpoint` (set it to where the first
///   peer is, before `start` and whenever a name resolves anew), `endpointRefused`, `addPeer`, `removePeer`,
///   `setEndpoint(_:forPeer:)`, `connect`, `listen`/`accept`, `sendDatagram`, `resolve(name:now:)` and
///   `cancelResolution`; on a
///   `TCPConnection`: `send` or `sendRegion` + `commitSend`, `consume`, `close` (half-close), `abort`;
///   each queues the connection's output itself (`touched(id)` remains, and is never needed).
///   `release(id)` when the application is done with it.
/// - **Outputs**: `pollDatagram`, `pollEvent`, `pollResolution` and `pollTunnelEvent` (or
///   `pollPeerEvent`), then `pollTransmit`, then `nextDeadline`.
/// - **Getters**: `connection(_:)`, `stats`, `peers`, `peer(_:)`, `isEstablished` and `handshakeProblem`
///   (the first peer's), `handshakeProblem(for:)`, `hasRoute(to:)`, `lastDropDescription`, `udpPorts`.
///
/// **Order.** After each input or batch of commands: call `pollDatagram` until nil, `pollEvent` until
/// nil and `pollResolution` until nil, acting on each (acting may issue commands, and a `resolve` may
/// have its outcome at once: poll again); `pollTunnelEvent` until nil (for logs); then
/// `pollTransmit` until nil, sending each datagram to `transmitDestination`; then arm one timer for
/// `nextDeadline()`.
///
/// **Peers and routing.** Each peer carries its allowed IPs (cryptokey routing, WireGuard paper §2): a
/// packet goes to the peer whose prefix holding its destination is the longest (a `/24` inside another
/// peer's `/16` goes to the `/24`'s peer); a packet with no such peer is dropped and counted
/// (`stats.wireGuard.droppedNoRoute`), and `connect` to such a destination returns nil at once (as does
/// `sendDatagram`, false), so a driver can refuse its client immediately. A packet from a peer whose
/// source that peer is not allowed is dropped and counted (`droppedSourceNotAllowed`). Handshakes start
/// per peer at its first packet; `start` starts them with the only peer of a one-peer core and with every
/// peer that has a persistent keepalive and an endpoint. A peer whose endpoint is unknown (configured
/// nil) is a responder only: its packets wait, staged and bounded, until it contacts us; no initiation
/// goes to it, and no handshake problem is said for it.
///
/// **Endpoints.** `pollTransmit` sets `transmitDestination` to where its datagram goes: the peer's
/// endpoint, or, for a cookie reply, the address of the message it answers. An empty destination is the
/// driver's own endpoint (a one-peer core whose driver never named an address). Datagrams from an address
/// that is no peer's endpoint are refused before any cryptography unless they name one of our sessions or
/// handshakes, or are handshake initiations, which get the mac1 check every initiation gets (and
/// Diffie-Hellman work only with a valid mac1, as in WireGuard). Once such a datagram authenticates, its
/// peer has roamed: `handleDatagram` returns true and that peer's endpoint is its address from then on
/// (`endpoint` for the first peer, `peer(_:)` for any). A peer without an endpoint learns one that way.
///
/// **Events.** `pollEvent` returns the id of every connection that a segment or a timer touched since
/// the last call, once each: it became established, readable, writable again (acknowledged data freed send
/// space), half-closed by the peer (`isReadClosed`), or ended (`hasEnded`; `error` says why when it was not
/// an orderly close). The application inspects the connection; an event may carry no visible change.
/// Released ids are never returned; ids are reused after release. `pollTunnelEvent` and `pollPeerEvent`
/// drain one queue of session events; the latter says which peer each is about.
///
/// **Names.** With `dnsServers` configured, `resolve(name:now:)` asks them through the tunnel (a
/// `DNSResolver`: A and AAAA as our addresses allow, retries and failover, TCP after a truncated answer,
/// a cache) and returns a token; its outcome, even a cached one, comes out of `pollResolution`. The
/// queries go from random UDP ports that no UDP mapping holds and, over TCP, on connections of the core's
/// own: their answers never come out of `pollDatagram`, their connections never out of `pollEvent`.
///
/// **Time.** `now` is a monotonic clock in nanoseconds chosen by the driver, never going backwards.
/// TAI64N timestamps in handshakes also need the wall clock: set `wallClockOffset` (wall-clock ns since
/// 1970 minus `now`) before `start`.
///
/// **Buffers.** `handleDatagram` decrypts in place in the caller's buffer (any size that holds the
/// datagram) and is done with it on return. `pollTransmit` writes one datagram at the start of the
/// caller's buffer, which must hold at least `minimumTransmitBuffer(mtu:)` bytes; `sendDatagram` copies
/// the payload (once: it is later sealed from the core's queue straight into that buffer). The payload
/// `pollDatagram` returns stays valid until the next `pollDatagram` (it may be passed to `sendDatagram`);
/// the views returned by `readable()` and `sendRegion()` until the next call on that connection or the
/// core. The core keeps no pointer the caller passed.
public final class TunnelCore {
    public let config: TunnelCoreConfig
    @_spi(OneTunInternals) public let device: WireGuardDevice
    @_spi(OneTunInternals) public let interface: NetworkInterface
    @_spi(OneTunInternals) public let tcp: TCPStack

    /// Outgoing inner packets that the tunnel could not send (no route, or over the MTU).
    @exclusivity(unchecked) public private(set) var packetsDropped = 0
    /// UDP datagrams dropped: too large for the MTU on the way out, or a full queue either way.
    @exclusivity(unchecked) public private(set) var datagramsDropped = 0

    /// Sees every inner IP packet, in (decrypted, before the interface) and out (before sealing): the
    /// hook for packet capture. It must not keep the bytes.
    public var packetTap: ((_ packet: UnsafeRawBufferPointer, _ outbound: Bool) -> Void)?

    /// Virtual source ports for UDP forwards (onetun's pool: 1000–60999, `udpIdleTimeout` idle (60 s),
    /// 100 per client IP).
    public let udpPorts: UDPPortPool

    /// Inbound UDP datagrams (payloads) waiting for `pollDatagram`, and outbound IP packets waiting for
    /// `pollTransmit`; both bounded, both allocated once at first use. Each way a datagram is copied once:
    /// in, from the opened packet into `udpIn` (the driver sends from the slot); out, from the driver's
    /// buffer into `udpOut`, whence it is sealed straight into the transmit buffer.
    @exclusivity(unchecked) var udpIn: PacketQueue<(source: UDPEndpoint, destination: UDPEndpoint)>
    /// The front of `udpIn` was handed out by `pollDatagram` and is freed by the next one.
    @exclusivity(unchecked) var udpInHandedOut = false
    @exclusivity(unchecked) var udpOut: PacketQueue<Void>
    static let udpQueueSlots = 512
    /// The stub resolver and its TCP streams (DNS/TunnelCore+DNS.swift); nil without `dnsServers`.
    let dns: TunnelDNS?

    public init(config: TunnelCoreConfig, random: RandomSource) {
        self.config = config
        device = WireGuardDevice(
            privateKey: config.privateKey, mtu: config.mtu, handshakeLoadThreshold: config.handshakeLoadThreshold, random: random)
        for peer in config.peers { device.insertPeer(peer) }
        interface = NetworkInterface(addresses: config.addresses, mtu: config.mtu)
        tcp = TCPStack(config: config.tcp, random: random)
        interface.tcp = tcp
        interface.hasUDP = true
        // Every packet the interface sees was opened by the WireGuard session, whose tag authenticates it.
        interface.trustsTransportChecksums = true
        udpPorts = UDPPortPool(idleTimeout: config.udpIdleTimeout, random: random)
        let nobody = UDPEndpoint(address: config.addresses[0], port: 0)
        udpIn = PacketQueue(slotSize: config.mtu, capacity: Self.udpQueueSlots, blank: (nobody, nobody))
        udpOut = PacketQueue(slotSize: config.mtu, capacity: Self.udpQueueSlots)
        dns = TunnelDNS(config: config, random: random, udpPorts: udpPorts)
    }

    deinit {
        udpIn.deallocate()
        udpOut.deallocate()
    }

    public static func minimumTransmitBuffer(mtu: Int) -> Int {
        WireGuardDevice.headroom + mtu + WireGuardDevice.tailroom + 32
    }

    /// Starts the WireGuard handshakes: with the only peer of a one-peer core, and with every peer that
    /// has a persistent keepalive and an endpoint (each other peer's starts when its first packet is sent).
    public func start(now: Instant) { device.start(now: now) }

    /// Starts a handshake with the first peer unless one is under way: for a driver that refuses work
    /// while `handshakeProblem` is set, so that the tunnel still tries (at most one initiation per 5 s).
    public func retryHandshake(now: Instant) {
        device.retryHandshake(now: now)
    }

    /// Where the first peer is (opaque bytes the driver derives from its socket address; empty when
    /// unknown); see "Endpoints".
    public var endpoint: EndpointAddress {
        get { device.endpoint }
        set { device.endpoint = newValue }
    }

    /// Moves the peer with `publicKey` to `endpoint` (its name resolved anew, say); false when there is no
    /// such peer.
    @discardableResult
    public func setEndpoint(_ endpoint: EndpointAddress, forPeer publicKey: Key32) -> Bool {
        guard let peer = device.peer(for: publicKey) else { return false }
        device.setEndpoint(endpoint, of: peer)
        return true
    }

    /// The driver heard the first peer's endpoint refuse our datagrams (an ICMP unreachable error from it).
    public func endpointRefused() { device.endpointRefused() }

    /// The driver heard `address` refuse our datagrams: the peer there (if one is) hears of it.
    public func endpointRefused(by address: EndpointAddress) {
        if let peer = device.byEndpoint[address].flatMap({ device.slots[$0] }) { peer.endpointRefused() }
    }

    /// Why handshakes with the first peer are failing, while no session works; nil otherwise. A driver may
    /// refuse new clients at once while it is set, rather than let them wait for a time-out.
    public var handshakeProblem: HandshakeProblem? { device.handshakeProblem }

    /// Why handshakes with the peer that `destination` routes to are failing; nil when they are not, or no
    /// peer carries it.
    public func handshakeProblem(for destination: IPAddress) -> HandshakeProblem? {
        device.route(destination)?.handshakeProblem
    }

    /// `retryHandshake` for the peer that carries `destination` (none: nothing happens).
    public func retryHandshake(for destination: IPAddress, now: Instant) {
        device.route(destination)?.retryHandshake(now: now)
    }

    /// Why handshakes with the peer with `publicKey` are failing; nil when they are not, or there is no
    /// such peer.
    public func handshakeProblem(ofPeer publicKey: Key32) -> HandshakeProblem? {
        device.peer(for: publicKey)?.handshakeProblem
    }

    /// `retryHandshake` for the peer with `publicKey` (its endpoint moved, say).
    public func retryHandshake(forPeer publicKey: Key32, now: Instant) {
        device.peer(for: publicKey)?.retryHandshake(now: now)
    }

    /// Whether the peer that `destination` routes to has no endpoint yet: it has none configured and
    /// has not called us, so nothing can reach it until it does. False when no peer carries it.
    public func awaitsCall(for destination: IPAddress) -> Bool {
        guard let peer = device.route(destination) else { return false }
        return peer.endpoint == nil
    }

    /// Whether some peer's allowed IPs hold `destination`.
    public func hasRoute(to destination: IPAddress) -> Bool { device.route(destination) != nil }

    /// The next session event (established, lost, expired, handshake failing, …), for logs.
    public func pollTunnelEvent() -> TunnelEvent? { device.pollEvent() }

    /// The next session event with the peer it is about (the same queue as `pollTunnelEvent`).
    public func pollPeerEvent() -> PeerEvent? { device.pollPeerEvent() }

    /// Where the datagram the last `pollTransmit` wrote goes: its peer's endpoint, or the source of the
    /// message a cookie reply answers. Empty: the driver's endpoint (a one-peer core whose driver never
    /// named an address).
    public var transmitDestination: EndpointAddress { device.transmitDestination }

    /// Wall-clock nanoseconds since 1970 minus the driver's `now`, for the TAI64N timestamps of
    /// handshakes; set it before `start`.
    public var wallClockOffset: Int64 {
        get { device.wallClockOffset }
        set { device.wallClockOffset = newValue }
    }

    /// True while a WireGuard session with the first peer is up.
    public var isEstablished: Bool { device.isEstablished }

    /// Why the most recent datagram was refused, for diagnostics; nil if none was.
    public var lastDropDescription: String? { device.lastDrop.map { "\($0)" } }

    // MARK: Peers

    /// Adds a peer (its prefixes taken from any peer that held them); false when a peer with its key is
    /// already there or the key is our own. After `start`, a peer with a persistent keepalive and an
    /// endpoint starts its handshake now.
    @discardableResult
    public func addPeer(_ config: PeerConfig, now: Instant) -> Bool {
        device.addPeer(config, now: now) != nil
    }

    /// Removes the peer with `publicKey`: its sessions end and its prefixes route nowhere (connections
    /// through it then time out); false when there is none.
    @discardableResult
    public func removePeer(_ publicKey: Key32) -> Bool { device.removePeer(publicKey) }

    /// Every peer as it is now, in the order added: its endpoint as seen, last handshake, counters.
    public var peers: [PeerStatus] { device.peers.map { device.status(of: $0) } }

    /// The peer with `publicKey` as it is now; nil when there is none.
    public func peer(_ publicKey: Key32) -> PeerStatus? {
        device.peer(for: publicKey).map { device.status(of: $0) }
    }

    /// How many peers there are.
    public var peerCount: Int { device.peers.count }

    /// Counters for logs and monitoring.
    public struct Stats: Sendable, Equatable {
        public var wireGuard: WireGuardStats
        /// Inner packets received that were malformed, had a bad IPv4 header or ICMP checksum (TCP and UDP
        /// checksums are trusted, the session authenticated the packet, but a zero UDP checksum over IPv6 is
        /// refused), were fragments, were not for
        /// us, or used an unsupported protocol.
        public var packetsRefused: Int
        /// Outgoing inner packets the tunnel could not send.
        public var packetsDropped: Int
        /// UDP datagrams dropped (over the MTU, or a full queue).
        public var datagramsDropped: Int
        /// RSTs sent for segments of unknown connections.
        public var resetsSent: Int
        public var tcpConnections: Int
        public var udpMappings: Int
    }

    public var stats: Stats {
        let i = interface.stats
        return Stats(
            wireGuard: device.stats,
            packetsRefused: i.droppedMalformed + i.droppedBadChecksum + i.droppedFragments + i.droppedNotForUs + i.droppedUnsupported,
            packetsDropped: packetsDropped, datagramsDropped: datagramsDropped, resetsSent: i.resetsSent,
            tcpConnections: tcp.count, udpMappings: udpPorts.count)
    }

    // MARK: Inputs

    /// A datagram from `source`, `length` bytes at the start of `buffer`, opened in place. True when it
    /// authenticated from an address other than its peer's endpoint: the peer roamed there (or, without
    /// an endpoint, was found there), and its datagrams go to `source` from now on.
    @discardableResult
    public func handleDatagram(
        _ buffer: UnsafeMutableRawBufferPointer, length: Int, from source: EndpointAddress = EndpointAddress(), now: Instant
    ) -> Bool {
        let roams = device.endpointChanges
        switch device.decapsulate(buffer, datagramLength: length, from: source, now: now) {
        case .packet(let range):
            let packet = UnsafeRawBufferPointer(rebasing: buffer[range])
            packetTap?(packet, false)
            if case .udp(let arrival) = interface.receive(packet: packet, now: now), !interceptDNS(packet, arrival, now: now) {
                queueInbound(packet, arrival)
            }
        case .consumed, .dropped:
            break
        }
        serviceDNS(now: now)
        if device.recovered {
            // The path is back: connections whose retransmissions backed off during the outage go now,
            // not at their next backed-off timer.
            device.recovered = false
            tcp.pathRecovered(now: now)
        }
        return device.endpointChanges != roams
    }

    public func handleTimeout(now: Instant) {
        device.handleTimeout(now: now)
        interface.handleTimeout(now: now)
        udpPorts.expire(now: now)
        dns?.resolver.handleTimeout(now: now)
        serviceDNS(now: now)
    }

    // MARK: UDP

    /// A UDP datagram that came through the tunnel: who sent it, to which of our ports, and its payload,
    /// a view into the core's queue valid until the next `pollDatagram`.
    public struct Datagram {
        public var source: UDPEndpoint
        public var destination: UDPEndpoint
        public var payload: UnsafeRawBufferPointer
    }

    /// The interface checked the datagram (its lengths; the checksum is trusted, as the session
    /// authenticated the packet) and says where its payload is: one copy,
    /// into the inbound queue.
    func queueInbound(_ packet: UnsafeRawBufferPointer, _ arrival: NetworkInterface.UDPArrival) {
        guard let slot = udpIn.reserve(), arrival.payloadLength <= slot.count else {
            datagramsDropped += 1
            return
        }
        let start = arrival.payloadOffset
        slot.copyMemory(from: UnsafeRawBufferPointer(rebasing: packet[start..<(start + arrival.payloadLength)]))
        udpIn.commit(arrival.payloadLength, tag: (arrival.source, arrival.destination))
    }

    /// The next UDP datagram that arrived through the tunnel for one of our addresses; nil when none is
    /// waiting. Its payload is not copied out: it stays valid until the next `pollDatagram`, which frees
    /// its slot (other calls, `sendDatagram` with this payload included, leave it alone).
    public func pollDatagram() -> Datagram? {
        if udpInHandedOut {
            udpIn.removeFront()
            udpInHandedOut = false
        }
        guard let (slot, length, tag) = udpIn.front() else { return nil }
        udpInHandedOut = true
        return Datagram(source: tag.source, destination: tag.destination, payload: UnsafeRawBufferPointer(rebasing: slot[0..<length]))
    }

    /// Sends `payload` through the tunnel from `sourcePort` of our address of `destination`'s family.
    /// False, counted in `datagramsDropped`, when the packet would exceed the MTU (UDP is not fragmented
    /// here), the send queue is full, we have no address of that family, or no peer carries `destination`.
    @discardableResult
    public func sendDatagram(from sourcePort: UInt16, to destination: UDPEndpoint, payload: UnsafeRawBufferPointer) -> Bool {
        guard let source = config.addresses.first(where: { $0.isV4 == destination.address.isV4 }),
            device.allowedIPs.lookup(destination.address) >= 0
        else {
            datagramsDropped += 1
            return false
        }
        let builder = PacketBuilder(
            source: source, destination: destination.address,
            transport: .udp(UDPRepr(sourcePort: sourcePort, destinationPort: destination.port)))
        guard builder.headerLength + payload.count <= config.mtu, let slot = udpOut.reserve() else {
            datagramsDropped += 1
            return false
        }
        let n = builder.emit(into: slot, at: 0, copying: payload)
        udpOut.commit(n)
        return true
    }

    // MARK: Commands

    /// Opens a TCP connection through the tunnel to `address`:`port` from the source address of the same
    /// family; nil at once when there is none, no peer's allowed IPs hold `address` (`hasRoute(to:)` tells
    /// which), or no local port is free.
    public func connect(to address: IPAddress, port: UInt16, now: Instant) -> Int? {
        guard let source = config.addresses.first(where: { $0.isV4 == address.isV4 }), device.allowedIPs.lookup(address) >= 0 else {
            return nil
        }
        return tcp.connect(from: source, to: address, port: port, now: now)
    }

    public func connection(_ id: Int) -> TCPConnection { tcp.connection(id) }
    /// Connection `id`'s addresses in the tunnel: ours and the other end's.
    public func addresses(of id: Int) -> (local: IPAddress, remote: IPAddress) { tcp.addresses(of: id) }

    /// Accepts TCP connections from the tunnel to `port` of our addresses (remote port forwarding).
    public func listen(port: UInt16) { tcp.listen(port: port) }

    /// The next connection a listener accepted; its `localPort` says which listener. Only connections whose
    /// handshake completed are handed out (they may already hold data); half-open ones stay in the stack,
    /// bounded, and are dropped there if the handshake never completes. Call after every input and inspect
    /// what it returns: its first event may have been polled before you accepted it.
    public func accept() -> Int? { tcp.accept() }

    /// The application changed connection `id` (wrote, read, closed): it may have something to send.
    /// Not needed: a connection's commands queue its output themselves; kept for drivers that call it.
    @inline(__always) public func touched(_ id: Int) { tcp.markReady(id) }

    /// Asks for `id` to come out of `pollEvent` again (the driver's own I/O for it completed).
    public func notify(_ id: Int) { tcp.notify(id) }

    /// The application is done with `id`; an open connection is reset first.
    public func release(_ id: Int) { tcp.release(id) }

    /// After many connections ended, gives back what the connection tables grew to. It walks every
    /// connection: call it rarely, not per packet or per tick.
    public func compactTables() { tcp.compactTables() }

    /// True once more connections left the tables since the last `compactTables` than remain (at least
    /// 64): a cheap test a driver can make on every flush to know when to compact.
    public var tablesWantCompaction: Bool { tcp.wantsCompaction }

    /// Buffer bytes that connections idle for a second gave back, in total: a driver that wants the
    /// memory returned to the system trims its heap when this grew by much.
    public var idleBytesReleased: Int { tcp.idleBytesReleased }

    // MARK: Outputs

    /// The next connection whose state may have changed (see "Events"); never one of the resolver's.
    public func pollEvent() -> Int? {
        while let id = tcp.pollEvent() {
            if isDNSConnection(id) { continue }
            return id
        }
        return nil
    }

    /// The next datagram, written at the start of `buffer`, for `transmitDestination`; nil when there is
    /// none.
    public func pollTransmit(into buffer: UnsafeMutableRawBufferPointer, now: Instant) -> Int? {
        if let n = device.pollTransmit(into: buffer, now: now) { return n }
        // UDP first (small and latency-sensitive): sealed from its queue slot, no copy before the cipher's.
        while let (slot, length, _) = udpOut.front() {
            packetTap?(UnsafeRawBufferPointer(rebasing: slot[0..<length]), true)
            let sealed = device.encapsulate(buffer, copying: slot, packetLength: length, now: now)
            udpOut.removeFront()
            if let n = sent(sealed) { return n }
        }
        let inner = UnsafeMutableRawBufferPointer(
            rebasing: buffer[WireGuardDevice.headroom..<(buffer.count - WireGuardDevice.tailroom)])
        var budget = 1024
        while budget > 0, let n = interface.pollPacket(into: inner, now: now) {
            budget -= 1
            packetTap?(UnsafeRawBufferPointer(rebasing: inner[0..<n]), true)
            if let n = sent(device.encapsulate(buffer, packetLength: n, now: now)) { return n }
        }
        return device.pollTransmit(into: buffer, now: now)
    }

    /// The datagram's length when sealed; nil when staged until the handshake completes (the device's
    /// `pollTransmit` hands it out then) or dropped (counted).
    func sent(_ result: Encapsulated) -> Int? {
        switch result {
        case .send(let length): return length
        case .queued: return nil
        case .dropped:
            packetsDropped += 1
            return nil
        }
    }

    public func nextDeadline() -> Instant? {
        var earliest = device.nextDeadline()
        if let d = interface.nextDeadline(), earliest.map({ d < $0 }) ?? true { earliest = d }
        if let d = udpPorts.nextDeadline(), earliest.map({ d < $0 }) ?? true { earliest = d }
        if let d = dns?.nextDeadline(), earliest.map({ d < $0 }) ?? true { earliest = d }
        return earliest
    }
}
