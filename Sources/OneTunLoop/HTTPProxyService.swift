import CUV
import Glibc
import Logging
import OneTunCore

// The HTTP proxy (`--http-proxy`, wireproxy's `[http]`): the core's `HTTPProxySession` says what each byte
// is, this drives the sockets. A CONNECT, once its connection is open, becomes a plain relay like a
// forward's client (the session is dropped: a tunnel's bytes need no looking at). Absolute-form requests
// stay with the session: the client's bytes are read into the handshake buffer and copied into the
// upstream connection as the session says (heads rewritten, bodies as they are); the upstream's bytes are
// written to the client from the connection's buffer without a copy unless the socket is full.
extension Forwarder {
    /// The request head limit, 16 KiB: what a client pipelines past a CONNECT's head then always fits a
    /// fresh connection's send buffer (at least 16 KiB, whatever the memory budget).
    static let httpHeadSize = 16 << 10

    /// A client of the HTTP proxy: its session, then its first request head.
    func acceptHTTPClient(_ client: Client, _ proxy: ProxyListen) {
        var config = HTTPProxyConfig()
        if proxy.username != nil || proxy.password != nil {
            config.credentials = HTTPProxyCredentials(
                user: String(decoding: proxy.username ?? [], as: UTF8.self), password: String(decoding: proxy.password ?? [], as: UTF8.self))
        }
        client.http = HTTPProxySession(config: config)
        client.proxy = .http
        client.head = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.httpHeadSize, alignment: 16)
    }

    /// Whether the session wants the client read now.
    func httpReadsClient(_ client: Client) -> Bool {
        guard let phase = client.http?.phase else { return false }
        switch phase {
        case .awaitingHead, .requestBody: return true
        default: return false
        }
    }

    /// Gives the client's bytes in hand to the session and acts on what it says, until they are used up
    /// or the session waits.
    func driveHTTPClient(_ client: Client) {
        var rounds = 0
        while !client.closing, client.http != nil, rounds < 10_000 {
            rounds += 1
            // Refused (draining), or a CONNECT's tunnel: the session has nothing more to say.
            guard case .http = client.proxy else { return }
            // The response in flight comes first: its bytes still owed to the client, its end not yet
            // acted on, or a write pending (then the write's end resumes this).
            if client.passOwed > 0 || client.pendingEnd != nil || client.writePending {
                stopReading(client)
                return
            }
            // Bytes already counted as body go first, as the connection takes them.
            if client.relayOwed > 0 || !client.upstreamBacklog.isEmpty {
                guard flushToUpstream(client) else {
                    stopReading(client)
                    return
                }
            }
            guard client.headCount > 0 else { break }
            let head = client.head!
            let action = client.http!.clientInput(UnsafeRawBufferPointer(rebasing: head[0..<client.headCount]))
            switch action {
            case .consumed(let n):
                dropHead(client, n)
            case .connect(let target, let use, let consumed):
                dropHead(client, consumed)
                if use == .replace { closeUpstream(client) }
                stopReading(client)
                client.target = "\(target)"
                open(client, target)
                return
            case .forward(let forward):
                dropHead(client, forward.consumed)
                client.requests += 1
                logger.debug("HTTP proxy: \(forward.method) to \(forward.target) (\(forward.upstream))")
                client.upstreamBacklog += forward.head
                switch forward.upstream {
                case .reuse:
                    break
                case .replace:
                    closeUpstream(client)
                    client.target = "\(forward.target)"
                    open(client, forward.target)
                case .open:
                    client.target = "\(forward.target)"
                    open(client, forward.target)
                }
            case .relay(let n):
                client.relayOwed = n
            case .pause:
                stopReading(client)
                return
            case .respond(let reply, let consumed):
                dropHead(client, consumed)
                sendSmall(client, reply.bytes)
                if reply.close {
                    closeUpstream(client)
                    refuse(client, "HTTP proxy: \(reply.status) \(reply.reason)")
                    return
                }
            case .abort(let reason):
                closeUpstream(client)
                teardown(client, reset: true, reason: "HTTP proxy: \(reason)")
                return
            case .finished:
                client.headCount = 0
                return
            }
        }
        if httpReadsClient(client) && !client.reading && !client.clientEOF { readHandshake(client) }
    }

    func dropHead(_ client: Client, _ n: Int) {
        guard n > 0, let head = client.head else { return }
        let rest = client.headCount - n
        if rest > 0 { head.baseAddress!.copyMemory(from: head.baseAddress! + n, byteCount: rest) }
        client.headCount = rest
    }

    /// Writes the request head waiting for the upstream connection, then the body bytes counted already;
    /// false while there is no connection yet or its send buffer is full (the rest waits).
    func flushToUpstream(_ client: Client) -> Bool {
        guard client.id >= 0 else { return false }
        let connection = core.connection(client.id)
        if !client.upstreamBacklog.isEmpty {
            let offset = client.upstreamBacklog.withUnsafeBytes { copyToSendBuffer(connection, $0) }
            client.upstreamBacklog.removeFirst(offset)
            core.notify(client.id)
            if !client.upstreamBacklog.isEmpty { return false }
        }
        while client.relayOwed > 0 {
            let head = client.head!
            let region = connection.sendRegion(maxBytes: client.relayOwed)
            if region.count == 0 { return false }
            region.copyMemory(from: UnsafeRawBufferPointer(rebasing: head[0..<region.count]))
            connection.commitSend(region.count)
            client.bytesUp += region.count
            client.relayOwed -= region.count
            dropHead(client, region.count)
            core.notify(client.id)
        }
        return true
    }

    /// Lets go of the upstream connection (its events would be taken for the next one's).
    func closeUpstream(_ client: Client) {
        guard client.id >= 0 else { return }
        if client.id < clients.count, clients[client.id] === client { releaseConnection(client) }
        client.id = -1
        client.upstreamEndReported = false
        client.passOwed = 0
    }

    /// The upstream connection changed: a CONNECT's opened (the client hears so and relays), one failed
    /// (the client hears why), or bytes arrived for the client.
    func httpUpstreamChanged(_ client: Client, _ connection: TCPConnection) {
        guard client.http != nil else { return }
        let id = client.id
        // What arrived before a reset still goes to the client first (a 413 before the reset, say).
        if connection.hasEnded, connection.error != nil, connection.readableBytes > 0 || client.passOwed > 0 {
            if !client.writePending { httpDeliver(client, connection) }
            guard client.id == id, !client.closing, client.http != nil else { return }
            if connection.readableBytes > 0 || client.passOwed > 0 || client.writePending { return }
        }
        if connection.hasEnded, let error = connection.error, !client.upstreamEndReported {
            client.upstreamEndReported = true
            let failure: HTTPUpstreamFailure = switch error {
            case .refused: .refused
            case .timedOut: .timedOut
            case .unreachable: .unreachable
            case .reset: .reset
            }
            httpEnded(client, client.http!.upstreamFailed(failure), "the connection to \(client.target): \(error)")
            return
        }
        if case .connecting = client.http!.phase {
            guard connection.state != .synSent, !connection.hasEnded else { return }
            sendSmall(client, client.http!.upstreamConnected())
            client.http = nil
            logger.debug("connection \(client.id): HTTP CONNECT to \(client.target)")
            startRelaying(client, connection)
            return
        }
        if client.relayOwed > 0 || !client.upstreamBacklog.isEmpty { driveHTTPClient(client) }
        if client.closing || client.http == nil { return }
        if !client.writePending { httpDeliver(client, connection) }
        // The exchange may have ended and another connection taken this one's place: its end is not
        // the session's business any more.
        if client.closing || client.http == nil || client.id != id { return }
        if connection.isReadClosed && !client.writePending && client.passOwed == 0 && !client.upstreamEndReported {
            client.upstreamEndReported = true
            httpEnded(client, client.http!.upstreamEnded(), "the upstream connection to \(client.target) closed")
        }
    }

    /// Upstream bytes to the client, as the session says: rewritten heads, bodies as they are.
    func httpDeliver(_ client: Client, _ connection: TCPConnection) {
        for _ in 0..<64 {
            // A response whose last bytes went out through a pending chunk: its end now.
            if client.passOwed == 0, let end = client.pendingEnd {
                client.pendingEnd = nil
                exchangeEnded(client, end)
                return
            }
            if client.passOwed > 0 {
                guard writeOwed(client, connection) else { return }
                if let end = client.pendingEnd {
                    client.pendingEnd = nil
                    exchangeEnded(client, end)
                    return
                }
                continue
            }
            let readable = connection.readable()
            if readable.isEmpty { return }
            let action = client.http!.upstreamInput(readable)
            switch action {
            case .consumed(let n):
                connection.consume(n)
            case .head(let bytes, let consumed, let end):
                connection.consume(consumed)
                client.bytesDown += bytes.count
                sendSmall(client, bytes)
                if let end {
                    exchangeEnded(client, end)
                    return
                }
                if client.writePending { return }
            case .pass(let n, let end):
                client.passOwed = n
                client.pendingEnd = end
            case .respond(let reply):
                sendSmall(client, reply.bytes)
                closeUpstream(client)
                refuse(client, "HTTP proxy: \(reply.status) \(reply.reason)")
                return
            case .abort(let reason):
                closeUpstream(client)
                teardown(client, reset: true, reason: "HTTP proxy: \(reason)")
                return
            case .closeUpstream:
                closeUpstream(client)
                return
            }
        }
        core.notify(client.id)  // more: the next flush
    }

    /// Writes what the session counted as passing (`passOwed`) from the connection's buffer; false when the
    /// socket is full (a chunk is then copied and written, and this resumes when it is).
    func writeOwed(_ client: Client, _ connection: TCPConnection) -> Bool {
        while client.passOwed > 0 {
            let readable = connection.readable()
            if readable.isEmpty { return false }
            let want = min(readable.count, client.passOwed)
            var buf = uv_buf_init(UnsafeMutablePointer(mutating: readable.baseAddress!.assumingMemoryBound(to: CChar.self)), UInt32(want))
            let n = Int(uv_try_write(stream(client.handle), &buf, 1))
            if n > 0 {
                connection.consume(n)
                client.passOwed -= n
                client.bytesDown += n
                continue
            }
            if n != Int(UV_EAGAIN.rawValue) && n != 0 {
                teardown(client, reset: true, reason: "client write failed")
                return false
            }
            let m = min(want, Self.pendingLimit)
            var chunk = [UInt8](repeating: 0, count: m)
            chunk.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: readable[0..<m])) }
            connection.consume(m)
            client.passOwed -= m
            client.bytesDown += m
            sendSmall(client, chunk)
            return false
        }
        return true
    }

    /// A response is complete: keep or close each side as the session says.
    func exchangeEnded(_ client: Client, _ end: HTTPExchangeEnd) {
        if !end.upstreamKeepAlive { closeUpstream(client) }
        // Bytes after a complete response are no next response's: the session hears of them first (it
        // answers that the connection must go).
        if end.upstreamKeepAlive, client.id >= 0 {
            let connection = core.connection(client.id)
            let readable = connection.readable()
            if !readable.isEmpty {
                _ = client.http!.upstreamInput(readable)
                closeUpstream(client)
            }
        }
        if !end.clientKeepAlive {
            closeUpstream(client)
            refuse(client, "HTTP proxy: the exchange ended the connection")
            return
        }
        driveHTTPClient(client)
    }

    /// The upstream connection ended or failed.
    func httpEnded(_ client: Client, _ action: HTTPUpstreamEndAction, _ why: String) {
        switch action {
        case .complete(let end):
            exchangeEnded(client, end)
        case .respond(let reply):
            sendSmall(client, reply.bytes)
            closeUpstream(client)
            refuse(client, "HTTP proxy: \(reply.status) \(reply.reason) (\(why))")
        case .abort(let reason):
            closeUpstream(client)
            teardown(client, reset: true, reason: "HTTP proxy: \(reason)")
        case .forget:
            closeUpstream(client)
        case .halfCloseClient:
            if !client.shutdownSent {
                client.shutdownSent = true
                client.shutdownRequest.pointee.data = client.handle.pointee.data
                uv_shutdown(client.shutdownRequest, stream(client.handle)) { _, _ in }
            }
        }
    }

    /// The client sent its FIN while the session looks at its bytes.
    func httpClientEnded(_ client: Client) {
        client.clientEOF = true
        stopReading(client)
        switch client.http!.clientEnded() {
        case .close:
            closeUpstream(client)
            teardown(client, reset: false, reason: "the HTTP proxy's client closed")
        case .finishResponse:
            break  // the response goes on; its end closes the client
        case .halfCloseUpstream:
            if client.id >= 0 { core.connection(client.id).close(); core.notify(client.id) }
        }
    }

    /// A resolution or connection failure before the upstream connection existed.
    func httpFailed(_ client: Client, _ failure: HTTPUpstreamFailure, _ why: String) {
        guard client.http != nil else { return }
        httpEnded(client, client.http!.upstreamFailed(failure), why)
    }
}
