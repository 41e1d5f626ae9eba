/// Why a SOCKS5 address field, reply or UDP request header did not parse.
public enum Socks5WireError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The buffer ends before the field or header does.
    case truncated
    /// A version byte other than SOCKS5's (a reply's VER).
    case badVersion(UInt8)
    /// An ATYP other than 1 (IPv4), 3 (domain name) and 4 (IPv6) (RFC 1928 §4).
    case addressTypeNotSupported(UInt8)
    /// A domain name that is empty, or is neither an IP address literal nor made of letters, digits, "-",
    /// "_" and "." only.
    case invalidName

    public var description: String {
        switch self {
        case .truncated: "truncated"
        case .badVersion(let v): "version \(v) is not SOCKS5"
        case .addressTypeNotSupported(let t): "address type \(t) is not supported"
        case .invalidName: "invalid host name"
        }
    }
}

/// The address fields SOCKS5 messages share (RFC 1928 §4, §5, §6, §7): ATYP, then the address, then a
/// network-order port.
///
///     | ATYP | ADDR: 4 bytes (ATYP 1), 16 bytes (ATYP 4), or a length byte and 1–255 bytes (ATYP 3) | PORT (2) |
///
/// A domain name arrives as bytes without a terminator. We take letters, digits, "-", "_" and "." (what
/// curl sends; it puts an IDN in punycode when built with IDN support) and refuse anything else, NUL,
/// spaces and control characters included, which keeps them out of logs and DNS queries. A name that is
/// an IP address literal (a dotted quad, or RFC 4291 text without brackets) becomes `.address`, so the
/// caller does not resolve it.
enum Socks5Address {
    static let ipv4: UInt8 = 0x01
    static let domainName: UInt8 = 0x03
    static let ipv6: UInt8 = 0x04

    /// The most bytes a field takes: ATYP, a length byte, 255 name bytes, the port.
    static let maxLength = 1 + 1 + 255 + 2

    /// How long the field starting at `prefix[0]` (its ATYP) is, as far as `prefix` tells: when the result
    /// is at most `prefix.count` it is the field's exact length; otherwise it is a lower bound, the bytes to
    /// have before asking again. Throws for an unknown ATYP.
    static func length(known prefix: UnsafeRawBufferPointer) throws(Socks5WireError) -> Int {
        guard prefix.count >= 1 else { return 1 }
        switch prefix[0] {
        case ipv4: return 1 + 4 + 2
        case ipv6: return 1 + 16 + 2
        case domainName: return prefix.count >= 2 ? 1 + 1 + Int(prefix[1]) + 2 : 2
        case let other: throw .addressTypeNotSupported(other)
        }
    }

    /// Reads the field at the start of `bytes` (which may go on past it): the target and the field's length.
    static func parse(_ bytes: UnsafeRawBufferPointer) throws(Socks5WireError) -> (ProxyTarget, length: Int) {
        let length = try Socks5Address.length(known: bytes)
        guard length <= bytes.count else { throw .truncated }
        let port = bytes.netU16(length - 2)
        switch bytes[0] {
        case ipv4:
            return (.address(.v4(IPv4Address(loading: bytes, at: 1)), port: port), length)
        case ipv6:
            let address = IPv6Address(high: bytes.netU64(1), low: bytes.netU64(9))
            return (.address(.v6(address), port: port), length)
        default:
            return (try target(name: bytes.netSlice(2, length - 2), port: port), length)
        }
    }

    /// A domain name field's bytes as a target (see the type's comment for what is accepted).
    static func target(name: UnsafeRawBufferPointer, port: UInt16) throws(Socks5WireError) -> ProxyTarget {
        guard !name.isEmpty else { throw .invalidName }
        var sawColon = false
        for byte in name {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."):
                continue
            case UInt8(ascii: ":"):
                sawColon = true
            default:
                throw .invalidName
            }
        }
        let text = String(decoding: name, as: UTF8.self)
        if let address = IPAddress(text) { return .address(address, port: port) }
        // A colon only belongs in an IPv6 literal; as a name it would read as a port.
        guard !sawColon else { throw .invalidName }
        return .name(text, port: port)
    }

    /// The bytes `emit` writes for `target`.
    static func encodedLength(of target: ProxyTarget) -> Int {
        switch target {
        case .address(.v4, _): 1 + 4 + 2
        case .address(.v6, _): 1 + 16 + 2
        case .name(let name, _): 1 + 1 + name.utf8.count + 2
        }
    }

    /// Writes the field for `target` at the start of `bytes` and returns its length. A name must be 1–255
    /// bytes (a caller's bug otherwise); it is written as given, without the checks `parse` makes.
    @discardableResult
    static func emit(_ target: ProxyTarget, into bytes: UnsafeMutableRawBufferPointer) -> Int {
        let length = encodedLength(of: target)
        precondition(bytes.count >= length, "no room for the SOCKS5 address")
        switch target {
        case .address(.v4(let a), let port):
            bytes.netStore(ipv4, at: 0)
            a.store(into: bytes, at: 1)
            bytes.netStore(port, at: 5)
        case .address(.v6(let a), let port):
            bytes.netStore(ipv6, at: 0)
            bytes.netStore(a.high, at: 1)
            bytes.netStore(a.low, at: 9)
            bytes.netStore(port, at: 17)
        case .name(let name, let port):
            let count = name.utf8.count
            precondition(count >= 1 && count <= 255, "a SOCKS5 domain name is 1–255 bytes")
            bytes.netStore(domainName, at: 0)
            bytes.netStore(UInt8(count), at: 1)
            var offset = 2
            for byte in name.utf8 {
                bytes.netStore(byte, at: offset)
                offset += 1
            }
            bytes.netStore(port, at: offset)
        }
        return length
    }
}
