@_spi(OneTunInternals) @testable import OneTunCore

/// Two TCP connections over a simulated link with a fake clock, at the segment level (no IP): the client
/// opens actively, the server is created from the first SYN it sees. Loss, duplication and jitter come
/// from a seeded generator so every failure replays from its seed.
final class TCPPair {
    struct Flight {
        var at: UInt64
        var order: Int
        var repr: TCPRepr
        var payload: [UInt8]
    }

    var now = Instant(nanoseconds: 1_000 * Nanos.second)
    let client: TCPConnection
    var server: TCPConnection?
    let serverConfig: TCPConfig
    let random: SeededRandom
    let seed: UInt64
    var latency: UInt64 = 5 * Nanos.millisecond
    var jitter: UInt64 = 0
    var loss = 0.0
    var duplicate = 0.0
    /// Bytes per second the link carries in each direction (0: unlimited).
    var bandwidth: UInt64 = 0
    var linkFreeAt: [UInt64] = [0, 0]
    var toServer: [Flight] = []
    var toClient: [Flight] = []
    var segmentsSent = 0
    var filter: ((_ fromClient: Bool, _ repr: TCPRepr, _ payloadCount: Int) -> Bool)?
    private var order = 0
    private var scratch = [UInt8](repeating: 0, count: 65_536)

    init(seed: UInt64 = 1, client: TCPConfig = TCPConfig(), server: TCPConfig = TCPConfig()) {
        self.seed = seed
        random = SeededRandom(seed: seed)
        serverConfig = server
        self.client = TCPConnection(localPort: 40000, remotePort: 80, iss: 0xFFFF_F000, config: client, now: now)
    }

    func chance(_ p: Double) -> Bool { p > 0 && Double(random.uniform(below: 1 << 32)) / Double(1 << 32) < p }

    func transmit(_ from: TCPConnection, fromClient: Bool) {
        var guardCount = 0
        while guardCount < 100_000 {
            guardCount += 1
            guard let (repr, n) = scratch.withUnsafeMutableBytes({ from.pollSegment(payload: $0, now: now) }) else { break }
            segmentsSent += 1
            if let filter, !filter(fromClient, repr, n) { continue }
            if chance(loss) { continue }
            let direction = fromClient ? 0 : 1
            var departure = now.nanoseconds
            if bandwidth > 0 {
                departure = max(departure, linkFreeAt[direction])
                linkFreeAt[direction] = departure + UInt64(n + 40) * Nanos.second / bandwidth
                departure = linkFreeAt[direction]
            }
            for _ in 0..<(chance(duplicate) ? 2 : 1) {
                order += 1
                let extra = jitter > 0 ? random.uniform(below: jitter) : 0
                let flight = Flight(at: departure + latency + extra, order: order, repr: repr, payload: Array(scratch[0..<n]))
                if fromClient { Self.insert(flight, into: &toServer) } else { Self.insert(flight, into: &toClient) }
            }
        }
    }

    /// Keeps each queue sorted by delivery time (then send order), so delivery takes a prefix.
    static func insert(_ flight: Flight, into queue: inout [Flight]) {
        var i = queue.count
        while i > 0 && (queue[i - 1].at, queue[i - 1].order) > (flight.at, flight.order) { i -= 1 }
        queue.insert(flight, at: i)
    }

    func deliver() {
        for toServerSide in [true, false] {
            var queue = toServerSide ? toServer : toClient
            guard let first = queue.first, first.at <= now.nanoseconds else { continue }
            let due = queue.prefix { $0.at <= now.nanoseconds }
            queue.removeFirst(due.count)
            if toServerSide { toServer = queue } else { toClient = queue }
            for flight in due {
                if toServerSide {
                    if server == nil {
                        server = TCPConnection(accepting: flight.repr, iss: 0x7FFF_FF00, config: serverConfig, now: now)
                        continue
                    }
                    flight.payload.withUnsafeBytes { server!.handleSegment(flight.repr, payload: $0, now: now) }
                    transmit(server!, fromClient: false)
                } else {
                    flight.payload.withUnsafeBytes { client.handleSegment(flight.repr, payload: $0, now: now) }
                    transmit(client, fromClient: true)
                }
            }
        }
    }

    /// Everything due now: outputs, deliveries, timers.
    func process(_ app: () -> Void) {
        transmit(client, fromClient: true)
        if let server { transmit(server, fromClient: false) }
        deliver()
        for c in [client, server].compactMap({ $0 }) {
            if let d = c.nextDeadline(), d <= now { c.handleTimeout(now: now) }
        }
        app()
        transmit(client, fromClient: true)
        if let server { transmit(server, fromClient: false) }
    }

    /// Runs until `done` or `seconds` of simulated time; `app` runs after every step (reads, writes).
    @discardableResult
    func run(seconds: Double, app: () -> Void = {}, until done: () -> Bool) -> Bool {
        let limit = now.adding(UInt64(seconds * 1e9))
        var steps = 0
        while steps < 5_000_000 {
            process(app)
            if done() { return true }
            if now >= limit { return false }
            var next = limit.nanoseconds
            if let f = toServer.first { next = min(next, f.at) }
            if let f = toClient.first { next = min(next, f.at) }
            for c in [client, server].compactMap({ $0 }) { if let d = c.nextDeadline() { next = min(next, d.nanoseconds) } }
            // The application may have work as soon as data is readable; step at least every millisecond then.
            next = min(next, now.nanoseconds + Nanos.millisecond)
            now = Instant(nanoseconds: max(now.nanoseconds, next))
            steps += 1
        }
        return done()
    }
}

/// A deterministic byte stream: byte i of stream `tag`.
func tcpStreamByte(_ i: Int, tag: Int) -> UInt8 { UInt8(truncatingIfNeeded: (i &* 131) ^ (i >> 8) &+ tag) }

/// Application that pushes `total` bytes of a stream into `conn` and reads the peer's stream into `received`.
final class TCPStreamApp {
    let total: Int
    let tag: Int
    var written = 0
    var received: [UInt8] = []
    var closeWhenDone: Bool
    var closed = false
    var chunk = [UInt8](repeating: 0, count: 65_536)

    init(total: Int, tag: Int, closeWhenDone: Bool = true) {
        self.total = total
        self.tag = tag
        self.closeWhenDone = closeWhenDone
    }

    func step(_ conn: TCPConnection, readLimit: Int = .max) {
        while written < total {
            let n = min(chunk.count, total - written, conn.writableBytes)
            if n == 0 { break }
            for i in 0..<n { chunk[i] = tcpStreamByte(written + i, tag: tag) }
            let accepted = chunk.withUnsafeBytes { conn.send(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            written += accepted
            if accepted < n { break }
        }
        if written == total && closeWhenDone && !closed {
            conn.close()
            closed = true
        }
        var budget = readLimit
        while budget > 0 {
            let readable = conn.readable()
            if readable.isEmpty { break }
            let n = min(readable.count, budget)
            received.append(contentsOf: UnsafeRawBufferPointer(rebasing: readable[0..<n]))
            conn.consume(n)
            budget -= n
        }
    }

    func receivedIsStream(of length: Int, tag: Int) -> Bool {
        received.count == length && received.indices.allSatisfy { received[$0] == tcpStreamByte($0, tag: tag) }
    }
}
