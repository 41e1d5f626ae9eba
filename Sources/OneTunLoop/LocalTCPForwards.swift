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

// Local TCP forwards: a listener per forward, accepted clients, and moving bytes between each client and
// its virtual connection. `Client` and the service, deliver and teardown paths also carry the local
// connections of remote TCP forwards (RemoteTCPForwards.swift).
extension Forwarder {
    final class Listener {
        let handle = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
        let forward: TCPForward
        unowned let forwarder: Forwarder

        init(forward: TCPForward, forwarder: Forwarder) {
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
        /// How much one read from the client may take: 4 KiB at first, doubled each time a read fills it,
        /// up to 64 KiB. A client that sends a little never makes its connection's send buffer grow.
        var readSize = 4096
        /// The virtual connection left SYN-SENT (a connect time-out is said differently from a later one).
        var synchronized = false
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

    // MARK: Accepting

    func accept(_ listener: Listener, status: Int32) {
        guard !shuttingDown else { return }
        guard status == 0 else {
            if let held = acceptErrorWarnings.allow(TunnelLoop.now()) {
                logger.warning("accepting on \(listener.forward.description): \(String(cString: uv_strerror(status)))\(Throttle.note(held))")
            }
            return
        }
        let forward = listener.forward
        let now = TunnelLoop.now()
        let client = Client(forwarder: self, forward: listeners.firstIndex { $0 === listener } ?? 0, now: now)
        uv_tcp_init(driver.loop, client.handle)
        client.handle.pointee.data = Unmanaged.passRetained(client).toOpaque()
        guard uv_accept(stream(listener.handle), stream(client.handle)) == 0 else {
            uv_close(handle(client.handle), Self.closed)
            return
        }
        guard admits("client of \(forward.description)", now: now) else {
            closeReset(client.handle)
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
                let region = client.forwarder.core.connection(client.id).sendRegion(maxBytes: client.readSize)
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
            if nread >= client.readSize && client.readSize < 65_536 { client.readSize *= 2 }
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

    func service(_ client: Client) {
        let connection = core.connection(client.id)
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
                let tunnel = core.handshakeProblem.map { "; the tunnel is down: \($0)" } ?? ""
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
        if owned {
            clients[client.id] = nil
            core.release(client.id)
        }
        connectionsClosed += 1
        closedSinceTrim += 1
    }

    /// Closes with a RST; libuv refuses that (UV_EINVAL) while a shutdown request is in flight, and then
    /// the socket is closed plainly (a FIN) rather than leaked.
    func closeReset(_ tcp: UnsafeMutablePointer<uv_tcp_t>) {
        if uv_tcp_close_reset(tcp, Self.closed) != 0 { uv_close(handle(tcp), Self.closed) }
    }

    static let closed: uv_close_cb = { handle in
        Unmanaged<Client>.fromOpaque(handle!.pointee.data).release()
    }
}
