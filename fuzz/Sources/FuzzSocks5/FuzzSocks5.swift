import FuzzDriver
import Glibc
import OneTunCore

/// Hands over to libFuzzer however the target was built (see fuzz/Package.swift).
@main enum Entry {
    static func main() { exit(fuzzDriverMain(CommandLine.argc, CommandLine.unsafeArgv)) }
}

/// Credentials the inputs may try: "user" / "pass".
let credentials = Socks5Server.Credentials(username: Array("user".utf8), password: Array("pass".utf8))!

/// The SOCKS5 server handshake and the UDP request header, on arbitrary bytes.
///
/// Input: the first byte picks credentials (bit 0) and, scaled to the rest, a split point; the rest is what
/// a client sends. The handshake is fed whole, in two chunks split there, and a byte at a time: all three
/// must agree on output, event and bytes taken. Every step takes at most its chunk, and all of it unless
/// the handshake ended; a finished handshake took exactly its messages' bytes, no payload; a name target
/// is 1–255 bytes of host-name characters and encodes and parses back; the output is well-formed (method
/// selection, authentication status, a failure reply that parses, or SOCKS4's rejection) and fits the
/// event. The same bytes as a UDP datagram: what parses emits a header that parses back to the same
/// header and payload.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSocks5(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let control = input[0]
    let stream = UnsafeRawBufferPointer(rebasing: input[1...])
    let split = Int(control >> 1) * stream.count / 128
    let configured = control & 1 == 1 ? credentials : nil

    let whole = run(configured, stream, chunks: [])
    check(whole, configured: configured, stream: stream)
    let twoChunks = run(configured, stream, chunks: [split])
    precondition(twoChunks == whole, "split at \(split) disagrees: \(twoChunks) vs \(whole)")
    if stream.count <= 1024 {
        let bytewise = run(configured, stream, chunks: Array(repeating: 1, count: stream.count))
        precondition(bytewise == whole, "byte at a time disagrees: \(bytewise) vs \(whole)")
    }

    udpHeader(stream)
    return 0
}

struct Run: Equatable {
    var output: [UInt8]
    var event: Socks5Server.Event
    var consumed: Int
}

/// Feeds `stream` in chunks of the given sizes, then the rest, until a final event or the end.
func run(_ configured: Socks5Server.Credentials?, _ stream: UnsafeRawBufferPointer, chunks: [Int]) -> Run {
    var server = Socks5Server(credentials: configured)
    var result = Run(output: [], event: .needMoreInput, consumed: 0)
    var sizes = chunks[...]
    repeat {
        let remaining = stream.count - result.consumed
        let size = min(sizes.popFirst() ?? remaining, remaining)
        let chunk = UnsafeRawBufferPointer(rebasing: stream[result.consumed..<(result.consumed + size)])
        let step = server.receive(chunk)
        precondition(step.consumed >= 0 && step.consumed <= chunk.count, "took \(step.consumed) of \(chunk.count)")
        precondition(step.event != .needMoreInput || step.consumed == chunk.count, "needs more but left bytes")
        precondition(server.isFinished == (step.event != .needMoreInput))
        result.output += step.output
        result.consumed += step.consumed
        result.event = step.event
    } while result.event == .needMoreInput && (result.consumed < stream.count || !sizes.isEmpty)
    return result
}

/// The output and event of a whole run make sense together.
func check(_ run: Run, configured: Socks5Server.Credentials?, stream: UnsafeRawBufferPointer) {
    var out = run.output[...]
    func take(_ n: Int) -> [UInt8]? {
        guard out.count >= n else { return nil }
        defer { out = out.dropFirst(n) }
        return Array(out.prefix(n))
    }
    switch run.event {
    case .needMoreInput:
        precondition(run.consumed == stream.count)
    case .connect(let target), .udpAssociate(let target):
        precondition(run.output == (configured == nil ? [5, 0] : [5, 2, 1, 0]), "output \(run.output)")
        precondition(run.consumed == handshakeLength(stream, authenticated: configured != nil), "took \(run.consumed)")
        checkTarget(target)
        return
    case .refuse(let refusal):
        precondition(!refusal.description.isEmpty && !refusal.description.contains("\n"))
        if case .notSocks5(let version) = refusal {
            precondition(run.consumed == 1 && stream[0] == version)
            precondition(run.output == (version == 4 ? [0, 0x5B, 0, 0, 0, 0, 0, 0] : []), "output \(run.output)")
            return
        }
    }
    // Method selection, then (with credentials) the authentication status, then maybe a failure reply.
    guard let selection = take(2) else {
        precondition(out.isEmpty && run.event == .needMoreInput, "output \(run.output)")
        return
    }
    precondition(selection[0] == 5 && [configured == nil ? 0 : 2, 0xFF].contains(selection[1]), "selection \(selection)")
    if selection[1] == 0xFF {
        precondition(out.isEmpty && run.event == .refuse(.noAcceptableMethod(credentialsRequired: configured != nil)))
        return
    }
    if configured != nil {
        guard let status = take(2) else {
            precondition(out.isEmpty && run.event == .needMoreInput, "output \(run.output)")
            return
        }
        precondition(status == [1, 0] || status == [1, 1], "status \(status)")
        if status == [1, 1] {
            precondition(out.isEmpty)
            switch run.event {
            case .refuse(.authenticationFailed), .refuse(.badAuthenticationVersion): break
            default: preconditionFailure("authentication failed with \(run.event)")
            }
            return
        }
    }
    if run.event == .needMoreInput {
        precondition(out.isEmpty, "output \(run.output)")
        return
    }
    let reply = Array(out)
    let parsed = try? reply.withUnsafeBytes { try Socks5Reply.parse($0) }
    guard let (value, length) = parsed else { preconditionFailure("reply does not parse: \(reply)") }
    precondition(length == reply.count && value.bound == .address(.v4(.unspecified), port: 0))
    let expected: Socks5ReplyCode
    switch run.event {
    case .refuse(.badRequestVersion): expected = .generalFailure
    case .refuse(.commandNotSupported): expected = .commandNotSupported
    case .refuse(.addressTypeNotSupported): expected = .addressTypeNotSupported
    case .refuse(.invalidName): expected = .hostUnreachable
    default: preconditionFailure("a reply with \(run.event)")
    }
    precondition(value.code == expected, "reply \(value.code) for \(run.event)")
}

/// The length of a complete handshake at the start of `stream`, read the plain way: the greeting (RFC 1928
/// §3), the sub-negotiation (RFC 1929 §2) when authenticating, the request (RFC 1928 §4).
func handshakeLength(_ stream: UnsafeRawBufferPointer, authenticated: Bool) -> Int {
    var i = 2 + Int(stream[1])
    if authenticated {
        i += 2 + Int(stream[i + 1])
        i += 1 + Int(stream[i])
    }
    switch stream[i + 3] {
    case 1: return i + 4 + 4 + 2
    case 4: return i + 4 + 16 + 2
    default: return i + 5 + Int(stream[i + 4]) + 2
    }
}

/// A name is 1–255 host-name bytes (a literal address would have been made an address); every target
/// encodes (in a reply) and parses back to itself.
func checkTarget(_ target: ProxyTarget) {
    if case .name(let name, _) = target {
        let bytes = Array(name.utf8)
        precondition((1...255).contains(bytes.count), "name of \(bytes.count) bytes")
        precondition(IPAddress(name) == nil, "address literal left as a name: \(name)")
        for byte in bytes {
            let ok = (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x30 && byte <= 0x39)
                || byte == 0x2D || byte == 0x5F || byte == 0x2E
            precondition(ok, "byte \(byte) in a name")
        }
    }
    let reply = Socks5Reply(.succeeded, bound: target)
    let bytes = reply.bytes
    precondition(bytes.count == reply.length)
    let parsed = try? bytes.withUnsafeBytes { try Socks5Reply.parse($0) }
    precondition(parsed?.0 == reply && parsed?.length == bytes.count, "\(target) does not round-trip")
}

/// Parse → emit → parse: the same header and payload.
func udpHeader(_ bytes: UnsafeRawBufferPointer) {
    guard let (header, payload) = try? parseDatagram(bytes) else { return }
    precondition(header.length == bytes.count - payload.count || isLiteralName(bytes))
    checkTarget(header.target)
    let again = [UInt8](unsafeUninitializedCapacity: header.length + payload.count) { buffer, count in
        let raw = UnsafeMutableRawBufferPointer(buffer)
        count = header.emit(into: raw)
        precondition(count == header.length)
        payload.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: raw[count...]).copyMemory(from: $0) }
        count += payload.count
    }
    let reparsed = try? again.withUnsafeBytes { try parseDatagram($0) }
    precondition(reparsed?.0 == header && reparsed?.1 == payload, "UDP header does not round-trip: \(header)")
    // An answer's header into headroom, when the target is an address.
    if case .address(let address, let port) = header.target, header.fragment == 0 {
        let length = Socks5UDPHeader.length(for: address)
        var buffer = [UInt8](repeating: 0, count: length)
        buffer.withUnsafeMutableBytes { precondition(Socks5UDPHeader.emit(source: address, port: port, into: $0) == length) }
        precondition(buffer == Array(again[..<length]))
    }
}

func parseDatagram(_ bytes: UnsafeRawBufferPointer) throws -> (Socks5UDPHeader, [UInt8]) {
    let datagram = try Socks5UDPDatagram(validating: bytes)
    precondition(datagram.payloadOffset <= bytes.count && datagram.payloadOffset >= 8)  // the shortest: a one-byte name
    precondition(datagram.payload.count == bytes.count - datagram.payloadOffset)
    return (datagram.header, Array(datagram.payload))
}

/// ATYP 3 holding an address literal: parsed to an address, whose encoding may be longer than the name.
func isLiteralName(_ bytes: UnsafeRawBufferPointer) -> Bool { bytes.count > 3 && bytes[3] == 3 }
