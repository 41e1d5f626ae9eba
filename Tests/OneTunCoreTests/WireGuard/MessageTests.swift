import Testing
@_spi(OneTunInternals) @testable import OneTunCore

@Suite struct WireGuardMessageTests {
    /// Every message kind a real handshake produces, captured off the simulated link.
    func capturedMessages() -> [[UInt8]] {
        let pair = WireGuardPair(seed: 30) { _, b in b.handshakeLoadThreshold = 0 }
        var captured: [[UInt8]] = []
        pair.filter = { _, d in
            captured.append(d)
            return true
        }
        pair.send(fromA: true, simPacket(tag: 1))
        pair.run(seconds: 30) { pair.receivedByB.count == 1 }
        return captured
    }

    @Test func realMessagesParseWithTheirFields() throws {
        let messages = capturedMessages()
        let types = Set(messages.map { $0[0] })
        #expect(types == [1, 2, 3, 4])
        for m in messages {
            try m.withUnsafeBytes { bytes in
                let view = try WireGuardMessage(validating: bytes)
                #expect(view.type.rawValue == UInt32(m[0]))
                switch view.type {
                case .initiation:
                    #expect(m.count == 148)
                    #expect(view.senderIndex == UInt32(m[4]) | UInt32(m[5]) << 8 | UInt32(m[6]) << 16 | UInt32(m[7]) << 24)
                case .response:
                    #expect(m.count == 92)
                    #expect(view.receiverIndex == UInt32(m[8]) | UInt32(m[9]) << 8 | UInt32(m[10]) << 16 | UInt32(m[11]) << 24)
                case .cookieReply:
                    #expect(m.count == 64)
                case .transport:
                    #expect(m.count >= 32 && (m.count - 32) % 16 == 0)
                default:
                    Issue.record("unexpected type")
                }
            }
        }
    }

    @Test func everyTruncationAndExtensionIsRejected() {
        for m in capturedMessages() where m[0] != 4 {
            for length in 0..<m.count {
                let rejected = m.withUnsafeBytes { (try? WireGuardMessage(validating: UnsafeRawBufferPointer(rebasing: $0[0..<length]))) == nil }
                #expect(rejected, "type \(m[0]) truncated to \(length)")
            }
            let longer = m + [0]
            #expect(longer.withUnsafeBytes { (try? WireGuardMessage(validating: $0)) == nil })
        }
    }

    @Test func reservedBytesMustBeZero() {
        for m in capturedMessages() {
            var bad = m
            bad[2] = 1
            #expect(bad.withUnsafeBytes { (try? WireGuardMessage(validating: $0)) == nil })
        }
    }

    @Test func shortTransportIsRejected() {
        var m = [UInt8](repeating: 0, count: 31)
        m[0] = 4
        #expect(throws: WireGuardWireError.tooShort) { try m.withUnsafeBytes { _ = try WireGuardMessage(validating: $0) } }
    }

    @Test func tai64nOrdersLikeTime() {
        let a = TAI64N(unixNanoseconds: 1_700_000_000_000_000_000)
        let b = TAI64N(unixNanoseconds: 1_700_000_000_020_000_000)
        let c = TAI64N(unixNanoseconds: 1_700_000_001_000_000_000)
        #expect(a < b && b < c)
        // Whitening: times within one 2^24 ns step are equal.
        #expect(!(TAI64N(unixNanoseconds: 1_700_000_000_000_000_001) > a))
        var bytes = [UInt8](repeating: 0, count: 12)
        bytes.withUnsafeMutableBytes { c.write($0) }
        #expect(bytes.withUnsafeBytes { TAI64N($0) } == c)
        #expect(bytes[0] == 0x40)
    }
}
