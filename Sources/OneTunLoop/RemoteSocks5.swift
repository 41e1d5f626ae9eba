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
                case .udpAssociate(let stated):
                    associateFromTunnel(client, connection, stated: stated)
                    return
                case .connect(let target):
                    client.proxy = .remoteSocks5Connecting
                    client.target = "\(target)"
                    remoteSocksOpen(client, target)
                    return
                }
            }
        case .remoteSocks5Closing:
            if connection.hasEnded { teardown(client, reset: false, reason: "SOCKS5 from the tunnel ended") }
        case .remoteSocks5Associated:
            // What the control connection carries is read and dropped; its end ends the association.
            var dropped = 0
            while true {
                let readable = connection.readable()
                if readable.isEmpty { break }
                dropped += readable.count
                connection.consume(readable.count)
            }
            if dropped > 0 { core.notify(client.id) }
            if connection.hasEnded {
                closeTunnelAssociation(client)
                teardown(client, reset: false, reason: "UDP association ended")
            } else if connection.isReadClosed {
                closeTunnelAssociation(client)
                closeRemoteSocks(client, connection, "the tunnel's SOCKS5 client closed its UDP association")
            }
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
                let endpoints = SocketAddressConversion.endpoints(status == 0 ? result : nil)
                guard var endpoint = endpoints.first(where: { $0.address.isV4 }) ?? endpoints.first else {
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

    // MARK: UDP ASSOCIATE from the tunnel

    /// UDP ASSOCIATE from the tunnel: a relay port of our tunnel address, reserved in the UDP port pool
    /// while the association lives, named in the reply with the address the client reached us at.
    func associateFromTunnel(_ client: Client, _ connection: TCPConnection, stated: ProxyTarget) {
        guard underLimit("SOCKS5 UDP association from the tunnel", now: TunnelLoop.now()) else {
            remoteSocksFailed(client, .generalFailure, "UDP ASSOCIATE: \(maxConnections) connections open (--max-connections)")
            return
        }
        guard tunnelAssociationOfPort.count < Self.maximumRemoteFlows else {
            remoteSocksFailed(client, .generalFailure, "UDP ASSOCIATE: \(Self.maximumRemoteFlows) associations from the tunnel open already")
            return
        }
        guard let port = core.udpPorts.reserveFree() else {
            remoteSocksFailed(client, .generalFailure, "UDP ASSOCIATE: no free UDP port on the tunnel address")
            return
        }
        let (local, remote) = core.addresses(of: client.id)
        let statedPort: UInt16 = if case .address(_, let p) = stated { p } else { 0 }
        let association = TunnelSocksAssociation(forwarder: self, relayPort: port, clientIP: remote, statedPort: statedPort)
        tunnelAssociationOfPort[port] = association
        client.tunnelAssociation = association
        associationsOpen += 1
        client.proxy = .remoteSocks5Associated
        client.target = "UDP relay on port \(port)"
        _ = writeToTunnel(connection, Socks5Reply(.succeeded, bound: .address(local, port: port)).bytes)
        core.notify(client.id)
        logger.debug("connection \(client.id): SOCKS5 UDP association from the tunnel for \(remote) on port \(port)")
    }

    /// A datagram from the tunnel to an association's relay port: from its client, whole (FRAG 0), with
    /// the SOCKS5 UDP header naming where it goes; it leaves this machine without the header.
    func tunnelAssociationDatagram(_ association: TunnelSocksAssociation, _ d: TunnelCore.Datagram) {
        guard !association.closed, d.source.address == association.clientIP,
              association.statedPort == 0 || association.statedPort == d.source.port,
              association.clientPort == nil || association.clientPort == d.source.port
        else {
            socksDatagramsDropped += 1
            return
        }
        let datagram: Socks5UDPDatagram
        do {
            datagram = try Socks5UDPDatagram(validating: d.payload)
        } catch {
            socksDatagramsDropped += 1
            return
        }
        // The first well-formed datagram from the client's address fixes its port.
        association.clientPort = d.source.port
        guard datagram.fragment == 0 else {
            socksDatagramsDropped += 1  // never reassembled (RFC 1928 §7 allows dropping fragments)
            return
        }
        switch datagram.target {
        case .address(let address, let port):
            sendFromTunnelAssociation(association, to: UDPEndpoint(address: address, port: port), datagram.payload)
        case .name(let name, let port):
            switch association.names.route(name, port: port, payload: datagram.payload) {
            case .known(let address):
                sendFromTunnelAssociation(association, to: UDPEndpoint(address: address, port: port), datagram.payload)
                return
            case .waiting(let resolve):
                if !resolve { return }
            case .dropped:
                socksDatagramsDropped += 1
                return
            }
            // Names resolve on this machine, as the destinations of CONNECT from the tunnel do; an IPv4
            // address first (a host may have AAAA records and no IPv6 route).
            resolveHere(name, socketType: SOCK_DGRAM) { [unowned self] addresses in
                guard !association.closed else { return }
                let address = addresses.first(where: \.isV4) ?? addresses.first
                let ready = association.names.answer(name, address)
                sendWaiting(ready, to: address) { sendFromTunnelAssociation(association, to: $0, $1) }
                logger.debug("SOCKS5 UDP association from the tunnel: \(name) is \(address.map { "\($0)" } ?? "unknown"); \(ready.count) datagrams waited for it")
            }
        }
    }

    func sendFromTunnelAssociation(_ association: TunnelSocksAssociation, to destination: UDPEndpoint, _ payload: UnsafeRawBufferPointer) {
        guard let socket = associationSocket(association, v4: destination.address.isV4) else {
            socksDatagramsDropped += 1
            return
        }
        var address = SocketAddressConversion.storage(destination)
        var buf = datagramBuffer(payload)
        let rc = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_udp_try_send(socket, &buf, 1, $0) } }
        if rc < 0 { socksDatagramsDropped += 1 } else { datagramsForwarded += 1 }
    }

    /// The association's socket for destinations of one family, opened at first use (bound by the
    /// system to any address and a free port when reading starts); nil when it cannot be opened.
    func associationSocket(_ association: TunnelSocksAssociation, v4: Bool) -> UnsafeMutablePointer<uv_udp_t>? {
        let slot = v4 ? 0 : 1
        if let socket = association.sockets[slot] { return socket }
        // One that could not be opened is not tried again for every datagram.
        guard !association.socketFailed[slot] else { return nil }
        let socket = UnsafeMutablePointer<uv_udp_t>.allocate(capacity: 1)
        var rc = uv_udp_init_ex(driver.loop, socket, UInt32(v4 ? AF_INET : AF_INET6))
        guard rc == 0 else {
            // Never initialized, so never closed.
            socket.deallocate()
            association.socketFailed[slot] = true
            logger.debug("SOCKS5 UDP association from the tunnel: cannot open a UDP socket: \(String(cString: uv_strerror(rc)))")
            return nil
        }
        // Retained until the handle has closed (closeTunnelAssociation, or below).
        socket.pointee.data = Unmanaged.passRetained(association).toOpaque()
        var any = SocketAddressConversion.storage(UDPEndpoint(address: v4 ? .v4(.unspecified) : .v6(.unspecified), port: 0))
        rc = withUnsafePointer(to: &any) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_udp_bind(socket, $0, 0) } }
        if rc == 0 {
            rc = uv_udp_recv_start(socket, { handle, _, buf in
                // Read past room for the header the answer gets, so it goes into the tunnel from there.
                let association = Unmanaged<TunnelSocksAssociation>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                let b = association.forwarder.socksUDPBuffer
                let room = Socks5UDPHeader.maxAddressHeaderLength
                buf!.pointee = uv_buf_init((b.baseAddress! + room).assumingMemoryBound(to: CChar.self), UInt32(b.count - room))
            }, { handle, nread, _, addr, _ in
                guard nread >= 0, let addr else { return }
                let association = Unmanaged<TunnelSocksAssociation>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                association.forwarder.answerToTunnelAssociation(association, length: nread, from: addr)
            })
        }
        guard rc == 0 else {
            logger.debug("SOCKS5 UDP association from the tunnel: cannot read its UDP socket: \(String(cString: uv_strerror(rc)))")
            association.socketFailed[slot] = true
            uv_close(UnsafeMutableRawPointer(socket).assumingMemoryBound(to: uv_handle_t.self), Self.closeAssociationSocket)
            return nil
        }
        association.sockets[slot] = socket
        return socket
    }

    /// An answer at an association's socket: the header naming its source goes in front of it (in the
    /// room left before it), and the whole datagram goes through the tunnel to the association's client.
    func answerToTunnelAssociation(_ association: TunnelSocksAssociation, length: Int, from addr: UnsafePointer<sockaddr>) {
        guard !association.closed, !shuttingDown, let port = association.clientPort, var source = SocketAddressConversion.endpoint(addr) else { return }
        if case .v6(let a) = source.address, let mapped = a.ipv4Mapped { source.address = .v4(mapped) }
        let room = Socks5UDPHeader.maxAddressHeaderLength
        let header = Socks5UDPHeader.length(for: source.address)
        let datagram = UnsafeMutableRawBufferPointer(rebasing: socksUDPBuffer[(room - header)..<(room + length)])
        Socks5UDPHeader.emit(source: source.address, port: source.port, into: datagram)
        if core.sendDatagram(from: association.relayPort, to: UDPEndpoint(address: association.clientIP, port: port), payload: UnsafeRawBufferPointer(datagram)) {
            datagramsReturned += 1
        } else {
            socksDatagramsDropped += 1
        }
    }

    /// The control connection ended: so does the association, its relay port going back to the pool.
    func closeTunnelAssociation(_ client: Client) {
        guard let association = client.tunnelAssociation else { return }
        client.tunnelAssociation = nil
        association.closed = true
        associationsOpen -= 1
        tunnelAssociationOfPort[association.relayPort] = nil
        core.udpPorts.release(association.relayPort)
        for case let socket? in association.sockets {
            uv_udp_recv_stop(socket)
            uv_close(UnsafeMutableRawPointer(socket).assumingMemoryBound(to: uv_handle_t.self), Self.closeAssociationSocket)
        }
        association.sockets = [nil, nil]
    }

    static let closeAssociationSocket: uv_close_cb = { handle in
        Unmanaged<TunnelSocksAssociation>.fromOpaque(handle!.pointee.data).release()
        UnsafeMutableRawPointer(handle!).deallocate()
    }
}

/// A SOCKS5 UDP association asked for from inside the tunnel (`--remote-socks5`, RFC 1928 §7): the client
/// sends its datagrams to a relay port of our tunnel address; each leaves this machine, without its
/// header, from a UDP socket of the association's own (one per address family, opened at first use), and
/// the answers go back through the tunnel with the header naming where they came from. It lives as long
/// as the TCP connection that asked for it.
final class TunnelSocksAssociation {
    unowned let forwarder: Forwarder
    /// Our port in the tunnel that the client sends to, reserved in the UDP port pool meanwhile.
    let relayPort: UInt16
    /// Only datagrams from the control connection's address are taken (and from the port the client
    /// stated, when it stated one); the first one fixes the client's port.
    let clientIP: IPAddress
    let statedPort: UInt16
    var clientPort: UInt16?
    /// IPv4 and IPv6 sockets towards destinations, and whether one could not be opened.
    var sockets: [UnsafeMutablePointer<uv_udp_t>?] = [nil, nil]
    var socketFailed = [false, false]
    var names = AssociationNames()
    var closed = false

    init(forwarder: Forwarder, relayPort: UInt16, clientIP: IPAddress, statedPort: UInt16) {
        self.forwarder = forwarder
        self.relayPort = relayPort
        self.clientIP = clientIP
        self.statedPort = statedPort
    }
}
