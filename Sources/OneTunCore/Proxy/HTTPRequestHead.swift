/// A request head, checked once and then read through accessors: the request line (RFC 9112 §3) and the
/// field lines up to the empty line (RFC 9112 §5). A view over the caller's bytes, valid only inside the
/// `withUnsafe…` scope that owns them; never store one.
///
/// Lines end with CRLF or a lone LF (RFC 9112 §2.2 lets a recipient accept the latter); a CR elsewhere,
/// obs-fold, whitespace before a colon and control characters in values are refused. The request line is
/// strict: single spaces, a token method, a request-target of visible ASCII, `HTTP/1.x`. Empty lines before
/// the request line are not skipped here (the session skips them).
public struct HTTPRequestHead {
    /// The head, from the request line to the end of the empty line after the fields.
    public let bytes: UnsafeRawBufferPointer
    /// The method token (case-sensitive, RFC 9110 §9.1).
    public let method: Range<Int>
    /// The request-target as received.
    public let target: Range<Int>
    public let version: HTTPVersion
    public let fields: [HTTPField]

    /// Parses the head at the start of `buffer`; bytes after the empty line that ends it are ignored (see
    /// `bytes.count` for where it ended).
    public init(validating buffer: UnsafeRawBufferPointer) throws(HTTPHeadError) {
        guard let (line, next) = try HTTPSyntax.line(in: buffer, from: 0) else { throw .incomplete }
        // request-line = method SP request-target SP HTTP-version (RFC 9112 §3)
        var i = line.lowerBound
        while i < line.upperBound && HTTPSyntax.isTokenChar(buffer[i]) { i += 1 }
        guard i > line.lowerBound, i < line.upperBound, buffer[i] == HTTPSyntax.sp else {
            throw .malformedStartLine(offset: i)
        }
        method = line.lowerBound..<i
        let targetStart = i + 1
        i = targetStart
        // URIs are ASCII (RFC 3986 §2); anything else in a request-target is an error, not a guess.
        while i < line.upperBound && buffer[i] > 0x20 && buffer[i] < 0x7F { i += 1 }
        guard i > targetStart, i < line.upperBound, buffer[i] == HTTPSyntax.sp else {
            throw .malformedStartLine(offset: i)
        }
        target = targetStart..<i
        version = try HTTPSyntax.version(in: buffer, (i + 1)..<line.upperBound)
        let (fields, end) = try HTTPSyntax.fields(in: buffer, from: next)
        self.fields = fields
        bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<end])
    }

    public var methodString: String { bytes.httpString(method) }
    public var targetString: String { bytes.httpString(target) }

    /// Whether the method is `name` exactly (methods are case-sensitive, RFC 9110 §9.1).
    public func isMethod(_ name: StaticString) -> Bool { bytes.httpEquals(method, exactly: name) }

    /// The fields named `lowercaseName` (field names are case-insensitive, RFC 9110 §5.1), in order.
    public func fields(named lowercaseName: StaticString) -> [HTTPField] {
        fields.filter { bytes.httpEquals($0.name, caseInsensitive: lowercaseName) }
    }

    /// The request-target read as a proxy reads it (RFC 9112 §3.2): authority-form for CONNECT, an http
    /// URI in absolute-form for every other method.
    public func proxyTarget() throws(HTTPTargetError) -> HTTPProxyRequestTarget {
        try HTTPProxyRequestTarget(bytes, target: target, isConnect: isMethod("CONNECT"))
    }
}

/// Where a request to a proxy goes, read from its request-target.
public enum HTTPProxyRequestTarget: Hashable, Sendable {
    /// CONNECT's authority-form, `host:port` (RFC 9112 §3.2.3).
    case authority(ProxyTarget)
    /// An `http` URI in absolute-form (RFC 9112 §3.2.2). `host` is the authority as written, for the Host
    /// field; `pathAndQuery` the rest of the URI, empty or starting with "/" or "?", both as offsets in the
    /// head.
    case absolute(ProxyTarget, host: Range<Int>, pathAndQuery: Range<Int>)

    /// The default port of the http scheme (RFC 9110 §4.2.1).
    public static let httpPort: UInt16 = 80

    init(_ bytes: UnsafeRawBufferPointer, target: Range<Int>, isConnect: Bool) throws(HTTPTargetError) {
        if isConnect {
            // authority-form = uri-host ":" port; CONNECT's port is required (RFC 9110 §9.3.6).
            let (host, port) = try Self.authority(bytes, target, requirePort: true)
            self = .authority(Self.proxyTarget(host, port))
            return
        }
        if bytes[target.lowerBound] == UInt8(ascii: "/") { throw .originForm }
        if target.count == 1 && bytes[target.lowerBound] == UInt8(ascii: "*") { throw .asteriskForm }
        // absolute-form = absolute-URI; scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) (RFC 3986 §3.1)
        var i = target.lowerBound
        while i < target.upperBound, bytes[i] != UInt8(ascii: ":") {
            let b = bytes[i] | 0x20
            let alpha = b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")
            guard alpha || (i > target.lowerBound && (HTTPSyntax.isDigit(bytes[i]) || bytes[i] == UInt8(ascii: "+")
                || bytes[i] == UInt8(ascii: "-") || bytes[i] == UInt8(ascii: ".")))
            else { throw .notAURI }
            i += 1
        }
        let scheme = target.lowerBound..<i
        guard i > target.lowerBound, i + 3 <= target.upperBound, bytes.httpEquals(i..<i + 3, exactly: "://") else {
            throw .notAURI
        }
        guard bytes.httpEquals(scheme, caseInsensitive: "http") else {
            throw .unsupportedScheme(bytes.httpString(scheme).lowercasedASCII)
        }
        // hier-part = "//" authority path-abempty; the authority ends at "/", "?", "#" or the end.
        let authorityStart = i + 3
        var end = authorityStart
        while end < target.upperBound, ![UInt8(ascii: "/"), UInt8(ascii: "?"), UInt8(ascii: "#")].contains(bytes[end]) {
            end += 1
        }
        let authority = authorityStart..<end
        let (host, port) = try Self.authority(bytes, authority, requirePort: false)
        // A fragment is never part of a request-target (RFC 9112 §3.2).
        for k in end..<target.upperBound where bytes[k] == UInt8(ascii: "#") { throw .fragment }
        self = .absolute(Self.proxyTarget(host, port), host: authority, pathAndQuery: end..<target.upperBound)
    }

    private enum Host {
        case address(IPAddress)
        case name(String)
    }

    private static func proxyTarget(_ host: Host, _ port: UInt16) -> ProxyTarget {
        switch host {
        case .address(let a): .address(a, port: port)
        case .name(let n): .name(n, port: port)
        }
    }

    /// authority = [ userinfo "@" ] host [ ":" port ] (RFC 3986 §3.2), without the userinfo, which RFC 9110
    /// §4.2.4 tells a recipient to treat as an error in http URIs. An empty port is the default (RFC 3986
    /// §3.2.3); port 0 is refused, nothing can be reached there.
    private static func authority(
        _ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, requirePort: Bool
    ) throws(HTTPTargetError) -> (Host, UInt16) {
        if range.contains(where: { bytes[$0] == UInt8(ascii: "@") }) { throw .userinfo }
        guard !range.isEmpty else { throw .emptyHost }
        let host: Host
        var portStart: Int?
        if bytes[range.lowerBound] == UInt8(ascii: "[") {
            // IP-literal = "[" ( IPv6address / IPvFuture ) "]"; no IPvFuture or zone (RFC 6874) here.
            guard let close = range.first(where: { bytes[$0] == UInt8(ascii: "]") }) else {
                throw .invalidHost(bytes.httpString(range))
            }
            let literal = bytes.httpString(range.lowerBound + 1..<close)
            guard let address = IPv6Address(literal) else { throw .invalidHost("[\(literal)]") }
            host = .address(.v6(address))
            if close + 1 < range.upperBound {
                guard bytes[close + 1] == UInt8(ascii: ":") else { throw .invalidHost(bytes.httpString(range)) }
                portStart = close + 2
            }
        } else {
            let colon = range.first(where: { bytes[$0] == UInt8(ascii: ":") })
            let hostRange = range.lowerBound..<(colon ?? range.upperBound)
            guard !hostRange.isEmpty else { throw .emptyHost }
            let text = bytes.httpString(hostRange)
            if let address = IPv4Address(text) {
                host = .address(.v4(address))
            } else if text.isPlausibleHostName {
                // DNS names are case-insensitive (RFC 4343): one spelling per name, so reuse compares names.
                host = .name(text.lowercasedASCII)
            } else {
                throw .invalidHost(text)
            }
            portStart = colon.map { $0 + 1 }
        }
        guard let start = portStart, start < range.upperBound else {
            if requirePort { throw .missingPort }
            return (host, httpPort)
        }
        var port = 0
        for k in start..<range.upperBound {
            let b = bytes[k]
            guard HTTPSyntax.isDigit(b) else { throw .invalidPort(bytes.httpString(start..<range.upperBound)) }
            port = port * 10 + Int(b - UInt8(ascii: "0"))
            guard port <= Int(UInt16.max) else { throw .invalidPort(bytes.httpString(start..<range.upperBound)) }
        }
        guard port != 0 else { throw .invalidPort(bytes.httpString(start..<range.upperBound)) }
        return (host, UInt16(port))
    }
}

/// Why a request-target names nowhere this proxy goes; each is a 400 (Bad Request).
public enum HTTPTargetError: Error, Hashable, Sendable, CustomStringConvertible {
    /// origin-form ("/path"): a request meant for an origin server, not a proxy.
    case originForm
    /// asterisk-form ("*"), which only an origin server's OPTIONS takes (RFC 9112 §3.2.4).
    case asteriskForm
    /// Not an absolute URI (nor, for CONNECT, an authority).
    case notAURI
    /// A scheme other than http; "https" is reached through CONNECT.
    case unsupportedScheme(String)
    /// userinfo ("user@host") in the authority (RFC 9110 §4.2.4).
    case userinfo
    /// No host (RFC 9110 §4.2.1: a recipient MUST reject an http URI with an empty host).
    case emptyHost
    /// Neither an IP address (IPv6 in brackets) nor a plausible DNS name.
    case invalidHost(String)
    /// A port that is not 1–65535 in decimal.
    case invalidPort(String)
    /// CONNECT's authority without a port.
    case missingPort
    /// A "#fragment" in the request-target.
    case fragment

    public var description: String {
        switch self {
        case .originForm: "a proxy needs an absolute URI (http://host/path), not a path"
        case .asteriskForm: "a proxy needs an absolute URI, not *"
        case .notAURI: "the request target is not an absolute URI"
        case .unsupportedScheme("https"): "https URIs go through CONNECT, not a plain request"
        case .unsupportedScheme(let scheme): "unsupported URI scheme \(scheme.debugDescription) (only http)"
        case .userinfo: "user information in the URI authority"
        case .emptyHost: "empty host in the request target"
        case .invalidHost(let host): "invalid host \(host.debugDescription)"
        case .invalidPort(let port): "invalid port \(port.debugDescription)"
        case .missingPort: "CONNECT needs host:port"
        case .fragment: "a fragment (#) in the request target"
        }
    }
}

extension String {
    /// ASCII letters lower-cased, everything else untouched (Unicode case mapping could change length or
    /// turn a foreign letter into an ASCII one).
    fileprivate var lowercasedASCII: String {
        String(decoding: utf8.map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 }, as: UTF8.self)
    }
}
