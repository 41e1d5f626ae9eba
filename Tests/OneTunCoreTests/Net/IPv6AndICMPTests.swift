import Testing
@_spi(OneTunInternals) @testable import OneTunCore

/// An IPv6 packet 2001:db8::1 → 2001:db8::2 whose fixed Next Header is `next`, followed by `rest`.
func netIPv6Packet(next: UInt8, _ rest: [UInt8]) -> [UInt8] {
    var p = netHex("60000000 0000 00 40 20010db8000000000000000000000001 20010db8000000000000000000000002") + rest
    p[6] = next
    netFixIPv6PayloadLength(&p)
    return p
}

@Suite struct NetIPv6AndICMPTests {
    static let udp = netHex("1234 0035 000a 0000 abcd")

    @Test func extensionHeadersWalked() throws {
        // Hop-by-hop (PadN ×4 + Router Alert) → Destination Options (Pad1 ×6) → UDP.
        let hopByHop: [UInt8] = [60, 0, 1, 0, 5, 2, 0, 0]
        let destOpts: [UInt8] = [17, 0, 0, 0, 0, 0, 0, 0]
        let routing: [UInt8] = [17, 0, 0, 0, 0, 0, 0, 0]  // segments left 0: processed
        try netIPv6Packet(next: 0, hopByHop + destOpts + Self.udp).withUnsafeBytes { raw in
            let ip = try IPv6Packet(validating: raw)
            #expect(ip.nextHeader == .hopByHop)
            #expect(ip.upperLayerProtocol == .udp)
            #expect(ip.upperLayerOffset == 56)
            #expect(ip.upperLayerPayload.count == 10)
            let udp = try UDPDatagram(validating: ip.upperLayerPayload)
            #expect(udp.destinationPort == 53)
            #expect(IPv6Repr.parse(ip).payloadLength == 10)
        }
        try netIPv6Packet(next: 43, routing + Self.udp).withUnsafeBytes { raw throws in
            #expect(try IPv6Packet(validating: raw).upperLayerProtocol == .udp)
        }
        try netIPv6Packet(next: 59, [1, 2, 3]).withUnsafeBytes { raw throws in
            #expect(try IPv6Packet(validating: raw).upperLayerProtocol == .noNextHeader)
        }
    }

    @Test func extensionHeaderErrors() {
        let cases: [(String, UInt8, [UInt8], WireError)] = [
            ("fragment", 44, [17, 0, 0, 1, 0, 0, 0, 1] + Self.udp, .fragment),
            ("fragment after dest opts", 60, [44, 0, 1, 4, 0, 0, 0, 0] + [17, 0, 0, 1, 0, 0, 0, 1] + Self.udp, .fragment),
            ("hop-by-hop not first", 60, [0, 0, 1, 4, 0, 0, 0, 0] + [17, 0, 1, 4, 0, 0, 0, 0], .malformed),
            ("routing with segments left", 43, [17, 0, 0, 1, 0, 0, 0, 0] + Self.udp, .unsupported),
            ("option demanding processing", 60, [17, 0, 0x80, 4, 0, 0, 0, 0] + Self.udp, .unsupported),
            ("jumbo payload option", 0, [17, 0, 0xC2, 4, 0, 0, 0, 0] + Self.udp, .unsupported),
            ("option length past header", 60, [17, 0, 1, 5, 0, 0, 0, 0] + Self.udp, .malformed),
            ("header shorter than 8", 60, [17, 0, 1, 0], .truncated),
            ("header length past packet", 60, [17, 1, 1, 4, 0, 0, 0, 0], .truncated),
        ]
        for (name, next, rest, error) in cases {
            netExpectError(error, netIPv6Packet(next: next, rest), "\(name)") { _ = try IPv6Packet(validating: $0) }
        }
        var p = netIPv6Packet(next: 17, Self.udp)
        p[0] = 0x40
        netExpectError(.badVersion, p) { _ = try IPv6Packet(validating: $0) }
        p = netIPv6Packet(next: 17, Self.udp)
        p[5] += 1
        netExpectError(.truncated, p) { _ = try IPv6Packet(validating: $0) }
        netExpectError(.badVersion, [0x70]) { _ = try IPPacket(validating: $0) }
        netExpectError(.truncated, []) { _ = try IPPacket(validating: $0) }
    }

    /// Port unreachable for the UDP seed: the error quotes its IP header and first 8 bytes.
    @Test func icmpv4DestinationUnreachable() throws {
        var msg: [UInt8] = [3, 3, 0, 0, 0, 0, 0, 0] + Array(NetSeeds.ipv4UDP[0..<28])
        let sum = netNaiveChecksum(msg)
        msg[2] = UInt8(sum >> 8)
        msg[3] = UInt8(sum & 0xFF)
        try msg.withUnsafeBytes { raw in
            let icmp = try ICMPv4Message(validating: raw)
            #expect(icmp.type == .destinationUnreachable)
            #expect(icmp.code == ICMPv4UnreachableCode.port.rawValue)
            #expect(icmp.verifyChecksum())
            #expect(ICMPRepr.parse(icmp) == nil)
            let original = try #require(icmp.originalPacket)
            #expect(original.source == IPAddress("192.168.1.2"))
            #expect(original.destination == IPAddress("8.8.8.8"))
            #expect(original.ipProtocol == .udp)
            #expect(original.sourcePort == 53000)
            #expect(original.destinationPort == 53)
        }
        // An error too short to hold the invoking header is refused.
        netExpectError(.truncated, Array(msg[0..<27])) { _ = try ICMPv4Message(validating: $0) }
        // Frag-needed carries the next-hop MTU in bytes 6–7.
        msg[1] = 4
        msg[6] = 0x05
        msg[7] = 0x78
        try msg.withUnsafeBytes { raw throws in #expect(try ICMPv4Message(validating: raw).nextHopMTU == 1400) }
    }

    @Test func icmpv6PacketTooBig() throws {
        let tcpSyn = NetSeeds.ipv4TCPSyn
        let inner = netIPv6Packet(next: 6, Array(tcpSyn[20...]))
        let msg: [UInt8] = [2, 0, 0, 0, 0, 0, 0x05, 0x00] + inner
        try msg.withUnsafeBytes { raw in
            let icmp = try ICMPv6Message(validating: raw)
            #expect(icmp.type == .packetTooBig)
            #expect(icmp.mtu == 1280)
            let original = try #require(icmp.originalPacket)
            #expect(original.source == IPAddress("2001:db8::1"))
            #expect(original.ipProtocol == .tcp)
            #expect(original.sourcePort == 41910)
            #expect(original.destinationPort == 80)
        }
        netExpectError(.truncated, Array(msg[0..<47])) { _ = try ICMPv6Message(validating: $0) }
    }

    @Test func icmpv4EchoBuilt() throws {
        let builder = PacketBuilder(
            source: IPAddress("10.0.0.2")!, destination: IPAddress("10.0.0.1")!,
            transport: .icmp(.echoRequest(identifier: 7, sequence: 9)))
        var buffer = [UInt8](repeating: 0, count: 100)
        let payload = Array("ping".utf8)
        let n = buffer.withUnsafeMutableBytes { out in payload.withUnsafeBytes { builder.emit(into: out, at: 3, copying: $0) } }
        #expect(n == 32)
        try Array(buffer[3..<3 + n]).withUnsafeBytes { raw in
            let ip = try IPv4Packet(validating: raw)
            #expect(ip.ipProtocol == .icmp)
            let icmp = try ICMPv4Message(validating: ip.payload)
            #expect(icmp.type == .echoRequest)
            #expect(icmp.verifyChecksum())
            #expect(ICMPRepr.parse(icmp) == .echoRequest(identifier: 7, sequence: 9))
            #expect(Array(icmp.payload) == payload)
        }
    }
}
