import CUV
import Glibc
import Logging
import OneTunCore

/// A small HTTP/1.1 server on the libuv loop for `/metrics` and the health endpoints: one request per
/// connection (`Connection: close`), GET and HEAD only. It is bounded so it can never hurt the forwarder:
/// at most `maxConnections` at once (one more is closed as soon as it is accepted), a request head of at
/// most `maxHead` bytes (431 past it), `readTimeout` for the head to arrive. The answer is generated into
/// one buffer and written with `uv_write`, which never blocks the loop. Once it is written the server
/// half-closes and reads what the client still sends, dropping it, until the client's end (at most
/// `lingerTimeout`): closing with unread input would send a reset, which can destroy the answer before the
/// client has read it (a 431 to a client still sending its head). The time-outs end a client that does
/// not read or does not close.
@_spi(OneTunInternals) public final class MetricsServer {
    /// An answer for a path: status, content type, body; nil for 404.
    public typealias Responder = (_ path: String) -> (status: Int, contentType: String, body: String)?

    static let maxConnections = 16
    static let maxHead = 8192
    /// Milliseconds for the head to come and the answer to be taken.
    static let readTimeout: UInt64 = 10_000
    /// Milliseconds a connection stays half-closed after its answer, for the client's end.
    static let lingerTimeout: UInt64 = 2_000

    let loop: UnsafeMutablePointer<uv_loop_t>
    let logger: Logger
    let respond: Responder
    let listener = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
    var connections: [ObjectIdentifier: Connection] = [:]
    var closed = false
    public private(set) var requests = 0
    public private(set) var turnedAway = 0

    final class Connection {
        let handle = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
        let timer = UnsafeMutablePointer<uv_timer_t>.allocate(capacity: 1)
        let writeRequest = UnsafeMutablePointer<uv_write_t>.allocate(capacity: 1)
        let shutdownRequest = UnsafeMutablePointer<uv_shutdown_t>.allocate(capacity: 1)
        let head = UnsafeMutableRawBufferPointer.allocate(byteCount: MetricsServer.maxHead, alignment: 1)
        var count = 0
        var answer: UnsafeMutableRawBufferPointer?
        var answering = false
        /// Answered and half-closed: what comes is dropped until the client's end.
        var lingering = false
        var closing = false
        /// Handles still to close (the socket and the timer) before the memory goes.
        var open = 2
        unowned let server: MetricsServer

        init(server: MetricsServer) { self.server = server }

        deinit {
            handle.deallocate()
            timer.deallocate()
            writeRequest.deallocate()
            shutdownRequest.deallocate()
            head.deallocate()
            answer?.deallocate()
        }
    }

    public init(loop: UnsafeMutablePointer<uv_loop_t>, logger: Logger, respond: @escaping Responder) {
        self.loop = loop
        self.logger = logger
        self.respond = respond
    }

    /// The listener went to libuv (`uv_tcp_init`): its close callback frees it then, not `deinit` (the
    /// loop may still hold it when the server is let go).
    var listenerInitialized = false

    deinit { if !listenerInitialized { listener.deallocate() } }

    static let closeListener: uv_close_cb = { handle in UnsafeMutableRawPointer(handle!).deallocate() }

    /// Binds and listens; throws naming the address when it cannot.
    public func listen(on address: sockaddr_storage, description: String) throws(LoopError) {
        uv_tcp_init(loop, listener)
        listenerInitialized = true
        listener.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        var address = address
        var rc = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_tcp_bind(listener, $0, 0) } }
        if rc == 0 {
            rc = uv_listen(UnsafeMutableRawPointer(listener).assumingMemoryBound(to: uv_stream_t.self), Int32(Self.maxConnections)) { server, status in
                guard status == 0 else { return }
                Unmanaged<MetricsServer>.fromOpaque(server!.pointee.data).takeUnretainedValue().accept()
            }
        }
        guard rc == 0 else {
            uv_close(UnsafeMutableRawPointer(listener).assumingMemoryBound(to: uv_handle_t.self), Self.closeListener)
            closed = true
            throw LoopError("cannot serve metrics on \(description): \(String(cString: uv_strerror(rc)))")
        }
        logger.info("serving /metrics, /readyz and /healthz on http://\(description)")
    }

    /// Stops listening and closes every connection (the loop ends once they are closed).
    public func close() {
        guard !closed else { return }
        closed = true
        if listenerInitialized { uv_close(UnsafeMutableRawPointer(listener).assumingMemoryBound(to: uv_handle_t.self), Self.closeListener) }
        for connection in Array(connections.values) { finish(connection) }
    }

    func accept() {
        let connection = Connection(server: self)
        uv_tcp_init(loop, connection.handle)
        uv_timer_init(loop, connection.timer)
        let retained = Unmanaged.passRetained(connection).toOpaque()
        connection.handle.pointee.data = retained
        connection.timer.pointee.data = retained
        guard uv_accept(stream(listener), stream(connection.handle)) == 0 else {
            release(connection)
            return
        }
        guard !closed, connections.count < Self.maxConnections else {
            turnedAway += 1
            release(connection)
            return
        }
        connections[ObjectIdentifier(connection)] = connection
        uv_timer_start(connection.timer, Self.timedOut, Self.readTimeout, 0)
        startReading(connection)
    }

    func startReading(_ connection: Connection) {
        uv_read_start(
            stream(connection.handle),
            { handle, _, buf in
                let connection = Unmanaged<Connection>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                let room = MetricsServer.maxHead - connection.count
                buf!.pointee = uv_buf_init(
                    room > 0 ? (connection.head.baseAddress! + connection.count).assumingMemoryBound(to: CChar.self) : nil, UInt32(room))
            },
            { handle, nread, _ in
                let connection = Unmanaged<Connection>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                connection.server.read(connection, nread)
            })
    }

    /// A connection's timer ran out (its head did not come, or it did not close after its answer).
    static let timedOut: uv_timer_cb = { timer in
        let connection = Unmanaged<Connection>.fromOpaque(timer!.pointee.data).takeUnretainedValue()
        connection.server.finish(connection)
    }

    /// Closes a connection that never got into the table.
    func release(_ connection: Connection) {
        connection.closing = true
        closeHandles(connection)
    }

    func read(_ connection: Connection, _ nread: Int) {
        if connection.lingering {
            // Dropped; the client's end (or an error) closes.
            if nread < 0 { finish(connection) } else { connection.count = 0 }
            return
        }
        guard !connection.answering, !connection.closing else { return }
        if nread == Int(UV_ENOBUFS.rawValue) {
            answer(connection, 431, "text/plain; charset=utf-8", "request head too large\n", head: false)
            return
        }
        guard nread > 0 else {
            if nread < 0 { finish(connection) }
            return
        }
        connection.count += nread
        let bytes = UnsafeRawBufferPointer(rebasing: connection.head[0..<connection.count])
        let request = Self.parseRequest(bytes)
        if request == .incomplete {
            if connection.count >= Self.maxHead { answer(connection, 431, "text/plain; charset=utf-8", "request head too large\n", head: false) }
            return
        }
        requests += 1
        switch request {
        case nil, .incomplete?:
            answer(connection, 400, "text/plain; charset=utf-8", "bad request\n", head: false)
        case .request(let method, _)? where method != "GET" && method != "HEAD":
            answer(connection, 405, "text/plain; charset=utf-8", "only GET and HEAD\n", head: false, extra: "Allow: GET, HEAD\r\n")
        case .request(let method, let path)?:
            if let (status, type, body) = respond(path) {
                answer(connection, status, type, body, head: method == "HEAD")
            } else {
                answer(connection, 404, "text/plain; charset=utf-8", "not found: /metrics, /readyz, /healthz\n", head: method == "HEAD")
            }
        }
    }

    /// What a request head asks for, through the core's request-head parser (the HTTP proxy's, fuzzed):
    /// `.incomplete` until its empty line has come; nil for a malformed head; else the method and the
    /// target's path (its query dropped; a target that is not a path is malformed here).
    enum Request: Equatable {
        case incomplete
        case request(method: String, path: String)
    }

    static func parseRequest(_ bytes: UnsafeRawBufferPointer) -> Request? {
        let head: HTTPRequestHead
        do {
            head = try HTTPRequestHead(validating: bytes)
        } catch .incomplete {
            return .incomplete
        } catch {
            return nil
        }
        let target = head.targetString
        guard target.hasPrefix("/") else { return nil }
        let path = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]
        return .request(method: head.methodString, path: String(path))
    }

    static func reason(_ status: Int) -> String {
        switch status {
        case 200: "OK"
        case 400: "Bad Request"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 431: "Request Header Fields Too Large"
        case 503: "Service Unavailable"
        default: "Status"
        }
    }

    /// Writes the whole answer (one buffer, one uv_write); once it is written the connection lingers
    /// (`linger`).
    func answer(_ connection: Connection, _ status: Int, _ type: String, _ body: String, head: Bool, extra: String = "") {
        connection.answering = true
        uv_read_stop(stream(connection.handle))
        let bodyLength = body.utf8.count
        var text = "HTTP/1.1 \(status) \(Self.reason(status))\r\nContent-Type: \(type)\r\nContent-Length: \(bodyLength)\r\n\(extra)Connection: close\r\n\r\n"
        if !head { text += body }
        let count = text.utf8.count
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1), alignment: 1)
        _ = buffer.initializeMemory(as: UInt8.self, from: text.utf8)
        connection.answer = buffer
        var buf = uv_buf_init(buffer.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(count))
        connection.writeRequest.pointee.data = connection.handle.pointee.data
        let rc = uv_write(connection.writeRequest, stream(connection.handle), &buf, 1) { request, status in
            let connection = Unmanaged<Connection>.fromOpaque(request!.pointee.data).takeUnretainedValue()
            if status < 0 { connection.server.finish(connection) } else { connection.server.linger(connection) }
        }
        if rc != 0 { finish(connection) }
    }

    /// The answer is written: our FIN goes after it, and what the client still sends is read and
    /// dropped until its own FIN, so that the close sends no reset.
    func linger(_ connection: Connection) {
        guard !connection.closing else { return }
        connection.shutdownRequest.pointee.data = connection.handle.pointee.data
        let rc = uv_shutdown(connection.shutdownRequest, stream(connection.handle)) { request, status in
            let connection = Unmanaged<Connection>.fromOpaque(request!.pointee.data).takeUnretainedValue()
            guard !connection.closing else { return }
            guard status == 0 else { return connection.server.finish(connection) }
            connection.lingering = true
            // The head buffer is read into from the start again (after a 431 it is full: an empty
            // buffer would make libuv report ENOBUFS, taken for the client's end).
            connection.count = 0
            uv_timer_start(connection.timer, MetricsServer.timedOut, MetricsServer.lingerTimeout, 0)
            connection.server.startReading(connection)
        }
        if rc != 0 { finish(connection) }
    }

    func finish(_ connection: Connection) {
        guard !connection.closing else { return }
        connection.closing = true
        connections[ObjectIdentifier(connection)] = nil
        closeHandles(connection)
    }

    func closeHandles(_ connection: Connection) {
        uv_timer_stop(connection.timer)
        let closedOne: uv_close_cb = { handle in
            let unmanaged = Unmanaged<Connection>.fromOpaque(handle!.pointee.data)
            let connection = unmanaged.takeUnretainedValue()
            connection.open -= 1
            if connection.open == 0 { unmanaged.release() }
        }
        uv_close(UnsafeMutableRawPointer(connection.handle).assumingMemoryBound(to: uv_handle_t.self), closedOne)
        uv_close(UnsafeMutableRawPointer(connection.timer).assumingMemoryBound(to: uv_handle_t.self), closedOne)
    }

    @inline(__always) func stream(_ p: UnsafeMutablePointer<uv_tcp_t>) -> UnsafeMutablePointer<uv_stream_t> {
        UnsafeMutableRawPointer(p).assumingMemoryBound(to: uv_stream_t.self)
    }
}
