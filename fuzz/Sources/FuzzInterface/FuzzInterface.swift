import FuzzDriver
import Glibc
@_spi(OneTunInternals) import OneTunCore

/// Hands over to libFuzzer however the target was built (see fuzz/Package.swift).
@main enum Entry {
    static func main() { exit(fuzzDriverMain(CommandLine.argc, CommandLine.unsafeArgv)) }
}

/// The network interface and the TCP stack behind it (a listener and one connection), driven by a fake peer
/// through a complete handshake into ESTABLISHED and on through the data path, SACK and loss recovery, with
/// a fake clock; arbitrary packets may be mixed in. Everything follows from the input (the stack's random
/// source is seeded), so a run replays.
///
/// The input starts with a setup of 16 bytes:
/// - byte 0: bit 0 the peer opens the connection (else we do), bit 1 IPv6, bit 2 the peer offers SACK,
///   bit 3 window scaling (byte 1 the peer's shift), bit 4 an MSS option (bytes 2–3), bit 5 NewReno instead
///   of BBR, bit 6 buffers of 16 KiB (zero windows come soon) instead of 4 MiB;
/// - bytes 4–7 our initial sequence number (the clock starts where the stack's RFC 6528 clock gives it, so
///   inputs reach the wrap of the sequence space), 8–11 the peer's, 12–13 the peer's handshake window,
///   14–15 the handshake's round trip in 10 µs.
///
/// Then operations, each an opcode byte whose low 3 bits choose (`Session.step`): a segment from the peer
/// (0, 1), time passing (2), time running to the next deadline (3), the application writing (4), reading
/// (5), closing or aborting (6), and an arbitrary packet (7; a length byte whose low bit asks for the packet
/// to be addressed to us with every checksum made valid, so it reaches the echo and reset paths).
///
/// Checked: nothing crashes; every packet sent is well formed, from one of our addresses and within the MTU;
/// our segments carry exactly the bytes the application wrote at their sequence numbers, new data only
/// within a window the peer offered, and a FIN only after the last byte once the application closed; our
/// ACKs and SACK blocks cover only what the peer sent; the application reads exactly the peer's bytes; and
/// the stack never holds more connections than its backlogs allow.
let ours = [IPAddress("192.168.4.3")!, IPAddress("fd00:4::3")!]
let peers = [IPAddress("192.168.4.1")!, IPAddress("fd00:4::1")!]
let listeningPort: UInt16 = 80
let peerListeningPort: UInt16 = 8080
let peerPort: UInt16 = 40_000

/// Byte `i` of each direction's stream is a function of `i`: every copy of a byte (original, retransmitted,
/// duplicated, reordered) carries the same value, and what arrives can be checked against what was sent.
func peerByte(_ i: Int) -> UInt8 { UInt8(truncatingIfNeeded: (UInt32(truncatingIfNeeded: i) &* 0x9E37_79B1) >> 24) }
func ourByte(_ i: Int) -> UInt8 { UInt8(truncatingIfNeeded: (UInt32(truncatingIfNeeded: i) &* 0x85EB_CA77) >> 24) }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzInterface(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    var input = Input(bytes: UnsafeRawBufferPointer(start: data, count: size))
    let setup = Setup(&input)
    // Our ISN is M + F (RFC 6528): a stack with the same seed, opened at time zero, tells F.
    let f = Session(setup, start: .zero).iss
    let session = Session(setup, start: Instant(nanoseconds: UInt64(setup.iss &- f) * 4_000))
    precondition(session.iss == setup.iss, "the ISN did not follow the clock")
    session.completeHandshake()
    var operations = 0
    while !input.isEmpty && operations < 1024 {
        operations += 1
        session.step(&input)
    }
    precondition(session.tcp.count <= 1 + 2 * session.tcp.acceptBacklog, "connections grew without bound")
    return 0
}

/// The input, read from the front; past its end every byte reads as zero.
struct Input {
    let bytes: UnsafeRawBufferPointer
    var offset = 0

    var isEmpty: Bool { offset >= bytes.count }

    mutating func byte() -> UInt8 {
        defer { offset += 1 }
        return offset < bytes.count ? bytes[offset] : 0
    }

    mutating func u16() -> UInt16 { UInt16(byte()) << 8 | UInt16(byte()) }

    mutating func u32() -> UInt32 { UInt32(u16()) << 16 | UInt32(u16()) }

    /// Up to `count` bytes, fewer at the end of the input.
    mutating func take(_ count: Int) -> UnsafeRawBufferPointer {
        let start = min(offset, bytes.count)
        let n = min(count, bytes.count - start)
        offset = start + n
        return UnsafeRawBufferPointer(rebasing: bytes[start..<offset])
    }
}

/// The first 16 bytes of the input (see `fuzzInterface`).
struct Setup {
    var passive: Bool
    var family: Int
    var sack: Bool
    var windowScale: UInt8?
    var mss: UInt16?
    var config: TCPConfig
    var iss: UInt32
    var irs: UInt32
    var window: UInt16
    var roundTrip: UInt64

    init(_ input: inout Input) {
        let flags = input.byte()
        let shift = input.byte()
        let mss = input.u16()
        passive = flags & 1 != 0
        family = Int(flags >> 1 & 1)
        sack = flags & 4 != 0
        windowScale = flags & 8 != 0 ? shift : nil
        self.mss = flags & 16 != 0 ? mss : nil
        config = TCPConfig(congestionControl: flags & 32 != 0 ? .newReno : .bbr)
        if flags & 64 != 0 {
            config.receiveBufferLimit = 16 << 10
            config.sendBufferLimit = 16 << 10
            config.initialReceiveWindow = 16 << 10
        }
        iss = input.u32()
        irs = input.u32()
        window = input.u16()
        roundTrip = UInt64(input.u16()) * 10_000
    }
}

/// One run: the interface and its stack, the clock, our connection, and the fake peer's model of both
/// directions. Positions in a stream are offsets from the first byte after the SYN.
final class Session {
    let setup: Setup
    let interface: NetworkInterface
    let tcp: TCPStack
    var now: Instant
    let out: UnsafeMutableRawBufferPointer
    var local: IPAddress { ours[setup.family] }
    var remote: IPAddress { peers[setup.family] }
    var localPort: UInt16 = 0
    var remotePort: UInt16 = 0
    /// Our initial sequence number, from our SYN or SYN,ACK.
    var iss: UInt32 = 0
    var id: Int?
    var connection: TCPConnection? { id.map { tcp.connection($0) } }

    // Our direction: what the application wrote, what we sent, what the peer acknowledged and allowed.
    var written = 0
    var closed = false
    var sentEnd = 0
    var largestSegment = 0
    var peerAck = 0
    var peerWindow: UInt16
    /// The farthest edge any acceptable ACK and window of the peer allowed.
    var allowedEdge = 0
    /// The peer's window shift; 0 unless both SYNs carried the option.
    var peerShift = 0

    // The peer's direction: the ranges it sent, its FIN, what we acknowledged, what was read.
    var peerSent = Ranges()
    var peerFin: Int?
    var peerNext = 0
    /// A peer sends its FIN after all its data, and nothing after it. One that did otherwise leaves our
    /// acknowledgments undefined (a FIN below data already received), so they are checked no further.
    var peerConsistent = true
    var ourAck = 0
    var read = 0

    /// The application's writes stop here, so that a run stays fast.
    static let writeBudget = 1 << 20

    init(_ setup: Setup, start: Instant) {
        self.setup = setup
        now = start
        peerWindow = setup.window
        out = UnsafeMutableRawBufferPointer.allocate(byteCount: 1420, alignment: 16)
        interface = NetworkInterface(addresses: ours, mtu: out.count)
        tcp = TCPStack(config: setup.config, acceptBacklog: 16, random: SeededRandom(seed: 7))
        interface.tcp = tcp
        tcp.listen(port: listeningPort)
        if setup.passive {
            localPort = listeningPort
            remotePort = peerPort
            var syn = peerHeader(rel: -1, flags: .syn)
            syn.window = setup.window
            offerOptions(&syn)
            receive(syn, length: 0)
            let synAck = expectOne()
            precondition(synAck.flags == [.syn, .ack] && synAck.acknowledgmentNumber == setup.irs &+ 1, "no SYN,ACK")
            iss = synAck.sequenceNumber
            learnOptions(synAck)
        } else {
            id = tcp.connect(from: local, to: remote, port: peerListeningPort, now: now)
            let syn = expectOne()
            precondition(syn.flags == .syn && syn.destinationPort == peerListeningPort, "no SYN")
            iss = syn.sequenceNumber
            localPort = syn.sourcePort
            remotePort = peerListeningPort
            learnOptions(syn)
        }
    }

    deinit { out.deallocate() }

    /// The peer's SYN,ACK (we opened) or ACK (it did), a round trip after our SYN.
    func completeHandshake() {
        now = now.adding(setup.roundTrip)
        if setup.passive {
            var ack = peerHeader(rel: 0, flags: .ack)
            ack.window = setup.window
            receive(ack, length: 0)
            id = tcp.accept()
        } else {
            var synAck = peerHeader(rel: -1, flags: [.syn, .ack])
            synAck.window = setup.window
            offerOptions(&synAck)
            receive(synAck, length: 0)
        }
        precondition(connection?.state == .established, "not established after a valid handshake")
        // The window of a SYN is never scaled (RFC 7323 §2.2); that of the ACK completing a passive open is.
        allowedEdge = Int(setup.window) << (setup.passive ? peerShift : 0)
        drain()
    }

    func offerOptions(_ repr: inout TCPRepr) {
        repr.maxSegmentSize = setup.mss
        repr.windowScale = setup.windowScale
        repr.sackPermitted = setup.sack
    }

    /// Our SYN or SYN,ACK: window scaling is on when both sides offered it (RFC 7323 §2.2).
    func learnOptions(_ syn: TCPRepr) {
        if let shift = setup.windowScale, syn.windowScale != nil { peerShift = Int(min(shift, 14)) }
    }

    /// The one packet our SYN or SYN,ACK must be.
    func expectOne() -> TCPRepr {
        guard let n = interface.pollPacket(into: out, now: now),
            let (builder, payload) = PacketBuilder.parse(UnsafeRawBufferPointer(rebasing: out[0..<n])),
            case .tcp(let repr) = builder.transport, payload.isEmpty, builder.source == local
        else { fatalError("the handshake's first segment is missing or malformed") }
        precondition(interface.pollPacket(into: out, now: now) == nil, "more than one segment to open")
        return repr
    }

    // MARK: Operations

    func step(_ input: inout Input) {
        let op = input.byte()
        switch op & 7 {
        case 0, 1: peerSegment(&input)
        case 2: advance(by: UInt64(input.u16()) << UInt64(min(op >> 3, 20)))
        case 3: advance(by: interface.nextDeadline().map { $0.since(now) } ?? 0)
        case 4: write(Int(input.u16()), inPlace: op & 8 != 0)
        case 5: readData(Int(input.u16()))
        case 6:
            // Aborts are rare: they end everything else.
            if op >> 3 == 31 { connection!.abort() } else { connection!.close() }
            closed = true
            tcp.markReady(id!)
        default: rawPacket(&input)
        }
        drain()
    }

    /// A segment from the peer shaped by the input, relative to the real sequence numbers. Two bytes: the
    /// first holds the sequence mode (bits 0–1), the ACK mode (2–3), FIN (4) and the number of SACK blocks
    /// (5–7, 0–4); the second the window mode (bits 0–1) and a full-sized payload (bit 2), or, when its top
    /// nibble is 0xF, a RST, a SYN, no ACK, or a bare RST by bits 0–1.
    func peerSegment(_ input: inout Input) {
        let shape = input.byte()
        let control = input.byte()
        let length = control & 4 != 0 ? connection!.config.mss : Int(input.u16()) % 2049
        let rel: Int
        switch shape & 3 {
        case 0: rel = peerNext
        case 1: rel = ourAck
        case 2: rel = peerNext + Int(input.u16())
        default: rel = ourAck + Int(Int16(bitPattern: input.u16()))
        }
        var flags: TCPFlags = .ack
        if shape & 16 != 0 { flags.insert(.fin) }
        if control >> 4 == 0xF {
            switch control & 3 {
            case 0: flags.insert(.rst)
            case 1: flags.insert(.syn)
            case 2: flags.remove(.ack)
            default: flags = .rst
            }
        }
        var repr = peerHeader(rel: rel, flags: flags)
        let ack: Int
        switch shape >> 2 & 3 {
        case 0: ack = sentEnd
        case 1: ack = peerAck
        case 2: ack = min(peerAck + Int(input.u16()), sentEnd)
        default: ack = peerAck + Int(Int16(bitPattern: input.u16()))
        }
        repr.acknowledgmentNumber = iss &+ 1 &+ UInt32(truncatingIfNeeded: ack)
        switch control & 3 {
        case 0: repr.window = 0xFFFF
        case 1: repr.window = peerWindow
        case 2: repr.window = input.u16()
        default: repr.window = 0
        }
        let blocks = Int(shape >> 5)
        for _ in 0..<(blocks > 4 ? 0 : blocks) {
            let start: Int
            let end: Int
            let a = input.byte()
            if a & 0x80 == 0 {
                // Whole segments from SND.UNA, as a real receiver reports them.
                let segment = largestSegment > 0 ? largestSegment : 536
                start = peerAck + Int(a) * segment
                end = start + (Int(input.byte() % 16) + 1) * segment
            } else {
                start = peerAck + Int(Int16(bitPattern: input.u16()))
                end = start + Int(input.u16())
            }
            _ = repr.sackBlocks.append(TCPSackBlock(
                left: iss &+ 1 &+ UInt32(truncatingIfNeeded: start), right: iss &+ 1 &+ UInt32(truncatingIfNeeded: end)))
        }
        receive(repr, length: length)
        let end = rel + length
        if let fin = peerFin, end > fin || (flags.contains(.fin) && end != fin) { peerConsistent = false }
        if flags.contains(.fin) && peerFin == nil {
            if end < (peerSent.ranges.map(\.upperBound).max() ?? 0) { peerConsistent = false }
            peerFin = end
        }
        if length > 0 { peerSent.insert(rel..<end) }
        peerNext = max(peerNext, end + (flags.contains(.fin) ? 1 : 0))
        if flags.contains(.ack) && ack <= sentEnd {
            peerAck = max(peerAck, ack)
            peerWindow = repr.window
            // Measured from the highest ACK: the connection takes a window update from an older ACK too.
            allowedEdge = max(allowedEdge, peerAck + Int(repr.window) << peerShift)
        }
    }

    func peerHeader(rel: Int, flags: TCPFlags) -> TCPRepr {
        TCPRepr(
            sourcePort: remotePort, destinationPort: localPort,
            sequenceNumber: setup.irs &+ 1 &+ UInt32(truncatingIfNeeded: rel), acknowledgmentNumber: iss &+ 1,
            flags: flags, window: peerWindow)
    }

    /// Builds the peer's segment with `length` bytes of its stream and hands it to the interface.
    func receive(_ repr: TCPRepr, length: Int) {
        let builder = PacketBuilder(source: remote, destination: local, transport: .tcp(repr))
        let rel = Int(Int32(bitPattern: repr.sequenceNumber &- setup.irs &- 1))
        // Exactly the packet's size, so that any read past its end is caught.
        let packet = UnsafeMutableRawBufferPointer.allocate(byteCount: builder.headerLength + length, alignment: 16)
        defer { packet.deallocate() }
        for i in 0..<length { packet[builder.headerLength + i] = peerByte(rel + i) }
        let n = builder.emit(into: packet, at: 0, payloadLength: length)
        precondition(interface.receive(packet: UnsafeRawBufferPointer(rebasing: packet[0..<n]), now: now) == .consumed, "a segment for our connection not taken")
    }

    /// The clock moves on by `ns`, firing each deadline on the way as a driver's timer would.
    func advance(by ns: UInt64) {
        let target = now.adding(ns)
        var wakeUps = 0
        while wakeUps < 64, let deadline = interface.nextDeadline(), deadline <= target {
            wakeUps += 1
            now = max(now, deadline)
            interface.handleTimeout(now: now)
            drain()
        }
        now = target
        interface.handleTimeout(now: now)
    }

    func write(_ count: Int, inPlace: Bool) {
        let n = min(count, Self.writeBudget - written)
        guard let connection, n > 0 else { return }
        let accepted: Int
        if inPlace {
            let region = connection.sendRegion(maxBytes: n)
            accepted = min(region.count, n)
            for i in 0..<accepted { region[i] = ourByte(written + i) }
            connection.commitSend(accepted)
        } else {
            let bytes = (0..<n).map { ourByte(written + $0) }
            accepted = bytes.withUnsafeBytes { connection.send($0) }
        }
        precondition(accepted == 0 || !closed, "accepted data after close")
        written += accepted
        if accepted > 0 { tcp.markReady(id!) }
    }

    func readData(_ count: Int) {
        guard let connection else { return }
        var left = count
        while left > 0 {
            let readable = connection.readable()
            guard !readable.isEmpty else { break }
            let n = min(left, readable.count)
            precondition(read + n <= peerSent.prefixEnd, "read bytes the peer never sent")
            for i in 0..<n where readable[i] != peerByte(read + i) { fatalError("read a byte the peer did not send at \(read + i)") }
            connection.consume(n)
            read += n
            left -= n
        }
        tcp.markReady(id!)
    }

    func rawPacket(_ input: inout Input) {
        let control = input.byte()
        let bytes = input.take(Int(control >> 1) * 4)
        let packet = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 16)
        defer { packet.deallocate() }
        let p = UnsafeMutableRawBufferPointer(rebasing: packet[0..<bytes.count])
        p.copyMemory(from: bytes)
        if control & 1 == 1 { addressToUs(p) }
        // Segments for our connection come only from the peer's model, which the checks rely on.
        if let ip = try? IPPacket(validating: UnsafeRawBufferPointer(p)), ip.source == remote, ip.upperLayerProtocol == .tcp,
            let segment = try? TCPSegment(validating: ip.upperLayerPayload),
            segment.sourcePort == remotePort, segment.destinationPort == localPort
        { return }
        _ = interface.receive(packet: UnsafeRawBufferPointer(p), now: now)
    }

    // MARK: Output

    /// Takes every packet the interface has to send and checks it, then the stack's events, as a driver does.
    func drain() {
        defer { while tcp.pollEvent() != nil {} }
        var sent = 0
        while let n = interface.pollPacket(into: out, now: now) {
            sent += 1
            precondition(sent < 1 << 17, "output without end")
            precondition(n <= interface.mtu, "a packet over the MTU")
            let packet = UnsafeRawBufferPointer(rebasing: out[0..<n])
            guard let ip = try? IPPacket(validating: packet) else { fatalError("a packet sent does not parse") }
            precondition(ours.contains(ip.source), "a packet from an address that is not ours")
            guard ip.source == local, ip.destination == remote, ip.upperLayerProtocol == .tcp,
                let segment = try? TCPSegment(validating: ip.upperLayerPayload),
                segment.sourcePort == localPort, segment.destinationPort == remotePort
            else { continue }
            precondition(segment.verifyChecksum(src: ip.source, dst: ip.destination), "our segment's checksum is wrong")
            check(TCPRepr.parse(segment), segment.payload)
        }
    }

    /// One of our connection's segments against what the application wrote and the peer sent.
    func check(_ repr: TCPRepr, _ payload: UnsafeRawBufferPointer) {
        // A RST may carry the sequence number of the segment it answers (RFC 9293 §3.10.7.4).
        guard !repr.flags.contains(.rst) else { return }
        precondition(repr.flags.contains(.ack) && !repr.flags.contains(.syn), "a segment without ACK, or a SYN, once established")
        let rel = Int(Int32(bitPattern: repr.sequenceNumber &- iss &- 1))
        let fin = repr.flags.contains(.fin)
        // An empty segment may be numbered SND.UNA - 1 (a zero-window probe) or one past our FIN.
        precondition(rel >= (payload.isEmpty ? -1 : 0) && rel + payload.count <= written + (closed ? 1 : 0), "a segment outside what was written")
        for i in 0..<payload.count where payload[i] != ourByte(rel + i) { fatalError("sent a byte not written at \(rel + i)") }
        precondition(!fin || (closed && rel + payload.count == written), "a FIN not after the last byte written")
        // RFC 9293 §3.8.6.2.1: new data only within the window (empty segments may go past it: ACKs, the
        // zero-window probe, a bare FIN).
        precondition(payload.isEmpty || rel + payload.count <= max(allowedEdge, sentEnd), "sent past every window the peer offered")
        sentEnd = max(sentEnd, rel + payload.count + (fin ? 1 : 0))
        largestSegment = max(largestSegment, payload.count)
        let ack = Int(Int32(bitPattern: repr.acknowledgmentNumber &- setup.irs &- 1))
        ourAck = ack
        guard peerConsistent else { return }
        let prefix = peerSent.prefixEnd
        precondition(ack <= prefix || (ack == prefix + 1 && peerFin == prefix), "acknowledged what the peer never sent")
        for block in repr.sackBlocks {
            let left = Int(Int32(bitPattern: block.left &- setup.irs &- 1))
            let right = Int(Int32(bitPattern: block.right &- setup.irs &- 1))
            precondition(left < right && peerSent.covers(left..<right), "a SACK block for what the peer never sent")
        }
    }
}

/// Disjoint ranges of stream positions, merged as they are added.
struct Ranges {
    var ranges: [Range<Int>] = []

    mutating func insert(_ range: Range<Int>) {
        var merged = range
        ranges.removeAll { r in
            guard r.overlaps(merged) || r.upperBound == merged.lowerBound || merged.upperBound == r.lowerBound else { return false }
            merged = min(r.lowerBound, merged.lowerBound)..<max(r.upperBound, merged.upperBound)
            return true
        }
        ranges.append(merged)
    }

    func covers(_ range: Range<Int>) -> Bool { ranges.contains { $0.lowerBound <= range.lowerBound && range.upperBound <= $0.upperBound } }

    /// Where the run of positions from 0 ends.
    var prefixEnd: Int { ranges.first { $0.contains(0) }?.upperBound ?? 0 }
}

/// Rewrites the destination to our address and recomputes the IPv4 header and transport checksums.
func addressToUs(_ p: UnsafeMutableRawBufferPointer) {
    guard p.count >= 20 else { return }
    let transportAt: Int
    let proto: UInt8
    if p[0] >> 4 == 4 {
        let headerLength = Int(p[0] & 0x0f) * 4
        guard headerLength >= 20, p.count >= headerLength else { return }
        p[16] = 192; p[17] = 168; p[18] = 4; p[19] = 3
        p[10] = 0; p[11] = 0
        let sum = Checksum.compute(UnsafeRawBufferPointer(rebasing: p[0..<headerLength]))
        p.storeBytes(of: sum.bigEndian, toByteOffset: 10, as: UInt16.self)
        transportAt = headerLength
        proto = p[9]
    } else if p[0] >> 4 == 6, p.count >= 40 {
        for i in 24..<40 { p[i] = 0 }
        p[24] = 0xfd; p[26] = 0; p[27] = 4; p[39] = 3
        transportAt = 40
        proto = p[6]
    } else {
        return
    }
    guard let ip = try? IPPacket(validating: UnsafeRawBufferPointer(p)) else { return }
    let upper = ip.upperLayerPayload
    let field: Int
    switch proto {
    case 6: field = 16
    case 17: field = 6
    case 1, 58: field = 2
    default: return
    }
    let start = upper.baseAddress! - UnsafeRawPointer(p.baseAddress!)
    guard start >= transportAt, upper.count >= field + 2 else { return }
    p.storeBytes(of: 0, toByteOffset: start + field, as: UInt16.self)
    var sum = proto == 1 ? Checksum() : Checksum.pseudoHeader(src: ip.source, dst: ip.destination, protocol: IPProtocol(rawValue: proto), length: upper.count)
    sum.add(UnsafeRawBufferPointer(rebasing: p[start..<(start + upper.count)]))
    p.storeBytes(of: sum.finalize().bigEndian, toByteOffset: start + field, as: UInt16.self)
}
