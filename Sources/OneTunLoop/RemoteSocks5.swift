import CUV
import Glibc
import Logging
import OneTunCore

// `--remote-socks5 PORT`: a SOCKS5 server on our address inside the tunnel, so that the peers use this
// machine as their way out to the networks it reaches (wireproxy issue #175; wiretap's expose --dynamic).
// A connection accepted from the tunnel reads its handshake from the connection's receive buffer (bytes
// past the request stay there for the destination), the destination is resolved and connected here, and
// from then on the pair relays like a remote forward's.
extension Forwarder {
    /// Listens on `port` of every tunnel address, asking for `credentials` (RFC 1929) when given.
    public func listenRemoteSocks5(port: UInt16, username: [UInt8]?, password: [UInt8]?) throws(LoopError) {
        var credentials: Socks5Server.Credentials?
        if username != nil || password != nil {
            guard let c = Socks5Server.Credentials(username: username ?? [], password: password ?? []) else {
                throw LoopError("--remote-socks5: a user name and password are at most 255 bytes each (RFC 1929)")
            }
            credentials = c
        }
        remoteSocks = (port, credentials)
        core.listen(port: port)
        logger.info("SOCKS5 proxy on port \(port) of our tunnel address, for the peers\(credentials == nil ? "" : ", with a user name and password")")
    }

    /// A connection from the tunnel to the SOCKS5 port: its handshake is read as it arrives.
    func acceptRemoteSocks(_ id: Int, now: Instant) {
        let client = Client(forwarder: self, forward: -1, now: now)
        client.id = id
        client.connected = false
        client.proxy = .remoteSocks5(Socks5Server(credentials: remoteSocks?.credentials))
        uv_tcp_init(driver.loop, client.handle)
        client.handle.pointee.data = Unmanaged.passRetained(client).toOpaque()
        while clients.count <= id { clients.append(nil) }
        clients[id] = client
        connectionsOpened += 1
        // Its handshake has the proxies' deadline (a peer that never finishes it holds a connection).
        client.negotiationDeadline = now.adding(Self.negotiationTimeout)
        negotiating.append((client, client.negotiationDeadline))
        scheduleNegotiationSweep()
        logger.debug("connection \(id): SOCKS5 client from the tunnel")
        service(client)
    }

    /// The tunnel side of a remote SOCKS5 client changed: more handshake bytes, or it went away.
    func remoteSocksChanged(_ client: Client, _ connection: TCPConnection) {
        switch client.proxy {
        case .remoteSocks5(var server):
            if connection.hasEnded || connection.isReadClosed {
                teardown(client, reset: false, reason: "the tunnel's SOCKS5 client left during its handshake")
                return
            }
            while client.proxy != nil {
                let readable = connection.readable()
                if readable.isEmpty { return }
                let step = server.receive(readable)
                connection.consume(step.consumed)
                client.proxy = .remoteSocks5(server)
                if !step.output.isEmpty { _ = writeToTunnel(connection, step.output) }
                core.notify(client.id)
                switch step.event {
                case .needMoreInput:
                    continue
                case .refuse(let refusal):
                    closeRemoteSocks(client, connection, "SOCKS5 handshake from the tunnel refused: \(refusal)")
                    return
                case .udpAssociate:
                    _ = writeToTunnel(connection, Socks5Reply(.commandNotSupported).bytes)
                    closeRemoteSocks(client, connection, "UDP ASSOCIATE through --remote-socks5 is not supported")
                    return
                case .connect(let target):
                    client.proxy = .remoteSocks5Connecting
                    client.target = "\(target)"
                    remoteSocksOpen(client, target)
                    return
                }
            }
        case .remoteSocks5Closing:
            if connection.hasEnded { teardown(client, reset: false, reason: "refused") }
        case .remoteSocks5Connecting:
            if connection.hasEnded { teardown(client, reset: false, reason: "the tunnel's SOCKS5 client left while its destination was being reached") }
        default:
            break
        }
    }

    /// Writes a reply into the connection's send buffer (it is nearly empty during a handshake).
    func writeToTunnel(_ connection: TCPConnection, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { copyToSendBuffer(connection, $0) } == bytes.count
    }

    /// A refusal: the reply goes, then the connection closes in order (a FIN after the reply), and the
    /// client is let go once it has ended.
    func closeRemoteSocks(_ client: Client, _ connection: TCPConnection, _ why: String) {
        logger.debug("connection \(client.id): \(why)")
        client.proxy = .remoteSocks5Closing
        connection.close()
        core.notify(client.id)
    }

    /// `flush`: called from a libuv callback (not from within the loop's flush), so send now.
    func remoteSocksFailed(_ client: Client, _ code: Socks5ReplyCode, _ why: String, flush: Bool = false) {
        guard !client.closing, client.id >= 0 else { return }
        let connection = core.connection(client.id)
        _ = writeToTunnel(connection, Socks5Reply(code).bytes)
        closeRemoteSocks(client, connection, "SOCKS5 from the tunnel to \(client.target): \(why)")
        if flush { driver.flush() }
    }

    /// Resolves the target here (without blocking the loop) and connects to it from this machine.
    func remoteSocksOpen(_ client: Client, _ target: ProxyTarget) {
        switch target {
        case .address(let address, let port):
            var storage = SocketAddressConversion.storage(UDPEndpoint(address: address, port: port))
            remoteSocksConnect(client, &storage)
        case .name(let name, let port):
            let request = client.resolveRequest ?? UnsafeMutablePointer<uv_getaddrinfo_t>.allocate(capacity: 1)
            client.resolveRequest = request
            client.destinationPort = port
            var hints = addrinfo()
            hints.ai_family = AF_UNSPEC
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            request.pointee.data = Unmanaged.passRetained(client).toOpaque()
            let rc = uv_getaddrinfo(driver.loop, request, { request, status, result in
                let client = Unmanaged<Client>.fromOpaque(request!.pointee.data).takeRetainedValue()
                client.resolving = false
                defer { if let result { uv_freeaddrinfo(result) } }
                guard !client.closing else { return }
                // An IPv4 address first (a host may have AAAA records and no IPv6 route), else the first.
                var chosen: UDPEndpoint?
                var info = status == 0 ? result : nil
                while let i = info {
                    if let a = i.pointee.ai_addr, let e = SocketAddressConversion.endpoint(a) {
                        if e.address.isV4 { chosen = e; break }
                        chosen = chosen ?? e
                    }
                    info = i.pointee.ai_next
                }
                guard var endpoint = chosen else {
                    client.forwarder.remoteSocksFailed(client, .hostUnreachable, "cannot resolve it: \(String(cString: uv_strerror(status)))", flush: true)
                    return
                }
                endpoint.port = client.destinationPort
                var storage = SocketAddressConversion.storage(endpoint)
                client.forwarder.remoteSocksConnect(client, &storage, fromCallback: true)
            }, name, nil, &hints)
            client.resolving = rc == 0
            if rc != 0 {
                Unmanaged<Client>.fromOpaque(request.pointee.data).release()
                remoteSocksFailed(client, .hostUnreachable, "cannot resolve it: \(String(cString: uv_strerror(rc)))")
            }
        }
    }

    func remoteSocksConnect(_ client: Client, _ storage: inout sockaddr_storage, fromCallback: Bool = false) {
        client.connectRequest.pointee.data = client.handle.pointee.data
        let rc = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                uv_tcp_connect(client.connectRequest, client.handle, $0) { request, status in
                    let client = Unmanaged<Client>.fromOpaque(request!.pointee.data).takeUnretainedValue()
                    guard !client.closing else { return }
                    let forwarder = client.forwarder
                    if status < 0 {
                        let code: Socks5ReplyCode = switch status {
                        case Int32(UV_ECONNREFUSED.rawValue): .connectionRefused
                        case Int32(UV_ETIMEDOUT.rawValue): .ttlExpired
                        case Int32(UV_ENETUNREACH.rawValue): .networkUnreachable
                        case Int32(UV_EHOSTUNREACH.rawValue): .hostUnreachable
                        default: .generalFailure
                        }
                        forwarder.remoteSocksFailed(client, code, String(cString: uv_strerror(status)), flush: true)
                        return
                    }
                    // The reply names the address and port this machine connected from.
                    var local = sockaddr_storage()
                    var length = Int32(MemoryLayout<sockaddr_storage>.size)
                    let named = withUnsafeMutablePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_tcp_getsockname(client.handle, $0, &length) } }
                    let bound = named == 0 ? withUnsafePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { SocketAddressConversion.endpoint($0) } } : nil
                    let connection = forwarder.core.connection(client.id)
                    _ = forwarder.writeToTunnel(connection, Socks5Reply(.succeeded, bound: .address(bound?.address ?? .v4(.unspecified), port: bound?.port ?? 0)).bytes)
                    client.proxy = nil
                    client.connected = true
                    uv_tcp_nodelay(client.handle, 1)
                    forwarder.logger.debug("connection \(client.id): SOCKS5 from the tunnel to \(client.target)")
                    forwarder.startReading(client)
                    forwarder.core.notify(client.id)
                    forwarder.driver.flush()
                }
            }
        }
        if rc < 0 {
            remoteSocksFailed(client, rc == Int32(UV_EAFNOSUPPORT.rawValue) ? .addressTypeNotSupported : .generalFailure, String(cString: uv_strerror(rc)), flush: fromCallback)
        }
    }
}
