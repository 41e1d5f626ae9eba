import FuzzDriver
import Glibc
@_spi(OneTunInternals) import OneTunCore

/// Hands over to libFuzzer however the target was built (see fuzz/Package.swift).
@main enum Entry {
    static func main() { exit(fuzzDriverMain(CommandLine.argc, CommandLine.unsafeArgv)) }
}

/// The network interface ingesting arbitrary packets (the input is cut into packets by a leading length
/// byte each; its low bit asks for the packet to be addressed to us with every checksum made valid, so
/// the input reaches the echo and reset paths): nothing crashes, every packet is delivered, consumed or dropped with a reason, the reply
/// queue stays bounded, the TCP stack behind it (a listener and one open connection) never grows past its
/// backlog, and every packet it sends is well formed and from one of our addresses.
let ours = [IPAddress("192.168.4.3")!, IPAddress("fd00:4::3")!]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzInterface(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let interface = NetworkInterface(addresses: ours, mtu: 1420)
    // A TCP stack with a listener and one open connection, so segments reach real connection state.
    let tcp = TCPStack(acceptBacklog: 16, random: SeededRandom(seed: 7))
    interface.tcp = tcp
    tcp.listen(port: 80)
    _ = tcp.connect(from: ours[0], to: IPAddress("192.168.4.1")!, port: 8080, now: .zero)
    let out = UnsafeMutableRawBufferPointer.allocate(byteCount: 1500, alignment: 16)
    defer { out.deallocate() }
    var offset = 0
    var received = 0
    while offset < size && received < 256 {
        let control = input[offset]
        let length = min(Int(control >> 1) * 4, size - offset - 1)
        let packet = UnsafeMutableRawBufferPointer.allocate(byteCount: max(length, 1), alignment: 16)
        defer { packet.deallocate() }
        packet.copyMemory(from: UnsafeRawBufferPointer(rebasing: input[(offset + 1)..<(offset + 1 + length)]))
        offset += 1 + length
        received += 1
        if control & 1 == 1 { addressToUs(UnsafeMutableRawBufferPointer(rebasing: packet[0..<length])) }
        _ = interface.receive(packet: UnsafeRawBufferPointer(rebasing: packet[0..<length]), now: .zero)
    }
    var sent = 0
    while let n = interface.pollPacket(into: out, now: .zero) {
        sent += 1
        precondition(sent <= 64 + 2 * 256 + 16, "output not bounded")
        guard let ip = try? IPPacket(validating: UnsafeRawBufferPointer(rebasing: out[0..<n])) else { fatalError("a reply does not parse") }
        precondition(ours.contains(ip.source), "a reply from an address that is not ours")
    }
    precondition(tcp.count <= 1 + tcp.acceptBacklog, "connections grew without bound")
    interface.handleTimeout(now: Instant(nanoseconds: 10_000_000_000))
    return 0
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
