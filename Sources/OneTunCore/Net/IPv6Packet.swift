/// A read-only view of an IPv6 packet (RFC 8200 §3), valid only inside the `withUnsafe…` scope that owns
/// the memory; never store one.
///
///     |Version| Traffic Class |              Flow Label               |
///     |        Payload Length         |  Next Header  |   Hop Limit   |
///     |                    Source Address (16 bytes)                  |
///     |                 Destination Address (16 bytes)                |
///
/// Validation walks the extension headers an end host must understand (RFC 8200 §4) to find the
/// upper-layer protocol and where its header starts.
@_spi(OneTunInternals) public struct IPv6Packet {
    enum Field {
        static let versionClassFlow = 0
        static let payloadLength = 4
        static let nextHeader = 6
        static let hopLimit = 7
        static let source = 8
        static let destination = 24
    }

    public static let headerLength = 40

    /// The packet exactly: the fixed header and Payload Length bytes; link padding excluded.
    public let bytes: UnsafeRawBufferPointer
    /// The protocol after the last extension header (`.noNextHeader` if the chain ends in nothing).
    public let upperLayerProtocol: IPProtocol
    /// Where the upper-layer header starts, from the start of the packet.
    public let upperLayerOffset: Int

    /// Validates `buffer` as one unfragmented IPv6 packet.
    ///
    /// Hop-by-Hop (only first, §4.1), Routing and Destination Options headers are walked with their lengths
    /// checked. Options whose two high type bits ask for anything but "skip" (§4.2) and Routing headers with
    /// Segments Left ≠ 0 (§4.4: we are not the final destination) are `.unsupported`; a Fragment header is
    /// `.fragment` (we do not reassemble).
    public init(validating buffer: UnsafeRawBufferPointer) throws(WireError) {
        guard buffer.count >= IPv6Packet.headerLength else { throw .truncated }
        guard buffer[Field.versionClassFlow] >> 4 == 6 else { throw .badVersion }
        // A zero Payload Length means a Jumbo Payload option (RFC 2675) follows — or nothing. With no jumbo
        // support both read as an empty payload, and a hop-by-hop jumbo option is rejected below.
        let end = IPv6Packet.headerLength + Int(buffer.netU16(Field.payloadLength))
        guard end <= buffer.count else { throw .truncated }
        let packet = buffer.netSlice(0, end)
        var next = IPProtocol(rawValue: packet[Field.nextHeader])
        var offset = IPv6Packet.headerLength
        // Each step consumes at least 8 bytes, so the walk ends.
        walk: while true {
            switch next {
            case .hopByHop, .routing, .destinationOptions:
                if next == .hopByHop && offset != IPv6Packet.headerLength { throw .malformed }
                guard end - offset >= 8 else { throw .truncated }
                let length = (Int(packet[offset + 1]) + 1) * 8
                guard length <= end - offset else { throw .truncated }
                let header = packet.netSlice(offset, offset + length)
                if next == .routing {
                    if header[3] != 0 { throw .unsupported }
                } else {
                    try IPv6Packet.checkOptions(header.netSlice(from: 2))
                }
                next = IPProtocol(rawValue: header[0])
                offset += length
            case .fragment:
                throw .fragment
            default:
                break walk
            }
        }
        bytes = packet
        upperLayerProtocol = next
        upperLayerOffset = offset
    }

    /// Walks the TLV options of a Hop-by-Hop or Destination Options header (RFC 8200 §4.2).
    static func checkOptions(_ options: UnsafeRawBufferPointer) throws(WireError) {
        var i = 0
        while i < options.count {
            let type = options[i]
            if type == 0 {  // Pad1
                i += 1
                continue
            }
            guard options.count - i >= 2 else { throw .malformed }
            let length = 2 + Int(options[i + 1])
            guard length <= options.count - i else { throw .malformed }
            // We know only Pad1, PadN and options whose action bits say "skip over this option".
            if type != 1 && type >> 6 != 0 { throw .unsupported }
            i += length
        }
    }

    public var version: UInt8 { bytes[Field.versionClassFlow] >> 4 }
    public var trafficClass: UInt8 { UInt8(truncatingIfNeeded: bytes.netU32(Field.versionClassFlow) >> 20) }
    public var flowLabel: UInt32 { bytes.netU32(Field.versionClassFlow) & 0xF_FFFF }
    /// The length of everything after the fixed header, extension headers included.
    public var payloadLength: Int { Int(bytes.netU16(Field.payloadLength)) }
    /// The fixed header's Next Header: the first extension header or the upper-layer protocol.
    public var nextHeader: IPProtocol { IPProtocol(rawValue: bytes[Field.nextHeader]) }
    public var hopLimit: UInt8 { bytes[Field.hopLimit] }
    public var source: IPv6Address { IPv6Address(loading: bytes, at: Field.source) }
    public var destination: IPv6Address { IPv6Address(loading: bytes, at: Field.destination) }
    /// Everything after the fixed header, extension headers included.
    public var payload: UnsafeRawBufferPointer { bytes.netSlice(from: IPv6Packet.headerLength) }
    /// The upper-layer packet (the TCP segment, UDP datagram or ICMPv6 message).
    public var upperLayerPayload: UnsafeRawBufferPointer { bytes.netSlice(from: upperLayerOffset) }
}

/// The fields of an IPv6 header that matter to an end host. Extension headers are dropped on parse and never
/// emitted: `nextHeader` is the upper-layer protocol and `payloadLength` the upper-layer length.
@_spi(OneTunInternals) public struct IPv6Repr: Hashable, Sendable, BitwiseCopyable {
    public var source: IPv6Address
    public var destination: IPv6Address
    public var nextHeader: IPProtocol
    public var payloadLength: Int
    public var hopLimit: UInt8
    public var trafficClass: UInt8
    /// 20 bits.
    public var flowLabel: UInt32

    public init(
        source: IPv6Address, destination: IPv6Address, nextHeader: IPProtocol, payloadLength: Int,
        hopLimit: UInt8 = 64, trafficClass: UInt8 = 0, flowLabel: UInt32 = 0
    ) {
        self.source = source
        self.destination = destination
        self.nextHeader = nextHeader
        self.payloadLength = payloadLength
        self.hopLimit = hopLimit
        self.trafficClass = trafficClass
        self.flowLabel = flowLabel
    }

    public static let headerLength = 40

    public static func parse(_ packet: IPv6Packet) -> IPv6Repr {
        IPv6Repr(
            source: packet.source, destination: packet.destination, nextHeader: packet.upperLayerProtocol,
            payloadLength: packet.upperLayerPayload.count, hopLimit: packet.hopLimit,
            trafficClass: packet.trafficClass, flowLabel: packet.flowLabel)
    }

    /// Writes the 40-byte header at the start of `buffer`; returns 40. The payload goes after it.
    @discardableResult
    public func emit(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        precondition(buffer.count >= IPv6Repr.headerLength, "no room for an IPv6 header")
        precondition(payloadLength >= 0 && payloadLength <= 65535, "IPv6 payload too long (no jumbograms)")
        typealias F = IPv6Packet.Field
        let first = UInt32(6) << 28 | UInt32(trafficClass) << 20 | (flowLabel & 0xF_FFFF)
        buffer.netStore(first, at: F.versionClassFlow)
        buffer.netStore(UInt16(payloadLength), at: F.payloadLength)
        buffer.netStore(nextHeader.rawValue, at: F.nextHeader)
        buffer.netStore(hopLimit, at: F.hopLimit)
        source.store(into: buffer, at: F.source)
        destination.store(into: buffer, at: F.destination)
        return IPv6Repr.headerLength
    }
}
