/// A read-only view of an ICMPv4 message (RFC 792), valid only inside the `withUnsafe…` scope that owns the
/// memory; never store one.
///
///     |     Type      |     Code      |          Checksum             |
///     |     Identifier / unused       |  Sequence Number / MTU        |
///     |     Data (echo) or the invoking packet's header + 8 bytes     |
@_spi(OneTunInternals) public struct ICMPv4Message {
    public static let headerLength = 8

    public let bytes: UnsafeRawBufferPointer

    /// Validates room for the 8-byte header and, for error messages (destination unreachable, redirect,
    /// time exceeded, parameter problem), room for the invoking packet's minimal IPv4 header (RFC 792).
    public init(validating buffer: UnsafeRawBufferPointer) throws(WireError) {
        guard buffer.count >= ICMPv4Message.headerLength else { throw .truncated }
        if ICMPv4Type(rawValue: buffer[0]).isError {
            guard buffer.count >= ICMPv4Message.headerLength + IPv4Packet.minimumHeaderLength else {
                throw .truncated
            }
        }
        bytes = buffer
    }

    public var type: ICMPv4Type { ICMPv4Type(rawValue: bytes[0]) }
    public var code: UInt8 { bytes[1] }
    public var checksum: UInt16 { bytes.netU16(2) }
    /// Bytes 4–7, whose meaning depends on the type.
    public var restOfHeader: UInt32 { bytes.netU32(4) }
    /// Echo request / reply.
    public var identifier: UInt16 { bytes.netU16(4) }
    /// Echo request / reply.
    public var sequenceNumber: UInt16 { bytes.netU16(6) }
    /// Destination unreachable, fragmentation needed: the next-hop MTU (RFC 1191 §4), zero from old routers.
    public var nextHopMTU: UInt16 { bytes.netU16(6) }
    /// Everything after the 8-byte header: the echo data, or the invoking packet for an error.
    public var payload: UnsafeRawBufferPointer { bytes.netSlice(from: ICMPv4Message.headerLength) }

    /// The invoking packet's addresses, protocol and ports, for error messages whose payload starts with a
    /// plausible IPv4 header; nil otherwise.
    public var originalPacket: ICMPOriginalPacket? {
        type.isError ? ICMPOriginalPacket(ipv4: payload) : nil
    }

    /// ICMPv4 has no pseudo-header: the checksum covers the message alone (RFC 792).
    public func verifyChecksum() -> Bool { Checksum.compute(bytes) == 0 }
}

/// What an ICMP error says about the packet that caused it: enough to find the flow it belongs to.
@_spi(OneTunInternals) public struct ICMPOriginalPacket: Hashable, Sendable, BitwiseCopyable {
    /// Our address, when the invoking packet was one we sent.
    public var source: IPAddress
    public var destination: IPAddress
    public var ipProtocol: IPProtocol
    /// The first four bytes of the transport header as ports, for TCP and UDP when present.
    public var sourcePort: UInt16?
    public var destinationPort: UInt16?
    /// The quoted TCP sequence number (bytes 4–7; RFC 792 quotes at least eight bytes), for TCP.
    public var sequenceNumber: UInt32?

    /// Reads an IPv4 header that may be cut short after 8 bytes of payload: version and IHL are checked,
    /// Total Length and the checksum are not (the quoted copy is truncated by design).
    init?(ipv4 bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= IPv4Packet.minimumHeaderLength, bytes[0] >> 4 == 4 else { return nil }
        let headerLength = Int(bytes[0] & 0x0F) * 4
        guard headerLength >= IPv4Packet.minimumHeaderLength, headerLength <= bytes.count else { return nil }
        self.init(
            source: .v4(IPv4Address(loading: bytes, at: 12)), destination: .v4(IPv4Address(loading: bytes, at: 16)),
            ipProtocol: IPProtocol(rawValue: bytes[9]), transport: bytes.netSlice(from: headerLength))
    }

    /// Reads an IPv6 fixed header that may be cut short. Extension headers are not walked: with one present
    /// the protocol is the extension header's and there are no ports.
    init?(ipv6 bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= IPv6Packet.headerLength, bytes[0] >> 4 == 6 else { return nil }
        self.init(
            source: .v6(IPv6Address(loading: bytes, at: 8)), destination: .v6(IPv6Address(loading: bytes, at: 24)),
            ipProtocol: IPProtocol(rawValue: bytes[6]), transport: bytes.netSlice(from: IPv6Packet.headerLength))
    }

    init(source: IPAddress, destination: IPAddress, ipProtocol: IPProtocol, transport: UnsafeRawBufferPointer) {
        self.source = source
        self.destination = destination
        self.ipProtocol = ipProtocol
        if (ipProtocol == .tcp || ipProtocol == .udp) && transport.count >= 4 {
            sourcePort = transport.netU16(0)
            destinationPort = transport.netU16(2)
        } else {
            sourcePort = nil
            destinationPort = nil
        }
        sequenceNumber = ipProtocol == .tcp && transport.count >= 8 ? transport.netU32(4) : nil
    }
}
