/// A read-only view of an ICMPv6 message (RFC 4443 §2.1), valid only inside the `withUnsafe…` scope that
/// owns the memory; never store one.
///
///     |     Type      |     Code      |          Checksum             |
///     |     Identifier / MTU / pointer / unused                       |
///     |     Data (echo) or as much of the invoking packet as fits     |
@_spi(OneTunInternals) public struct ICMPv6Message {
    public static let headerLength = 8

    public let bytes: UnsafeRawBufferPointer

    /// Validates room for the 8-byte header and, for destination unreachable, packet too big, time exceeded
    /// and parameter problem, room for the invoking packet's IPv6 header (RFC 4443 §3).
    public init(validating buffer: UnsafeRawBufferPointer) throws(WireError) {
        guard buffer.count >= ICMPv6Message.headerLength else { throw .truncated }
        if ICMPv6Message.quotesInvokingPacket(ICMPv6Type(rawValue: buffer[0])) {
            guard buffer.count >= ICMPv6Message.headerLength + IPv6Packet.headerLength else { throw .truncated }
        }
        bytes = buffer
    }

    static func quotesInvokingPacket(_ type: ICMPv6Type) -> Bool { type.rawValue >= 1 && type.rawValue <= 4 }

    public var type: ICMPv6Type { ICMPv6Type(rawValue: bytes[0]) }
    public var code: UInt8 { bytes[1] }
    public var checksum: UInt16 { bytes.netU16(2) }
    public var restOfHeader: UInt32 { bytes.netU32(4) }
    /// Echo request / reply.
    public var identifier: UInt16 { bytes.netU16(4) }
    /// Echo request / reply.
    public var sequenceNumber: UInt16 { bytes.netU16(6) }
    /// Packet Too Big: the next-hop link's MTU (RFC 4443 §3.2).
    public var mtu: UInt32 { bytes.netU32(4) }
    /// Parameter Problem: the offset of the offending octet (RFC 4443 §3.4).
    public var pointer: UInt32 { bytes.netU32(4) }
    /// Everything after the 8-byte header: echo data, or the invoking packet for an error.
    public var payload: UnsafeRawBufferPointer { bytes.netSlice(from: ICMPv6Message.headerLength) }

    /// The invoking packet's addresses, protocol and ports, for the four error types; nil otherwise.
    public var originalPacket: ICMPOriginalPacket? {
        ICMPv6Message.quotesInvokingPacket(type) ? ICMPOriginalPacket(ipv6: payload) : nil
    }

    /// True when the checksum over the IPv6 pseudo-header (RFC 4443 §2.3, RFC 8200 §8.1) and the message
    /// verifies.
    public func verifyChecksum(src: IPv6Address, dst: IPv6Address) -> Bool {
        var sum = Checksum.pseudoHeader(src: src, dst: dst, protocol: .icmpv6, length: bytes.count)
        sum.add(bytes)
        return sum.finalize() == 0
    }
}
