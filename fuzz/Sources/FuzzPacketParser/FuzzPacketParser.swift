import OneTunCore

/// Every packet parser (IPv4, IPv6 with extension headers, TCP with options, UDP, ICMPv4, ICMPv6): what
/// validates is rebuilt with the packet builder and must parse again to the same representation
/// (smoltcp's parse → emit → re-parse round trip).
struct Decoded: Equatable {
    var builder: PacketBuilder
    var payload: UnsafeRawBufferPointer

    static func == (a: Decoded, b: Decoded) -> Bool {
        a.builder == b.builder && a.payload.elementsEqual(b.payload)
    }
}

func decode(_ bytes: UnsafeRawBufferPointer) -> Decoded? {
    guard let ip = try? IPPacket(validating: bytes) else { return nil }
    let upper = ip.upperLayerPayload
    let transport: TransportRepr
    let payload: UnsafeRawBufferPointer
    switch (ip, ip.upperLayerProtocol) {
    case (_, .tcp):
        guard let segment = try? TCPSegment(validating: upper) else { return nil }
        _ = segment.verifyChecksum(src: ip.source, dst: ip.destination)
        transport = .tcp(TCPRepr.parse(segment))
        payload = segment.payload
    case (_, .udp):
        guard let datagram = try? UDPDatagram(validating: upper) else { return nil }
        _ = datagram.verifyChecksum(src: ip.source, dst: ip.destination)
        transport = .udp(UDPRepr.parse(datagram))
        payload = datagram.payload
    case (.v4, .icmp):
        guard let message = try? ICMPv4Message(validating: upper) else { return nil }
        _ = message.verifyChecksum()
        _ = message.originalPacket
        guard let repr = ICMPRepr.parse(message) else { return nil }
        transport = .icmp(repr)
        payload = message.payload
    case (.v6, .icmpv6):
        guard let message = try? ICMPv6Message(validating: upper) else { return nil }
        _ = message.originalPacket
        guard let repr = ICMPRepr.parse(message) else { return nil }
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
    return Decoded(builder: builder, payload: payload)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPacketParser(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard let first = decode(UnsafeRawBufferPointer(start: data, count: size)) else { return 0 }
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 + first.builder.headerLength + first.payload.count + 32, alignment: 16)
    defer { buffer.deallocate() }
    let length = first.builder.emit(into: buffer, at: 16, copying: first.payload)
    guard let second = decode(UnsafeRawBufferPointer(rebasing: buffer[16..<16 + length])) else {
        fatalError("a rebuilt packet does not parse")
    }
    precondition(second == first, "parse → emit → parse changed the packet")
    return 0
}
