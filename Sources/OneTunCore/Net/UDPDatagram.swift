/// A read-only view of a UDP datagram (RFC 768), valid only inside the `withUnsafe…` scope that owns the
/// memory; never store one.
///
///     |          Source Port          |       Destination Port        |
///     |            Length             |           Checksum            |
@_spi(OneTunInternals) public struct UDPDatagram {
    enum Field {
        static let sourcePort = 0
        static let destinationPort = 2
        static let length = 4
        static let checksum = 6
    }

    public static let headerLength = 8

    /// The datagram exactly, up to its Length field; bytes after it in the IP payload are not part of it.
    public let bytes: UnsafeRawBufferPointer

    /// Validates room for the header and 8 ≤ Length ≤ buffer.
    public init(validating buffer: UnsafeRawBufferPointer) throws(WireError) {
        guard buffer.count >= UDPDatagram.headerLength else { throw .truncated }
        let length = Int(buffer.netU16(Field.length))
        guard length >= UDPDatagram.headerLength else { throw .malformed }
        guard length <= buffer.count else { throw .truncated }
        bytes = buffer.netSlice(0, length)
    }

    public var sourcePort: UInt16 { bytes.netU16(Field.sourcePort) }
    public var destinationPort: UInt16 { bytes.netU16(Field.destinationPort) }
    public var length: Int { Int(bytes.netU16(Field.length)) }
    public var checksum: UInt16 { bytes.netU16(Field.checksum) }
    public var payload: UnsafeRawBufferPointer { bytes.netSlice(from: UDPDatagram.headerLength) }

    /// True when the checksum over the pseudo-header and datagram verifies. Over IPv4 a zero field means the
    /// sender computed none (RFC 768) and passes; over IPv6 the checksum is mandatory (RFC 8200 §8.1) and a
    /// zero field fails.
    public func verifyChecksum(src: IPAddress, dst: IPAddress) -> Bool {
        if checksum == 0 { return src.isV4 }
        var sum = Checksum.pseudoHeader(src: src, dst: dst, protocol: .udp, length: bytes.count)
        sum.add(bytes)
        return sum.finalize() == 0
    }
}

/// A UDP header as values. The length comes from the buffer `emit` is given.
@_spi(OneTunInternals) public struct UDPRepr: Hashable, Sendable, BitwiseCopyable {
    public var sourcePort: UInt16
    public var destinationPort: UInt16

    public init(sourcePort: UInt16, destinationPort: UInt16) {
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
    }

    public static let headerLength = 8

    public static func parse(_ datagram: UDPDatagram) -> UDPRepr {
        UDPRepr(sourcePort: datagram.sourcePort, destinationPort: datagram.destinationPort)
    }

    /// Writes the header at the start of `datagram` (exactly header + data, data already in place after 8
    /// bytes) and the checksum over the pseudo-header and all of it. Returns 8.
    @discardableResult
    public func emit(into datagram: UnsafeMutableRawBufferPointer, src: IPAddress, dst: IPAddress) -> Int {
        precondition(datagram.count >= UDPRepr.headerLength && datagram.count <= 65535, "bad UDP datagram size")
        typealias F = UDPDatagram.Field
        datagram.netStore(sourcePort, at: F.sourcePort)
        datagram.netStore(destinationPort, at: F.destinationPort)
        datagram.netStore(UInt16(datagram.count), at: F.length)
        datagram.netStore(UInt16(0), at: F.checksum)
        var sum = Checksum.pseudoHeader(src: src, dst: dst, protocol: .udp, length: datagram.count)
        sum.add(UnsafeRawBufferPointer(datagram))
        // RFC 768: a computed zero is sent as all ones, since zero means "no checksum".
        let value = sum.finalize()
        datagram.netStore(value == 0 ? 0xFFFF : value, at: F.checksum)
        return UDPRepr.headerLength
    }
}
