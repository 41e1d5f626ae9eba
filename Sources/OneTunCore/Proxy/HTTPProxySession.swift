/// What every `HTTPProxySession` of a listener shares.
public struct HTTPProxyConfig: Sendable {
    /// When set, every request must carry these in `Proxy-Authorization` (Basic), or gets a 407.
    public var credentials: HTTPProxyCredentials?
    /// The largest request head accepted, request line and empty line included; past it, 431 (RFC 6585 §5).
    public var maxRequestHead: Int
    /// The largest response head accepted from upstream; past it, 502. Also the bound on a chunked body's
    /// trailer section, either way.
    public var maxResponseHead: Int
    /// The pseudonym the proxy names itself by in the Via field it adds to every forwarded message (RFC 9110
    /// §7.6.3: a proxy MUST send one); nil sends none. A token (RFC 9110 §5.6.2), such as "onetun".
    public var via: String?

    public init(
        credentials: HTTPProxyCredentials? = nil, maxRequestHead: Int = 16 * 1024, maxResponseHead: Int = 64 * 1024,
        via: String? = "onetun"
    ) {
        precondition(maxRequestHead > 0 && maxResponseHead > 0, "head limits must be positive")
        precondition(via.map { !$0.isEmpty && $0.utf8.allSatisfy(HTTPSyntax.isTokenChar) } ?? true, "Via pseudonym must be a token")
        self.credentials = credentials
        self.maxRequestHead = maxRequestHead
        self.maxResponseHead = maxResponseHead
        self.via = via
    }
}

/// How to get an upstream connection for a request.
public enum HTTPUpstreamUse: Hashable, Sendable {
    /// There is none: open one.
    case open
    /// Send on the one open to the same target, idle since its last response ended.
    case reuse
    /// Close the one open (to another target, or one that a CONNECT cannot take over) and open one.
    case replace
}

/// A request to forward: where, how to get there, and the head to send first.
public struct HTTPForward: Hashable, Sendable {
    public var target: ProxyTarget
    public var upstream: HTTPUpstreamUse
    /// The rewritten request head (origin-form, Host, no hop-by-hop fields): write it to the upstream
    /// connection, before any body byte. A TCP connection takes writes while it is still connecting.
    public var head: [UInt8]
    /// Bytes of the input the request head took (empty lines before it included).
    public var consumed: Int
    /// The request method, for logs.
    public var method: String
}

/// What to do with client bytes given to `HTTPProxySession.clientInput`. After any action that accounts
/// for fewer bytes than were given (`consumed`), call again with the rest, unless the action is `pause`,
/// `abort` or `finished`.
public enum HTTPClientAction: Hashable, Sendable {
    /// The bytes were taken into the session's request-head buffer; nothing to send yet.
    case consumed(Int)
    /// CONNECT: open a TCP connection to the target (after closing the open one, for `.replace`), then
    /// call `upstreamConnected` or `upstreamFailed`. Keep the bytes past `consumed`: they go into the
    /// tunnel once it is open (the session pauses until then).
    case connect(ProxyTarget, upstream: HTTPUpstreamUse, consumed: Int)
    /// A request to forward.
    case forward(HTTPForward)
    /// The first `count` bytes go to the upstream connection unchanged: request body, or tunnel.
    case relay(Int)
    /// Read nothing more from the client for now and keep these bytes: the session waits for the upstream
    /// (a CONNECT being opened, or the response to a request already sent). Give them again once `phase`
    /// asks for client bytes.
    case pause
    /// Write the reply to the client; if `reply.close`, then close it and the upstream connection (if
    /// any). Otherwise the session waits for the next request.
    case respond(HTTPReply, consumed: Int)
    /// The request cannot go on and the client already has part of the response: close both connections.
    case abort(reason: String)
    /// The session has ended (an earlier action said to close): drop the bytes.
    case finished

    /// How many of the input bytes the action accounts for.
    public var consumed: Int {
        switch self {
        case .consumed(let n), .relay(let n): n
        case .connect(_, _, let n), .respond(_, let n): n
        case .forward(let forward): forward.consumed
        case .pause, .abort, .finished: 0
        }
    }
}

/// What follows the end of a response, for both connections.
public struct HTTPExchangeEnd: Hashable, Sendable {
    /// True: read the client's next request. False: close the client connection once everything written
    /// to it has been sent.
    public var clientKeepAlive: Bool
    /// True: keep the upstream connection for a later request to the same target. False: close it now.
    /// Never true when `clientKeepAlive` is false: the upstream connection is the client connection's.
    public var upstreamKeepAlive: Bool

    public init(clientKeepAlive: Bool, upstreamKeepAlive: Bool) {
        self.clientKeepAlive = clientKeepAlive
        self.upstreamKeepAlive = upstreamKeepAlive
    }

    static let closeBoth = HTTPExchangeEnd(clientKeepAlive: false, upstreamKeepAlive: false)
}

/// What to do with upstream bytes given to `HTTPProxySession.upstreamInput`. After any action that
/// accounts for fewer bytes than were given, call again with the rest (unless it closes). After an `end`
/// that keeps the client, give the rest of the upstream bytes in hand before the client's next bytes:
/// nothing may follow a complete response, and the session closes a connection that sends more
/// (`closeUpstream`) rather than take those bytes for the next request's response.
public enum HTTPUpstreamAction: Hashable, Sendable {
    /// The bytes were taken into the response-head buffer (or were a 1xx dropped for an HTTP/1.0 client);
    /// nothing to write yet.
    case consumed(Int)
    /// Write `head` (the rewritten response head) to the client; the input's first `consumed` bytes were
    /// it. With `end`, the response is complete (it has no body): see `HTTPExchangeEnd`.
    case head([UInt8], consumed: Int, end: HTTPExchangeEnd?)
    /// The first `count` bytes go to the client unchanged (response body, or tunnel). With `end`, they
    /// complete the response.
    case pass(Int, end: HTTPExchangeEnd?)
    /// The response cannot be relayed and nothing of it reached the client: write this 502 and close both
    /// connections.
    case respond(HTTPReply)
    /// The response broke after part of it reached the client: close both connections.
    case abort(reason: String)
    /// Bytes from an upstream connection with no request outstanding (an idle keep-alive connection, or
    /// after the session ended): close that connection; the session has forgotten it.
    case closeUpstream
}

/// What to do when the upstream connection ends or fails (`upstreamEnded`, `upstreamFailed`).
public enum HTTPUpstreamEndAction: Hashable, Sendable {
    /// A response delimited by the close has ended: close the client connection once it has everything
    /// (`end` says so, closing both).
    case complete(HTTPExchangeEnd)
    /// Write this reply (502 or 504) to the client, then close it; close the upstream connection too.
    case respond(HTTPReply)
    /// The response was cut short after part of it reached the client, or the tunnel failed: close both
    /// connections.
    case abort(reason: String)
    /// The connection was idle, or its session ended: nothing for the client; the session forgot it.
    case forget
    /// Tunnel: shut down the client's sending side once what the tunnel carried to it is written.
    case halfCloseClient
}

/// What to do when the client stops sending (`clientEnded`).
public enum HTTPClientEndAction: Hashable, Sendable {
    /// Close the client connection and the upstream one, if any.
    case close
    /// The request was complete: relay the rest of its response, then close (the session no longer keeps
    /// the client connection alive).
    case finishResponse
    /// Tunnel: shut down the upstream's sending side once what the tunnel carried to it is sent.
    case halfCloseUpstream
}

/// Where a session is, and so which of the client's bytes the driver should read and into what.
public enum HTTPSessionPhase: Hashable, Sendable {
    /// Waiting for a request head: read the client into any buffer and give it to `clientInput`. `received`
    /// bytes of the head have arrived; 0 on a fresh connection or one idle between requests. This is the
    /// phase a head (slowloris) or idle time-out applies to.
    case awaitingHead(received: Int)
    /// CONNECT is waiting for its upstream connection: do not read the client.
    case connecting
    /// Relaying a request body: read the client (straight into the upstream connection's send buffer, at
    /// most `remaining` bytes when known) and give what was read to `clientInput`.
    case requestBody(remaining: Int?)
    /// The request is sent; its response is awaited or being relayed: do not read the client.
    case awaitingResponse
    /// A CONNECT tunnel: relay both ways; `clientInput` and `upstreamInput` would only say to pass all.
    case tunnel
    /// The session has ended.
    case finished
}

/// One client connection of the HTTP proxy (RFC 9110, RFC 9112), sans-I/O: the driver owns both sockets,
/// moves every byte, and asks the session what each byte is.
///
/// **Inputs.** `clientInput` (bytes from the client), `upstreamInput` (bytes from the upstream
/// connection), `upstreamConnected`, `upstreamFailed`, `upstreamEnded`, `clientEnded`. Each returns what to
/// do. The session reads no clock: time-outs are the driver's, chosen from `phase` (a head time-out in
/// `awaitingHead`, a connect time-out after `connect` or an `open`/`replace`, reported as
/// `upstreamFailed(.timedOut)`).
///
/// **Heads are copied, bodies are not.** Request and response heads are copied into bounded buffers inside
/// the session (`maxRequestHead`, `maxResponseHead`), so the driver may pass any buffer and need not keep
/// partial heads; the head to send on comes back as a small array. Body bytes are only observed: for each
/// buffer the driver read (say straight into the upstream connection's send buffer) the session says how
/// many belong to the message (`relay`, `pass`), the framing of chunked bodies included, and where the
/// message ends. Bytes past the end belong to the next message: give them to the session again. (Read into
/// a send buffer, such bytes must be taken out before the next write there: commit only the `relay` count.)
///
/// **Connections.** The session speaks of one upstream connection at a time, `upstream`. Events of a
/// connection the driver closed (because an action said `replace`, `closeUpstream`, or to close) are not
/// reported: they would be taken for the current one's.
///
/// **Exchanges.** One request at a time: after a request is sent the session pauses the client (`pause`,
/// phase `awaitingResponse`) until its response has been relayed, then reads the next request if both
/// sides persist (RFC 9112 §9.3). Each client connection has at most one upstream connection; the next
/// request to the same target reuses it when the last response left it persistent, and a request to
/// another target closes it and opens a new one (`HTTPUpstreamUse`); a CONNECT always gets a connection
/// of its own. A response that ends when upstream closes (RFC 9112 §6.3 item 8), or that ends before the
/// request's body did, ends the client connection after it; the upstream connection never outlives the
/// client's.
///
/// **Rewriting.** A forwarded request is sent in origin-form with the client's version (1.0 or 1.1), Host
/// from its URI, without hop-by-hop fields, with Via; its body goes unchanged, Transfer-Encoding and
/// Content-Length with it. Response heads go out as HTTP/1.1 without hop-by-hop fields, with Via, saying
/// `Connection: close` when the client connection will close (`keep-alive` to an HTTP/1.0 client it keeps).
///
/// **Driving.** Per client connection, as `phase` says:
/// - `awaitingHead`, `requestBody`: read the client (a body straight into the upstream connection's send
///   buffer) and call `clientInput` with the bytes in hand, then with the rest after each action, until
///   they are used up or the action is `pause` (keep the rest, stop reading, and give it again when the
///   phase reads the client again), `abort`, or a closing `respond`.
/// - `connect`: open the connection (closing the old one for `replace`); when it is established, write
///   `upstreamConnected()` to the client, then relay both ways (`tunnel`), starting with the bytes kept.
/// - `forward`: reuse, open, or close and open, as `upstream` says; write `head`, then what `relay` names.
/// - Whenever an upstream connection exists (after a CONNECT's is established), read it and call
///   `upstreamInput`: write `head`'s bytes or the `pass` count to the client, consume `consumed`/`pass`
///   bytes, and act on `end`. Report its FIN (`upstreamEnded`) and failures (`upstreamFailed`), and the
///   client's FIN (`clientEnded`).
///
/// **Errors.** A malformed or oversized request gets a complete error reply with `Connection: close`:
/// 400, 405 (TRACE), 407 (credentials), 431 (head over the limit), 505 (not HTTP/1.x). Upstream failures
/// give 502, or 504 for a time-out; an unusable response head gives 502. Once part of a response reached
/// the client, a failure can only close (`abort`).
public struct HTTPProxySession: Sendable {
    public let config: HTTPProxyConfig
    private var state: State
    /// The head being received: a request's in `awaitingHead`, a response's in an exchange whose response
    /// is at `head`; one at a time. Kept out of the state's cases so that it grows in place: an array in an
    /// enum's payload is copied whenever the payload is taken out to be changed.
    private var head: HTTPHeadBuffer
    /// The target of the upstream connection the driver holds for this client (open, opening, or idle and
    /// reusable), or nil when there should be none.
    public private(set) var upstream: ProxyTarget?

    private enum State: Sendable {
        /// Receiving a request head (in `head`).
        case awaitingHead
        case connecting(ProxyTarget)
        case tunnel
        case exchange(Exchange)
        case finished
    }

    /// One forwarded request and its response, which may overlap (a server may answer before the whole body
    /// arrives, or send 100 Continue).
    private struct Exchange: Sendable {
        var target: ProxyTarget
        var request: HTTPBodyObserver
        var response: Response
        var isHEAD: Bool
        var clientVersion: HTTPVersion
        var clientKeepAlive: Bool
        var upstreamKeepAlive: Bool
    }

    private enum Response: Sendable {
        /// Receiving a response head (in `head`).
        case head
        /// A final head reached the client; what follows it once the body ends.
        case body(HTTPBodyObserver, end: HTTPExchangeEnd)
    }

    public init(config: HTTPProxyConfig = HTTPProxyConfig()) {
        self.config = config
        state = .awaitingHead
        head = HTTPHeadBuffer(limit: config.maxRequestHead, skipsLeadingEmptyLines: true)
    }

    public var phase: HTTPSessionPhase {
        switch state {
        case .awaitingHead: .awaitingHead(received: head.received)
        case .connecting: .connecting
        case .tunnel: .tunnel
        case .exchange(let exchange):
            exchange.request.isComplete ? .awaitingResponse : .requestBody(remaining: exchange.request.remaining)
        case .finished: .finished
        }
    }

    // MARK: Client side

    /// Bytes from the client, following those given before (less what earlier actions left unconsumed).
    public mutating func clientInput(_ bytes: UnsafeRawBufferPointer) -> HTTPClientAction {
        switch state {
        case .awaitingHead:
            switch head.take(bytes) {
            case .incomplete:
                return .consumed(bytes.count)
            case .tooLarge:
                finish()
                return .respond(.error(431, "request head larger than \(config.maxRequestHead) bytes"), consumed: bytes.count)
            case .complete(let consumed):
                let plan = head.bytes.withUnsafeBytes { HTTPRequestPlan.make($0, config: config) }
                return start(plan, consumed: consumed)
            }
        case .connecting:
            return .pause
        case .tunnel:
            return .relay(bytes.count)
        case .exchange(var exchange):
            guard !exchange.request.isComplete else { return .pause }
            do {
                let n = try exchange.request.observe(bytes)
                state = .exchange(exchange)
                return .relay(n)
            } catch {
                let reason = "malformed request body: \(error)"
                if case .head = exchange.response {
                    finish()
                    return .respond(.error(400, reason, noBody: exchange.isHEAD), consumed: 0)
                }
                finish()
                return .abort(reason: reason)
            }
        case .finished:
            return .finished
        }
    }

    private mutating func start(_ plan: HTTPRequestPlan, consumed: Int) -> HTTPClientAction {
        switch plan {
        case .reply(let reply):
            if reply.close {
                finish()
            } else {
                awaitRequest()
            }
            return .respond(reply, consumed: consumed)
        case .connect(let target):
            // The tunnel takes a connection of its own: an idle one was set up for plain requests.
            let use: HTTPUpstreamUse = upstream == nil ? .open : .replace
            upstream = target
            state = .connecting(target)
            return .connect(target, upstream: use, consumed: consumed)
        case .forward(let forward):
            let use: HTTPUpstreamUse = upstream == nil ? .open : upstream == forward.target ? .reuse : .replace
            upstream = forward.target
            head.reset(limit: config.maxResponseHead, skipsLeadingEmptyLines: false)
            state = .exchange(
                Exchange(
                    target: forward.target, request: HTTPBodyObserver(forward.body, maxTrailer: config.maxRequestHead),
                    response: .head,
                    isHEAD: forward.isHEAD, clientVersion: forward.clientVersion, clientKeepAlive: forward.clientKeepAlive,
                    upstreamKeepAlive: forward.upstreamKeepAlive))
            return .forward(
                HTTPForward(target: forward.target, upstream: use, head: forward.head, consumed: consumed, method: forward.method))
        }
    }

    /// The client will send nothing more (its FIN).
    public mutating func clientEnded() -> HTTPClientEndAction {
        switch state {
        case .tunnel:
            return .halfCloseUpstream
        case .exchange(var exchange) where exchange.request.isComplete:
            exchange.clientKeepAlive = false
            if case .body(let observer, var end) = exchange.response {
                end.clientKeepAlive = false
                exchange.response = .body(observer, end: end)
            }
            state = .exchange(exchange)
            return .finishResponse
        case .awaitingHead, .connecting, .exchange, .finished:
            finish()
            return .close
        }
    }

    // MARK: Upstream side

    /// The upstream connection asked for by `connect`, `forward` with `open` or `replace`, is established.
    /// Returns what to write to the client: the 200 for a CONNECT (the tunnel is then open, and the bytes
    /// kept since `connect` go in), nothing for a forwarded request.
    public mutating func upstreamConnected() -> [UInt8] {
        guard case .connecting = state else { return [] }
        state = .tunnel
        return HTTPReply.connectionEstablished
    }

    /// Bytes from the upstream connection, following those given before (less what earlier actions left
    /// unconsumed). Not before `upstreamConnected` for a CONNECT.
    public mutating func upstreamInput(_ bytes: UnsafeRawBufferPointer) -> HTTPUpstreamAction {
        switch state {
        case .tunnel:
            return .pass(bytes.count, end: nil)
        case .exchange(var exchange):
            switch exchange.response {
            case .head:
                switch head.take(bytes) {
                case .incomplete:
                    return .consumed(bytes.count)
                case .tooLarge:
                    finish()
                    return .respond(.error(502, "response head from \(exchange.target) larger than \(config.maxResponseHead) bytes", noBody: exchange.isHEAD))
                case .complete(let consumed):
                    let plan = head.bytes.withUnsafeBytes {
                        HTTPResponsePlan.make(
                            $0, isHEAD: exchange.isHEAD, clientVersion: exchange.clientVersion,
                            clientKeepAlive: exchange.clientKeepAlive, upstreamKeepAlive: exchange.upstreamKeepAlive, via: config.via)
                    }
                    switch plan {
                    case .refuse(let reason):
                        finish()
                        return .respond(.error(502, reason, noBody: exchange.isHEAD))
                    case .interim(let interim):
                        head.reset(limit: config.maxResponseHead, skipsLeadingEmptyLines: false)
                        guard let interim else { return .consumed(consumed) }
                        return .head(interim, consumed: consumed, end: nil)
                    case .final(let rewritten, let body, let clientKeepAlive, let upstreamKeepAlive):
                        let end = HTTPExchangeEnd(clientKeepAlive: clientKeepAlive, upstreamKeepAlive: upstreamKeepAlive)
                        let observer = HTTPBodyObserver(body, maxTrailer: config.maxResponseHead)
                        if observer.isComplete {
                            return .head(rewritten, consumed: consumed, end: complete(exchange, end))
                        }
                        exchange.response = .body(observer, end: end)
                        state = .exchange(exchange)
                        return .head(rewritten, consumed: consumed, end: nil)
                    }
                }
            case .body(var observer, let end):
                do {
                    let n = try observer.observe(bytes)
                    if observer.isComplete { return .pass(n, end: complete(exchange, end)) }
                    exchange.response = .body(observer, end: end)
                    state = .exchange(exchange)
                    return .pass(n, end: nil)
                } catch {
                    finish()
                    return .abort(reason: "malformed response body from \(exchange.target): \(error)")
                }
            }
        case .connecting:
            preconditionFailure("upstreamInput before upstreamConnected")
        case .awaitingHead, .finished:
            upstream = nil
            return .closeUpstream
        }
    }

    /// The upstream connection ended in order (its FIN, after all its bytes went to `upstreamInput`).
    public mutating func upstreamEnded() -> HTTPUpstreamEndAction {
        switch state {
        case .tunnel:
            return .halfCloseClient
        case .exchange(let exchange):
            if case .body(let observer, _) = exchange.response, observer.isCloseDelimited {
                finish()
                return .complete(.closeBoth)
            }
            return fail(exchange.target, "closed the connection", status: 502, isHEAD: exchange.isHEAD)
        case .connecting(let target):
            return fail(target, "closed the connection", status: 502, isHEAD: false)
        case .awaitingHead, .finished:
            upstream = nil
            return .forget
        }
    }

    /// The upstream connection could not be opened, or failed once open. Before any of a response reached
    /// the client this gives the 502 or 504 to write.
    public mutating func upstreamFailed(_ failure: HTTPUpstreamFailure) -> HTTPUpstreamEndAction {
        switch state {
        case .tunnel:
            finish()
            return .abort(reason: "tunnel to \(upstream.map(\.description) ?? "upstream"): \(failure)")
        case .exchange(let exchange):
            return fail(exchange.target, failure.description, status: failure.status, isHEAD: exchange.isHEAD)
        case .connecting(let target):
            return fail(target, failure.description, status: failure.status, isHEAD: false)
        case .awaitingHead, .finished:
            upstream = nil
            return .forget
        }
    }

    // MARK: Transitions

    private mutating func fail(_ target: ProxyTarget, _ what: String, status: Int, isHEAD: Bool) -> HTTPUpstreamEndAction {
        let started: Bool
        if case .exchange(let exchange) = state, case .body = exchange.response { started = true } else { started = false }
        finish()
        if started { return .abort(reason: "\(target): \(what) mid-response") }
        return .respond(.error(status, "\(target): \(what)", noBody: isHEAD))
    }

    /// The response is complete: the exchange ends, and so does the client connection if the request body
    /// has not (the next request would start at an unknown byte).
    private mutating func complete(_ exchange: Exchange, _ end: HTTPExchangeEnd) -> HTTPExchangeEnd {
        // The upstream connection is this client's: it does not outlive the client connection.
        let end = exchange.request.isComplete && end.clientKeepAlive ? end : .closeBoth
        if !end.upstreamKeepAlive { upstream = nil }
        if end.clientKeepAlive {
            awaitRequest()
        } else {
            finish()
        }
        return end
    }

    private mutating func awaitRequest() {
        state = .awaitingHead
        head.reset(limit: config.maxRequestHead, skipsLeadingEmptyLines: true)
    }

    private mutating func finish() {
        state = .finished
        upstream = nil
    }
}
