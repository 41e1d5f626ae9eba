import Testing
@_spi(OneTunInternals) @testable import OneTunCore

/// A small in-process fuzzer over the seed packets: mutated packets never trap, and anything that parses
/// rebuilds to something that parses back to the same values (smoltcp fuzz/packet_parser.rs's property).
@Suite struct NetMutationTests {
    static var seeds: [[UInt8]] {
        var seeds = NetSeeds.all
        seeds.append(netIPv6Packet(next: 0, [60, 0, 1, 0, 5, 2, 0, 0, 6, 0, 1, 4, 0, 0, 0, 0] + Array(NetSeeds.ipv4TCPSyn[20...])))
        seeds.append(netIPv6Packet(next: 17, NetIPv6AndICMPTests.udp))
        var icmpError: [UInt8] = netHex("45000038 0000 4000 40 01 0000 0a000001 0a000002") + [3, 3, 0, 0, 0, 0, 0, 0]
            + Array(NetSeeds.ipv4UDP[0..<28])
        netFixIPv4HeaderChecksum(&icmpError)
        seeds.append(icmpError)
        return seeds
    }

    @Test func mutatedPacketsNeverTrapAndRoundTrip() throws {
        var rng = NetTestRNG(seed: 0xF022)
        let seeds = Self.seeds
        var parsed = 0
        for iteration in 0..<40_000 {
            var p = seeds[iteration % seeds.count]
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                switch Int.random(in: 0..<6, using: &rng) {
                case 0, 1:
                    if !p.isEmpty { p[Int.random(in: 0..<p.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
                case 2:
                    if !p.isEmpty { p[Int.random(in: 0..<p.count, using: &rng)] ^= 1 << UInt8.random(in: 0...7, using: &rng) }
                case 3: p.removeLast(Int.random(in: 0...min(p.count, 8), using: &rng))
                case 4: p.append(contentsOf: (0..<Int.random(in: 1...8, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
                default:
                    // Keep length fields consistent sometimes so deeper layers get exercised.
                    if p.count >= 40, p[0] >> 4 == 6 { netFixIPv6PayloadLength(&p) }
                    if p.count >= 20, p[0] >> 4 == 4 {
                        netFixIPv4TotalLength(&p)
                        if Int(p[0] & 0xF) * 4 <= p.count { netFixIPv4HeaderChecksum(&p) }
                    }
                }
            }
            try p.withUnsafeBytes { raw in
                netTouchEveryAccessor(raw)
                guard let decoded = netDecode(raw) else { return }
                parsed += 1
                let rebuilt = netEncode(decoded)
                #expect(rebuilt.withUnsafeBytes { netDecode($0) } == decoded, "iteration \(iteration)")
                try netExpectChecksumsVerify(rebuilt)
            }
        }
        #expect(parsed > 1000)
    }
}

/// Reads every accessor of whatever views accept `raw`, at every layer, so a wrong bound traps here.
func netTouchEveryAccessor(_ raw: UnsafeRawBufferPointer) {
    var sink = 0
    func touchTransport(_ proto: IPProtocol, _ upper: UnsafeRawBufferPointer, _ src: IPAddress, _ dst: IPAddress) {
        if let t = try? TCPSegment(validating: upper) {
            sink &+= Int(t.sourcePort) &+ Int(t.destinationPort) &+ Int(t.sequenceNumber) &+ Int(t.acknowledgmentNumber)
            sink &+= t.headerLength &+ Int(t.flags.rawValue) &+ Int(t.window) &+ Int(t.checksum) &+ Int(t.urgentPointer)
            sink &+= t.payload.count &+ t.sequenceLength &+ (t.verifyChecksum(src: src, dst: dst) ? 1 : 0)
            for option in t.options { if case .unknown(_, let n) = option { sink &+= n } }
            _ = TCPRepr.parse(t).headerLength
        }
        if let u = try? UDPDatagram(validating: upper) {
            sink &+= Int(u.sourcePort) &+ Int(u.destinationPort) &+ u.length &+ Int(u.checksum) &+ u.payload.count
            sink &+= u.verifyChecksum(src: src, dst: dst) ? 1 : 0
        }
        if let m = try? ICMPv4Message(validating: upper) {
            sink &+= Int(m.type.rawValue) &+ Int(m.code) &+ Int(m.checksum) &+ Int(m.restOfHeader) &+ Int(m.identifier)
            sink &+= Int(m.sequenceNumber) &+ Int(m.nextHopMTU) &+ m.payload.count &+ (m.verifyChecksum() ? 1 : 0)
            sink &+= m.originalPacket?.sourcePort.map(Int.init) ?? 0
            _ = ICMPRepr.parse(m)
        }
        if let m = try? ICMPv6Message(validating: upper) {
            sink &+= Int(m.type.rawValue) &+ Int(m.code) &+ Int(m.checksum) &+ Int(m.mtu) &+ Int(m.pointer) &+ m.payload.count
            sink &+= m.originalPacket?.destinationPort.map(Int.init) ?? 0
            if case .v6(let s) = src, case .v6(let d) = dst { sink &+= m.verifyChecksum(src: s, dst: d) ? 1 : 0 }
            _ = ICMPRepr.parse(m)
        }
    }
    if let p = try? IPv4Packet(validating: raw, verifyChecksum: false) {
        sink &+= Int(p.version) &+ p.headerLength &+ Int(p.typeOfService) &+ p.totalLength &+ Int(p.identification)
        sink &+= p.fragmentOffset &+ Int(p.timeToLive) &+ Int(p.headerChecksum) &+ p.options.count &+ p.payload.count
        sink &+= Int(p.dscp) &+ Int(p.ecn) &+ (p.moreFragments ? 1 : 0) &+ p.header.count
        _ = IPv4Repr.parse(p)
        touchTransport(p.ipProtocol, p.payload, .v4(p.source), .v4(p.destination))
    }
    if let p = try? IPv6Packet(validating: raw) {
        sink &+= Int(p.version) &+ Int(p.trafficClass) &+ Int(p.flowLabel) &+ p.payloadLength &+ Int(p.nextHeader.rawValue)
        sink &+= Int(p.hopLimit) &+ p.payload.count &+ p.upperLayerPayload.count
        _ = IPv6Repr.parse(p)
        touchTransport(p.upperLayerProtocol, p.upperLayerPayload, .v6(p.source), .v6(p.destination))
    }
    // Transport views straight over the raw bytes too.
    touchTransport(.tcp, raw, .v4(.unspecified), .v4(.unspecified))
    touchTransport(.tcp, raw, .v6(.unspecified), .v6(.unspecified))
    #expect(sink != Int.min)
}
