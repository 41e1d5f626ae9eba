/// A complete response the proxy writes to its client itself: an error, or the answer to an OPTIONS whose
/// Max-Forwards reached zero.
public struct HTTPReply: Hashable, Sendable {
    /// 200, 400, 405, 407, 431, 502, 504 or 505.
    public var status: Int
    /// One line saying why, for logs; error replies carry it as their body too.
    public var reason: String
    /// The whole response: status line, fields, body.
    public var bytes: [UInt8]
    /// Whether the client connection (and any upstream connection) is to be closed once `bytes` are
    /// written. Every error reply closes: the request's body, if any, was not read, so the next byte on
    /// the connection is not known to start a request.
    public var close: Bool

    public init(status: Int, reason: String, bytes: [UInt8], close: Bool) {
        self.status = status
        self.reason = reason
        self.bytes = bytes
        self.close = close
    }

    /// An error response: HTTP/1.1, `Connection: close`, `Content-Length`, and `reason` on one line as a
    /// plain-text body, which a response to HEAD leaves out (RFC 9110 §9.3.2) while keeping its length.
    static func error(_ status: Int, _ reason: String, noBody: Bool = false, fields: [(String, String)] = []) -> HTTPReply {
        // One line, whatever a client or a name put in it.
        let line = String(decoding: reason.utf8.map { $0 < 0x20 || $0 == 0x7F ? UInt8(ascii: " ") : $0 }, as: UTF8.self)
        let body = Array((line + "\n").utf8)
        var head = "HTTP/1.1 \(status) \(phrase(status))\r\n"
        for (name, value) in fields { head += "\(name): \(value)\r\n" }
        head += "Content-Type: text/plain; charset=utf-8\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        return HTTPReply(status: status, reason: line, bytes: Array(head.utf8) + (noBody ? [] : body), close: true)
    }

    /// The reason phrases of RFC 9110 §15 for the statuses the proxy writes.
    static func phrase(_ status: Int) -> String {
        switch status {
        case 200: "OK"
        case 400: "Bad Request"
        case 405: "Method Not Allowed"
        case 407: "Proxy Authentication Required"
        case 431: "Request Header Fields Too Large"
        case 502: "Bad Gateway"
        case 504: "Gateway Timeout"
        case 505: "HTTP Version Not Supported"
        default: "Error"
        }
    }

    /// What a CONNECT gets once its tunnel is open (RFC 9110 §9.3.6: any 2xx; this is the phrase curl and
    /// browsers are used to). No fields: a 2xx to CONNECT has no body and needs no framing.
    public static let connectionEstablished = Array("HTTP/1.1 200 Connection established\r\n\r\n".utf8)
}

/// Why an upstream connection failed, as the driver saw it.
public enum HTTPUpstreamFailure: Hashable, Sendable, CustomStringConvertible {
    /// The destination answered the SYN with a reset.
    case refused
    /// An ICMP unreachable (host, network, port, administratively prohibited) came back.
    case unreachable
    /// No WireGuard peer carries the destination (`TunnelCore.connect` returned nil).
    case noRoute
    /// The connection did not complete in time, or an established one stopped answering.
    case timedOut
    /// The host name resolved to no address we can reach.
    case nameNotResolved
    /// An established connection was reset or failed.
    case reset

    /// 504 (Gateway Timeout) for a time-out, 502 (Bad Gateway) for the rest (RFC 9110 §15.6.3, §15.6.5).
    public var status: Int { self == .timedOut ? 504 : 502 }

    public var description: String {
        switch self {
        case .refused: "connection refused"
        case .unreachable: "destination unreachable"
        case .noRoute: "no route through the tunnel"
        case .timedOut: "timed out"
        case .nameNotResolved: "name does not resolve"
        case .reset: "connection reset"
        }
    }
}
