import OneTunCore

/// ICMP echo request and reply packets for `--ping` (RFC 792, RFC 4443 §4), built and parsed with the
/// core's wire layer.
enum EchoPacket {
    static let payloadSize = 56

    static func request(into b: UnsafeMutableRawBufferPointer, source: IPAddress, target: IPAddress, identifier: UInt16, sequence: UInt16) -> Int {
        let builder = PacketBuilder(
            source: source, destination: target, transport: .icmp(.echoRequest(identifier: identifier, sequence: sequence)))
        let payloadAt = builder.headerLength
        for i in 0..<payloadSize { b[payloadAt + i] = UInt8(truncatingIfNeeded: i) }
        return builder.emit(into: b, at: 0, payloadLength: payloadSize)
    }

    /// The sequence number and ICMP size of an echo reply with our identifier, or nil.
    static func parseReply(_ p: UnsafeRawBufferPointer, identifier: UInt16) -> (sequence: UInt16, size: Int)? {
        guard let packet = try? IPPacket(validating: p) else { return nil }
        let icmp = packet.upperLayerPayload
        let repr: ICMPRepr?
        switch packet {
        case .v4(let v4):
            guard v4.ipProtocol == .icmp, let message = try? ICMPv4Message(validating: icmp), message.verifyChecksum() else { return nil }
            repr = ICMPRepr.parse(message)
        case .v6(let v6):
            guard v6.upperLayerProtocol == .icmpv6, let message = try? ICMPv6Message(validating: icmp),
                message.verifyChecksum(src: v6.source, dst: v6.destination)
            else { return nil }
            repr = ICMPRepr.parse(message)
        }
        guard case .echoReply(identifier, let sequence)? = repr else { return nil }
        return (sequence, icmp.count)
    }
}
