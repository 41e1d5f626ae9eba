@_spi(OneTunInternals) @testable import OneTunCore

/// A resource record for `DNSBuilder`.
struct TestRecord {
    enum Data {
        case a(String)
        case aaaa(String)
        case cname(String)
        /// An SOA whose TTL is the record's and whose MINIMUM is this.
        case soa(minimum: UInt32)
        case ns(String)
        case raw(type: UInt16, [UInt8])
    }

    var name: String
    var ttl: UInt32
    var data: Data
    var recordClass: UInt16 = 1

    init(_ name: String, ttl: UInt32 = 300, _ data: Data, recordClass: UInt16 = 1) {
        self.name = name
        self.ttl = ttl
        self.data = data
        self.recordClass = recordClass
    }
}

/// Writes DNS messages for tests, compressing a name equal to the first question's to a pointer at
/// offset 12 when `compress` is set (the way servers do).
struct DNSBuilder {
    var bytes: [UInt8] = []
    var compress = true
    var questionName: String?

    static func wire(_ name: String) -> [UInt8] {
        var out: [UInt8] = []
        for label in name.split(separator: ".", omittingEmptySubsequences: true) {
            out.append(UInt8(label.utf8.count))
            out += Array(label.utf8)
        }
        out.append(0)
        return out
    }

    mutating func u16(_ v: UInt16) { bytes += [UInt8(v >> 8), UInt8(v & 0xFF)] }
    mutating func u32(_ v: UInt32) { bytes += [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }

    mutating func name(_ name: String) {
        if compress, let q = questionName, q.lowercased() == name.lowercased() {
            bytes += [0xC0, 12]
        } else {
            bytes += Self.wire(name)
        }
    }

    mutating func record(_ r: TestRecord) {
        name(r.name)
        var rdata: [UInt8] = []
        let type: UInt16
        switch r.data {
        case .a(let text):
            type = 1
            let a = IPv4Address(text)!
            rdata = [UInt8(a.rawValue >> 24), UInt8((a.rawValue >> 16) & 0xFF), UInt8((a.rawValue >> 8) & 0xFF), UInt8(a.rawValue & 0xFF)]
        case .aaaa(let text):
            type = 28
            let a = IPv6Address(text)!
            for i in 0..<8 { rdata += [UInt8(a.segment(i) >> 8), UInt8(a.segment(i) & 0xFF)] }
        case .cname(let target):
            type = 5
            rdata = Self.wire(target)
        case .ns(let target):
            type = 2
            rdata = Self.wire(target)
        case .soa(let minimum):
            type = 6
            rdata = Self.wire("ns.example") + Self.wire("hostmaster.example")
            for v in [UInt32(1), 7200, 3600, 1_209_600, minimum] {
                rdata += [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)]
            }
        case .raw(let t, let data):
            type = t
            rdata = data
        }
        u16(type)
        u16(r.recordClass)
        u32(r.ttl)
        u16(UInt16(rdata.count))
        bytes += rdata
    }

    /// A whole message: header, one question (or none), the records.
    static func message(
        id: UInt16, flags: UInt16, question: (String, UInt16)?, answers: [TestRecord] = [], authority: [TestRecord] = [],
        additional: [TestRecord] = [], compress: Bool = true
    ) -> [UInt8] {
        var b = DNSBuilder()
        b.compress = compress
        b.u16(id)
        b.u16(flags)
        b.u16(question == nil ? 0 : 1)
        b.u16(UInt16(answers.count))
        b.u16(UInt16(authority.count))
        b.u16(UInt16(additional.count))
        if let (name, type) = question {
            b.bytes += wire(name)
            b.u16(type)
            b.u16(1)
            b.questionName = name
        }
        for r in answers + authority + additional { b.record(r) }
        return b.bytes
    }

    /// Flags of a response: QR, RD, RA, and the RCODE; TC when `truncated`.
    static func responseFlags(rcode: UInt8 = 0, truncated: Bool = false) -> UInt16 {
        0x8000 | 0x0100 | 0x0080 | (truncated ? 0x0200 : 0) | UInt16(rcode)
    }
}

/// A query as the resolver wrote it.
struct SeenQuery {
    var id: UInt16
    var name: String
    var type: UInt16
    var transmission: DNSTransmission

    init(_ bytes: [UInt8], _ transmission: DNSTransmission) {
        self.transmission = transmission
        (id, name, type) = bytes.withUnsafeBytes { raw in
            let m = try! DNSMessage(validating: raw)
            precondition(m.header.questionCount == 1 && !m.header.isResponse && m.header.recursionDesired)
            let q = m.question(0)
            return (m.header.id, m.name(at: q.nameOffset).description, q.type.rawValue)
        }
    }

    var port: UInt16? {
        if case .udp(let port) = transmission.transport { return port }
        return nil
    }

    /// A response to this query (same id and question) with `answers` and `authority`.
    func response(
        rcode: UInt8 = 0, truncated: Bool = false, answers: [TestRecord] = [], authority: [TestRecord] = [], questionName: String? = nil,
        id: UInt16? = nil, type: UInt16? = nil
    ) -> [UInt8] {
        DNSBuilder.message(
            id: id ?? self.id, flags: DNSBuilder.responseFlags(rcode: rcode, truncated: truncated),
            question: (questionName ?? name, type ?? self.type), answers: answers, authority: authority)
    }
}
