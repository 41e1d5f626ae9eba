import Testing
@_spi(OneTunInternals) @testable import OneTunCore

@Suite struct NetPacketTests {
    @Test func ipv4TCPSynFields() throws {
        try NetSeeds.ipv4TCPSyn.withUnsafeBytes { raw in
            let ip = try IPv4Packet(validating: raw)
            #expect(ip.version == 4)
            #expect(ip.headerLength == 20)
            #expect(ip.totalLength == 60)
            #expect(ip.identification == 0x1C46)
            #expect(ip.dontFragment && !ip.moreFragments && ip.fragmentOffset == 0)
            #expect(ip.timeToLive == 64)
            #expect(ip.ipProtocol == .tcp)
            #expect(ip.headerChecksum == 0xB1E6)
            #expect(ip.source == IPv4Address("172.16.10.99"))
            #expect(ip.destination == IPv4Address("172.16.10.12"))
            #expect(ip.options.count == 0)
            #expect(ip.payload.count == 40)

            let tcp = try TCPSegment(validating: ip.payload)
            #expect(tcp.sourcePort == 41910)
            #expect(tcp.destinationPort == 80)
            #expect(tcp.sequenceNumber == 0x6FC4_E1A3)
            #expect(tcp.acknowledgmentNumber == 0)
            #expect(tcp.headerLength == 40)
            #expect(tcp.flags == .syn)
            #expect(tcp.window == 64240)
            #expect(tcp.checksum == 0x9C3A)
            #expect(tcp.payload.count == 0)
            #expect(tcp.sequenceLength == 1)
            #expect(tcp.verifyChecksum(src: .v4(ip.source), dst: .v4(ip.destination)))
            #expect(!tcp.verifyChecksum(src: .v4(ip.destination), dst: .v4(IPv4Address(1, 1, 1, 1))))
            #expect(Array(tcp.options) == [
                .maxSegmentSize(1460), .sackPermitted, .timestamps(TCPTimestamps(value: 0x009C_4E3A, echoReply: 0)),
                .noOperation, .windowScale(7),
            ])

            let repr = TCPRepr.parse(tcp)
            #expect(repr == TCPRepr(
                sourcePort: 41910, destinationPort: 80, sequenceNumber: 0x6FC4_E1A3, flags: .syn, window: 64240,
                maxSegmentSize: 1460, windowScale: 7, sackPermitted: true,
                timestamps: TCPTimestamps(value: 0x009C_4E3A, echoReply: 0)))
            #expect(repr.headerLength == 40)

            let v4 = IPv4Repr.parse(ip)
            #expect(v4 == IPv4Repr(
                source: ip.source, destination: ip.destination, ipProtocol: .tcp, payloadLength: 40,
                timeToLive: 64, identification: 0x1C46))
        }
    }

    @Test func ipv6ICMPEchoFields() throws {
        try NetSeeds.ipv6ICMPEcho.withUnsafeBytes { raw in
            let ip = try IPv6Packet(validating: raw)
            #expect(ip.version == 6)
            #expect(ip.trafficClass == 0)
            #expect(ip.flowLabel == 0x12345)
            #expect(ip.payloadLength == 16)
            #expect(ip.nextHeader == .icmpv6)
            #expect(ip.upperLayerProtocol == .icmpv6)
            #expect(ip.upperLayerOffset == 40)
            #expect(ip.hopLimit == 64)
            #expect(ip.source == IPv6Address("2001:db8::1"))
            #expect(ip.destination == IPv6Address("2001:db8::2"))

            let icmp = try ICMPv6Message(validating: ip.upperLayerPayload)
            #expect(icmp.type == .echoRequest)
            #expect(icmp.code == 0)
            #expect(icmp.checksum == 0x8075)
            #expect(icmp.identifier == 0x1234)
            #expect(icmp.sequenceNumber == 1)
            #expect(Array(icmp.payload) == Array("abcdefgh".utf8))
            #expect(icmp.verifyChecksum(src: ip.source, dst: ip.destination))
            #expect(icmp.verifyChecksum(src: ip.destination, dst: ip.source))  // the sum is symmetric in the addresses
            #expect(!icmp.verifyChecksum(src: ip.source, dst: .loopback))
            #expect(icmp.originalPacket == nil)
            #expect(ICMPRepr.parse(icmp) == .echoRequest(identifier: 0x1234, sequence: 1))

            #expect(IPv6Repr.parse(ip) == IPv6Repr(
                source: ip.source, destination: ip.destination, nextHeader: .icmpv6, payloadLength: 16,
                flowLabel: 0x12345))
        }
    }

    @Test func ipv4UDPFields() throws {
        try NetSeeds.ipv4UDP.withUnsafeBytes { raw in
            let packet = try IPPacket(validating: raw)
            #expect(packet.source == IPAddress("192.168.1.2"))
            #expect(packet.destination == IPAddress("8.8.8.8"))
            #expect(packet.upperLayerProtocol == .udp)
            let udp = try UDPDatagram(validating: packet.upperLayerPayload)
            #expect(udp.sourcePort == 53000)
            #expect(udp.destinationPort == 53)
            #expect(udp.length == 37)
            #expect(udp.checksum == 0xE370)
            #expect(udp.payload.count == 29)
            #expect(udp.payload[0] == 0xAB)
            #expect(udp.verifyChecksum(src: packet.source, dst: packet.destination))
            #expect(!udp.verifyChecksum(src: packet.destination, dst: .v4(.loopback)))
            #expect(UDPRepr.parse(udp) == UDPRepr(sourcePort: 53000, destinationPort: 53))
        }
    }

    @Test func udpZeroChecksumMeansNoneOnlyOverIPv4() throws {
        var bytes = NetSeeds.ipv4UDP
        bytes[26] = 0
        bytes[27] = 0
        try bytes.withUnsafeBytes { raw in
            let udp = try UDPDatagram(validating: raw.netSlice(from: 20))
            #expect(udp.verifyChecksum(src: .v4(.unspecified), dst: .v4(.broadcast)))
            #expect(!udp.verifyChecksum(src: .v6(.loopback), dst: .v6(.loopback)))
        }
    }

    /// Link padding after Total Length / Payload Length is not part of the packet.
    @Test func trailingBytesAreNotThePacket() throws {
        for seed in NetSeeds.all {
            let padded = seed + [0, 0, 0, 0, 0, 0]
            try padded.withUnsafeBytes { raw in
                let p = try IPPacket(validating: raw)
                #expect(p.bytes.count == seed.count)
            }
        }
    }

    /// Every strict prefix of a valid packet is refused with an error, never a trap.
    @Test func everyTruncationIsRejected() {
        for seed in NetSeeds.all {
            for length in 0..<seed.count {
                let prefix = Array(seed[0..<length])
                netExpectSomeError(prefix, "length \(length)") { _ = try IPPacket(validating: $0) }
            }
        }
        // Transport headers on their own: any prefix shorter than the header.
        let tcp = Array(NetSeeds.ipv4TCPSyn[20...])
        for length in 0..<40 {
            netExpectSomeError(Array(tcp[0..<length])) { _ = try TCPSegment(validating: $0) }
        }
        let udp = Array(NetSeeds.ipv4UDP[20...])
        for length in 0..<udp.count {
            netExpectSomeError(Array(udp[0..<length])) { _ = try UDPDatagram(validating: $0) }
        }
        let icmp = Array(NetSeeds.ipv6ICMPEcho[40...])
        for length in 0..<8 {
            netExpectSomeError(Array(icmp[0..<length])) { _ = try ICMPv6Message(validating: $0) }
            netExpectSomeError(Array(icmp[0..<length])) { _ = try ICMPv4Message(validating: $0) }
        }
    }

    @Test func ipv4HeaderErrors() {
        func check(_ bytes: [UInt8], _ error: WireError, _ comment: Comment) {
            netExpectError(error, bytes, comment) { _ = try IPv4Packet(validating: $0) }
        }
        var p = NetSeeds.ipv4UDP
        p[11] ^= 1
        check(p, .badChecksum, "checksum")

        p = NetSeeds.ipv4UDP
        p[0] = 0x44
        netFixIPv4HeaderChecksum(&p)
        check(p, .malformed, "IHL 4")

        p = NetSeeds.ipv4UDP
        p[0] = 0x55
        check(p, .badVersion, "version 5")

        p = NetSeeds.ipv4UDP
        p[2] = 0
        p[3] = 19
        netFixIPv4HeaderChecksum(&p)
        check(p, .malformed, "total length below header")

        p = NetSeeds.ipv4UDP
        p[0] = 0x4F  // 60-byte header in a 57-byte packet
        check(p, .truncated, "IHL past the buffer")

        p = NetSeeds.ipv4UDP
        p[6] = 0x20  // MF
        netFixIPv4HeaderChecksum(&p)
        check(p, .fragment, "more fragments")

        p = NetSeeds.ipv4UDP
        p[6] = 0x00
        p[7] = 0xB9  // offset 185 × 8
        netFixIPv4HeaderChecksum(&p)
        check(p, .fragment, "non-zero offset")

        p = NetSeeds.ipv4UDP
        p[11] ^= 1
        p.withUnsafeBytes { raw in
            #expect((try? IPv4Packet(validating: raw, verifyChecksum: false)) != nil)
        }
    }

    /// IPv4 options are skipped: the payload starts after IHL × 4.
    @Test func ipv4OptionsSkipped() throws {
        var p = Array(NetSeeds.ipv4UDP[0..<20]) + [0x94, 0x04, 0x00, 0x00] + Array(NetSeeds.ipv4UDP[20...])
        p[0] = 0x46
        netFixIPv4TotalLength(&p)
        netFixIPv4HeaderChecksum(&p)
        try p.withUnsafeBytes { raw in
            let ip = try IPv4Packet(validating: raw)
            #expect(ip.headerLength == 24)
            #expect(Array(ip.options) == [0x94, 0x04, 0x00, 0x00])
            let udp = try UDPDatagram(validating: ip.payload)
            #expect(udp.destinationPort == 53)
            #expect(udp.verifyChecksum(src: .v4(ip.source), dst: .v4(ip.destination)))
            // Re-emitted without the options, the UDP checksum (no IP header in it) is unchanged.
            let decoded = try #require(netDecode(raw))
            let rebuilt = netEncode(decoded)
            #expect(rebuilt.count == NetSeeds.ipv4UDP.count)
            #expect(Array(rebuilt[20...]) == Array(NetSeeds.ipv4UDP[20...]))
        }
    }

    /// The UDP seed rebuilt from its representation is byte-identical (no options to lay out differently).
    @Test func rebuildIsByteIdentical() throws {
        for seed in [NetSeeds.ipv4UDP, NetSeeds.ipv6ICMPEcho] {
            let decoded = try #require(seed.withUnsafeBytes { netDecode($0) })
            #expect(netEncode(decoded) == seed)
        }
    }

    @Test func parseEmitReparseRoundTrips() throws {
        for seed in NetSeeds.all {
            let decoded = try #require(seed.withUnsafeBytes { netDecode($0) })
            let rebuilt = netEncode(decoded)
            #expect(rebuilt.withUnsafeBytes { netDecode($0) } == decoded)
            try netExpectChecksumsVerify(rebuilt)
        }
    }

    /// Random headers of every kind, built and parsed back.
    @Test func randomReprsRoundTrip() throws {
        var rng = NetTestRNG(seed: 2024)
        for round in 0..<2000 {
            let v6 = Bool.random(using: &rng)
            let src: IPAddress = v6
                ? .v6(IPv6Address(high: rng.next(), low: rng.next())) : .v4(IPv4Address(rawValue: UInt32.random(in: 0...UInt32.max, using: &rng)))
            let dst: IPAddress = v6
                ? .v6(IPv6Address(high: rng.next(), low: rng.next())) : .v4(IPv4Address(rawValue: UInt32.random(in: 0...UInt32.max, using: &rng)))
            let transport: TransportRepr
            switch round % 3 {
            case 0: transport = .tcp(netRandomTCPRepr(&rng))
            case 1: transport = .udp(UDPRepr(sourcePort: UInt16.random(in: 0...65535, using: &rng), destinationPort: UInt16.random(in: 0...65535, using: &rng)))
            default:
                let id = UInt16.random(in: 0...65535, using: &rng)
                let seq = UInt16.random(in: 0...65535, using: &rng)
                transport = .icmp(Bool.random(using: &rng) ? .echoRequest(identifier: id, sequence: seq) : .echoReply(identifier: id, sequence: seq))
            }
            var builder = PacketBuilder(
                source: src, destination: dst, transport: transport, hopLimit: UInt8.random(in: 0...255, using: &rng),
                trafficClass: UInt8.random(in: 0...255, using: &rng), identification: UInt16.random(in: 0...65535, using: &rng),
                dontFragment: Bool.random(using: &rng), flowLabel: UInt32.random(in: 0...0xFFFFF, using: &rng))
            if v6 {
                builder.identification = 0
                builder.dontFragment = true
            } else {
                builder.flowLabel = 0
            }
            let payload = (0..<Int.random(in: 0...100, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let original = NetDecoded(builder: builder, payload: payload)
            let bytes = netEncode(original)
            let decoded = bytes.withUnsafeBytes { netDecode($0) }
            #expect(decoded == original, "round \(round)")
            try netExpectChecksumsVerify(bytes)
        }
    }

    /// Payload already in place: the builder writes headers around it and leaves it alone.
    @Test func builderWithPayloadInPlace() throws {
        let tcp = TCPRepr(
            sourcePort: 1234, destinationPort: 80, sequenceNumber: 1, acknowledgmentNumber: 2, flags: [.ack, .psh],
            window: 512, timestamps: TCPTimestamps(value: 5, echoReply: 6))
        let builder = PacketBuilder(
            source: IPAddress("10.0.0.1")!, destination: IPAddress("10.0.0.2")!, transport: .tcp(tcp))
        #expect(builder.headerLength == 20 + 32)
        var buffer = [UInt8](repeating: 0, count: 16 + 52 + 5 + 32)
        for i in 0..<5 { buffer[16 + 52 + i] = UInt8(ascii: "h") + UInt8(i) }
        let length = buffer.withUnsafeMutableBytes { builder.emit(into: $0, at: 16, payloadLength: 5) }
        #expect(length == 57)
        let packet = Array(buffer[16..<16 + length])
        try netExpectChecksumsVerify(packet)
        let decoded = try #require(packet.withUnsafeBytes { netDecode($0) })
        #expect(decoded.payload == Array("hijkl".utf8))
        #expect(decoded.builder == builder)
        #expect(buffer[0..<16].allSatisfy { $0 == 0 })
    }
}

func netRandomTCPRepr(_ rng: inout NetTestRNG) -> TCPRepr {
    var repr = TCPRepr(
        sourcePort: UInt16.random(in: 0...65535, using: &rng), destinationPort: UInt16.random(in: 0...65535, using: &rng),
        sequenceNumber: UInt32.random(in: 0...UInt32.max, using: &rng),
        acknowledgmentNumber: UInt32.random(in: 0...UInt32.max, using: &rng),
        flags: TCPFlags(rawValue: UInt16.random(in: 0...0x1FF, using: &rng)), window: UInt16.random(in: 0...65535, using: &rng),
        urgentPointer: UInt16.random(in: 0...65535, using: &rng))
    if Bool.random(using: &rng) { repr.maxSegmentSize = UInt16.random(in: 0...65535, using: &rng) }
    if Bool.random(using: &rng) { repr.windowScale = UInt8.random(in: 0...14, using: &rng) }
    repr.sackPermitted = Bool.random(using: &rng)
    if Bool.random(using: &rng) {
        repr.timestamps = TCPTimestamps(value: UInt32.random(in: 0...UInt32.max, using: &rng), echoReply: UInt32.random(in: 0...UInt32.max, using: &rng))
    }
    // Only as many SACK blocks as the options area holds with the others present.
    for _ in 0..<Int.random(in: 0...4, using: &rng) {
        var trial = repr
        trial.sackBlocks.append(TCPSackBlock(left: UInt32.random(in: 0...UInt32.max, using: &rng), right: UInt32.random(in: 0...UInt32.max, using: &rng)))
        if trial.optionLayout.sackCount == trial.sackBlocks.count { repr = trial }
    }
    return repr
}

/// Checks the IP header checksum and the transport checksum of a built packet.
func netExpectChecksumsVerify(_ packet: [UInt8]) throws {
    try packet.withUnsafeBytes { raw in
        let ip = try IPPacket(validating: raw)
        let upper = ip.upperLayerPayload
        switch ip.upperLayerProtocol {
        case .tcp: #expect(try TCPSegment(validating: upper).verifyChecksum(src: ip.source, dst: ip.destination))
        case .udp:
            let udp = try UDPDatagram(validating: upper)
            #expect(udp.checksum != 0)
            #expect(udp.verifyChecksum(src: ip.source, dst: ip.destination))
        case .icmp: #expect(try ICMPv4Message(validating: upper).verifyChecksum())
        case .icmpv6:
            guard case .v6(let s) = ip.source, case .v6(let d) = ip.destination else {
                Issue.record("ICMPv6 over IPv4")
                return
            }
            #expect(try ICMPv6Message(validating: upper).verifyChecksum(src: s, dst: d))
        default: Issue.record("unexpected protocol \(ip.upperLayerProtocol)")
        }
    }
}
