import CSodium
@_spi(OneTunInternals) @testable import OneTunCore

/// Two interfaces with TCP stacks over a simulated IP link: bandwidth, latency, jitter (which reorders),
/// loss, duplication and corruption, each direction on its own, all drawn from one seeded generator so a
/// failure replays from its seed. Time is fake and jumps to the next event.
final class LossyIPLink {
    struct Flight {
        var at: UInt64
        var order: Int
        var toServer: Bool
        var packet: [UInt8]
    }

    var now = Instant(nanoseconds: 9_000 * Nanos.second)
    let client = NetworkInterface(addresses: [IPAddress("192.168.4.3")!, IPAddress("fd00:4::3")!])
    let server = NetworkInterface(addresses: [IPAddress("192.168.4.1")!, IPAddress("fd00:4::1")!])
    let clientTCP: TCPStack
    let serverTCP: TCPStack
    let random: SeededRandom
    var latency: UInt64 = 10 * Nanos.millisecond
    var jitter: UInt64 = 0
    var loss = 0.0
    var duplicate = 0.0
    var corrupt = 0.0
    /// Bytes per second in each direction; 0 for no limit.
    var bandwidth: UInt64 = 0
    private var linkFreeAt: [UInt64] = [0, 0]
    private var queue: [Flight] = []
    private var order = 0
    private var buffer = [UInt8](repeating: 0, count: 65_536)
    private(set) var corrupted = 0
    var trace = false

    init(seed: UInt64, config: TCPConfig = TCPConfig()) {
        random = SeededRandom(seed: seed)
        clientTCP = TCPStack(config: config, random: SeededRandom(seed: seed &+ 100))
        serverTCP = TCPStack(config: config, random: SeededRandom(seed: seed &+ 200))
        client.tcp = clientTCP
        server.tcp = serverTCP
    }

    func chance(_ p: Double) -> Bool { p > 0 && Double(random.uniform(below: 1 << 32)) / Double(1 << 32) < p }

    private func drain() {
        for (interface, toServer) in [(client, true), (server, false)] {
            var guardCount = 0
            while guardCount < 1_000_000, let n = buffer.withUnsafeMutableBytes({ interface.pollPacket(into: $0, now: now) }) {
                guardCount += 1
                if chance(loss) { continue }
                let direction = toServer ? 0 : 1
                var departure = now.nanoseconds
                if bandwidth > 0 {
                    departure = max(departure, linkFreeAt[direction]) + UInt64(n) * Nanos.second / bandwidth
                    linkFreeAt[direction] = departure
                }
                for _ in 0..<(chance(duplicate) ? 2 : 1) {
                    var packet = Array(buffer[0..<n])
                    if chance(corrupt) {
                        // One byte anywhere, changed to a different value: the IP or TCP checksum must catch it.
                        let i = Int(random.uniform(below: UInt64(n)))
                        packet[i] ^= UInt8(1 + random.uniform(below: 255))
                        corrupted += 1
                    }
                    order += 1
                    let extra = jitter > 0 ? random.uniform(below: jitter) : 0
                    insert(Flight(at: departure + latency + extra, order: order, toServer: toServer, packet: packet))
                }
            }
        }
    }

    private func insert(_ flight: Flight) {
        var i = queue.count
        while i > 0 && (queue[i - 1].at, queue[i - 1].order) > (flight.at, flight.order) { i -= 1 }
        queue.insert(flight, at: i)
    }

    /// Runs until `done` or `seconds` of simulated time; `app` runs after every step.
    func run(seconds: Double, app: () -> Void, until done: () -> Bool) -> Bool {
        let limit = now.adding(UInt64(seconds * 1e9))
        for _ in 0..<20_000_000 {
            drain()
            var due = 0
            while due < queue.count && queue[due].at <= now.nanoseconds { due += 1 }
            let arrivals = queue[0..<due]
            queue.removeFirst(due)
            for flight in arrivals {
                if trace {
                    flight.packet.withUnsafeBytes { raw in
                        if let (b, p) = PacketBuilder.parse(raw), case .tcp(let t) = b.transport {
                            print("\(now) \(flight.toServer ? "->S" : "->C") seq=\(t.sequenceNumber) ack=\(t.acknowledgmentNumber) \(t.flags) win=\(t.window) len=\(p.count) sack=\(Array(t.sackBlocks))")
                        }
                    }
                }
                let target = flight.toServer ? server : client
                _ = flight.packet.withUnsafeBytes { target.receive(packet: $0, now: now) }
            }
            for interface in [client, server] {
                if let d = interface.nextDeadline(), d <= now { interface.handleTimeout(now: now) }
            }
            app()
            drain()
            if done() { return true }
            if now >= limit { return false }
            var next = limit.nanoseconds
            if let first = queue.first { next = min(next, first.at) }
            for interface in [client, server] { if let d = interface.nextDeadline() { next = min(next, d.nanoseconds) } }
            now = Instant(nanoseconds: max(now.nanoseconds + 1, min(next, now.nanoseconds + Nanos.millisecond)))
        }
        return done()
    }
}

/// Writes `total` bytes of a seeded pseudo-random stream and hashes what it reads with SHA-256, so 16 MiB
/// transfers are checked without keeping them.
final class HashingStreamApp {
    let total: Int
    private(set) var written = 0
    private(set) var receivedCount = 0
    private var sentState = crypto_hash_sha256_state()
    private var receivedState = crypto_hash_sha256_state()
    private var generator: UInt64
    private var chunk = [UInt8](repeating: 0, count: 65_536)
    private var pending = 0
    private var pendingOffset = 0

    init(total: Int, seed: UInt64) {
        self.total = total
        generator = seed | 1
        crypto_hash_sha256_init(&sentState)
        crypto_hash_sha256_init(&receivedState)
    }

    /// Pushes what the connection accepts, reads what it has; true when it touched the connection.
    @discardableResult
    func step(_ conn: TCPConnection) -> Bool {
        var touched = false
        while written < total {
            if pending == 0 {
                let n = min(chunk.count, total - written)
                chunk.withUnsafeMutableBytes { raw in
                    for i in stride(from: 0, to: n, by: 8) {
                        generator ^= generator << 13
                        generator ^= generator >> 7
                        generator ^= generator << 17
                        withUnsafeBytes(of: generator) { word in
                            for j in 0..<min(8, n - i) { raw[i + j] = word[j] }
                        }
                    }
                    _ = crypto_hash_sha256_update(&sentState, raw.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt64(n))
                }
                pending = n
                pendingOffset = 0
            }
            let accepted = chunk.withUnsafeBytes { conn.send(UnsafeRawBufferPointer(rebasing: $0[pendingOffset..<(pendingOffset + pending)])) }
            if accepted == 0 { break }
            touched = true
            pending -= accepted
            pendingOffset += accepted
            written += accepted
        }
        if written == total && conn.writableBytes > 0 {
            conn.close()
            touched = true
        }
        while true {
            let readable = conn.readable()
            if readable.isEmpty { break }
            _ = crypto_hash_sha256_update(&receivedState, readable.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt64(readable.count))
            receivedCount += readable.count
            conn.consume(readable.count)
            touched = true
        }
        return touched
    }

    var sentDigest: [UInt8] {
        var state = sentState
        var out = [UInt8](repeating: 0, count: 32)
        crypto_hash_sha256_final(&state, &out)
        return out
    }

    var receivedDigest: [UInt8] {
        var state = receivedState
        var out = [UInt8](repeating: 0, count: 32)
        crypto_hash_sha256_final(&state, &out)
        return out
    }
}
