import Testing
@_spi(OneTunInternals) @testable import OneTunCore

@Suite struct NetChecksumTests {
    /// RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
    @Test func rfc1071Example() {
        let bytes = netHex("0001f203f4f5f6f7")
        bytes.withUnsafeBytes { raw in
            #expect(Checksum.partialSum(raw) == 0xDDF2)
            #expect(Checksum.compute(raw) == ~UInt16(0xDDF2))
        }
        #expect(netNaiveSum(bytes) == 0xDDF2)
    }

    @Test func emptyAndZeros() {
        #expect(Checksum.compute(UnsafeRawBufferPointer(start: nil, count: 0)) == 0xFFFF)
        let zeros = [UInt8](repeating: 0, count: 77)
        zeros.withUnsafeBytes { #expect(Checksum.compute($0) == 0xFFFF) }
        let ones = [UInt8](repeating: 0xFF, count: 64)
        ones.withUnsafeBytes { #expect(Checksum.compute($0) == 0) }
    }

    /// Every length 0…300 at every start offset 0…7 against the byte-wise reference.
    @Test func matchesNaiveOnRandomBuffers() {
        var rng = NetTestRNG(seed: 0x5EED_C5)
        for length in 0...300 {
            var backing = [UInt8](repeating: 0, count: length + 8)
            for i in backing.indices { backing[i] = UInt8.random(in: 0...255, using: &rng) }
            // Make long runs of 0xFF sometimes, to exercise the carries.
            if length % 7 == 0 { for i in backing.indices where i % 3 != 0 { backing[i] = 0xFF } }
            for start in 0..<8 {
                let slice = Array(backing[start..<start + length])
                let expected = netNaiveChecksum(slice)
                backing.withUnsafeBytes { raw in
                    let got = Checksum.compute(raw.netSlice(start, start + length))
                    #expect(got == expected, "length \(length) start \(start)")
                }
            }
        }
    }

    /// Adding a buffer in pieces of any lengths, odd ones included, gives the same sum.
    @Test func incrementalPiecesOfAnyParity() {
        var rng = NetTestRNG(seed: 42)
        for _ in 0..<500 {
            let length = Int.random(in: 0...200, using: &rng)
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let expected = netNaiveChecksum(bytes)
            bytes.withUnsafeBytes { raw in
                var sum = Checksum()
                var at = 0
                while at < length {
                    let piece = Int.random(in: 1...min(13, length - at), using: &rng)
                    sum.add(raw.netSlice(at, at + piece))
                    at += piece
                }
                #expect(sum.finalize() == expected)
            }
        }
    }

    /// 16- and 32-bit fields added after an odd-length piece land on the right byte positions.
    @Test func fieldsAfterOddPiece() {
        let bytes: [UInt8] = [0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC, 0xDE]
        var sum = Checksum()
        bytes.withUnsafeBytes { sum.add($0.netSlice(0, 3)) }
        sum.add(UInt16(0x789A))
        sum.add(UInt8(0xBC))
        sum.add(UInt8(0xDE))
        #expect(sum.finalize() == netNaiveChecksum(bytes))

        var sum32 = Checksum()
        bytes.withUnsafeBytes { sum32.add($0.netSlice(0, 1)) }
        sum32.add(UInt32(0x3456_789A))
        bytes.withUnsafeBytes { sum32.add($0.netSlice(5, 7)) }
        #expect(sum32.finalize() == netNaiveChecksum(bytes))
    }

    @Test func ipv4PseudoHeader() {
        let src = IPv4Address(192, 168, 1, 2)
        let dst = IPv4Address(8, 8, 8, 8)
        let data: [UInt8] = [1, 2, 3, 4, 5]
        var sum = Checksum.pseudoHeader(src: src, dst: dst, protocol: .udp, length: 5)
        data.withUnsafeBytes { sum.add($0) }
        let explicit = netHex("c0a80102 08080808 0011 0005") + data
        #expect(sum.finalize() == netNaiveChecksum(explicit))
    }

    @Test func ipv6PseudoHeader() {
        let src = IPv6Address("2001:db8::1")!
        let dst = IPv6Address("fe80::abcd:1")!
        var sum = Checksum.pseudoHeader(src: .v6(src), dst: .v6(dst), protocol: .tcp, length: 0x12345)
        sum.add(UInt16(0xBEEF))
        let explicit = netHex("""
            20010db8000000000000000000000001 fe80000000000000000000000000abcd0001
            00012345 00000006 beef
            """)
        #expect(sum.finalize() == netNaiveChecksum(explicit))
    }
}

extension Checksum {
    /// Test helper: one byte (not part of the API; fields are 16 or 32 bits on the wire).
    fileprivate mutating func add(_ byte: UInt8) {
        withUnsafeBytes(of: byte) { add($0) }
    }
}
