/// The user name and password a proxy client must present in `Proxy-Authorization` with the Basic scheme
/// (RFC 7617; RFC 9110 §11.7.2). Prints without the password.
public struct HTTPProxyCredentials: Sendable, CustomStringConvertible {
    public let user: String
    /// `user:password` in UTF-8, what the client's base64 must decode to (RFC 7617 §2).
    private let expected: [UInt8]

    /// The challenge a 407 carries in `Proxy-Authenticate` (RFC 9110 §11.7.1).
    public static let challenge = "Basic realm=\"onetun\""

    /// Nil when `user` contains a colon: RFC 7617 §2 forbids it, since the first colon separates the two.
    public init?(user: String, password: String) {
        guard !user.utf8.contains(UInt8(ascii: ":")) else { return nil }
        self.user = user
        expected = Array(user.utf8) + [UInt8(ascii: ":")] + Array(password.utf8)
    }

    public var description: String { "HTTPProxyCredentials(user: \(user.debugDescription), password: hidden)" }

    /// Whether a `Proxy-Authorization` field value (without surrounding whitespace) is `Basic` and these
    /// credentials. The scheme is case-insensitive (RFC 9110 §11.1). The comparison takes a time that
    /// depends on the configured credentials' length only, not on where a guess first differs.
    public func accepts(_ value: UnsafeRawBufferPointer) -> Bool {
        // credentials = auth-scheme [ 1*SP ( token68 / #auth-param ) ] (RFC 9110 §11.4)
        guard value.count > 6, value.httpEquals(0..<5, caseInsensitive: "basic"), value[5] == HTTPSyntax.sp else {
            return false
        }
        var start = 6
        while start < value.count && value[start] == HTTPSyntax.sp { start += 1 }
        guard let given = HTTPBase64.decode(UnsafeRawBufferPointer(rebasing: value[start...])) else { return false }
        return Self.constantTimeEquals(expected: expected, given: given)
    }

    /// Every byte of `expected` is compared whatever `given` holds; only `given`'s length (the client's own)
    /// steers a branch.
    static func constantTimeEquals(expected: [UInt8], given: [UInt8]) -> Bool {
        var difference: UInt8 = expected.count == given.count ? 0 : 1
        for i in 0..<expected.count {
            difference |= expected[i] ^ (i < given.count ? given[i] : 0)
        }
        return difference == 0
    }
}

/// Base64 with the standard alphabet (RFC 4648 §4), as Basic credentials use it (RFC 7617 §2).
public enum HTTPBase64 {
    /// The bytes `text` encodes, or nil when it holds a character outside the alphabet, padding anywhere
    /// but at the end, or a length no encoding has. The "=" padding may be left out.
    public static func decode(_ text: UnsafeRawBufferPointer) -> [UInt8]? {
        var end = text.count
        var padding = 0
        while end > 0 && text[end - 1] == UInt8(ascii: "=") && padding < 2 {
            end -= 1
            padding += 1
        }
        // With padding the whole is a multiple of 4; without, a last group of 1 character encodes nothing.
        guard padding == 0 || text.count % 4 == 0, end % 4 != 1 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(end / 4 * 3 + 2)
        var accumulator: UInt32 = 0
        var bits = 0
        for i in 0..<end {
            guard let v = value(text[i]) else { return nil }
            accumulator = accumulator << 6 | UInt32(v)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
                accumulator &= (1 << UInt32(bits)) - 1
            }
        }
        return out
    }

    @inline(__always) private static func value(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): c - UInt8(ascii: "A")
        case UInt8(ascii: "a")...UInt8(ascii: "z"): c - UInt8(ascii: "a") + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0") + 52
        case UInt8(ascii: "+"): 62
        case UInt8(ascii: "/"): 63
        default: nil
        }
    }
}
