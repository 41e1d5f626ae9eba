import CUV
import Glibc
import Logging
import OneTunCore

/// A remote forward: a port of our address inside the tunnel, forwarded to a local address.
public struct RemoteForward {
    public var port: UInt16
    public var destination: sockaddr_storage
    public var isUDP: Bool
    public var description: String
    /// Its counters, made by `listenRemote`.
    var stats: ForwardStats?

    public init(port: UInt16, destination: sockaddr_storage, isUDP: Bool, description: String) {
        self.port = port
        self.destination = destination
        self.isUDP = isUDP
        self.description = description
    }
}

/// TCP port forwarding on the libuv loop: a listener per forward; each accepted client gets a virtual
/// connection through the tunnel, and bytes move between the two with backpressure both ways.
///
/// Client → tunnel: the client socket is read straight into the connection's send buffer
/// (`sendRegion`); when that buffer is full, reading stops until the connection has room again, so the
/// client's own TCP window closes. Tunnel → client: bytes go from the connection's receive buffer to the
/// socket with `uv_try_write`, without a copy; only when the socket is full is a bounded chunk copied for
/// a `uv_write`, and nothing more is taken from the connection until it completes — its receive window
/// closes instead. Memory per connection is bounded by the two TCP buffers and that chunk.
public final class Forwarder {
    // Shared by every service.
    let core: TunnelCore
    let driver: TunnelLoop
    let logger: Logger
    var shuttingDown = false

    // TCP, local and remote forwards (LocalTCPForwards.swift, RemoteTCPForwards.swift): clients by
    // connection id.
    var clients: [Client?] = []
    public internal(set) var connectionsOpened = 0
    public internal(set) var connectionsClosed = 0
    /// TCP clients (local and remote forwards) and remote UDP flows open at once, at most: each holds a
    /// descriptor. Past it a new client is closed at once, a new flow's datagram dropped.
    public var maxConnections = Int.max
    public internal(set) var refusedOverLimit = 0
    public internal(set) var refusedWhileDown = 0
    /// Every forward's counters, in the order they were set up (local TCP, local UDP, remote).
    public internal(set) var forwardStats: [ForwardStats] = []
    /// Retransmitted segments and retransmission time-outs of the TCP connections already released.
    public internal(set) var departedRetransmissions = 0
    public internal(set) var departedTimeouts = 0
    var openConnections: Int { connectionsOpened - connectionsClosed + remoteFlows.count + associationsOpen }
    /// SOCKS5 UDP associations open (each holds a UDP socket).
    var associationsOpen = 0
    // One warning line per kind per 10 s, with a count of those held back.
    var overLimitWarnings = Throttle()
    var tunnelDownWarnings = Throttle()
    var connectTimeoutWarnings = Throttle()
    var acceptErrorWarnings = Throttle()
    /// Retries listeners paused for want of a descriptor (LocalTCPForwards.swift).
    var acceptRetryTimer: UnsafeMutablePointer<uv_timer_t>?
    /// Connections closed since memory was last handed back to the system (`scheduleTrim`), and the
    /// one-shot timer that does it (made at first use).
    var closedSinceTrim = 0
    /// `core.idleBytesReleased` at the last trim.
    var idleBytesAtTrim = 0
    static let trimAfterIdleBytes = 8 << 20
    var trimTimer: UnsafeMutablePointer<uv_timer_t>?
    /// Copied per client only when its socket is full (see above).
    static let pendingLimit = 256 << 10

    // Local TCP forwards (LocalTCPForwards.swift).
    var listeners: [Listener] = []

    /// `--stdio`'s one connection (StdioTunnel.swift), served beside the clients.
    var stdio: StdioTunnel?

    // Proxies (ProxyServices.swift): clients still in their handshake, oldest first, and the timer that
    // closes those past their deadline.
    var negotiating: [(client: Client, deadline: Instant)] = []
    var negotiationTimer: UnsafeMutablePointer<uv_timer_t>?
    /// Every proxy client not yet closed (one between two requests, or resolving a name, has no
    /// connection id): shutdown closes them.
    var proxyClients: [ObjectIdentifier: Client] = [:]
    /// Runs `shutdown` on the next loop turn (from inside a flush it would close handles the flush uses).
    var shutdownTimer: UnsafeMutablePointer<uv_timer_t>?
    /// SOCKS5 UDP associations by the virtual port their datagrams leave from, the buffer their answers
    /// are put together in, and the datagrams they dropped (fragments, strangers, bad headers, names that
    /// did not resolve).
    var socksAssociationOfPort: [UInt16: SocksAssociation] = [:]
    /// `--remote-socks5` UDP associations by their relay port in the tunnel (RemoteSocks5.swift).
    var tunnelAssociationOfPort: [UInt16: TunnelSocksAssociation] = [:]
    /// `resolveHere`'s lookups in flight, cancelled at shutdown.
    var resolvingHere: Set<UnsafeMutablePointer<uv_getaddrinfo_t>> = []
    lazy var socksUDPBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65_536 + 22, alignment: 16)
    public internal(set) var socksDatagramsDropped = 0
    /// Who waits for each name the tunnel's resolver works on.
    var resolutions: [DNSToken: (DNSOutcome) -> Void] = [:]

    // UDP, local and remote forwards (LocalUDPForwards.swift, RemoteUDPForwards.swift): one receive
    // buffer for every UDP socket, and the datagram counters.
    let udpBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65_536, alignment: 16)
    public internal(set) var datagramsForwarded = 0
    public internal(set) var datagramsReturned = 0
    public internal(set) var datagramsDropped = 0

    /// A libuv buffer over a datagram's payload (a view into the core's queue, sent without a copy); an
    /// empty payload may have no address, and libuv wants one, so it gets `udpBuffer`'s.
    func datagramBuffer(_ payload: UnsafeRawBufferPointer) -> uv_buf_t {
        let base = UnsafeMutableRawPointer(mutating: payload.baseAddress ?? UnsafeRawPointer(udpBuffer.baseAddress!))
        return uv_buf_init(base.assumingMemoryBound(to: CChar.self), UInt32(payload.count))
    }

    // Local UDP forwards (LocalUDPForwards.swift).
    var udpListeners: [UDPListener] = []
    /// Which UDP listener a virtual port's client last wrote to: its replies leave from that listener's
    /// socket (two forwards may share a destination). -1: none; allocated with the first UDP listener.
    var udpListenerOfPort: [Int32] = []
    /// The first UDP listener for each destination: replies to a client that wrote to two forwards from
    /// one socket (one virtual port) come back through the forward of the destination that answers.
    var udpListenerByDestination: [UDPEndpoint: Int] = [:]

    // Remote TCP forwards (RemoteTCPForwards.swift).
    var remoteTCP: [UInt16: RemoteForward] = [:]

    // `--remote-socks5` (RemoteSocks5.swift): its port in the tunnel and the credentials it asks for.
    var remoteSocks: (port: UInt16, credentials: Socks5Server.Credentials?)?

    // Remote UDP forwards (RemoteUDPForwards.swift).
    var remoteUDP: [UInt16: RemoteForward] = [:]
    var remoteFlows: [RemoteFlowKey: RemoteFlow] = [:]
    var flowList = FlowList()
    /// Armed to the oldest remote flow's idle expiry (RemoteUDPForwards.swift); made at first use.
    var flowTimer: UnsafeMutablePointer<uv_timer_t>?
    /// Remote UDP flows (one local socket each) kept at most; past it the least recently used closes.
    static let maximumRemoteFlows = 1024

    public init(core: TunnelCore, driver: TunnelLoop, logger: Logger) {
        self.core = core
        self.driver = driver
        self.logger = logger
        driver.beforeTransmit = { [unowned self] in self.processEvents() }
        driver.onSignal = { [unowned self] in self.shutdown() }
    }

    // MARK: Remote forwards

    /// Listens on each remote forward's port of our address inside the tunnel.
    public func listenRemote(_ forwards: [RemoteForward]) {
        for var forward in forwards {
            let stats = ForwardStats(kind: forward.isUDP ? .remoteUDP : .remoteTCP, description: forward.description)
            forward.stats = stats
            forwardStats.append(stats)
            if forward.isUDP {
                remoteUDP[forward.port] = forward
                // Local UDP forwards' virtual ports never take it, or the remote forward would get their replies.
                core.udpPorts.reserve(forward.port)
            } else {
                remoteTCP[forward.port] = forward
                core.listen(port: forward.port)
            }
            logger.info("forwarding remote \(forward.isUDP ? "UDP" : "TCP") \(forward.description)")
        }
    }

    // MARK: Events

    /// Acts on every connection whose state changed: moves bytes, propagates half-close, closes.
    func processEvents() {
        if !resolutions.isEmpty { deliverResolutions() }
        returnDatagrams()
        acceptRemote()
        var budget = 100_000
        while budget > 0, let id = core.pollEvent() {
            budget -= 1
            if let stdio, id == stdio.id {
                stdio.service()
                continue
            }
            guard id < clients.count, let client = clients[id], !client.closing else { continue }
            service(client)
        }
        if budget == 0 { driver.continueNextIteration() }
        // A real drop: more closed since the last trim than are open now (steady churn trims seldom), or
        // as many left the core's tables (TIME-WAIT ends two seconds after the client went).
        // Or idle connections gave back their buffers (the holes they leave between live objects are
        // whole pages a trim returns).
        if closedSinceTrim >= max(64, openConnections) || core.tablesWantCompaction
            || core.idleBytesReleased &- idleBytesAtTrim >= Self.trimAfterIdleBytes {
            scheduleTrim()
        }
    }

    /// Process-wide, once at start: blocks of 256 KiB and more (a fast connection's TCP buffers) get
    /// mappings of their own, returned to the system when freed. glibc's default threshold rises to the
    /// largest block freed, so buffers that grow step by step came from the heap, and its holes outlived
    /// them. For the program that owns the process; an embedder decides its allocator's policy itself, and
    /// an operator's `MALLOC_MMAP_THRESHOLD_` (glibc's own setting) is left in force.
    public static func mapLargeBlocksSeparately() {
        guard getenv("MALLOC_MMAP_THRESHOLD_") == nil else { return }
        mallopt(M_MMAP_THRESHOLD, 256 << 10)
    }

    /// A second after many connections closed or idle ones gave back 8 MiB of buffers, gives the heap's
    /// free pages back to the system: glibc
    /// keeps them otherwise, and a wave of ten thousand connections would leave the process that much
    /// larger for good. One trim per second at most, however fast connections come and go (it walks the
    /// heap's free lists).
    func scheduleTrim() {
        guard !shuttingDown else { return }
        let timer = timerHandle(&trimTimer)
        guard uv_is_active(UnsafeMutableRawPointer(timer).assumingMemoryBound(to: uv_handle_t.self)) == 0 else { return }
        uv_timer_start(timer, { timer in
            let me = Unmanaged<Forwarder>.fromOpaque(timer!.pointee.data).takeUnretainedValue()
            me.closedSinceTrim = 0
            me.idleBytesAtTrim = me.core.idleBytesReleased
            me.core.compactTables()
            var top = me.clients.count
            while top > 0 && me.clients[top - 1] == nil { top -= 1 }
            if top < me.clients.count { me.clients = Array(me.clients[0..<top]) }
            malloc_trim(0)
        }, 1000, 0)
    }

    // MARK: Shutdown

    /// SIGINT/SIGTERM: stop listening, reset every virtual connection (the destinations see a RST, not
    /// a half-open connection), close the clients, send what is pending and stop the loop.
    public func shutdown() {
        guard !shuttingDown else { return }
        shuttingDown = true
        for listener in listeners {
            listener.paused = false
            uv_poll_stop(listener.poll)
            close(listener.fd)
            uv_close(UnsafeMutableRawPointer(listener.poll).assumingMemoryBound(to: uv_handle_t.self)) { $0!.deallocate() }
        }
        for listener in udpListeners {
            uv_udp_recv_stop(listener.handle)
            uv_close(UnsafeMutableRawPointer(listener.handle).assumingMemoryBound(to: uv_handle_t.self)) { handle in
                handle!.deallocate()
            }
        }
        for client in clients.compactMap({ $0 }) { teardown(client, reset: false, reason: "shutting down") }
        for client in Array(proxyClients.values) { teardown(client, reset: false, reason: "shutting down") }
        if let stdio, !stdio.finished { stdio.fail("interrupted") }
        for flow in Array(remoteFlows.values) { closeFlow(flow) }
        // One already running on libuv's thread pool cannot be cancelled and would hold the loop for the
        // resolver's time-out: the loop then ends with this iteration.
        for request in resolvingHere where uv_cancel(UnsafeMutableRawPointer(request).assumingMemoryBound(to: uv_req_t.self)) != 0 {
            uv_stop(driver.loop)
        }
        negotiating = []
        for case let timer? in [trimTimer, acceptRetryTimer, flowTimer, negotiationTimer, shutdownTimer] {
            uv_timer_stop(timer)
            uv_close(UnsafeMutableRawPointer(timer).assumingMemoryBound(to: uv_handle_t.self)) { $0!.deallocate() }
        }
        (trimTimer, acceptRetryTimer, flowTimer, negotiationTimer, shutdownTimer) = (nil, nil, nil, nil, nil)
        remoteUDP = [:]
        let wg = core.stats.wireGuard
        logger.info("shutting down after \(connectionsOpened) connections; \(driver.datagramsSent) datagrams sent (\(driver.sendFailures) not sent), \(driver.datagramsReceived) received; WireGuard dropped \(wg.dropped) in, \(core.packetsDropped) out\(wg.droppedSourceNotAllowed > 0 ? "; \(wg.droppedSourceNotAllowed) from a source their peer may not use" : "")")
        driver.stop()
    }

    /// `shutdown` once the current flush is over.
    func shutdownSoon() {
        guard !shuttingDown else { return }
        uv_timer_start(timerHandle(&shutdownTimer), { timer in
            Unmanaged<Forwarder>.fromOpaque(timer!.pointee.data).takeUnretainedValue().shutdown()
        }, 0, 0)
    }

    /// Whether the tunnel can take a new client now; logs why not (rate-limited). While handshakes are
    /// known to be failing the client is refused at once, rather than left to wait for its connect
    /// time-out, and the tunnel is asked to try again. `counted`: the client holds a place under
    /// `maxConnections` already (a proxy's, counted when accepted).
    func admits(_ what: String, to destination: IPAddress, now: Instant, counted: Bool = false) -> Bool {
        guard counted || underLimit(what, now: now) else { return false }
        // The peer that carries the destination (several peers: another may be down, that is no reason).
        if let problem = core.handshakeProblem(for: destination) {
            refusedWhileDown += 1
            core.retryHandshake(for: destination, now: now)
            if let held = tunnelDownWarnings.allow(now) {
                logger.warning("\(what) reset: the tunnel is down (\(problem))\(Throttle.note(held))")
            }
            return false
        }
        // A peer without an Endpoint that has not called us yet: nothing reaches it until it does.
        if core.awaitsCall(for: destination) {
            refusedWhileDown += 1
            if let held = tunnelDownWarnings.allow(now) {
                logger.warning("\(what) reset: the peer that carries \(destination) has no Endpoint and has not called us yet\(Throttle.note(held))")
            }
            return false
        }
        return true
    }

    /// Whether one more connection or flow fits under `maxConnections`; logs why not (rate-limited).
    func underLimit(_ what: String, now: Instant) -> Bool {
        guard openConnections >= maxConnections else { return true }
        refusedOverLimit += 1
        if let held = overLimitWarnings.allow(now) {
            logger.warning("\(what) refused: \(maxConnections) connections open (--max-connections)\(Throttle.note(held))")
        }
        return false
    }

    /// The timer in `slot`, made on first use (its callbacks find the forwarder in `data`).
    func timerHandle(_ slot: inout UnsafeMutablePointer<uv_timer_t>?) -> UnsafeMutablePointer<uv_timer_t> {
        if let timer = slot { return timer }
        let timer = UnsafeMutablePointer<uv_timer_t>.allocate(capacity: 1)
        uv_timer_init(driver.loop, timer)
        timer.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        slot = timer
        return timer
    }

    @inline(__always) func stream(_ p: UnsafeMutablePointer<uv_tcp_t>) -> UnsafeMutablePointer<uv_stream_t> {
        UnsafeMutableRawPointer(p).assumingMemoryBound(to: uv_stream_t.self)
    }

    @inline(__always) func handle(_ p: UnsafeMutablePointer<uv_tcp_t>) -> UnsafeMutablePointer<uv_handle_t> {
        UnsafeMutableRawPointer(p).assumingMemoryBound(to: uv_handle_t.self)
    }
}

/// At most one log line per `interval`, counting the ones held back in between.
struct Throttle {
    var last: Instant?
    var held = 0
    static let interval: UInt64 = 10 * Nanos.second

    /// nil: hold this one back; otherwise how many were held back since the last line.
    mutating func allow(_ now: Instant) -> Int? {
        if let last, now.since(last) < Self.interval {
            held += 1
            return nil
        }
        last = now
        defer { held = 0 }
        return held
    }

    static func note(_ held: Int) -> String { held > 0 ? " (and \(held) more since the last such line)" : "" }
}
