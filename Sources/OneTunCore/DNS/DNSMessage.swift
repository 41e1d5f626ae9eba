// DNS messages (RFC 1035 §4): a checked view for responses and a writer for queries.
//
// The view follows the packet views of Net/ (smoltcp's `new_checked`): `init(validating:)` walks the header,
// the question section and the answer and authority sections once, checking every length and every name, so
// the accessors after it never read out of bounds. The additional section is not read (a stub resolver uses
// nothing from it), so nothing there can make a message invalid.

/// A resource record type (RFC 1035 §3.2.2; AAAA RFC 3596 §2.1).
public struct DNSType: RawRepresentable, Hashable, Sendable, BitwiseCopyable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let a = DNSType(rawValue: 1)
    public static let ns = DNSType(rawValue: 2)
    public static let cname = DNSType(rawValue: 5)
    public static let soa = DNSType(rawValue: 6)
    public static let aaaa = DNSType(rawValue: 28)

    public var description: String {
        switch self {
        case .a: "A"
        case .ns: "NS"
        case .cname: "CNAME"
        case .soa: "SOA"
        case .aaaa: "AAAA"
        default: "TYPE\(rawValue)"
        }
    }
}

/// A resource record class (RFC 1035 §3.2.4); only IN is asked for and believed.
public struct DNSClass: RawRepresentable, Hashable, Sendable, BitwiseCopyable {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let internet = DNSClass(rawValue: 1)
}

/// The RCODE of a response (RFC 1035 §4.1.1).
public struct DNSResponseCode: RawRepresentable, Hashable, Sendable, BitwiseCopyable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let noError = DNSResponseCode(rawValue: 0)
    public static let formatError = DNSResponseCode(rawValue: 1)
    public static let serverFailure = DNSResponseCode(rawValue: 2)
    /// NXDOMAIN: the name does not exist (RFC 2308 §1 calls it that).
    public static let nameError = DNSResponseCode(rawValue: 3)
    public static let notImplemented = DNSResponseCode(rawValue: 4)
    public static let refused = DNSResponseCode(rawValue: 5)

    public var description: String {
        switch self {
        case .noError: "NOERROR"
        case .formatError: "FORMERR"
        case .serverFailure: "SERVFAIL"
        case .nameError: "NXDOMAIN"
        case .notImplemented: "NOTIMP"
        case .refused: "REFUSED"
        default: "RCODE\(rawValue)"
        }
    }
}

/// Why a DNS message (or a name in it) was refused, and at which byte offset of the message.
public struct DNSMessageError: Error, Equatable, Hashable, Sendable, CustomStringConvertible {
    public enum Reason: Equatable, Hashable, Sendable {
        /// The message ends before a header, a name, a record's fixed fields or its RDATA.
        case truncated
        /// A length byte with the top bits 01 or 10 (RFC 1035 §4.1.4 reserves them; RFC 6891 §5 retired the
        /// extended label types).
        case badLabel
        /// A name longer than 255 octets, counted as on the wire uncompressed (RFC 1035 §2.3.4).
        case nameTooLong
        /// A compression pointer that does not point strictly before the labels that led to it, or too
        /// many pointers in one name: the loop protection of RFC 1035 §4.1.4 ("a prior occurrence").
        case badPointer
        /// RDATA whose length does not fit its type: A not 4 octets, AAAA not 16 (RFC 3596 §2.2), a
        /// CNAME or SOA whose names and fields do not fill it exactly.
        case badRecordData
    }

    public var reason: Reason
    public var offset: Int

    public init(_ reason: Reason, at offset: Int) {
        self.reason = reason
        self.offset = offset
    }

    public var description: String { "\(reason) at byte \(offset)" }
}

// MARK: - Names

/// A domain name, held in wire form (RFC 1035 §3.1: length-prefixed labels ending with the root's zero),
/// with ASCII letters lowercased: names compare case-insensitively (RFC 4343 §3), so two spellings of one
/// name are one `DNSName` (one cache entry, one question). Every label is 1–63 octets and the whole at most
/// 255 (RFC 1035 §2.3.4).
public struct DNSName: Hashable, Sendable, CustomStringConvertible {
    public static let maximumLength = 255
    public static let maximumLabelLength = 63

    /// The wire form, lowercased, ending with the root label's zero octet.
    public private(set) var wire: [UInt8]

    init(uncheckedWire wire: [UInt8]) { self.wire = wire }

    /// The name in the usual dotted text, a trailing dot allowed ("example.com" and "example.com." are
    /// the same name). Nil for the empty name or the root alone (nothing to look up), an empty label
    /// ("a..b"), a label over 63 octets, or a name over 255. No escapes: a backslash is a plain octet, as
    /// every other octet but the dot (RFC 2181 §11 allows any octet in a label).
    public init?(_ text: String) {
        var utf8 = Array(text.utf8)
        if utf8.last == UInt8(ascii: ".") { utf8.removeLast() }
        guard !utf8.isEmpty, utf8.count + 2 <= Self.maximumLength else { return nil }
        var wire: [UInt8] = []
        wire.reserveCapacity(utf8.count + 2)
        var start = 0
        while start <= utf8.count {
            var end = start
            while end < utf8.count && utf8[end] != UInt8(ascii: ".") { end += 1 }
            let length = end - start
            guard length > 0, length <= Self.maximumLabelLength else { return nil }
            wire.append(UInt8(length))
            for i in start..<end { wire.append(Self.lowercased(utf8[i])) }
            start = end + 1
        }
        wire.append(0)
        self.wire = wire
    }

    @inline(__always) static func lowercased(_ byte: UInt8) -> UInt8 {
        byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
    }

    /// The number of labels, the root not counted.
    public var labelCount: Int {
        var count = 0
        var i = 0
        while wire[i] != 0 {
            count += 1
            i += 1 + Int(wire[i])
        }
        return count
    }

    /// Dotted text without the trailing dot; a dot, a backslash or a byte outside printable ASCII inside a
    /// label is written as RFC 4343 §2.1 escapes it (`\.`, `\\`, `\DDD`), so the text names one name.
    public var description: String {
        var text = ""
        var i = 0
        while wire[i] != 0 {
            if i > 0 { text.append(".") }
            let length = Int(wire[i])
            for byte in wire[(i + 1)...(i + length)] {
                switch byte {
                case UInt8(ascii: "."), UInt8(ascii: "\\"):
                    text.append("\\")
                    text.append(Character(Unicode.Scalar(byte)))
                case 0x21...0x7E:
                    text.append(Character(Unicode.Scalar(byte)))
                default:
                    text.append("\\")
                    let digits = String(byte)
                    text.append(String(repeating: "0", count: 3 - digits.count) + digits)
                }
            }
            i += 1 + length
        }
        return text
    }
}

// MARK: - Header

/// The fixed 12-octet header (RFC 1035 §4.1.1):
///
///     |                      ID                       |
///     |QR|   Opcode  |AA|TC|RD|RA|   Z    |   RCODE   |
///     |                    QDCOUNT                    |
///     |                    ANCOUNT                    |
///     |                    NSCOUNT                    |
///     |                    ARCOUNT                    |
public struct DNSHeader: Hashable, Sendable, BitwiseCopyable {
    enum Field {
        static let id = 0
        static let flags = 2
        static let questionCount = 4
        static let answerCount = 6
        static let authorityCount = 8
        static let additionalCount = 10
    }

    public static let length = 12

    public var id: UInt16
    public var flags: UInt16
    public var questionCount: UInt16
    public var answerCount: UInt16
    public var authorityCount: UInt16
    public var additionalCount: UInt16

    public var isResponse: Bool { flags & 0x8000 != 0 }
    public var opcode: UInt8 { UInt8((flags >> 11) & 0xF) }
    public var isAuthoritative: Bool { flags & 0x0400 != 0 }
    /// TC: the message was cut to fit the UDP limit; ask again over TCP (RFC 7766 §5).
    public var isTruncated: Bool { flags & 0x0200 != 0 }
    public var recursionDesired: Bool { flags & 0x0100 != 0 }
    public var recursionAvailable: Bool { flags & 0x0080 != 0 }
    public var responseCode: DNSResponseCode { DNSResponseCode(rawValue: UInt8(flags & 0xF)) }

    /// The header at the start of `bytes`; nil when fewer than 12 octets.
    public init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= Self.length else { return nil }
        id = bytes.netU16(Field.id)
        flags = bytes.netU16(Field.flags)
        questionCount = bytes.netU16(Field.questionCount)
        answerCount = bytes.netU16(Field.answerCount)
        authorityCount = bytes.netU16(Field.authorityCount)
        additionalCount = bytes.netU16(Field.additionalCount)
    }

    public init(id: UInt16, flags: UInt16, questionCount: UInt16 = 0, answerCount: UInt16 = 0, authorityCount: UInt16 = 0, additionalCount: UInt16 = 0) {
        self.id = id
        self.flags = flags
        self.questionCount = questionCount
        self.answerCount = answerCount
        self.authorityCount = authorityCount
        self.additionalCount = additionalCount
    }

    /// Writes the 12 octets at the start of `bytes` (which must hold them).
    public func emit(into bytes: UnsafeMutableRawBufferPointer) {
        precondition(bytes.count >= Self.length, "no room for a DNS header")
        bytes.netStore(id, at: Field.id)
        bytes.netStore(flags, at: Field.flags)
        bytes.netStore(questionCount, at: Field.questionCount)
        bytes.netStore(answerCount, at: Field.answerCount)
        bytes.netStore(authorityCount, at: Field.authorityCount)
        bytes.netStore(additionalCount, at: Field.additionalCount)
    }
}

// MARK: - The view

/// One question of a message: its name (at `nameOffset`, possibly compressed), type and class.
public struct DNSQuestionView: Sendable, BitwiseCopyable {
    public var nameOffset: Int
    public var type: DNSType
    public var questionClass: DNSClass
}

/// One resource record of a message (RFC 1035 §4.1.3): its owner name (at `nameOffset`, possibly
/// compressed), type, class, TTL and where its RDATA lies in the message.
public struct DNSRecordView: Sendable, BitwiseCopyable {
    public var nameOffset: Int
    public var type: DNSType
    public var recordClass: DNSClass
    /// RFC 2181 §8: a TTL with the top bit set is read as zero.
    public var ttl: UInt32
    public var dataOffset: Int
    public var dataLength: Int
}

/// The sections a `DNSMessage` reads.
public enum DNSSection: Sendable {
    case answer, authority
}

/// A read-only view of a DNS message, valid only inside the `withUnsafe…` scope that owns the memory;
/// never store one.
///
/// `init(validating:)` checks the header, every question, and every record of the answer and authority
/// sections: each name (labels ≤ 63, ≤ 255 octets, pointers strictly backwards, RFC 1035 §4.1.4), each
/// record's fixed fields and RDATA bounds, and the RDATA of A, AAAA, CNAME and SOA records. Other types'
/// RDATA is skipped by its length. A message with TC set may end anywhere after its questions (RFC 2181
/// §9 asks servers to drop whole RRsets, but not all do): its records up to the first that does not parse
/// are kept, the rest ignored, and `answerCount` / `authorityCount` say how many were kept.
public struct DNSMessage {
    public let bytes: UnsafeRawBufferPointer
    public let header: DNSHeader
    /// The records of each section that the view holds (the header's counts, or fewer for a TC message).
    public let answerCount: Int
    public let authorityCount: Int
    let answerOffset: Int
    let authorityOffset: Int

    /// Pointers one name may follow; a name of 127 one-octet labels needs at most that many.
    static let maximumPointers = 127

    public init(validating bytes: UnsafeRawBufferPointer) throws(DNSMessageError) {
        guard let header = DNSHeader(bytes) else { throw DNSMessageError(.truncated, at: bytes.count) }
        self.bytes = bytes
        self.header = header
        var offset = DNSHeader.length
        for _ in 0..<Int(header.questionCount) {
            offset = try Self.skipName(bytes, at: offset)
            guard offset + 4 <= bytes.count else { throw DNSMessageError(.truncated, at: bytes.count) }
            offset += 4
        }
        answerOffset = offset
        var counts = (0, 0)
        var authorityStart = offset
        do throws(DNSMessageError) {
            for _ in 0..<Int(header.answerCount) {
                offset = try Self.skipRecord(bytes, at: offset)
                counts.0 += 1
            }
            authorityStart = offset
            for _ in 0..<Int(header.authorityCount) {
                offset = try Self.skipRecord(bytes, at: offset)
                counts.1 += 1
            }
        } catch {
            guard header.isTruncated else { throw error }
            if counts.0 < Int(header.answerCount) { authorityStart = offset }
        }
        authorityOffset = authorityStart
        (answerCount, authorityCount) = counts
    }

    /// The question at `index` (< `header.questionCount`).
    public func question(_ index: Int) -> DNSQuestionView {
        precondition(index < Int(header.questionCount), "no such question")
        var offset = DNSHeader.length
        for _ in 0..<index { offset = Self.uncheckedSkipName(bytes, at: offset) + 4 }
        let end = Self.uncheckedSkipName(bytes, at: offset)
        return DNSQuestionView(
            nameOffset: offset, type: DNSType(rawValue: bytes.netU16(end)), questionClass: DNSClass(rawValue: bytes.netU16(end + 2)))
    }

    /// The records the view holds in `section`, in order.
    public func records(_ section: DNSSection) -> DNSRecords {
        switch section {
        case .answer: DNSRecords(bytes: bytes, offset: answerOffset, remaining: answerCount)
        case .authority: DNSRecords(bytes: bytes, offset: authorityOffset, remaining: authorityCount)
        }
    }

    // MARK: Names in the message

    /// Whether the (possibly compressed) name at `offset` is `name`, ASCII case ignored (RFC 4343 §3).
    /// `offset` must be where the view found a name.
    public func name(at offset: Int, equals name: DNSName) -> Bool {
        var position = 0
        var matches = true
        name.wire.withUnsafeBufferPointer { wire in
            Self.uncheckedWalkName(bytes, at: offset) { label in
                guard matches, position + 1 + label.count < wire.count, Int(wire[position]) == label.count else {
                    matches = false
                    return
                }
                for i in 0..<label.count where DNSName.lowercased(label[i]) != wire[position + 1 + i] {
                    matches = false
                    return
                }
                position += 1 + label.count
            }
        }
        // The walk stops at the message's root label; the name must end there too.
        return matches && position == name.wire.count - 1
    }

    /// The (possibly compressed) name at `offset` as a `DNSName`, lowercased. `offset` must be where the
    /// view found a name (an owner, a question, CNAME RDATA).
    public func name(at offset: Int) -> DNSName {
        var wire: [UInt8] = []
        Self.uncheckedWalkName(bytes, at: offset) { label in
            wire.append(UInt8(label.count))
            for byte in label { wire.append(DNSName.lowercased(byte)) }
        }
        wire.append(0)
        return DNSName(uncheckedWire: wire)
    }

    /// The target of a CNAME record the view holds.
    public func canonicalName(of record: DNSRecordView) -> DNSName {
        precondition(record.type == .cname, "not a CNAME record")
        return name(at: record.dataOffset)
    }

    /// The address of an A or AAAA record the view holds.
    public func address(of record: DNSRecordView) -> IPAddress {
        switch record.type {
        case .a: .v4(IPv4Address(loading: bytes, at: record.dataOffset))
        case .aaaa: .v6(IPv6Address(loading: bytes, at: record.dataOffset))
        default: preconditionFailure("not an address record")
        }
    }

    /// MINIMUM, the last field of an SOA record the view holds (RFC 1035 §3.3.13): with the record's own
    /// TTL, the bound of negative caching (RFC 2308 §5).
    public func soaMinimum(of record: DNSRecordView) -> UInt32 {
        precondition(record.type == .soa, "not an SOA record")
        return bytes.netU32(record.dataOffset + record.dataLength - 4)
    }

    // MARK: Walking

    /// The end of the name at `offset` in place (after its root label or its first pointer), checking it
    /// whole: RFC 1035 §4.1.4's pointers, each strictly before the labels that led to it (so no loop), at
    /// most `maximumPointers` of them; labels 1–63 octets; at most 255 octets in all.
    static func skipName(_ bytes: UnsafeRawBufferPointer, at start: Int) throws(DNSMessageError) -> Int {
        var position = start
        // Labels read so far start at or after `floor`; a pointer must go below it.
        var floor = start
        var end: Int? = nil
        var length = 0
        var pointers = 0
        while true {
            guard position < bytes.count else { throw DNSMessageError(.truncated, at: bytes.count) }
            let byte = bytes[position]
            switch byte >> 6 {
            case 0:
                length += 1 + Int(byte)
                guard length <= DNSName.maximumLength else { throw DNSMessageError(.nameTooLong, at: position) }
                if byte == 0 { return end ?? position + 1 }
                guard position + 1 + Int(byte) <= bytes.count else { throw DNSMessageError(.truncated, at: bytes.count) }
                position += 1 + Int(byte)
            case 3:
                guard position + 2 <= bytes.count else { throw DNSMessageError(.truncated, at: bytes.count) }
                let target = Int(byte & 0x3F) << 8 | Int(bytes[position + 1])
                pointers += 1
                guard target < floor, pointers <= maximumPointers else { throw DNSMessageError(.badPointer, at: position) }
                if end == nil { end = position + 2 }
                floor = target
                position = target
            default:
                throw DNSMessageError(.badLabel, at: position)
            }
        }
    }

    /// Calls `body` with each label of a name `skipName` accepted, following pointers.
    static func uncheckedWalkName(_ bytes: UnsafeRawBufferPointer, at start: Int, _ body: (UnsafeRawBufferPointer) -> Void) {
        var position = start
        while true {
            let byte = bytes[position]
            if byte >= 0xC0 {
                position = Int(byte & 0x3F) << 8 | Int(bytes[position + 1])
            } else if byte == 0 {
                return
            } else {
                body(bytes.netSlice(position + 1, position + 1 + Int(byte)))
                position += 1 + Int(byte)
            }
        }
    }

    /// The end in place of a name `skipName` accepted.
    static func uncheckedSkipName(_ bytes: UnsafeRawBufferPointer, at start: Int) -> Int {
        var position = start
        while true {
            let byte = bytes[position]
            if byte >= 0xC0 { return position + 2 }
            if byte == 0 { return position + 1 }
            position += 1 + Int(byte)
        }
    }

    /// The end of the record at `offset`, checking its name, fixed fields and RDATA (RFC 1035 §4.1.3).
    static func skipRecord(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(DNSMessageError) -> Int {
        let fixed = try skipName(bytes, at: offset)
        guard fixed + 10 <= bytes.count else { throw DNSMessageError(.truncated, at: bytes.count) }
        let type = DNSType(rawValue: bytes.netU16(fixed))
        let dataLength = Int(bytes.netU16(fixed + 8))
        let data = fixed + 10
        let end = data + dataLength
        guard end <= bytes.count else { throw DNSMessageError(.truncated, at: bytes.count) }
        // A pointer in RDATA may point anywhere before it; the name must still end inside the RDATA.
        let inRecord = bytes.netSlice(0, end)
        switch type {
        case .a:
            guard dataLength == 4 else { throw DNSMessageError(.badRecordData, at: fixed + 8) }
        case .aaaa:
            guard dataLength == 16 else { throw DNSMessageError(.badRecordData, at: fixed + 8) }
        case .cname:
            // RFC 1035 §3.3.1: one name, filling the RDATA.
            guard try skipName(inRecord, at: data) == end else { throw DNSMessageError(.badRecordData, at: fixed + 8) }
        case .soa:
            // RFC 1035 §3.3.13: MNAME, RNAME, then SERIAL, REFRESH, RETRY, EXPIRE, MINIMUM (32 bits each).
            let rname = try skipName(inRecord, at: data)
            let fields = try skipName(inRecord, at: rname)
            guard fields + 20 == end else { throw DNSMessageError(.badRecordData, at: fixed + 8) }
        default:
            break
        }
        return end
    }
}

/// The records of one section of a `DNSMessage`, in order (valid in the same scope as the view).
public struct DNSRecords: Sequence, IteratorProtocol {
    let bytes: UnsafeRawBufferPointer
    var offset: Int
    var remaining: Int

    public mutating func next() -> DNSRecordView? {
        guard remaining > 0 else { return nil }
        remaining -= 1
        let fixed = DNSMessage.uncheckedSkipName(bytes, at: offset)
        let ttl = bytes.netU32(fixed + 4)
        let record = DNSRecordView(
            nameOffset: offset, type: DNSType(rawValue: bytes.netU16(fixed)), recordClass: DNSClass(rawValue: bytes.netU16(fixed + 2)),
            ttl: ttl & 0x8000_0000 == 0 ? ttl : 0, dataOffset: fixed + 10, dataLength: Int(bytes.netU16(fixed + 8)))
        offset = record.dataOffset + record.dataLength
        return record
    }
}

// MARK: - Queries

/// Writes standard queries (RFC 1035 §4.1.1, §4.1.2).
public enum DNSQuery {
    /// The longest query `write` makes: header, a 255-octet name, type and class.
    public static let maximumLength = DNSHeader.length + DNSName.maximumLength + 4

    /// Writes a query for `name`, `type`, class IN with `id` at the start of `buffer`: QR 0, OPCODE 0
    /// (QUERY), RD 1 (a stub asks a recursive server, RFC 1035 §7.1), one question, no records, the name
    /// uncompressed. Returns its length; nil when `buffer` is too small.
    public static func write(id: UInt16, name: DNSName, type: DNSType, into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        let length = DNSHeader.length + name.wire.count + 4
        guard buffer.count >= length else { return nil }
        DNSHeader(id: id, flags: 0x0100, questionCount: 1).emit(into: buffer)
        name.wire.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: buffer[DNSHeader.length...]).copyMemory(from: $0) }
        let fields = DNSHeader.length + name.wire.count
        buffer.netStore(type.rawValue, at: fields)
        buffer.netStore(DNSClass.internet.rawValue, at: fields + 2)
        return length
    }
}
