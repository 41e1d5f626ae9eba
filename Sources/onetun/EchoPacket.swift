@_spi(OneTunInternals) import OneTunCore

/// ICMP echo requests for `--ping` (RFC 792, RFC 4443 §4), built with the core's wire layer.
enum EchoPacket {
    static let payloadSize = 56

    static func request(into b: UnsafeMutableRawBufferPointer, source: IPAddress, target: IPAddress, identifier: UInt16, sequence: UInt16) -> Int {
        let builder = PacketBuilder(
            source: source, destination: target, transport: .icmp(.echoRequest(identifier: identifier, sequence: sequence)))
        let payloadAt = builder.headerLength
        for i in 0..<payloadSize { b[payloadAt + i] = UInt8(truncatingIfNeeded: i) }
        return builder.emit(into: b, at: 0, payloadLength: payloadSize)
    }
}
