/// The transport protocol of one port forward.
public enum ForwardProtocol: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    case tcp = "TCP"
    case udp = "UDP"

    public var description: String { rawValue }
}

/// One end of a port forward as written: an IP address, or a host name left for the CLI to resolve (the core
/// does no I/O, DNS included).
public enum ForwardHost: Hashable, Sendable, CustomStringConvertible {
    case address(IPAddress)
    case name(String)

    /// As written in the notation: IPv6 in brackets, so the colons cannot be mistaken for separators.
    public var description: String {
        switch self {
        case .address(.v4(let a)): a.description
        case .address(.v6(let a)): "[\(a)]"
        case .name(let name): name
        }
    }
}

/// One port forward in onetun's notation, `[src_host:]<src_port>:<dst_host>:<dst_port>[:TCP,UDP]`.
///
/// A local forward listens on `source:sourcePort` on this machine and forwards through the tunnel to
/// `destination:destinationPort`, a peer inside the WireGuard network; `src_host` defaults to 127.0.0.1.
///
/// A remote forward (onetun's `--remote`) reads the same notation the other way round: `sourcePort` is
/// listened on inside the tunnel, on onetun's own virtual address (`--source-peer-ip`), and each connection
/// is forwarded to `destination:destinationPort`, which must be reachable from this machine. `src_host`
/// may be omitted and otherwise must be that virtual address.
///
/// One notation yields one spec per listed protocol: `8080:10.0.0.2:80:TCP,UDP` is two forwards.
public struct PortForwardSpec: Hashable, Sendable, CustomStringConvertible {
    public var source: ForwardHost
    public var sourcePort: UInt16
    public var destination: ForwardHost
    public var destinationPort: UInt16
    public var proto: ForwardProtocol
    public var remote: Bool

    /// Where a local forward listens when the notation names no `src_host`: onetun's default.
    public static let defaultSource = ForwardHost.address(.v4(.loopback))

    public init(
        source: ForwardHost = PortForwardSpec.defaultSource, sourcePort: UInt16,
        destination: ForwardHost, destinationPort: UInt16,
        proto: ForwardProtocol = .tcp, remote: Bool = false
    ) {
        self.source = source
        self.sourcePort = sourcePort
        self.destination = destination
        self.destinationPort = destinationPort
        self.proto = proto
        self.remote = remote
    }

    /// Parses a local forward (a positional argument or `ONETUN_PORT_FORWARD_n`). Leading and trailing
    /// whitespace is ignored (environment values often end in a newline); whitespace inside is an error.
    public static func parse(_ notation: String) throws(PortForwardSpecError) -> [PortForwardSpec] {
        let parts = try Parts(notation)
        return parts.protocols.map {
            PortForwardSpec(
                source: parts.source ?? defaultSource, sourcePort: parts.sourcePort,
                destination: parts.destination, destinationPort: parts.destinationPort, proto: $0)
        }
    }

    /// Parses a remote forward (`--remote` or `ONETUN_REMOTE_PORT_FORWARD_n`). The source is always
    /// `sourcePeerIP`; a `src_host` that names anything else is refused, as onetun does.
    public static func parseRemote(
        _ notation: String, sourcePeerIP: IPAddress
    ) throws(PortForwardSpecError) -> [PortForwardSpec] {
        let parts = try Parts(notation)
        if let given = parts.source, given != .address(sourcePeerIP) {
            throw .remoteSourceMismatch(given, sourcePeerIP: sourcePeerIP, notation: parts.notation)
        }
        return parts.protocols.map {
            PortForwardSpec(
                source: .address(sourcePeerIP), sourcePort: parts.sourcePort,
                destination: parts.destination, destinationPort: parts.destinationPort, proto: $0,
                remote: true)
        }
    }

    /// The canonical notation, every part spelled out: `127.0.0.1:8080:[fd00::2]:80:TCP`. Parsing it (with
    /// `parseRemote` and the same peer IP for a remote forward) gives back this spec.
    public var notation: String {
        "\(source):\(sourcePort):\(destination):\(destinationPort):\(proto)"
    }

    /// The notation, marked when remote; for logs.
    public var description: String { remote ? "\(notation) (remote)" : notation }
}

/// Why a port-forward notation was refused. Each description is one line that quotes the whole notation
/// and, where there is one, the part at fault.
public enum PortForwardSpecError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Not three to five colon-separated parts, a stray or unclosed bracket, or an empty string.
    case malformed(notation: String)
    /// Looks like an IPv6 address written without brackets.
    case unbracketedIPv6(notation: String)
    /// An empty host part, or empty brackets.
    case emptyHost(notation: String)
    /// Neither an IP address nor a plausible host name (bracketed text that is not IPv6, digits and dots
    /// that are not a dotted quad, a character no host name has).
    case invalidHost(String, notation: String)
    /// Not 1–65535 in decimal.
    case invalidPort(String, notation: String)
    case unknownProtocol(String, notation: String)
    case duplicateProtocol(ForwardProtocol, notation: String)
    /// A remote forward whose `src_host` is not onetun's virtual address.
    case remoteSourceMismatch(ForwardHost, sourcePeerIP: IPAddress, notation: String)

    public var description: String {
        // debugDescription quotes and escapes, so a newline or quote in the input cannot break the line.
        switch self {
        case .malformed(let n):
            "invalid port forward \(n.debugDescription): expected [src_host:]src_port:dst_host:dst_port[:TCP,UDP]"
        case .unbracketedIPv6(let n):
            "invalid port forward \(n.debugDescription): IPv6 addresses must be in brackets, "
                + "as in [::1]:8080:[fd00::2]:80"
        case .emptyHost(let n):
            "empty host in port forward \(n.debugDescription)"
        case .invalidHost(let host, let n):
            "invalid host \(host.debugDescription) in port forward \(n.debugDescription)"
        case .invalidPort(let port, let n):
            "invalid port \(port.debugDescription) in port forward \(n.debugDescription) (expected 1 to 65535)"
        case .unknownProtocol(let proto, let n):
            "unknown protocol \(proto.debugDescription) in port forward \(n.debugDescription) "
                + "(expected TCP, UDP or TCP,UDP)"
        case .duplicateProtocol(let proto, let n):
            "protocol \(proto) listed twice in port forward \(n.debugDescription)"
        case .remoteSourceMismatch(let host, let peer, let n):
            "remote port forward \(n.debugDescription): src_host \(host) must be the source peer IP \(peer), "
                + "or be omitted"
        }
    }
}

/// The notation split and checked; shared by local and remote parsing, which differ only in the source.
private struct Parts {
    var notation: String
    var source: ForwardHost?
    var sourcePort: UInt16
    var destination: ForwardHost
    var destinationPort: UInt16
    var protocols: [ForwardProtocol]

    /// A colon-separated part. `bracketed` parts had their brackets removed; `raw` keeps them for messages.
    private struct Token {
        var text: String
        var bracketed: Bool
        var raw: String { bracketed ? "[\(text)]" : text }
    }

    init(_ original: String) throws(PortForwardSpecError) {
        let notation = original.trimmingASCIIWhitespace()
        self.notation = original
        guard let tokens = Parts.tokenize(Array(notation.utf8)) else { throw .malformed(notation: original) }

        // An IPv6 address without brackets splits into too many parts, or leaves an empty one where "::" was.
        if !(3...5).contains(tokens.count) || tokens.contains(where: { !$0.bracketed && $0.text.isEmpty }),
            Parts.containsUnbracketedIPv6(tokens)
        {
            throw .unbracketedIPv6(notation: original)
        }

        let srcHost: Token?, srcPort: Token, dstHost: Token, dstPort: Token, protos: Token?
        switch tokens.count {
        case 3:
            (srcHost, srcPort, dstHost, dstPort, protos) = (nil, tokens[0], tokens[1], tokens[2], nil)
        case 4 where !tokens[0].bracketed && tokens[0].text.isASCIIDigits:
            // A host is never all digits (onetun's rule too), so a leading number is the source port.
            (srcHost, srcPort, dstHost, dstPort, protos) = (nil, tokens[0], tokens[1], tokens[2], tokens[3])
        case 4:
            (srcHost, srcPort, dstHost, dstPort, protos) = (tokens[0], tokens[1], tokens[2], tokens[3], nil)
        case 5:
            (srcHost, srcPort, dstHost, dstPort, protos) = (tokens[0], tokens[1], tokens[2], tokens[3], tokens[4])
        default:
            throw .malformed(notation: original)
        }

        source = try srcHost.map { token throws(PortForwardSpecError) in try Parts.host(token, in: original) }
        sourcePort = try Parts.port(srcPort, in: original)
        destination = try Parts.host(dstHost, in: original)
        destinationPort = try Parts.port(dstPort, in: original)
        protocols = try protos.map { token throws(PortForwardSpecError) in
            try Parts.protocols(token, in: original)
        } ?? [.tcp]
    }

    /// Splits on colons outside brackets. A bracket must open a part and close just before a colon or the
    /// end; anything else (unclosed, nested, stray) makes the notation malformed, reported as nil.
    private static func tokenize(_ bytes: [UInt8]) -> [Token]? {
        let colon = UInt8(ascii: ":"), open = UInt8(ascii: "["), close = UInt8(ascii: "]")
        var tokens: [Token] = []
        var i = 0
        while true {
            if i < bytes.count && bytes[i] == open {
                guard let end = bytes[(i + 1)...].firstIndex(of: close) else { return nil }
                let inside = bytes[(i + 1)..<end]
                guard !inside.contains(open), end + 1 == bytes.count || bytes[end + 1] == colon else { return nil }
                tokens.append(Token(text: String(decoding: inside, as: UTF8.self), bracketed: true))
                i = end + 1
            } else {
                let end = bytes[i...].firstIndex(of: colon) ?? bytes.count
                let part = bytes[i..<end]
                guard !part.contains(open), !part.contains(close) else { return nil }
                tokens.append(Token(text: String(decoding: part, as: UTF8.self), bracketed: false))
                i = end
            }
            if i == bytes.count { return tokens }
            i += 1  // past the colon; a colon at the very end leaves one empty part
        }
    }

    /// Whether some run of adjacent unbracketed parts, short of the whole notation, reads as an IPv6
    /// address. Bounded: an address is at most nine parts ("1:2:3:4:5:6:7::"), and long inputs are not
    /// searched at all, so this stays cheap on hostile input.
    private static func containsUnbracketedIPv6(_ tokens: [Token]) -> Bool {
        guard tokens.count <= 32 else { return false }
        for start in tokens.indices {
            let limit = min(start + 10, tokens.count + 1)
            guard start + 3 < limit else { break }
            for end in (start + 3)..<limit where end - start < tokens.count {
                let run = tokens[start..<end]
                if run.contains(where: \.bracketed) { break }
                if IPv6Address(run.map(\.text).joined(separator: ":")) != nil { return true }
            }
        }
        return false
    }

    private static func host(_ token: Token, in notation: String) throws(PortForwardSpecError) -> ForwardHost {
        if token.text.isEmpty { throw .emptyHost(notation: notation) }
        if token.bracketed {
            guard let a = IPv6Address(token.text) else { throw .invalidHost(token.raw, notation: notation) }
            return .address(.v6(a))
        }
        if let a = IPv4Address(token.text) { return .address(.v4(a)) }
        guard token.text.isPlausibleHostName else { throw .invalidHost(token.raw, notation: notation) }
        return .name(token.text)
    }

    private static func port(_ token: Token, in notation: String) throws(PortForwardSpecError) -> UInt16 {
        // Leading zeros are accepted, as Rust's u16 parser (onetun's) accepts them.
        guard !token.bracketed, token.text.isASCIIDigits else { throw .invalidPort(token.raw, notation: notation) }
        var value = 0
        for byte in token.text.utf8 {
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
            if value > Int(UInt16.max) { throw .invalidPort(token.raw, notation: notation) }
        }
        guard value != 0 else { throw .invalidPort(token.raw, notation: notation) }
        return UInt16(value)
    }

    /// A comma list, case-insensitive, in the order given (onetun opens them in that order).
    private static func protocols(
        _ token: Token, in notation: String
    ) throws(PortForwardSpecError) -> [ForwardProtocol] {
        guard !token.bracketed else { throw .unknownProtocol(token.raw, notation: notation) }
        var list: [ForwardProtocol] = []
        for name in token.text.split(separator: ",", omittingEmptySubsequences: false) {
            // ASCII-only upper-casing: Unicode case mapping could turn some other letter into one of ours.
            let upper = String(decoding: name.utf8.map { $0 >= 0x61 && $0 <= 0x7A ? $0 - 0x20 : $0 }, as: UTF8.self)
            guard let proto = ForwardProtocol(rawValue: upper) else {
                throw .unknownProtocol(String(name), notation: notation)
            }
            guard !list.contains(proto) else { throw .duplicateProtocol(proto, notation: notation) }
            list.append(proto)
        }
        return list
    }
}

extension String {
    fileprivate var isASCIIDigits: Bool {
        !isEmpty && utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
    }

    /// RFC 1123 §2.1 host names, plus "_" (seen in real internal names) and one trailing dot. Digits and
    /// dots alone are refused: that is a mistyped IPv4 address, which a resolver might read in some legacy
    /// form ("10.1" as 10.0.0.1) instead of failing.
    var isPlausibleHostName: Bool {
        let bytes = Array(utf8)
        guard !bytes.isEmpty, bytes.count <= 254 else { return false }
        let name = bytes.last == UInt8(ascii: ".") ? bytes.dropLast() : bytes[...]
        guard !name.isEmpty, name.count <= 253 else { return false }
        if name.allSatisfy({ $0 == UInt8(ascii: ".") || ($0 >= 0x30 && $0 <= 0x39) }) { return false }
        for label in name.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false) {
            guard !label.isEmpty, label.count <= 63,
                label.first != UInt8(ascii: "-"), label.last != UInt8(ascii: "-"),
                label.allSatisfy({ byte in
                    (byte >= 0x30 && byte <= 0x39) || (byte | 0x20 >= 0x61 && byte | 0x20 <= 0x7A)
                        || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
                })
            else { return false }
        }
        return true
    }

    fileprivate func trimmingASCIIWhitespace() -> String {
        let isSpace: (UInt8) -> Bool = { $0 == 0x20 || ($0 >= 0x09 && $0 <= 0x0D) }
        let bytes = utf8
        guard let first = bytes.firstIndex(where: { !isSpace($0) }),
            let last = bytes.lastIndex(where: { !isSpace($0) })
        else { return "" }
        return String(decoding: bytes[first...last], as: UTF8.self)
    }
}
