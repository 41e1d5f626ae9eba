/// The transport header of a packet to build.
@_spi(OneTunInternals) public enum TransportRepr: Hashable, Sendable, BitwiseCopyable {
    case tcp(TCPRepr)
    case udp(UDPRepr)
    /// ICMPv4 or ICMPv6, by the packet's address family.
    case icmp(ICMPRepr)

    public var headerLength: Int {
        switch self {
        case .tcp(let t): t.headerLength
        case .udp: UDPRepr.headerLength
        case .icmp: ICMPRepr.headerLength
        }
    }

    /// The IP protocol number, which for ICMP depends on the family.
    public func ipProtocol(ipv6: Bool) -> IPProtocol {
        switch self {
        case .tcp: .tcp
        case .udp: .udp
        case .icmp: ipv6 ? .icmpv6 : .icmp
        }
    }

    /// Writes the header into `segment` (exactly header + data) and the checksum; returns the header length.
    @discardableResult
    public func emit(into segment: UnsafeMutableRawBufferPointer, src: IPAddress, dst: IPAddress) -> Int {
        switch self {
        case .tcp(let t): t.emit(into: segment, src: src, dst: dst)
        case .udp(let u): u.emit(into: segment, src: src, dst: dst)
        case .icmp(let i): i.emit(into: segment, src: src, dst: dst)
        }
    }
}

/// Builds a whole IP packet — IPv4 or IPv6 by the addresses — with a TCP, UDP or ICMP header, into a
/// caller's buffer at a given offset, without allocating (STYLE §4: the packet sits at offset 16 of a buffer
/// with headroom for the WireGuard header and tailroom for the tag).
///
/// Either the payload is already in place at `offset + headerLength` (the TCP send path copies socket data
/// straight there) and `emit(into:at:payloadLength:)` writes the headers around it, or
/// `emit(into:at:copying:)` copies it there first. Checksums, pseudo-header included, are computed.
@_spi(OneTunInternals) public struct PacketBuilder: Hashable, Sendable, BitwiseCopyable {
    public var source: IPAddress
    public var destination: IPAddress
    public var transport: TransportRepr
    /// TTL or Hop Limit.
    public var hopLimit: UInt8
    /// IPv4 TOS byte or IPv6 Traffic Class.
    public var trafficClass: UInt8
    /// IPv4 only.
    public var identification: UInt16
    /// IPv4 only. Set by default: we do path-MTU-sized segments, never fragments (RFC 1191).
    public var dontFragment: Bool
    /// IPv6 only, 20 bits.
    public var flowLabel: UInt32

    public init(
        source: IPAddress, destination: IPAddress, transport: TransportRepr, hopLimit: UInt8 = 64,
        trafficClass: UInt8 = 0, identification: UInt16 = 0, dontFragment: Bool = true, flowLabel: UInt32 = 0
    ) {
        precondition(source.isV4 == destination.isV4, "source and destination must be of one family")
        self.source = source
        self.destination = destination
        self.transport = transport
        self.hopLimit = hopLimit
        self.trafficClass = trafficClass
        self.identification = identification
        self.dontFragment = dontFragment
        self.flowLabel = flowLabel
    }

    public var ipHeaderLength: Int { source.isV4 ? IPv4Repr.headerLength : IPv6Repr.headerLength }

    /// IP header plus transport header: where the payload starts, from `offset`.
    public var headerLength: Int { ipHeaderLength + transport.headerLength }

    /// Writes the IP and transport headers around a payload of `payloadLength` bytes already at
    /// `buffer[offset + headerLength...]`. Returns the packet's length (headers plus payload), which starts at
    /// `offset`.
    @discardableResult
    public func emit(into buffer: UnsafeMutableRawBufferPointer, at offset: Int, payloadLength: Int) -> Int {
        let ipLength = ipHeaderLength
        let transportLength = transport.headerLength + payloadLength
        let total = ipLength + transportLength
        precondition(offset >= 0 && payloadLength >= 0 && buffer.count - offset >= total, "packet does not fit")
        // Transport first: its checksum covers its own header and the payload, not the IP header.
        transport.emit(
            into: buffer.netSlice(offset + ipLength, offset + total), src: source, dst: destination)
        let header = buffer.netSlice(offset, offset + ipLength)
        switch (source, destination) {
        case let (.v4(s), .v4(d)):
            IPv4Repr(
                source: s, destination: d, ipProtocol: transport.ipProtocol(ipv6: false),
                payloadLength: transportLength, timeToLive: hopLimit, typeOfService: trafficClass,
                identification: identification, dontFragment: dontFragment
            ).emit(into: header)
        case let (.v6(s), .v6(d)):
            IPv6Repr(
                source: s, destination: d, nextHeader: transport.ipProtocol(ipv6: true),
                payloadLength: transportLength, hopLimit: hopLimit, trafficClass: trafficClass, flowLabel: flowLabel
            ).emit(into: header)
        default:
            preconditionFailure("source and destination must be of one family")
        }
        return total
    }

    /// Copies `payload` to `buffer[offset + headerLength...]`, then writes the headers around it. Returns the
    /// packet's length. `payload` may not overlap the header area.
    @discardableResult
    public func emit(
        into buffer: UnsafeMutableRawBufferPointer, at offset: Int, copying payload: UnsafeRawBufferPointer
    ) -> Int {
        let start = offset + headerLength
        precondition(offset >= 0 && buffer.count - start >= payload.count, "packet does not fit")
        if let from = payload.baseAddress, payload.count > 0 {
            // memmove semantics: the payload may already sit partly where it goes.
            buffer.baseAddress!.advanced(by: start).copyMemory(from: from, byteCount: payload.count)
        }
        return emit(into: buffer, at: offset, payloadLength: payload.count)
    }
}

extension PacketBuilder {
    /// Parses an IP packet down to its transport header: the builder that would rebuild it and its payload
    /// (a view into `bytes`). nil when a layer refuses it or the transport is one the builder cannot
    /// rebuild (an unknown protocol, ICMP other than echo). Checksums are not verified here.
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> (builder: PacketBuilder, payload: UnsafeRawBufferPointer)? {
        guard let ip = try? IPPacket(validating: bytes) else { return nil }
        let upper = ip.upperLayerPayload
        let transport: TransportRepr
        let payload: UnsafeRawBufferPointer
        switch (ip, ip.upperLayerProtocol) {
        case (_, .tcp):
            guard let segment = try? TCPSegment(validating: upper) else { return nil }
            transport = .tcp(TCPRepr.parse(segment))
            payload = segment.payload
        case (_, .udp):
            guard let datagram = try? UDPDatagram(validating: upper) else { return nil }
            transport = .udp(UDPRepr.parse(datagram))
            payload = datagram.payload
        case (.v4, .icmp):
            guard let message = try? ICMPv4Message(validating: upper), let repr = ICMPRepr.parse(message) else { return nil }
            transport = .icmp(repr)
            payload = message.payload
        case (.v6, .icmpv6):
            guard let message = try? ICMPv6Message(validating: upper), let repr = ICMPRepr.parse(message) else { return nil }
            transport = .icmp(repr)
            payload = message.payload
        default:
            return nil
        }
        var builder = PacketBuilder(source: ip.source, destination: ip.destination, transport: transport)
        builder.hopLimit = ip.hopLimit
        switch ip {
        case .v4(let p):
            builder.trafficClass = p.typeOfService
            builder.identification = p.identification
            builder.dontFragment = p.dontFragment
        case .v6(let p):
            builder.trafficClass = p.trafficClass
            builder.flowLabel = p.flowLabel
        }
        return (builder, payload)
    }
}
