import Testing
@_spi(OneTunInternals) @testable import OneTunCore

/// A TCP header (20 bytes, no checksum) with `options` appended and Data Offset set to fit them.
func netTCPHeader(options: [UInt8], payload: [UInt8] = []) -> [UInt8] {
    precondition(options.count % 4 == 0)
    var h = netHex("04d2 0050 00000001 00000000 0002 ffff 0000 0000")
    h[12] = UInt8((20 + options.count) / 4) << 4
    return h + options + payload
}

@Suite struct NetTCPOptionTests {
    @Test func malformedOptionsRejected() {
        let cases: [(String, [UInt8])] = [
            ("MSS length 3", [2, 3, 5, 0]),
            ("MSS length 5", [2, 5, 5, 0xB4, 0, 0, 0, 0]),
            ("WS length 4", [3, 4, 7, 0]),
            ("SACK-permitted length 3", [4, 3, 0, 0]),
            ("timestamps length 8", [8, 8, 0, 0, 0, 0, 0, 0]),
            ("SACK with no blocks", [5, 2, 0, 0]),
            ("SACK length 10 + 1", [5, 11] + [UInt8](repeating: 0, count: 10)),
            ("SACK with five blocks", [5, 42] + [UInt8](repeating: 0, count: 38)),  // 40 bytes area
            ("length 0", [30, 0, 0, 0]),
            ("length 1", [30, 1, 0, 0]),
            ("length past the end", [1, 1, 30, 3]),
            ("kind without length byte", [1, 1, 1, 30]),
            ("unknown past the end", [30, 40, 0, 0]),
        ]
        for (name, options) in cases {
            netExpectError(.malformed, netTCPHeader(options: options), "\(name)") { _ = try TCPSegment(validating: $0) }
            options.withUnsafeBytes { raw in
                // The Sequence form stops quietly at the bad option.
                var it = TCPOptions(raw)
                while it.next() != nil {}
            }
        }
    }

    @Test func headerLengthErrors() {
        var h = netTCPHeader(options: [])
        h[12] = 4 << 4
        netExpectError(.malformed, h) { _ = try TCPSegment(validating: $0) }
        h[12] = 6 << 4
        netExpectError(.truncated, h) { _ = try TCPSegment(validating: $0) }
    }

    @Test func unknownSkippedAndEndOfListEnds() throws {
        // unknown kind 30 (4 bytes), NOP, MSS, EOL, then garbage that must not be read as options.
        let options: [UInt8] = [30, 4, 0xAA, 0xBB, 1, 2, 4, 0x05, 0xDC, 0, 0xFF, 0xFF]
        try netTCPHeader(options: options, payload: [9, 9]).withUnsafeBytes { raw in
            let seg = try TCPSegment(validating: raw)
            #expect(Array(seg.options) == [
                .unknown(kind: TCPOptionKind(rawValue: 30), length: 4), .noOperation, .maxSegmentSize(1500), .endOfList,
            ])
            #expect(Array(seg.payload) == [9, 9])
            let repr = TCPRepr.parse(seg)
            #expect(repr.maxSegmentSize == 1500)
            #expect(repr.windowScale == nil && !repr.sackPermitted && repr.timestamps == nil && repr.sackBlocks.isEmpty)
        }
    }

    @Test func sackBlocksAndClampedWindowScale() throws {
        let options: [UInt8] =
            [1, 1, 5, 34]
            + netHex("00000010 00000020 00000030 00000040 00000050 00000060 00000070 00000080")
            + [1, 3, 3, 15]
        try netTCPHeader(options: options).withUnsafeBytes { raw in
            let repr = TCPRepr.parse(try TCPSegment(validating: raw))
            #expect(Array(repr.sackBlocks) == [
                TCPSackBlock(left: 0x10, right: 0x20), TCPSackBlock(left: 0x30, right: 0x40),
                TCPSackBlock(left: 0x50, right: 0x60), TCPSackBlock(left: 0x70, right: 0x80),
            ])
            #expect(repr.windowScale == 14)  // RFC 7323 §2.3
        }
    }

    @Test func alignedLayoutLikeLinux() {
        var repr = TCPRepr(
            sourcePort: 1, destinationPort: 2, sequenceNumber: 3, flags: .syn, window: 4, maxSegmentSize: 1460,
            windowScale: 7, sackPermitted: true, timestamps: TCPTimestamps(value: 1, echoReply: 0))
        #expect(repr.headerLength == 40)
        var out = [UInt8](repeating: 0xEE, count: 40)
        out.withUnsafeMutableBytes { _ = repr.emit(into: $0, src: .v4(.loopback), dst: .v4(.loopback)) }
        #expect(Array(out[20...]) == netHex("020405b4 01030307 0402080a 00000001 00000000"))

        // ACK with timestamps and three SACK blocks: 12 + 28 = 40, aligned.
        repr = TCPRepr(
            sourcePort: 1, destinationPort: 2, sequenceNumber: 3, acknowledgmentNumber: 4, flags: .ack, window: 5,
            sackBlocks: [TCPSackBlock(left: 1, right: 2), TCPSackBlock(left: 3, right: 4), TCPSackBlock(left: 5, right: 6)],
            timestamps: TCPTimestamps(value: 7, echoReply: 8))
        #expect(repr.headerLength == 60)
        #expect(repr.optionLayout.aligned)

        // A fourth block does not fit with timestamps: it is left out.
        repr.sackBlocks.append(TCPSackBlock(left: 9, right: 10))
        #expect(repr.headerLength == 60)
        #expect(repr.optionLayout.sackCount == 3)
    }

    /// MSS + SACK-permitted + four blocks fit only packed: 4 + 2 + 34 = 40.
    @Test func packedLayoutWhenAlignedDoesNotFit() throws {
        let repr = TCPRepr(
            sourcePort: 1, destinationPort: 2, sequenceNumber: 3, flags: .ack, window: 5, maxSegmentSize: 1400,
            sackPermitted: true,
            sackBlocks: [
                TCPSackBlock(left: 1, right: 2), TCPSackBlock(left: 3, right: 4), TCPSackBlock(left: 5, right: 6),
                TCPSackBlock(left: 7, right: 8),
            ])
        #expect(!repr.optionLayout.aligned)
        #expect(repr.headerLength == 60)
        var out = [UInt8](repeating: 0xEE, count: 63)
        try out.withUnsafeMutableBytes { buf in
            repr.emit(into: buf, src: .v6(.loopback), dst: .v6(.loopback))
            let seg = try TCPSegment(validating: UnsafeRawBufferPointer(buf))
            #expect(TCPRepr.parse(seg) == repr)
            #expect(seg.payload.count == 3)
            #expect(seg.verifyChecksum(src: .v6(.loopback), dst: .v6(.loopback)))
        }
    }

    @Test func sackBlocksInline() {
        var blocks = TCPSackBlocks()
        #expect(blocks.isEmpty)
        for i in 0..<6 { _ = blocks.append(TCPSackBlock(left: UInt32(i), right: UInt32(i + 1))) }
        #expect(blocks.count == 4)
        #expect(blocks.isFull)
        #expect(blocks[3] == TCPSackBlock(left: 3, right: 4))
        blocks.truncate(to: 2)
        #expect(Array(blocks) == [TCPSackBlock(left: 0, right: 1), TCPSackBlock(left: 1, right: 2)])
        #expect(blocks == [TCPSackBlock(left: 0, right: 1), TCPSackBlock(left: 1, right: 2)])
        #expect(MemoryLayout<TCPRepr>.size <= 96)
        #expect(_isPOD(TCPRepr.self))
    }

    @Test func randomTCPReprsRoundTripAlone() throws {
        var rng = NetTestRNG(seed: 99)
        for _ in 0..<3000 {
            let repr = netRandomTCPRepr(&rng)
            let payload = Int.random(in: 0...20, using: &rng)
            var out = [UInt8](repeating: 0, count: repr.headerLength + payload)
            try out.withUnsafeMutableBytes { buf in
                let hl = repr.emit(into: buf, src: .v4(IPv4Address(1, 2, 3, 4)), dst: .v4(IPv4Address(5, 6, 7, 8)))
                #expect(hl == repr.headerLength)
                let seg = try TCPSegment(validating: UnsafeRawBufferPointer(buf))
                #expect(TCPRepr.parse(seg) == repr)
                #expect(seg.verifyChecksum(src: .v4(IPv4Address(1, 2, 3, 4)), dst: .v4(IPv4Address(5, 6, 7, 8))))
            }
        }
    }
}
