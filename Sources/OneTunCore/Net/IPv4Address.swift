/// An IPv4 address, held as the host-order value of its four network-order bytes (1.2.3.4 is 0x01020304).
public struct IPv4Address: RawRepresentable, Hashable, Comparable, Sendable, BitwiseCopyable,
    CustomStringConvertible, LosslessStringConvertible
{
    public var rawValue: UInt32

    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }

    @inlinable public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        rawValue = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    /// Parses dotted-quad text: exactly four decimal parts of 0–255. A part with a leading zero ("01") is
    /// rejected, as `inet_aton` would read it as octal and Rust's `Ipv4Addr` (onetun's parser) refuses it.
    public init?(_ description: String) {
        var text = description
        guard let value = text.withUTF8({ IPv4Address.parse($0, from: 0, to: $0.count) }) else { return nil }
        rawValue = value
    }

    /// 0.0.0.0
    public static var unspecified: IPv4Address { IPv4Address(rawValue: 0) }
    /// 127.0.0.1
    public static var loopback: IPv4Address { IPv4Address(127, 0, 0, 1) }
    /// 255.255.255.255
    public static var broadcast: IPv4Address { IPv4Address(rawValue: .max) }

    public var octets: (UInt8, UInt8, UInt8, UInt8) {
        (UInt8(truncatingIfNeeded: rawValue >> 24), UInt8(truncatingIfNeeded: rawValue >> 16),
         UInt8(truncatingIfNeeded: rawValue >> 8), UInt8(truncatingIfNeeded: rawValue))
    }

    public var isUnspecified: Bool { rawValue == 0 }
    /// 127.0.0.0/8 (RFC 1122 §3.2.1.3)
    public var isLoopback: Bool { rawValue >> 24 == 127 }
    /// 224.0.0.0/4 (RFC 5771)
    public var isMulticast: Bool { rawValue >> 28 == 0xE }
    public var isBroadcast: Bool { rawValue == .max }
    /// 169.254.0.0/16 (RFC 3927)
    public var isLinkLocal: Bool { rawValue >> 16 == 0xA9FE }

    @inlinable public static func < (a: IPv4Address, b: IPv4Address) -> Bool { a.rawValue < b.rawValue }

    public var description: String {
        let o = octets
        return "\(o.0).\(o.1).\(o.2).\(o.3)"
    }

    /// Reads four network-order bytes at `offset`; the caller has checked the length.
    @inlinable public init(loading bytes: UnsafeRawBufferPointer, at offset: Int) {
        rawValue = UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    /// Writes the four network-order bytes at `offset`.
    @inlinable public func store(into bytes: UnsafeMutableRawBufferPointer, at offset: Int) {
        bytes.storeBytes(of: rawValue.bigEndian, toByteOffset: offset, as: UInt32.self)
    }

    /// Parses `text[from..<to]` as a dotted quad; nil for anything else. Never traps, whatever the bytes.
    static func parse(_ text: UnsafeBufferPointer<UInt8>, from start: Int, to end: Int) -> UInt32? {
        var value: UInt32 = 0
        var i = start
        for part in 0..<4 {
            if part > 0 {
                guard i < end, text[i] == UInt8(ascii: ".") else { return nil }
                i += 1
            }
            let digits = i
            var octet: UInt32 = 0
            while i < end, i - digits < 3 {
                let d = text[i] &- UInt8(ascii: "0")
                guard d < 10 else { break }
                octet = octet * 10 + UInt32(d)
                i += 1
            }
            let count = i - digits
            guard count > 0, octet <= 255 else { return nil }
            guard count == 1 || text[digits] != UInt8(ascii: "0") else { return nil }
            value = value << 8 | octet
        }
        return i == end ? value : nil
    }
}
