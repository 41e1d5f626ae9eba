import FuzzDriver
import Glibc
@_spi(OneTunInternals) import OneTunCore

/// Hands over to libFuzzer however the target was built (see fuzz/Package.swift).
@main enum Entry {
    static func main() { exit(fuzzDriverMain(CommandLine.argc, CommandLine.unsafeArgv)) }
}

/// The UDP path without a tunnel: a `NetworkInterface` with `hasUDP` fed arbitrary packets, and a
/// `UDPPortPool` driven by an operation stream, both decoded from the input.
///
/// Input: the first byte says where the packets end (`byte * size / 256`) and, by its lowest bit, whether
/// the interface trusts transport checksums (as behind a WireGuard session); the rest is operations.
/// - Packets: each is a control byte and `(control >> 2) * 8` bytes. Bit 0 asks for the packet to be
///   addressed to us with every checksum made valid; bit 1 first makes it UDP. A packet passed up as UDP
///   must parse as IP + UDP to one of our addresses, its checksum valid (trusting: any, but never zero over
///   IPv6), its payload inside the packet.
/// - Operations, two bytes each, on a 16-port pool (limit 4 per IP, 60 s idle): port(for:), client(for:)
///   or reserve(_:), time moving on with expire(now:), or jumping to exactly nextDeadline (and 1 ns before
///   it). A plain
///   reference model follows along: same ports for known clients, same reclaim victims, same expiries,
///   same deadline, same capacity; count ≤ capacity, per-IP ≤ limit, port ↔ client round trip, a reserved
///   port never handed out.
let ours = [IPAddress("192.168.4.3")!, IPAddress("fd00:4::3")!]
let poolRange: ClosedRange<UInt16> = 1000...1015
let perAddressLimit = 4
let idle = 60 * Nanos.second

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzUDPPath(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let split = 1 + Int(input[0]) * (size - 1) / 256
    packets(UnsafeRawBufferPointer(rebasing: input[1..<split]), trusting: input[0] & 1 == 1)
    operations(UnsafeRawBufferPointer(rebasing: input[split..<size]))
    return 0
}

// MARK: - The interface

func packets(_ input: UnsafeRawBufferPointer, trusting: Bool) {
    let interface = NetworkInterface(addresses: ours, mtu: 1420)
    interface.hasUDP = true
    interface.trustsTransportChecksums = trusting
    var offset = 0
    var passedUp = 0
    while offset < input.count {
        let control = input[offset]
        let length = min(Int(control >> 2) * 8, input.count - offset - 1)
        let packet = UnsafeMutableRawBufferPointer.allocate(byteCount: max(length, 1), alignment: 16)
        defer { packet.deallocate() }
        packet.copyMemory(from: UnsafeRawBufferPointer(rebasing: input[(offset + 1)..<(offset + 1 + length)]))
        offset += 1 + length
        let p = UnsafeMutableRawBufferPointer(rebasing: packet[0..<length])
        if control & 2 == 2 { makeUDP(p) }
        if control & 1 == 1 { addressToUs(p) }
        let delivery = interface.receive(packet: UnsafeRawBufferPointer(p), now: .zero)
        guard case .udp(let arrival) = delivery else {
            precondition(delivery != .tcp, "TCP passed up though only UDP is on")
            continue
        }
        passedUp += 1
        guard let ip = try? IPPacket(validating: UnsafeRawBufferPointer(p)) else { fatalError("passed up, but the IP packet does not parse") }
        precondition(ours.contains(ip.destination), "a datagram passed up that is not for us")
        precondition(ip.upperLayerProtocol == .udp, "passed up as UDP but is not")
        let upper = ip.upperLayerPayload
        guard let udp = try? UDPDatagram(validating: upper) else { fatalError("passed up, but the UDP header does not parse") }
        if trusting {
            precondition(ip.source.isV4 || udp.checksum != 0, "passed up over IPv6 with a zero checksum")
        } else {
            precondition(udp.verifyChecksum(src: ip.source, dst: ip.destination), "passed up with a bad checksum")
        }
        precondition(udp.payload.count + 8 <= upper.count, "payload longer than the datagram")
        let payloadStart = udp.payload.baseAddress.map { $0 - upper.baseAddress! } ?? 8
        precondition(payloadStart == 8, "payload does not follow the 8-byte header")
        precondition(arrival.source == UDPEndpoint(address: ip.source, port: udp.sourcePort), "wrong source")
        precondition(arrival.destination == UDPEndpoint(address: ip.destination, port: udp.destinationPort), "wrong destination")
        let udpStart = upper.baseAddress! - UnsafeRawBufferPointer(p).baseAddress!
        precondition(arrival.payloadOffset == udpStart + 8 && arrival.payloadLength == udp.payload.count, "the payload's place is wrong")
    }
    // Nothing the interface answers by itself for UDP: no replies queued.
    let out = UnsafeMutableRawBufferPointer.allocate(byteCount: 1500, alignment: 16)
    defer { out.deallocate() }
    var sent = 0
    while let n = interface.pollPacket(into: out, now: .zero) {
        sent += 1
        precondition(sent <= 64, "output not bounded")
        guard let ip = try? IPPacket(validating: UnsafeRawBufferPointer(rebasing: out[0..<n])) else { fatalError("a reply does not parse") }
        precondition(ours.contains(ip.source), "a reply from an address that is not ours")
    }
    precondition(interface.stats.received >= passedUp)
}

/// Sets the protocol field to UDP (17).
func makeUDP(_ p: UnsafeMutableRawBufferPointer) {
    if p.count >= 20, p[0] >> 4 == 4 { p[9] = 17 } else if p.count >= 40, p[0] >> 4 == 6 { p[6] = 17 }
}

/// Rewrites the destination to our address and recomputes the IPv4 header and UDP (or TCP/ICMP) checksum,
/// with the UDP length field made to match the packet when it is UDP.
func addressToUs(_ p: UnsafeMutableRawBufferPointer) {
    guard p.count >= 20 else { return }
    let proto: UInt8
    if p[0] >> 4 == 4 {
        let headerLength = Int(p[0] & 0x0f) * 4
        guard headerLength >= 20, p.count >= headerLength else { return }
        p[16] = 192; p[17] = 168; p[18] = 4; p[19] = 3
        // Total length and no fragmentation, so more packets get past the header checks.
        p.storeBytes(of: UInt16(p.count).bigEndian, toByteOffset: 2, as: UInt16.self)
        p[6] &= 0x40; p[7] = 0
        p[10] = 0; p[11] = 0
        let sum = Checksum.compute(UnsafeRawBufferPointer(rebasing: p[0..<headerLength]))
        p.storeBytes(of: sum.bigEndian, toByteOffset: 10, as: UInt16.self)
        proto = p[9]
    } else if p[0] >> 4 == 6, p.count >= 40 {
        for i in 24..<40 { p[i] = 0 }
        p[24] = 0xfd; p[26] = 0; p[27] = 4; p[39] = 3
        p.storeBytes(of: UInt16(p.count - 40).bigEndian, toByteOffset: 4, as: UInt16.self)
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
    guard upper.count >= field + 2, start + upper.count <= p.count else { return }
    if proto == 17 { p.storeBytes(of: UInt16(upper.count).bigEndian, toByteOffset: start + 4, as: UInt16.self) }
    p.storeBytes(of: 0, toByteOffset: start + field, as: UInt16.self)
    var sum = proto == 1 ? Checksum() : Checksum.pseudoHeader(src: ip.source, dst: ip.destination, protocol: IPProtocol(rawValue: proto), length: upper.count)
    sum.add(UnsafeRawBufferPointer(rebasing: p[start..<(start + upper.count)]))
    var value = sum.finalize()
    if proto == 17 && value == 0 { value = 0xffff }  // RFC 768: a computed zero is sent as all ones
    p.storeBytes(of: value.bigEndian, toByteOffset: start + field, as: UInt16.self)
}

// MARK: - The port pool

/// The pool's rules written plainly: mappings with a last-use order; O(n) everything.
struct Model {
    struct Mapping {
        var client: UDPEndpoint
        var port: UInt16
        var lastUsed: Instant
        var order: Int
    }
    var mappings: [Mapping] = []
    var reserved: Set<UInt16> = []
    var clock = 0
    var reclaimed = 0
    var expired = 0

    mutating func touch(_ i: Int, _ now: Instant) {
        clock += 1
        mappings[i].lastUsed = now
        mappings[i].order = clock
    }

    func oldest(_ match: (Mapping) -> Bool) -> Int? {
        mappings.indices.filter { match(mappings[$0]) }.min { mappings[$0].order < mappings[$1].order }
    }

    /// The client's port when it has one; otherwise makes room as the pool must.
    mutating func prepare(_ client: UDPEndpoint, _ now: Instant) -> UInt16? {
        if let i = mappings.firstIndex(where: { $0.client == client }) {
            touch(i, now)
            return mappings[i].port
        }
        let sameAddress = mappings.filter { $0.client.address == client.address }.count
        let victim = sameAddress >= perAddressLimit ? oldest { $0.client.address == client.address }
            : mappings.count >= capacity ? oldest { _ in true } : nil
        if let victim {
            mappings.remove(at: victim)
            reclaimed += 1
        }
        return nil
    }

    mutating func add(_ client: UDPEndpoint, _ port: UInt16, _ now: Instant) {
        clock += 1
        mappings.append(Mapping(client: client, port: port, lastUsed: now, order: clock))
    }

    mutating func client(for port: UInt16, _ now: Instant) -> UDPEndpoint? {
        guard let i = mappings.firstIndex(where: { $0.port == port }) else { return nil }
        touch(i, now)
        return mappings[i].client
    }

    mutating func expire(_ now: Instant) {
        let before = mappings.count
        mappings.removeAll { $0.lastUsed.adding(idle) <= now }
        expired += before - mappings.count
    }

    var capacity: Int { poolRange.count - reserved.count }

    /// Out of the range: refused. The last port that could be handed out: refused. Otherwise reserved, and
    /// whoever held it loses the mapping (neither reclaimed nor expired).
    mutating func reserve(_ port: UInt16) -> Bool {
        guard poolRange.contains(port) else { return false }
        if reserved.contains(port) { return true }
        guard capacity > 1 else { return false }
        reserved.insert(port)
        mappings.removeAll { $0.port == port }
        return true
    }

    var nextDeadline: Instant? { mappings.map { $0.lastUsed.adding(idle) }.min() }
}

/// A client from one byte: one of 8 addresses (4 IPv4, 4 IPv6) and one of 16 ports.
func client(_ b: UInt8) -> UDPEndpoint {
    let host = b >> 4 & 3
    let address: IPAddress = b & 0x40 == 0 ? .v4(IPv4Address(127, 0, 0, 1 + host)) : IPAddress("::\(1 + host)")!
    return UDPEndpoint(address: address, port: 40000 + UInt16(b & 0x0f))
}

func operations(_ input: UnsafeRawBufferPointer) {
    let pool = UDPPortPool(range: poolRange, idleTimeout: idle, perAddressLimit: perAddressLimit, random: SeededRandom(seed: 1))
    var model = Model()
    var now = Instant(nanoseconds: 1)
    var i = 0
    while i + 1 < input.count {
        let (op, arg) = (input[i], input[i + 1])
        i += 2
        switch op & 3 {
        case 0:
            let c = client(arg)
            let known = model.prepare(c, now)
            let port = pool.port(for: c, now: now)
            precondition(poolRange.contains(port), "port \(port) outside the range")
            precondition(!model.reserved.contains(port), "reserved port \(port) handed out")
            if let known {
                precondition(port == known, "\(c) moved from port \(known) to \(port)")
            } else {
                precondition(!model.mappings.contains { $0.port == port }, "port \(port) handed out twice")
                model.add(c, port, now)
            }
            // Round trip (touching again at the same instant changes nothing the model tracks but order).
            precondition(pool.client(for: port, now: now) == c, "port \(port) does not lead back to \(c)")
            _ = model.client(for: port, now)
        case 1:
            let port = poolRange.lowerBound &- 1 &+ UInt16((arg & 0x7f) % UInt8(poolRange.count + 2))
            if arg & 0x80 == 0 {
                precondition(pool.client(for: port, now: now) == model.client(for: port, now), "port \(port) maps differently")
            } else {
                precondition(pool.reserve(port) == model.reserve(port), "reserving \(port) differs")
            }
        case 2:
            // Time moves on: quarter seconds, or whole idle timeouts when the high bit is set.
            now = now.adding(arg & 0x80 == 0 ? UInt64(arg) * 250 * Nanos.millisecond : UInt64(arg & 0x7f) * idle / 8)
            pool.expire(now: now)
            model.expire(now)
        default:
            // To the deadline exactly (or 1 ns short of it, when nothing may expire).
            guard let deadline = pool.nextDeadline() else { break }
            let target = arg & 1 == 0 ? deadline : Instant(nanoseconds: deadline.nanoseconds - 1)
            if target > now { now = target }
            let before = pool.count
            pool.expire(now: now)
            model.expire(now)
            if arg & 1 == 1 && target == now { precondition(pool.count == before, "expired before its deadline") }
            if arg & 1 == 0 { precondition(pool.count < before, "nothing expired at the deadline") }
        }
        precondition(pool.count == model.mappings.count, "count \(pool.count), model \(model.mappings.count)")
        precondition(pool.count <= pool.capacity, "more mappings than ports")
        precondition(pool.capacity == model.capacity, "capacity \(pool.capacity), model \(model.capacity)")
        precondition(pool.nextDeadline() == model.nextDeadline, "deadline differs from the model's")
        precondition(pool.reclaimed == model.reclaimed && pool.expired == model.expired, "reclaimed/expired differ")
        var perAddress: [IPAddress: Int] = [:]
        for m in model.mappings { perAddress[m.client.address, default: 0] += 1 }
        precondition(perAddress.values.allSatisfy { $0 <= perAddressLimit }, "an address holds more than its limit")
    }
    // Finally every mapping both ways.
    for m in model.mappings {
        precondition(pool.client(for: m.port, now: now) == m.client, "port \(m.port) lost its client")
        precondition(pool.port(for: m.client, now: now) == m.port, "\(m.client) lost its port")
    }
}
