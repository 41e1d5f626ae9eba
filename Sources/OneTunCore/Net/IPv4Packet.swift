/// A read-only view of an IPv4 packet (RFC 791 §3.1), valid only inside the `withUnsafe…` scope that owns
/// the memory; never store one.
///
///      0                   1                   2                   3
///     |Version|  IHL  |Type of Service|          Total Length         |
///     |         Identification        |Flags|      Fragment Offset    |
///     |  Time to Live |    Protocol   |         Header Checksum       |
///     |                       Source Address                          |
///     |                    Destination Address                        |
///     |                    Options                    |    Padding    |
///
/// `init(validating:)` checks every length once; the accessors are then plain big-endian loads.
@_spi(OneTunInternals) public struct IPv4Packet {
    /// Byte offsets of the fixed header's fields.
    enum Field {
        static let versionIHL = 0
        static let tos = 1
        static let totalLength = 2
        static let identification = 4
        static let flagsFragment = 6
        static let ttl = 8
        static let proto = 9
        static let checksum = 10
        static let source = 12
        static let destination = 16
    }

    public static let minimumHeaderLength = 20

    /// The packet exactly: header, options and payload up to Total Length. Link-layer padding after Total
    /// Length is not part of it.
    public let bytes: UnsafeRawBufferPointer

    /// Validates `buffer` as one unfragmented IPv4 packet.
    ///
    /// Checks, in order: room for the fixed header, version 4, IHL ≥ 5, the header within the buffer,
    /// IHL ≤ Total Length ≤ buffer, the header checksum (unless `verifyChecksum` is false), and finally that
    /// the packet is not a fragment — last, so `.fragment` is only reported for packets that are otherwise
    /// sound and callers can count them apart from garbage.
    public init(validating buffer: UnsafeRawBufferPointer, verifyChecksum: Bool = true) throws(WireError) {
        guard buffer.count >= IPv4Packet.minimumHeaderLength else { throw .truncated }
        let versionIHL = buffer[Field.versionIHL]
        guard versionIHL >> 4 == 4 else { throw .badVersion }
        let headerLength = Int(versionIHL & 0x0F) * 4
        guard headerLength >= IPv4Packet.minimumHeaderLength else { throw .malformed }
        guard headerLength <= buffer.count else { throw .truncated }
        let totalLength = Int(buffer.netU16(Field.totalLength))
        guard totalLength >= headerLength else { throw .malformed }
        guard totalLength <= buffer.count else { throw .truncated }
        if verifyChecksum {
            guard Checksum.compute(buffer.netSlice(0, headerLength)) == 0 else { throw .badChecksum }
        }
        // RFC 791 §3.2: a fragment has MF set or a non-zero offset.
        guard buffer.netU16(Field.flagsFragment) & 0x3FFF == 0 else { throw .fragment }
        bytes = buffer.netSlice(0, totalLength)
    }

    public var version: UInt8 { bytes[Field.versionIHL] >> 4 }
    /// IHL × 4: the header with options.
    public var headerLength: Int { Int(bytes[Field.versionIHL] & 0x0F) * 4 }
    /// The former Type of Service byte: DSCP (high six bits) and ECN (low two), RFC 2474 / RFC 3168.
    public var typeOfService: UInt8 { bytes[Field.tos] }
    public var dscp: UInt8 { typeOfService >> 2 }
    public var ecn: UInt8 { typeOfService & 3 }
    public var totalLength: Int { Int(bytes.netU16(Field.totalLength)) }
    public var identification: UInt16 { bytes.netU16(Field.identification) }
    public var dontFragment: Bool { bytes.netU16(Field.flagsFragment) & 0x4000 != 0 }
    public var moreFragments: Bool { bytes.netU16(Field.flagsFragment) & 0x2000 != 0 }
    /// In bytes (the field counts 8-byte units).
    public var fragmentOffset: Int { Int(bytes.netU16(Field.flagsFragment) & 0x1FFF) * 8 }
    public var timeToLive: UInt8 { bytes[Field.ttl] }
    /// The protocol of the payload.
    public var ipProtocol: IPProtocol { IPProtocol(rawValue: bytes[Field.proto]) }
    public var headerChecksum: UInt16 { bytes.netU16(Field.checksum) }
    public var source: IPv4Address { IPv4Address(loading: bytes, at: Field.source) }
    public var destination: IPv4Address { IPv4Address(loading: bytes, at: Field.destination) }
    /// The header options, unparsed (we honour none; RFC 1122 §3.2.1.8 lets a host ignore unknown ones).
    public var options: UnsafeRawBufferPointer { bytes.netSlice(IPv4Packet.minimumHeaderLength, headerLength) }
    public var header: UnsafeRawBufferPointer { bytes.netSlice(0, headerLength) }
    /// The upper-layer packet: from the end of the options to Total Length.
    public var payload: UnsafeRawBufferPointer { bytes.netSlice(from: headerLength) }
}

/// The fields of an IPv4 header that matter to an end host. Options are dropped on parse and never emitted.
@_spi(OneTunInternals) public struct IPv4Repr: Hashable, Sendable, BitwiseCopyable {
    public var source: IPv4Address
    public var destination: IPv4Address
    public var ipProtocol: IPProtocol
    /// The upper-layer packet's length; Total Length is this plus 20.
    public var payloadLength: Int
    public var timeToLive: UInt8
    public var typeOfService: UInt8
    public var identification: UInt16
    public var dontFragment: Bool

    public init(
        source: IPv4Address, destination: IPv4Address, ipProtocol: IPProtocol, payloadLength: Int,
        timeToLive: UInt8 = 64, typeOfService: UInt8 = 0, identification: UInt16 = 0, dontFragment: Bool = true
    ) {
        self.source = source
        self.destination = destination
        self.ipProtocol = ipProtocol
        self.payloadLength = payloadLength
        self.timeToLive = timeToLive
        self.typeOfService = typeOfService
        self.identification = identification
        self.dontFragment = dontFragment
    }

    public static let headerLength = 20

    public static func parse(_ packet: IPv4Packet) -> IPv4Repr {
        IPv4Repr(
            source: packet.source, destination: packet.destination, ipProtocol: packet.ipProtocol,
            payloadLength: packet.payload.count, timeToLive: packet.timeToLive,
            typeOfService: packet.typeOfService, identification: packet.identification,
            dontFragment: packet.dontFragment)
    }

    /// Writes the 20-byte header, checksum included, at the start of `buffer`; returns 20. The payload is the
    /// caller's: it goes after the header.
    @discardableResult
    public func emit(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        precondition(buffer.count >= IPv4Repr.headerLength, "no room for an IPv4 header")
        precondition(payloadLength >= 0 && payloadLength <= 65535 - IPv4Repr.headerLength, "IPv4 payload too long")
        typealias F = IPv4Packet.Field
        buffer.netStore(UInt8(0x45), at: F.versionIHL)
        buffer.netStore(typeOfService, at: F.tos)
        buffer.netStore(UInt16(IPv4Repr.headerLength + payloadLength), at: F.totalLength)
        buffer.netStore(identification, at: F.identification)
        buffer.netStore(UInt16(dontFragment ? 0x4000 : 0), at: F.flagsFragment)
        buffer.netStore(timeToLive, at: F.ttl)
        buffer.netStore(ipProtocol.rawValue, at: F.proto)
        buffer.netStore(UInt16(0), at: F.checksum)
        source.store(into: buffer, at: F.source)
        destination.store(into: buffer, at: F.destination)
        let sum = Checksum.compute(UnsafeRawBufferPointer(buffer.netSlice(0, IPv4Repr.headerLength)))
        buffer.netStore(sum, at: F.checksum)
        return IPv4Repr.headerLength
    }
}
