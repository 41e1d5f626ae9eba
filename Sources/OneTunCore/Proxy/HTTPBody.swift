/// How the body of a message is delimited (RFC 9112 §6.3), as decided from its head.
public enum HTTPBodyLength: Hashable, Sendable {
    /// No body: a request without Content-Length or Transfer-Encoding, a response to HEAD, a 1xx, 204 or 304.
    case none
    /// Exactly this many bytes (Content-Length, RFC 9112 §6.2). Zero means none.
    case length(Int)
    /// The chunked transfer coding (RFC 9112 §7.1), ending after the last chunk and the trailer section.
    case chunked
    /// Until the server closes the connection: a response without a length (RFC 9112 §6.3, item 8).
    case untilClose
}

/// Why a body's framing was refused. `offset` counts bytes from the start of the body.
public enum HTTPBodyError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A chunk-size that is not hexadecimal or does not fit in an `Int` (RFC 9112 §7.1).
    case invalidChunkSize(offset: Int)
    /// A chunk-size line, with its extensions, longer than `HTTPBodyObserver.maxChunkLine`.
    case chunkLineTooLong(offset: Int)
    /// A chunk line, chunk data or trailer line not ended by CRLF. Chunked framing passes to the next hop
    /// unchanged, so it is read strictly: a lenient reading that the next hop does not share would let one
    /// message hide another (request smuggling, RFC 9112 §11.2).
    case missingCRLF(offset: Int)
    /// A trailer line that is not a field line: obs-fold, or a control character.
    case invalidTrailer(offset: Int)
    /// A trailer section longer than the limit the observer was given.
    case trailerTooLarge(offset: Int)

    public var description: String {
        switch self {
        case .invalidChunkSize(let at): "invalid chunk size (body byte \(at))"
        case .chunkLineTooLong(let at): "chunk size line too long (body byte \(at))"
        case .missingCRLF(let at): "chunk framing without CRLF (body byte \(at))"
        case .invalidTrailer(let at): "invalid trailer line (body byte \(at))"
        case .trailerTooLarge(let at): "trailer section too large (body byte \(at))"
        }
    }
}

/// Follows a body through the bytes that carry it without copying or changing them: given the bytes that
/// follow what it has seen, it says how many of them belong to the body, and whether the body has ended.
/// The driver relays exactly those bytes (from its socket read straight into the other side's buffer);
/// bytes past the end belong to the next message.
///
/// Content-Length bodies cost one subtraction per buffer. Chunked bodies (RFC 9112 §7.1) are walked
/// byte by byte only through chunk-size lines, the CRLF after each chunk's data and the trailer section;
/// chunk data is skipped whole. Chunk extensions and trailer fields pass through as received.
public struct HTTPBodyObserver: Hashable, Sendable {
    /// The longest chunk-size line accepted, extensions included (the line is never stored; the bound keeps
    /// a peer from sending an endless one).
    public static let maxChunkLine = 4096

    private enum State: Hashable, Sendable {
        case length(remaining: Int)
        case chunked(Chunked)
        case untilClose
        case done
    }

    /// Where the chunked reader is: chunked-body = *chunk last-chunk trailer-section CRLF, chunk =
    /// chunk-size [chunk-ext] CRLF chunk-data CRLF (RFC 9112 §7.1).
    private enum Chunked: Hashable, Sendable {
        /// In a chunk-size: its value so far and whether a digit was seen.
        case size(value: Int, digits: Bool)
        /// After the size, whitespace before a ";" (BWS) or the CR.
        case sizeBWS
        /// After the ";" that starts the chunk extensions, up to CR.
        case extensions
        /// After the size line's CR: the LF, then the data of a chunk of that size (none: the last chunk).
        case sizeLF(size: Int)
        case data(remaining: Int)
        case dataCR
        case dataLF
        /// At the start of a trailer line, or of the final empty line.
        case trailerStart
        case trailerLine
        case trailerLF
        /// The final CRLF's LF.
        case lastLF
    }

    private var state: State
    /// Bytes of this body seen so far: the offset errors report.
    public private(set) var observed = 0
    /// Bytes on the current chunk-size line, or in the trailer section.
    private var lineLength = 0
    private var pendingSize = 0
    private let maxTrailer: Int

    /// - Parameters:
    ///   - length: how the message's body is delimited (RFC 9112 §6.3).
    ///   - maxTrailer: the largest trailer section accepted (chunked bodies only).
    public init(_ length: HTTPBodyLength, maxTrailer: Int = 16 * 1024) {
        switch length {
        case .none, .length(0): state = .done
        case .length(let n): state = .length(remaining: max(0, n))
        case .chunked: state = .chunked(.size(value: 0, digits: false))
        case .untilClose: state = .untilClose
        }
        self.maxTrailer = maxTrailer
    }

    /// Whether the body has ended. A body delimited by the close of the connection never ends here.
    public var isComplete: Bool { state == .done }

    /// Whether the body ends only when the connection closes (`untilClose`).
    public var isCloseDelimited: Bool { state == .untilClose }

    /// Bytes the body still has when its length is known; nil for chunked and close-delimited bodies.
    public var remaining: Int? {
        switch state {
        case .length(let n): n
        case .done: 0
        case .chunked, .untilClose: nil
        }
    }

    /// How many of `bytes` (which follow what was observed before) belong to the body, the body's own
    /// framing included. After a complete body, 0.
    public mutating func observe(_ bytes: UnsafeRawBufferPointer) throws(HTTPBodyError) -> Int {
        switch state {
        case .done:
            return 0
        case .untilClose:
            observed += bytes.count
            return bytes.count
        case .length(let remaining):
            let n = min(remaining, bytes.count)
            observed += n
            state = n == remaining ? .done : .length(remaining: remaining - n)
            return n
        case .chunked(let chunked):
            return try observeChunked(bytes, chunked)
        }
    }

    private mutating func observeChunked(_ bytes: UnsafeRawBufferPointer, _ start: Chunked) throws(HTTPBodyError) -> Int {
        var c = start
        var i = 0
        defer { observed += i }
        func here() -> Int { observed + i }
        while i < bytes.count {
            let b = bytes[i]
            switch c {
            case .size(let value, let digits):
                if let digit = Self.hexValue(b) {
                    // chunk-size = 1*HEXDIG; leading zeros are allowed, a value past Int.max is not.
                    let (shifted, o1) = value.multipliedReportingOverflow(by: 16)
                    let (next, o2) = shifted.addingReportingOverflow(digit)
                    guard !o1, !o2 else { throw .invalidChunkSize(offset: here()) }
                    c = .size(value: next, digits: true)
                } else if digits && (b == HTTPSyntax.semicolon || HTTPSyntax.isWhitespace(b)) {
                    // chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
                    pendingSize = value
                    c = b == HTTPSyntax.semicolon ? .extensions : .sizeBWS
                } else if digits && b == HTTPSyntax.cr {
                    c = .sizeLF(size: value)
                } else {
                    throw .invalidChunkSize(offset: here())
                }
                try countLine(here())
                i += 1
            case .sizeBWS:
                // Only whitespace, then ";" or the line's end: "5 5" is no size a reader should guess at.
                if b == HTTPSyntax.cr {
                    c = .sizeLF(size: pendingSize)
                } else if b == HTTPSyntax.semicolon {
                    c = .extensions
                } else if !HTTPSyntax.isWhitespace(b) {
                    throw b == HTTPSyntax.lf ? .missingCRLF(offset: here()) : .invalidChunkSize(offset: here())
                }
                try countLine(here())
                i += 1
            case .extensions:
                if b == HTTPSyntax.cr {
                    c = .sizeLF(size: pendingSize)
                } else if !HTTPSyntax.isFieldChar(b) {
                    throw b == HTTPSyntax.lf ? .missingCRLF(offset: here()) : .invalidChunkSize(offset: here())
                }
                try countLine(here())
                i += 1
            case .sizeLF(let size):
                guard b == HTTPSyntax.lf else { throw .missingCRLF(offset: here()) }
                lineLength = 0
                // last-chunk = 1*("0") [ chunk-ext ] CRLF; then the trailer section.
                c = size == 0 ? .trailerStart : .data(remaining: size)
                i += 1
            case .data(let remaining):
                let n = min(remaining, bytes.count - i)
                i += n
                c = n == remaining ? .dataCR : .data(remaining: remaining - n)
            case .dataCR:
                guard b == HTTPSyntax.cr else { throw .missingCRLF(offset: here()) }
                c = .dataLF
                i += 1
            case .dataLF:
                guard b == HTTPSyntax.lf else { throw .missingCRLF(offset: here()) }
                c = .size(value: 0, digits: false)
                i += 1
            case .trailerStart:
                if b == HTTPSyntax.cr {
                    c = .lastLF
                } else if HTTPSyntax.isWhitespace(b) {
                    throw .invalidTrailer(offset: here())  // obs-fold (RFC 9112 §5.2)
                } else if HTTPSyntax.isFieldChar(b) {
                    c = .trailerLine
                } else {
                    throw b == HTTPSyntax.lf ? .missingCRLF(offset: here()) : .invalidTrailer(offset: here())
                }
                try countTrailer(here())
                i += 1
            case .trailerLine:
                if b == HTTPSyntax.cr {
                    c = .trailerLF
                } else if !HTTPSyntax.isFieldChar(b) {
                    throw b == HTTPSyntax.lf ? .missingCRLF(offset: here()) : .invalidTrailer(offset: here())
                }
                try countTrailer(here())
                i += 1
            case .trailerLF:
                guard b == HTTPSyntax.lf else { throw .missingCRLF(offset: here()) }
                c = .trailerStart
                try countTrailer(here())
                i += 1
            case .lastLF:
                guard b == HTTPSyntax.lf else { throw .missingCRLF(offset: here()) }
                i += 1
                state = .done
                return i
            }
        }
        state = .chunked(c)
        return i
    }

    private mutating func countLine(_ offset: Int) throws(HTTPBodyError) {
        lineLength += 1
        if lineLength > Self.maxChunkLine { throw .chunkLineTooLong(offset: offset) }
    }

    private mutating func countTrailer(_ offset: Int) throws(HTTPBodyError) {
        lineLength += 1
        if lineLength > maxTrailer { throw .trailerTooLarge(offset: offset) }
    }

    @inline(__always) private static func hexValue(_ b: UInt8) -> Int? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): Int(b - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): Int(b - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): Int(b - UInt8(ascii: "A") + 10)
        default: nil
        }
    }
}
