@_spi(OneTunInternals) @testable import OneTunCore

/// Two WireGuard tunnels joined by a simulated link with a fake clock, in the style of quinn-proto's
/// `Pair`: `step()` moves every queued output onto the link, delivers what is due, then jumps the clock
/// to the earliest next event. Loss, duplication and reordering come from a seeded generator, so a
/// failing seed replays exactly.
final class WireGuardPair {
    struct InFlight {
        var deliverAt: UInt64
        var order: Int
        var bytes: [UInt8]
        var source: EndpointAddress
    }

    var now = Instant(nanoseconds: 1_000 * Nanos.second)
    let a: WireGuardDevice
    let b: WireGuardDevice
    let seed: UInt64
    let linkRandom: SeededRandom
    var latency: UInt64 = 10 * Nanos.millisecond
    var jitter: UInt64 = 0
    var loss = 0.0
    var duplicate = 0.0
    /// Return false to lose a datagram on its way (called with the sender's name and the bytes).
    var filter: ((_ fromA: Bool, _ datagram: [UInt8]) -> Bool)?
    /// The address each side's datagrams arrive from (empty by default, as a driver without addresses).
    var sourceOfA = EndpointAddress()
    var sourceOfB = EndpointAddress()

    var toA: [InFlight] = []
    var toB: [InFlight] = []
    var receivedByA: [[UInt8]] = []
    var receivedByB: [[UInt8]] = []
    var dropsAtA: [DropReason] = []
    var dropsAtB: [DropReason] = []
    var datagramsFromA = 0
    var datagramsFromB = 0
    private var order = 0
    private var scratch = [UInt8](repeating: 0, count: 4096)

    static let keyA = WGCrypto.generatePrivateKey(using: SeededRandom(seed: 0xA))
    static let keyB = WGCrypto.generatePrivateKey(using: SeededRandom(seed: 0xB))

    init(seed: UInt64 = 1, psk: Key32 = .zero, configure: (inout WireGuardConfig, inout WireGuardConfig) -> Void = { _, _ in }) {
        self.seed = seed
        linkRandom = SeededRandom(seed: seed &* 31 &+ 7)
        var configA = WireGuardConfig(
            privateKey: Self.keyA, peerPublicKey: WGCrypto.x25519PublicKey(privateKey: Self.keyB), presharedKey: psk)
        var configB = WireGuardConfig(
            privateKey: Self.keyB, peerPublicKey: WGCrypto.x25519PublicKey(privateKey: Self.keyA), presharedKey: psk)
        configure(&configA, &configB)
        a = WireGuardDevice(config: configA, random: SeededRandom(seed: seed &+ 100))
        b = WireGuardDevice(config: configB, random: SeededRandom(seed: seed &+ 200))
        a.wallClockOffset = 1_700_000_000 * Int64(Nanos.second)
        b.wallClockOffset = 1_700_000_000 * Int64(Nanos.second)
    }

    func chance(_ p: Double) -> Bool {
        p > 0 && Double(linkRandom.uniform(below: 1 << 32)) / Double(1 << 32) < p
    }

    /// Sends an inner packet from one side; returns what encapsulate said.
    @discardableResult
    func send(fromA: Bool, _ packet: [UInt8]) -> Encapsulated {
        let tunnel = fromA ? a : b
        var buffer = [UInt8](repeating: 0, count: WireGuardDevice.headroom + packet.count + WireGuardDevice.tailroom)
        buffer.replaceSubrange(WireGuardDevice.headroom..<WireGuardDevice.headroom + packet.count, with: packet)
        let result = buffer.withUnsafeMutableBytes { tunnel.encapsulate($0, packetLength: packet.count, now: now) }
        if case .send(let n) = result { put(fromA: fromA, Array(buffer[0..<n])) }
        drainTransmits()
        return result
    }

    func put(fromA: Bool, _ datagram: [UInt8]) {
        if fromA { datagramsFromA += 1 } else { datagramsFromB += 1 }
        if let filter, !filter(fromA, datagram) { return }
        if chance(loss) { return }
        let copies = chance(duplicate) ? 2 : 1
        for _ in 0..<copies {
            let extra = jitter > 0 ? linkRandom.uniform(below: jitter) : 0
            order += 1
            let flight = InFlight(
                deliverAt: now.nanoseconds + latency + extra, order: order, bytes: datagram, source: fromA ? sourceOfA : sourceOfB)
            if fromA { toB.append(flight) } else { toA.append(flight) }
        }
    }

    func drainTransmits() {
        for (tunnel, fromA) in [(a, true), (b, false)] {
            var guardCount = 0
            while guardCount < 10_000, let n = scratch.withUnsafeMutableBytes({ tunnel.pollTransmit(into: $0, now: now) }) {
                put(fromA: fromA, Array(scratch[0..<n]))
                guardCount += 1
            }
        }
    }

    func deliverDue() {
        for toSideA in [true, false] {
            var queue = toSideA ? toA : toB
            queue.sort { ($0.deliverAt, $0.order) < ($1.deliverAt, $1.order) }
            let due = queue.prefix { $0.deliverAt <= now.nanoseconds }
            queue.removeFirst(due.count)
            if toSideA { toA = queue } else { toB = queue }
            let tunnel = toSideA ? a : b
            for flight in due {
                var buffer = flight.bytes
                let result = buffer.withUnsafeMutableBytes {
                    tunnel.decapsulate($0, datagramLength: flight.bytes.count, from: flight.source, now: now)
                }
                switch result {
                case .packet(let range):
                    if toSideA { receivedByA.append(Array(buffer[range])) } else { receivedByB.append(Array(buffer[range])) }
                case .consumed: break
                case .dropped(let reason):
                    if toSideA { dropsAtA.append(reason) } else { dropsAtB.append(reason) }
                }
                drainTransmits()
            }
        }
    }

    /// Processes everything due at `now`: outputs, deliveries, timers.
    func processNow() {
        drainTransmits()
        deliverDue()
        for tunnel in [a, b] {
            if let d = tunnel.nextDeadline(), d <= now {
                tunnel.handleTimeout(now: now)
            }
        }
        drainTransmits()
    }

    /// Jumps the clock to the earliest delivery or deadline, never past `limit`.
    func jump(limit: Instant) {
        var next = limit.nanoseconds
        for flight in toA + toB { next = min(next, flight.deliverAt) }
        for tunnel in [a, b] { if let d = tunnel.nextDeadline() { next = min(next, d.nanoseconds) } }
        now = Instant(nanoseconds: max(now.nanoseconds, next))
    }

    /// Runs until `done` or until `seconds` of simulated time pass; bounded in steps too.
    @discardableResult
    func run(seconds: Double, until done: () -> Bool = { false }) -> Bool {
        let limit = now.adding(UInt64(seconds * 1e9))
        var steps = 0
        while steps < 1_000_000 {
            processNow()
            if done() { return true }
            if now >= limit { break }
            jump(limit: limit)
            steps += 1
        }
        return done()
    }

    /// Advances the clock to `now + seconds` while running everything due on the way.
    func advance(seconds: Double) { run(seconds: seconds) }
}

/// A minimal IPv4 packet (protocol 253, reserved for experiments) whose payload carries `tag`, so the
/// tunnel's inner-length check passes and tests can tell packets apart.
func simPacket(tag: UInt32, size: Int = 64) -> [UInt8] {
    precondition(size >= 24)
    var p = [UInt8](repeating: 0, count: size)
    p[0] = 0x45
    p[2] = UInt8(size >> 8)
    p[3] = UInt8(size & 0xff)
    p[8] = 64
    p[9] = 253
    p[12] = 192; p[13] = 168; p[14] = 4; p[15] = 3
    p[16] = 192; p[17] = 168; p[18] = 4; p[19] = 2
    p[20] = UInt8(tag >> 24); p[21] = UInt8(tag >> 16 & 0xff); p[22] = UInt8(tag >> 8 & 0xff); p[23] = UInt8(tag & 0xff)
    for i in 24..<size { p[i] = UInt8(truncatingIfNeeded: i &* 7 &+ Int(tag)) }
    return p
}

func simTag(_ packet: [UInt8]) -> UInt32 {
    UInt32(packet[20]) << 24 | UInt32(packet[21]) << 16 | UInt32(packet[22]) << 8 | UInt32(packet[23])
}

extension WireGuardDevice {
    /// Every event waiting, oldest first.
    func drainEvents() -> [TunnelEvent] {
        var events: [TunnelEvent] = []
        while let e = pollEvent() { events.append(e) }
        return events
    }
}

/// A made-up address (IPv4 bytes and port) for the simulated link.
func simAddress(_ n: UInt8) -> EndpointAddress {
    [10, 0, 0, n, 0xCA, 0x6C].withUnsafeBytes { EndpointAddress(bytes: $0) }
}
