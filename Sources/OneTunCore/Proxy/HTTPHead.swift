// What request and response heads share: the version, field lines, the errors, and the bounded buffer a
// head accumulates in. HTTP/1.1 message syntax is RFC 9112; field semantics RFC 9110.

/// An HTTP version from a start line: `HTTP/` DIGIT `.` DIGIT, case-sensitive (RFC 9112 §2.3).
public struct HTTPVersion: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var major: Int
    public var minor: Int

    public init(major: Int, minor: Int) {
        self.major = major
        self.minor = minor
    }

    public static let http1_0 = HTTPVersion(major: 1, minor: 0)
    public static let http1_1 = HTTPVersion(major: 1, minor: 1)

    public static func < (a: HTTPVersion, b: HTTPVersion) -> Bool { (a.major, a.minor) < (b.major, b.minor) }

    public var description: String { "HTTP/\(major).\(minor)" }
}

/// Why an HTTP head was refused. Offsets count bytes from the head's first byte.
public enum HTTPHeadError: Error, Hashable, Sendable, CustomStringConvertible {
    /// No empty line ends the head within the bytes given.
    case incomplete
    /// Not `method SP request-target SP HTTP-version` (RFC 9112 §3), or not `HTTP-version SP status-code
    /// [SP reason-phrase]` (RFC 9112 §4).
    case malformedStartLine(offset: Int)
    /// Where the version belongs, something other than `HTTP/` DIGIT `.` DIGIT (RFC 9112 §2.3).
    case malformedVersion(offset: Int)
    /// A well-formed version whose major number is not 1: another protocol than HTTP/1.x framing.
    case unsupportedVersion(HTTPVersion)
    /// A field line with no colon (RFC 9112 §5).
    case missingColon(offset: Int)
    /// A field name that is empty or holds a character that is not a token character (RFC 9110 §5.1).
    case invalidFieldName(offset: Int)
    /// Whitespace between a field name and its colon, which RFC 9112 §5.1 requires a server to reject.
    case whitespaceBeforeColon(offset: Int)
    /// A line starting with whitespace: obs-fold, a continuation of the previous field (RFC 9112 §5.2).
    case obsFold(offset: Int)
    /// A control character (NUL, DEL, anything below space but HTAB) in a field value (RFC 9110 §5.5).
    case invalidFieldValue(offset: Int)
    /// A CR not followed by LF (RFC 9112 §2.2).
    case bareCR(offset: Int)

    public var description: String {
        switch self {
        case .incomplete: "no empty line ends the head"
        case .malformedStartLine(let at): "malformed start line (byte \(at))"
        case .malformedVersion(let at): "malformed HTTP version (byte \(at))"
        case .unsupportedVersion(let version): "unsupported version \(version)"
        case .missingColon(let at): "header line without a colon (byte \(at))"
        case .invalidFieldName(let at): "invalid header name (byte \(at))"
        case .whitespaceBeforeColon(let at): "whitespace before a header's colon (byte \(at))"
        case .obsFold(let at): "folded header line (byte \(at))"
        case .invalidFieldValue(let at): "control character in a header value (byte \(at))"
        case .bareCR(let at): "CR without LF (byte \(at))"
        }
    }
}

/// One field line of a head: where its name and its value are, as offsets into the head's bytes. The value
/// has its leading and trailing whitespace (OWS) removed (RFC 9112 §5).
public struct HTTPField: Hashable, Sendable {
    public var name: Range<Int>
    public var value: Range<Int>

    public init(name: Range<Int>, value: Range<Int>) {
        self.name = name
        self.value = value
    }
}

/// Character classes and line splitting shared by the head parsers.
enum HTTPSyntax {
    static let cr = UInt8(ascii: "\r"), lf = UInt8(ascii: "\n"), sp = UInt8(ascii: " "), htab = UInt8(ascii: "\t")
    static let colon = UInt8(ascii: ":"), comma = UInt8(ascii: ","), semicolon = UInt8(ascii: ";")

    /// tchar (RFC 9110 §5.6.2).
    @inline(__always) static func isTokenChar(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "A")...UInt8(ascii: "Z"):
            true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
            UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
            UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            true
        default: false
        }
    }

    /// What a field value or reason phrase may hold: VCHAR, obs-text, SP, HTAB (RFC 9110 §5.5).
    @inline(__always) static func isFieldChar(_ b: UInt8) -> Bool {
        b == htab || (b >= 0x20 && b != 0x7F)
    }

    @inline(__always) static func isWhitespace(_ b: UInt8) -> Bool { b == sp || b == htab }

    @inline(__always) static func isDigit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }

    /// The line starting at `start`: its content without the line ending, and where the next line starts.
    /// A line ends at LF, and a CR just before it is part of the ending: RFC 9112 §2.2 lets a recipient take
    /// a lone LF as a line ending; heads are re-emitted with CRLF, so the leniency never reaches the next
    /// hop. A CR anywhere else is refused. Nil when no LF follows.
    static func line(in bytes: UnsafeRawBufferPointer, from start: Int) throws(HTTPHeadError) -> (content: Range<Int>, next: Int)? {
        var i = start
        while i < bytes.count {
            let b = bytes[i]
            if b == lf {
                return (start..<i, i + 1)
            }
            if b == cr {
                guard i + 1 < bytes.count else { return nil }
                guard bytes[i + 1] == lf else { throw .bareCR(offset: i) }
                return (start..<i, i + 2)
            }
            i += 1
        }
        return nil
    }

    /// The field lines from `start` up to and including the empty line that ends the head (RFC 9112 §2.1).
    /// Returns them and the head's length.
    static func fields(in bytes: UnsafeRawBufferPointer, from start: Int) throws(HTTPHeadError) -> (fields: [HTTPField], end: Int) {
        var fields: [HTTPField] = []
        var at = start
        while true {
            guard let (content, next) = try line(in: bytes, from: at) else { throw .incomplete }
            if content.isEmpty { return (fields, next) }
            fields.append(try field(in: bytes, content))
            at = next
        }
    }

    /// field-line = field-name ":" OWS field-value OWS (RFC 9112 §5).
    static func field(in bytes: UnsafeRawBufferPointer, _ line: Range<Int>) throws(HTTPHeadError) -> HTTPField {
        // RFC 9112 §5.2: a server must reject obs-fold (or unfold it); a proxy must reject it in a response
        // (or unfold it). Rejecting is the one rule for both.
        if isWhitespace(bytes[line.lowerBound]) { throw .obsFold(offset: line.lowerBound) }
        var i = line.lowerBound
        while i < line.upperBound && isTokenChar(bytes[i]) { i += 1 }
        guard i < line.upperBound else { throw .missingColon(offset: line.lowerBound) }
        if bytes[i] != colon {
            // RFC 9112 §5.1: no whitespace between the name and the colon; a server MUST reject it with 400.
            if isWhitespace(bytes[i]) { throw .whitespaceBeforeColon(offset: i) }
            throw .invalidFieldName(offset: i)
        }
        guard i > line.lowerBound else { throw .invalidFieldName(offset: i) }
        let name = line.lowerBound..<i
        var start = i + 1
        var end = line.upperBound
        while start < end && isWhitespace(bytes[start]) { start += 1 }
        while end > start && isWhitespace(bytes[end - 1]) { end -= 1 }
        for j in start..<end where !isFieldChar(bytes[j]) { throw .invalidFieldValue(offset: j) }
        return HTTPField(name: name, value: start..<end)
    }

    /// HTTP-version = "HTTP" "/" DIGIT "." DIGIT (RFC 9112 §2.3). A version of another major number parses,
    /// and is refused as unsupported: the message might be HTTP/2's preface or the like.
    static func version(in bytes: UnsafeRawBufferPointer, _ range: Range<Int>) throws(HTTPHeadError) -> HTTPVersion {
        guard range.count == 8, bytes.httpEquals(range.lowerBound..<range.lowerBound + 5, exactly: "HTTP/"),
            isDigit(bytes[range.lowerBound + 5]), bytes[range.lowerBound + 6] == UInt8(ascii: "."),
            isDigit(bytes[range.lowerBound + 7])
        else { throw .malformedVersion(offset: range.lowerBound) }
        let version = HTTPVersion(
            major: Int(bytes[range.lowerBound + 5] - UInt8(ascii: "0")),
            minor: Int(bytes[range.lowerBound + 7] - UInt8(ascii: "0")))
        guard version.major == 1 else { throw .unsupportedVersion(version) }
        return version
    }

    /// The elements of a comma-separated list value (RFC 9110 §5.6.1), each trimmed of OWS; empty elements
    /// are skipped, as the list rule allows. Quoted strings are not parsed: none of the lists read here
    /// (Connection, Transfer-Encoding) may carry one where it would matter.
    static func listElements(in bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> [Range<Int>] {
        var elements: [Range<Int>] = []
        var start = range.lowerBound
        while start <= range.upperBound {
            var end = start
            while end < range.upperBound && bytes[end] != comma { end += 1 }
            var a = start, b = end
            while a < b && isWhitespace(bytes[a]) { a += 1 }
            while b > a && isWhitespace(bytes[b - 1]) { b -= 1 }
            if a < b { elements.append(a..<b) }
            start = end + 1
        }
        return elements
    }
}

extension UnsafeRawBufferPointer {
    /// Whether `self[range]` spells `lowercase` ignoring ASCII case; `lowercase` must be lower-case ASCII.
    func httpEquals(_ range: Range<Int>, caseInsensitive lowercase: StaticString) -> Bool {
        guard range.count == lowercase.utf8CodeUnitCount else { return false }
        let expected = lowercase.utf8Start
        for k in 0..<range.count {
            var b = self[range.lowerBound + k]
            if b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z") { b |= 0x20 }
            if b != expected[k] { return false }
        }
        return true
    }

    /// Whether `self[range]` spells `text` exactly.
    func httpEquals(_ range: Range<Int>, exactly text: StaticString) -> Bool {
        guard range.count == text.utf8CodeUnitCount else { return false }
        let expected = text.utf8Start
        for k in 0..<range.count where self[range.lowerBound + k] != expected[k] { return false }
        return true
    }

    /// Whether two ranges of this buffer spell the same ASCII text ignoring case.
    func httpEquals(_ a: Range<Int>, caseInsensitive b: Range<Int>) -> Bool {
        guard a.count == b.count else { return false }
        for k in 0..<a.count {
            var x = self[a.lowerBound + k], y = self[b.lowerBound + k]
            if x >= UInt8(ascii: "A") && x <= UInt8(ascii: "Z") { x |= 0x20 }
            if y >= UInt8(ascii: "A") && y <= UInt8(ascii: "Z") { y |= 0x20 }
            if x != y { return false }
        }
        return true
    }

    /// `self[range]` as text; non-UTF-8 bytes become U+FFFD.
    func httpString(_ range: Range<Int>) -> String {
        String(decoding: UnsafeRawBufferPointer(rebasing: self[range]), as: UTF8.self)
    }
}

/// A head arriving in pieces, copied into a buffer of bounded size until the empty line that ends it
/// (RFC 9112 §2.1). Heads are small and rare next to bodies, so copying them costs little, and the
/// driver may then pass any buffer, keep none, and never hand the same bytes twice. Each byte is looked
/// at once, however the head is split.
struct HTTPHeadBuffer: Sendable {
    private(set) var bytes: [UInt8] = []
    /// Where the line being received starts in `bytes`.
    private var lineStart = 0
    /// Bytes received since the previous head, the skipped empty lines included.
    private(set) var received = 0
    private(set) var limit: Int
    /// Whether empty lines before the start line are skipped (RFC 9112 §2.2: a server SHOULD ignore at
    /// least one empty line received before the request-line).
    private(set) var skipsLeadingEmptyLines: Bool

    enum Progress: Equatable {
        /// All the input was taken; the head goes on.
        case incomplete
        /// The head ended after `consumed` bytes of the input; it is `bytes`.
        case complete(consumed: Int)
        /// The head would be larger than `limit`.
        case tooLarge
    }

    init(limit: Int, skipsLeadingEmptyLines: Bool) {
        self.limit = limit
        self.skipsLeadingEmptyLines = skipsLeadingEmptyLines
    }

    /// Empty, for the next head. The memory stays for it, unless an unusually large head grew it: many idle
    /// keep-alive sessions should not each hold their largest head.
    mutating func reset(limit: Int, skipsLeadingEmptyLines: Bool) {
        bytes.removeAll(keepingCapacity: bytes.capacity <= 4096)
        lineStart = 0
        received = 0
        self.limit = limit
        self.skipsLeadingEmptyLines = skipsLeadingEmptyLines
    }

    mutating func take(_ input: UnsafeRawBufferPointer) -> Progress {
        var i = 0
        while i < input.count {
            let b = input[i]
            i += 1
            received += 1
            if skipsLeadingEmptyLines && bytes.isEmpty && (b == HTTPSyntax.lf || b == HTTPSyntax.cr) {
                // Skipped before the start line. A CR alone here is let through as well: the line rule
                // would refuse it once the start line begins, and refusing it or not changes no framing.
                continue
            }
            guard bytes.count < limit else { return .tooLarge }
            if bytes.isEmpty { bytes.reserveCapacity(min(limit, 1024)) }
            bytes.append(b)
            if b == HTTPSyntax.lf {
                let lineLength = bytes.count - 1 - lineStart
                let empty = lineLength == 0 || (lineLength == 1 && bytes[lineStart] == HTTPSyntax.cr)
                lineStart = bytes.count
                // The empty line ends the head; the first line is never empty here when leading empty
                // lines are skipped, and otherwise an empty first line is the parser's to refuse.
                if empty { return .complete(consumed: i) }
            }
        }
        return .incomplete
    }
}
