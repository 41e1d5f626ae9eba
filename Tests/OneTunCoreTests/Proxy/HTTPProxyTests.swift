import Testing
@testable import OneTunCore

// MARK: Helpers

private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }
private func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

extension HTTPProxySession {
    mutating func client(_ input: [UInt8]) -> HTTPClientAction { input.withUnsafeBytes { clientInput($0) } }
    mutating func client(_ input: String) -> HTTPClientAction { client(bytes(input)) }
    mutating func upstream(_ input: [UInt8]) -> HTTPUpstreamAction { input.withUnsafeBytes { upstreamInput($0) } }
    mutating func upstream(_ input: String) -> HTTPUpstreamAction { upstream(bytes(input)) }

    /// Feeds `input` as a driver does, in pieces of `piece` bytes, each piece given again from where the
    /// last action left off; returns every action but the `consumed` ones and the bytes relayed upstream.
    /// Stops at a pause or a close, returning the unconsumed rest.
    mutating func drive(client input: [UInt8], piece: Int = .max) -> (actions: [HTTPClientAction], relayed: [UInt8], rest: [UInt8]) {
        var actions: [HTTPClientAction] = []
        var relayed: [UInt8] = []
        var offset = 0
        while offset < input.count {
            let chunk = Array(input[offset..<min(input.count, offset + piece)])
            var used = 0
            while used < chunk.count {
                let action = client(Array(chunk[used...]))
                if case .consumed = action {} else { actions.append(action) }
                if case .relay(let n) = action { relayed += chunk[used..<used + n] }
                switch action {
                case .pause, .abort, .finished: return (actions, relayed, Array(input[(offset + used)...]))
                case .respond(let reply, let n) where reply.close:
                    return (actions, relayed, Array(input[(offset + used + n)...]))
                default: break
                }
                #expect(action.consumed <= chunk.count - used)
                #expect(action.consumed > 0 || chunk.count == used, "no progress: \(action)")
                used += max(action.consumed, 1)
            }
            offset += chunk.count
        }
        return (actions, relayed, [])
    }

    /// Feeds upstream bytes in pieces; returns the bytes written to the client and the end, if reached.
    mutating func drive(upstream input: [UInt8], piece: Int = .max) -> (written: [UInt8], end: HTTPExchangeEnd?, actions: [HTTPUpstreamAction]) {
        var written: [UInt8] = []
        var end: HTTPExchangeEnd?
        var actions: [HTTPUpstreamAction] = []
        var offset = 0
        while offset < input.count {
            let chunk = Array(input[offset..<min(input.count, offset + piece)])
            var used = 0
            while used < chunk.count {
                let action = upstream(Array(chunk[used...]))
                actions.append(action)
                switch action {
                case .consumed(let n):
                    used += n
                case .head(let head, let n, let e):
                    written += head
                    used += n
                    if let e { end = e }
                case .pass(let n, let e):
                    written += chunk[used..<used + n]
                    used += n
                    if let e { end = e }
                case .respond(let reply):
                    written += reply.bytes
                    return (written, end, actions)
                case .abort, .closeUpstream:
                    return (written, end, actions)
                }
                if end != nil && used < chunk.count { return (written, end, actions) }
            }
            offset += chunk.count
        }
        return (written, end, actions)
    }
}

private let v4 = IPAddress("10.0.0.2")!

private func forward(_ action: HTTPClientAction?) -> HTTPForward? {
    if case .forward(let f) = action { f } else { nil }
}

private func reply(_ action: HTTPClientAction?) -> HTTPReply? {
    if case .respond(let r, _) = action { r } else { nil }
}

// MARK: CONNECT

@Suite struct HTTPProxyConnectTests {
    @Test(arguments: [
        ("CONNECT 10.0.0.2:443 HTTP/1.1\r\nHost: 10.0.0.2:443\r\n\r\n", ProxyTarget.address(IPAddress("10.0.0.2")!, port: 443)),
        ("CONNECT [fd00::2]:8443 HTTP/1.1\r\nHost: [fd00::2]:8443\r\n\r\n", .address(IPAddress("fd00::2")!, port: 8443)),
        ("CONNECT Example.COM:443 HTTP/1.1\r\nHost: example.com:443\r\nUser-Agent: curl/8.5.0\r\nProxy-Connection: Keep-Alive\r\n\r\n",
         .name("example.com", port: 443)),
        ("CONNECT intranet.:22 HTTP/1.0\r\n\r\n", .name("intranet.", port: 22)),
    ])
    func connect(request: String, target: ProxyTarget) {
        var session = HTTPProxySession()
        #expect(session.phase == .awaitingHead(received: 0))
        #expect(session.client(request) == .connect(target, upstream: .open, consumed: request.utf8.count))
        #expect(session.phase == .connecting)
        #expect(session.upstream == target)
        #expect(session.client("early") == .pause)
        #expect(text(session.upstreamConnected()) == "HTTP/1.1 200 Connection established\r\n\r\n")
        #expect(session.phase == .tunnel)
        #expect(session.client("\u{16}\u{03}\u{01}") == .relay(3))
        #expect(session.upstream("server hello") == .pass(12, end: nil))
        #expect(session.clientEnded() == .halfCloseUpstream)
        #expect(session.upstreamEnded() == .halfCloseClient)
    }

    @Test func targetDescriptions() {
        #expect(ProxyTarget.address(IPAddress("10.0.0.2")!, port: 443).description == "10.0.0.2:443")
        #expect(ProxyTarget.address(IPAddress("fd00::2")!, port: 80).description == "[fd00::2]:80")
        #expect(ProxyTarget.name("example.com", port: 8080).description == "example.com:8080")
    }

    /// A client that sends its TLS ClientHello right behind the CONNECT loses none of it: `connect` says
    /// where the head ended, and the rest goes into the tunnel once it is open.
    @Test func bytesPipelinedAfterConnectAreKept() {
        var session = HTTPProxySession()
        let head = "CONNECT 10.0.0.2:443 HTTP/1.1\r\nHost: 10.0.0.2:443\r\n\r\n"
        let input = bytes(head + "\u{16}\u{03}\u{01}CLIENTHELLO")
        let action = session.client(input)
        #expect(action == .connect(.address(v4, port: 443), upstream: .open, consumed: head.utf8.count))
        let rest = Array(input[action.consumed...])
        #expect(session.client(rest) == .pause)
        _ = session.upstreamConnected()
        #expect(session.client(rest) == .relay(rest.count))
    }

    /// The head arriving a byte at a time, with the empty lines RFC 9112 §2.2 lets a client send first.
    @Test func headByteByByte() {
        var session = HTTPProxySession()
        let request = bytes("\r\n\r\nCONNECT 10.0.0.2:443 HTTP/1.1\r\n\r\n")
        for (i, b) in request.enumerated() {
            let action = session.client([b])
            if i < request.count - 1 {
                #expect(action == .consumed(1))
                #expect(session.phase == .awaitingHead(received: i + 1))
            } else {
                #expect(action == .connect(.address(v4, port: 443), upstream: .open, consumed: 1))
            }
        }
    }

    @Test(arguments: [HTTPUpstreamFailure.refused, .unreachable, .noRoute, .nameNotResolved, .reset, .timedOut])
    func connectFailures(failure: HTTPUpstreamFailure) throws {
        var session = HTTPProxySession()
        _ = session.client("CONNECT db.internal:5432 HTTP/1.1\r\n\r\n")
        guard case .respond(let reply) = session.upstreamFailed(failure) else {
            Issue.record("no reply")
            return
        }
        #expect(reply.status == (failure == .timedOut ? 504 : 502))
        #expect(reply.close)
        let response = text(reply.bytes)
        #expect(response.hasPrefix(failure == .timedOut ? "HTTP/1.1 504 Gateway Timeout\r\n" : "HTTP/1.1 502 Bad Gateway\r\n"))
        #expect(response.contains("\r\nConnection: close\r\n"))
        let body = try #require(response.split(separator: "\r\n\r\n", omittingEmptySubsequences: false).last)
        #expect(body == "db.internal:5432: \(failure)\n")
        #expect(response.contains("Content-Length: \(body.utf8.count)\r\n"))
        #expect(session.phase == .finished)
        #expect(session.upstream == nil)
    }
}

// MARK: Forwarding

@Suite struct HTTPProxyForwardTests {
    @Test func absoluteFormIsRewritten() throws {
        var session = HTTPProxySession()
        let request = """
            GET http://Example.com:8080/a/b?q=1&r=%20 HTTP/1.1\r
            Host: wrong.example\r
            User-Agent: curl/8.5.0\r
            Accept: */*\r
            Proxy-Connection: Keep-Alive\r
            Connection: keep-alive, X-Trace\r
            X-Trace: 1\r
            Keep-Alive: timeout=5\r
            TE: trailers\r
            Upgrade: h2c\r
            Proxy-Authorization: Basic dXNlcjpwYXNz\r
            Proxy-Authenticate: Basic\r
            Cookie: a=b;  c=d\r
            \r

            """
        let f = try #require(forward(session.client(request)))
        #expect(f.target == .name("example.com", port: 8080))
        #expect(f.upstream == .open)
        #expect(f.method == "GET")
        #expect(f.consumed == request.utf8.count)
        #expect(text(f.head) == """
            GET /a/b?q=1&r=%20 HTTP/1.1\r
            Host: Example.com:8080\r
            User-Agent: curl/8.5.0\r
            Accept: */*\r
            Cookie: a=b;  c=d\r
            Via: 1.1 onetun\r
            \r

            """)
        #expect(session.phase == .awaitingResponse)
        #expect(session.client("GET http://example.com/ HTTP/1.1\r\n\r\n") == .pause)
    }

    @Test(arguments: [
        ("GET http://10.0.0.2 HTTP/1.1", "GET / HTTP/1.1", "10.0.0.2", ProxyTarget.address(IPAddress("10.0.0.2")!, port: 80)),
        ("GET http://10.0.0.2?x HTTP/1.1", "GET /?x HTTP/1.1", "10.0.0.2", .address(IPAddress("10.0.0.2")!, port: 80)),
        ("POST HTTP://[fd00::2]:81/x HTTP/1.1", "POST /x HTTP/1.1", "[fd00::2]:81", .address(IPAddress("fd00::2")!, port: 81)),
        ("OPTIONS http://h.example HTTP/1.1", "OPTIONS * HTTP/1.1", "h.example", .name("h.example", port: 80)),
        ("OPTIONS http://h.example/ HTTP/1.1", "OPTIONS / HTTP/1.1", "h.example", .name("h.example", port: 80)),
        ("PROPFIND http://h.example:/dav HTTP/1.1", "PROPFIND /dav HTTP/1.1", "h.example:", .name("h.example", port: 80)),
    ])
    func originForm(requestLine: String, forwardedLine: String, host: String, target: ProxyTarget) throws {
        var session = HTTPProxySession(config: HTTPProxyConfig(via: nil))
        let f = try #require(forward(session.client(requestLine + "\r\nHost: h\r\n\r\n")))
        #expect(f.target == target)
        #expect(text(f.head) == "\(forwardedLine)\r\nHost: \(host)\r\n\r\n")
    }

    /// Keep-alive: the second request to the same destination reuses the upstream connection; a third to
    /// another closes it and opens one there.
    @Test func keepAliveReusesThenSwitches() throws {
        var session = HTTPProxySession()
        let first = try #require(forward(session.client("GET http://a.example/1 HTTP/1.1\r\nHost: a.example\r\n\r\n")))
        #expect(first.upstream == .open)
        let response = bytes("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nKeep-Alive: timeout=5\r\n\r\nhello")
        let (written, end, _) = session.drive(upstream: response)
        #expect(text(written) == "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nVia: 1.1 onetun\r\n\r\nhello")
        #expect(end == HTTPExchangeEnd(clientKeepAlive: true, upstreamKeepAlive: true))
        #expect(session.phase == .awaitingHead(received: 0))
        #expect(session.upstream == .name("a.example", port: 80))

        let second = try #require(forward(session.client("GET http://A.example:80/2 HTTP/1.1\r\nHost: a.example\r\n\r\n")))
        #expect(second.upstream == .reuse)
        #expect(session.drive(upstream: bytes("HTTP/1.1 204 No Content\r\n\r\n")).end
            == HTTPExchangeEnd(clientKeepAlive: true, upstreamKeepAlive: true))

        let third = try #require(forward(session.client("GET http://b.example/3 HTTP/1.1\r\nHost: b.example\r\n\r\n")))
        #expect(third.upstream == .replace)
        #expect(third.target == .name("b.example", port: 80))
        #expect(session.upstream == .name("b.example", port: 80))
    }

    /// Requests pipelined behind one another wait, unconsumed, until the response before them is done.
    @Test func pipelinedRequestsWaitForTheResponse() throws {
        var session = HTTPProxySession()
        let one = "GET http://a.example/1 HTTP/1.1\r\nHost: a.example\r\n\r\n"
        let two = "GET http://a.example/2 HTTP/1.1\r\nHost: a.example\r\n\r\n"
        let (actions, _, rest) = session.drive(client: bytes(one + two))
        #expect(actions.count == 2)
        #expect(forward(actions.first)?.consumed == one.utf8.count)
        #expect(actions.last == .pause)
        #expect(text(rest) == two)
        _ = session.drive(upstream: bytes("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
        #expect(forward(session.client(rest))?.upstream == .reuse)
    }

    @Test func upstreamClosingAfterItsResponseIsNotReused() throws {
        var session = HTTPProxySession()
        _ = session.client("GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n")
        let (written, end, _) = session.drive(upstream: bytes("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"))
        #expect(end == HTTPExchangeEnd(clientKeepAlive: true, upstreamKeepAlive: false))
        // The server's "close" is about its own connection: the client's stays, and is told nothing.
        #expect(!text(written).contains("Connection"))
        #expect(session.upstream == nil)
        #expect(forward(session.client("GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n"))?.upstream == .open)
    }

    /// An idle keep-alive connection closed by the server is forgotten; bytes from it close it.
    @Test func idleUpstreamEvents() throws {
        var session = HTTPProxySession()
        _ = session.client("GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n")
        _ = session.drive(upstream: bytes("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
        #expect(session.upstream != nil)
        #expect(session.upstreamEnded() == .forget)
        #expect(session.upstream == nil)
        #expect(session.phase == .awaitingHead(received: 0))

        _ = session.client("GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n")
        _ = session.drive(upstream: bytes("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
        #expect(session.upstream("HTTP/1.1 408 Request Timeout\r\n\r\n") == .closeUpstream)
        #expect(session.upstream == nil)
        #expect(session.phase == .awaitingHead(received: 0))
    }

    @Test func http10WithoutKeepAlive() throws {
        var session = HTTPProxySession()
        let f = try #require(forward(session.client("GET http://a.example/ HTTP/1.0\r\nUser-Agent: old\r\n\r\n")))
        #expect(text(f.head) == "GET / HTTP/1.0\r\nHost: a.example\r\nUser-Agent: old\r\nConnection: close\r\nVia: 1.0 onetun\r\n\r\n")
        let (written, end, _) = session.drive(upstream: bytes("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"))
        #expect(text(written) == "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\nVia: 1.0 onetun\r\n\r\nok")
        #expect(end == .init(clientKeepAlive: false, upstreamKeepAlive: false))
        #expect(session.phase == .finished)
        #expect(session.client("more") == .finished)
    }

    @Test func http10WithKeepAlive() throws {
        var session = HTTPProxySession(config: HTTPProxyConfig(via: nil))
        let f = try #require(forward(session.client("GET http://a.example/ HTTP/1.0\r\nProxy-Connection: Keep-Alive\r\n\r\n")))
        #expect(text(f.head) == "GET / HTTP/1.0\r\nHost: a.example\r\nConnection: keep-alive\r\n\r\n")
        let (written, end, _) = session.drive(
            upstream: bytes("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"))
        #expect(text(written) == "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")
        #expect(end == .init(clientKeepAlive: true, upstreamKeepAlive: true))
    }

    @Test func connectionCloseFromTheClient() throws {
        var session = HTTPProxySession(config: HTTPProxyConfig(via: nil))
        let f = try #require(forward(session.client("GET http://a.example/ HTTP/1.1\r\nConnection: close\r\n\r\n")))
        #expect(text(f.head) == "GET / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n")
        let (written, end, _) = session.drive(upstream: bytes("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
        #expect(text(written) == "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        #expect(end == .init(clientKeepAlive: false, upstreamKeepAlive: false))
    }

    /// A CONNECT after plain requests takes a connection of its own.
    @Test func connectAfterAForwardReplacesTheConnection() {
        var session = HTTPProxySession()
        _ = session.client("GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n")
        _ = session.drive(upstream: bytes("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
        #expect(session.client("CONNECT a.example:80 HTTP/1.1\r\n\r\n")
            == .connect(.name("a.example", port: 80), upstream: .replace, consumed: 33))
    }
}

// MARK: Bodies

@Suite struct HTTPProxyBodyTests {
    static let chunkedBody = "5;name=value\r\nhello\r\n0A\r\n0123456789\r\n000\r\nExpires: never\r\nX-Sum: 1\r\n\r\n"

    @Test(arguments: [1, 2, 3, 7, 1000])
    func chunkedRequestBody(piece: Int) throws {
        var session = HTTPProxySession()
        let head = "POST http://a.example/upload HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n"
        let next = "GET http://a.example/next HTTP/1.1\r\nHost: a.example\r\n\r\n"
        let (actions, relayed, rest) = session.drive(client: bytes(head + Self.chunkedBody + next), piece: piece)
        let f = try #require(forward(actions.first))
        #expect(text(f.head).contains("\r\nTransfer-Encoding: chunked\r\n"))
        #expect(text(relayed) == Self.chunkedBody)
        #expect(actions.last == .pause)
        #expect(text(rest) == next)
        #expect(session.phase == .awaitingResponse)
    }

    @Test(arguments: [1, 5, 1000])
    func contentLengthRequestBody(piece: Int) throws {
        var session = HTTPProxySession()
        let head = "PUT http://a.example/x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 11\r\n\r\n"
        var (actions, relayed, rest) = session.drive(client: bytes(head + "hello"), piece: piece)
        #expect(forward(actions.first) != nil)
        #expect(session.phase == .requestBody(remaining: 6))
        (actions, relayed, rest) = session.drive(client: bytes(" worldGET"), piece: piece)
        #expect(text(relayed) == " world")
        #expect(text(rest) == "GET")
        #expect(session.phase == .awaitingResponse)
    }

    @Test(arguments: [1, 3, 1000])
    func chunkedResponseBody(piece: Int) throws {
        var session = HTTPProxySession(config: HTTPProxyConfig(via: nil))
        _ = session.client("GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n")
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        let (written, end, actions) = session.drive(upstream: bytes(head + Self.chunkedBody), piece: piece)
        #expect(text(written) == head + Self.chunkedBody)
        #expect(end == .init(clientKeepAlive: true, upstreamKeepAlive: true))
        for case .pass(let n, _) in actions { #expect(n <= piece) }
    }

    /// Responses without content (RFC 9112 §6.3 item 1) end with their head, whatever their fields say.
    @Test(arguments: [
        ("HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
        ("HEAD", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("GET", "HTTP/1.1 204 No Content\r\n\r\n"),
        ("GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\nETag: \"x\"\r\n\r\n"),
        ("GET", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ])
    func responsesWithoutContent(method: String, response: String) {
        var session = HTTPProxySession(config: HTTPProxyConfig(via: nil))
        _ = session.client("\(method) http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n")
        let action = session.upstream(response + "NEXT")
        guard case .head(let head, let consumed, let end) = action else {
            Issue.record("\(action)")
            return
        }
        #expect(text(head) == response)
        #expect(consumed == response.utf8.count)
        #expect(end == .init(clientKeepAlive: true, upstreamKeepAlive: true))
        #expect(session.upstream("NEXT") == .closeUpstream)
    }

    @Test func closeDelimitedResponse() {
        var session = HTTPProxySession(config: HTTPProxyConfig(via: nil))
        _ = session.client("GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n")
        let (written, end, _) = session.drive(upstream: bytes("HTTP/1.0 200 OK\r\nServer: old\r\n\r\nstream of bytes"))
        #expect(text(written) == "HTTP/1.1 200 OK\r\nServer: old\r\nConnection: close\r\n\r\nstream of bytes")
        #expect(end == nil)
        #expect(session.upstream("more") == .pass(4, end: nil))
        #expect(session.upstreamEnded() == .complete(.init(clientKeepAlive: false, upstreamKeepAlive: false)))
        #expect(session.phase == .finished)
    }

    /// RFC 9112 §6.3 item 4: a response whose last coding is not chunked runs to the close.
    @Test func responseCodingNotChunkedRunsToTheClose() {
        var session = HTTPProxySession(config: HTTPProxyConfig(via: nil))
        _ = session.client("GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n")
        let response = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"
        #expect(session.upstream(response + "body")
            == .head(bytes("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n"), consumed: response.utf8.count, end: nil))
        #expect(session.upstream("body") == .pass(4, end: nil))
    }

    @Test func truncatedResponse() {
        var session = HTTPProxySession()
        _ = session.client("GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n")
        _ = session.upstream("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        guard case .abort = session.upstreamEnded() else {
            Issue.record("expected abort")
            return
        }
        #expect(session.phase == .finished)
    }

    @Test func upstreamClosingBeforeResponding() {
        var session = HTTPProxySession()
        _ = session.client("GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n")
        _ = session.upstream("HTTP/1.1 20")
        guard case .respond(let reply) = session.upstreamEnded() else {
            Issue.record("expected a reply")
            return
        }
        #expect(reply.status == 502)
        #expect(reply.reason == "a.example:80: closed the connection")
    }

    @Test func continueIsRelayedToHTTP11AndDroppedForHTTP10() throws {
        for (version, relayed) in [("1.1", true), ("1.0", false)] {
            var session = HTTPProxySession(config: HTTPProxyConfig(via: nil))
            let f = try #require(forward(session.client(
                "POST http://a.example/ HTTP/\(version)\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")))
            #expect(text(f.head).contains("\r\nExpect: 100-continue\r\n"))
            let interim = "HTTP/1.1 100 Continue\r\n\r\n"
            let action = session.upstream(interim)
            #expect(action == (relayed ? .head(bytes(interim), consumed: interim.utf8.count, end: nil) : .consumed(interim.utf8.count)))
            #expect(session.client("ok") == .relay(2))
            let (_, end, _) = session.drive(upstream: bytes("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"))
            #expect(end != nil)
        }
    }

    /// A server that answers before the request body is through ends both connections after its response.
    @Test func earlyResponseClosesBoth() {
        var session = HTTPProxySession()
        _ = session.client("POST http://a.example/ HTTP/1.1\r\nContent-Length: 100\r\n\r\n")
        let (_, end, _) = session.drive(upstream: bytes("HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n"))
        #expect(end == .init(clientKeepAlive: false, upstreamKeepAlive: false))
        #expect(session.client("rest of body") == .finished)
    }

    @Test(arguments: [
        "5\r\nhello\r\n0\r\n\r\n",  // sanity: valid
        "5\nhello\r\n0\r\n\r\n",  // bare LF after size
        "5\r\nhelloX\r\n",  // data longer than its size
        "g\r\n",  // not hex
        "5 5\r\nhello\r\n",  // two numbers
        ";x\r\n",  // no size
        "FFFFFFFFFFFFFFFFF\r\n",  // past Int.max
        "0\r\nbad\u{1}trailer\r\n\r\n",  // control in a trailer
        "0\r\n folded\r\n\r\n",  // obs-fold in the trailers
        "0\r\n\rX",  // final CRLF broken
    ])
    func chunkedFraming(body: String) {
        var observer = HTTPBodyObserver(.chunked)
        let input = bytes(body)
        let result: Result<Int, HTTPBodyError> = input.withUnsafeBytes { b in
            do throws(HTTPBodyError) { return .success(try observer.observe(b)) } catch { return .failure(error) }
        }
        if body.hasPrefix("5\r\nhello\r\n0") {
            #expect((try? result.get()) == input.count)
            #expect(observer.isComplete)
        } else {
            #expect(throws: HTTPBodyError.self) { try result.get() }
        }
    }

    @Test func malformedChunkedRequestBodyGets400() {
        var session = HTTPProxySession()
        _ = session.client("POST http://a.example/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        #expect(reply(session.client("zz\r\n"))?.status == 400)
        #expect(session.phase == .finished)
    }
}

// MARK: Errors and authentication

@Suite struct HTTPProxyErrorTests {
    @Test(arguments: [
        // The request line.
        ("GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n", 400),  // origin-form at a proxy
        ("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("GET https://a.example/ HTTP/1.1\r\n\r\n", 400),
        ("GET ftp://a.example/ HTTP/1.1\r\n\r\n", 400),
        ("GET a.example:80 HTTP/1.1\r\n\r\n", 400),  // authority-form without CONNECT
        ("CONNECT a.example HTTP/1.1\r\n\r\n", 400),  // no port
        ("CONNECT a.example: HTTP/1.1\r\n\r\n", 400),
        ("CONNECT a.example:0 HTTP/1.1\r\n\r\n", 400),
        ("CONNECT a.example:65536 HTTP/1.1\r\n\r\n", 400),
        ("CONNECT http://a.example:80 HTTP/1.1\r\n\r\n", 400),
        ("CONNECT fd00::2:443 HTTP/1.1\r\n\r\n", 400),  // IPv6 without brackets
        ("CONNECT [fd00::zz]:443 HTTP/1.1\r\n\r\n", 400),
        ("CONNECT [fd00::2%25eth0]:443 HTTP/1.1\r\n\r\n", 400),
        ("GET http://user:pw@a.example/ HTTP/1.1\r\n\r\n", 400),
        ("GET http:///path HTTP/1.1\r\n\r\n", 400),  // empty host
        ("GET http://a.example/#frag HTTP/1.1\r\n\r\n", 400),
        ("GET http://bad_host!/ HTTP/1.1\r\n\r\n", 400),
        ("GET http://10.1/ HTTP/1.1\r\n\r\n", 400),  // digits and dots that are no IPv4 address
        ("GET  http://a.example/ HTTP/1.1\r\n\r\n", 400),  // two spaces
        ("GET http://a.example/ HTTP/1.1 \r\n\r\n", 400),
        ("GET http://a.example/\tx HTTP/1.1\r\n\r\n", 400),
        ("GET http://a.example/ http/1.1\r\n\r\n", 400),
        ("GET http://a.example/ HTTP/1.10\r\n\r\n", 400),
        ("GET http://a.example/ HTTP/2.0\r\n\r\n", 505),
        ("GET http://a.example/\r\n\r\n", 400),  // HTTP/0.9
        ("G@T http://a.example/ HTTP/1.1\r\n\r\n", 400),
        ("GET http://a.example/é HTTP/1.1\r\n\r\n", 400),
        ("TRACE http://a.example/ HTTP/1.1\r\n\r\n", 405),
        // Field lines.
        ("GET http://a.example/ HTTP/1.1\r\nNoColon\r\n\r\n", 400),
        ("GET http://a.example/ HTTP/1.1\r\nHost : a\r\n\r\n", 400),
        ("GET http://a.example/ HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400),
        ("GET http://a.example/ HTTP/1.1\r\n: empty name\r\n\r\n", 400),
        ("GET http://a.example/ HTTP/1.1\r\nX(: y\r\n\r\n", 400),
        ("GET http://a.example/ HTTP/1.1\r\nX: a\u{0}b\r\n\r\n", 400),
        ("GET http://a.example/ HTTP/1.1\r\nX: a\rb\r\n\r\n", 400),
        ("GET http://a.example/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        // Framing.
        ("POST http://a.example/ HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
        ("POST http://a.example/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        ("POST http://a.example/ HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", 400),
        ("POST http://a.example/ HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400),
        ("POST http://a.example/ HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
        ("POST http://a.example/ HTTP/1.1\r\nContent-Length: \r\n\r\n", 400),
        ("POST http://a.example/ HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("POST http://a.example/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        ("POST http://a.example/ HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
        ("POST http://a.example/ HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
        ("POST http://a.example/ HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n", 400),
        ("POST http://a.example/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("POST http://a.example/ HTTP/1.1\r\nContent-Length: 5\r\nConnection: Content-Length\r\n\r\n", 400),
        ("CONNECT a.example:443 HTTP/1.1\r\nContent-Length: 5\r\n\r\n", 400),
        ("OPTIONS http://a.example/ HTTP/1.1\r\nMax-Forwards: x\r\n\r\n", 400),
    ])
    func badRequests(request: String, status: Int) throws {
        var session = HTTPProxySession()
        let action = session.client(request)
        let r = try #require(reply(action), "\(action)")
        #expect(r.status == status)
        #expect(r.close)
        #expect(action.consumed == request.utf8.count)
        let response = text(r.bytes)
        #expect(response.hasPrefix("HTTP/1.1 \(status) "))
        #expect(response.contains("\r\nConnection: close\r\n"))
        #expect(response.hasSuffix("\r\n\r\n" + r.reason + "\n"))
        #expect(!r.reason.contains("\n"))
        #expect(session.phase == .finished)
    }

    @Test func legalOddities() throws {
        // Lone LF line endings (RFC 9112 §2.2), a field value with obs-text, empty values, HTTP/1.2.
        var session = HTTPProxySession(config: HTTPProxyConfig(via: nil))
        let f = try #require(forward(session.client("GET http://a.example/ HTTP/1.2\nX-Empty:\nX-Latin: caf\u{E9}\n\n")))
        #expect(text(f.head) == "GET / HTTP/1.1\r\nHost: a.example\r\nX-Empty: \r\nX-Latin: caf\u{E9}\r\n\r\n")
    }

    @Test func headOverTheLimitGets431() throws {
        var session = HTTPProxySession()
        let huge = "GET http://a.example/ HTTP/1.1\r\nX-Big: " + String(repeating: "a", count: 16 * 1024) + "\r\n\r\n"
        let (actions, _, _) = session.drive(client: bytes(huge), piece: 1000)
        let r = try #require(reply(actions.last))
        #expect(r.status == 431)
        #expect(text(r.bytes).hasPrefix("HTTP/1.1 431 Request Header Fields Too Large\r\n"))
        // Exactly at the limit passes.
        var exact = HTTPProxySession(config: HTTPProxyConfig(maxRequestHead: 64))
        let head = "GET http://a.example/ HTTP/1.1\r\nX: " + String(repeating: "a", count: 25) + "\r\n\r\n"
        #expect(head.utf8.count == 64)
        #expect(forward(exact.client(head)) != nil)
        var over = HTTPProxySession(config: HTTPProxyConfig(maxRequestHead: 63))
        #expect(reply(over.client(head))?.status == 431)
    }

    /// A head near the limit, a byte per read (a slow client): each byte is handled once.
    @Test func largeHeadByteByByte() throws {
        var session = HTTPProxySession(config: HTTPProxyConfig(via: nil))
        let value = String(repeating: "v", count: 16_000)
        let head = bytes("GET http://a.example/ HTTP/1.1\r\nX-Big: \(value)\r\n\r\n")
        let (actions, _, _) = session.drive(client: head, piece: 1)
        let f = try #require(forward(actions.first))
        #expect(f.consumed == 1)
        #expect(text(f.head) == "GET / HTTP/1.1\r\nHost: a.example\r\nX-Big: \(value)\r\n\r\n")
    }

    @Test func responseErrorsGive502() throws {
        let bad = [
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            "HTTP/2 200\r\n\r\n",
            "ICY 200 OK\r\n\r\n",
            "HTTP/1.1 099 Low\r\n\r\n",
            "HTTP/1.1 200 OK\r\nConnection: transfer-encoding\r\n\r\n",
        ]
        for response in bad {
            var session = HTTPProxySession()
            _ = session.client("GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n")
            guard case .respond(let r) = session.upstream(response) else {
                Issue.record("accepted: \(response.debugDescription)")
                continue
            }
            #expect(r.status == 502)
            #expect(session.phase == .finished)
            #expect(session.upstream == nil)
        }
        var session = HTTPProxySession(config: HTTPProxyConfig(maxResponseHead: 100))
        _ = session.client("GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n")
        let (written, _, _) = session.drive(upstream: bytes("HTTP/1.1 200 OK\r\nX: " + String(repeating: "b", count: 200)))
        #expect(text(written).hasPrefix("HTTP/1.1 502 Bad Gateway\r\n"))
    }

    @Test func statusLineWithoutReason() {
        var session = HTTPProxySession(config: HTTPProxyConfig(via: nil))
        _ = session.client("GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n")
        let response = "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"
        #expect(session.upstream(response)
            == .head(bytes("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n"), consumed: response.utf8.count, end: .init(clientKeepAlive: true, upstreamKeepAlive: true)))
    }

    @Test(arguments: [HTTPUpstreamFailure.refused, .unreachable, .noRoute, .nameNotResolved, .reset, .timedOut])
    func forwardFailures(failure: HTTPUpstreamFailure) throws {
        var session = HTTPProxySession()
        _ = session.client("GET http://10.0.0.2:8080/ HTTP/1.1\r\nHost: x\r\n\r\n")
        guard case .respond(let r) = session.upstreamFailed(failure) else {
            Issue.record("no reply")
            return
        }
        #expect(r.status == failure.status)
        #expect(r.status == (failure == .timedOut ? 504 : 502))
        #expect(r.reason == "10.0.0.2:8080: \(failure)")
    }

    @Test func failureMidResponseAborts() {
        var session = HTTPProxySession()
        _ = session.client("GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n")
        _ = session.upstream("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
        guard case .abort = session.upstreamFailed(.reset) else {
            Issue.record("expected abort")
            return
        }
    }

    /// A HEAD request's error reply keeps its Content-Length and leaves out the body (RFC 9110 §9.3.2).
    @Test func errorToHEADHasNoBody() throws {
        var session = HTTPProxySession()
        let r = try #require(reply(session.client("HEAD https://a.example/ HTTP/1.1\r\n\r\n")))
        #expect(text(r.bytes).hasSuffix("\r\n\r\n"))
        #expect(text(r.bytes).contains("Content-Length: \(r.reason.utf8.count + 1)\r\n"))
    }

    @Test func optionsMaxForwards() throws {
        var session = HTTPProxySession(config: HTTPProxyConfig(via: nil))
        let f = try #require(forward(session.client("OPTIONS http://a.example/ HTTP/1.1\r\nMax-Forwards: 3\r\n\r\n")))
        #expect(text(f.head) == "OPTIONS / HTTP/1.1\r\nHost: a.example\r\nMax-Forwards: 2\r\n\r\n")
        _ = session.drive(upstream: bytes("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
        let r = try #require(reply(session.client("OPTIONS http://a.example/ HTTP/1.1\r\nMax-Forwards: 0\r\n\r\n")))
        #expect(r.status == 200)
        #expect(!r.close)
        #expect(session.phase == .awaitingHead(received: 0))
    }

    @Test func clientEnding() {
        var idle = HTTPProxySession()
        #expect(idle.clientEnded() == .close)
        var waiting = HTTPProxySession()
        _ = waiting.client("GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n")
        #expect(waiting.clientEnded() == .finishResponse)
        let (written, end, _) = waiting.drive(upstream: bytes("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
        #expect(text(written).contains("Connection: close"))
        #expect(end == .init(clientKeepAlive: false, upstreamKeepAlive: false))
        #expect(waiting.upstream == nil)
        var uploading = HTTPProxySession()
        _ = uploading.client("POST http://a.example/ HTTP/1.1\r\nContent-Length: 5\r\n\r\nab")
        #expect(uploading.clientEnded() == .close)
        #expect(uploading.phase == .finished)
    }
}

@Suite struct HTTPProxyAuthTests {
    static let config = HTTPProxyConfig(credentials: HTTPProxyCredentials(user: "user", password: "pa:ss"))

    @Test(arguments: [
        ("Proxy-Authorization: Basic dXNlcjpwYTpzcw==\r\n", true),
        ("Proxy-Authorization: basic   dXNlcjpwYTpzcw==\r\n", true),
        ("Proxy-Authorization: BASIC dXNlcjpwYTpzcw\r\n", true),  // padding left out
        ("", false),
        ("Proxy-Authorization: Basic dXNlcjpwYXNz\r\n", false),  // user:pass
        ("Proxy-Authorization: Basic dXNlcjpwYTpzcw==x\r\n", false),
        ("Proxy-Authorization: Basic dXNlcjpwYTpzcw=\r\n", false),
        ("Proxy-Authorization: Bearer dXNlcjpwYTpzcw==\r\n", false),
        ("Proxy-Authorization: Basic\r\n", false),
        ("Proxy-Authorization: Basic dXNlcjpwYTpzcw==\r\nProxy-Authorization: Basic dXNlcjpwYTpzcw==\r\n", false),
        ("Authorization: Basic dXNlcjpwYTpzcw==\r\n", false),
    ])
    func credentials(field: String, accepted: Bool) throws {
        for request in ["GET http://a.example/ HTTP/1.1\r\n", "CONNECT a.example:443 HTTP/1.1\r\n"] {
            var session = HTTPProxySession(config: Self.config)
            let action = session.client(request + field + "\r\n")
            if accepted {
                if case .forward(let f) = action {
                    #expect(!text(f.head).contains("Proxy-Authorization"))
                } else {
                    #expect(action == .connect(.name("a.example", port: 443), upstream: .open, consumed: action.consumed))
                }
            } else {
                let r = try #require(reply(action))
                #expect(r.status == 407)
                #expect(text(r.bytes).contains("\r\nProxy-Authenticate: Basic realm=\"onetun\"\r\n"))
            }
        }
    }

    @Test func credentialsRules() {
        #expect(HTTPProxyCredentials(user: "a:b", password: "c") == nil)
        #expect(HTTPProxyCredentials(user: "a", password: "secret")!.description.contains("secret") == false)
        #expect(HTTPProxyCredentials.constantTimeEquals(expected: [1, 2, 3], given: [1, 2, 3]))
        #expect(!HTTPProxyCredentials.constantTimeEquals(expected: [1, 2, 3], given: [1, 2]))
        #expect(!HTTPProxyCredentials.constantTimeEquals(expected: [1, 2], given: [1, 2, 0]))
        #expect(!HTTPProxyCredentials.constantTimeEquals(expected: [], given: [0]))
    }

    @Test(arguments: [
        ("", [UInt8]()), ("Zg==", bytes("f")), ("Zg", bytes("f")), ("Zm8=", bytes("fo")), ("Zm8", bytes("fo")),
        ("Zm9v", bytes("foo")), ("Zm9vYmFy", bytes("foobar")), ("+/+/", [0xFB, 0xFF, 0xBF]),
    ])
    func base64(encoded: String, decoded: [UInt8]) {
        #expect(bytes(encoded).withUnsafeBytes { HTTPBase64.decode($0) } == decoded)
    }

    @Test(arguments: ["Z", "Zg=", "Z===", "Zg==Zg==", "Zm9v!", "Zm 9v", "=", "-_"])
    func base64Refused(encoded: String) {
        #expect(bytes(encoded).withUnsafeBytes { HTTPBase64.decode($0) } == nil)
    }
}
