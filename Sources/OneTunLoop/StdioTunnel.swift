import CUV
import Glibc
import Logging
import OneTunCore

/// `--stdio HOST:PORT` (wireproxy's `[STDIOTunnel]`): one connection through the tunnel, standard input
/// to it and it to standard output, so that `ssh -o ProxyCommand='onetun -c wg.conf --stdio %h:%p'` needs
/// nothing else. Each direction ends on its own: end of input sends a FIN, the destination's FIN closes
/// standard output once every byte before it is written. When both are done (or the connection is reset
/// or times out) the loop stops; `failure` then says why, if it failed.
///
/// Pipes, sockets and terminals are libuv streams: input is read straight into the connection's send
/// buffer and output written from its receive buffer with `uv_try_write`, copying one bounded chunk only
/// when the pipe is full, as for forwards' clients. Regular files (`< file`, `> file`) go through libuv's
/// file requests (its thread pool, never blocking the loop), one 64 KiB chunk at a time.
public final class StdioTunnel {
    let forwarder: Forwarder
    var core: TunnelCore { forwarder.core }
    let logger: Logger
    var destination: IPAddress
    let port: UInt16
    /// A name asked of the tunnel's DNS servers before the connection opens.
    let name: String?
    /// The connection's id, once opened.
    public private(set) var id = -1
    /// Why it ended badly; nil while running and after a clean end.
    public private(set) var failure: String?
    public private(set) var bytesIn = 0
    public private(set) var bytesOut = 0

    // Standard input: a stream (pipe, socket, terminal), or a file read with requests.
    var input: UnsafeMutablePointer<uv_stream_t>?
    var inputHandleSize = 0
    let readRequest = UnsafeMutablePointer<uv_fs_t>.allocate(capacity: 1)
    var fileBuffer: UnsafeMutableRawBufferPointer?
    /// Read from a file standard input, not yet in the send buffer.
    var held = 0..<0
    var reading = false
    var inputEnded = false

    // Standard output: a stream, or a file written with requests.
    var output: UnsafeMutablePointer<uv_stream_t>?
    var outputHandleSize = 0
    let writeRequest = UnsafeMutablePointer<uv_write_t>.allocate(capacity: 1)
    let fileWriteRequest = UnsafeMutablePointer<uv_fs_t>.allocate(capacity: 1)
    /// How much of `pending` a file standard output has taken.
    var writtenFrom = 0
    var pending: UnsafeMutableRawBufferPointer?
    var writePending = false
    var outputEnded = false
    public private(set) var finished = false

    /// To `destination`, or to what `name` resolves to through the tunnel (its DNS servers must be
    /// configured) when given.
    public init(forwarder: Forwarder, destination: IPAddress, name: String? = nil, port: UInt16, logger: Logger) {
        self.forwarder = forwarder
        self.destination = destination
        self.name = name
        self.port = port
        self.logger = logger
    }

    deinit {
        readRequest.deallocate()
        writeRequest.deallocate()
        fileWriteRequest.deallocate()
        fileBuffer?.deallocate()
        pending?.deallocate()
    }

    /// Opens the connection and starts reading standard input. Throws when standard input or output
    /// cannot be used.
    public func start() throws(LoopError) {
        let loop = forwarder.driver.loop
        input = try Self.stream(fd: 0, loop: loop, readable: true, size: &inputHandleSize)
        output = try Self.stream(fd: 1, loop: loop, readable: false, size: &outputHandleSize)
        if let name {
            guard let token = core.resolve(name: name, now: TunnelLoop.now()) else {
                throw LoopError("--stdio \(name): no DNS server in the tunnel to ask")
            }
            forwarder.resolutions[token] = { [self] outcome in
                let usable: IPAddress? = if case .addresses(let addresses) = outcome { forwarder.usableAddress(addresses) } else { nil }
                guard let usable else {
                    failure = "cannot resolve \(name) through the tunnel: \(outcome)"
                    logger.error("--stdio: \(failure!)")
                    finish()
                    return
                }
                destination = usable
                do {
                    try open()
                } catch {
                    failure = "\(error)"
                    logger.error("--stdio: \(error)")
                    finish()
                }
            }
            return
        }
        try open()
    }

    func open() throws(LoopError) {
        let now = TunnelLoop.now()
        guard forwarder.admits("--stdio", to: destination, now: now) else {
            throw LoopError("--stdio \(describe): the tunnel cannot take a connection now (see the log)")
        }
        guard let id = core.connect(to: destination, port: port, now: now) else {
            let why = core.hasRoute(to: destination) ? "no source address of its family, or no free port" : "no peer's AllowedIPs hold it"
            throw LoopError("--stdio \(describe): cannot open a connection: \(why)")
        }
        self.id = id
        forwarder.stdio = self
        logger.debug("--stdio: connection \(id) to \(describe)")
        startReading()
    }

    var describe: String { destination.isV4 ? "\(destination):\(port)" : "[\(destination)]:\(port)" }

    /// A libuv stream over `fd` (nil: a regular file or something else libuv cannot poll; requests then).
    static func stream(fd: Int32, loop: UnsafeMutablePointer<uv_loop_t>, readable: Bool, size: inout Int) throws(LoopError) -> UnsafeMutablePointer<uv_stream_t>? {
        switch uv_guess_handle(fd) {
        case UV_TTY:
            let tty = UnsafeMutablePointer<uv_tty_t>.allocate(capacity: 1)
            let rc = uv_tty_init(loop, tty, fd, 0)
            guard rc == 0 else { tty.deallocate(); throw LoopError.uv("standard \(readable ? "input" : "output")", rc) }
            size = MemoryLayout<uv_tty_t>.size
            return UnsafeMutableRawPointer(tty).assumingMemoryBound(to: uv_stream_t.self)
        case UV_NAMED_PIPE, UV_TCP, UV_UDP:
            let pipe = UnsafeMutablePointer<uv_pipe_t>.allocate(capacity: 1)
            uv_pipe_init(loop, pipe, 0)
            let rc = uv_pipe_open(pipe, fd)
            guard rc == 0 else {
                uv_close(UnsafeMutableRawPointer(pipe).assumingMemoryBound(to: uv_handle_t.self)) { $0!.deallocate() }
                throw LoopError.uv("standard \(readable ? "input" : "output")", rc)
            }
            size = MemoryLayout<uv_pipe_t>.size
            return UnsafeMutableRawPointer(pipe).assumingMemoryBound(to: uv_stream_t.self)
        default:
            return nil
        }
    }

    // MARK: Standard input → tunnel

    func startReading() {
        guard !reading, !inputEnded, !finished else { return }
        reading = true
        if let input {
            input.pointee.data = Unmanaged.passUnretained(self).toOpaque()
            uv_read_start(input, { handle, _, buf in
                let me = Unmanaged<StdioTunnel>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                let region = me.core.connection(me.id).sendRegion(maxBytes: 65_536)
                buf!.pointee = uv_buf_init(region.baseAddress?.assumingMemoryBound(to: CChar.self), UInt32(region.count))
            }, { handle, nread, _ in
                let me = Unmanaged<StdioTunnel>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                me.inputRead(nread, committed: false)
            })
        } else {
            readFile()
        }
    }

    func stopReading() {
        guard reading else { return }
        reading = false
        if let input { uv_read_stop(input) }
    }

    /// A regular file: one request at a time into `fileBuffer`, copied into the send buffer; what does
    /// not fit yet (the send buffer's room can shrink between the request and its answer) waits in
    /// `fileBuffer[held]` and goes first next time.
    func readFile() {
        let chunk = fileBuffer ?? UnsafeMutableRawBufferPointer.allocate(byteCount: 65_536, alignment: 16)
        fileBuffer = chunk
        let connection = core.connection(id)
        while !held.isEmpty {
            let region = connection.sendRegion(maxBytes: held.count)
            if region.count == 0 { break }
            region.copyMemory(from: UnsafeRawBufferPointer(rebasing: chunk[held.lowerBound..<(held.lowerBound + region.count)]))
            connection.commitSend(region.count)
            bytesIn += region.count
            held = (held.lowerBound + region.count)..<held.upperBound
            core.notify(id)
        }
        let room = min(chunk.count, connection.writableBytes)
        guard held.isEmpty, room > 0 else {
            reading = false  // resumed by service() when the connection has room
            return
        }
        var buf = uv_buf_init(chunk.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(room))
        readRequest.pointee.data = Unmanaged.passRetained(self).toOpaque()
        let rc = uv_fs_read(forwarder.driver.loop, readRequest, 0, &buf, 1, -1) { request in
            let me = Unmanaged<StdioTunnel>.fromOpaque(request!.pointee.data).takeRetainedValue()
            let n = Int(request!.pointee.result)
            uv_fs_req_cleanup(request)
            guard !me.finished else { return }
            if n > 0 {
                me.held = 0..<n
                me.reading = false
                me.startReading()
                me.forwarder.driver.flush()
            } else {
                me.inputRead(n == 0 ? Int(UV_EOF.rawValue) : n, committed: true)
            }
        }
        if rc != 0 {
            Unmanaged<StdioTunnel>.fromOpaque(readRequest.pointee.data).release()
            inputRead(Int(rc), committed: true)
        }
    }

    func inputRead(_ nread: Int, committed: Bool) {
        guard !finished else { return }
        let connection = core.connection(id)
        if nread > 0 {
            connection.commitSend(nread)
            bytesIn += nread
            core.notify(id)
            if connection.writableBytes == 0 { stopReading() }
        } else if nread == Int(UV_ENOBUFS.rawValue) {
            stopReading()  // the send buffer is full: service() resumes
        } else if nread == Int(UV_EOF.rawValue) {
            // Our half-close: the FIN follows the bytes already queued.
            stopReading()
            inputEnded = true
            connection.close()
            core.notify(id)
            logger.debug("--stdio: end of standard input after \(bytesIn) bytes")
        } else if nread < 0 {
            fail("reading standard input: \(String(cString: uv_strerror(Int32(nread))))")
        }
    }

    // MARK: Tunnel → standard output

    /// Called by the forwarder for every event of the connection.
    func service() {
        guard !finished else { return }
        let connection = core.connection(id)
        if !writePending { deliver(connection) }
        if finished { return }
        if connection.hasEnded, let error = connection.error {
            fail("the connection to \(describe) ended: \(error)")
            return
        }
        if !reading && !inputEnded && connection.writableBytes > 0 { startReading() }
        if connection.isReadClosed && !writePending && !outputEnded {
            outputEnded = true
            logger.debug("--stdio: the destination closed its side after \(bytesOut) bytes")
            // A socket as standard output (inetd, socat's EXEC) may be standard input's too: closing the
            // descriptor would send no FIN while fd 0 holds it open; shutting down the writing side does.
            _ = Glibc.shutdown(1, Int32(SHUT_WR))
            if let output {
                uv_close(UnsafeMutableRawPointer(output).assumingMemoryBound(to: uv_handle_t.self)) { $0!.deallocate() }
                self.output = nil
            } else {
                close(1)
            }
        }
        if inputEnded && outputEnded && (connection.state == .timeWait || connection.state == .closed) {
            finish()
        }
    }

    func deliver(_ connection: TCPConnection) {
        for _ in 0..<64 {
            let readable = connection.readable()
            if readable.isEmpty { return }
            if let output {
                var buf = uv_buf_init(UnsafeMutablePointer(mutating: readable.baseAddress!.assumingMemoryBound(to: CChar.self)), UInt32(readable.count))
                let n = Int(uv_try_write(output, &buf, 1))
                if n > 0 {
                    connection.consume(n)
                    bytesOut += n
                    if n == readable.count { continue }
                } else if n != Int(UV_EAGAIN.rawValue) && n != 0 {
                    fail("writing standard output: \(String(cString: uv_strerror(Int32(n))))")
                    return
                }
            }
            // Full (or a file): one bounded chunk, copied, and nothing more until it is written.
            let chunk = connection.readable()
            if chunk.isEmpty { return }
            let m = min(chunk.count, Forwarder.pendingLimit)
            let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: m, alignment: 16)
            copy.copyMemory(from: UnsafeRawBufferPointer(rebasing: chunk[0..<m]))
            pending = copy
            connection.consume(m)
            bytesOut += m
            writePending = true
            var buf = uv_buf_init(copy.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(m))
            if let output {
                writeRequest.pointee.data = Unmanaged.passRetained(self).toOpaque()
                uv_write(writeRequest, output, &buf, 1) { request, status in
                    let me = Unmanaged<StdioTunnel>.fromOpaque(request!.pointee.data).takeRetainedValue()
                    me.written(status < 0 ? String(cString: uv_strerror(status)) : nil)
                }
            } else {
                writeFile(copy, 0)
            }
            return
        }
        core.notify(id)  // more after 64 rounds: the next flush
    }

    /// Writes `chunk[from...]` to a file standard output, as many requests as it takes.
    func writeFile(_ chunk: UnsafeMutableRawBufferPointer, _ from: Int) {
        writtenFrom = from
        var buf = uv_buf_init(chunk.baseAddress!.advanced(by: from).assumingMemoryBound(to: CChar.self), UInt32(chunk.count - from))
        fileWriteRequest.pointee.data = Unmanaged.passRetained(self).toOpaque()
        let rc = uv_fs_write(forwarder.driver.loop, fileWriteRequest, 1, &buf, 1, -1) { request in
            let me = Unmanaged<StdioTunnel>.fromOpaque(request!.pointee.data).takeRetainedValue()
            let n = Int(request!.pointee.result)
            uv_fs_req_cleanup(request)
            guard let chunk = me.pending, !me.finished else { return }
            if n < 0 {
                me.written(String(cString: uv_strerror(Int32(n))))
            } else if me.writtenFrom + n < chunk.count {
                me.writeFile(chunk, me.writtenFrom + n)
            } else {
                me.written(nil)
            }
        }
        if rc != 0 {
            Unmanaged<StdioTunnel>.fromOpaque(fileWriteRequest.pointee.data).release()
            written(String(cString: uv_strerror(rc)))
        }
    }

    func written(_ error: String?) {
        writePending = false
        pending?.deallocate()
        pending = nil
        guard !finished else { return }
        if let error {
            fail("writing standard output: \(error)")
            return
        }
        core.notify(id)
        forwarder.driver.flush()
    }

    // MARK: The end

    func fail(_ why: String) {
        guard !finished else { return }
        failure = why
        logger.error("--stdio: \(why)")
        if id >= 0 {
            core.connection(id).abort()
            core.notify(id)
        }
        finish()
    }

    func finish() {
        guard !finished else { return }
        finished = true
        stopReading()
        logger.debug("--stdio: done, \(bytesIn) bytes sent, \(bytesOut) received")
        for case let stream? in [input, output] {
            let handle = UnsafeMutableRawPointer(stream).assumingMemoryBound(to: uv_handle_t.self)
            if uv_is_closing(handle) == 0 { uv_close(handle) { $0!.deallocate() } }
        }
        input = nil
        output = nil
        // Not from here: this may run inside the loop's flush, which must not see its handles close.
        forwarder.shutdownSoon()
    }
}
