import Testing
@_spi(OneTunInternals) @testable import OneTunCore

/// Two TunnelCores joined in memory (the harness of the in-memory benchmark and `make bench-instr`):
/// the stream arrives whole and unaltered, the run is deterministic, and UDP crosses both cores each way
/// with the payload handed out as a view and sealed from its queue slot.
@Suite struct BackToBackTests {
    @Test func aStreamArrivesWholeAndUnaltered() {
        let pair = BackToBackCores(seed: 7, verify: true)
        #expect(pair.transfer(bytes: 8 << 20, maxRounds: 100_000))
        #expect(pair.received == 8 << 20 && pair.sent == 8 << 20)
        #expect(pair.client.isEstablished && pair.server.isEstablished)
        let stats = pair.client.connection(pair.clientID!).stats
        #expect(stats.retransmittedSegments == 0 && stats.timeouts == 0)
        #expect(pair.sealAndOpen(count: 100))
    }

    @Test func theRunIsDeterministic() {
        let a = BackToBackCores(seed: 3, verify: false)
        let b = BackToBackCores(seed: 3, verify: false)
        #expect(a.transfer(bytes: 1 << 20) && b.transfer(bytes: 1 << 20))
        #expect(a.datagrams == b.datagrams && a.now == b.now)
    }

    @Test func alteredBytesAreCaught() {
        let pair = BackToBackCores(seed: 1, verify: true)
        var bytes = [UInt8](repeating: 0, count: 600)
        for i in bytes.indices { bytes[i] = UInt8((i + 5) % BackToBackCores.patternPeriod) }
        #expect(bytes.withUnsafeBytes { pair.matchesPattern($0, from: 5) })
        bytes[599] ^= 1
        #expect(!bytes.withUnsafeBytes { pair.matchesPattern($0, from: 5) })
    }

    @Test func udpCrossesBothCoresEachWay() {
        let pair = BackToBackCores(seed: 11, verify: false)
        #expect(pair.transfer(bytes: 1))  // the session is up
        let serverEnd = UDPEndpoint(address: pair.server.config.addresses[0], port: 53)
        var sizes: [Int] = [0, 1, 15, 16, 17, 1000, 1420 - 28]
        var sent = 0
        for size in sizes {
            let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ size) }
            #expect(payload.withUnsafeBytes { pair.client.sendDatagram(from: 4000, to: serverEnd, payload: $0) })
            sent += 1
        }
        // Over the MTU: refused and counted, not truncated.
        let tooBig = [UInt8](repeating: 1, count: 1420 - 27)
        #expect(!tooBig.withUnsafeBytes { pair.client.sendDatagram(from: 4000, to: serverEnd, payload: $0) })
        #expect(pair.client.stats.datagramsDropped == 1)
        #expect(pair.transfer(bytes: 1))  // a round or more: the datagrams cross
        var received: [[UInt8]] = []
        while let d = pair.server.pollDatagram() {
            #expect(d.source == UDPEndpoint(address: pair.client.config.addresses[0], port: 4000))
            #expect(d.destination == serverEnd)
            received.append(Array(d.payload))
        }
        #expect(received.count == sent)
        for (size, bytes) in zip(sizes, received) {
            #expect(bytes == (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ size) })
        }
        // And back, each payload a view valid until the next poll.
        sizes.reverse()
        for size in sizes {
            let payload = [UInt8](repeating: UInt8(size & 0xFF), count: size)
            #expect(payload.withUnsafeBytes { pair.server.sendDatagram(from: 53, to: UDPEndpoint(address: pair.client.config.addresses[0], port: 4000), payload: $0) })
        }
        #expect(pair.transfer(bytes: 1))
        var back: [Int] = []
        while let d = pair.client.pollDatagram() {
            #expect(d.payload.allSatisfy { $0 == UInt8(d.payload.count & 0xFF) })
            back.append(d.payload.count)
        }
        #expect(back == sizes)
        #expect(pair.client.pollDatagram() == nil)
    }
}
