import Testing
@testable import OneTunCore

/// The SOCKS5 server handshake (RFC 1928, RFC 1929) fed whole, pipelined, split at every point and byte by
/// byte; every refusal with its reply; the reply encoding; the UDP request header (RFC 1928 §7).
@Suite struct Socks5Tests {
    // MARK: - Helpers

    static let credentials = Socks5Server.Credentials(username: Array("alice".utf8), password: Array("s3cret".utf8))!

    static let greetingNoAuth: [UInt8] = [5, 1, 0]
    static let greetingBoth: [UInt8] = [5, 2, 0, 2]
    static func auth(_ user: String, _ password: String) -> [UInt8] {
        [1, UInt8(user.utf8.count)] + Array(user.utf8) + [UInt8(password.utf8.count)] + Array(password.utf8)
    }
    /// CONNECT 10.0.0.2:8080
    static let connectV4: [UInt8] = [5, 1, 0, 1, 10, 0, 0, 2, 0x1F, 0x90]
    static let connectV4Target = ProxyTarget.address(.v4(IPv4Address(10, 0, 0, 2)), port: 8080)
    static func request(command: UInt8 = 1, name: [UInt8], port: UInt16 = 443) -> [UInt8] {
        [5, command, 0, 3, UInt8(name.count)] + name + [UInt8(port >> 8), UInt8(port & 0xFF)]
    }

    func receive(_ server: inout Socks5Server, _ bytes: [UInt8]) -> Socks5Server.Step {
        bytes.withUnsafeBytes { server.receive($0) }
    }

    /// Feeds `bytes` in chunks of the given sizes (the rest as a last chunk) until a final event, and
    /// returns the output of all steps, the final event and the total consumed. Checks each step's
    /// bookkeeping: consumed ≤ chunk, a chunk not wholly taken only with a final event, the buffer bounded.
    func drive(_ credentials: Socks5Server.Credentials?, _ bytes: [UInt8], chunks: [Int] = [])
        -> (output: [UInt8], event: Socks5Server.Event, consumed: Int)
    {
        var server = Socks5Server(credentials: credentials)
        var output: [UInt8] = []
        var offset = 0
        var sizes = chunks[...]
        while true {
            let size = min(sizes.popFirst() ?? bytes.count - offset, bytes.count - offset)
            let chunk = Array(bytes[offset..<(offset + size)])
            let step = receive(&server, chunk)
            #expect(step.consumed >= 0 && step.consumed <= chunk.count)
            #expect(server.message.count <= 513)
            output += step.output
            offset += step.consumed
            if step.event != .needMoreInput {
                #expect(server.isFinished)
                return (output, step.event, offset)
            }
            #expect(step.consumed == chunk.count, "needMoreInput must take the whole chunk")
            if offset == bytes.count, sizes.isEmpty { return (output, .needMoreInput, offset) }
        }
    }

    // MARK: - Handshakes

    @Test func connectWithoutAuthenticationStepByStep() {
        var server = Socks5Server(credentials: nil)
        let greeting = receive(&server, Self.greetingNoAuth)
        #expect(greeting == Socks5Server.Step(consumed: 3, output: [5, 0], event: .needMoreInput))
        #expect(!server.isFinished)
        let request = receive(&server, Self.connectV4)
        #expect(request == Socks5Server.Step(consumed: 10, output: [], event: .connect(Self.connectV4Target)))
        #expect(server.isFinished)
    }

    @Test func emptyInputNeedsMore() {
        var server = Socks5Server(credentials: nil)
        #expect(receive(&server, []) == Socks5Server.Step(consumed: 0, output: [], event: .needMoreInput))
    }

    @Test func pipelinedGreetingAuthenticationRequestAndDataInOneWrite() {
        let data = Array("GET / HTTP/1.1\r\nHost: example\r\n\r\n".utf8)
        let handshake = Self.greetingBoth + Self.auth("alice", "s3cret") + Self.connectV4
        let input = handshake + data
        var server = Socks5Server(credentials: Self.credentials)
        let step = receive(&server, input)
        #expect(step.output == [5, 2, 1, 0])
        #expect(step.event == .connect(Self.connectV4Target))
        #expect(step.consumed == handshake.count)
        #expect(Array(input[step.consumed...]) == data)
    }

    @Test func pipelinedWithoutAuthenticationKeepsThePayload() {
        let input = Self.greetingNoAuth + Self.connectV4 + [0xDE, 0xAD]
        let run = drive(nil, input)
        #expect(run.output == [5, 0])
        #expect(run.event == .connect(Self.connectV4Target))
        #expect(Array(input[run.consumed...]) == [0xDE, 0xAD])
    }

    /// Every handshake gives the same output, event and payload boundary whether it arrives in one write,
    /// in two split anywhere, or a byte at a time.
    @Test(arguments: [
        (true, greetingBoth + auth("alice", "s3cret") + connectV4),
        (false, greetingNoAuth + request(name: Array("example.com".utf8))),
        (false, [5, 3, 2, 1, 0] + [5, 1, 0, 4] + Array(repeating: 0, count: 15) + [1, 0, 22]),
        (true, [5, 1, 2] + auth(String(repeating: "u", count: 255), String(repeating: "p", count: 255)) + connectV4),
        (true, greetingBoth + auth("alice", "wrong")),
        (false, greetingNoAuth + [5, 2, 0, 1, 1, 2, 3, 4, 0, 80]),
        (false, greetingNoAuth + [5, 1, 0, 9]),
    ])
    func everySplitAgrees(credentialed: Bool, input: [UInt8]) {
        let credentials = credentialed ? Self.credentials : nil
        let payload: [UInt8] = [1, 2, 3, 4, 5]
        let whole = drive(credentials, input + payload)
        #expect(whole.event != .needMoreInput)
        if case .refuse = whole.event {} else {
            #expect(whole.consumed == input.count)
        }
        for split in 0...input.count + payload.count {
            let run = drive(credentials, input + payload, chunks: [split])
            #expect(run.output == whole.output && run.event == whole.event && run.consumed == whole.consumed, "split at \(split)")
        }
        let bytewise = drive(credentials, input + payload, chunks: Array(repeating: 1, count: input.count + payload.count))
        #expect(bytewise.output == whole.output && bytewise.event == whole.event && bytewise.consumed == whole.consumed)
    }

    @Test func byteAtATimeTakesOneByteEachUntilTheRequestEnds() {
        let input = Self.greetingBoth + Self.auth("alice", "s3cret") + Self.connectV4 + [0xAA]
        var server = Socks5Server(credentials: Self.credentials)
        var output: [UInt8] = []
        for (i, byte) in input.enumerated() {
            let step = receive(&server, [byte])
            output += step.output
            if i < input.count - 2 {
                #expect(step == Socks5Server.Step(consumed: 1, output: step.output, event: .needMoreInput))
            } else {
                #expect(step.consumed == 1)
                #expect(step.event == .connect(Self.connectV4Target))
                break
            }
        }
        #expect(output == [5, 2, 1, 0])
    }

    @Test func everyTruncatedRequestNeedsMore() {
        let requests = [
            Self.connectV4,
            Self.request(name: Array("a".utf8)),
            [5, 1, 0, 4] + Array(repeating: 0x20, count: 16) + [0, 80],
        ]
        for request in requests {
            for cut in 0..<request.count {
                let run = drive(nil, Self.greetingNoAuth + request[..<cut])
                #expect(run.event == .needMoreInput)
                #expect(run.output == [5, 0])
                #expect(run.consumed == Self.greetingNoAuth.count + cut)
            }
        }
        // Truncated greetings and sub-negotiations too.
        for cut in 0..<Self.greetingBoth.count {
            #expect(drive(Self.credentials, Array(Self.greetingBoth[..<cut])).event == .needMoreInput)
        }
        let auth = Self.auth("alice", "s3cret")
        for cut in 0..<auth.count {
            let run = drive(Self.credentials, Self.greetingBoth + auth[..<cut])
            #expect(run.event == .needMoreInput && run.output == [5, 2])
        }
    }

    // MARK: - Methods and authentication

    @Test func methodSelection() {
        // With credentials, 02 is chosen even when 00 is offered first.
        #expect(drive(Self.credentials, [5, 2, 0, 2]).output == [5, 2])
        #expect(drive(nil, [5, 2, 2, 0]).output == [5, 0])
        #expect(drive(nil, [5, 4, 1, 3, 0x80, 0]).output == [5, 0])
    }

    @Test(arguments: [
        (true, [5, 1, 0] as [UInt8]),  // credentials required, only "no authentication" offered
        (false, [5, 1, 2]),  // no credentials configured, only username/password offered
        (true, [5, 0]),  // no method at all
        (false, [5, 0]),
        (false, [5, 3, 1, 3, 0xFF]),
    ])
    func noAcceptableMethod(credentialed: Bool, greeting: [UInt8]) {
        let run = drive(credentialed ? Self.credentials : nil, greeting + Self.connectV4)
        #expect(run.output == [5, 0xFF])
        #expect(run.event == .refuse(.noAcceptableMethod(credentialsRequired: credentialed)))
        #expect(run.consumed == greeting.count)
    }

    @Test(arguments: [
        ("alice", "s3cret", true),
        ("alice", "s3cre", false),
        ("alice", "s3cret!", false),
        ("alic", "s3cret", false),
        ("alicE", "s3cret", false),
        ("", "", false),
        ("s3cret", "alice", false),
        ("alices3", "cret", false),  // the same bytes, split elsewhere
    ])
    func authentication(user: String, password: String, accepted: Bool) {
        let run = drive(Self.credentials, Self.greetingBoth + Self.auth(user, password) + Self.connectV4)
        if accepted {
            #expect(run.output == [5, 2, 1, 0])
            #expect(run.event == .connect(Self.connectV4Target))
        } else {
            #expect(run.output == [5, 2, 1, 1])
            #expect(run.event == .refuse(.authenticationFailed))
            #expect(run.consumed == Self.greetingBoth.count + Self.auth(user, password).count)
        }
    }

    @Test func emptyCredentialsAndLongestCredentials() {
        let empty = Socks5Server.Credentials(username: [], password: [])
        #expect(drive(empty, [5, 1, 2, 1, 0, 0] + Self.connectV4).event == .connect(Self.connectV4Target))
        let user = String(repeating: "u", count: 255), password = String(repeating: "p", count: 255)
        let longest = Socks5Server.Credentials(username: Array(user.utf8), password: Array(password.utf8))
        #expect(drive(longest, [5, 1, 2] + Self.auth(user, password) + Self.connectV4).event == .connect(Self.connectV4Target))
        #expect(drive(longest, [5, 1, 2] + Self.auth(user, "p")).event == .refuse(.authenticationFailed))
        #expect(Socks5Server.Credentials(username: Array(repeating: 1, count: 256), password: []) == nil)
        #expect(Socks5Server.Credentials(username: [], password: Array(repeating: 1, count: 256)) == nil)
    }

    @Test func credentialsDescriptionHidesThePassword() {
        #expect(!Self.credentials.description.contains("s3cret"))
        #expect(!"\(Self.credentials)".contains("s3cret"))
    }

    @Test func subNegotiationVersionOtherThanOneFails() {
        let run = drive(Self.credentials, Self.greetingBoth + [5, 1, 0, 1])
        #expect(run.output == [5, 2, 1, 1])
        #expect(run.event == .refuse(.badAuthenticationVersion(5)))
        #expect(run.consumed == Self.greetingBoth.count + 1)
    }

    // MARK: - Requests

    @Test func ipv6Target() {
        let address = IPv6Address("2001:db8::1:2")!
        var request: [UInt8] = [5, 1, 0, 4]
        for i in 0..<8 { request += [UInt8(address.segment(i) >> 8), UInt8(address.segment(i) & 0xFF)] }
        request += [0x01, 0xBB]
        #expect(drive(nil, Self.greetingNoAuth + request).event == .connect(.address(.v6(address), port: 443)))
    }

    @Test func namesOfLengthOneAndTwoHundredFiftyFive() {
        #expect(drive(nil, Self.greetingNoAuth + Self.request(name: [UInt8(ascii: "a")])).event == .connect(.name("a", port: 443)))
        let longest = String(repeating: "a", count: 63) + "." + String(repeating: "b", count: 63) + "."
            + String(repeating: "c", count: 63) + "." + String(repeating: "d", count: 63)
        #expect(longest.utf8.count == 255)
        let run = drive(nil, Self.greetingNoAuth + Self.request(name: Array(longest.utf8), port: 80) + [9])
        #expect(run.event == .connect(.name(longest, port: 80)))
        #expect(run.consumed == 3 + 4 + 1 + 255 + 2)
    }

    @Test(arguments: [
        ("example.com", ProxyTarget.name("example.com", port: 443)),
        ("My-Host_1.example.", .name("My-Host_1.example.", port: 443)),
        ("xn--bcher-kva.example", .name("xn--bcher-kva.example", port: 443)),
        ("192.0.2.7", .address(.v4(IPv4Address(192, 0, 2, 7)), port: 443)),
        ("::1", .address(.v6(.loopback), port: 443)),
        ("2001:DB8::A", .address(.v6(IPv6Address("2001:db8::a")!), port: 443)),
        ("010.0.0.1", .name("010.0.0.1", port: 443)),  // not an address (leading zero), so a name to resolve
    ])
    func namesAndAddressLiterals(name: String, target: ProxyTarget) {
        #expect(drive(nil, Self.greetingNoAuth + Self.request(name: Array(name.utf8))).event == .connect(target))
    }

    /// Bad requests and the reply each gets, after a "no authentication" greeting.
    @Test(arguments: [
        // BIND, then an unknown command: 07 after the whole request.
        ([5, 2, 0, 1, 1, 2, 3, 4, 0, 80] as [UInt8], Socks5ReplyCode.commandNotSupported, Socks5Server.Refusal.commandNotSupported(2), 10),
        ([5, 9, 0, 1, 1, 2, 3, 4, 0, 80], .commandNotSupported, .commandNotSupported(9), 10),
        ([5, 0, 0, 3, 1, 0x61, 0, 80], .commandNotSupported, .commandNotSupported(0), 8),
        // Unknown ATYPs: 08 as soon as the ATYP arrives.
        ([5, 1, 0, 9, 1, 2, 3, 4, 0, 80], .addressTypeNotSupported, .addressTypeNotSupported(9), 4),
        ([5, 1, 0, 0], .addressTypeNotSupported, .addressTypeNotSupported(0), 4),
        ([5, 3, 0, 2], .addressTypeNotSupported, .addressTypeNotSupported(2), 4),
        // A request that is not SOCKS5: 01 at its first byte.
        ([4, 1, 0, 1, 1, 2, 3, 4, 0, 80], .generalFailure, .badRequestVersion(4), 1),
        // Names that are no host names: 04.
        ([5, 1, 0, 3, 0, 0, 80], .hostUnreachable, .invalidName, 7),
        ([5, 1, 0, 3, 3, 0x61, 0, 0x62, 0, 80], .hostUnreachable, .invalidName, 10),
        ([5, 1, 0, 3, 3, 0x61, 0x20, 0x62, 0, 80], .hostUnreachable, .invalidName, 10),
        ([5, 1, 0, 3, 3, 0x61, 0x0A, 0x62, 0, 80], .hostUnreachable, .invalidName, 10),
        ([5, 1, 0, 3, 3, 0x61, 0x3A, 0x62, 0, 80], .hostUnreachable, .invalidName, 10),  // "a:b"
        ([5, 1, 0, 3, 5, 0x5B, 0x3A, 0x3A, 0x31, 0x5D, 0, 80], .hostUnreachable, .invalidName, 12),  // "[::1]"
        ([5, 1, 0, 3, 2, 0xC3, 0xA9, 0, 80], .hostUnreachable, .invalidName, 9),  // UTF-8, not punycode
    ])
    func badRequests(request: [UInt8], code: Socks5ReplyCode, refusal: Socks5Server.Refusal, consumed: Int) {
        let run = drive(nil, Self.greetingNoAuth + request + [0xEE])
        #expect(run.output == [5, 0] + [5, code.rawValue, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(run.event == .refuse(refusal))
        #expect(run.consumed == Self.greetingNoAuth.count + consumed)
    }

    @Test func greetingsThatAreNotSocks5() {
        // SOCKS4 CONNECT: refused at its first byte with SOCKS4's "request rejected".
        let socks4: [UInt8] = [4, 1, 0, 80, 10, 0, 0, 2, 0]
        let run = drive(nil, socks4)
        #expect(run.output == [0, 0x5B, 0, 0, 0, 0, 0, 0])
        #expect(run.event == .refuse(.notSocks5(version: 4)))
        #expect(run.consumed == 1)
        // Anything else (an HTTP request here) is closed without a reply.
        let http = drive(Self.credentials, Array("GET / HTTP/1.1\r\n".utf8))
        #expect(http.output == [])
        #expect(http.event == .refuse(.notSocks5(version: UInt8(ascii: "G"))))
    }

    @Test func udpAssociateWithUnknownClientAddress() {
        let run = drive(nil, Self.greetingNoAuth + [5, 3, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(run.event == .udpAssociate(.address(.v4(.unspecified), port: 0)))
        let v6 = drive(nil, Self.greetingNoAuth + [5, 3, 0, 4] + Array(repeating: 0, count: 16) + [0x30, 0x39])
        #expect(v6.event == .udpAssociate(.address(.v6(.unspecified), port: 12345)))
    }

    @Test func nonZeroReservedByteIsAccepted() {
        #expect(drive(nil, Self.greetingNoAuth + [5, 1, 0xFF, 1, 10, 0, 0, 2, 0x1F, 0x90]).event == .connect(Self.connectV4Target))
    }

    @Test func refusalsDescribeThemselvesOnOneLine() {
        let refusals: [Socks5Server.Refusal] = [
            .notSocks5(version: 4), .notSocks5(version: 71), .noAcceptableMethod(credentialsRequired: true),
            .noAcceptableMethod(credentialsRequired: false), .badAuthenticationVersion(5), .authenticationFailed,
            .badRequestVersion(4), .commandNotSupported(2), .commandNotSupported(9), .addressTypeNotSupported(9),
            .invalidName,
        ]
        #expect(Set(refusals.map(\.description)).count == refusals.count)
        for refusal in refusals {
            #expect(!refusal.description.isEmpty && !refusal.description.contains("\n"))
        }
    }

    // MARK: - Replies

    @Test func replyEncoding() {
        let v4 = Socks5Reply(.succeeded, bound: .address(.v4(IPv4Address(192, 0, 2, 1)), port: 0x1234))
        #expect(v4.length == 10)
        #expect(v4.bytes == [5, 0, 0, 1, 192, 0, 2, 1, 0x12, 0x34])
        let v6 = Socks5Reply(.succeeded, bound: .address(.v6(IPv6Address("2001:db8::7")!), port: 1080))
        #expect(v6.length == 22 && v6.length == Socks5Reply.maxAddressReplyLength)
        #expect(v6.bytes == [5, 0, 0, 4, 0x20, 0x01, 0x0D, 0xB8] + Array(repeating: 0, count: 11) + [7, 0x04, 0x38])
        #expect(Socks5Reply(.connectionRefused).bytes == [5, 5, 0, 1, 0, 0, 0, 0, 0, 0])

        // Into a caller's buffer, with room to spare.
        var buffer = [UInt8](repeating: 0xEE, count: 32)
        let written = buffer.withUnsafeMutableBytes { v6.emit(into: $0) }
        #expect(written == 22 && Array(buffer[..<22]) == v6.bytes && buffer[22] == 0xEE)

        for reply in [v4, v6, Socks5Reply(.hostUnreachable), Socks5Reply(.generalFailure, bound: .name("relay.example", port: 9))] {
            let bytes = reply.bytes + [0xAB]  // data after a reply is not part of it
            let parsed = bytes.withUnsafeBytes { try? Socks5Reply.parse($0) }
            #expect(parsed?.0 == reply && parsed?.length == reply.length)
        }
    }

    @Test func replyParsingErrors() {
        func parse(_ bytes: [UInt8]) -> Socks5WireError? {
            bytes.withUnsafeBytes { raw in
                do throws(Socks5WireError) {
                    _ = try Socks5Reply.parse(raw)
                    return nil
                } catch { return error }
            }
        }
        let good = Socks5Reply(.succeeded, bound: .address(.v4(.loopback), port: 1)).bytes
        for cut in 0..<good.count { #expect(parse(Array(good[..<cut])) == .truncated) }
        #expect(parse([4] + good.dropFirst()) == .badVersion(4))
        #expect(parse([5, 0, 0, 7, 0, 0]) == .addressTypeNotSupported(7))
    }

    @Test func replyCodes() {
        let table: [(Socks5ReplyCode, UInt8)] = [
            (.succeeded, 0), (.generalFailure, 1), (.notAllowed, 2), (.networkUnreachable, 3), (.hostUnreachable, 4),
            (.connectionRefused, 5), (.ttlExpired, 6), (.commandNotSupported, 7), (.addressTypeNotSupported, 8),
        ]
        for (code, value) in table { #expect(code.rawValue == value) }
        #expect(Set(table.map(\.0.description)).count == table.count)
        #expect(Socks5ReplyCode(rawValue: 9).description == "unassigned (9)")
    }

    @Test func proxyTargetDescriptions() {
        #expect(ProxyTarget.address(.v4(IPv4Address(10, 0, 0, 1)), port: 80).description == "10.0.0.1:80")
        #expect(ProxyTarget.address(.v6(IPv6Address("fd00::1")!), port: 443).description == "[fd00::1]:443")
        #expect(ProxyTarget.name("example.com", port: 8080).description == "example.com:8080")
    }

    // MARK: - UDP request header (RFC 1928 §7)

    @Test func answerHeaderIntoHeadroomRoundTrips() throws {
        let payload = Array("dns answer".utf8)
        for source in [IPAddress.v4(IPv4Address(8, 8, 4, 4)), .v6(IPv6Address("2001:4860:4860::8844")!)] {
            let headroom = Socks5UDPHeader.maxAddressHeaderLength
            var buffer = [UInt8](repeating: 0xEE, count: headroom) + payload
            let length = Socks5UDPHeader.length(for: source)
            #expect(length == (source.isV4 ? 10 : 22))
            let written = buffer.withUnsafeMutableBytes { raw in
                Socks5UDPHeader.emit(source: source, port: 53, into: UnsafeMutableRawBufferPointer(rebasing: raw[(headroom - length)..<headroom]))
            }
            #expect(written == length)
            let datagram = Array(buffer[(headroom - length)...])
            try datagram.withUnsafeBytes { raw in
                let parsed = try Socks5UDPDatagram(validating: raw)
                #expect(parsed.fragment == 0)
                #expect(parsed.target == .address(source, port: 53))
                #expect(parsed.payloadOffset == length)
                #expect(Array(parsed.payload) == payload)
                #expect(parsed.header == Socks5UDPHeader(target: .address(source, port: 53)))
            }
            #expect(Array(buffer[..<(headroom - length)]) == Array(repeating: 0xEE, count: headroom - length))
        }
    }

    @Test func clientDatagramWithNameAndItsRoundTrip() throws {
        let datagram: [UInt8] = [0, 0, 0, 3, 11] + Array("example.com".utf8) + [0, 53] + [1, 2, 3]
        try datagram.withUnsafeBytes { raw in
            let parsed = try Socks5UDPDatagram(validating: raw)
            #expect(parsed.target == .name("example.com", port: 53))
            #expect(parsed.payloadOffset == 18)
            #expect(Array(parsed.payload) == [1, 2, 3])
            #expect(parsed.header.length == 18)
            var again = [UInt8](repeating: 0, count: parsed.header.length)
            again.withUnsafeMutableBytes { _ = parsed.header.emit(into: $0) }
            #expect(again == Array(datagram[..<18]))
        }
    }

    @Test func emptyPayloadAndNonZeroReservedAreAccepted() throws {
        try ([0xFF, 0xFF, 0, 1, 1, 2, 3, 4, 0, 7] as [UInt8]).withUnsafeBytes { raw in
            let parsed = try Socks5UDPDatagram(validating: raw)
            #expect(parsed.payload.isEmpty)
            #expect(parsed.target == .address(.v4(IPv4Address(1, 2, 3, 4)), port: 7))
        }
    }

    @Test func fragmentsAreReported() throws {
        for (datagram, fragment) in [([0, 0, 1, 1, 1, 2, 3, 4, 0, 7, 0xAA] as [UInt8], 1 as UInt8), ([0, 0, 0x81, 1, 1, 2, 3, 4, 0, 7], 0x81)] {
            let parsed = try datagram.withUnsafeBytes { raw in try Socks5UDPDatagram(validating: raw).header }
            #expect(parsed.fragment == fragment)
            #expect(parsed.target == .address(.v4(IPv4Address(1, 2, 3, 4)), port: 7))
        }
        let header = Socks5UDPHeader(fragment: 2, target: .address(.v4(.loopback), port: 9))
        var bytes = [UInt8](repeating: 0, count: header.length)
        bytes.withUnsafeMutableBytes { _ = header.emit(into: $0) }
        #expect(bytes == [0, 0, 2, 1, 127, 0, 0, 1, 0, 9])
    }

    @Test func badDatagrams() {
        func parse(_ bytes: [UInt8]) -> Socks5WireError? {
            bytes.withUnsafeBytes { raw in
                do throws(Socks5WireError) {
                    _ = try Socks5UDPDatagram(validating: raw)
                    return nil
                } catch { return error }
            }
        }
        let v4: [UInt8] = [0, 0, 0, 1, 1, 2, 3, 4, 0, 7]
        let v6: [UInt8] = [0, 0, 0, 4] + Array(repeating: 1, count: 16) + [0, 7]
        let name: [UInt8] = [0, 0, 0, 3, 3] + Array("abc".utf8) + [0, 7]
        for header in [v4, v6, name] {
            #expect(parse(header) == nil)
            for cut in 0..<header.count { #expect(parse(Array(header[..<cut])) == .truncated, "\(header[..<cut])") }
        }
        #expect(parse([0, 0, 0, 2, 1, 2, 3, 4, 0, 7]) == .addressTypeNotSupported(2))
        #expect(parse([0, 0, 0, 3, 0, 0, 7]) == .invalidName)
        #expect(parse([0, 0, 0, 3, 1, 0, 0, 7]) == .invalidName)
        #expect(parse([0, 0, 0, 3, 200] + Array(repeating: 0x61, count: 100)) == .truncated)
    }
}
