import FuzzDriver
import Glibc
import OneTunCore

/// Hands over to libFuzzer however the target was built (see fuzz/Package.swift).
@main enum Entry {
    static func main() { exit(fuzzDriverMain(CommandLine.argc, CommandLine.unsafeArgv)) }
}

/// The HTTP proxy: the head parsers and the body observer alone, then an `HTTPProxySession` driven the way
/// a driver drives it, with client bytes, upstream bytes and connection events from the input.
///
/// Input: the first byte picks the configuration (bit 0: credentials user:pass; bit 1: 200-byte head
/// limits; bit 2: no Via). The rest is text for the client, in pieces: 0xFF ends a piece, 0xFE ends it
/// and switches direction (client, upstream), 0xF0–0xF8 end it and are an event (upstream connected,
/// ended, failed in six ways, client ended). Other bytes are data.
///
/// Invariants: no crash or hang (every action accounts for some input, or pauses or closes); an action
/// never accounts for more bytes than it was given; `relay` and `pass` never exceed them; a forwarded head
/// parses again as an origin-form request with the method and path of the request that produced it, one
/// Host, no hop-by-hop field, and its target is the one the session named; every response head parses;
/// every reply is one response whose Content-Length is its body; a finished session holds no upstream;
/// and the chunked-body observer gives the same answer however its input is split.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTPHead(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    guard let flags = input.first else { return 0 }
    let body = UnsafeRawBufferPointer(rebasing: input[1...])
    checkParsers(body)

    let small = flags & 2 != 0
    let config = HTTPProxyConfig(
        credentials: flags & 1 != 0 ? HTTPProxyCredentials(user: "user", password: "pass") : nil,
        maxRequestHead: small ? 200 : 16 * 1024, maxResponseHead: small ? 200 : 64 * 1024,
        via: flags & 4 != 0 ? nil : "onetun")
    var driver = Driver(session: HTTPProxySession(config: config))
    var piece: [UInt8] = []
    var toClient = true
    func flush() {
        if !piece.isEmpty { toClient ? driver.fromClient(piece) : driver.fromUpstream(piece) }
        piece.removeAll(keepingCapacity: true)
    }
    for b in body {
        switch b {
        case 0xFF: flush()
        case 0xFE:
            flush()
            toClient.toggle()
        case 0xF0...0xF8:
            flush()
            driver.event(b - 0xF0)
        default: piece.append(b)
        }
    }
    flush()
    return 0
}

/// The parsers on the raw bytes: they must not crash, and what they return must be consistent.
private func checkParsers(_ bytes: UnsafeRawBufferPointer) {
    if let head = try? HTTPRequestHead(validating: bytes) {
        require(head.bytes.count <= bytes.count && head.method.upperBound < head.target.lowerBound)
        for field in head.fields { require(field.name.upperBound < field.value.lowerBound || field.value.isEmpty) }
        _ = try? head.proxyTarget()
    }
    if let head = try? HTTPResponseHead(validating: bytes) {
        require((100...999).contains(head.status) && head.bytes.count <= bytes.count)
    }
    _ = HTTPBase64.decode(bytes)

    // Chunked framing: whole, then in pieces whose sizes the bytes themselves pick.
    var whole = HTTPBodyObserver(.chunked, maxTrailer: 64)
    let wholeResult = Result { () throws(HTTPBodyError) in try whole.observe(bytes) }
    var split = HTTPBodyObserver(.chunked, maxTrailer: 64)
    var at = 0
    var splitResult: Result<Int, HTTPBodyError> = .success(0)
    while at < bytes.count, case .success(let total) = splitResult, !split.isComplete {
        let n = min(bytes.count - at, Int(bytes[at] % 7) + 1)
        do throws(HTTPBodyError) {
            let used = try split.observe(UnsafeRawBufferPointer(rebasing: bytes[at..<at + n]))
            require(used <= n)
            splitResult = .success(total + used)
            at += n
        } catch {
            splitResult = .failure(error)
        }
    }
    switch (wholeResult, splitResult) {
    case (.success(let a), .success(let b)):
        require(a == b && whole.isComplete == split.isComplete, "chunked: \(a) whole, \(b) split")
    case (.failure(let a), .failure(let b)):
        require(a == b, "chunked: \(a) whole, \(b) split")
    default:
        fatalError("chunked: \(wholeResult) whole, \(splitResult) split")
    }
}

/// A driver in memory: keeps what the session left unconsumed, opens and closes a pretend upstream
/// connection as told, and checks every action.
private struct Driver {
    var session: HTTPProxySession
    /// Client bytes read but not yet accounted for (kept across a pause).
    var clientPending: [UInt8] = []
    /// Request-head bytes taken since the last head: the request a forward came from.
    var headBytes: [UInt8] = []
    var clientEnded = false
    /// Upstream bytes received and not yet accounted for (the TCP receive buffer).
    var upstreamPending: [UInt8] = []
    /// Our pretend upstream connection: where it goes, and whether it was asked to connect.
    var upstream: ProxyTarget?
    var connecting = false

    init(session: HTTPProxySession) { self.session = session }

    mutating func fromClient(_ bytes: [UInt8]) {
        guard !clientEnded else { return }
        clientPending += bytes
        pumpClient()
    }

    mutating func fromUpstream(_ bytes: [UInt8]) {
        guard upstream != nil else { return }  // no connection, nothing arrives
        upstreamPending += bytes
        pumpUpstream()
        pumpClient()
    }

    mutating func event(_ code: UInt8) {
        switch code {
        case 0:
            guard connecting else { return }
            connecting = false
            let reply = session.upstreamConnected()
            require(reply.isEmpty || session.phase == .tunnel)
            pumpClient()
            pumpUpstream()
        case 1:
            guard upstream != nil, upstreamPending.isEmpty else { return }
            handle(session.upstreamEnded())
        case 2...7:
            guard upstream != nil else { return }
            let failures: [HTTPUpstreamFailure] = [.refused, .unreachable, .noRoute, .timedOut, .nameNotResolved, .reset]
            let failure = failures[Int(code) - 2]
            let phase = session.phase
            let action = session.upstreamFailed(failure)
            if case .respond(let reply) = action {
                require(reply.status == failure.status)
                require(phase != .tunnel)
            }
            handle(action)
        default:
            guard !clientEnded else { return }
            clientEnded = true
            switch session.clientEnded() {
            case .close: closeAll()
            case .finishResponse: require(session.phase == .awaitingResponse)
            case .halfCloseUpstream: require(session.phase == .tunnel)
            }
        }
        checkGlobal()
    }

    private mutating func handle(_ action: HTTPUpstreamEndAction) {
        switch action {
        case .complete(let end):
            require(!end.clientKeepAlive && !end.upstreamKeepAlive)
            closeAll()
        case .respond(let reply):
            check(reply)
            closeAll()
        case .abort:
            closeAll()
        case .forget:
            require(session.upstream == nil)
            closeUpstream()
        case .halfCloseClient:
            require(session.phase == .tunnel)
        }
    }

    private mutating func closeUpstream() {
        upstream = nil
        connecting = false
        upstreamPending.removeAll()
    }

    private mutating func closeAll() {
        closeUpstream()
        clientPending.removeAll()
        clientEnded = true
        require(session.phase == .finished, "closed, yet \(session.phase)")
    }

    private mutating func pumpClient() {
        var steps = 0
        while !clientPending.isEmpty {
            steps += 1
            require(steps < 100_000, "client side does not progress")
            switch session.phase {
            case .connecting, .awaitingResponse, .finished: return
            case .awaitingHead, .requestBody, .tunnel: break
            }
            let count = clientPending.count
            let action = clientPending.withUnsafeBytes { session.clientInput($0) }
            let consumed = action.consumed
            require(consumed <= count, "\(action) for \(count) bytes")
            let taken = Array(clientPending[..<consumed])
            clientPending.removeFirst(consumed)
            switch action {
            case .consumed(let n):
                require(n == count, "a head in progress takes all")
                headBytes += taken
            case .connect(let target, let use, _):
                checkUse(use, target: target, connect: true)
                headBytes.removeAll()
                upstreamPending.removeAll()  // a new connection: the old one's bytes are gone with it
                upstream = target
                connecting = true
            case .forward(let forward):
                require(forward.consumed > 0)
                headBytes += taken
                checkForward(forward, request: headBytes)
                headBytes.removeAll()
                checkUse(forward.upstream, target: forward.target, connect: false)
                if forward.upstream != .reuse {
                    connecting = true
                    upstreamPending.removeAll()
                }
                upstream = forward.target
            case .relay(let n):
                require(n > 0, "relay(0) of \(count) bytes")
            case .pause:
                return
            case .respond(let reply, let n):
                require(n > 0 || reply.close, "a reply that keeps the connection took no bytes")
                check(reply)
                headBytes.removeAll()
                if reply.close {
                    closeAll()
                    return
                }
            case .abort:
                closeAll()
                return
            case .finished:
                fatalError("finished while its phase was not")
            }
            checkGlobal()
        }
    }

    private mutating func pumpUpstream() {
        var steps = 0
        while !upstreamPending.isEmpty {
            steps += 1
            require(steps < 100_000, "upstream side does not progress")
            if session.phase == .connecting { return }  // not before upstreamConnected
            let count = upstreamPending.count
            let action = upstreamPending.withUnsafeBytes { session.upstreamInput($0) }
            var end: HTTPExchangeEnd?
            switch action {
            case .consumed(let n):
                require(n > 0 && n <= count)
                upstreamPending.removeFirst(n)
            case .head(let head, let n, let e):
                require(n > 0 && n <= count)
                let parsed = head.withUnsafeBytes { try? HTTPResponseHead(validating: $0) }
                require(parsed != nil && head.withUnsafeBytes { (try? HTTPResponseHead(validating: $0))!.bytes.count } == head.count,
                    "response head does not parse: \(String(decoding: head, as: UTF8.self).debugDescription)")
                upstreamPending.removeFirst(n)
                end = e
            case .pass(let n, let e):
                require(n > 0 && n <= count, "pass(\(n)) of \(count)")
                upstreamPending.removeFirst(n)
                end = e
            case .respond(let reply):
                check(reply)
                closeAll()
                return
            case .abort:
                closeAll()
                return
            case .closeUpstream:
                require(session.upstream == nil)
                closeUpstream()
                return
            }
            if let end {
                if !end.upstreamKeepAlive {
                    require(session.upstream == nil)
                    closeUpstream()
                } else {
                    require(session.upstream == upstream)
                }
                if end.clientKeepAlive {
                    // Upstream bytes past the response first (the session closes that connection), then
                    // the requests pipelined behind the last, in `fromUpstream`.
                    require(session.phase == .awaitingHead(received: 0))
                } else {
                    closeAll()
                    return
                }
            }
            checkGlobal()
        }
    }

    private func checkUse(_ use: HTTPUpstreamUse, target: ProxyTarget, connect: Bool) {
        switch use {
        case .open: require(upstream == nil, "open while one is held")
        case .reuse: require(!connect && upstream == target, "reuse of \(String(describing: upstream)) for \(target)")
        case .replace: require(upstream != nil, "replace with none held")
        }
    }

    private func checkGlobal() {
        if session.phase == .finished { require(session.upstream == nil, "finished with an upstream") }
        if let target = session.upstream { require(upstream == target, "session and driver disagree") }
    }

    /// One complete response: a head that parses, and exactly Content-Length bytes of body (or none, the
    /// length kept, for HEAD).
    private func check(_ reply: HTTPReply) {
        require(!reply.reason.contains("\n") && !reply.reason.contains("\r"))
        reply.bytes.withUnsafeBytes { raw in
            guard let head = try? HTTPResponseHead(validating: raw) else { fatalError("reply does not parse") }
            require(head.status == reply.status)
            let lengths = head.fields(named: "content-length")
            require(lengths.count == 1)
            let length = Int(String(decoding: UnsafeRawBufferPointer(rebasing: head.bytes[lengths[0].value]), as: UTF8.self))!
            let bodyCount = raw.count - head.bytes.count
            require(bodyCount == length || bodyCount == 0, "Content-Length \(length), body \(bodyCount)")
        }
    }

    /// The forwarded head against the request it came from.
    private func checkForward(_ forward: HTTPForward, request: [UInt8]) {
        let original = request.drop { $0 == 13 || $0 == 10 }
        let originalLine = original.prefix { $0 != 10 && $0 != 13 }
        let parts = originalLine.split(separator: 32, omittingEmptySubsequences: false)
        require(parts.count == 3, "forwarded a request line of \(parts.count) parts")
        let method = Array(parts[0]), target = Array(parts[1])
        Array(original).withUnsafeBytes { raw in
            guard let head = try? HTTPRequestHead(validating: raw) else { fatalError("accepted request does not parse") }
            guard case .absolute(let destination, _, _)? = try? head.proxyTarget() else {
                fatalError("forwarded a request that is not absolute-form")
            }
            require(destination == forward.target)
        }
        // The path: everything after scheme "://" authority, "/" when empty ("*" for OPTIONS), "/" before a query.
        let afterScheme = target.firstRange(of: Array("://".utf8))!.upperBound
        let pathStart = target[afterScheme...].firstIndex { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") } ?? target.endIndex
        var path = Array(target[pathStart...])
        if path.isEmpty {
            path = method == Array("OPTIONS".utf8) ? [UInt8(ascii: "*")] : [UInt8(ascii: "/")]
        } else if path[0] == UInt8(ascii: "?") {
            path.insert(UInt8(ascii: "/"), at: 0)
        }
        forward.head.withUnsafeBytes { raw in
            guard let head = try? HTTPRequestHead(validating: raw) else {
                fatalError("forwarded head does not parse: \(String(decoding: forward.head, as: UTF8.self).debugDescription)")
            }
            require(head.bytes.count == raw.count, "forwarded head has bytes after its end")
            require(Array(UnsafeRawBufferPointer(rebasing: raw[head.method])) == method, "method changed")
            require(Array(UnsafeRawBufferPointer(rebasing: raw[head.target])) == path,
                "path \(String(decoding: path, as: UTF8.self)) forwarded as \(head.targetString)")
            require(head.fields(named: "host").count == 1, "not one Host")
            for name: StaticString in ["te", "upgrade", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate"] {
                require(head.fields(named: name).isEmpty, "\(name) forwarded")
            }
            for field in head.fields(named: "connection") {
                let value = String(decoding: UnsafeRawBufferPointer(rebasing: raw[field.value]), as: UTF8.self)
                require(value == "close" || value == "keep-alive", "Connection: \(value) forwarded")
            }
        }
    }
}

/// `precondition` that says why in a release build too.
private func require(_ condition: Bool, _ message: @autoclosure () -> String = "", line: UInt = #line) {
    if !condition { fatalError("line \(line): \(message())") }
}
