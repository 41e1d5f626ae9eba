import FuzzDriver
import Glibc
@_spi(OneTunInternals) import OneTunCore

/// Hands over to libFuzzer however the target was built (see fuzz/Package.swift).
@main enum Entry {
    static func main() { exit(fuzzDriverMain(CommandLine.argc, CommandLine.unsafeArgv)) }
}

/// The responder's processing of arbitrary datagrams: a fresh device takes a sequence of datagrams
/// (each prefixed by a control byte and a length byte), optionally with mac1 recomputed so the input
/// reaches the Noise code, with time advancing between them. The first byte picks the load threshold
/// (bit 0), one peer carrying everything or two peers routed by prefixes, one without an endpoint (bit 1),
/// and whether datagrams come from one address or from three in turn (bit 2), so the stranger filter and
/// roaming are reached. Nothing may crash, every datagram must be consumed or dropped with a reason, and
/// the receiver-index table must always hold exactly the peers' indices.
let responderKey = WGCrypto.generatePrivateKey(using: SeededRandom(seed: 1))
let initiatorKey = WGCrypto.generatePrivateKey(using: SeededRandom(seed: 2))
let secondInitiatorKey = WGCrypto.generatePrivateKey(using: SeededRandom(seed: 4))
let responderPublic = WGCrypto.x25519PublicKey(privateKey: responderKey)
let mac1Key: Key32 = Array("mac1----".utf8).withUnsafeBytes { label in
    responderPublic.withUnsafeBytes { WGCrypto.hash(label, $0) }
}
let sources = (1...3).map { n in [10, 0, 0, UInt8(n), 0xCA, 0x6C].withUnsafeBytes { EndpointAddress(bytes: $0) } }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzResponder(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    guard size >= 1 else { return 0 }
    let config = WireGuardConfig(
        privateKey: responderKey, peerPublicKey: WGCrypto.x25519PublicKey(privateKey: initiatorKey),
        handshakeLoadThreshold: input[0] & 1 == 0 ? 64 : 0)
    let tunnel: WireGuardDevice
    if input[0] & 2 == 0 {
        tunnel = WireGuardDevice(config: config, random: SeededRandom(seed: 3))
    } else {
        tunnel = WireGuardDevice(privateKey: responderKey, handshakeLoadThreshold: config.handshakeLoadThreshold, random: SeededRandom(seed: 3))
        let start = Instant(nanoseconds: 1_000_000_000)
        _ = tunnel.addPeer(
            PeerConfig(publicKey: config.peerPublicKey, allowedIPs: [IPPrefix("10.0.0.0/8")!], endpoint: sources[0]), now: start)
        _ = tunnel.addPeer(
            PeerConfig(publicKey: WGCrypto.x25519PublicKey(privateKey: secondInitiatorKey), allowedIPs: [IPPrefix("10.1.0.0/16")!, IPPrefix("::/0")!]),
            now: start)
    }
    let roaming = input[0] & 4 != 0
    var now = Instant(nanoseconds: 1_000_000_000)
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 16)
    defer { buffer.deallocate() }
    var offset = 1
    var datagrams = 0
    while offset + 2 <= size && datagrams < 64 {
        let control = input[offset]
        let length = min(Int(input[offset + 1]) * 2, size - offset - 2)
        offset += 2
        buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: input[offset..<offset + length]))
        offset += length
        datagrams += 1
        // Low bits pick the message type so most inputs reach past the type check.
        if control & 0x80 != 0, length >= 4 {
            buffer.storeBytes(of: UInt32(control & 3) + 1, toByteOffset: 0, as: UInt32.self)
        }
        if control & 0x40 != 0 {
            let mac1At = length == 148 ? 116 : length == 92 ? 60 : -1
            if mac1At > 0 {
                mac1Key.withUnsafeBytes { key in
                    WGCrypto.mac(key: key, UnsafeRawBufferPointer(rebasing: buffer[0..<mac1At]),
                                 into: UnsafeMutableRawBufferPointer(rebasing: buffer[mac1At..<mac1At + 16]))
                }
            }
        }
        now = now.adding(UInt64(control & 0x3f) * 100_000_000)
        let source = roaming ? sources[datagrams % 3] : EndpointAddress()
        _ = tunnel.decapsulate(buffer, datagramLength: length, from: source, now: now)
        var sent = 0
        while sent < 256, tunnel.pollTransmit(into: buffer, now: now) != nil { sent += 1 }
        precondition(sent < 256, "pollTransmit never ran dry")
        if let deadline = tunnel.nextDeadline(), deadline <= now { tunnel.handleTimeout(now: now) }
        precondition(tunnel.indexBookkeepingHolds, "the receiver-index table lost track of an index")
    }
    return 0
}
