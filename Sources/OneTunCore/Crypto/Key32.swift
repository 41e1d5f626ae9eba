import CSodium

/// 32 bytes held inline (no heap): keys, hashes, chaining keys.
///
/// A value type cannot wipe itself when it goes away; types that own long-lived secrets
/// (`LocalIdentity`, `PeerIdentity`, keypairs) call `wipe()` in their `deinit`.
public struct Key32: Equatable, Hashable, Sendable, BitwiseCopyable {
    @usableFromInline var storage: (UInt64, UInt64, UInt64, UInt64)

    public static let zero = Key32(storage: (0, 0, 0, 0))

    @inlinable init(storage: (UInt64, UInt64, UInt64, UInt64)) { self.storage = storage }

    /// Copies exactly 32 bytes; `bytes.count` must be 32.
    public init(_ bytes: UnsafeRawBufferPointer) {
        precondition(bytes.count == 32, "Key32 needs 32 bytes")
        self = .zero
        withUnsafeMutableBytes { $0.copyMemory(from: bytes) }
    }

    public init(bytes: [UInt8]) {
        precondition(bytes.count == 32, "Key32 needs 32 bytes")
        self = bytes.withUnsafeBytes { Key32($0) }
    }

    /// Decodes standard base64 (as `wg genkey` prints); nil unless it decodes to exactly 32 bytes.
    public init?(base64: String) {
        guard let bytes = Base64.decode(base64), bytes.count == 32 else { return nil }
        self.init(bytes: bytes)
    }

    public var base64: String { withUnsafeBytes { Base64.encode($0) } }

    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    @inlinable public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try Swift.withUnsafeBytes(of: storage, body)
    }

    @inlinable public mutating func withUnsafeMutableBytes<R>(
        _ body: (UnsafeMutableRawBufferPointer) throws -> R
    ) rethrows -> R {
        try Swift.withUnsafeMutableBytes(of: &storage, body)
    }

    public var isZero: Bool { storage.0 | storage.1 | storage.2 | storage.3 == 0 }

    /// Overwrites the bytes with zeros in a way the optimiser may not remove.
    public mutating func wipe() { withUnsafeMutableBytes { sodium_memzero($0.baseAddress, 32) } }

    /// Constant-time comparison.
    public static func == (a: Key32, b: Key32) -> Bool {
        a.withUnsafeBytes { pa in b.withUnsafeBytes { pb in sodium_memcmp(pa.baseAddress, pb.baseAddress, 32) == 0 } }
    }

    public func hash(into hasher: inout Hasher) { withUnsafeBytes { hasher.combine(bytes: $0) } }
}

/// Hexadecimal text, as an IPv6 group or a key written as 64 digits.
@_spi(OneTunInternals) public enum Hex {
    /// The value of one digit, either case; nil for anything else.
    @inline(__always) public static func digit(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// Bytes from an even number of digits; nil for an odd count or any other character.
    public static func decode(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 2 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(chars.count / 2)
        var i = 0
        while i < chars.count {
            guard let high = digit(chars[i]), let low = digit(chars[i + 1]) else { return nil }
            out.append(high << 4 | low)
            i += 2
        }
        return out
    }
}

/// Standard base64 (RFC 4648 §4) with padding, as WireGuard keys are written.
@_spi(OneTunInternals) public enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    public static func encode(_ data: UnsafeRawBufferPointer) -> String {
        var out = [UInt8]()
        out.reserveCapacity((data.count + 2) / 3 * 4)
        var i = 0
        while i + 3 <= data.count {
            let v = UInt32(data[i]) << 16 | UInt32(data[i + 1]) << 8 | UInt32(data[i + 2])
            for s in [18, 12, 6, 0] { out.append(alphabet[Int(v >> UInt32(s) & 63)]) }
            i += 3
        }
        let rest = data.count - i
        if rest > 0 {
            var v = UInt32(data[i]) << 16
            if rest == 2 { v |= UInt32(data[i + 1]) << 8 }
            out.append(alphabet[Int(v >> 18 & 63)])
            out.append(alphabet[Int(v >> 12 & 63)])
            out.append(rest == 2 ? alphabet[Int(v >> 6 & 63)] : UInt8(ascii: "="))
            out.append(UInt8(ascii: "="))
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Strict decoding: padding required, no whitespace, no stray characters.
    public static func decode(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 4 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(chars.count / 4 * 3)
        var i = 0
        while i < chars.count {
            var v: UInt32 = 0
            var pad = 0
            for j in 0..<4 {
                let c = chars[i + j]
                let d: UInt32
                switch c {
                case UInt8(ascii: "A")...UInt8(ascii: "Z"): d = UInt32(c - UInt8(ascii: "A"))
                case UInt8(ascii: "a")...UInt8(ascii: "z"): d = UInt32(c - UInt8(ascii: "a")) + 26
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(c - UInt8(ascii: "0")) + 52
                case UInt8(ascii: "+"): d = 62
                case UInt8(ascii: "/"): d = 63
                case UInt8(ascii: "=") where i + 4 == chars.count && j >= 2:
                    pad += 1
                    d = 0
                default: return nil
                }
                // A data character after padding is malformed.
                if pad > 0 && c != UInt8(ascii: "=") { return nil }
                v = v << 6 | d
            }
            out.append(UInt8(v >> 16 & 0xff))
            if pad < 2 { out.append(UInt8(v >> 8 & 0xff)) }
            if pad < 1 { out.append(UInt8(v & 0xff)) }
            i += 4
        }
        return out
    }
}
