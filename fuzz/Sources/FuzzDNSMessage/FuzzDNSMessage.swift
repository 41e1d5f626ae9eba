import FuzzDriver
import Glibc
@_spi(OneTunInternals) import OneTunCore

/// Hands over to libFuzzer however the target was built (see fuzz/Package.swift).
@main enum Entry {
    static func main() { exit(fuzzDriverMain(CommandLine.argc, CommandLine.unsafeArgv)) }
}

/// DNS messages, parsed and answered.
///
/// The whole input, and the input after its first byte, are parsed with `DNSMessage`: what validates
/// must read without trapping, every name in it must be at most 255 octets of 1–63-octet labels, equal to
/// itself as the view compares, and parse back from a query written with it.
///
/// Then the input after its first byte is an answer to a resolver asking `www.example.com` (A and AAAA of
/// two servers). The first byte says how: bit 0 answers the AAAA query instead of the A one, bit 1 copies
/// the query's id into the message (so it goes past the id check), bit 2 first moves the question to TCP
/// (a TC answer made from the query) and hands the message over as the TCP answer. Invariants: a datagram
/// from the wrong server is never taken; a message whose id is not the query's changes nothing (no
/// outcome, the question still open); the clock then run to the end, by deadlines, stops, and the token
/// gets exactly one outcome; every query sent on the way parses back.
let servers = [UDPEndpoint(address: IPAddress("192.0.2.53")!, port: 53), UDPEndpoint(address: IPAddress("2001:db8::53")!, port: 53)]
let asked = DNSName("www.example.com")!

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDNSMessage(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    checkMessage(input)
    guard size > 0 else { return 0 }
    let message = Array(input[1...])
    message.withUnsafeBytes { checkMessage($0) }
    answer(control: input[0], message)
    return 0
}

// MARK: - The view

func checkMessage(_ bytes: UnsafeRawBufferPointer) {
    guard let m = try? DNSMessage(validating: bytes) else { return }
    precondition(m.answerCount <= Int(m.header.answerCount) && m.authorityCount <= Int(m.header.authorityCount))
    precondition(m.header.isTruncated || (m.answerCount == Int(m.header.answerCount) && m.authorityCount == Int(m.header.authorityCount)))
    for i in 0..<Int(m.header.questionCount) { checkName(m, at: m.question(i).nameOffset) }
    for section in [DNSSection.answer, .authority] {
        for record in m.records(section) {
            precondition(record.dataOffset >= 0 && record.dataOffset + record.dataLength <= bytes.count, "RDATA outside the message")
            checkName(m, at: record.nameOffset)
            switch record.type {
            case .a, .aaaa: _ = m.address(of: record)
            case .cname: checkName(m.canonicalName(of: record))
            case .soa: _ = m.soaMinimum(of: record)
            default: break
            }
        }
    }
}

func checkName(_ m: DNSMessage, at offset: Int) {
    let name = m.name(at: offset)
    checkName(name)
    precondition(m.name(at: offset, equals: name), "a name differs from itself: \(name)")
}

func checkName(_ name: DNSName) {
    let wire = name.wire
    precondition(wire.count <= DNSName.maximumLength, "a name of \(wire.count) octets")
    var i = 0
    while wire[i] != 0 {
        precondition(Int(wire[i]) <= DNSName.maximumLabelLength, "a label of \(wire[i]) octets")
        i += 1 + Int(wire[i])
    }
    precondition(i == wire.count - 1, "the root label is not last")
    // Written into a query, it reads back the same.
    var query = [UInt8](repeating: 0, count: DNSQuery.maximumLength)
    guard let n = query.withUnsafeMutableBytes({ DNSQuery.write(id: 7, name: name, type: .a, into: $0) }) else {
        preconditionFailure("no room for a name of \(wire.count) octets")
    }
    query[0..<n].withUnsafeBytes { raw in
        guard let again = try? DNSMessage(validating: raw) else { preconditionFailure("a query does not parse") }
        precondition(again.name(at: again.question(0).nameOffset) == name, "a name does not survive a query")
    }
}

// MARK: - The resolver

struct Sent {
    var transmission: DNSTransmission
    var id: UInt16
    var bytes: [UInt8]
}

func drain(_ resolver: DNSResolver) -> [Sent] {
    var out: [Sent] = []
    var buffer = [UInt8](repeating: 0, count: DNSQuery.maximumLength)
    while let t = buffer.withUnsafeMutableBytes({ resolver.pollTransmission(into: $0) }) {
        let bytes = Array(buffer[0..<t.length])
        let id = bytes.withUnsafeBytes { raw -> UInt16 in
            guard let m = try? DNSMessage(validating: raw), m.header.questionCount == 1, !m.header.isResponse else {
                preconditionFailure("the resolver sent a query that does not parse")
            }
            checkName(m, at: m.question(0).nameOffset)
            return m.header.id
        }
        out.append(Sent(transmission: t, id: id, bytes: bytes))
    }
    return out
}

func answer(control: UInt8, _ input: [UInt8]) {
    let resolver = DNSResolver(config: DNSResolverConfig(servers: servers, queryTypes: [.a, .aaaa]), random: SeededRandom(seed: 1))
    var now = Instant(nanoseconds: 1_000 * Nanos.second)
    let token = resolver.resolve(asked.description, now: now)
    var sent = drain(resolver)
    precondition(sent.count == 2 && resolver.pollResult() == nil)
    var target = sent[Int(control & 1)]
    guard case .udp(let port) = target.transmission.transport else { preconditionFailure("the first queries go over UDP") }
    var message = input
    if control & 4 != 0 {
        // TC: the query itself with QR and TC set is a truncated answer.
        var truncated = target.bytes
        truncated[2] |= 0x82
        precondition(truncated.withUnsafeBytes { resolver.handleDatagram($0, from: target.transmission.server, to: port, now: now) })
        sent = drain(resolver)
        precondition(sent.count == 1 && sent[0].transmission.transport == .tcp, "TC did not move the question to TCP")
        target = sent[0]
    }
    if control & 2 != 0 && message.count >= 2 {
        message[0] = UInt8(target.id >> 8)
        message[1] = UInt8(target.id & 0xFF)
    }
    let idMatches = message.count >= 2 && UInt16(message[0]) << 8 | UInt16(message[1]) == target.id
    let pending = resolver.pendingCount
    message.withUnsafeBytes { raw in
        if case .udp(let port) = target.transmission.transport {
            let wrong = servers[1 - servers.firstIndex(of: target.transmission.server)!]
            precondition(!resolver.handleDatagram(raw, from: wrong, to: port, now: now), "taken from the wrong server")
            precondition(resolver.handleDatagram(raw, from: target.transmission.server, to: port, now: now), "not taken from the server")
        } else {
            resolver.handleStreamMessage(raw, attempt: target.transmission.attempt, now: now)
        }
    }
    var outcomes = 0
    if !idMatches {
        precondition(resolver.pollResult() == nil, "an outcome from a message with another id")
        precondition(resolver.pendingCount == pending && resolver.isAttemptOpen(target.transmission.attempt), "another id changed the question")
    }
    // Run the clock to the end.
    var steps = 0
    while true {
        _ = drain(resolver)
        while let (t, outcome) = resolver.pollResult() {
            precondition(t == token, "an outcome for another token")
            if case .addresses(let list) = outcome { precondition(!list.isEmpty, "no addresses") }
            outcomes += 1
        }
        guard let deadline = resolver.nextDeadline() else { break }
        steps += 1
        precondition(steps < 10_000, "the resolver does not stop")
        precondition(deadline >= now, "a deadline in the past")
        now = deadline
        resolver.handleTimeout(now: now)
    }
    precondition(outcomes == 1, "\(outcomes) outcomes for one token")
    precondition(resolver.pendingCount == 0, "questions left")
    // Asked again: a cached answer comes at once; otherwise a query goes.
    let again = resolver.resolve(asked.description, now: now)
    if drain(resolver).isEmpty { precondition(resolver.pollResult()?.token == again, "neither cached nor asked") }
}
