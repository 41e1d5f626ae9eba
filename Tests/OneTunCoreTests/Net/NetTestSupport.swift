import Testing
@_spi(OneTunInternals) @testable import OneTunCore

/// Bytes from hex text; spaces and newlines are ignored.
func netHex(_ text: String) -> [UInt8] {
    let digits = text.utf8.filter { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\n") }
    precondition(digits.count % 2 == 0, "odd hex length")
    func value(_ c: UInt8) -> UInt8 {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: preconditionFailure("not hex")
        }
    }
    return stride(from: 0, to: digits.count, by: 2).map { value(digits[$0]) << 4 | value(digits[$0 + 1]) }
}

/// A seeded generator (SplitMix64) so every failure replays.
struct NetTestRNG: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// RFC 1071 the slow way: big-endian 16-bit words, a zero pad byte, end-around carry.
func netNaiveSum(_ bytes: [UInt8]) -> UInt32 {
    var sum: UInt32 = 0
    var i = 0
    while i < bytes.count {
        let hi = UInt32(bytes[i])
        let lo = i + 1 < bytes.count ? UInt32(bytes[i + 1]) : 0
        sum += hi << 8 | lo
        sum = (sum & 0xFFFF) + (sum >> 16)
        i += 2
    }
    return sum
}

func netNaiveChecksum(_ bytes: [UInt8]) -> UInt16 { ~UInt16(netNaiveSum(bytes)) }

/// Recomputes an IPv4 header checksum in place, independently of the code under test.
func netFixIPv4HeaderChecksum(_ packet: inout [UInt8]) {
    let headerLength = Int(packet[0] & 0x0F) * 4
    packet[10] = 0
    packet[11] = 0
    let sum = netNaiveChecksum(Array(packet[0..<headerLength]))
    packet[10] = UInt8(sum >> 8)
    packet[11] = UInt8(sum & 0xFF)
}

/// Sets an IPv6 packet's Payload Length from its size.
func netFixIPv6PayloadLength(_ packet: inout [UInt8]) {
    let n = packet.count - 40
    packet[4] = UInt8(n >> 8)
    packet[5] = UInt8(n & 0xFF)
}

/// Sets an IPv4 packet's Total Length from its size.
func netFixIPv4TotalLength(_ packet: inout [UInt8]) {
    packet[2] = UInt8(packet.count >> 8)
    packet[3] = UInt8(packet.count & 0xFF)
}

enum NetSeeds {
    /// IPv4 TCP SYN 172.16.10.99:41910 → 172.16.10.12:80 with Linux's options: MSS 1460, SACK-permitted,
    /// timestamps, NOP, window scale 7. IP checksum 0xb1e6 (the well-known example header), TCP 0x9c3a.
    static let ipv4TCPSyn = netHex("""
        4500003c1c4640004006b1e6ac100a63ac100a0c
        a3b600506fc4e1a300000000a002faf09c3a0000
        020405b40402080a009c4e3a0000000001030307
        """)

    /// IPv6 ICMPv6 echo request 2001:db8::1 → 2001:db8::2, flow label 0x12345, id 0x1234 seq 1, "abcdefgh".
    static let ipv6ICMPEcho = netHex("""
        6001234500103a40
        20010db8000000000000000000000001
        20010db8000000000000000000000002
        800080751234000161626364656667 68
        """)

    /// IPv4 UDP DNS query 192.168.1.2:53000 → 8.8.8.8:53 for example.com A.
    static let ipv4UDP = netHex("""
        4500003912344000401156c6c0a8010208080808
        cf0800350025e370
        abcd01000001000000000000076578616d706c6503636f6d0000010001
        """)

    static let all = [ipv4TCPSyn, ipv6ICMPEcho, ipv4UDP]
}

/// Everything a packet parses to: the builder that would rebuild it, and its payload.
struct NetDecoded: Equatable {
    var builder: PacketBuilder
    var payload: [UInt8]
}

/// Parses an IP packet down to its transport header (see `PacketBuilder.parse`), copying the payload.
func netDecode(_ bytes: UnsafeRawBufferPointer) -> NetDecoded? {
    guard let (builder, payload) = PacketBuilder.parse(bytes) else { return nil }
    return NetDecoded(builder: builder, payload: Array(payload))
}

/// Builds `decoded` at offset 16 of a fresh buffer (as the data path does) and returns the packet bytes.
func netEncode(_ decoded: NetDecoded) -> [UInt8] {
    var buffer = [UInt8](repeating: 0xEE, count: 16 + decoded.builder.headerLength + decoded.payload.count + 32)
    let length = buffer.withUnsafeMutableBytes { out in
        decoded.payload.withUnsafeBytes { decoded.builder.emit(into: out, at: 16, copying: $0) }
    }
    return Array(buffer[16..<16 + length])
}

/// Expects `parse` over `bytes` to throw exactly `error` (and never to trap).
func netExpectError(
    _ error: WireError, _ bytes: [UInt8], _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation,
    _ parse: (UnsafeRawBufferPointer) throws -> Void
) {
    bytes.withUnsafeBytes { raw in
        do {
            try parse(raw)
            Issue.record("expected \(error), but it parsed", sourceLocation: sourceLocation)
        } catch let thrown {
            #expect(thrown as? WireError == error, comment, sourceLocation: sourceLocation)
        }
    }
}

/// Expects `parse` over `bytes` to throw some `WireError` (and never to trap).
func netExpectSomeError(
    _ bytes: [UInt8], _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation,
    _ parse: (UnsafeRawBufferPointer) throws -> Void
) {
    bytes.withUnsafeBytes { raw in
        do {
            try parse(raw)
            Issue.record("expected an error, but it parsed", sourceLocation: sourceLocation)
        } catch {
            #expect(error is WireError, comment, sourceLocation: sourceLocation)
        }
    }
}
