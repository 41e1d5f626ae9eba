/// An ICMP echo header as a value, for either family: the types differ (8/0 for ICMPv4, 128/129 for
/// ICMPv6) and ICMPv6 adds a pseudo-header to the checksum; the rest is the same (RFC 792, RFC 4443 §4).
@_spi(OneTunInternals) public enum ICMPRepr: Hashable, Sendable, BitwiseCopyable {
    case echoRequest(identifier: UInt16, sequence: UInt16)
    case echoReply(identifier: UInt16, sequence: UInt16)

    public static let headerLength = 8

    /// The echo header of an ICMPv4 message with code 0; nil for anything else.
    public static func parse(_ message: ICMPv4Message) -> ICMPRepr? {
        guard message.code == 0 else { return nil }
        switch message.type {
        case .echoRequest: return .echoRequest(identifier: message.identifier, sequence: message.sequenceNumber)
        case .echoReply: return .echoReply(identifier: message.identifier, sequence: message.sequenceNumber)
        default: return nil
        }
    }

    /// The echo header of an ICMPv6 message with code 0; nil for anything else.
    public static func parse(_ message: ICMPv6Message) -> ICMPRepr? {
        guard message.code == 0 else { return nil }
        switch message.type {
        case .echoRequest: return .echoRequest(identifier: message.identifier, sequence: message.sequenceNumber)
        case .echoReply: return .echoReply(identifier: message.identifier, sequence: message.sequenceNumber)
        default: return nil
        }
    }

    public var identifier: UInt16 {
        switch self {
        case .echoRequest(let id, _), .echoReply(let id, _): id
        }
    }

    public var sequence: UInt16 {
        switch self {
        case .echoRequest(_, let seq), .echoReply(_, let seq): seq
        }
    }

    /// Writes the 8-byte header at the start of `message` (exactly header + data, data already in place) and
    /// the checksum: over the message alone for IPv4 addresses, with the IPv6 pseudo-header for IPv6 ones.
    /// Returns 8.
    @discardableResult
    public func emit(into message: UnsafeMutableRawBufferPointer, src: IPAddress, dst: IPAddress) -> Int {
        precondition(message.count >= ICMPRepr.headerLength, "no room for the ICMP header")
        let request: Bool
        switch self {
        case .echoRequest: request = true
        case .echoReply: request = false
        }
        var sum: Checksum
        switch (src, dst) {
        case (.v4, .v4):
            message.netStore(request ? ICMPv4Type.echoRequest.rawValue : ICMPv4Type.echoReply.rawValue, at: 0)
            sum = Checksum()
        case let (.v6(s), .v6(d)):
            message.netStore(request ? ICMPv6Type.echoRequest.rawValue : ICMPv6Type.echoReply.rawValue, at: 0)
            sum = Checksum.pseudoHeader(src: s, dst: d, protocol: .icmpv6, length: message.count)
        default:
            preconditionFailure("ICMP addresses must be of one family")
        }
        message.netStore(UInt8(0), at: 1)
        message.netStore(UInt16(0), at: 2)
        message.netStore(identifier, at: 4)
        message.netStore(sequence, at: 6)
        sum.add(UnsafeRawBufferPointer(message))
        message.netStore(sum.finalize(), at: 2)
        return ICMPRepr.headerLength
    }
}
