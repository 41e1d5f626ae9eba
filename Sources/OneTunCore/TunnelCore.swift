/// What a `TunnelCore` needs: the WireGuard session, the virtual addresses it speaks from, TCP settings.
public struct TunnelCoreConfig: Sendable {
    public var wireGuard: WireGuardConfig
    /// The source peer IPs (one IPv4 and/or one IPv6); outgoing connections use the one of the
    /// destination's family.
    public var addresses: [IPAddress]
    public var tcp: TCPConfig
    /// A UDP forward's virtual port (and a driver's remote UDP flow) idle this long is let go.
    public var udpIdleTimeout: UInt64

    public init(
        wireGuard: WireGuardConfig, addresses: [IPAddress], tcp: TCPConfig = TCPConfig(), udpIdleTimeout: UInt64 = 60 * Nanos.second
    ) {
        self.wireGuard = wireGuard
        self.addresses = addresses
        self.udpIdleTimeout = udpIdleTimeout
        var tcp = tcp
        // MSS from the tunnel MTU: IPv4 (20) + TCP (20) headers; the stack takes 20 more off for IPv6. A
        // jumbo MTU gets jumbo segments; an MSS set below the default stays as set.
        let fromMTU = max(wireGuard.mtu - 40, 536)
        tcp.mss = tcp.mss == TCPConfig().mss ? fromMTU : min(tcp.mss, fromMTU)
        self.tcp = tcp
    }
}

/// The sans-I/O core of the forwarder: a WireGuard session carrying a user-space IP interface with a TCP
/// stack and a UDP port pool. It opens no socket, reads no clock and starts no thread; a driver feeds it
/// and drains it. See the article "Driving the core".
///
/// Methods come in four kinds (the shape of quinn-proto's `Connection`):
/// - **Inputs**, each with `now`: `handleDatagram` (a UDP datagram and the address it came from) and
///   `handleTimeout` (the deadline from `nextDeadline` has passed; early or spurious calls are cheap no-ops).
/// - **Commands** from the application: `start`, `retryHandshake`, `endpoint` (set it to where the peer
///   is, before `start` and whenever a name resolves anew), `endpointRefused`, `connect`,
///   `listen`/`accept`, `sendDatagram`; on a
///   `TCPConnection`: `send` or `sendRegion` + `commitSend`, `consume`, `close` (half-close), `abort`.
///   After changing a connection, call `touched(id)` so its output is polled (without it the connection
///   waits for its next timer). `release(id)` when the application is done with it.
/// - **Outputs**: `pollDatagram`, `pollEvent` and `pollTunnelEvent`, then `pollTransmit`, then
///   `nextDeadline`.
/// - **Getters**: `connection(_:)`, `stats`, `isEstablished`, `handshakeProblem`, `lastDropDescription`,
///   `udpPorts`.
///
/// **Order.** After each input or batch of commands: call `pollDatagram` until nil and `pollEvent` until
/// nil, acting on each (acting may issue commands); `pollTunnelEvent` until nil (for logs); then
/// `pollTransmit` until nil, sending each datagram to `endpoint`; then arm one timer for
/// `nextDeadline()`.
///
/// **The endpoint.** Datagrams from an address other than `endpoint` are refused before any
/// cryptography unless they name one of our sessions or the handshake we wait on, or are handshake
/// initiations, which get the mac1 check every initiation gets (and Diffie-Hellman work only with a
/// valid mac1, as in WireGuard). Once such a datagram authenticates, the peer has roamed:
/// `handleDatagram` returns true and `endpoint` is its address from then on. `pollTransmit` sends to
/// `endpoint`, except a cookie reply, which goes to `transmitDestination`.
///
/// **Events.** `pollEvent` returns the id of every connection that a segment or a timer touched since
/// the last call, once each: it became established, readable, writable again (acknowledged data freed send
/// space), half-closed by the peer (`isReadClosed`), or ended (`hasEnded`; `error` says why when it was not
/// an orderly close). The application inspects the connection; an event may carry no visible change.
/// Released ids are never returned; ids are reused after release.
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
    @_spi(OneTunInternals) public let tunnel: WireGuardTunnel
    @_spi(OneTunInternals) public let interface: NetworkInterface
    @_spi(OneTunInternals) public let tcp: TCPStack

    /// Outgoing inner packets that the tunnel could not send (no session, or over the MTU).
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

    public init(config: TunnelCoreConfig, random: RandomSource) {
        self.config = config
        tunnel = WireGuardTunnel(config: config.wireGuard, random: random)
        interface = NetworkInterface(addresses: config.addresses, mtu: config.wireGuard.mtu)
        tcp = TCPStack(config: config.tcp, random: random)
        interface.tcp = tcp
        interface.hasUDP = true
        // Every packet the interface sees was opened by the WireGuard session, whose tag authenticates it.
        interface.trustsTransportChecksums = true
        udpPorts = UDPPortPool(idleTimeout: config.udpIdleTimeout, random: random)
        let nobody = UDPEndpoint(address: config.addresses[0], port: 0)
        udpIn = PacketQueue(slotSize: config.wireGuard.mtu, capacity: Self.udpQueueSlots, blank: (nobody, nobody))
        udpOut = PacketQueue(slotSize: config.wireGuard.mtu, capacity: Self.udpQueueSlots)
    }

    deinit {
        udpIn.deallocate()
        udpOut.deallocate()
    }

    public static func minimumTransmitBuffer(mtu: Int) -> Int {
        WireGuardTunnel.headroom + mtu + WireGuardTunnel.tailroom + 32
    }

    /// Starts the WireGuard handshake (it also starts by itself when the first packet is sent).
    public func start(now: Instant) { tunnel.initiateHandshake(now: now) }

    /// Starts a handshake unless one is under way: for a driver that refuses work while
    /// `handshakeProblem` is set, so that the tunnel still tries (at most one initiation per 5 s).
    public func retryHandshake(now: Instant) {
        tunnel.retryHandshake(now: now)
    }

    /// Where the peer is (opaque bytes the driver derives from its socket address); see "The endpoint".
    public var endpoint: EndpointAddress {
        get { tunnel.endpoint }
        set { tunnel.endpoint = newValue }
    }

    /// The driver heard the endpoint refuse our datagrams (an ICMP unreachable error from it).
    public func endpointRefused() { tunnel.endpointRefused() }

    /// Why handshakes are failing, while no session works; nil otherwise. A driver may refuse new
    /// clients at once while it is set, rather than let them wait for a time-out.
    public var handshakeProblem: HandshakeProblem? { tunnel.handshakeProblem }

    /// The next session event (established, lost, expired, handshake failing, …), for logs.
    public func pollTunnelEvent() -> TunnelEvent? { tunnel.pollEvent() }

    /// Where the datagram the last `pollTransmit` wrote goes: nil for `endpoint` (all but a cookie reply
    /// to a handshake message from another address).
    public var transmitDestination: EndpointAddress? { tunnel.transmitDestination }

    /// Wall-clock nanoseconds since 1970 minus the driver's `now`, for the TAI64N timestamps of
    /// handshakes; set it before `start`.
    public var wallClockOffset: Int64 {
        get { tunnel.wallClockOffset }
        set { tunnel.wallClockOffset = newValue }
    }

    /// True while a WireGuard session with the peer is up.
    public var isEstablished: Bool { tunnel.isEstablished }

    /// Why the most recent datagram from the endpoint was refused, for diagnostics; nil if none was.
    public var lastDropDescription: String? { tunnel.lastDrop.map { "\($0)" } }

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
            wireGuard: tunnel.stats,
            packetsRefused: i.droppedMalformed + i.droppedBadChecksum + i.droppedFragments + i.droppedNotForUs + i.droppedUnsupported,
            packetsDropped: packetsDropped, datagramsDropped: datagramsDropped, resetsSent: i.resetsSent,
            tcpConnections: tcp.count, udpMappings: udpPorts.count)
    }

    // MARK: Inputs

    /// A datagram from `source`, `length` bytes at the start of `buffer`, opened in place. True when it
    /// authenticated from an address other than `endpoint`: the peer roamed there, and the driver sends
    /// to `source` from now on.
    @discardableResult
    public func handleDatagram(
        _ buffer: UnsafeMutableRawBufferPointer, length: Int, from source: EndpointAddress = EndpointAddress(), now: Instant
    ) -> Bool {
        let roams = tunnel.stats.endpointChanges
        switch tunnel.decapsulate(buffer, datagramLength: length, from: source, now: now) {
        case .packet(let range):
            let packet = UnsafeRawBufferPointer(rebasing: buffer[range])
            packetTap?(packet, false)
            if case .udp(let arrival) = interface.receive(packet: packet, now: now) { queueInbound(packet, arrival) }
        case .consumed, .dropped:
            break
        }
        if tunnel.recovered {
            // The path is back: connections whose retransmissions backed off during the outage go now,
            // not at their next backed-off timer.
            tunnel.recovered = false
            tcp.pathRecovered(now: now)
        }
        return tunnel.stats.endpointChanges != roams
    }

    public func handleTimeout(now: Instant) {
        tunnel.handleTimeout(now: now)
        interface.handleTimeout(now: now)
        udpPorts.expire(now: now)
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
    /// here), the send queue is full, or we have no address of that family.
    @discardableResult
    public func sendDatagram(from sourcePort: UInt16, to destination: UDPEndpoint, payload: UnsafeRawBufferPointer) -> Bool {
        guard let source = config.addresses.first(where: { $0.isV4 == destination.address.isV4 }) else {
            datagramsDropped += 1
            return false
        }
        let builder = PacketBuilder(
            source: source, destination: destination.address,
            transport: .udp(UDPRepr(sourcePort: sourcePort, destinationPort: destination.port)))
        guard builder.headerLength + payload.count <= config.wireGuard.mtu, let slot = udpOut.reserve() else {
            datagramsDropped += 1
            return false
        }
        let n = builder.emit(into: slot, at: 0, copying: payload)
        udpOut.commit(n)
        return true
    }

    // MARK: Commands

    /// Opens a TCP connection through the tunnel to `address`:`port` from the source address of the same
    /// family; nil when there is none or no local port is free.
    public func connect(to address: IPAddress, port: UInt16, now: Instant) -> Int? {
        guard let source = config.addresses.first(where: { $0.isV4 == address.isV4 }) else { return nil }
        return tcp.connect(from: source, to: address, port: port, now: now)
    }

    public func connection(_ id: Int) -> TCPConnection { tcp.connection(id) }

    /// Accepts TCP connections from the tunnel to `port` of our addresses (remote port forwarding).
    public func listen(port: UInt16) { tcp.listen(port: port) }

    /// The next connection a listener accepted; its `localPort` says which listener. Only connections whose
    /// handshake completed are handed out (they may already hold data); half-open ones stay in the stack,
    /// bounded, and are dropped there if the handshake never completes. Call after every input and inspect
    /// what it returns: its first event may have been polled before you accepted it.
    public func accept() -> Int? { tcp.accept() }

    /// The application changed connection `id` (wrote, read, closed): it may have something to send.
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

    public func pollEvent() -> Int? { tcp.pollEvent() }

    /// The next datagram for the endpoint, written at the start of `buffer`; nil when there is none.
    public func pollTransmit(into buffer: UnsafeMutableRawBufferPointer, now: Instant) -> Int? {
        if let n = tunnel.pollTransmit(into: buffer, now: now) { return n }
        // UDP first (small and latency-sensitive): sealed from its queue slot, no copy before the cipher's.
        while let (slot, length, _) = udpOut.front() {
            packetTap?(UnsafeRawBufferPointer(rebasing: slot[0..<length]), true)
            let sealed = tunnel.encapsulate(buffer, copying: slot, packetLength: length, now: now)
            udpOut.removeFront()
            if let n = sent(sealed) { return n }
        }
        let inner = UnsafeMutableRawBufferPointer(
            rebasing: buffer[WireGuardTunnel.headroom..<(buffer.count - WireGuardTunnel.tailroom)])
        var budget = 1024
        while budget > 0, let n = interface.pollPacket(into: inner, now: now) {
            budget -= 1
            packetTap?(UnsafeRawBufferPointer(rebasing: inner[0..<n]), true)
            if let n = sent(tunnel.encapsulate(buffer, packetLength: n, now: now)) { return n }
        }
        return tunnel.pollTransmit(into: buffer, now: now)
    }

    /// The datagram's length when sealed; nil when staged until the handshake completes (the tunnel's
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
        var earliest = tunnel.nextDeadline()
        if let d = interface.nextDeadline(), earliest.map({ d < $0 }) ?? true { earliest = d }
        if let d = udpPorts.nextDeadline(), earliest.map({ d < $0 }) ?? true { earliest = d }
        return earliest
    }
}
