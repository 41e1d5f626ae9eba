import CUV
import Glibc
import Logging
import OneTunCore

/// A proxy listening here: SOCKS5 (`--socks5`, wireproxy's `[Socks5]`) or HTTP (`--http-proxy`, `[http]`).
public struct ProxyListen {
    public enum Kind: Sendable { case socks5, http }
    public var kind: Kind
    /// The resolved local address to listen on.
    public var listen: sockaddr_storage
    /// Asked of every client when set (RFC 1929 for SOCKS5, Basic for HTTP).
    public var username: [UInt8]?
    public var password: [UInt8]?
    /// For logs: "127.0.0.1:1080".
    public var description: String

    public init(kind: Kind, listen: sockaddr_storage, username: [UInt8]? = nil, password: [UInt8]? = nil, description: String) {
        self.kind = kind
        self.listen = listen
        self.username = username
        self.password = password
        self.description = description
    }
}

/// Where a proxy's client is, before it relays like a forward's client.
enum ProxyPhase {
    /// Reading the SOCKS5 greeting, authentication and request.
    case socks5(Socks5Server)
    /// The request is read: the name is being resolved, or the connection through the tunnel opening;
    /// the reply waits for the outcome.
    case socks5Connecting
    /// A refusal is sent: what the client still sends is read and dropped until it closes (closing with
    /// unread input would reset the connection and could destroy the reply), or the deadline.
    case draining
    /// An HTTP proxy's client: its session (`Client.http`) says what each byte is, until a CONNECT's
    /// tunnel opens (then it relays like a forward's client).
    case http
    /// A port forward's client whose destination is a name: resolved through the tunnel, then connected,
    /// then relayed (no reply; a failure resets the client, as for any forward).
    case forwardResolving
    /// `--remote-socks5`: a connection from the tunnel reading its handshake, then waiting for the local
    /// connection to its destination, or closing after a refusal.
    case remoteSocks5(Socks5Server)
    case remoteSocks5Connecting
    case remoteSocks5Closing
    /// A `--remote-socks5` UDP association's control connection (`Client.tunnelAssociation`): read and
    /// dropped until it closes, which ends the association.
    case remoteSocks5Associated
    /// A SOCKS5 UDP association's control connection (`Client.association`): read and dropped until it
    /// closes, which ends the association.
    case associated
}

// Proxies: a listener per proxy (the accept path of LocalTCPForwards.swift), a handshake read into a small
// buffer, the destination resolved (without blocking the loop) and a connection through the tunnel opened;
// then the client is served exactly like a forward's, its bytes straight into the connection's buffers.
extension Forwarder {
    /// How long a client may take to finish its handshake (or, refused, to close) before it is closed.
    static let negotiationTimeout: UInt64 = 10 * Nanos.second
    /// The handshake buffer: the largest SOCKS5 message is 513 bytes; what a client pipelines past its
    /// request (kept for the connection) fits beside it.
    static let socksHeadSize = 4096

    /// Listens for every proxy; throws naming the address when one cannot be used.
    public func listenProxies(_ proxies: [ProxyListen]) throws(LoopError) {
        for proxy in proxies {
            if proxy.kind == .socks5, proxy.username != nil || proxy.password != nil,
               Socks5Server.Credentials(username: proxy.username ?? [], password: proxy.password ?? []) == nil {
                throw LoopError("SOCKS5 proxy on \(proxy.description): a user name and password are at most 255 bytes each (RFC 1929)")
            }
            if proxy.kind == .http, proxy.username != nil || proxy.password != nil,
               HTTPProxyCredentials(user: String(decoding: proxy.username ?? [], as: UTF8.self), password: String(decoding: proxy.password ?? [], as: UTF8.self)) == nil {
                throw LoopError("HTTP proxy on \(proxy.description): the user name cannot hold a colon (RFC 7617)")
            }
            let forward = TCPForward(listen: proxy.listen, destination: .v4(.unspecified), destinationPort: 0, description: proxy.description + " (\(proxy.kind == .socks5 ? "SOCKS5" : "HTTP proxy"))")
            try listen(forward, proxy: proxy)
            let auth = proxy.username != nil || proxy.password != nil ? ", with a user name and password" : ""
            logger.info("\(proxy.kind == .socks5 ? "SOCKS5" : "HTTP") proxy on \(proxy.description)\(auth)")
        }
    }

    /// A client of a forward to a name: counted, then the name is asked of the tunnel's DNS servers (each
    /// client's answer from the resolver's cache when it has one), then the connection opens.
    func acceptNamedForwardClient(_ client: Client, _ forward: TCPForward, _ name: String, now: Instant) {
        guard underLimit("client of \(forward.description)", now: now) else {
            closeReset(client.handle)
            return
        }
        uv_tcp_nodelay(client.handle, 1)
        connectionsOpened += 1
        proxyClients[ObjectIdentifier(client)] = client
        client.proxy = .forwardResolving
        client.target = "\(name):\(forward.destinationPort)"
        open(client, .name(name, port: forward.destinationPort))
    }

    /// A proxy's new client: counted against the connection limit, then its handshake is read.
    func acceptProxyClient(_ client: Client, _ proxy: ProxyListen, now: Instant) {
        guard underLimit("client of the proxy on \(proxy.description)", now: now) else {
            client.stats?.refused += 1
            closeReset(client.handle)
            return
        }
        uv_tcp_nodelay(client.handle, 1)
        connectionsOpened += 1
        switch proxy.kind {
        case .socks5:
            let credentials = proxy.username != nil || proxy.password != nil
                ? Socks5Server.Credentials(username: proxy.username ?? [], password: proxy.password ?? []) : nil
            client.proxy = .socks5(Socks5Server(credentials: credentials))
        case .http:
            acceptHTTPClient(client, proxy)
        }
        if client.head == nil { client.head = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.socksHeadSize, alignment: 16) }
        client.negotiationDeadline = now.adding(Self.negotiationTimeout)
        negotiating.append((client, client.negotiationDeadline))
        proxyClients[ObjectIdentifier(client)] = client
        scheduleNegotiationSweep()
        readHandshake(client)
    }

    // MARK: The handshake

    /// Reads the client (the read callbacks of LocalTCPForwards.swift send a client in its handshake to
    /// `handshakeRead`).
    func readHandshake(_ client: Client) {
        guard !client.reading, !client.closing else { return }
        client.reading = true
        uv_read_start(stream(client.handle), Self.allocateRead, Self.didRead)
    }

    /// Where a client in its handshake reads to: past what its handshake buffer holds (what is dropped,
    /// from the start).
    func handshakeBuffer(_ client: Client, _ buf: UnsafeMutablePointer<uv_buf_t>) {
        let head = client.head!
        if case .draining = client.proxy {
            buf.pointee = uv_buf_init(head.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(head.count))
        } else {
            buf.pointee = uv_buf_init(head.baseAddress!.advanced(by: client.headCount).assumingMemoryBound(to: CChar.self), UInt32(head.count - client.headCount))
        }
    }

    func handshakeRead(_ client: Client, _ nread: Int) {
        guard !client.closing else { return }
        if nread == Int(UV_ENOBUFS.rawValue) {
            stopReading(client)  // the buffer is full: read again once the session took some
            return
        }
        if case .http = client.proxy, client.http != nil {
            if nread == Int(UV_EOF.rawValue) {
                httpClientEnded(client)
            } else if nread < 0 {
                closeUpstream(client)
                teardown(client, reset: false, reason: "client error")
            } else if nread > 0 {
                client.headCount += nread
                driveHTTPClient(client)
            }
            return
        }
        if case .socks5Connecting = client.proxy, nread == Int(UV_EOF.rawValue), !resetPending(client) {
            // A half-close after the request: the FIN follows what came before it, once the connection is
            // open (startRelaying).
            client.clientEOF = true
            stopReading(client)
            return
        }
        if nread < 0 || nread == Int(UV_EOF.rawValue) {
            teardown(client, reset: false, reason: nread == Int(UV_EOF.rawValue) ? "the client closed during the proxy handshake" : "client error")
            return
        }
        guard nread > 0 else { return }
        switch client.proxy {
        case .socks5Connecting:
            // Bytes for the destination before the reply: kept behind the request's leftovers (reading
            // stops when the buffer is full, and resumes once relaying).
            client.headCount += nread
        case .draining, .associated:
            return  // dropped
        case .socks5(var server):
            let head = client.head!
            let chunk = UnsafeRawBufferPointer(rebasing: head[client.headCount..<(client.headCount + nread)])
            let step = server.receive(chunk)
            client.proxy = .socks5(server)
            if !step.output.isEmpty { sendSmall(client, step.output) }
            switch step.event {
            case .needMoreInput:
                return  // the machine kept the partial message; the buffer starts over
            case .refuse(let refusal):
                refuse(client, "SOCKS5 handshake refused: \(refusal)")
            case .connect(let target):
                // Keep what came after the request: the first bytes for the destination.
                let rest = nread - step.consumed
                if rest > 0 {
                    head.baseAddress!.copyMemory(from: head.baseAddress!.advanced(by: client.headCount + step.consumed), byteCount: rest)
                }
                client.headCount = rest
                client.proxy = .socks5Connecting
                client.target = "\(target)"
                open(client, target)
            case .udpAssociate(let stated):
                stopReading(client)
                associate(client, stated: stated)
            }
        case .http, .forwardResolving, .remoteSocks5, .remoteSocks5Connecting, .remoteSocks5Closing, .remoteSocks5Associated, nil:
            return
        }
    }

    /// After a refusal's reply: the write side closes, what the client still sends is dropped until it
    /// closes too (or the handshake deadline).
    func refuse(_ client: Client, _ why: String) {
        logger.debug("proxy client refused: \(why)")
        client.proxy = .draining
        client.headCount = 0
        if client.head == nil { client.head = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.socksHeadSize, alignment: 16) }
        // Its own deadline, the latest of all (the list stays in deadline order; an earlier entry of the
        // same client is passed over by the sweep, its deadline having moved).
        client.negotiationDeadline = TunnelLoop.now().adding(Self.negotiationTimeout)
        negotiating.append((client, client.negotiationDeadline))
        scheduleNegotiationSweep()
        if !client.shutdownSent {
            client.shutdownSent = true
            client.shutdownRequest.pointee.data = client.handle.pointee.data
            // A client that already half-closed (while its connection opened) is done with once the
            // reply and our FIN are out; any other sends until it closes, read and dropped.
            uv_shutdown(client.shutdownRequest, stream(client.handle)) { request, _ in
                let client = Unmanaged<Client>.fromOpaque(request!.pointee.data).takeUnretainedValue()
                if client.clientEOF && !client.closing { client.forwarder.teardown(client, reset: false, reason: "refused") }
            }
        }
        if !client.reading && !client.clientEOF { readHandshake(client) }
    }

    /// A few bytes for the client (a reply): written at once if the socket takes them, else copied as
    /// the client's pending chunk (nothing is delivered past it until it is written).
    /// Bytes for the client (a reply, a response head, a body chunk): written at once if the socket takes
    /// them, else copied as the client's pending chunk; bytes that come while a chunk is pending queue
    /// behind it (`queued`, written with the next chunk). The HTTP driver gives the session no client
    /// bytes while a write is pending, so the queue holds a reply or two at most.
    func sendSmall(_ client: Client, _ bytes: [UInt8]) {
        if client.writePending {
            client.queued += bytes
            return
        }
        var written = 0
        bytes.withUnsafeBytes { raw in
            var buf = uv_buf_init(UnsafeMutablePointer(mutating: raw.baseAddress!.assumingMemoryBound(to: CChar.self)), UInt32(raw.count))
            written = max(0, Int(uv_try_write(stream(client.handle), &buf, 1)))
        }
        guard written < bytes.count else { return }
        let rest = bytes.count - written
        let pending = UnsafeMutableRawBufferPointer.allocate(byteCount: rest, alignment: 16)
        bytes.withUnsafeBytes { pending.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[written...])) }
        client.pending = pending
        client.writePending = true
        client.writeRequest.pointee.data = client.handle.pointee.data
        var out = uv_buf_init(pending.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(rest))
        uv_write(client.writeRequest, stream(client.handle), &out, 1) { request, status in
            let client = Unmanaged<Client>.fromOpaque(request!.pointee.data).takeUnretainedValue()
            client.writePending = false
            client.pending?.deallocate()
            client.pending = nil
            guard !client.closing else { return }
            let forwarder = client.forwarder
            if status < 0 {
                forwarder.teardown(client, reset: true, reason: "client write failed")
                return
            }
            if !client.queued.isEmpty {
                let next = client.queued
                client.queued = []
                forwarder.sendSmall(client, next)
                if client.writePending { return }
            }
            if client.id >= 0 { forwarder.core.notify(client.id) }
            // An HTTP client's next bytes wait for its writes.
            if case .http = client.proxy {
                forwarder.driveHTTPClient(client)
                forwarder.driver.flush()
            }
        }
    }

    // MARK: The destination

    /// Resolves a name (off the loop thread), then opens the connection.
    func open(_ client: Client, _ target: ProxyTarget) {
        switch target {
        case .address(let address, let port):
            connect(client, to: address, port: port)
        case .name(let name, let port):
            client.destinationPort = port
            // Through the tunnel when DNS servers are configured, else on this machine.
            if let token = core.resolve(name: name, now: TunnelLoop.now()) {
                client.retainForResolution()
                resolutions[token] = { [unowned self] outcome in self.tunnelResolved(client, outcome) }
            } else {
                resolve(client, name, port)
            }
        }
    }

    /// Hands each answer of the tunnel's resolver to whoever asked (ProxyServices, StdioTunnel).
    func deliverResolutions() {
        while let (token, outcome) = core.pollResolution() {
            resolutions.removeValue(forKey: token)?(outcome)
        }
    }

    /// Whether `address` is one a connection can start for: of a version we have a tunnel address of,
    /// carried by a peer.
    func reachable(_ address: IPAddress) -> Bool {
        core.config.addresses.contains { $0.isV4 == address.isV4 } && core.hasRoute(to: address)
    }

    /// Of a name's addresses, the first `reachable` one, else the first (refused when connecting, with the
    /// reason); nil for none.
    func usableAddress(_ addresses: [IPAddress]) -> IPAddress? {
        addresses.first(where: reachable) ?? addresses.first
    }

    /// Copies as much of `bytes` into the connection's send buffer as it has room for; how much went.
    func copyToSendBuffer(_ connection: TCPConnection, _ bytes: UnsafeRawBufferPointer) -> Int {
        var offset = 0
        while offset < bytes.count {
            let region = connection.sendRegion(maxBytes: bytes.count - offset)
            if region.count == 0 { break }
            region.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + region.count)]))
            connection.commitSend(region.count)
            offset += region.count
        }
        return offset
    }

    func tunnelResolved(_ client: Client, _ outcome: DNSOutcome) {
        defer { client.releaseAfterResolution() }
        guard !client.closing, !shuttingDown else { return }
        guard case .addresses(let addresses) = outcome else {
            proxyFailed(client, .hostUnreachable, "cannot resolve \(client.target) through the tunnel: \(outcome)", http: .nameNotResolved)
            return
        }
        guard let address = usableAddress(addresses) else {
            proxyFailed(client, .hostUnreachable, "\(client.target) has no address", http: .nameNotResolved)
            return
        }
        connect(client, to: address, port: client.destinationPort)
    }

    func resolve(_ client: Client, _ name: String, _ port: UInt16) {
        let request = client.resolveRequest ?? UnsafeMutablePointer<uv_getaddrinfo_t>.allocate(capacity: 1)
        client.resolveRequest = request
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        // The request holds the client until its callback.
        request.pointee.data = Unmanaged.passRetained(client).toOpaque()
        client.destinationPort = port
        let rc = uv_getaddrinfo(driver.loop, request, { request, status, result in
            let client = Unmanaged<Client>.fromOpaque(request!.pointee.data).takeRetainedValue()
            client.resolving = false
            defer { if let result { uv_freeaddrinfo(result) } }
            client.forwarder.resolved(client, status, result)
        }, name, nil, &hints)
        client.resolving = rc == 0
        if rc != 0 {
            Unmanaged<Client>.fromOpaque(request.pointee.data).release()
            proxyFailed(client, .hostUnreachable, "cannot resolve \(name): \(String(cString: uv_strerror(rc)))", http: .nameNotResolved)
        }
    }

    func resolved(_ client: Client, _ status: Int32, _ result: UnsafeMutablePointer<addrinfo>?) {
        guard !client.closing, !shuttingDown else { return }
        guard status == 0 else {
            proxyFailed(client, .hostUnreachable, "cannot resolve \(client.target): \(String(cString: uv_strerror(status)))", http: .nameNotResolved)
            return
        }
        if let address = usableAddress(SocketAddressConversion.endpoints(result).map(\.address)) {
            connect(client, to: address, port: client.destinationPort)  // refused there, with the reason, if unusable
        } else {
            proxyFailed(client, .hostUnreachable, "\(client.target) has no IPv4 or IPv6 address", http: .nameNotResolved)
        }
    }

    /// Opens the connection through the tunnel; the reply waits for its outcome (`proxyConnectionChanged`).
    func connect(_ client: Client, to address: IPAddress, port: UInt16) {
        let now = TunnelLoop.now()
        client.destination = address
        guard core.config.addresses.contains(where: { $0.isV4 == address.isV4 }) else {
            proxyFailed(client, .addressTypeNotSupported, "\(address) is IPv\(address.isV4 ? 4 : 6) and we have no tunnel address of that version")
            return
        }
        guard core.hasRoute(to: address) else {
            proxyFailed(client, .hostUnreachable, "no peer's AllowedIPs hold \(address)")
            return
        }
        guard admits("client of the proxy for \(client.target)", to: address, now: now, counted: true) else {
            proxyFailed(client, .hostUnreachable, "the tunnel cannot reach \(address) now")
            return
        }
        guard let id = core.connect(to: address, port: port, now: now) else {
            proxyFailed(client, .generalFailure, "cannot open a connection to \(address): no free port")
            return
        }
        client.id = id
        client.upstreamEndReported = false
        while clients.count <= id { clients.append(nil) }
        clients[id] = client
        logger.debug("connection \(id): proxy client for \(client.target) (\(address.isV4 ? "\(address)" : "[\(address)]"):\(port))")
        // An HTTP request's head (and body) waited for the connection.
        if client.http != nil { driveHTTPClient(client) }
    }

    /// The proxy client's connection changed state: once it is open the client hears so and relays; if
    /// it failed, the client hears why and is closed.
    func proxyConnectionChanged(_ client: Client, _ connection: TCPConnection) {
        if case .forwardResolving = client.proxy {
            if connection.hasEnded {
                teardown(client, reset: true, reason: "\(connection.error.map { "\($0)" } ?? "closed") before the connection to \(client.target) opened")
            } else if connection.state != .synSent {
                startRelaying(client, connection)
            }
            return
        }
        guard case .socks5Connecting = client.proxy else { return }
        if connection.hasEnded || connection.state == .closed {
            let code: Socks5ReplyCode
            switch connection.error {
            case .refused: code = .connectionRefused
            case .timedOut: code = .ttlExpired
            case .unreachable: code = .hostUnreachable
            default: code = .generalFailure
            }
            proxyFailed(client, code, "the connection to \(client.target) failed: \(connection.error.map { "\($0)" } ?? "closed")")
            return
        }
        guard connection.state != .synSent else { return }
        // Open: the reply names the address and port the connection leaves from (ours in the tunnel).
        let source = core.config.addresses.first { $0.isV4 == client.destination?.isV4 } ?? .v4(.unspecified)
        sendSmall(client, Socks5Reply(.succeeded, bound: .address(source, port: connection.localPort)).bytes)
        startRelaying(client, connection)
    }

    /// The handshake is over: what the client sent past its request goes first, then its socket is read
    /// straight into the connection like a forward's client.
    func startRelaying(_ client: Client, _ connection: TCPConnection) {
        client.proxy = nil
        if let head = client.head {
            let offset = copyToSendBuffer(connection, UnsafeRawBufferPointer(rebasing: head[0..<client.headCount]))
            client.bytesUp += offset
            client.stats?.bytesSent += offset
            // A fresh connection's send buffer takes a handshake buffer's worth at once.
            assert(offset == client.headCount)
            head.deallocate()
            client.head = nil
            client.headCount = 0
            core.notify(client.id)
        }
        client.synchronized = true
        if client.clientEOF {
            // It half-closed while the connection opened.
            connection.close()
            core.notify(client.id)
        }
        service(client)
        if !client.reading && !client.closing && !client.clientEOF { startReading(client) }
    }

    /// Tells the client why its request failed (a SOCKS5 reply), then closes it.
    func proxyFailed(_ client: Client, _ code: Socks5ReplyCode, _ why: String, http: HTTPUpstreamFailure? = nil) {
        guard !client.closing else { return }
        client.stats?.refused += 1
        if case .forwardResolving = client.proxy {
            if let held = connectTimeoutWarnings.allow(TunnelLoop.now()) {
                logger.warning("client of the forward to \(client.target) reset: \(why)\(Throttle.note(held))")
            }
            teardown(client, reset: true, reason: why)
            return
        }
        if client.http != nil {
            let failure = http ?? (code == .addressTypeNotSupported ? .noRoute : .unreachable)
            logger.debug("HTTP proxy client for \(client.target): \(why)")
            closeUpstream(client)
            httpFailed(client, failure, why)
            return
        }
        logger.debug("proxy client for \(client.target.isEmpty ? "?" : client.target): \(why)")
        sendSmall(client, Socks5Reply(code).bytes)
        if client.id >= 0, client.id < clients.count, clients[client.id] === client {
            releaseConnection(client)
            client.id = -1
        }
        refuse(client, why)
    }

    // MARK: Deadlines

    /// Clients still in their handshake, in the order they came (one time-out for all, so the oldest is
    /// first); each sweep closes those past their deadline, and forgets those that finished.
    func scheduleNegotiationSweep() {
        guard !shuttingDown else { return }
        let timer = timerHandle(&negotiationTimer)
        guard uv_is_active(UnsafeMutableRawPointer(timer).assumingMemoryBound(to: uv_handle_t.self)) == 0 else { return }
        uv_timer_start(timer, { timer in
            let me = Unmanaged<Forwarder>.fromOpaque(timer!.pointee.data).takeUnretainedValue()
            me.sweepNegotiations()
        }, 1000, 1000)
    }

    func sweepNegotiations() {
        let now = TunnelLoop.now()
        var first = 0
        while first < negotiating.count {
            let (client, deadline) = negotiating[first]
            // An entry whose client's deadline moved (refused after a failed request) or that closed is
            // done with; the list is in entry-deadline order.
            if client.closing || client.negotiationDeadline != deadline {
                first += 1
                continue
            }
            let waiting: Bool
            switch client.proxy {
            case .socks5, .draining, .remoteSocks5, .remoteSocks5Closing: waiting = true
            case .http:
                // The head time-out applies to the first request (a slowloris); an idle keep-alive client
                // between requests holds a descriptor like any open connection.
                if client.requests == 0, case .awaitingHead = client.http?.phase { waiting = true } else { waiting = false }
            default: waiting = false
            }
            if !waiting {
                first += 1
                continue
            }
            guard deadline <= now else { break }
            first += 1
            teardown(client, reset: false, reason: "no complete proxy handshake within \(Self.negotiationTimeout / Nanos.second) s")
        }
        negotiating.removeFirst(first)
        if negotiating.isEmpty, let timer = negotiationTimer { uv_timer_stop(timer) }
    }
}

/// A SOCKS5 UDP association (RFC 1928 §7): a UDP socket of its own beside the proxy's listener, relaying
/// the client's datagrams (each with the SOCKS5 UDP header) through the tunnel from one virtual port, and
/// the answers back with the header naming where they came from. It lives as long as the TCP connection
/// that asked for it.
final class SocksAssociation {
    let handle = UnsafeMutablePointer<uv_udp_t>.allocate(capacity: 1)
    unowned let forwarder: Forwarder
    unowned let control: Forwarder.Client
    /// Only datagrams from the control connection's IP address are taken (and from the port the client
    /// stated, when it stated one); the first one fixes the client's UDP address.
    let clientIP: IPAddress
    let statedPort: UInt16
    var clientAddress: UDPEndpoint?
    /// The virtual port its datagrams leave the tunnel address from.
    var port: UInt16 = 0
    var names = AssociationNames()
    var closed = false

    init(forwarder: Forwarder, control: Forwarder.Client, clientIP: IPAddress, statedPort: UInt16) {
        self.forwarder = forwarder
        self.control = control
        self.clientIP = clientIP
        self.statedPort = statedPort
    }

    deinit { handle.deallocate() }
}

/// The names a SOCKS5 UDP association's datagrams are addressed to (in either direction): those already
/// resolved, and datagrams waiting for a name being resolved (a few, then dropped).
struct AssociationNames {
    private var known: [String: IPAddress] = [:]
    private var waiting: [(name: String, port: UInt16, payload: [UInt8])] = []
    private var resolving: Set<String> = []
    static let maximumWaiting = 64
    static let maximumNames = 256

    enum Route {
        case known(IPAddress)
        /// Kept until the name is known; `resolve` for the first datagram to it.
        case waiting(resolve: Bool)
        /// Too many datagrams waiting, or too many names.
        case dropped
    }

    /// A datagram to `name`: its address if known, else it waits (copied) for the name's answer.
    mutating func route(_ name: String, port: UInt16, payload: UnsafeRawBufferPointer) -> Route {
        if let address = known[name] { return .known(address) }
        guard waiting.count < Self.maximumWaiting, known.count < Self.maximumNames else { return .dropped }
        waiting.append((name, port, Array(payload)))
        return .waiting(resolve: resolving.insert(name).inserted)
    }

    /// `name`'s answer (nil: it did not resolve): remembered, and the datagrams that waited for it.
    mutating func answer(_ name: String, _ address: IPAddress?) -> [(port: UInt16, payload: [UInt8])] {
        resolving.remove(name)
        if let address { known[name] = address }
        let ready = waiting.filter { $0.name == name }.map { (port: $0.port, payload: $0.payload) }
        waiting.removeAll { $0.name == name }
        return ready
    }
}

extension Forwarder {
    /// Datagrams dropped at SOCKS5 associations: fragments (FRAG ≠ 0, never reassembled), malformed
    /// headers, strangers, and names that did not resolve.
    static let socksUDPBufferSize = 65_536

    /// UDP ASSOCIATE: a socket on the control connection's local address, port chosen by the system; the
    /// reply names it.
    func associate(_ client: Client, stated: ProxyTarget) {
        var local = sockaddr_storage()
        var length = Int32(MemoryLayout<sockaddr_storage>.size)
        var peer = sockaddr_storage()
        var peerLength = Int32(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_tcp_getsockname(client.handle, $0, &length) } }
        let peered = withUnsafeMutablePointer(to: &peer) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_tcp_getpeername(client.handle, $0, &peerLength) } }
        guard named == 0, peered == 0,
              let clientEndpoint = withUnsafePointer(to: &peer, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { SocketAddressConversion.endpoint($0) } })
        else {
            proxyFailed(client, .generalFailure, "UDP ASSOCIATE: the control connection's addresses are unknown")
            return
        }
        TunnelLoop.setPort(&local, 0)
        let statedPort: UInt16 = if case .address(_, let port) = stated { port } else { 0 }
        let association = SocksAssociation(forwarder: self, control: client, clientIP: clientEndpoint.address, statedPort: statedPort)
        guard underLimit("SOCKS5 UDP association", now: TunnelLoop.now()) else {
            proxyFailed(client, .generalFailure, "UDP ASSOCIATE: \(maxConnections) connections open (--max-connections)")
            return
        }
        var rc = uv_udp_init_ex(driver.loop, association.handle, UInt32(local.ss_family))
        guard rc == 0 else {
            proxyFailed(client, .generalFailure, "UDP ASSOCIATE: cannot open a UDP socket: \(String(cString: uv_strerror(rc)))")
            return
        }
        // Retained until its handle has closed (closeAssociation, or below on failure).
        association.handle.pointee.data = Unmanaged.passRetained(association).toOpaque()
        if rc == 0 {
            rc = withUnsafePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_udp_bind(association.handle, $0, 0) } }
        }
        var bound = sockaddr_storage()
        var boundLength = Int32(MemoryLayout<sockaddr_storage>.size)
        if rc == 0 {
            rc = withUnsafeMutablePointer(to: &bound) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_udp_getsockname(association.handle, $0, &boundLength) } }
        }
        if rc == 0 {
            rc = uv_udp_recv_start(association.handle, { handle, _, buf in
                let association = Unmanaged<SocksAssociation>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                let b = association.forwarder.udpBuffer
                buf!.pointee = uv_buf_init(b.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(b.count))
            }, { handle, nread, _, addr, _ in
                guard nread >= 0, let addr else { return }
                let association = Unmanaged<SocksAssociation>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                association.forwarder.associationDatagram(association, length: nread, from: addr)
            })
        }
        guard rc == 0, let endpoint = withUnsafePointer(to: &bound, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { SocketAddressConversion.endpoint($0) } }) else {
            uv_close(UnsafeMutableRawPointer(association.handle).assumingMemoryBound(to: uv_handle_t.self)) { handle in
                Unmanaged<SocksAssociation>.fromOpaque(handle!.pointee.data).release()
            }
            proxyFailed(client, .generalFailure, "UDP ASSOCIATE: cannot open a UDP socket: \(String(cString: uv_strerror(rc)))")
            return
        }
        associationsOpen += 1
        client.association = association
        client.proxy = .associated
        sendSmall(client, Socks5Reply(.succeeded, bound: .address(endpoint.address, port: endpoint.port)).bytes)
        logger.debug("SOCKS5 UDP association for \(clientEndpoint.address) on port \(endpoint.port)")
        // The control connection is read (and what it sends dropped) until it closes, which ends this.
        client.headCount = 0
        if !client.reading { readHandshake(client) }
    }

    func associationDatagram(_ association: SocksAssociation, length: Int, from addr: UnsafePointer<sockaddr>) {
        guard !association.closed, !shuttingDown, let source = SocketAddressConversion.endpoint(addr) else { return }
        guard source.address == association.clientIP, association.statedPort == 0 || association.statedPort == source.port,
              association.clientAddress == nil || association.clientAddress == source
        else {
            socksDatagramsDropped += 1
            return
        }
        let datagram: Socks5UDPDatagram
        do {
            datagram = try Socks5UDPDatagram(validating: UnsafeRawBufferPointer(rebasing: udpBuffer[0..<length]))
        } catch {
            socksDatagramsDropped += 1
            return
        }
        // The first well-formed datagram from the control connection's address fixes the client's port.
        association.clientAddress = source
        guard datagram.fragment == 0 else {
            socksDatagramsDropped += 1  // fragments are never reassembled (RFC 1928 §7 allows dropping them)
            return
        }
        switch datagram.target {
        case .address(let address, let port):
            sendAssociated(association, to: UDPEndpoint(address: address, port: port), datagram.payload)
        case .name(let name, let port):
            switch association.names.route(name, port: port, payload: datagram.payload) {
            case .known(let address): sendAssociated(association, to: UDPEndpoint(address: address, port: port), datagram.payload)
            case .waiting(let resolve): if resolve { resolveForAssociation(association, name) }
            case .dropped: socksDatagramsDropped += 1
            }
        }
    }

    func sendAssociated(_ association: SocksAssociation, to destination: UDPEndpoint, _ payload: UnsafeRawBufferPointer) {
        guard let client = association.clientAddress else { return }
        let now = TunnelLoop.now()
        let port = core.udpPorts.port(for: client, now: now)
        association.port = port
        socksAssociationOfPort[port] = association
        if core.sendDatagram(from: port, to: destination, payload: payload) {
            datagramsForwarded += 1
        } else {
            socksDatagramsDropped += 1
        }
    }

    /// A name a datagram is addressed to: through the tunnel's resolver when there is one, else on this
    /// machine; the datagrams waiting for it go once it is known.
    func resolveForAssociation(_ association: SocksAssociation, _ name: String) {
        let done: (IPAddress?) -> Void = { [unowned self] address in
            guard !association.closed else { return }
            let ready = association.names.answer(name, address)
            sendWaiting(ready, to: address) { sendAssociated(association, to: $0, $1) }
            logger.debug("SOCKS5 UDP association: \(name) is \(address.map { "\($0)" } ?? "unknown"); \(ready.count) datagrams waited for it")
        }
        // Only an address a datagram can go to (nothing tells the client of a refusal).
        let usable: ([IPAddress]) -> IPAddress? = { [unowned self] addresses in addresses.first(where: reachable) }
        if let token = core.resolve(name: name, now: TunnelLoop.now()) {
            resolutions[token] = { outcome in
                if case .addresses(let addresses) = outcome { done(usable(addresses)) } else { done(nil) }
            }
            return
        }
        resolveHere(name, socketType: SOCK_DGRAM) { done(usable($0)) }
    }

    /// The datagrams that waited for a name, sent now that its answer came; dropped (and counted) when it
    /// did not resolve.
    func sendWaiting(_ ready: [(port: UInt16, payload: [UInt8])], to address: IPAddress?, _ send: (UDPEndpoint, UnsafeRawBufferPointer) -> Void) {
        guard let address else {
            socksDatagramsDropped += ready.count
            return
        }
        for item in ready { item.payload.withUnsafeBytes { send(UDPEndpoint(address: address, port: item.port), $0) } }
    }

    /// Resolves `name` on this machine without blocking the loop (uv_getaddrinfo) and hands its addresses
    /// (none when it does not resolve) to `done`, then flushes: the answer comes outside the loop's flush.
    func resolveHere(_ name: String, socketType: __socket_type, _ done: @escaping ([IPAddress]) -> Void) {
        final class Box {
            let done: ([IPAddress]) -> Void
            let flush: () -> Void
            let finished: (UnsafeMutablePointer<uv_getaddrinfo_t>) -> Void
            init(_ done: @escaping ([IPAddress]) -> Void, flush: @escaping () -> Void, finished: @escaping (UnsafeMutablePointer<uv_getaddrinfo_t>) -> Void) {
                self.done = done
                self.flush = flush
                self.finished = finished
            }
        }
        let request = UnsafeMutablePointer<uv_getaddrinfo_t>.allocate(capacity: 1)
        let box = Box(done, flush: { [unowned self] in driver.flush() }, finished: { [unowned self] in resolvingHere.remove($0) })
        request.pointee.data = Unmanaged.passRetained(box).toOpaque()
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(socketType.rawValue)
        let rc = uv_getaddrinfo(driver.loop, request, { request, status, result in
            let box = Unmanaged<Box>.fromOpaque(request!.pointee.data).takeRetainedValue()
            box.finished(request!)
            let addresses = SocketAddressConversion.endpoints(status == 0 ? result : nil).map(\.address)
            if let result { uv_freeaddrinfo(result) }
            request!.deallocate()
            box.done(addresses)
            box.flush()
        }, name, nil, &hints)
        if rc != 0 {
            Unmanaged<Box>.fromOpaque(request.pointee.data).release()
            request.deallocate()
            done([])
        } else {
            resolvingHere.insert(request)
        }
    }

    /// An answer from the tunnel to an association's port: the SOCKS5 UDP header naming its source, then
    /// the payload, to the client. False when the port is no association's.
    func returnAssociated(_ d: TunnelCore.Datagram, now: Instant) -> Bool {
        guard let association = socksAssociationOfPort[d.destination.port] else { return false }
        guard !association.closed, let client = association.clientAddress,
              core.udpPorts.client(for: d.destination.port, now: now) == client
        else {
            // The port went to someone else (the pool reclaimed it): theirs, not ours.
            socksAssociationOfPort[d.destination.port] = nil
            return false
        }
        let header = Socks5UDPHeader.length(for: d.source.address)
        guard header + d.payload.count <= socksUDPBuffer.count else {
            socksDatagramsDropped += 1
            return true
        }
        Socks5UDPHeader.emit(source: d.source.address, port: d.source.port, into: UnsafeMutableRawBufferPointer(rebasing: socksUDPBuffer[0..<header]))
        UnsafeMutableRawBufferPointer(rebasing: socksUDPBuffer[header..<(header + d.payload.count)]).copyMemory(from: d.payload)
        var address = SocketAddressConversion.storage(client)
        var buf = uv_buf_init(socksUDPBuffer.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(header + d.payload.count))
        let rc = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_udp_try_send(association.handle, &buf, 1, $0) } }
        if rc < 0 { socksDatagramsDropped += 1 } else { datagramsReturned += 1 }
        return true
    }

    /// The control connection closed: so does the association.
    func closeAssociation(_ client: Client) {
        guard let association = client.association else { return }
        client.association = nil
        association.closed = true
        associationsOpen -= 1
        if socksAssociationOfPort[association.port] === association { socksAssociationOfPort[association.port] = nil }
        uv_udp_recv_stop(association.handle)
        uv_close(UnsafeMutableRawPointer(association.handle).assumingMemoryBound(to: uv_handle_t.self)) { handle in
            Unmanaged<SocksAssociation>.fromOpaque(handle!.pointee.data).release()
        }
    }
}
