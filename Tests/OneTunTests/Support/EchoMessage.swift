import Glibc

/// An ICMP echo request or reply inside an IPv4 or IPv6 packet, built and parsed by hand so the interop
/// tests check the tunnel against the peer's kernel without depending on the core's own packet code.
///
/// RFC 791 (IPv4 header), RFC 792 (ICMP echo), RFC 8200 §3 and §8.1 (IPv6 header, upper-layer checksum
/// over the pseudo-header), RFC 4443 §2.3 and §4 (ICMPv6 checksum, echo).
struct EchoMessage: Equatable, CustomStringConvertible {
    /// 4 bytes for IPv4, 16 for IPv6; both addresses of one message have the same family.
    var source: [UInt8]
    var destination: [UInt8]
    var isReply: Bool
    var identifier: UInt16
    var sequence: UInt16
    var payload: [UInt8]

    var isIPv6: Bool { source.count == 16 }

    var description: String {
        "\(isReply ? "echo reply" : "echo request") \(formatAddress(source)) → \(formatAddress(destination)) id \(identifier) seq \(sequence), \(payload.count) bytes"
    }

    static func request(from source: String, to destination: String, identifier: UInt16, sequence: UInt16,
                        payload: [UInt8]) -> EchoMessage {
        let s = parseAddress(source), d = parseAddress(destination)
        precondition(s.count == d.count, "\(source) and \(destination) are of different families")
        return EchoMessage(source: s, destination: d, isReply: false, identifier: identifier, sequence: sequence,
                           payload: payload)
    }

    /// The reply a correct peer sends back: addresses swapped, same identifier, sequence and payload.
    var expectedReply: EchoMessage {
        EchoMessage(source: destination, destination: source, isReply: true, identifier: identifier,
                    sequence: sequence, payload: payload)
    }

    /// The whole IP packet, checksums filled in.
    func packet(hopLimit: UInt8 = 64) -> [UInt8] {
        var icmp: [UInt8] = [isIPv6 ? (isReply ? 129 : 128) : (isReply ? 0 : 8), 0, 0, 0]
        icmp += be16(identifier) + be16(sequence) + payload
        if isIPv6 {
            // RFC 8200 §8.1: source, destination, upper-layer length (32 bits), three zero bytes, next header.
            let pseudo = source + destination + be32(UInt32(icmp.count)) + [0, 0, 0, 58]
            icmp.replaceSubrange(2..<4, with: be16(internetChecksum(pseudo + icmp)))
            return [0x60, 0, 0, 0] + be16(UInt16(icmp.count)) + [58, hopLimit] + source + destination + icmp
        } else {
            icmp.replaceSubrange(2..<4, with: be16(internetChecksum(icmp)))
            var header: [UInt8] = [0x45, 0] + be16(UInt16(20 + icmp.count)) + be16(UInt16.random(in: 0...0xffff))
            header += [0x40, 0, hopLimit, 1, 0, 0] + source + destination  // DF, no fragments; protocol 1
            header.replaceSubrange(10..<12, with: be16(internetChecksum(header)))
            return header + icmp
        }
    }

}

extension EchoMessage {
    /// Parses an IP packet carrying an ICMP(v6) echo, verifying lengths and every checksum; nil for
    /// anything else.
    init?(parsing packet: [UInt8]) {
        guard let first = packet.first else { return nil }
        let icmp: ArraySlice<UInt8>
        switch first >> 4 {
        case 4:
            let headerLength = Int(first & 0x0f) * 4
            guard headerLength >= 20, packet.count >= headerLength else { return nil }
            let totalLength = Int(readBE16(packet, 2))
            guard totalLength >= headerLength + 8, totalLength <= packet.count,
                internetChecksum(Array(packet[0..<headerLength])) == 0,
                readBE16(packet, 6) & 0x3fff == 0,  // neither a fragment nor more fragments
                packet[9] == 1
            else { return nil }
            source = Array(packet[12..<16])
            destination = Array(packet[16..<20])
            icmp = packet[headerLength..<totalLength]
            guard internetChecksum(Array(icmp)) == 0 else { return nil }
        case 6:
            guard packet.count >= 48 else { return nil }
            let payloadLength = Int(readBE16(packet, 4))
            guard payloadLength >= 8, 40 + payloadLength <= packet.count, packet[6] == 58 else { return nil }
            source = Array(packet[8..<24])
            destination = Array(packet[24..<40])
            icmp = packet[40..<40 + payloadLength]
            let pseudo = source + destination + be32(UInt32(payloadLength)) + [0, 0, 0, 58]
            guard internetChecksum(pseudo + Array(icmp)) == 0 else { return nil }
        default:
            return nil
        }
        let type = icmp[icmp.startIndex], code = icmp[icmp.startIndex + 1]
        let (request, reply): (UInt8, UInt8) = first >> 4 == 6 ? (128, 129) : (8, 0)
        guard code == 0, type == request || type == reply else { return nil }
        isReply = type == reply
        let body = Array(icmp)
        identifier = readBE16(body, 4)
        sequence = readBE16(body, 6)
        payload = Array(body[8...])
    }
}

/// RFC 1071 one's-complement sum, folded and complemented. Checking data that includes its own checksum
/// gives 0.
func internetChecksum(_ bytes: [UInt8]) -> UInt16 {
    var sum: UInt32 = 0
    var i = 0
    while i + 1 < bytes.count {
        sum += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1])
        i += 2
    }
    if i < bytes.count { sum += UInt32(bytes[i]) << 8 }
    while sum >> 16 != 0 { sum = (sum & 0xffff) + (sum >> 16) }
    return ~UInt16(sum)
}

private func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
private func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)] }
private func readBE16(_ bytes: [UInt8], _ at: Int) -> UInt16 { UInt16(bytes[at]) << 8 | UInt16(bytes[at + 1]) }

/// "192.168.4.1" → 4 bytes, "fd00:4::1" → 16 bytes (inet_pton); traps on a malformed literal, which in a
/// test is a typo.
func parseAddress(_ text: String) -> [UInt8] {
    var v4 = in_addr()
    if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
    var v6 = in6_addr()
    if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
    preconditionFailure("not an IP address: \(text)")
}

func formatAddress(_ bytes: [UInt8]) -> String {
    var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
    let family = bytes.count == 16 ? AF_INET6 : AF_INET
    let ok = bytes.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &text, socklen_t(text.count)) } != nil
    guard ok else { return "\(bytes)" }
    return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
