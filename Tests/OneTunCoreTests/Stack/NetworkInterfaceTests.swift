import Testing
@_spi(OneTunInternals) @testable import OneTunCore

@Suite struct NetworkInterfaceTests {
    static let us4 = IPAddress("192.168.4.3")!
    static let peer4 = IPAddress("192.168.4.2")!
    static let us6 = IPAddress("fd00:4::3")!
    static let peer6 = IPAddress("fd00:4::2")!

    func packet(_ builder: PacketBuilder, payload: [UInt8] = []) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: builder.headerLength + payload.count)
        let n = buffer.withUnsafeMutableBytes { b in payload.withUnsafeBytes { builder.emit(into: b, at: 0, copying: $0) } }
        return Array(buffer[0..<n])
    }

    func poll(_ interface: NetworkInterface) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 2048)
        guard let n = buffer.withUnsafeMutableBytes({ interface.pollPacket(into: $0, now: .zero) }) else { return nil }
        return Array(buffer[0..<n])
    }

    func receive(_ interface: NetworkInterface, _ bytes: [UInt8]) -> NetworkInterface.Delivery {
        bytes.withUnsafeBytes { interface.receive(packet: $0, now: .zero) }
    }

    @Test(arguments: [(us4, peer4), (us6, peer6)])
    func answersEchoRequests(us: IPAddress, peer: IPAddress) throws {
        let interface = NetworkInterface(addresses: [Self.us4, Self.us6])
        let data = (0..<56).map { UInt8($0) }
        let request = packet(PacketBuilder(source: peer, destination: us, transport: .icmp(.echoRequest(identifier: 7, sequence: 9))), payload: data)
        #expect(receive(interface, request) == .consumed)
        let reply = try #require(poll(interface))
        #expect(poll(interface) == nil)
        // The reply comes back to the peer, from us, with the same id, sequence and data.
        let delivered = NetworkInterface(addresses: [peer])
        #expect(receive(delivered, reply) == .echoReply(source: us, identifier: 7, sequence: 9, size: 64))
        #expect(Array(reply.suffix(56)) == data)
        #expect(interface.stats.echoRequestsAnswered == 1)
    }

    @Test func resetsSegmentsForUnknownConnections() throws {
        let interface = NetworkInterface(addresses: [Self.us4])
        // A SYN without ACK: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>.
        let syn = TCPRepr(sourcePort: 40000, destinationPort: 80, sequenceNumber: 1000, flags: .syn, window: 65535)
        #expect(receive(interface, packet(PacketBuilder(source: Self.peer4, destination: Self.us4, transport: .tcp(syn)))) == .consumed)
        let reset = try #require(poll(interface))
        try reset.withUnsafeBytes { bytes in
            let ip = try IPPacket(validating: bytes)
            let segment = try TCPSegment(validating: ip.upperLayerPayload)
            #expect(segment.flags == [.rst, .ack])
            #expect(segment.sequenceNumber == 0 && segment.acknowledgmentNumber == 1001)
            #expect(segment.sourcePort == 80 && segment.destinationPort == 40000)
            #expect(segment.verifyChecksum(src: ip.source, dst: ip.destination))
        }
        // With ACK: <SEQ=SEG.ACK><CTL=RST>.
        let ack = TCPRepr(sourcePort: 40000, destinationPort: 80, sequenceNumber: 5, acknowledgmentNumber: 777, flags: .ack, window: 100)
        _ = receive(interface, packet(PacketBuilder(source: Self.peer4, destination: Self.us4, transport: .tcp(ack)), payload: [1, 2, 3]))
        let second = try #require(poll(interface))
        try second.withUnsafeBytes { bytes in
            let segment = try TCPSegment(validating: try IPPacket(validating: bytes).upperLayerPayload)
            #expect(segment.flags == .rst && segment.sequenceNumber == 777)
        }
        // Never a reset for a reset.
        let rst = TCPRepr(sourcePort: 40000, destinationPort: 80, sequenceNumber: 5, flags: .rst, window: 0)
        #expect(receive(interface, packet(PacketBuilder(source: Self.peer4, destination: Self.us4, transport: .tcp(rst)))) == .consumed)
        #expect(poll(interface) == nil)
        #expect(interface.stats.resetsSent == 2)
    }

    /// Behind a WireGuard session the TCP/UDP checksum is trusted (the AEAD tag authenticated the packet),
    /// as Linux's WireGuard does; a plain interface verifies it. ICMP and the IPv4 header are always checked.
    @Test func trustedChecksumsAreNotRecomputed() {
        var udp = packet(PacketBuilder(source: Self.peer4, destination: Self.us4, transport: .udp(UDPRepr(sourcePort: 53, destinationPort: 4000))), payload: [1, 2, 3, 4])
        udp[udp.count - 1] ^= 0xff
        let plain = NetworkInterface(addresses: [Self.us4])
        plain.hasUDP = true
        #expect(receive(plain, udp) == .dropped(.badChecksum))
        let trusting = NetworkInterface(addresses: [Self.us4])
        trusting.hasUDP = true
        trusting.trustsTransportChecksums = true
        guard case .udp(let arrival) = receive(trusting, udp) else {
            Issue.record("a trusted datagram was not passed up")
            return
        }
        #expect(arrival.payloadOffset == 28 && arrival.payloadLength == 4)
        #expect(arrival.source == UDPEndpoint(address: Self.peer4, port: 53))
        // IPv6 forbids a zero UDP checksum (RFC 8200 §8.1): refused even when trusted.
        var udp6 = packet(PacketBuilder(source: Self.peer6, destination: Self.us6, transport: .udp(UDPRepr(sourcePort: 53, destinationPort: 4000))), payload: [1, 2, 3, 4])
        udp6[46] = 0
        udp6[47] = 0
        let trusting6 = NetworkInterface(addresses: [Self.us6])
        trusting6.hasUDP = true
        trusting6.trustsTransportChecksums = true
        #expect(receive(trusting6, udp6) == .dropped(.badChecksum))
        var icmp = packet(PacketBuilder(source: Self.peer4, destination: Self.us4, transport: .icmp(.echoRequest(identifier: 1, sequence: 1))), payload: [1, 2])
        icmp[icmp.count - 1] ^= 0xff
        #expect(receive(trusting, icmp) == .dropped(.badChecksum))
    }

    @Test func dropsAreCounted() {
        let interface = NetworkInterface(addresses: [Self.us4])
        // Not for us.
        let other = packet(PacketBuilder(source: Self.peer4, destination: IPAddress("192.168.4.9")!, transport: .icmp(.echoRequest(identifier: 1, sequence: 1))))
        #expect(receive(interface, other) == .dropped(.notForUs))
        // Bad transport checksum.
        var corrupt = packet(PacketBuilder(source: Self.peer4, destination: Self.us4, transport: .icmp(.echoRequest(identifier: 1, sequence: 1))), payload: [1, 2, 3, 4])
        corrupt[corrupt.count - 1] ^= 0xff
        #expect(receive(interface, corrupt) == .dropped(.badChecksum))
        // A fragment (MF set): counted apart from garbage.
        var fragment = packet(PacketBuilder(source: Self.peer4, destination: Self.us4, transport: .icmp(.echoRequest(identifier: 1, sequence: 1)), dontFragment: false))
        fragment[6] |= 0x20
        var sum: UInt32 = 0
        fragment[10] = 0; fragment[11] = 0
        for i in stride(from: 0, to: 20, by: 2) { sum += UInt32(fragment[i]) << 8 | UInt32(fragment[i + 1]) }
        while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
        fragment[10] = UInt8(~sum >> 8 & 0xff); fragment[11] = UInt8(~sum & 0xff)
        #expect(receive(interface, fragment) == .dropped(.fragment))
        // Garbage.
        #expect(receive(interface, [0x45, 0, 0]) == .dropped(.malformed(.truncated)) || interface.stats.droppedMalformed == 1)
        #expect(interface.stats.droppedNotForUs == 1 && interface.stats.droppedBadChecksum == 1 && interface.stats.droppedFragments == 1)
        #expect(interface.stats.droppedMalformed == 1)
    }

    @Test func replyQueueIsBounded() {
        let interface = NetworkInterface(addresses: [Self.us4])
        let request = packet(PacketBuilder(source: Self.peer4, destination: Self.us4, transport: .icmp(.echoRequest(identifier: 1, sequence: 1))))
        for _ in 0..<(NetworkInterface.maxQueuedReplies + 10) { _ = receive(interface, request) }
        #expect(interface.stats.droppedReplyQueueFull == 10)
        var sent = 0
        while poll(interface) != nil { sent += 1 }
        #expect(sent == NetworkInterface.maxQueuedReplies)
    }
}
