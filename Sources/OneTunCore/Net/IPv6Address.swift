/// An IPv6 address, held as the host-order values of its two network-order 64-bit halves.
public struct IPv6Address: Hashable, Comparable, Sendable, BitwiseCopyable, CustomStringConvertible,
    LosslessStringConvertible
{
    /// Bytes 0–7 as a big-endian number.
    public var high: UInt64
    /// Bytes 8–15 as a big-endian number.
    public var low: UInt64

    @inlinable public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// From the eight 16-bit groups, as written in text.
    public init(
        _ s0: UInt16, _ s1: UInt16, _ s2: UInt16, _ s3: UInt16,
        _ s4: UInt16, _ s5: UInt16, _ s6: UInt16, _ s7: UInt16
    ) {
        high = UInt64(s0) << 48 | UInt64(s1) << 32 | UInt64(s2) << 16 | UInt64(s3)
        low = UInt64(s4) << 48 | UInt64(s5) << 32 | UInt64(s6) << 16 | UInt64(s7)
    }

    /// Parses RFC 4291 §2.2 text: up to eight groups of 1–4 hex digits, at most one "::" standing for one or
    /// more zero groups, optionally ending in a dotted-quad IPv4 address for the last 32 bits. No brackets,
    /// no zone ("%eth0"), no surrounding spaces. Never traps, whatever the input.
    public init?(_ description: String) {
        var text = description
        guard let address = text.withUTF8({ IPv6Address.parse($0) }) else { return nil }
        self = address
    }

    /// ::
    public static var unspecified: IPv6Address { IPv6Address(high: 0, low: 0) }
    /// ::1
    public static var loopback: IPv6Address { IPv6Address(high: 0, low: 1) }

    /// The IPv4-mapped address ::ffff:a.b.c.d (RFC 4291 §2.5.5.2).
    public init(ipv4Mapped v4: IPv4Address) {
        high = 0
        low = 0xFFFF_0000_0000 | UInt64(v4.rawValue)
    }

    /// The embedded IPv4 address when this is ::ffff:a.b.c.d.
    public var ipv4Mapped: IPv4Address? {
        high == 0 && low >> 32 == 0xFFFF ? IPv4Address(rawValue: UInt32(truncatingIfNeeded: low)) : nil
    }

    /// Group `index` (0–7), as written in text.
    public func segment(_ index: Int) -> UInt16 {
        precondition(index >= 0 && index < 8, "IPv6 addresses have eight groups")
        let half = index < 4 ? high : low
        return UInt16(truncatingIfNeeded: half >> (48 - 16 * UInt64(index & 3)))
    }

    public var isUnspecified: Bool { high == 0 && low == 0 }
    public var isLoopback: Bool { high == 0 && low == 1 }
    /// ff00::/8 (RFC 4291 §2.7)
    public var isMulticast: Bool { high >> 56 == 0xFF }
    /// fe80::/10 (RFC 4291 §2.5.6)
    public var isLinkLocal: Bool { high >> 54 == 0x3FA }
    /// fc00::/7 (RFC 4193)
    public var isUniqueLocal: Bool { high >> 57 == 0x7E }

    @inlinable public static func < (a: IPv6Address, b: IPv6Address) -> Bool {
        (a.high, a.low) < (b.high, b.low)
    }

    /// RFC 5952 canonical text: lower-case hex without leading zeros; the longest run of two or more zero
    /// groups (the first, on a tie) as "::" (§4.2); IPv4-mapped addresses with a dotted quad (§5).
    public var description: String {
        if let v4 = ipv4Mapped { return "::ffff:\(v4)" }
        var bestStart = -1
        var bestLength = 1  // §4.2.2: "::" never stands for a single group
        var runStart = -1
        for i in 0...8 {
            if i < 8, segment(i) == 0 {
                if runStart < 0 { runStart = i }
            } else if runStart >= 0 {
                if i - runStart > bestLength {
                    bestStart = runStart
                    bestLength = i - runStart
                }
                runStart = -1
            }
        }
        var out = ""
        out.reserveCapacity(39)
        var i = 0
        while i < 8 {
            if i == bestStart {
                out += "::"
                i += bestLength
                continue
            }
            if i > 0 && i != bestStart + bestLength { out += ":" }
            out += String(segment(i), radix: 16)
            i += 1
        }
        return out
    }

    /// Reads sixteen network-order bytes at `offset`; the caller has checked the length.
    @inlinable public init(loading bytes: UnsafeRawBufferPointer, at offset: Int) {
        high = UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
        low = UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self))
    }

    /// Writes the sixteen network-order bytes at `offset`.
    @inlinable public func store(into bytes: UnsafeMutableRawBufferPointer, at offset: Int) {
        bytes.storeBytes(of: high.bigEndian, toByteOffset: offset, as: UInt64.self)
        bytes.storeBytes(of: low.bigEndian, toByteOffset: offset + 8, as: UInt64.self)
    }

    static func parse(_ text: UnsafeBufferPointer<UInt8>) -> IPv6Address? {
        let colon = UInt8(ascii: ":")
        let end = text.count
        guard end >= 2 else { return nil }  // the shortest address is "::"
        var groups = SIMD8<UInt16>()
        var count = 0  // groups parsed
        var gap = -1  // where "::" stood, in groups
        var i = 0
        if text[0] == colon {
            // Only "::" may start with a colon.
            guard text[1] == colon else { return nil }
            gap = 0
            i = 2
            if i == end { return .unspecified }
        }
        while true {
            // One token: up to the next colon or the end.
            var tokenEnd = i
            var dotted = false
            while tokenEnd < end, text[tokenEnd] != colon {
                if text[tokenEnd] == UInt8(ascii: ".") { dotted = true }
                tokenEnd += 1
            }
            if dotted {
                // An embedded IPv4 address: only as the last token, filling the last two groups.
                guard tokenEnd == end, count <= 6,
                    let v4 = IPv4Address.parse(text, from: i, to: end)
                else { return nil }
                groups[count] = UInt16(truncatingIfNeeded: v4 >> 16)
                groups[count + 1] = UInt16(truncatingIfNeeded: v4)
                count += 2
                break
            }
            let digits = tokenEnd - i
            guard digits >= 1, digits <= 4, count < 8 else { return nil }
            var value: UInt16 = 0
            for k in i..<tokenEnd {
                guard let h = Hex.digit(text[k]) else { return nil }
                value = value << 4 | UInt16(h)
            }
            groups[count] = value
            count += 1
            if tokenEnd == end { break }
            // text[tokenEnd] is a colon: either a separator or the start of "::".
            if tokenEnd + 1 < end, text[tokenEnd + 1] == colon {
                guard gap < 0 else { return nil }  // "::" at most once
                gap = count
                i = tokenEnd + 2
                if i == end { break }
            } else {
                i = tokenEnd + 1
                guard i < end else { return nil }  // a trailing single colon
            }
        }
        if gap >= 0 {
            guard count < 8 else { return nil }  // "::" stands for at least one group
            // Move the groups after the gap to the end; the gap is zeros.
            let tail = count - gap
            var expanded = SIMD8<UInt16>()
            for k in 0..<gap { expanded[k] = groups[k] }
            for k in 0..<tail { expanded[8 - tail + k] = groups[gap + k] }
            groups = expanded
        } else {
            guard count == 8 else { return nil }
        }
        return IPv6Address(groups[0], groups[1], groups[2], groups[3], groups[4], groups[5], groups[6], groups[7])
    }

}
