// How a proxy turns a received head into the one it forwards: the request's target, framing and
// persistence decided once (RFC 9112 §3.2, §6, §9), hop-by-hop fields removed (RFC 9110 §7.6.1), and the
// head re-emitted with CRLF line endings.

/// What the framing and connection fields of a head say.
struct HTTPFieldSummary {
    enum ContentLength: Equatable {
        case absent
        case valid(Int)
        /// Not 1*DIGIT, too large, or on more than one line. RFC 9110 §8.6 lets a recipient either reject
        /// "42, 42" or fold it; rejecting leaves no room for two readers to disagree.
        case invalid
    }

    var contentLength = ContentLength.absent
    var transferEncodingPresent = false
    /// Transfer codings over every Transfer-Encoding line, in order.
    var codings = 0
    var chunkedCodings = 0
    var finalIsChunked = false
    /// "close" or "keep-alive" in Connection (or in Proxy-Connection, which old clients send instead).
    var close = false
    var keepAlive = false
    /// The other names Connection lists, lower-cased: fields to remove (RFC 9110 §7.6.1). A set, so that a
    /// head listing thousands costs no more than its length to filter.
    var connectionOptions: Set<[UInt8]> = []
    /// Connection lists Content-Length or Transfer-Encoding. Removing either would change where the body
    /// the proxy relays unchanged ends for the next hop, so such a message is refused instead.
    var connectionNamesFraming = false
    var hostLines = 0
    var proxyAuthorization: [HTTPField] = []
    var maxForwards: [HTTPField] = []

    init(_ bytes: UnsafeRawBufferPointer, _ fields: [HTTPField]) {
        for field in fields {
            let name = field.name
            if bytes.httpEquals(name, caseInsensitive: "content-length") {
                // Content-Length = 1*DIGIT (RFC 9110 §8.6)
                guard contentLength == .absent, !field.value.isEmpty else {
                    contentLength = .invalid
                    continue
                }
                var n = 0
                for k in field.value {
                    let b = bytes[k]
                    guard HTTPSyntax.isDigit(b) else {
                        n = -1
                        break
                    }
                    let (m, o1) = n.multipliedReportingOverflow(by: 10)
                    let (s, o2) = m.addingReportingOverflow(Int(b - UInt8(ascii: "0")))
                    guard !o1, !o2 else {
                        n = -1
                        break
                    }
                    n = s
                }
                contentLength = n < 0 ? .invalid : .valid(n)
            } else if bytes.httpEquals(name, caseInsensitive: "transfer-encoding") {
                transferEncodingPresent = true
                // transfer-coding = token *( OWS ";" OWS transfer-parameter ) (RFC 9112 §7)
                for element in HTTPSyntax.listElements(in: bytes, field.value) {
                    var end = element.lowerBound
                    while end < element.upperBound && bytes[end] != HTTPSyntax.semicolon { end += 1 }
                    while end > element.lowerBound && HTTPSyntax.isWhitespace(bytes[end - 1]) { end -= 1 }
                    let chunked = bytes.httpEquals(element.lowerBound..<end, caseInsensitive: "chunked")
                    codings += 1
                    if chunked { chunkedCodings += 1 }
                    finalIsChunked = chunked
                }
            } else if bytes.httpEquals(name, caseInsensitive: "connection") {
                for option in HTTPSyntax.listElements(in: bytes, field.value) {
                    if bytes.httpEquals(option, caseInsensitive: "close") {
                        close = true
                    } else if bytes.httpEquals(option, caseInsensitive: "keep-alive") {
                        keepAlive = true
                    } else {
                        if bytes.httpEquals(option, caseInsensitive: "content-length")
                            || bytes.httpEquals(option, caseInsensitive: "transfer-encoding")
                        {
                            connectionNamesFraming = true
                        }
                        connectionOptions.insert(Self.lowercased(bytes, option))
                    }
                }
            } else if bytes.httpEquals(name, caseInsensitive: "proxy-connection") {
                for option in HTTPSyntax.listElements(in: bytes, field.value) {
                    if bytes.httpEquals(option, caseInsensitive: "close") { close = true }
                    if bytes.httpEquals(option, caseInsensitive: "keep-alive") { keepAlive = true }
                }
            } else if bytes.httpEquals(name, caseInsensitive: "host") {
                hostLines += 1
            } else if bytes.httpEquals(name, caseInsensitive: "proxy-authorization") {
                proxyAuthorization.append(field)
            } else if bytes.httpEquals(name, caseInsensitive: "max-forwards") {
                maxForwards.append(field)
            }
        }
    }

    /// Fields that end at this hop (RFC 9110 §7.6.1): Connection and what it lists, and the ones that are
    /// hop-by-hop without being listed: Proxy-Connection, Keep-Alive, TE, Upgrade, Proxy-Authorization,
    /// Proxy-Authenticate. Transfer-Encoding is a property of the message, and stays: the body goes on
    /// exactly as received, chunked framing included, so the next hop needs it to find the body's end.
    func isHopByHop(_ field: HTTPField, in bytes: UnsafeRawBufferPointer) -> Bool {
        let name = field.name
        switch name.count {
        case 2 where bytes.httpEquals(name, caseInsensitive: "te"): return true
        case 7 where bytes.httpEquals(name, caseInsensitive: "upgrade"): return true
        case 10 where bytes.httpEquals(name, caseInsensitive: "connection"),
            10 where bytes.httpEquals(name, caseInsensitive: "keep-alive"):
            return true
        case 16 where bytes.httpEquals(name, caseInsensitive: "proxy-connection"): return true
        case 18 where bytes.httpEquals(name, caseInsensitive: "proxy-authenticate"): return true
        case 19 where bytes.httpEquals(name, caseInsensitive: "proxy-authorization"): return true
        default: return !connectionOptions.isEmpty && connectionOptions.contains(Self.lowercased(bytes, name))
        }
    }

    static func lowercased(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> [UInt8] {
        range.map { bytes[$0] >= UInt8(ascii: "A") && bytes[$0] <= UInt8(ascii: "Z") ? bytes[$0] | 0x20 : bytes[$0] }
    }
}

/// What the session does with one request head.
enum HTTPRequestPlan {
    /// Refused (or answered) by the proxy itself.
    case reply(HTTPReply)
    case connect(ProxyTarget)
    case forward(Forward)

    struct Forward {
        var target: ProxyTarget
        var method: String
        var head: [UInt8]
        var body: HTTPBodyLength
        /// Whether the client connection persists after this exchange (RFC 9112 §9.3).
        var clientKeepAlive: Bool
        /// Whether the forwarded request left the upstream connection persistent.
        var upstreamKeepAlive: Bool
        var isHEAD: Bool
        var clientVersion: HTTPVersion
    }

    static func make(_ raw: UnsafeRawBufferPointer, config: HTTPProxyConfig) -> HTTPRequestPlan {
        let head: HTTPRequestHead
        do {
            head = try HTTPRequestHead(validating: raw)
        } catch .unsupportedVersion(let version) {
            // RFC 9110 §15.6.6: the major version is one the proxy does not speak.
            return .reply(.error(505, "\(version) is not supported; use HTTP/1.1"))
        } catch {
            return .reply(.error(400, "malformed request: \(error)"))
        }
        let bytes = head.bytes
        let isHEAD = head.isMethod("HEAD")
        func refuse(_ status: Int, _ reason: String, fields: [(String, String)] = []) -> HTTPRequestPlan {
            .reply(.error(status, reason, noBody: isHEAD, fields: fields))
        }
        let summary = HTTPFieldSummary(bytes, head.fields)
        // RFC 9112 §3.2: a request with more than one Host line is refused. A missing Host is let by: the
        // request-target names the destination, and the forwarded request gets one from it.
        if summary.hostLines > 1 { return refuse(400, "more than one Host header") }
        if summary.connectionNamesFraming { return refuse(400, "Connection names a framing header") }
        let target: HTTPProxyRequestTarget
        do {
            target = try head.proxyTarget()
        } catch {
            return refuse(400, error.description)
        }
        // TRACE echoes the request back, credentials and cookies included: a proxy for browsers has no
        // use for it.
        if head.isMethod("TRACE") { return refuse(405, "TRACE is not allowed through this proxy") }

        // The body's length (RFC 9112 §6.3), for requests.
        let body: HTTPBodyLength
        if summary.transferEncodingPresent {
            // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means its framing is faulty.
            if head.version < .http1_1 { return refuse(400, "Transfer-Encoding in an HTTP/1.0 request") }
            // §6.3 item 3: both may be an attempt at request smuggling, and ought to be handled as an error.
            if summary.contentLength != .absent { return refuse(400, "both Content-Length and Transfer-Encoding") }
            // §6.3 item 4: chunked must be the final coding, else the length cannot be known; §6.1: and
            // applied once.
            guard summary.finalIsChunked, summary.chunkedCodings == 1 else {
                return refuse(400, "Transfer-Encoding without chunked last")
            }
            body = .chunked
        } else {
            switch summary.contentLength {
            case .invalid: return refuse(400, "invalid Content-Length")
            case .valid(let n) where n > 0: body = .length(n)
            case .valid, .absent: body = .none
            }
        }

        if let credentials = config.credentials {
            let fields = summary.proxyAuthorization
            guard fields.count == 1, credentials.accepts(UnsafeRawBufferPointer(rebasing: bytes[fields[0].value])) else {
                return refuse(
                    407, fields.isEmpty ? "proxy authentication required" : "proxy authentication failed",
                    fields: [("Proxy-Authenticate", HTTPProxyCredentials.challenge)])
            }
        }

        // RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only with "keep-alive".
        let keepAlive = !summary.close && (head.version >= .http1_1 || summary.keepAlive)

        switch target {
        case .authority(let destination):
            // RFC 9110 §9.3.6: a CONNECT request has no content; one that claims some is not guessed at.
            if body != .none { return refuse(400, "CONNECT with a body") }
            return .connect(destination)
        case .absolute(let destination, let host, let pathAndQuery):
            var maxForwards: Int?
            if head.isMethod("OPTIONS") {
                // RFC 9110 §7.6.2: a proxy decrements Max-Forwards on OPTIONS, and answers itself at zero.
                if summary.maxForwards.count > 1 { return refuse(400, "more than one Max-Forwards header") }
                if let field = summary.maxForwards.first {
                    guard let n = decimal(bytes, field.value) else { return refuse(400, "invalid Max-Forwards") }
                    if n == 0 {
                        let close = !keepAlive || body != .none
                        let text = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n" + (close ? "Connection: close\r\n" : "") + "\r\n"
                        return .reply(HTTPReply(status: 200, reason: "OPTIONS answered at Max-Forwards 0", bytes: Array(text.utf8), close: close))
                    }
                    maxForwards = n - 1
                }
            }
            let rewritten = forwardedHead(
                head, summary: summary, host: host, pathAndQuery: pathAndQuery, keepAlive: keepAlive,
                maxForwards: maxForwards, via: config.via)
            return .forward(
                Forward(
                    target: destination, method: head.methodString, head: rewritten, body: body,
                    clientKeepAlive: keepAlive, upstreamKeepAlive: keepAlive, isHEAD: isHEAD, clientVersion: head.version))
        }
    }

    /// The request in origin-form (RFC 9112 §3.2.1), with the client's version (1.0 or 1.1: a 1.0 client's
    /// request goes on as 1.0, so that the server answers in a form the client reads, the body untouched;
    /// RFC 9110 §2.5 would have a proxy send its own version, but then it would have to decode chunked
    /// responses for such clients), Host from the URI first (RFC 9112 §3.2.2: a proxy replaces the Host
    /// it received), the end-to-end fields as received, Connection saying what the client asked for, and
    /// Via (RFC 9110 §7.6.3).
    static func forwardedHead(
        _ head: HTTPRequestHead, summary: HTTPFieldSummary, host: Range<Int>, pathAndQuery: Range<Int>,
        keepAlive: Bool, maxForwards: Int?, via: String?
    ) -> [UInt8] {
        let bytes = head.bytes
        let http10 = head.version < .http1_1
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 64)
        out.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[head.method]))
        out.append(HTTPSyntax.sp)
        if pathAndQuery.isEmpty {
            // RFC 9112 §3.2.1: an empty path is sent as "/"; §3.2.4: for OPTIONS without a query, as "*".
            out.append(head.isMethod("OPTIONS") ? UInt8(ascii: "*") : UInt8(ascii: "/"))
        } else {
            if bytes[pathAndQuery.lowerBound] == UInt8(ascii: "?") { out.append(UInt8(ascii: "/")) }
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[pathAndQuery]))
        }
        out.append(contentsOf: (http10 ? " HTTP/1.0\r\nHost: " : " HTTP/1.1\r\nHost: ").utf8)
        out.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[host]))
        out.append(contentsOf: "\r\n".utf8)
        for field in head.fields {
            if summary.isHopByHop(field, in: bytes) || bytes.httpEquals(field.name, caseInsensitive: "host") { continue }
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[field.name]))
            out.append(contentsOf: ": ".utf8)
            if let maxForwards, bytes.httpEquals(field.name, caseInsensitive: "max-forwards") {
                out.append(contentsOf: String(maxForwards).utf8)
            } else {
                out.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[field.value]))
            }
            out.append(contentsOf: "\r\n".utf8)
        }
        if !keepAlive {
            out.append(contentsOf: "Connection: close\r\n".utf8)
        } else if http10 {
            out.append(contentsOf: "Connection: keep-alive\r\n".utf8)
        }
        if let via {
            out.append(contentsOf: "Via: \(head.version.major).\(head.version.minor) \(via)\r\n".utf8)
        }
        out.append(contentsOf: "\r\n".utf8)
        return out
    }

    /// 1*DIGIT, nil when not or when too large.
    static func decimal(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Int? {
        guard !range.isEmpty, range.count <= 18 else { return nil }
        var n = 0
        for k in range {
            guard HTTPSyntax.isDigit(bytes[k]) else { return nil }
            n = n * 10 + Int(bytes[k] - UInt8(ascii: "0"))
        }
        return n
    }
}

/// What the session does with one response head.
enum HTTPResponsePlan {
    /// The response cannot be relayed: 502 (RFC 9112 §6.3 item 5 for a bad length, and the like).
    case refuse(String)
    /// A 1xx to pass on (`head`), or to drop (nil) for an HTTP/1.0 client, which knows no 1xx (RFC 9110
    /// §15.2); the final response follows.
    case interim([UInt8]?)
    case final(head: [UInt8], body: HTTPBodyLength, clientKeepAlive: Bool, upstreamKeepAlive: Bool)

    /// - Parameters: what the request was: HEAD or not, the client's version and persistence, and whether
    ///   the forwarded request left the upstream connection persistent.
    static func make(
        _ raw: UnsafeRawBufferPointer, isHEAD: Bool, clientVersion: HTTPVersion, clientKeepAlive: Bool,
        upstreamKeepAlive: Bool, via: String?
    ) -> HTTPResponsePlan {
        let head: HTTPResponseHead
        do {
            head = try HTTPResponseHead(validating: raw)
        } catch {
            return .refuse("malformed response from upstream: \(error)")
        }
        let bytes = head.bytes
        let summary = HTTPFieldSummary(bytes, head.fields)
        if summary.connectionNamesFraming { return .refuse("upstream response's Connection names a framing header") }
        if head.isInterim {
            // The proxy removed Upgrade from the request: 101 answers nothing it asked (RFC 9110 §15.2.2).
            if head.status == 101 { return .refuse("upstream switched protocols unasked") }
            if clientVersion < .http1_1 { return .interim(nil) }
            return .interim(emit(head, summary: summary, connection: nil, via: via))
        }

        // The body's length (RFC 9112 §6.3), for responses.
        let body: HTTPBodyLength
        if isHEAD || head.status == 204 || head.status == 304 {
            body = .none  // item 1: whatever the length fields say, no content follows
        } else if summary.transferEncodingPresent {
            if head.version < .http1_1 { return .refuse("Transfer-Encoding in an HTTP/1.0 response") }  // §6.1
            if summary.contentLength != .absent {
                return .refuse("upstream response with both Content-Length and Transfer-Encoding")  // item 3
            }
            if summary.codings == 0 { return .refuse("empty Transfer-Encoding in upstream response") }
            body = summary.finalIsChunked ? .chunked : .untilClose  // item 4
        } else {
            switch summary.contentLength {
            case .invalid: return .refuse("invalid Content-Length in upstream response")  // item 5
            case .valid(let n): body = n > 0 ? .length(n) : .none
            case .absent: body = .untilClose  // item 8
            }
        }
        // RFC 9112 §9.3: the server keeps the connection if its version and Connection say so, and a
        // response that ends with the close ends it anyway.
        let serverPersists = !summary.close && (head.version >= .http1_1 || summary.keepAlive)
        let clientPersists = clientKeepAlive && body != .untilClose
        let connection: String? =
            !clientPersists ? "close" : clientVersion < .http1_1 ? "keep-alive" : nil
        return .final(
            head: emit(head, summary: summary, connection: connection, via: via), body: body,
            clientKeepAlive: clientPersists, upstreamKeepAlive: upstreamKeepAlive && serverPersists && body != .untilClose)
    }

    /// The response with our version (RFC 9110 §2.5: an intermediary sends its own), the status and reason
    /// as received, the end-to-end fields, Connection as this proxy will behave toward the client, and Via.
    static func emit(_ head: HTTPResponseHead, summary: HTTPFieldSummary, connection: String?, via: String?) -> [UInt8] {
        let bytes = head.bytes
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 64)
        out.append(contentsOf: "HTTP/1.1 \(head.status) ".utf8)
        out.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[head.reason]))
        out.append(contentsOf: "\r\n".utf8)
        for field in head.fields where !summary.isHopByHop(field, in: bytes) {
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[field.name]))
            out.append(contentsOf: ": ".utf8)
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[field.value]))
            out.append(contentsOf: "\r\n".utf8)
        }
        if let connection { out.append(contentsOf: "Connection: \(connection)\r\n".utf8) }
        if let via { out.append(contentsOf: "Via: \(head.version.major).\(head.version.minor) \(via)\r\n".utf8) }
        out.append(contentsOf: "\r\n".utf8)
        return out
    }
}
