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
    /// For logs and errors, e.g. "127.0.0.1:8080 -> 192.168.4.2:80".
    public var description: String

    public init(listen: sockaddr_storage, destination: IPAddress, destinationPort: UInt16, description: String) {
        self.listen = listen
        self.destination = destination
        self.destinationPort = destinationPort
        self.description = description
    }
}

/// One local UDP port forwarded to a destination inside the tunnel.
public struct UDPForward {
    public var listen: sockaddr_storage
    public var destination: UDPEndpoint
    public var description: String

    public init(listen: sockaddr_storage, destination: UDPEndpoint, description: String) {
        self.listen = listen
        self.destination = destination
        self.description = description
    }
}

/// A remote forward: a port of our address inside the tunnel, forwarded to a local address.
public struct RemoteForward {
    public var port: UInt16
    public var destination: sockaddr_storage
    public var isUDP: Bool
    public var description: String

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
    let core: TunnelCore
    let driver: TunnelLoop
    let logger: Logger
    var listeners: [Listener] = []
    var clients: [Client?] = []
    var shuttingDown = false
    var udpListeners: [UDPListener] = []
    /// Which UDP listener a virtual port's client last wrote to: its replies leave from that listener's
    /// socket (two forwards may share a destination). -1: none; allocated with the first UDP listener.
    var udpListenerOfPort: [Int32] = []
    /// The first UDP listener for each destination: replies to a client that wrote to two forwards from
    /// one socket (one virtual port) come back through the forward of the destination that answers.
    var udpListenerByDestination: [UDPEndpoint: Int] = [:]
    let udpBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65_536, alignment: 16)
    public private(set) var datagramsForwarded = 0
    public private(set) var datagramsReturned = 0
    public private(set) var datagramsDropped = 0
    var remoteTCP: [UInt16: RemoteForward] = [:]
    var remoteUDP: [UInt16: RemoteForward] = [:]
    var remoteFlows: [RemoteFlowKey: RemoteFlow] = [:]
    /// Remote UDP flows (one local socket each) kept at most; past it the least recently used closes.
    static let maximumRemoteFlows = 1024

    struct RemoteFlowKey: Hashable {
        var port: UInt16
        var remote: UDPEndpoint
    }

    final class RemoteFlow {
        let handle = UnsafeMutablePointer<uv_udp_t>.allocate(capacity: 1)
        let key: RemoteFlowKey
        unowned let forwarder: Forwarder
        var lastUsed: Instant

        init(key: RemoteFlowKey, forwarder: Forwarder, now: Instant) {
            self.key = key
            self.forwarder = forwarder
            lastUsed = now
        }
    }
    public private(set) var connectionsOpened = 0
    public private(set) var connectionsClosed = 0
    /// Copied per client only when its socket is full (see above).
    static let pendingLimit = 256 << 10

    final class Listener {
        let handle = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
        let forward: TCPForward
        unowned let forwarder: Forwarder

        init(forward: TCPForward, forwarder: Forwarder) {
            self.forward = forward
            self.forwarder = forwarder
        }
    }

    final class UDPListener {
        let handle = UnsafeMutablePointer<uv_udp_t>.allocate(capacity: 1)
        let forward: UDPForward
        unowned let forwarder: Forwarder
        var index: Int32 = -1

        init(forward: UDPForward, forwarder: Forwarder) {
            self.forward = forward
            self.forwarder = forwarder
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
        let opened: Instant

        init(forwarder: Forwarder, forward: Int, now: Instant) {
            self.forwarder = forwarder
            self.forward = forward
            opened = now
        }

        deinit {
            handle.deallocate()
            writeRequest.deallocate()
            shutdownRequest.deallocate()
            connectRequest.deallocate()
            pending?.deallocate()
        }
    }

    public init(core: TunnelCore, driver: TunnelLoop, logger: Logger) {
        self.core = core
        self.driver = driver
        self.logger = logger
        driver.beforeTransmit = { [unowned self] in self.processEvents() }
        driver.onSignal = { [unowned self] in self.shutdown() }
    }

    /// Listens on every forward's local address; throws naming the address when one cannot be used.
    public func listen(_ forwards: [TCPForward]) throws(LoopError) {
        for forward in forwards {
            let listener = Listener(forward: forward, forwarder: self)
            uv_tcp_init(driver.loop, listener.handle)
            listener.handle.pointee.data = Unmanaged.passUnretained(listener).toOpaque()
            var address = forward.listen
            var rc = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_tcp_bind(listener.handle, $0, 0) }
            }
            if rc == 0 {
                rc = uv_listen(UnsafeMutableRawPointer(listener.handle).assumingMemoryBound(to: uv_stream_t.self), 1024) { server, status in
                    let listener = Unmanaged<Listener>.fromOpaque(server!.pointee.data).takeUnretainedValue()
                    listener.forwarder.accept(listener, status: status)
                }
            }
            guard rc == 0 else {
                throw LoopError("cannot listen on \(forward.description.split(separator: " ").first ?? ""): \(String(cString: uv_strerror(rc)))")
            }
            listeners.append(listener)
            logger.info("forwarding TCP \(forward.description)")
        }
    }

    /// Binds every UDP forward's local address; throws naming the address when one cannot be used.
    public func listenUDP(_ forwards: [UDPForward]) throws(LoopError) {
        for forward in forwards {
            let listener = UDPListener(forward: forward, forwarder: self)
            var address = forward.listen
            var rc = uv_udp_init_ex(driver.loop, listener.handle, UInt32(address.ss_family))
            listener.handle.pointee.data = Unmanaged.passUnretained(listener).toOpaque()
            if rc == 0 {
                rc = withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_udp_bind(listener.handle, $0, 0) }
                }
            }
            if rc == 0 {
                // Room for bursts from local clients while the loop is busy (the default is 208 KiB).
                var size: Int32 = 4 << 20
                _ = uv_recv_buffer_size(UnsafeMutableRawPointer(listener.handle).assumingMemoryBound(to: uv_handle_t.self), &size)
                rc = uv_udp_recv_start(
                    listener.handle,
                    { handle, _, buf in
                        let listener = Unmanaged<UDPListener>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                        let b = listener.forwarder.udpBuffer
                        buf!.pointee = uv_buf_init(b.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(b.count))
                    },
                    { handle, nread, _, addr, _ in
                        guard nread >= 0, let addr else { return }
                        let listener = Unmanaged<UDPListener>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                        listener.forwarder.clientDatagram(listener, length: nread, from: addr)
                    })
            }
            guard rc == 0 else {
                throw LoopError("cannot listen on UDP \(forward.description.split(separator: " ").first ?? ""): \(String(cString: uv_strerror(rc)))")
            }
            if udpListenerOfPort.isEmpty { udpListenerOfPort = [Int32](repeating: -1, count: 65_536) }
            listener.index = Int32(udpListeners.count)
            if udpListenerByDestination[forward.destination] == nil {
                udpListenerByDestination[forward.destination] = udpListeners.count
            }
            udpListeners.append(listener)
            logger.info("forwarding UDP \(forward.description)")
        }
    }

    /// A datagram from a local client: it leaves through the tunnel from the client's virtual port.
    func clientDatagram(_ listener: UDPListener, length: Int, from addr: UnsafePointer<sockaddr>) {
        guard !shuttingDown, let client = SocketAddressConversion.endpoint(addr) else { return }
        let now = TunnelLoop.now()
        let port = core.udpPorts.port(for: client, now: now)
        udpListenerOfPort[Int(port)] = listener.index
        let payload = UnsafeRawBufferPointer(rebasing: udpBuffer[0..<length])
        if core.sendDatagram(from: port, to: listener.forward.destination, payload: payload) {
            datagramsForwarded += 1
        } else {
            datagramsDropped += 1
            logger.debug("UDP datagram of \(length) bytes from \(client) dropped: larger than the tunnel MTU allows, or the queue is full")
        }
    }

    /// Datagrams from the tunnel go back to the local client that owns their virtual port.
    func returnDatagrams() {
        // The UDP listeners and flows are closing: a send on one would reopen its socket under libuv.
        guard !shuttingDown else { return }
        let now = TunnelLoop.now()
        var budget = 4096
        while budget > 0, let d = core.pollDatagram(into: udpBuffer) {
            budget -= 1
            if let forward = remoteUDP[d.destination.port] {
                remoteDatagram(forward, from: d.source, length: d.length)
                continue
            }
            var index = Int(udpListenerOfPort.isEmpty ? -1 : udpListenerOfPort[Int(d.destination.port)])
            if index < 0 || udpListeners[index].forward.destination != d.source {
                index = udpListenerByDestination[d.source] ?? -1
            }
            guard index >= 0, let client = core.udpPorts.client(for: d.destination.port, now: now) else {
                datagramsDropped += 1
                logger.trace("UDP datagram from \(d.source) to port \(d.destination.port) has no client; dropped")
                continue
            }
            var address = SocketAddressConversion.storage(client)
            var buf = uv_buf_init(udpBuffer.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(d.length))
            let rc = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_udp_try_send(udpListeners[index].handle, &buf, 1, $0) }
            }
            if rc < 0 {
                datagramsDropped += 1
            } else {
                datagramsReturned += 1
            }
        }
    }

    // MARK: Remote forwards

    /// Listens on each remote forward's port of our address inside the tunnel.
    public func listenRemote(_ forwards: [RemoteForward]) {
        for forward in forwards {
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

    /// Connections the tunnel's listeners accepted: each gets a local connection to its forward's destination.
    func acceptRemote() {
        let now = TunnelLoop.now()
        var budget = 1024
        while budget > 0, let id = core.accept() {
            budget -= 1
            let connection = core.connection(id)
            guard !shuttingDown, var destination = remoteTCP[connection.localPort]?.destination else {
                core.release(id)
                continue
            }
            let client = Client(forwarder: self, forward: -1, now: now)
            client.id = id
            client.connected = false
            uv_tcp_init(driver.loop, client.handle)
            client.handle.pointee.data = Unmanaged.passRetained(client).toOpaque()
            while clients.count <= id { clients.append(nil) }
            clients[id] = client
            connectionsOpened += 1
            client.connectRequest.pointee.data = client.handle.pointee.data
            let rc = withUnsafePointer(to: &destination) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    uv_tcp_connect(client.connectRequest, client.handle, $0) { request, status in
                        let client = Unmanaged<Client>.fromOpaque(request!.pointee.data).takeUnretainedValue()
                        guard !client.closing else { return }
                        if status < 0 {
                            client.forwarder.teardown(client, reset: false, reason: "local connection failed: \(String(cString: uv_strerror(status)))")
                            return
                        }
                        client.connected = true
                        uv_tcp_nodelay(client.handle, 1)
                        client.forwarder.startReading(client)
                        client.forwarder.core.notify(client.id)
                    }
                }
            }
            if rc < 0 {
                teardown(client, reset: false, reason: "local connection failed: \(String(cString: uv_strerror(rc)))")
                continue
            }
            logger.debug("connection \(id): accepted from the tunnel on port \(connection.localPort)")
        }
    }

    /// A datagram from the tunnel to a remote UDP forward's port: it goes out of the flow's own local
    /// socket, connected to the destination, whose replies return through the tunnel.
    func remoteDatagram(_ forward: RemoteForward, from remote: UDPEndpoint, length: Int) {
        guard !shuttingDown else { return }
        let now = TunnelLoop.now()
        let key = RemoteFlowKey(port: forward.port, remote: remote)
        var flow = remoteFlows[key]
        if flow == nil {
            if remoteFlows.count >= Self.maximumRemoteFlows, let oldest = remoteFlows.values.min(by: { $0.lastUsed < $1.lastUsed }) {
                closeFlow(oldest)
            }
            let made = RemoteFlow(key: key, forwarder: self, now: now)
            var destination = forward.destination
            var rc = uv_udp_init_ex(driver.loop, made.handle, UInt32(destination.ss_family))
            guard rc == 0 else {
                // No socket (EMFILE, ENOBUFS): libuv never initialized the handle, so it must not be closed.
                made.handle.deallocate()
                logger.debug("remote UDP flow from \(remote): \(String(cString: uv_strerror(rc)))")
                datagramsDropped += 1
                return
            }
            made.handle.pointee.data = Unmanaged.passRetained(made).toOpaque()
            rc = withUnsafePointer(to: &destination) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_udp_connect(made.handle, $0) }
            }
            if rc == 0 {
                rc = uv_udp_recv_start(
                    made.handle,
                    { handle, _, buf in
                        let flow = Unmanaged<RemoteFlow>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                        let b = flow.forwarder.udpBuffer
                        buf!.pointee = uv_buf_init(b.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(b.count))
                    },
                    { handle, nread, _, _, _ in
                        guard nread > 0 else { return }
                        let flow = Unmanaged<RemoteFlow>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                        flow.lastUsed = TunnelLoop.now()
                        let f = flow.forwarder
                        if f.core.sendDatagram(from: flow.key.port, to: flow.key.remote, payload: UnsafeRawBufferPointer(rebasing: f.udpBuffer[0..<nread])) {
                            f.datagramsReturned += 1
                        } else {
                            f.datagramsDropped += 1
                        }
                    })
            }
            remoteFlows[key] = made
            guard rc == 0 else {
                logger.debug("remote UDP flow from \(remote): \(String(cString: uv_strerror(rc)))")
                closeFlow(made)
                datagramsDropped += 1
                return
            }
            flow = made
        }
        flow!.lastUsed = now
        var buf = uv_buf_init(udpBuffer.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(length))
        if uv_udp_try_send(flow!.handle, &buf, 1, nil) < 0 {
            datagramsDropped += 1
        } else {
            datagramsForwarded += 1
        }
    }

    func closeFlow(_ flow: RemoteFlow) {
        remoteFlows[flow.key] = nil
        uv_udp_recv_stop(flow.handle)
        uv_close(UnsafeMutableRawPointer(flow.handle).assumingMemoryBound(to: uv_handle_t.self)) { handle in
            let flow = Unmanaged<RemoteFlow>.fromOpaque(handle!.pointee.data).takeRetainedValue()
            flow.handle.deallocate()
        }
    }

    // MARK: Accepting

    func accept(_ listener: Listener, status: Int32) {
        guard status == 0, !shuttingDown else { return }
        let forward = listener.forward
        let now = TunnelLoop.now()
        let client = Client(forwarder: self, forward: listeners.firstIndex { $0 === listener } ?? 0, now: now)
        uv_tcp_init(driver.loop, client.handle)
        client.handle.pointee.data = Unmanaged.passRetained(client).toOpaque()
        guard uv_accept(stream(listener.handle), stream(client.handle)) == 0 else {
            uv_close(handle(client.handle), Self.closed)
            return
        }
        uv_tcp_nodelay(client.handle, 1)
        guard let id = core.connect(to: forward.destination, port: forward.destinationPort, now: now) else {
            logger.error("cannot open a connection to \(forward.destination) port \(forward.destinationPort): no source address of its family, or no free port")
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
        uv_read_start(
            stream(client.handle),
            { handle, _, buf in
                let client = Unmanaged<Client>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                // Read straight into the connection's send buffer; an empty buffer means it is full.
                let region = client.forwarder.core.connection(client.id).sendRegion()
                buf!.pointee = uv_buf_init(region.baseAddress?.assumingMemoryBound(to: CChar.self), UInt32(region.count))
            },
            { handle, nread, _ in
                let client = Unmanaged<Client>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                client.forwarder.clientRead(client, nread)
            })
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
            connection.commitSend(nread)
            client.bytesUp += nread
            core.touched(client.id)
            if connection.writableBytes == 0 { stopReading(client) }
        } else if nread == Int(UV_ENOBUFS.rawValue) {
            // The send buffer is full: resume when the connection has room (processEvents).
            stopReading(client)
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

    /// Acts on every connection whose state changed: moves bytes, propagates half-close, closes.
    func processEvents() {
        returnDatagrams()
        acceptRemote()
        var budget = 100_000
        while budget > 0, let id = core.pollEvent() {
            budget -= 1
            guard id < clients.count, let client = clients[id], !client.closing else { continue }
            service(client)
        }
    }

    func service(_ client: Client) {
        let connection = core.connection(client.id)
        guard client.connected else {
            // A remote forward's local connection is still being made: only a reset matters now.
            if connection.state == .closed { teardown(client, reset: false, reason: "closed before the local connection was made") }
            return
        }
        if !client.writePending { deliver(client, connection) }
        if client.closing { return }
        if connection.hasEnded, let error = connection.error {
            // Reset by the destination, refused, or timed out: the client sees a reset at once.
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
            let pending = client.pending ?? UnsafeMutableRawBufferPointer.allocate(byteCount: Self.pendingLimit, alignment: 16)
            client.pending = pending
            let m = min(chunk.count, pending.count)
            pending.copyMemory(from: UnsafeRawBufferPointer(rebasing: chunk[0..<m]))
            connection.consume(m)
            client.bytesDown += m
            core.touched(client.id)
            var out = uv_buf_init(pending.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(m))
            client.writePending = true
            client.writeRequest.pointee.data = client.handle.pointee.data
            uv_write(client.writeRequest, stream(client.handle), &out, 1) { request, status in
                let client = Unmanaged<Client>.fromOpaque(request!.pointee.data).takeUnretainedValue()
                client.writePending = false
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
        if reset {
            closeReset(client.handle)
        } else {
            uv_close(handle(client.handle), Self.closed)
        }
        var tcp = ""
        if client.id >= 0 && client.id < clients.count && clients[client.id] === client {
            let stats = core.connection(client.id).stats
            tcp = "; TCP: \(stats.segmentsSent) segments sent, \(stats.retransmittedSegments) retransmitted, \(stats.fastRetransmits) fast recoveries, \(stats.timeouts) timeouts; \(core.connection(client.id).congestionSummary)"
            clients[client.id] = nil
            core.release(client.id)
        }
        connectionsClosed += 1
        let seconds = Double(TunnelLoop.now().since(client.opened)) / 1e9
        logger.debug("connection \(client.id): \(reason) after \((seconds * 1000).rounded() / 1000) s, \(client.bytesUp) bytes up, \(client.bytesDown) bytes down\(tcp)")
    }

    /// Closes with a RST; libuv refuses that (UV_EINVAL) while a shutdown request is in flight, and then
    /// the socket is closed plainly (a FIN) rather than leaked.
    func closeReset(_ tcp: UnsafeMutablePointer<uv_tcp_t>) {
        if uv_tcp_close_reset(tcp, Self.closed) != 0 { uv_close(handle(tcp), Self.closed) }
    }

    static let closed: uv_close_cb = { handle in
        Unmanaged<Client>.fromOpaque(handle!.pointee.data).release()
    }

    /// SIGINT/SIGTERM: stop listening, reset every virtual connection (the destinations see a RST, not
    /// a half-open connection), close the clients, send what is pending and stop the loop.
    public func shutdown() {
        guard !shuttingDown else { return }
        shuttingDown = true
        for listener in listeners {
            uv_close(handle(listener.handle)) { handle in
                handle!.deallocate()
            }
        }
        for listener in udpListeners {
            uv_udp_recv_stop(listener.handle)
            uv_close(UnsafeMutableRawPointer(listener.handle).assumingMemoryBound(to: uv_handle_t.self)) { handle in
                handle!.deallocate()
            }
        }
        for client in clients.compactMap({ $0 }) { teardown(client, reset: false, reason: "shutting down") }
        for flow in Array(remoteFlows.values) { closeFlow(flow) }
        remoteUDP = [:]
        let wg = core.stats.wireGuard
        logger.info("shutting down after \(connectionsOpened) connections; \(driver.datagramsSent) datagrams sent (\(driver.sendFailures) not sent), \(driver.datagramsReceived) received; WireGuard dropped \(wg.dropped) in, \(core.packetsDropped) out")
        driver.stop()
    }

    @inline(__always) func stream(_ p: UnsafeMutablePointer<uv_tcp_t>) -> UnsafeMutablePointer<uv_stream_t> {
        UnsafeMutableRawPointer(p).assumingMemoryBound(to: uv_stream_t.self)
    }

    @inline(__always) func handle(_ p: UnsafeMutablePointer<uv_tcp_t>) -> UnsafeMutablePointer<uv_handle_t> {
        UnsafeMutableRawPointer(p).assumingMemoryBound(to: uv_handle_t.self)
    }
}
