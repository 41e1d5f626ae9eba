import Glibc
import OneTunCore

/// An IP address as given on the command line.
enum HostAddress: CustomStringConvertible, Equatable {
    case v4(in_addr)
    case v6(in6_addr)

    init?(_ text: String) {
        var a4 = in_addr()
        var a6 = in6_addr()
        if inet_pton(AF_INET, text, &a4) == 1 {
            self = .v4(a4)
        } else if inet_pton(AF_INET6, text, &a6) == 1 {
            self = .v6(a6)
        } else {
            return nil
        }
    }

    var isV4: Bool { if case .v4 = self { true } else { false } }

    var description: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        switch self {
        case .v4(var a): inet_ntop(AF_INET, &a, &buffer, socklen_t(buffer.count))
        case .v6(var a): inet_ntop(AF_INET6, &a, &buffer, socklen_t(buffer.count))
        }
        return String(cString: buffer)
    }

    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        switch self {
        case .v4(let a): Swift.withUnsafeBytes(of: a, body)
        case .v6(let a): Swift.withUnsafeBytes(of: a, body)
        }
    }

    static func == (l: HostAddress, r: HostAddress) -> Bool {
        l.withUnsafeBytes { a in r.withUnsafeBytes { b in a.elementsEqual(b) } }
    }
}

/// ICMP echo request and reply packets for `--ping` (RFC 792, RFC 4443 §4).
enum EchoPacket {
    static let payloadSize = 56

    static func checksum(_ bytes: UnsafeRawBufferPointer, initial: UInt32 = 0) -> UInt16 {
        var sum = initial
        var i = 0
        while i + 1 < bytes.count {
            sum += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1])
            i += 2
        }
        if i < bytes.count { sum += UInt32(bytes[i]) << 8 }
        while sum >> 16 != 0 { sum = (sum & 0xffff) + (sum >> 16) }
        return ~UInt16(sum)
    }

    static func request(into b: UnsafeMutableRawBufferPointer, source: HostAddress, target: HostAddress, identifier: UInt16, sequence: UInt16) -> Int {
        let header = source.isV4 ? 20 : 40
        let icmpLength = 8 + payloadSize
        let total = header + icmpLength
        b.initializeMemory(as: UInt8.self, repeating: 0)
        let icmp = UnsafeMutableRawBufferPointer(rebasing: b[header..<total])
        icmp[0] = source.isV4 ? 8 : 128  // echo request
        icmp.storeBytes(of: identifier.bigEndian, toByteOffset: 4, as: UInt16.self)
        icmp.storeBytes(of: sequence.bigEndian, toByteOffset: 6, as: UInt16.self)
        for i in 8..<icmpLength { icmp[i] = UInt8(truncatingIfNeeded: i) }
        if source.isV4 {
            b[0] = 0x45
            b.storeBytes(of: UInt16(total).bigEndian, toByteOffset: 2, as: UInt16.self)
            b[8] = 64
            b[9] = 1
            source.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: b[12..<16]).copyMemory(from: $0) }
            target.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: b[16..<20]).copyMemory(from: $0) }
            b.storeBytes(of: checksum(UnsafeRawBufferPointer(rebasing: b[0..<20])).bigEndian, toByteOffset: 10, as: UInt16.self)
            icmp.storeBytes(of: checksum(UnsafeRawBufferPointer(icmp)).bigEndian, toByteOffset: 2, as: UInt16.self)
        } else {
            b[0] = 0x60
            b.storeBytes(of: UInt16(icmpLength).bigEndian, toByteOffset: 4, as: UInt16.self)
            b[6] = 58
            b[7] = 64
            source.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: b[8..<24]).copyMemory(from: $0) }
            target.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: b[24..<40]).copyMemory(from: $0) }
            // RFC 8200 §8.1 pseudo-header: addresses, upper-layer length, next header.
            var pseudo = UInt32(icmpLength) + 58
            for i in stride(from: 8, to: 40, by: 2) { pseudo += UInt32(b[i]) << 8 | UInt32(b[i + 1]) }
            icmp.storeBytes(of: checksum(UnsafeRawBufferPointer(icmp), initial: pseudo).bigEndian, toByteOffset: 2, as: UInt16.self)
        }
        return total
    }

    /// The sequence number and ICMP size of an echo reply with our identifier, or nil.
    static func parseReply(_ p: UnsafeRawBufferPointer, identifier: UInt16) -> (sequence: UInt16, size: Int)? {
        guard p.count >= 1 else { return nil }
        let header: Int
        let replyType: UInt8
        switch p[0] >> 4 {
        case 4:
            header = Int(p[0] & 0x0f) * 4
            guard p.count >= header + 8, p[9] == 1 else { return nil }
            replyType = 0
        case 6:
            header = 40
            guard p.count >= header + 8, p[6] == 58 else { return nil }
            replyType = 129
        default:
            return nil
        }
        let icmp = UnsafeRawBufferPointer(rebasing: p[header...])
        guard icmp[0] == replyType, UInt16(bigEndian: icmp.loadUnaligned(fromByteOffset: 4, as: UInt16.self)) == identifier
        else { return nil }
        return (UInt16(bigEndian: icmp.loadUnaligned(fromByteOffset: 6, as: UInt16.self)), icmp.count)
    }
}
