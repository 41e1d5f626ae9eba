import FuzzDriver
import Glibc
@_spi(OneTunInternals) import OneTunCore

/// Hands over to libFuzzer however the target was built (see fuzz/Package.swift).
@main enum Entry {
    static func main() { exit(fuzzDriverMain(CommandLine.argc, CommandLine.unsafeArgv)) }
}

/// Every packet parser (IPv4, IPv6 with extension headers, TCP with options, UDP, ICMPv4, ICMPv6): what
/// validates is rebuilt with the packet builder and must parse again to the same representation
/// (smoltcp's parse → emit → re-parse round trip).
struct Decoded: Equatable {
    var builder: PacketBuilder
    var payload: UnsafeRawBufferPointer

    static func == (a: Decoded, b: Decoded) -> Bool {
        a.builder == b.builder && a.payload.elementsEqual(b.payload)
    }
}

/// Parses through every layer, touching the checksum verifiers and ICMP error quoting on the way.
func decode(_ bytes: UnsafeRawBufferPointer) -> Decoded? {
    if let ip = try? IPPacket(validating: bytes) {
        let upper = ip.upperLayerPayload
        switch (ip, ip.upperLayerProtocol) {
        case (_, .tcp): _ = (try? TCPSegment(validating: upper))?.verifyChecksum(src: ip.source, dst: ip.destination)
        case (_, .udp): _ = (try? UDPDatagram(validating: upper))?.verifyChecksum(src: ip.source, dst: ip.destination)
        case (.v4, .icmp): _ = (try? ICMPv4Message(validating: upper)).map { ($0.verifyChecksum(), $0.originalPacket) }
        case (.v6, .icmpv6): _ = (try? ICMPv6Message(validating: upper))?.originalPacket
        default: break
        }
    }
    guard let (builder, payload) = PacketBuilder.parse(bytes) else { return nil }
    return Decoded(builder: builder, payload: payload)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPacketParser(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard let first = decode(UnsafeRawBufferPointer(start: data, count: size)) else { return 0 }
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 + first.builder.headerLength + first.payload.count + 32, alignment: 16)
    defer { buffer.deallocate() }
    let length = first.builder.emit(into: buffer, at: 16, copying: first.payload)
    guard let second = decode(UnsafeRawBufferPointer(rebasing: buffer[16..<16 + length])) else {
        fatalError("a rebuilt packet does not parse")
    }
    precondition(second == first, "parse → emit → parse changed the packet")
    return 0
}
