import Testing
@_spi(OneTunInternals) @testable import OneTunCore

/// The DNS message view and query writer (RFC 1035 §4): names with and without compression, the loop and
/// length protection of §4.1.4, bad lengths and cut messages refused with the offset, a TC message kept
/// up to its cut, and queries that parse back.
@Suite struct DNSMessageTests {
    func parse(_ bytes: [UInt8]) throws(DNSMessageError) -> (DNSHeader, [DNSRecordView], [DNSRecordView]) {
        let result: Result<(DNSHeader, [DNSRecordView], [DNSRecordView]), DNSMessageError> = bytes.withUnsafeBytes { raw in
            do throws(DNSMessageError) {
                let m = try DNSMessage(validating: raw)
                return .success((m.header, Array(m.records(.answer)), Array(m.records(.authority))))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    func error(_ bytes: [UInt8]) -> DNSMessageError? {
        do {
            _ = try parse(bytes)
            return nil
        } catch {
            return error
        }
    }

    /// A header with one question and `answers` answers, then `body`.
    func header(questions: UInt16 = 0, answers: UInt16 = 0, flags: UInt16 = 0x8180) -> [UInt8] {
        [0x12, 0x34, UInt8(flags >> 8), UInt8(flags & 0xFF), 0, UInt8(questions), 0, UInt8(answers), 0, 0, 0, 0]
    }

    // MARK: Names

    @Test func namesAreLowercasedWireFormWithTheirLimits() {
        let name = DNSName("WWW.Example.COM.")!
        #expect(name.wire == DNSBuilder.wire("www.example.com"))
        #expect(name == DNSName("www.example.com"))
        #expect(name.description == "www.example.com" && name.labelCount == 3)
        #expect(DNSName("") == nil && DNSName(".") == nil && DNSName("a..b") == nil && DNSName(".a") == nil && DNSName("a.b..") == nil)
        #expect(DNSName(String(repeating: "x", count: 63) + ".com") != nil)
        #expect(DNSName(String(repeating: "x", count: 64) + ".com") == nil, "labels are at most 63 octets")
        // 255 octets on the wire: four labels of 63 and one of 1 make 4 × 64 + 2 + 1 = 259; three of 63
        // and one of 61 make 3 × 64 + 62 + 1 = 255.
        let l63 = String(repeating: "a", count: 63)
        #expect(DNSName([l63, l63, l63, String(repeating: "b", count: 61)].joined(separator: "."))?.wire.count == 255)
        #expect(DNSName([l63, l63, l63, String(repeating: "b", count: 62)].joined(separator: ".")) == nil)
        // Any octet but the dot is a label's; the text escapes what would read otherwise.
        #expect(DNSName("a\\b c")!.description == "a\\\\b\\032c")
    }

    @Test func compressedNamesAreFollowedAndComparedCaseInsensitively() throws {
        // www.example.com A, answered by a CNAME to "cdn" + pointer to "example.com" inside the question, and
        // an A for the CNAME's target named by a pointer into the CNAME's RDATA.
        var bytes = header(questions: 1, answers: 2)
        bytes += DNSBuilder.wire("WWW.example.com") + [0, 1, 0, 1]
        // Answer 1: owner = pointer to the question (12), CNAME → "cdn" + pointer to "example.com" (16).
        bytes += [0xC0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 6, 3] + Array("cdn".utf8) + [0xC0, 16]
        let cnameTarget = bytes.count - 6
        // Answer 2: owner = pointer to the CNAME target, A 192.0.2.7.
        bytes += [0xC0, UInt8(cnameTarget), 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 192, 0, 2, 7]
        try bytes.withUnsafeBytes { raw in
            let m = try DNSMessage(validating: raw)
            let q = m.question(0)
            #expect(q.type == .a && q.questionClass == .internet)
            #expect(m.name(at: q.nameOffset, equals: DNSName("www.EXAMPLE.com")!))
            #expect(!m.name(at: q.nameOffset, equals: DNSName("www.example.co")!))
            #expect(!m.name(at: q.nameOffset, equals: DNSName("www.example.com.x")!))
            #expect(!m.name(at: q.nameOffset, equals: DNSName("example.com")!))
            let records = Array(m.records(.answer))
            #expect(records.count == 2)
            #expect(records[0].type == .cname && records[0].ttl == 60)
            #expect(m.canonicalName(of: records[0]) == DNSName("cdn.example.com"))
            #expect(m.name(at: records[0].nameOffset) == DNSName("www.example.com"))
            #expect(m.name(at: records[1].nameOffset, equals: DNSName("CDN.example.com")!))
            #expect(m.address(of: records[1]) == .v4(IPv4Address(192, 0, 2, 7)))
        }
    }

    @Test func pointerLoopsAndForwardPointersAreRefused() {
        // A question name that points at itself.
        var selfLoop = header(questions: 1)
        selfLoop += [0xC0, 12, 0, 1, 0, 1]
        #expect(error(selfLoop) == DNSMessageError(.badPointer, at: 12))
        // A label then a pointer back to that label: a loop through one label.
        var labelLoop = header(questions: 1)
        labelLoop += [1, 0x61, 0xC0, 12, 0, 1, 0, 1]
        #expect(error(labelLoop) == DNSMessageError(.badPointer, at: 14))
        // Two names pointing at each other: the first is refused when its pointer goes forward.
        var mutual = header(questions: 2)
        mutual += [0xC0, 18, 0, 1, 0, 1, 0xC0, 12, 0, 1, 0, 1]
        #expect(error(mutual) == DNSMessageError(.badPointer, at: 12))
        // Pointing past the end.
        var outside = header(questions: 1)
        outside += [1, 0x61, 0xFF, 0xFF]
        #expect(error(outside)?.reason == .truncated || error(outside)?.reason == .badPointer)
        // A chain of backward pointers is fine: question 2 → question 1's name.
        var chain = header(questions: 2)
        chain += DNSBuilder.wire("a.b") + [0, 1, 0, 1] + [1, 0x63, 0xC0, 12, 0, 1, 0, 1]
        #expect(error(chain) == nil)
        chain.withUnsafeBytes { raw in
            let m = try! DNSMessage(validating: raw)
            #expect(m.name(at: m.question(1).nameOffset) == DNSName("c.a.b"))
        }
    }

    @Test func aNameOver255OctetsThroughPointersIsRefused() {
        // Four names of 63-octet labels, each the previous with one more label in front: the fourth is
        // 4 × 64 + 1 = 257 octets when read through the pointers.
        var bytes = header(questions: 4)
        var previous = -1
        for i in 0..<4 {
            let start = bytes.count
            bytes.append(63)
            bytes += [UInt8](repeating: UInt8(0x61 + i), count: 63)
            bytes += previous < 0 ? [0] : [0xC0, UInt8(previous)]
            bytes += [0, 1, 0, 1]
            previous = start
        }
        let e = error(bytes)
        #expect(e?.reason == .nameTooLong, "\(String(describing: e))")
        // Three are fine (3 × 64 + 1 = 193).
        var three = header(questions: 3)
        previous = -1
        for i in 0..<3 {
            let start = three.count
            three.append(63)
            three += [UInt8](repeating: UInt8(0x61 + i), count: 63)
            three += previous < 0 ? [0] : [0xC0, UInt8(previous)]
            three += [0, 1, 0, 1]
            previous = start
        }
        #expect(error(three) == nil)
    }

    @Test func reservedLabelTypesAreRefused() {
        for byte: UInt8 in [0x40, 0x80, 0x41] {
            var bytes = header(questions: 1)
            bytes += [byte, 0, 0, 1, 0, 1]
            #expect(error(bytes) == DNSMessageError(.badLabel, at: 12))
        }
    }

    @Test func truncatedMessagesAreRefusedWhereTheyEnd() {
        #expect(error([0x12, 0x34, 0x81]) == DNSMessageError(.truncated, at: 3))
        // The question name runs off the end; then the question's type and class.
        #expect(error(header(questions: 1) + [3, 0x61, 0x62]) == DNSMessageError(.truncated, at: 15))
        #expect(error(header(questions: 1) + [1, 0x61, 0, 0, 1]) == DNSMessageError(.truncated, at: 17))
        // A count promising more questions than there are.
        #expect(error(header(questions: 2) + [0, 0, 1, 0, 1])?.reason == .truncated)
        // A record's fixed fields cut; its RDATA longer than the message.
        let q = DNSBuilder.wire("a") + [0, 1, 0, 1]
        #expect(error(header(questions: 1, answers: 1) + q + [0xC0, 12, 0, 1, 0, 1, 0, 0])?.reason == .truncated)
        #expect(error(header(questions: 1, answers: 1) + q + [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3])?.reason == .truncated)
        // A pointer's second octet missing.
        #expect(error(header(questions: 1) + [0xC0]) == DNSMessageError(.truncated, at: 13))
    }

    @Test func recordDataMustFitItsType() {
        let q = DNSBuilder.wire("a") + [0, 1, 0, 1]
        func answer(type: UInt8, _ rdata: [UInt8]) -> [UInt8] {
            header(questions: 1, answers: 1) + q + [0xC0, 12, 0, type, 0, 1, 0, 0, 0, 1, 0, UInt8(rdata.count)] + rdata
        }
        #expect(error(answer(type: 1, [1, 2, 3, 4, 5])) == DNSMessageError(.badRecordData, at: 29))
        #expect(error(answer(type: 28, [UInt8](repeating: 0, count: 4)))?.reason == .badRecordData)
        #expect(error(answer(type: 28, [UInt8](repeating: 0, count: 16))) == nil)
        // A CNAME whose name ends before its RDATA does, or runs past it.
        #expect(error(answer(type: 5, DNSBuilder.wire("b") + [9]))?.reason == .badRecordData)
        #expect(error(answer(type: 5, [3, 0x61, 0x62]))?.reason == .truncated)
        #expect(error(answer(type: 5, [0xC0, 12])) == nil)
        // An SOA with its fields one short.
        let soa = DNSBuilder.wire("ns") + DNSBuilder.wire("h") + [UInt8](repeating: 0, count: 19)
        #expect(error(answer(type: 6, soa))?.reason == .badRecordData)
        #expect(error(answer(type: 6, soa + [7])) == nil)
        // Other types are skipped by their length, whatever they hold.
        #expect(error(answer(type: 16, [0xC0, 0xC0, 0xFF])) == nil)
    }

    @Test func ttlsWithTheTopBitReadAsZeroAndTheSOAMinimumIsRead() throws {
        let bytes = DNSBuilder.message(
            id: 1, flags: DNSBuilder.responseFlags(rcode: 3), question: ("x.example", 1),
            authority: [TestRecord("example", ttl: 0x8000_0005, .soa(minimum: 42)), TestRecord("example", ttl: 77, .ns("ns.example"))])
        let (header, answers, authority) = try parse(bytes)
        #expect(header.responseCode == .nameError && answers.isEmpty && authority.count == 2)
        #expect(authority[0].ttl == 0 && authority[1].ttl == 77)
        bytes.withUnsafeBytes { raw in
            let m = try! DNSMessage(validating: raw)
            #expect(m.soaMinimum(of: authority[0]) == 42)
        }
    }

    @Test func aTruncatedMessageKeepsTheRecordsBeforeItsCut() throws {
        var bytes = DNSBuilder.message(
            id: 1, flags: DNSBuilder.responseFlags(truncated: true), question: ("a.example", 1),
            answers: [TestRecord("a.example", .a("192.0.2.1")), TestRecord("a.example", .a("192.0.2.2"))])
        bytes.removeLast(3)  // the second record cut in its RDATA
        let (header, answers, _) = try parse(bytes)
        #expect(header.isTruncated && header.answerCount == 2)
        #expect(answers.count == 1)
        // Without TC the same bytes are refused.
        bytes[2] &= ~0x02
        #expect(error(bytes)?.reason == .truncated)
    }

    @Test func theAdditionalSectionIsNotRead() {
        var bytes = DNSBuilder.message(id: 1, flags: DNSBuilder.responseFlags(), question: ("a.example", 1), answers: [TestRecord("a.example", .a("192.0.2.1"))])
        bytes[11] = 3  // ARCOUNT 3, and only garbage after the answer
        bytes += [0xC0, 0xFF, 0x40]
        #expect(error(bytes) == nil)
    }

    // MARK: Queries

    @Test func queriesParseBack() throws {
        var buffer = [UInt8](repeating: 0xEE, count: DNSQuery.maximumLength)
        let name = DNSName("Mail.Example.org")!
        let n = try #require(buffer.withUnsafeMutableBytes { DNSQuery.write(id: 0xBEEF, name: name, type: .aaaa, into: $0) })
        #expect(n == 12 + name.wire.count + 4)
        #expect(Array(buffer[0..<12]) == [0xBE, 0xEF, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0])
        try buffer[0..<n].withUnsafeBytes { raw in
            let m = try DNSMessage(validating: raw)
            #expect(m.header.id == 0xBEEF && !m.header.isResponse && m.header.recursionDesired && m.header.opcode == 0)
            let q = m.question(0)
            #expect(q.type == .aaaa && q.questionClass == .internet)
            #expect(m.name(at: q.nameOffset) == name)
        }
        // The longest name fits the maximum; a short buffer gets nil.
        let l63 = String(repeating: "a", count: 63)
        let longest = DNSName([l63, l63, l63, String(repeating: "b", count: 61)].joined(separator: "."))!
        #expect(buffer.withUnsafeMutableBytes { DNSQuery.write(id: 1, name: longest, type: .a, into: $0) } == DNSQuery.maximumLength)
        #expect(buffer.withUnsafeMutableBytes { DNSQuery.write(id: 1, name: longest, type: .a, into: UnsafeMutableRawBufferPointer(rebasing: $0[1...])) } == nil)
    }
}
