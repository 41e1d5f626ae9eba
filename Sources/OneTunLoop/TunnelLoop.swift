import CUV
import Glibc
import Logging
@_spi(OneTunInternals) import OneTunCore

/// What rides inside the tunnel: it consumes inner IP packets and produces them, sans-I/O, with its own
/// deadline. The loop asks it for packets after every batch of inputs.
public protocol TunnelPayload: AnyObject {
    /// One inner IP packet from the peer; the bytes are valid only during the call.
    func receive(packet: UnsafeRawBufferPointer, now: Instant)
    /// Writes the next outgoing inner IP packet at the start of `buffer`; nil when there is none.
    func pollPacket(into buffer: UnsafeMutableRawBufferPointer, now: Instant) -> Int?
    func nextDeadline() -> Instant?
    func handleTimeout(now: Instant)
}

/// Errors the loop reports at start-up, each naming the culprit.
public struct LoopError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }

    static func uv(_ what: String, _ code: Int32) -> LoopError {
        LoopError("\(what): \(String(cString: uv_strerror(code)))")
    }
}

/// A sans-I/O core the loop can drive: datagrams from its peers in, datagrams for them out, one deadline.
/// `TunnelCore` is one; `PayloadCore` adapts a `TunnelPayload` riding in a bare WireGuard tunnel.
public protocol DatagramCore: AnyObject {
    /// True when the datagram authenticated from an address other than its peer's endpoint: that peer
    /// roamed.
    func handleDatagram(_ buffer: UnsafeMutableRawBufferPointer, length: Int, from source: EndpointAddress, now: Instant) -> Bool
    func pollTransmit(into buffer: UnsafeMutableRawBufferPointer, now: Instant) -> Int?
    func nextDeadline() -> Instant?
    func handleTimeout(now: Instant)
    /// Starts the handshake; `wallClockOffset` is wall-clock ns minus `now`.
    func start(now: Instant, wallClockOffset: Int64)
    var isEstablished: Bool { get }
    /// The buffer `pollTransmit` needs for one datagram (it grows with the MTU).
    var transmitBufferSize: Int { get }
    /// The first peer's endpoint: the one the loop resolves by name and names in its log.
    var endpoint: EndpointAddress { get set }
    func endpointRefused()
    /// The driver heard `address` refuse our datagrams (for a peer other than the first).
    func endpointRefused(by address: EndpointAddress)
    var handshakeProblem: HandshakeProblem? { get }
    func pollPeerEvent() -> PeerEvent?
    func retryHandshake(now: Instant)
    /// Where the last `pollTransmit`'s datagram goes; empty for `endpoint`.
    var transmitDestination: EndpointAddress { get }
    /// How many peers; with one, logs speak of "the peer".
    var peerCount: Int { get }
    /// Where the peer with `publicKey` is now; nil when unknown.
    func endpoint(ofPeer publicKey: Key32) -> EndpointAddress?
    /// Why handshakes with the peer with `publicKey` fail; nil when they do not.
    func handshakeProblem(ofPeer publicKey: Key32) -> HandshakeProblem?
    /// Moves the peer with `publicKey` (its name resolved anew); false when there is no such peer.
    @discardableResult func setEndpoint(_ endpoint: EndpointAddress, forPeer publicKey: Key32) -> Bool
    func retryHandshake(forPeer publicKey: Key32, now: Instant)
}

extension TunnelCore: DatagramCore {
    public func start(now: Instant, wallClockOffset: Int64) {
        self.wallClockOffset = wallClockOffset
        start(now: now)
    }

    public var transmitBufferSize: Int { Self.minimumTransmitBuffer(mtu: config.mtu) }

    public func endpoint(ofPeer publicKey: Key32) -> EndpointAddress? { peer(publicKey)?.endpoint }
}

/// A WireGuard device with a `TunnelPayload` inside, as a `DatagramCore`.
@_spi(OneTunInternals) public final class PayloadCore: DatagramCore {
    public let tunnel: WireGuardDevice
    public let payload: TunnelPayload
    let logger: Logger

    public init(tunnel: WireGuardDevice, payload: TunnelPayload, logger: Logger) {
        self.tunnel = tunnel
        self.payload = payload
        self.logger = logger
    }

    public func handleDatagram(_ buffer: UnsafeMutableRawBufferPointer, length: Int, from source: EndpointAddress, now: Instant) -> Bool {
        let roams = tunnel.endpointChanges
        switch tunnel.decapsulate(buffer, datagramLength: length, from: source, now: now) {
        case .packet(let range):
            payload.receive(packet: UnsafeRawBufferPointer(rebasing: buffer[range]), now: now)
        case .consumed:
            break
        case .dropped(let reason):
            logger.debug("dropped a datagram from the endpoint: \(reason)")
        }
        return tunnel.endpointChanges != roams
    }

    public func pollTransmit(into buffer: UnsafeMutableRawBufferPointer, now: Instant) -> Int? {
        if let n = tunnel.pollTransmit(into: buffer, now: now) { return n }
        let inner = UnsafeMutableRawBufferPointer(rebasing: buffer[WireGuardDevice.headroom..<(buffer.count - WireGuardDevice.tailroom)])
        while let n = payload.pollPacket(into: inner, now: now) {
            switch tunnel.encapsulate(buffer, packetLength: n, now: now) {
            case .send(let length): return length
            case .queued: continue
            case .dropped(let reason): logger.debug("dropped an outgoing packet: \(reason)")
            }
        }
        return tunnel.pollTransmit(into: buffer, now: now)
    }

    public func nextDeadline() -> Instant? {
        switch (tunnel.nextDeadline(), payload.nextDeadline()) {
        case (let a?, let b?): min(a, b)
        case (let a, nil): a
        case (nil, let b): b
        }
    }

    public func handleTimeout(now: Instant) {
        tunnel.handleTimeout(now: now)
        payload.handleTimeout(now: now)
    }

    public func start(now: Instant, wallClockOffset: Int64) {
        tunnel.wallClockOffset = wallClockOffset
        tunnel.start(now: now)
    }

    public var isEstablished: Bool { tunnel.isEstablished }
    public var transmitBufferSize: Int { TunnelCore.minimumTransmitBuffer(mtu: tunnel.mtu) }
    public var endpoint: EndpointAddress {
        get { tunnel.endpoint }
        set { tunnel.endpoint = newValue }
    }
    public func endpointRefused() { tunnel.endpointRefused() }
    public func endpointRefused(by address: EndpointAddress) {
        if let peer = tunnel.peers.first(where: { $0.endpoint == address }) { peer.endpointRefused() }
    }
    public var handshakeProblem: HandshakeProblem? { tunnel.handshakeProblem }
    public func pollPeerEvent() -> PeerEvent? { tunnel.pollPeerEvent() }
    public func retryHandshake(now: Instant) {
        tunnel.retryHandshake(now: now)
    }
    public var transmitDestination: EndpointAddress { tunnel.transmitDestination }
    public var peerCount: Int { tunnel.peers.count }
    public func endpoint(ofPeer publicKey: Key32) -> EndpointAddress? { tunnel.peer(for: publicKey)?.endpoint }
    public func handshakeProblem(ofPeer publicKey: Key32) -> HandshakeProblem? { tunnel.peer(for: publicKey)?.handshakeProblem }
    @discardableResult public func setEndpoint(_ endpoint: EndpointAddress, forPeer publicKey: Key32) -> Bool {
        guard let peer = tunnel.peer(for: publicKey) else { return false }
        tunnel.setEndpoint(endpoint, of: peer)
        return true
    }
    public func retryHandshake(forPeer publicKey: Key32, now: Instant) { tunnel.peer(for: publicKey)?.retryHandshake(now: now) }
}

/// The single-threaded libuv driver: one UDP socket for every peer, one timer armed to the earliest
/// deadline, one prepare handle that drains outputs once per loop iteration (STYLE §8).
///
/// The socket is not connected: each datagram comes with its source, which the core checks against its
/// peers' endpoints (and follows when a peer roams), each datagram out goes where the core says
/// (`transmitDestination`), and ICMP errors are read from the socket's error queue (IP_RECVERR), so "port
/// unreachable" is said as such. An endpoint given by name is resolved again (uv_getaddrinfo, off the
/// loop thread) every 15 s while handshakes with its peer fail: the first peer's (`start`'s `name`) and
/// each peer's named with `resolveAgain(peer:name:port:)`; other endpoints are the core's alone
/// (addresses, or learnt from the peer).
///
/// Datagrams arrive in batches (recvmmsg, through libuv's `UV_UDP_RECVMMSG`) into one buffer allocated
/// once and are opened in place; outgoing datagrams are sealed in place, end to end in one buffer, and
/// leave in batches of up to `batch` with one sendmmsg(2) call (each message with its own destination),
/// runs of equal size to one destination as one UDP GSO send.
public final class TunnelLoop {
    public let core: DatagramCore
    let logger: Logger
    public let loop: UnsafeMutablePointer<uv_loop_t>
    let udp = UnsafeMutablePointer<uv_udp_t>.allocate(capacity: 1)
    let timer = UnsafeMutablePointer<uv_timer_t>.allocate(capacity: 1)
    let prepare = UnsafeMutablePointer<uv_prepare_t>.allocate(capacity: 1)
    /// Runs while a flush left work for the next iteration (a budget ran out): it keeps the loop from
    /// blocking in epoll until some unrelated datagram or timer wakes it.
    let idle = UnsafeMutablePointer<uv_idle_t>.allocate(capacity: 1)
    var moreWork = false
    var idling = false
    let signals = UnsafeMutablePointer<uv_signal_t>.allocate(capacity: 2)
    static let batch = 64
    /// The most one datagram may take in the send buffer: 2 KiB, or more for an MTU above about 1950.
    let slot: Int
    /// libuv's recvmmsg hands each datagram a 64 KiB chunk of the receive buffer (UV__UDP_DGRAM_MAXSIZE)
    /// and reads at most 20 per call: a buffer of 20 chunks reads 20 datagrams per system call.
    static let receiveChunks = 20
    /// recvmmsg's buffer and the send slots.
    let receiveBuffer: UnsafeMutableRawBufferPointer
    let sendSlots: UnsafeMutableRawBufferPointer
    let sendLengths = UnsafeMutablePointer<Int>.allocate(capacity: TunnelLoop.batch)
    let sendOffsets = UnsafeMutablePointer<Int>.allocate(capacity: TunnelLoop.batch)
    /// Each datagram's destination in the batch: 0 for the endpoint, else a slot of `destinations`.
    let sendDestinations = UnsafeMutablePointer<Int>.allocate(capacity: TunnelLoop.batch)
    /// The batch's destinations other than the endpoint (slot 0 unused), converted once per batch.
    let destinations = UnsafeMutablePointer<sockaddr_storage>.allocate(capacity: TunnelLoop.batch + 1)
    var destinationCount = 1
    /// The last destination other than the endpoint and its slot, so a run to one peer converts once.
    var lastDestination = EndpointAddress()
    var lastDestinationSlot = 0
    /// Each message's name and its length, for sendmmsg.
    let messageNames = UnsafeMutablePointer<sockaddr_storage>.allocate(capacity: TunnelLoop.batch)
    let messageNameLengths = UnsafeMutablePointer<socklen_t>.allocate(capacity: TunnelLoop.batch)
    let iovecs = UnsafeMutablePointer<iovec>.allocate(capacity: TunnelLoop.batch)
    let gsoSizes = UnsafeMutablePointer<UInt16>.allocate(capacity: TunnelLoop.batch)
    let datagramsIn = UnsafeMutablePointer<Int>.allocate(capacity: TunnelLoop.batch)
    let controls = UnsafeMutablePointer<UInt8>.allocate(capacity: 32 * TunnelLoop.batch)
    let messages = UnsafeMutablePointer<onetun_mmsghdr>.allocate(capacity: TunnelLoop.batch)
    /// UDP GSO (UDP_SEGMENT): runs of equal-sized datagrams leave as one buffer the kernel cuts up. Turned
    /// off for good if the kernel refuses it.
    public var segmentationOffload = true
    var fd: Int32 = -1
    /// AF_INET or AF_INET6: the addresses the socket can send to.
    var socketFamily = sa_family_t(AF_INET)
    var armedDeadline: UInt64 = .max
    /// When the loop last said that it ran late (at most one line a minute).
    var lastLatenessReport = Instant.zero
    /// The clock read for the recvmmsg batch being delivered (nil between batches).
    var batchNow: Instant?
    /// When `run` started: deadlines before it (set up while start-up work still blocked) are not the
    /// loop's lateness.
    var runStarted: UInt64 = .max
    var stopped = false

    /// The first peer's current address, as resolved or as it roamed: where datagrams go when the core
    /// names it (or names no address).
    let endpointStorage = UnsafeMutablePointer<sockaddr_storage>.allocate(capacity: 1)
    var endpointLength: socklen_t = 0
    /// The same address as the core names it.
    var endpointAddress = EndpointAddress()
    /// The endpoint's host name, resolved again while handshakes fail; nil for a literal address.
    var endpointName: String?
    /// The configured port (network order): a new address for the name gets this one, not the port the
    /// peer may have roamed to behind a NAT.
    var endpointPort: UInt16 = 0
    let resolveRequest = UnsafeMutablePointer<uv_getaddrinfo_t>.allocate(capacity: 1)
    var resolving = false
    var lastResolve = Instant.zero
    static let resolveInterval: UInt64 = 15 * Nanos.second
    /// Peers of a multi-peer core whose endpoints are host names (`resolveAgain`), looked at once a
    /// second at most.
    var namedPeers: [NamedPeer] = []
    var lastNamedCheck = Instant.zero

    /// A peer's endpoint name, resolved again while handshakes with it fail.
    final class NamedPeer {
        let publicKey: Key32
        let name: String
        /// The configured port (network order).
        let port: UInt16
        let request = UnsafeMutablePointer<uv_getaddrinfo_t>.allocate(capacity: 1)
        var resolving = false
        var lastResolve = Instant.zero
        unowned let loop: TunnelLoop

        init(publicKey: Key32, name: String, port: UInt16, loop: TunnelLoop) {
            self.publicKey = publicKey
            self.name = name
            self.port = port
            self.loop = loop
        }

        deinit { request.deallocate() }
    }
    let icmpError = UnsafeMutablePointer<onetun_icmp_error>.allocate(capacity: 1)
    /// A datagram came since the last read that found nothing (readErrors drains the error queue only
    /// after a wake-up that brought none).
    var receivedSinceEmptyRead = false
    /// The last ICMP error from the endpoint, in words, for the handshake warning.
    var refusal = ""
    public private(set) var icmpErrors = 0
    public private(set) var sendFailures = 0
    public private(set) var datagramsSent = 0
    public private(set) var datagramsReceived = 0
    /// Runs in every flush before the core is drained: the forwarder moves bytes between its clients and
    /// the core's connections here.
    public var beforeTransmit: (() -> Void)?
    /// Runs at the end of every flush (the pcap writer writes its buffer here).
    public var afterFlush: (() -> Void)?
    /// SIGINT or SIGTERM; the default stops the loop.
    public var onSignal: (() -> Void)?
    public var onStop: (() -> Void)?
    /// Runs after each peer event is logged (the systemd notifier's STATUS= follows the handshakes).
    public var onPeerEvent: ((PeerEvent) -> Void)?

    public init(core: DatagramCore, logger: Logger) {
        self.core = core
        self.logger = logger
        loop = uv_default_loop()
        slot = (max(2048, core.transmitBufferSize) + 63) & ~63
        receiveBuffer = .allocate(byteCount: Self.receiveChunks * 65_536, alignment: 16)
        sendSlots = .allocate(byteCount: Self.batch * slot, alignment: 16)
    }

    deinit {
        receiveBuffer.deallocate()
        sendSlots.deallocate()
        sendLengths.deallocate()
        sendOffsets.deallocate()
        sendDestinations.deallocate()
        destinations.deallocate()
        messageNames.deallocate()
        messageNameLengths.deallocate()
        iovecs.deallocate()
        gsoSizes.deallocate()
        datagramsIn.deallocate()
        controls.deallocate()
        messages.deallocate()
        endpointStorage.deallocate()
        resolveRequest.deallocate()
        icmpError.deallocate()
    }

    @inline(__always) public static func now() -> Instant { Instant(nanoseconds: uv_hrtime()) }

    /// Binds the endpoint socket (`bind` may be nil for an ephemeral port) and starts the core, telling it
    /// its first peer is at `endpoint`; `name` is the host name it was resolved from, if it was one. With
    /// no `endpoint` (peers that will contact us at a fixed port) the socket's family is `bind`'s, which
    /// must then be given.
    public func start(endpoint: sockaddr_storage?, name: String? = nil, bind: sockaddr_storage?) throws(LoopError) {
        guard let family = endpoint?.ss_family ?? bind?.ss_family else { throw LoopError("no endpoint and no bind address: nothing says which IP version the socket speaks") }
        socketFamily = family
        var rc = uv_udp_init_ex(loop, udp, UInt32(family) | UInt32(UV_UDP_RECVMMSG.rawValue))
        guard rc == 0 else { throw .uv("endpoint socket", rc) }
        udp.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        var local = bind ?? Self.wildcard(family: family)
        rc = withUnsafePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_udp_bind(udp, $0, 0) } }
        guard rc == 0 else { throw .uv("binding the endpoint socket", rc) }
        endpointName = name
        if let endpoint {
            setEndpoint(endpoint)
            endpointPort = endpointStorage.withMemoryRebound(to: sockaddr.self, capacity: 1) { Self.port($0) }
        } else {
            endpointStorage.pointee = Self.wildcard(family: 0)
        }
        var size: Int32 = 4 << 20
        _ = uv_recv_buffer_size(UnsafeMutableRawPointer(udp).assumingMemoryBound(to: uv_handle_t.self), &size)
        size = 4 << 20
        _ = uv_send_buffer_size(UnsafeMutableRawPointer(udp).assumingMemoryBound(to: uv_handle_t.self), &size)
        var descriptor = uv_os_fd_t()
        uv_fileno(UnsafeMutableRawPointer(udp).assumingMemoryBound(to: uv_handle_t.self), &descriptor)
        fd = descriptor
        // ICMP errors for an unconnected socket reach us only with IP_RECVERR; they then queue on the
        // socket's error queue (drained in readErrors, or they would take the receive buffer's room).
        var on: Int32 = 1
        if family == sa_family_t(AF_INET6) {
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_RECVERR, &on, socklen_t(MemoryLayout<Int32>.size))
        } else {
            setsockopt(fd, Int32(IPPROTO_IP), IP_RECVERR, &on, socklen_t(MemoryLayout<Int32>.size))
        }
        rc = uv_udp_recv_start(
            udp,
            { handle, _, buf in
                let me = Unmanaged<TunnelLoop>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                buf!.pointee = uv_buf_init(me.receiveBuffer.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(me.receiveBuffer.count))
            },
            { handle, nread, buf, addr, flags in
                let me = Unmanaged<TunnelLoop>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                // A pending ICMP error fails the read (ECONNREFUSED, EHOSTUNREACH, …); its details wait
                // on the error queue. So may a read that found nothing (not the end of a batch, which
                // hands the buffer back): an error queued after its error was taken by a send makes
                // the socket report EPOLLERR until the queue is drained.
                // A wake-up ends with such an empty read (unless libuv's limit of reads ended it first);
                // after datagrams came the queue is left alone (a system call per wake-up otherwise):
                // were an error waiting, EPOLLERR would wake the loop again at once, with nothing to
                // read, and that read drains it.
                if nread <= 0 { me.batchNow = nil }
                if nread < 0 {
                    me.readErrors()
                    return
                }
                if nread == 0 && addr == nil && flags & UInt32(UV_UDP_MMSG_FREE.rawValue) == 0 {
                    if me.receivedSinceEmptyRead {
                        me.receivedSinceEmptyRead = false
                    } else {
                        me.readErrors()
                    }
                    return
                }
                // With recvmmsg each datagram comes as its own chunk of the buffer; a final call with
                // nread 0 and no address hands the buffer back (it is ours and reused).
                guard nread > 0, let base = buf?.pointee.base, let addr else { return }
                me.datagramsReceived += 1
                me.receivedSinceEmptyRead = true
                let chunk = UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(base), count: Int(buf!.pointee.len))
                // One clock reading per recvmmsg batch: its datagrams all arrived before the call.
                let now: Instant
                if flags & UInt32(UV_UDP_MMSG_CHUNK.rawValue) == 0 {
                    now = TunnelLoop.now()
                } else if let batchNow = me.batchNow {
                    now = batchNow
                } else {
                    now = TunnelLoop.now()
                    me.batchNow = now
                }
                me.receive(chunk, length: nread, from: addr, now: now)
            })
        guard rc == 0 else { throw .uv("receiving on the endpoint socket", rc) }

        uv_timer_init(loop, timer)
        timer.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        uv_idle_init(loop, idle)
        uv_prepare_init(loop, prepare)
        prepare.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        uv_prepare_start(prepare) { handle in
            Unmanaged<TunnelLoop>.fromOpaque(handle!.pointee.data).takeUnretainedValue().flush()
        }
        for (i, signal) in [SIGINT, SIGTERM].enumerated() {
            uv_signal_init(loop, signals + i)
            signals[i].data = Unmanaged.passUnretained(self).toOpaque()
            uv_signal_start(signals + i, { handle, signum in
                let me = Unmanaged<TunnelLoop>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                me.logger.info("received signal \(signum), shutting down")
                if let onSignal = me.onSignal { onSignal() } else { me.stop() }
            }, signal)
        }
        core.start(now: Self.now(), wallClockOffset: Self.wallClockOffset())
    }

    static func wildcard(family: sa_family_t) -> sockaddr_storage {
        var storage = sockaddr_storage()
        storage.ss_family = family
        return storage
    }

    /// Sends to `address` from now on, and tells the core it is the (first) peer's.
    func setEndpoint(_ address: sockaddr_storage) {
        adoptEndpoint(address)
        core.endpoint = endpointAddress
    }

    /// Records `address` as the first peer's, as the core already knows it.
    func adoptEndpoint(_ address: sockaddr_storage) {
        endpointStorage.pointee = address
        endpointLength = Self.length(of: address)
        endpointAddress = endpointStorage.withMemoryRebound(to: sockaddr.self, capacity: 1) { Self.endpointAddress($0) }
    }

    static func length(of address: sockaddr_storage) -> socklen_t {
        socklen_t(address.ss_family == sa_family_t(AF_INET6) ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
    }

    /// The core's opaque name for a socket address: the IP address's bytes, then the port's.
    @_spi(OneTunInternals) public static func endpointAddress(_ addr: UnsafePointer<sockaddr>) -> EndpointAddress {
        withUnsafeTemporaryAllocation(byteCount: 18, alignment: 4) { bytes in
            switch Int32(addr.pointee.sa_family) {
            case AF_INET:
                return addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    withUnsafeBytes(of: sin.pointee.sin_addr) { bytes.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: 4) }
                    withUnsafeBytes(of: sin.pointee.sin_port) { (bytes.baseAddress! + 4).copyMemory(from: $0.baseAddress!, byteCount: 2) }
                    return EndpointAddress(bytes: UnsafeRawBufferPointer(rebasing: bytes[0..<6]))
                }
            case AF_INET6:
                return addr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    withUnsafeBytes(of: sin6.pointee.sin6_addr) { bytes.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: 16) }
                    withUnsafeBytes(of: sin6.pointee.sin6_port) { (bytes.baseAddress! + 16).copyMemory(from: $0.baseAddress!, byteCount: 2) }
                    return EndpointAddress(bytes: UnsafeRawBufferPointer(bytes))
                }
            default:
                return EndpointAddress()
            }
        }
    }

    /// Whether `addr` is the endpoint's address and port (most datagrams are: no need to build a name).
    func isEndpoint(_ addr: UnsafePointer<sockaddr>) -> Bool {
        guard addr.pointee.sa_family == endpointStorage.pointee.ss_family else { return false }
        return endpointStorage.withMemoryRebound(to: sockaddr.self, capacity: 1) { Self.sameAddress(addr, $0) }
    }

    static func sameAddress(_ a: UnsafePointer<sockaddr>, _ b: UnsafePointer<sockaddr>) -> Bool {
        guard a.pointee.sa_family == b.pointee.sa_family else { return false }
        switch Int32(a.pointee.sa_family) {
        case AF_INET:
            return a.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { x in
                b.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { y in
                    x.pointee.sin_port == y.pointee.sin_port && x.pointee.sin_addr.s_addr == y.pointee.sin_addr.s_addr
                }
            }
        case AF_INET6:
            return a.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { x in
                b.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { y in
                    x.pointee.sin6_port == y.pointee.sin6_port
                        && withUnsafeBytes(of: x.pointee.sin6_addr) { p in withUnsafeBytes(of: y.pointee.sin6_addr) { q in p.elementsEqual(q) } }
                }
            }
        default:
            return false
        }
    }

    /// The port of an IPv4 or IPv6 socket address, in network order.
    static func port(_ addr: UnsafePointer<sockaddr>) -> UInt16 {
        if Int32(addr.pointee.sa_family) == AF_INET6 {
            return addr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_port }
        }
        return addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_port }
    }

    /// The socket address an `EndpointAddress` names (the inverse of `endpointAddress`).
    static func socketAddress(_ address: EndpointAddress) -> sockaddr_storage? {
        var storage = sockaddr_storage()
        let ok = address.withUnsafeBytes { bytes -> Bool in
            withUnsafeMutableBytes(of: &storage) { raw in
                switch bytes.count {
                case 6:
                    var sin = sockaddr_in()
                    sin.sin_family = sa_family_t(AF_INET)
                    withUnsafeMutableBytes(of: &sin.sin_addr) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<4])) }
                    withUnsafeMutableBytes(of: &sin.sin_port) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[4..<6])) }
                    withUnsafeBytes(of: sin) { raw.copyMemory(from: $0) }
                    return true
                case 18:
                    var sin6 = sockaddr_in6()
                    sin6.sin6_family = sa_family_t(AF_INET6)
                    withUnsafeMutableBytes(of: &sin6.sin6_addr) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<16])) }
                    withUnsafeMutableBytes(of: &sin6.sin6_port) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[16..<18])) }
                    withUnsafeBytes(of: sin6) { raw.copyMemory(from: $0) }
                    return true
                default:
                    return false
                }
            }
        }
        return ok ? storage : nil
    }

    static func describe(_ addr: UnsafePointer<sockaddr>) -> String {
        guard let e = SocketAddressConversion.endpoint(addr) else { return "?" }
        return e.address.isV4 ? "\(e.address):\(e.port)" : "[\(e.address)]:\(e.port)"
    }

    var endpointDescription: String {
        endpointStorage.withMemoryRebound(to: sockaddr.self, capacity: 1) { Self.describe($0) }
    }

    /// An address as the core names it, in words.
    static func describe(_ address: EndpointAddress?) -> String {
        guard let address, var storage = socketAddress(address) else { return "an unknown address" }
        return withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { describe($0) } }
    }

    func receive(_ chunk: UnsafeMutableRawBufferPointer, length: Int, from addr: UnsafePointer<sockaddr>, now: Instant) {
        let source = isEndpoint(addr) ? endpointAddress : Self.endpointAddress(addr)
        guard core.handleDatagram(chunk, length: length, from: source, now: now) else { return }
        // A peer's packet authenticated from a new address: it roamed (paper §2.1). The loop keeps its own
        // record of the first peer's (the one it resolves and names in its log); others' are the core's.
        // With several peers every move is said by `report` (.endpointChanged), naming the peer.
        guard core.peerCount == 1 else { return }
        let moved = core.endpoint
        guard !moved.isEmpty, moved != endpointAddress, var storage = Self.socketAddress(moved) else { return }
        if moved == source {
            // The datagram's own address, whole (an IPv6 scope included).
            let length = Int(Self.length(of: storage))
            withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: UnsafeRawBufferPointer(start: addr, count: length)) }
        }
        let was = endpointAddress.isEmpty ? nil : endpointDescription
        adoptEndpoint(storage)
        if let was {
            logger.info("the peer moved from \(was) to \(endpointDescription)")
        } else {
            logger.info("the peer called from \(endpointDescription)")
        }
    }

    /// Drains the socket's error queue: ICMP errors about datagrams we sent to the endpoint tell the core
    /// it refused them; others (an old address of the peer's) are only counted.
    func readErrors() {
        for _ in 0..<64 {
            guard onetun_read_icmp_error(fd, icmpError) == 1 else { return }
            icmpErrors += 1
            let e = icmpError.pointee
            let aboutEndpoint = withUnsafePointer(to: e.target) { t in
                t.withMemoryRebound(to: sockaddr.self, capacity: 1) { isEndpoint($0) }
            }
            let from = withUnsafePointer(to: e.offender) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Self.describe($0) } }
            let what = String(cString: strerror(e.error)).lowercased()
            logger.debug("ICMP error from \(from) (type \(e.type), code \(e.code)): \(what)")
            // Only "destination unreachable" says the endpoint refuses us; "fragmentation needed" (code
            // 4), "packet too big", "time exceeded" and errors of local origin do not.
            let isICMPv4 = e.origin == 2 && e.type == 3 && e.code != 4
            let isICMPv6 = e.origin == 3 && e.type == 1
            guard isICMPv4 || isICMPv6 else { continue }
            guard aboutEndpoint else {
                // Perhaps another peer's endpoint.
                if core.peerCount > 1 {
                    let target = withUnsafePointer(to: e.target) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Self.endpointAddress($0) } }
                    core.endpointRefused(by: target)
                }
                continue
            }
            refusal = "\(what) (ICMP type \(e.type) code \(e.code) from \(from))"
            core.endpointRefused()
        }
    }

    /// Resolves `name` again, as for the first peer, whenever handshakes with the peer with `publicKey`
    /// fail (every 15 s at most); `port` (host order) is the configured one, kept whatever the name
    /// resolves to.
    public func resolveAgain(peer publicKey: Key32, name: String, port: UInt16) {
        namedPeers.append(NamedPeer(publicKey: publicKey, name: name, port: port.bigEndian, loop: self))
    }

    /// Once a second at most: each named peer whose handshakes fail and whose name was not resolved in the
    /// last 15 s is resolved again.
    func resolveNamedPeers(_ now: Instant) {
        guard !namedPeers.isEmpty, !stopped, now.since(lastNamedCheck) >= Nanos.second else { return }
        lastNamedCheck = now
        for peer in namedPeers where !peer.resolving && now.since(peer.lastResolve) >= Self.resolveInterval {
            guard core.handshakeProblem(ofPeer: peer.publicKey) != nil else { continue }
            peer.resolving = true
            peer.lastResolve = now
            var hints = addrinfo()
            hints.ai_family = Int32(socketFamily)
            hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
            peer.request.pointee.data = Unmanaged.passRetained(peer).toOpaque()
            let rc = uv_getaddrinfo(loop, peer.request, { request, status, result in
                let peer = Unmanaged<NamedPeer>.fromOpaque(request!.pointee.data).takeRetainedValue()
                defer { if let result { uv_freeaddrinfo(result) } }
                peer.resolving = false
                peer.loop.resolved(peer, status, result)
            }, peer.name, nil, &hints)
            if rc != 0 {
                Unmanaged<NamedPeer>.fromOpaque(peer.request.pointee.data!).release()
                peer.resolving = false
                logger.warning("cannot resolve the endpoint \(peer.name) of peer \(peer.publicKey.base64.prefix(8))… again: \(String(cString: uv_strerror(rc)))")
            }
        }
    }

    func resolved(_ peer: NamedPeer, _ status: Int32, _ result: UnsafeMutablePointer<addrinfo>?) {
        guard !stopped else { return }
        let who = "peer \(peer.publicKey.base64.prefix(8))…"
        let current = core.endpoint(ofPeer: peer.publicKey)
        guard status == 0, let first = result, let addr = first.pointee.ai_addr else {
            logger.warning("cannot resolve the endpoint \(peer.name) of \(who) again: \(String(cString: uv_strerror(status))); keeping \(Self.describe(current))")
            return
        }
        var storage = sockaddr_storage()
        withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: UnsafeRawBufferPointer(start: addr, count: Int(first.pointee.ai_addrlen))) }
        Self.setPort(&storage, peer.port)
        let address = withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Self.endpointAddress($0) } }
        guard address != current else {
            logger.debug("the endpoint \(peer.name) of \(who) still resolves to \(Self.describe(address))")
            return
        }
        core.setEndpoint(address, forPeer: peer.publicKey)
        logger.info("the endpoint \(peer.name) of \(who) now resolves to \(Self.describe(address)) (was \(Self.describe(current)))")
        core.retryHandshake(forPeer: peer.publicKey, now: Self.now())
        flush()
    }

    /// Sets the port (network order) of an IPv4 or IPv6 socket address.
    static func setPort(_ storage: inout sockaddr_storage, _ port: UInt16) {
        withUnsafeMutablePointer(to: &storage) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { s in
                if Int32(s.pointee.sa_family) == AF_INET6 {
                    s.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_port = port }
                } else {
                    s.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_port = port }
                }
            }
        }
    }

    /// Resolves the endpoint's name again, off the loop thread; switches to the new address if it changed.
    func resolveEndpoint(_ now: Instant) {
        guard let name = endpointName, !resolving, !stopped else { return }
        resolving = true
        lastResolve = now
        var hints = addrinfo()
        hints.ai_family = Int32(endpointStorage.pointee.ss_family)
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        // The request holds the loop until its callback, which may come after `stop`.
        resolveRequest.pointee.data = Unmanaged.passRetained(self).toOpaque()
        let rc = uv_getaddrinfo(loop, resolveRequest, { request, status, result in
            let me = Unmanaged<TunnelLoop>.fromOpaque(request!.pointee.data).takeRetainedValue()
            defer { if let result { uv_freeaddrinfo(result) } }
            me.resolved(status, result)
        }, name, nil, &hints)
        if rc != 0 {
            Unmanaged<TunnelLoop>.fromOpaque(resolveRequest.pointee.data!).release()
            resolving = false
            logger.warning("cannot resolve the endpoint \(name) again: \(String(cString: uv_strerror(rc)))")
        }
    }

    func resolved(_ status: Int32, _ result: UnsafeMutablePointer<addrinfo>?) {
        resolving = false
        guard !stopped, let name = endpointName else { return }
        guard status == 0, let first = result, let addr = first.pointee.ai_addr else {
            logger.warning("cannot resolve the endpoint \(name) again: \(String(cString: uv_strerror(status))); keeping \(endpointDescription)")
            return
        }
        var storage = sockaddr_storage()
        withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: UnsafeRawBufferPointer(start: addr, count: Int(first.pointee.ai_addrlen))) }
        // The configured port: getaddrinfo was asked for the name only, and the current endpoint's port
        // may be one the peer roamed to.
        Self.setPort(&storage, endpointPort)
        let changed = withUnsafePointer(to: &storage) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { !isEndpoint($0) }
        }
        guard changed else {
            logger.debug("the endpoint \(name) still resolves to \(endpointDescription)")
            return
        }
        let was = endpointDescription
        setEndpoint(storage)
        logger.info("the endpoint \(name) now resolves to \(endpointDescription) (was \(was))")
        // The next initiation goes there (the retry timer's, within 5 s; at once if retries had stopped).
        core.retryHandshake(now: Self.now())
        flush()
    }

    static func wallClockOffset() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let wall = Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
        return wall - Int64(uv_hrtime())
    }

    /// Runs until `stop()` and every handle has closed.
    public func run() {
        runStarted = Self.now().nanoseconds
        uv_run(loop, UV_RUN_DEFAULT)
    }

    /// Flushes what is pending once more, then closes the loop's own handles; `run` returns when the
    /// other handles (listeners, clients) are closed too.
    public func stop() {
        guard !stopped else { return }
        flush()
        stopped = true
        // A resolution already running on libuv's thread pool cannot be cancelled and would hold the loop
        // for the resolver's time-out: the loop then ends with this iteration (closing what it closes).
        if resolving && uv_cancel(UnsafeMutableRawPointer(resolveRequest).assumingMemoryBound(to: uv_req_t.self)) != 0 {
            uv_stop(loop)
        }
        for peer in namedPeers where peer.resolving {
            if uv_cancel(UnsafeMutableRawPointer(peer.request).assumingMemoryBound(to: uv_req_t.self)) != 0 { uv_stop(loop) }
        }
        uv_udp_recv_stop(udp)
        uv_timer_stop(timer)
        uv_prepare_stop(prepare)
        uv_idle_stop(idle)
        for i in 0..<2 { uv_signal_stop(signals + i) }
        for handle in [
            OpaquePointer(udp), OpaquePointer(timer), OpaquePointer(prepare), OpaquePointer(idle), OpaquePointer(signals),
            OpaquePointer(signals + 1),
        ] {
            let h = UnsafeMutablePointer<uv_handle_t>(handle)
            if uv_is_closing(h) == 0 { uv_close(h, nil) }
        }
        onStop?()
    }

    /// A budget ran out with work left: the next loop iteration comes at once and continues it.
    public func continueNextIteration() { moreWork = true }

    /// Drains everything the core wants sent, in batches, then re-arms the one timer.
    public func flush() {
        guard !stopped else { return }
        moreWork = false
        batchNow = nil
        beforeTransmit?()
        let now = Self.now()
        var budget = 16_384
        while budget > 0 {
            var count = 0
            var offset = 0
            destinationCount = 1
            lastDestinationSlot = 0
            while count < Self.batch && offset + slot <= sendSlots.count {
                let room = UnsafeMutableRawBufferPointer(rebasing: sendSlots[offset..<(offset + slot)])
                guard let n = core.pollTransmit(into: room, now: now) else { break }
                guard let destination = destinationSlot(core.transmitDestination) else {
                    sendFailures += 1
                    continue
                }
                sendLengths[count] = n
                sendOffsets[count] = offset
                sendDestinations[count] = destination
                offset += n
                count += 1
            }
            if count > 0 { sendBatch(count) }
            budget -= count
            if count < Self.batch { break }
        }
        if budget <= 0 { moreWork = true }
        while let event = core.pollPeerEvent() {
            report(event)
            onPeerEvent?(event)
        }
        if endpointName != nil, core.handshakeProblem != nil, !resolving, now.since(lastResolve) >= Self.resolveInterval {
            resolveEndpoint(now)
        }
        resolveNamedPeers(now)
        rearm(now)
        afterFlush?()
        if moreWork != idling {
            idling = moreWork
            if idling { uv_idle_start(idle) { _ in } } else { uv_idle_stop(idle) }
        }
    }

    /// Says what happened to a peer's session, in words a user can act on. With one peer it is "the
    /// peer"; with several, each is named by the start of its public key.
    func report(_ peerEvent: PeerEvent) {
        let one = core.peerCount <= 1
        let peer = one ? "the peer" : "peer \(peerEvent.publicKey.base64.prefix(8))…"
        let at = one ? endpointDescription : Self.describe(core.endpoint(ofPeer: peerEvent.publicKey))
        switch peerEvent.event {
        case .sessionEstablished(let rekey, let outage):
            if let outage {
                logger.info("handshake with \(peer) complete: the session is back after \(fixed(outage)) s without one")
            } else if rekey {
                logger.debug("session with \(peer) rekeyed")
            } else {
                logger.info("handshake with \(peer) complete")
            }
        case .sessionLost:
            logger.warning("session with \(peer) lost: nothing from \(at) for 15 s after sending; starting a new handshake")
        case .sessionExpired(let idle):
            if idle {
                logger.info("session with \(peer) expired after 180 s without traffic; the next packet starts a handshake")
            } else {
                logger.warning("session with \(peer) expired: no new handshake in 180 s")
            }
        case .sessionResumed(let outage):
            logger.info("\(peer) answers again: the session is back after \(fixed(outage)) s")
        case .handshakeFailing(let problem):
            let why = switch problem {
            case .noReply: "no reply from \(at) (is it reachable, and is our public key among its peers?)"
            case .endpointUnreachable: one ? "\(at) refused our datagrams: \(refusal)" : "\(at) refused our datagrams"
            default: "\(problem)"
            }
            logger.warning("handshake with \(peer) failing: \(why)")
        case .handshakeGaveUp:
            logger.warning("no handshake with \(peer) after 90 s of retries; trying again when there is something to send")
        case .endpointChanged:
            // The first peer's move is said by `receive`, which knows the addresses.
            if !one { logger.info("\(peer) is now at \(at)") }
        }
    }

    /// Seconds with one decimal, for logs.
    func fixed(_ nanoseconds: UInt64) -> String {
        let tenths = (nanoseconds + 50_000_000) / 100_000_000
        return "\(tenths / 10).\(tenths % 10)"
    }

    /// The batch slot of where a datagram goes: 0 for the endpoint (or an empty address, which names it),
    /// else a slot of `destinations`, converted once per batch and peer. Nil for an address the socket
    /// cannot reach (another IP version).
    func destinationSlot(_ to: EndpointAddress) -> Int? {
        if to.isEmpty || to == endpointAddress { return 0 }
        if lastDestinationSlot > 0 && to == lastDestination { return lastDestinationSlot }
        guard let storage = Self.socketAddress(to), storage.ss_family == socketFamily else { return nil }
        destinations[destinationCount] = storage
        lastDestination = to
        lastDestinationSlot = destinationCount
        destinationCount += 1
        return lastDestinationSlot
    }

    func sendBatch(_ count: Int) {
        // Group into messages: a run of equal-sized datagrams to one destination (and one shorter last
        // one) up to 64 KiB is one GSO message; anything else is a message of its own.
        var messageCount = 0
        var i = 0
        while i < count {
            let size = sendLengths[i]
            let destination = sendDestinations[i]
            var j = i + 1
            var total = size
            if segmentationOffload {
                while j < count && sendLengths[j] == size && sendDestinations[j] == destination && total + size <= 65_000 && j - i < 64 {
                    total += size
                    j += 1
                }
                if j < count && sendLengths[j] < size && sendDestinations[j] == destination && total + sendLengths[j] <= 65_000 && j - i < 64 {
                    total += sendLengths[j]
                    j += 1
                }
            }
            iovecs[messageCount] = iovec(iov_base: sendSlots.baseAddress! + sendOffsets[i], iov_len: total)
            gsoSizes[messageCount] = j - i > 1 ? UInt16(size) : 0
            datagramsIn[messageCount] = j - i
            if destination == 0 {
                messageNames[messageCount] = endpointStorage.pointee
                messageNameLengths[messageCount] = endpointLength
            } else {
                messageNames[messageCount] = destinations[destination]
                messageNameLengths[messageCount] = Self.length(of: destinations[destination])
            }
            messageCount += 1
            i = j
        }
        var sent = 0
        var attempts = 0
        while sent < messageCount && attempts < 4 {
            attempts += 1
            let rc = onetun_sendmmsg_gso(
                fd, messageNames + sent, messageNameLengths + sent, iovecs + sent, gsoSizes + sent, messages + sent,
                controls + 32 * sent, UInt32(messageCount - sent))
            if rc > 0 {
                sent += Int(rc)
                // A message refused part-way may have left an ICMP error on the queue, its notice taken.
                if sent < messageCount { readErrors() }
            } else if rc < 0 && (errno == EINTR || errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == EMSGSIZE) {
                // An ICMP error pending on the socket (IP_RECVERR) fails the next send once; its details
                // are on the error queue. Send again.
                if errno != EINTR { readErrors() }
                continue
            } else if rc < 0 && segmentationOffload && (errno == EIO || errno == EINVAL || errno == ENOPROTOOPT || errno == EOPNOTSUPP) && gsoSizes[sent] > 0 {
                // No UDP GSO here: send this batch and everything after datagram by datagram.
                logger.info("UDP segmentation offload refused (\(String(cString: strerror(errno)))); sending datagrams one by one")
                segmentationOffload = false
                var first = 0
                for m in 0..<sent { first += datagramsIn[m] }
                let rest = count - first
                for k in 0..<rest {
                    sendLengths[k] = sendLengths[first + k]
                    sendOffsets[k] = sendOffsets[first + k]
                    sendDestinations[k] = sendDestinations[first + k]
                }
                datagramsSent += first
                sendBatch(rest)
                return
            } else {
                break
            }
        }
        var delivered = 0
        for m in 0..<sent { delivered += datagramsIn[m] }
        datagramsSent += delivered
        if delivered < count {
            // The socket buffer is full (or the endpoint unreachable): UDP may drop, and the tunnel's
            // traffic recovers from loss; count it.
            sendFailures += count - delivered
            logger.debug("\(count - delivered) datagrams to the endpoint not sent: \(String(cString: strerror(errno)))")
        }
    }

    func rearm(_ now: Instant) {
        let deadline = core.nextDeadline()?.nanoseconds ?? .max
        if deadline != .max { noteLateness(deadline, now) }
        guard deadline != armedDeadline else { return }
        armedDeadline = deadline
        if deadline == .max {
            uv_timer_stop(timer)
            return
        }
        // Rounded up to whole milliseconds: an early wake-up is a harmless no-op, a late one is not.
        let ms = (deadline.subtractingReportingOverflow(now.nanoseconds).overflow ? 0 : deadline - now.nanoseconds + 999_999) / 1_000_000
        uv_timer_start(timer, { handle in
            let me = Unmanaged<TunnelLoop>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
            let now = TunnelLoop.now()
            me.noteLateness(me.armedDeadline, now)
            me.armedDeadline = .max
            me.core.handleTimeout(now: now)
        }, ms, 0)
    }

    /// A deadline of the core more than a second past means the loop did not run when it should have:
    /// the process was stopped or starved of CPU, or a call blocked the loop thread. Said at warning (once
    /// a minute at most), as it explains late retransmissions, time-outs and watchdog misses.
    func noteLateness(_ deadline: UInt64, _ now: Instant) {
        guard deadline >= runStarted, deadline < now.nanoseconds, now.nanoseconds - deadline > Nanos.second,
              lastLatenessReport == .zero || now.since(lastLatenessReport) >= 60 * Nanos.second else { return }
        lastLatenessReport = now
        logger.warning("the event loop ran \(fixed(now.nanoseconds - deadline)) s late: the process was stopped or starved of CPU, or something blocked it")
    }
}
