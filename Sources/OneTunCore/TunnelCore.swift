/// What a `TunnelCore` needs: the WireGuard session, the virtual addresses it speaks from, TCP settings.
public struct TunnelCoreConfig: Sendable {
    public var wireGuard: WireGuardConfig
    /// The source peer IPs (one IPv4 and/or one IPv6); outgoing connections use the one of the
    /// destination's family.
    public var addresses: [IPAddress]
    public var tcp: TCPConfig

    public init(wireGuard: WireGuardConfig, addresses: [IPAddress], tcp: TCPConfig = TCPConfig()) {
        self.wireGuard = wireGuard
        self.addresses = addresses
        var tcp = tcp
        // MSS from the tunnel MTU: IPv4 (20) + TCP (20) headers; the stack takes 20 more off for IPv6.
        tcp.mss = min(tcp.mss, max(wireGuard.mtu - 40, 536))
        self.tcp = tcp
    }
}

/// The sans-I/O core of the forwarder: a WireGuard session carrying a user-space IP interface with a TCP
/// stack. It opens no socket, reads no clock and starts no thread; a driver feeds it and drains it.
///
/// Methods come in four kinds (the shape of quinn-proto's `Connection`):
/// - inputs, each with `now`: `handleDatagram` (a UDP datagram from the WireGuard endpoint),
///   `handleTimeout` (the deadline from `nextDeadline` has passed; early or spurious calls are no-ops);
/// - commands from the application: `connect`, and on a connection `send`/`sendRegion`+`commitSend`,
///   `consume`, `close` (half-close), `abort`; then `release` when the application is done with it;
/// - outputs: `pollTransmit` (the next datagram for the endpoint), `pollEvent` (the next connection whose
///   state may have changed), `nextDeadline`;
/// - getters: `connection(_:)`, `stats`, `tunnel`.
///
/// After each input or batch of commands, call `pollEvent` until nil and act on each connection (that
/// may issue more commands), then `pollTransmit` until nil, then re-arm a timer to `nextDeadline`.
///
/// Time: `now` is a monotonic clock in nanoseconds chosen by the driver, never going backwards.
/// TAI64N timestamps in handshakes also need the wall clock: set `tunnel.wallClockOffset`
/// (wall-clock ns minus `now`) before `start`.
///
/// Buffers: `handleDatagram` decrypts in place in the caller's buffer and is done with it on return.
/// `pollTransmit` writes one datagram at the start of the caller's buffer, which must hold at least
/// `mtu + 80` bytes (`minimumTransmitBuffer`). Views returned by `readable()` and `sendRegion()` are valid
/// until the next call on that connection or the core.
public final class TunnelCore {
    public let config: TunnelCoreConfig
    public let tunnel: WireGuardTunnel
    public let interface: NetworkInterface
    public let tcp: TCPStack

    /// Outgoing inner packets that the tunnel could not send (no session, or over the MTU).
    public private(set) var packetsDropped = 0

    public init(config: TunnelCoreConfig, random: RandomSource) {
        self.config = config
        tunnel = WireGuardTunnel(config: config.wireGuard, random: random)
        interface = NetworkInterface(addresses: config.addresses, mtu: config.wireGuard.mtu)
        tcp = TCPStack(config: config.tcp, random: random)
        interface.tcp = tcp
    }

    public static func minimumTransmitBuffer(mtu: Int) -> Int {
        WireGuardTunnel.headroom + mtu + WireGuardTunnel.tailroom + 32
    }

    /// Starts the WireGuard handshake (it also starts by itself when the first packet is sent).
    public func start(now: Instant) { tunnel.initiateHandshake(now: now) }

    // MARK: Inputs

    /// A datagram from the endpoint, `length` bytes at the start of `buffer`, opened in place.
    public func handleDatagram(_ buffer: UnsafeMutableRawBufferPointer, length: Int, now: Instant) {
        switch tunnel.decapsulate(buffer, datagramLength: length, from: EndpointAddress(), now: now) {
        case .packet(let range):
            _ = interface.receive(packet: UnsafeRawBufferPointer(rebasing: buffer[range]), now: now)
        case .consumed, .dropped:
            break
        }
    }

    public func handleTimeout(now: Instant) {
        tunnel.handleTimeout(now: now)
        interface.handleTimeout(now: now)
    }

    // MARK: Commands

    /// Opens a TCP connection through the tunnel to `address`:`port` from the source address of the same
    /// family; nil when there is none or no local port is free.
    public func connect(to address: IPAddress, port: UInt16, now: Instant) -> Int? {
        guard let source = config.addresses.first(where: { $0.isV4 == address.isV4 }) else { return nil }
        return tcp.connect(from: source, to: address, port: port, now: now)
    }

    public func connection(_ id: Int) -> TCPConnection { tcp.connection(id) }

    /// The application changed connection `id` (wrote, read, closed): it may have something to send.
    @inline(__always) public func touched(_ id: Int) { tcp.markReady(id) }

    /// Asks for `id` to come out of `pollEvent` again (the driver's own I/O for it completed).
    public func notify(_ id: Int) { tcp.notify(id) }

    /// The application is done with `id`; an open connection is reset first.
    public func release(_ id: Int) { tcp.release(id) }

    // MARK: Outputs

    public func pollEvent() -> Int? { tcp.pollEvent() }

    /// The next datagram for the endpoint, written at the start of `buffer`; nil when there is none.
    public func pollTransmit(into buffer: UnsafeMutableRawBufferPointer, now: Instant) -> Int? {
        if let n = tunnel.pollTransmit(into: buffer, now: now) { return n }
        let inner = UnsafeMutableRawBufferPointer(
            rebasing: buffer[WireGuardTunnel.headroom..<(buffer.count - WireGuardTunnel.tailroom)])
        var budget = 1024
        while budget > 0, let n = interface.pollPacket(into: inner, now: now) {
            budget -= 1
            switch tunnel.encapsulate(buffer, packetLength: n, now: now) {
            case .send(let length):
                return length
            case .queued:
                // Staged until the handshake completes; tunnel.pollTransmit hands it out then.
                continue
            case .dropped:
                packetsDropped += 1
            }
        }
        return tunnel.pollTransmit(into: buffer, now: now)
    }

    public func nextDeadline() -> Instant? {
        switch (tunnel.nextDeadline(), interface.nextDeadline()) {
        case (let a?, let b?): min(a, b)
        case (let a, nil): a
        case (nil, let b): b
        }
    }
}
