import CUV
import Glibc
import Logging
import OneTunCore

/// One local TCP port forwarded to a destination inside the tunnel.
public struct TCPForward {
    /// The resolved local address to listen on.
    public var listen: sockaddr_storage
    public var destination: IPAddress
    public var destinationPort: UInt16
    /// A name asked of the tunnel's DNS servers for each new client (the resolver caches it), instead of
    /// `destination`: a name inside the tunnel that moves is followed.
    public var destinationName: String?
    /// For logs and errors, e.g. "127.0.0.1:8080 -> 192.168.4.2:80".
    public var description: String

    public init(listen: sockaddr_storage, destination: IPAddress, destinationPort: UInt16, destinationName: String? = nil, description: String) {
        self.listen = listen
        self.destination = destination
        self.destinationPort = destinationPort
        self.destinationName = destinationName
        self.description = description
    }
}

// Local TCP forwards: a listener per forward, accepted clients, and moving bytes between each client and
// its virtual connection. `Client` and the service, deliver and teardown paths also carry the local
// connections of remote TCP forwards (RemoteTCPForwards.swift).
extension Forwarder {
    /// A listening socket of our own, polled by libuv, not a `uv_tcp_t` listener: out of descriptors
    /// (EMFILE), libuv's listener accepts and closes every waiting client to clear the condition; ours
    /// stops polling instead, the clients wait in the kernel's queue, and accepting resumes as soon as a
    /// descriptor is free (a connection closed, or 100 ms later).
    final class Listener {
        let poll = UnsafeMutablePointer<uv_poll_t>.allocate(capacity: 1)
        let fd: Int32
        /// A forward's; for a proxy only `listen` and `description` mean anything.
        let forward: TCPForward
        let index: Int
        /// A port forward, or a proxy whose clients say where they go (ProxyServices.swift).
        let proxy: ProxyListen?
        unowned let forwarder: Forwarder
        var paused = false
        /// The forward's (or proxy's) counters.
        let stats: ForwardStats?

        init(fd: Int32, forward: TCPForward, index: Int, proxy: ProxyListen? = nil, forwarder: Forwarder) {
            self.fd = fd
            self.forward = forward
            self.index = index
            self.proxy = proxy
            self.forwarder = forwarder
            stats = ForwardStats(kind: proxy == nil ? .tcp : .proxy, description: forward.description)
        }
    }

    final class Client {
        let handle = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
        let writeRequest = UnsafeMutablePointer<uv_write_t>.allocate(capacity: 1)
        let shutdownRequest = UnsafeMutablePointer<uv_shutdown_t>.allocate(capacity: 1)
        unowned let forwarder: Forwarder
        var id = -1
        let forward: Int
        /// False while a remote forward's local connection is still being made.
        var connected = true
        let connectRequest = UnsafeMutablePointer<uv_connect_t>.allocate(capacity: 1)
        var reading = false
        /// The client sent EOF (its half-close reached the connection as a FIN).
        var clientEOF = false
        var shutdownSent = false
        var writePending = false
        var closing = false
        var pending: UnsafeMutableRawBufferPointer?
        var bytesUp = 0
        var bytesDown = 0
        /// Its forward's counters (a port forward's client; a proxy's too), bumped with `bytesUp` and
        /// `bytesDown` and when its socket closes.
        var stats: ForwardStats?
        /// How much one read from the client may take: 4 KiB at first, doubled each time a read fills it,
        /// up to 64 KiB. A client that sends a little never makes its connection's send buffer grow.
        var readSize = 4096
        /// The virtual connection left SYN-SENT (a connect time-out is said differently from a later one).
        var synchronized = false
        let opened: Instant

        // A proxy's client (ProxyServices.swift), until it relays like a forward's.
        /// Where the handshake is; nil for a forward's client and once relaying.
        var proxy: ProxyPhase?
        /// The handshake's bytes read so far (a small buffer, freed once relaying); after the request,
        /// the bytes the client sent past it, kept for the connection.
        var head: UnsafeMutableRawBufferPointer?
        var headCount = 0
        /// When an unfinished handshake is given up.
        var negotiationDeadline = Instant.zero
        /// The destination the proxy's client asked for, once known.
        var destination: IPAddress?
        var destinationPort: UInt16 = 0
        var target = ""
        var resolveRequest: UnsafeMutablePointer<uv_getaddrinfo_t>?
        /// A uv_getaddrinfo for it is in flight.
        var resolving = false
        /// Bytes for the client that came while a chunk was pending (`sendSmall`).
        var queued: [UInt8] = []
        /// A SOCKS5 UDP association this connection controls.
        var association: SocksAssociation?
        /// A `--remote-socks5` UDP association this tunnel connection controls.
        var tunnelAssociation: TunnelSocksAssociation?
        // An HTTP proxy's client (HTTPProxyService.swift).
        var http: HTTPProxySession?
        /// Client bytes at the front of `head` the session counted as body, not yet in the send buffer.
        var relayOwed = 0
        /// Upstream bytes the session counted as passing, not yet written to the client.
        var passOwed = 0
        /// How the response ends once `passOwed` is written.
        var pendingEnd: HTTPExchangeEnd?
        /// A request head waiting for the upstream connection (or room in it).
        var upstreamBacklog: [UInt8] = []
        var upstreamEndReported = false
        /// Requests forwarded (the head time-out applies before the first).
        var requests = 0

        init(forwarder: Forwarder, forward: Int, now: Instant) {
            self.forwarder = forwarder
            self.forward = forward
            opened = now
        }

        /// Kept alive while the tunnel's resolver works on its name (the closure waiting for the answer
        /// holds it unowned).
        private var resolutionHold: Unmanaged<Client>?
        func retainForResolution() { resolutionHold = Unmanaged.passRetained(self) }
        func releaseAfterResolution() {
            resolutionHold?.release()
            resolutionHold = nil
        }

        deinit {
            handle.deallocate()
            writeRequest.deallocate()
            shutdownRequest.deallocate()
            connectRequest.deallocate()
            pending?.deallocate()
            head?.deallocate()
            resolveRequest?.deallocate()
        }
    }

    /// Listens on every forward's local address; throws naming the address when one cannot be used.
    public func listen(_ forwards: [TCPForward]) throws(LoopError) {
        for forward in forwards {
            try listen(forward, proxy: nil)
            logger.info("forwarding TCP \(forward.description)")
        }
    }

    /// A listener on `forward.listen`, serving the forward or `proxy`.
    func listen(_ forward: TCPForward, proxy: ProxyListen?) throws(LoopError) {
        do {
            var address = forward.listen
            let family = Int32(address.ss_family)
            let length = socklen_t(family == AF_INET6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
            let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var error = fd < 0 ? errno : 0
            if fd >= 0 {
                var one: Int32 = 1
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
                let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
                if bound != 0 || Glibc.listen(fd, 1024) != 0 { error = errno }
            }
            guard error == 0 else {
                if fd >= 0 { close(fd) }
                throw LoopError("cannot listen on \(forward.description.split(separator: " ").first ?? ""): \(String(cString: uv_strerror(-error)))")
            }
            let listener = Listener(fd: fd, forward: forward, index: listeners.count, proxy: proxy, forwarder: self)
            let rc = uv_poll_init_socket(driver.loop, listener.poll, fd)
            guard rc == 0 else {
                close(fd)
                throw LoopError("cannot listen on \(forward.description.split(separator: " ").first ?? ""): \(String(cString: uv_strerror(rc)))")
            }
            listener.poll.pointee.data = Unmanaged.passUnretained(listener).toOpaque()
            startAccepting(listener)
            listeners.append(listener)
            if let stats = listener.stats { forwardStats.append(stats) }
        }
    }

    func startAccepting(_ listener: Listener) {
        listener.paused = false
        uv_poll_start(listener.poll, Int32(UV_READABLE.rawValue)) { poll, status, _ in
            let listener = Unmanaged<Listener>.fromOpaque(poll!.pointee.data).takeUnretainedValue()
            guard status == 0 else {
                // libuv stopped the poll (an error on the socket): try again shortly.
                listener.paused = true
                listener.forwarder.scheduleAcceptRetry()
                return
            }
            listener.forwarder.acceptWaiting(listener)
        }
    }

    // MARK: Accepting

    /// Accepts the clients waiting on `listener`, a bounded number per loop iteration (the poll is level-
    /// triggered: the rest come next time).
    func acceptWaiting(_ listener: Listener) {
        guard !shuttingDown else { return }
        for _ in 0..<256 {
            let fd = onetun_accept4(listener.fd, nil, nil, Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue))
            if fd >= 0 {
                accept(listener, fd: fd)
                continue
            }
            let error = errno
            switch error {
            case EINTR, ECONNABORTED:
                continue
            case EAGAIN, EWOULDBLOCK:
                return
            case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                // Out of descriptors (or kernel memory): the clients wait in the queue until one is free.
                uv_poll_stop(listener.poll)
                listener.paused = true
                scheduleAcceptRetry()
                if let held = acceptErrorWarnings.allow(TunnelLoop.now()) {
                    logger.warning("accepting on \(listener.forward.description): \(String(cString: strerror(error))); clients wait until a descriptor is free (raise the limit with ulimit -n, or lower --max-connections)\(Throttle.note(held))")
                }
                return
            default:
                if let held = acceptErrorWarnings.allow(TunnelLoop.now()) {
                    logger.warning("accepting on \(listener.forward.description): \(String(cString: strerror(error)))\(Throttle.note(held))")
                }
                return
            }
        }
    }

    /// Listeners paused for want of a descriptor try again: at once when a connection closes, else in
    /// 100 ms.
    func resumeAccepting() {
        guard !shuttingDown else { return }
        for listener in listeners where listener.paused { startAccepting(listener) }
    }

    func scheduleAcceptRetry() {
        uv_timer_start(timerHandle(&acceptRetryTimer), { timer in
            let me = Unmanaged<Forwarder>.fromOpaque(timer!.pointee.data).takeUnretainedValue()
            if !me.shuttingDown { me.resumeAccepting() }
        }, 100, 0)
    }

    func accept(_ listener: Listener, fd: Int32) {
        let forward = listener.forward
        let now = TunnelLoop.now()
        let client = Client(forwarder: self, forward: listener.index, now: now)
        uv_tcp_init(driver.loop, client.handle)
        client.handle.pointee.data = Unmanaged.passRetained(client).toOpaque()
        guard uv_tcp_open(client.handle, fd) == 0 else {
            close(fd)
            uv_close(handle(client.handle), Self.closed)
            return
        }
        // Counted until its socket closes (`closed`), whatever happens to it.
        client.stats = listener.stats
        listener.stats?.opened += 1
        if let proxy = listener.proxy {
            acceptProxyClient(client, proxy, now: now)
            return
        }
        if let name = forward.destinationName {
            acceptNamedForwardClient(client, forward, name, now: now)
            return
        }
        guard admits("client of \(forward.description)", to: forward.destination, now: now) else {
            listener.stats?.refused += 1
            closeReset(client.handle)
            return
        }
        uv_tcp_nodelay(client.handle, 1)
        guard let id = core.connect(to: forward.destination, port: forward.destinationPort, now: now) else {
            let why = core.hasRoute(to: forward.destination) ? "no source address of its family, or no free port" : "no peer's AllowedIPs hold it"
            logger.error("cannot open a connection to \(forward.destination) port \(forward.destinationPort): \(why)")
            listener.stats?.refused += 1
            closeReset(client.handle)
            return
        }
        client.id = id
        while clients.count <= id { clients.append(nil) }
        clients[id] = client
        connectionsOpened += 1
        core.touched(id)
        startReading(client)
        logger.debug("connection \(id): client accepted on \(forward.description)")
    }

    // MARK: Client → tunnel

    func startReading(_ client: Client) {
        guard !client.reading, !client.clientEOF, !client.closing else { return }
        client.reading = true
        uv_read_start(stream(client.handle), Self.allocateRead, Self.didRead)
    }

    /// One pair of read callbacks for every client, proxy or not: a proxy's client in its handshake reads
    /// into its handshake buffer, any other straight into its connection's send buffer. So a proxy's
    /// client that starts relaying keeps reading as it was (no stop and restart: two epoll_ctl calls).
    static let allocateRead: uv_alloc_cb = { handle, _, buf in
        let client = Unmanaged<Client>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
        if case .none = client.proxy {
            // An empty buffer means the send buffer is full.
            let region = client.forwarder.core.connection(client.id).sendRegion(maxBytes: client.readSize)
            buf!.pointee = uv_buf_init(region.baseAddress?.assumingMemoryBound(to: CChar.self), UInt32(region.count))
        } else {
            client.forwarder.handshakeBuffer(client, buf!)
        }
    }

    static let didRead: uv_read_cb = { handle, nread, _ in
        let client = Unmanaged<Client>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
        if case .none = client.proxy {
            client.forwarder.clientRead(client, nread)
        } else {
            client.forwarder.handshakeRead(client, nread)
        }
    }

    /// Whether a RST from the client waits in SO_ERROR (which reading it clears).
    func resetPending(_ client: Client) -> Bool {
        var descriptor = uv_os_fd_t()
        guard uv_fileno(handle(client.handle), &descriptor) == 0 else { return false }
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(descriptor, SOL_SOCKET, SO_ERROR, &error, &length) == 0 && error == ECONNRESET
    }

    func stopReading(_ client: Client) {
        guard client.reading else { return }
        client.reading = false
        uv_read_stop(stream(client.handle))
    }

    func clientRead(_ client: Client, _ nread: Int) {
        guard !client.closing else { return }
        let connection = core.connection(client.id)
        if nread > 0 {
            if nread >= client.readSize && client.readSize < 65_536 { client.readSize *= 2 }
            connection.commitSend(nread)
            client.bytesUp += nread
            client.stats?.bytesSent += nread
            core.touched(client.id)
            if connection.writableBytes == 0 { stopReading(client) }
        } else if nread == Int(UV_ENOBUFS.rawValue) {
            // The send buffer is full: resume when the connection has room (processEvents).
            stopReading(client)
        } else if nread == Int(UV_EOF.rawValue) && resetPending(client) {
            // Linux reads a RST that came after data as the end of the stream; the error waits in
            // SO_ERROR. A reset is passed on as one, so the destination cannot take an abort for a
            // complete upload.
            logger.debug("connection \(client.id): client reset the connection")
            teardown(client, reset: false, reason: "client reset")
        } else if nread == Int(UV_EOF.rawValue) {
            // Half-close: the FIN follows the data already queued.
            client.clientEOF = true
            stopReading(client)
            connection.close()
            core.touched(client.id)
            core.notify(client.id)
        } else if nread < 0 {
            logger.debug("connection \(client.id): client error \(String(cString: uv_strerror(Int32(nread))))")
            teardown(client, reset: false, reason: "client error")
        }
    }

    // MARK: Tunnel → client

    func service(_ client: Client) {
        let connection = core.connection(client.id)
        switch client.proxy {
        case .http:
            httpUpstreamChanged(client, connection)
            return
        case .remoteSocks5, .remoteSocks5Connecting, .remoteSocks5Closing, .remoteSocks5Associated:
            remoteSocksChanged(client, connection)
            return
        default:
            break
        }
        if client.proxy != nil {
            // A proxy's client waits for its connection to open before it hears the outcome.
            proxyConnectionChanged(client, connection)
            return
        }
        guard client.connected else {
            // A remote forward's local connection is still being made: only a reset matters now.
            if connection.state == .closed { teardown(client, reset: false, reason: "closed before the local connection was made") }
            return
        }
        if !client.writePending { deliver(client, connection) }
        if client.closing { return }
        if !client.synchronized && connection.state != .synSent && !connection.hasEnded { client.synchronized = true }
        if connection.hasEnded, let error = connection.error {
            // Reset by the destination, refused, or timed out: the client sees a reset at once.
            if error == .timedOut && !client.synchronized, let held = connectTimeoutWarnings.allow(TunnelLoop.now()) {
                let destination = client.destination ?? (client.forward >= 0 ? listeners[client.forward].forward.destination : nil)
                let tunnel = destination.flatMap { core.handshakeProblem(for: $0) }.map { "; the tunnel is down: \($0)" } ?? ""
                logger.warning("connection \(client.id): no answer from the destination within the connect time-out, client reset\(tunnel)\(Throttle.note(held))")
            }
            teardown(client, reset: true, reason: "\(error)")
            return
        }
        if !client.reading && !client.clientEOF && connection.writableBytes > 0 { startReading(client) }
        // The destination half-closed and every byte before its FIN reached the client: pass the FIN on.
        if connection.isReadClosed && !client.writePending && !client.shutdownSent {
            client.shutdownSent = true
            client.shutdownRequest.pointee.data = client.handle.pointee.data
            uv_shutdown(client.shutdownRequest, stream(client.handle)) { request, _ in
                let client = Unmanaged<Client>.fromOpaque(request!.pointee.data).takeUnretainedValue()
                client.forwarder.core.notify(client.id)
            }
        }
        switch connection.state {
        case .closed, .timeWait:
            if !client.writePending && connection.readableBytes == 0 {
                teardown(client, reset: false, reason: "closed")
            }
        default:
            break
        }
    }

    func deliver(_ client: Client, _ connection: TCPConnection) {
        var rounds = 0
        while rounds < 64 {
            rounds += 1
            let readable = connection.readable()
            if readable.isEmpty { return }
            var buf = uv_buf_init(UnsafeMutablePointer(mutating: readable.baseAddress!.assumingMemoryBound(to: CChar.self)), UInt32(readable.count))
            let n = Int(uv_try_write(stream(client.handle), &buf, 1))
            if n > 0 {
                connection.consume(n)
                client.bytesDown += n
                client.stats?.bytesReceived += n
                core.touched(client.id)
                if n == readable.count { continue }
            } else if n != Int(UV_EAGAIN.rawValue) && n != 0 {
                logger.debug("connection \(client.id): writing to the client failed: \(String(cString: uv_strerror(Int32(n))))")
                teardown(client, reset: true, reason: "client write failed")
                return
            }
            // The socket is full: copy one bounded chunk for uv_write and wait for it.
            let chunk = connection.readable()
            if chunk.isEmpty { return }
            let m = min(chunk.count, Self.pendingLimit)
            let pending = UnsafeMutableRawBufferPointer.allocate(byteCount: m, alignment: 16)
            client.pending = pending
            pending.copyMemory(from: UnsafeRawBufferPointer(rebasing: chunk[0..<m]))
            connection.consume(m)
            client.bytesDown += m
            client.stats?.bytesReceived += m
            core.touched(client.id)
            var out = uv_buf_init(pending.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(m))
            client.writePending = true
            client.writeRequest.pointee.data = client.handle.pointee.data
            uv_write(client.writeRequest, stream(client.handle), &out, 1) { request, status in
                let client = Unmanaged<Client>.fromOpaque(request!.pointee.data).takeUnretainedValue()
                client.writePending = false
                // The chunk is copied only while the client's socket is full; give it back once written
                // (a client that reads again needs none, and ten thousand idle ones would hold 2.5 GiB).
                client.pending?.deallocate()
                client.pending = nil
                guard !client.closing else { return }
                if status < 0 {
                    client.forwarder.teardown(client, reset: true, reason: "client write failed")
                } else {
                    client.forwarder.core.notify(client.id)
                }
            }
            return
        }
        // Still more after 64 rounds: come back in the next flush.
        core.notify(client.id)
    }

    // MARK: Closing

    func teardown(_ client: Client, reset: Bool, reason: String) {
        guard !client.closing else { return }
        client.closing = true
        stopReading(client)
        if client.resolving, let request = client.resolveRequest {
            // A resolution in flight finds the client closing; libuv may still cancel it.
            _ = uv_cancel(UnsafeMutableRawPointer(request).assumingMemoryBound(to: uv_req_t.self))
        }
        proxyClients.removeValue(forKey: ObjectIdentifier(client))
        closeAssociation(client)
        closeTunnelAssociation(client)
        if client.head != nil && !client.writePending {
            client.head!.deallocate()
            client.head = nil
        }
        if reset {
            closeReset(client.handle)
        } else {
            uv_close(handle(client.handle), Self.closed)
        }
        // The closing line is built only when debug logging is on: a short connection would otherwise pay
        // for formatting a string nobody reads.
        let owned = client.id >= 0 && client.id < clients.count && clients[client.id] === client
        if logger.logLevel <= .debug {
            var tcp = ""
            if owned {
                let connection = core.connection(client.id)
                let stats = connection.stats
                tcp = "; TCP: \(stats.segmentsSent) segments sent, \(stats.retransmittedSegments) retransmitted, \(stats.fastRetransmits) fast recoveries, \(stats.timeouts) timeouts; \(connection.congestionSummary)"
            }
            let seconds = Double(TunnelLoop.now().since(client.opened)) / 1e9
            logger.debug("connection \(client.id): \(reason) after \((seconds * 1000).rounded() / 1000) s, \(client.bytesUp) bytes up, \(client.bytesDown) bytes down\(tcp)")
        }
        if owned { releaseConnection(client) }
        connectionsClosed += 1
        closedSinceTrim += 1
        if listeners.contains(where: { $0.paused }) { resumeAccepting() }
    }

    /// Lets go of the client's connection in the tunnel (it must hold it), keeping its retransmissions
    /// and time-outs in the totals `/metrics` reports (counters never go down).
    func releaseConnection(_ client: Client) {
        let stats = core.connection(client.id).stats
        departedRetransmissions += stats.retransmittedSegments
        departedTimeouts += stats.timeouts
        clients[client.id] = nil
        core.release(client.id)
    }

    /// Closes with a RST; libuv refuses that (UV_EINVAL) while a shutdown request is in flight, and then
    /// the socket is closed plainly (a FIN) rather than leaked.
    func closeReset(_ tcp: UnsafeMutablePointer<uv_tcp_t>) {
        if uv_tcp_close_reset(tcp, Self.closed) != 0 { uv_close(handle(tcp), Self.closed) }
    }

    static let closed: uv_close_cb = { handle in
        let client = Unmanaged<Client>.fromOpaque(handle!.pointee.data)
        client.takeUnretainedValue().stats?.closed += 1
        client.release()
    }
}
