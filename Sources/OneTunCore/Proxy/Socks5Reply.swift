/// The REP field of a SOCKS5 reply (RFC 1928 §6).
public struct Socks5ReplyCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8

    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let succeeded = Socks5ReplyCode(rawValue: 0x00)
    public static let generalFailure = Socks5ReplyCode(rawValue: 0x01)
    /// "connection not allowed by ruleset"
    public static let notAllowed = Socks5ReplyCode(rawValue: 0x02)
    public static let networkUnreachable = Socks5ReplyCode(rawValue: 0x03)
    public static let hostUnreachable = Socks5ReplyCode(rawValue: 0x04)
    public static let connectionRefused = Socks5ReplyCode(rawValue: 0x05)
    public static let ttlExpired = Socks5ReplyCode(rawValue: 0x06)
    public static let commandNotSupported = Socks5ReplyCode(rawValue: 0x07)
    public static let addressTypeNotSupported = Socks5ReplyCode(rawValue: 0x08)

    /// RFC 1928's wording; "unassigned (N)" for other values.
    public var description: String {
        switch rawValue {
        case 0x00: "succeeded"
        case 0x01: "general SOCKS server failure"
        case 0x02: "connection not allowed by ruleset"
        case 0x03: "network unreachable"
        case 0x04: "host unreachable"
        case 0x05: "connection refused"
        case 0x06: "TTL expired"
        case 0x07: "command not supported"
        case 0x08: "address type not supported"
        default: "unassigned (\(rawValue))"
        }
    }
}

/// A SOCKS5 reply (RFC 1928 §6) as values:
///
///     | VER 5 | REP | RSV 0 | ATYP | BND.ADDR | BND.PORT |
///
/// The server sends one after a request: on success BND is the address and port the proxy connected from
/// (CONNECT) or the relay's UDP socket the client must send to (UDP ASSOCIATE); on failure the connection
/// closes after it and BND is conventionally 0.0.0.0:0, the default.
public struct Socks5Reply: Hashable, Sendable {
    public var code: Socks5ReplyCode
    /// A server only ever binds addresses; a name is representable because the wire format allows one.
    public var bound: ProxyTarget

    public init(_ code: Socks5ReplyCode, bound: ProxyTarget = .address(.v4(.unspecified), port: 0)) {
        self.code = code
        self.bound = bound
    }

    /// The longest reply with an address: 4 + 16 + 2 bytes (IPv6).
    public static let maxAddressReplyLength = 3 + 1 + 16 + 2

    /// The bytes `emit` writes: 10 with an IPv4 address, 22 with an IPv6 one.
    public var length: Int { 3 + Socks5Address.encodedLength(of: bound) }

    /// Writes the reply at the start of `bytes` (at least `length` long) and returns its length.
    @discardableResult
    public func emit(into bytes: UnsafeMutableRawBufferPointer) -> Int {
        precondition(bytes.count >= length, "no room for the SOCKS5 reply")
        bytes.netStore(Socks5Server.version, at: 0)
        bytes.netStore(code.rawValue, at: 1)
        bytes.netStore(UInt8(0), at: 2)
        return 3 + Socks5Address.emit(bound, into: bytes.netSlice(3, bytes.count))
    }

    /// The reply as a new array: for the handshake, once per connection.
    public var bytes: [UInt8] {
        [UInt8](unsafeUninitializedCapacity: length) { buffer, count in
            count = emit(into: UnsafeMutableRawBufferPointer(buffer))
        }
    }

    /// Reads a reply from the start of `bytes` (which may go on past it, with data after a success): the
    /// reply and its length. RSV is not checked.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(Socks5WireError) -> (Socks5Reply, length: Int) {
        guard bytes.count >= 4 else { throw .truncated }
        guard bytes[0] == Socks5Server.version else { throw .badVersion(bytes[0]) }
        let (bound, length) = try Socks5Address.parse(bytes.netSlice(from: 3))
        return (Socks5Reply(Socks5ReplyCode(rawValue: bytes[1]), bound: bound), 3 + length)
    }
}
