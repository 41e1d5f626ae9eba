/// A TCP option kind (IANA "TCP Option Kind Numbers").
@_spi(OneTunInternals) public struct TCPOptionKind: RawRepresentable, Hashable, Sendable, BitwiseCopyable, CustomStringConvertible {
    public var rawValue: UInt8

    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// End of Option List (RFC 9293 §3.2).
    @inlinable public static var endOfList: TCPOptionKind { TCPOptionKind(rawValue: 0) }
    /// No-Operation (RFC 9293 §3.2).
    @inlinable public static var noOperation: TCPOptionKind { TCPOptionKind(rawValue: 1) }
    /// Maximum Segment Size (RFC 9293 §3.2), length 4.
    @inlinable public static var maxSegmentSize: TCPOptionKind { TCPOptionKind(rawValue: 2) }
    /// Window Scale (RFC 7323 §2.2), length 3.
    @inlinable public static var windowScale: TCPOptionKind { TCPOptionKind(rawValue: 3) }
    /// SACK-Permitted (RFC 2018 §2), length 2.
    @inlinable public static var sackPermitted: TCPOptionKind { TCPOptionKind(rawValue: 4) }
    /// SACK (RFC 2018 §3), length 2 + 8n.
    @inlinable public static var sack: TCPOptionKind { TCPOptionKind(rawValue: 5) }
    /// Timestamps (RFC 7323 §3.2), length 10.
    @inlinable public static var timestamps: TCPOptionKind { TCPOptionKind(rawValue: 8) }

    public var description: String {
        switch rawValue {
        case 0: "eol"
        case 1: "nop"
        case 2: "mss"
        case 3: "wscale"
        case 4: "sackOK"
        case 5: "sack"
        case 8: "TS"
        default: "option \(rawValue)"
        }
    }
}

/// One SACK block (RFC 2018 §3): the sequence numbers of the first byte received and of the byte after the
/// last.
@_spi(OneTunInternals) public struct TCPSackBlock: Hashable, Sendable, BitwiseCopyable {
    public var left: UInt32
    public var right: UInt32

    @inlinable public init(left: UInt32, right: UInt32) {
        self.left = left
        self.right = right
    }
}

/// Up to four SACK blocks held inline: a SACK option has room for at most four (RFC 2018 §3), and the data
/// path must not allocate an array per segment.
@_spi(OneTunInternals) public struct TCPSackBlocks: RandomAccessCollection, Hashable, Sendable, BitwiseCopyable,
    ExpressibleByArrayLiteral
{
    public static let capacity = 4

    @usableFromInline var storage: (TCPSackBlock, TCPSackBlock, TCPSackBlock, TCPSackBlock)
    @usableFromInline var stored: UInt8

    @inlinable public init() {
        let zero = TCPSackBlock(left: 0, right: 0)
        storage = (zero, zero, zero, zero)
        stored = 0
    }

    /// Takes the first four blocks; the rest do not fit in a SACK option.
    public init(arrayLiteral elements: TCPSackBlock...) {
        self.init()
        for block in elements where !isFull { append(block) }
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { Int(stored) }
    public var isFull: Bool { stored == TCPSackBlocks.capacity }

    public subscript(position: Int) -> TCPSackBlock {
        precondition(position >= 0 && position < Int(stored), "SACK block index out of range")
        return withUnsafeBytes(of: storage) { $0.load(fromByteOffset: position * 8, as: TCPSackBlock.self) }
    }

    /// Appends a block; false (and no change) when all four slots are taken.
    @discardableResult
    public mutating func append(_ block: TCPSackBlock) -> Bool {
        guard !isFull else { return false }
        let index = Int(stored)
        withUnsafeMutableBytes(of: &storage) { $0.storeBytes(of: block, toByteOffset: index * 8, as: TCPSackBlock.self) }
        stored += 1
        return true
    }

    public mutating func removeAll() { self = TCPSackBlocks() }

    /// Keeps the first `count` blocks.
    public mutating func truncate(to count: Int) {
        guard count < Int(stored) else { return }
        var kept = TCPSackBlocks()
        for i in 0..<Swift.max(count, 0) { kept.append(self[i]) }
        self = kept
    }

    public static func == (a: TCPSackBlocks, b: TCPSackBlocks) -> Bool { a.elementsEqual(b) }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(stored)
        for block in self { hasher.combine(block) }
    }
}

/// The Timestamps option (RFC 7323 §3.2): TSval and TSecr.
@_spi(OneTunInternals) public struct TCPTimestamps: Hashable, Sendable, BitwiseCopyable {
    public var value: UInt32
    public var echoReply: UInt32

    @inlinable public init(value: UInt32, echoReply: UInt32) {
        self.value = value
        self.echoReply = echoReply
    }
}

/// One TCP option as read from a header.
@_spi(OneTunInternals) public enum TCPOption: Hashable, Sendable, BitwiseCopyable {
    case endOfList
    case noOperation
    case maxSegmentSize(UInt16)
    case windowScale(UInt8)
    case sackPermitted
    case sack(TCPSackBlocks)
    case timestamps(TCPTimestamps)
    /// A kind we do not interpret, skipped by its length (which counts the kind and length bytes).
    case unknown(kind: TCPOptionKind, length: Int)
}

/// Reads the options area of a TCP header, one option at a time (RFC 9293 §3.2).
///
/// `nextOption()` throws `.malformed` for a length byte that is missing, below 2, past the end, or wrong for
/// a known kind (MSS 4, window scale 3, SACK-permitted 2, SACK 2 + 8n with n in 1…4, timestamps 10).
/// As a `Sequence` it stops at the first malformed option; `TCPSegment(validating:)` has already
/// rejected those, so iterating a validated segment's options sees them all. End of Option List is
/// returned once and ends the list; what follows it is padding.
@_spi(OneTunInternals) public struct TCPOptions: Sequence, IteratorProtocol {
    public let bytes: UnsafeRawBufferPointer
    var offset = 0

    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    public mutating func next() -> TCPOption? {
        do {
            return try nextOption()
        } catch {
            offset = bytes.count
            return nil
        }
    }

    public mutating func nextOption() throws(WireError) -> TCPOption? {
        guard offset < bytes.count else { return nil }
        let kind = TCPOptionKind(rawValue: bytes[offset])
        switch kind {
        case .endOfList:
            offset = bytes.count
            return .endOfList
        case .noOperation:
            offset += 1
            return .noOperation
        default:
            break
        }
        guard bytes.count - offset >= 2 else { throw .malformed }
        let length = Int(bytes[offset + 1])
        guard length >= 2, length <= bytes.count - offset else { throw .malformed }
        let start = offset
        offset += length
        switch kind {
        case .maxSegmentSize:
            guard length == 4 else { throw .malformed }
            return .maxSegmentSize(bytes.netU16(start + 2))
        case .windowScale:
            guard length == 3 else { throw .malformed }
            return .windowScale(bytes[start + 2])
        case .sackPermitted:
            guard length == 2 else { throw .malformed }
            return .sackPermitted
        case .sack:
            let count = (length - 2) / 8
            guard (length - 2) % 8 == 0, count >= 1, count <= TCPSackBlocks.capacity else { throw .malformed }
            var blocks = TCPSackBlocks()
            for i in 0..<count {
                let at = start + 2 + 8 * i
                blocks.append(TCPSackBlock(left: bytes.netU32(at), right: bytes.netU32(at + 4)))
            }
            return .sack(blocks)
        case .timestamps:
            guard length == 10 else { throw .malformed }
            return .timestamps(TCPTimestamps(value: bytes.netU32(start + 2), echoReply: bytes.netU32(start + 6)))
        default:
            return .unknown(kind: kind, length: length)
        }
    }

    /// Throws unless every option in `bytes` is well formed.
    public static func validate(_ bytes: UnsafeRawBufferPointer) throws(WireError) {
        var options = TCPOptions(bytes)
        while try options.nextOption() != nil {}
    }
}
