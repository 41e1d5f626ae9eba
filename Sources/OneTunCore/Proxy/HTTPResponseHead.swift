/// A response head, checked once and then read through accessors: the status line (RFC 9112 §4) and the
/// field lines up to the empty line (RFC 9112 §5). A view over the caller's bytes, valid only inside the
/// `withUnsafe…` scope that owns them; never store one.
///
/// The field rules are those of `HTTPRequestHead`. The status line is `HTTP/1.x`, SP, three digits from
/// 100, then SP and a reason phrase; the SP may be missing when the phrase is (RFC 9112 §4 requires it,
/// servers omit it, and the phrase is only re-emitted).
public struct HTTPResponseHead {
    /// The head, from the status line to the end of the empty line after the fields.
    public let bytes: UnsafeRawBufferPointer
    public let version: HTTPVersion
    /// 100–999.
    public let status: Int
    /// The reason phrase, possibly empty.
    public let reason: Range<Int>
    public let fields: [HTTPField]

    /// Parses the head at the start of `buffer`; bytes after the empty line that ends it are ignored.
    public init(validating buffer: UnsafeRawBufferPointer) throws(HTTPHeadError) {
        guard let (line, next) = try HTTPSyntax.line(in: buffer, from: 0) else { throw .incomplete }
        // status-line = HTTP-version SP status-code SP [ reason-phrase ]
        let start = line.lowerBound
        guard line.count >= 12, buffer[start + 8] == HTTPSyntax.sp else { throw .malformedStartLine(offset: start) }
        version = try HTTPSyntax.version(in: buffer, start..<start + 8)
        var status = 0
        for k in start + 9..<start + 12 {
            guard HTTPSyntax.isDigit(buffer[k]) else { throw .malformedStartLine(offset: k) }
            status = status * 10 + Int(buffer[k] - UInt8(ascii: "0"))
        }
        guard status >= 100 else { throw .malformedStartLine(offset: start + 9) }
        self.status = status
        if line.count == 12 {
            reason = line.upperBound..<line.upperBound
        } else {
            guard buffer[start + 12] == HTTPSyntax.sp else { throw .malformedStartLine(offset: start + 12) }
            for k in start + 13..<line.upperBound where !HTTPSyntax.isFieldChar(buffer[k]) {
                throw .malformedStartLine(offset: k)
            }
            reason = start + 13..<line.upperBound
        }
        let (fields, end) = try HTTPSyntax.fields(in: buffer, from: next)
        self.fields = fields
        bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<end])
    }

    /// The fields named `lowercaseName` (field names are case-insensitive, RFC 9110 §5.1), in order.
    public func fields(named lowercaseName: StaticString) -> [HTTPField] {
        fields.filter { bytes.httpEquals($0.name, caseInsensitive: lowercaseName) }
    }

    /// 1xx: an interim response, followed by another on the same request (RFC 9110 §15.2).
    public var isInterim: Bool { status < 200 }
}
