import Testing
@_spi(OneTunInternals) @testable import OneTunCore

/// Two interfaces with TCP stacks joined by a simulated IP link with a fake clock.
final class StackPair {
    var now = Instant(nanoseconds: 5_000 * Nanos.second)
    let client = NetworkInterface(addresses: [IPAddress("192.168.4.3")!])
    let server = NetworkInterface(addresses: [IPAddress("192.168.4.1")!])
    let clientTCP: TCPStack
    let serverTCP: TCPStack
    var latency: UInt64 = 2 * Nanos.millisecond
    var inFlight: [(at: UInt64, toServer: Bool, packet: [UInt8])] = []
    var buffer = [UInt8](repeating: 0, count: 65_536)
    var packets = 0

    init(seed: UInt64) {
        clientTCP = TCPStack(random: SeededRandom(seed: seed))
        serverTCP = TCPStack(random: SeededRandom(seed: seed &+ 1))
        client.tcp = clientTCP
        server.tcp = serverTCP
    }

    func drain() {
        for (interface, toServer) in [(client, true), (server, false)] {
            var guardCount = 0
            while guardCount < 1_000_000, let n = buffer.withUnsafeMutableBytes({ interface.pollPacket(into: $0, now: now) }) {
                guardCount += 1
                packets += 1
                inFlight.append((now.nanoseconds + latency, toServer, Array(buffer[0..<n])))
            }
        }
    }

    func run(seconds: Double, app: () -> Void, until done: () -> Bool) -> Bool {
        let limit = now.adding(UInt64(seconds * 1e9))
        for _ in 0..<2_000_000 {
            drain()
            let due = inFlight.filter { $0.at <= now.nanoseconds }
            inFlight.removeAll { $0.at <= now.nanoseconds }
            for p in due {
                let target = p.toServer ? server : client
                _ = p.packet.withUnsafeBytes { target.receive(packet: $0, now: now) }
            }
            for interface in [client, server] {
                if let d = interface.nextDeadline(), d <= now { interface.handleTimeout(now: now) }
            }
            app()
            drain()
            if done() { return true }
            if now >= limit { return false }
            var next = limit.nanoseconds
            if let first = inFlight.map(\.at).min() { next = min(next, first) }
            for interface in [client, server] { if let d = interface.nextDeadline() { next = min(next, d.nanoseconds) } }
            now = Instant(nanoseconds: max(now.nanoseconds + 1, min(next, now.nanoseconds + Nanos.millisecond)))
        }
        return done()
    }
}

/// Per-connection application: writes `total` bytes of a stream tagged by the connection, echoes or reads.
final class StackApp {
    let total: Int
    var written = 0
    var received: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 16_384)
    let tag: Int

    init(total: Int, tag: Int) {
        self.total = total
        self.tag = tag
    }

    /// The stream starts with the tag (4 bytes, big-endian), so a receiver can tell whose it is.
    static func byte(_ i: Int, tag: Int) -> UInt8 {
        i < 4 ? UInt8(truncatingIfNeeded: tag >> (8 * (3 - i))) : tcpStreamByte(i, tag: tag)
    }

    static func tag(of stream: [UInt8]) -> Int {
        stream.prefix(4).reduce(0) { $0 << 8 | Int($1) }
    }

    func receivedIsStream(tag: Int) -> Bool {
        received.indices.allSatisfy { received[$0] == Self.byte($0, tag: tag) }
    }

    func step(_ conn: TCPConnection) -> Bool {
        var touched = false
        while written < total {
            let n = min(chunk.count, total - written, conn.writableBytes)
            if n == 0 { break }
            for i in 0..<n { chunk[i] = Self.byte(written + i, tag: tag) }
            written += chunk.withUnsafeBytes { conn.send(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            touched = true
        }
        if written == total && conn.writableBytes > 0 {
            conn.close()
            touched = true
        }
        while !conn.readable().isEmpty {
            received.append(contentsOf: conn.readable())
            conn.consume(conn.readable().count)
            touched = true
        }
        return touched
    }
}

@Suite struct TCPStackTests {
    @Test func connectTransferAndClose() throws {
        let pair = StackPair(seed: 1)
        pair.serverTCP.listen(port: 80)
        let id = try #require(pair.clientTCP.connect(from: IPAddress("192.168.4.3")!, to: IPAddress("192.168.4.1")!, port: 80, now: pair.now))
        let clientApp = StackApp(total: 1 << 20, tag: 1)
        let serverApp = StackApp(total: 1 << 20, tag: 2)
        var serverID: Int?
        let done = pair.run(seconds: 60, app: {
            if clientApp.step(pair.clientTCP.connection(id)) { pair.clientTCP.markReady(id) }
            if serverID == nil { serverID = pair.serverTCP.accept() }
            if let s = serverID, serverApp.step(pair.serverTCP.connection(s)) { pair.serverTCP.markReady(s) }
        }, until: { clientApp.received.count == 1 << 20 && serverApp.received.count == 1 << 20 })
        #expect(done)
        #expect(clientApp.receivedIsStream(tag: 2))
        #expect(serverApp.receivedIsStream(tag: 1))
        // Both sides closed their direction: the connections wind down and can be released.
        _ = pair.run(seconds: 10, app: {}, until: { pair.clientTCP.connection(id).state == .closed || pair.clientTCP.connection(id).state == .timeWait })
        pair.clientTCP.release(id)
        pair.serverTCP.release(serverID!)
        _ = pair.run(seconds: 10, app: {}, until: { pair.clientTCP.count == 0 && pair.serverTCP.count == 0 })
        #expect(pair.clientTCP.count == 0 && pair.serverTCP.count == 0)
    }

    @Test func aThousandConcurrentConnections() throws {
        let pair = StackPair(seed: 2)
        pair.serverTCP.listen(port: 443)
        let n = 1000
        let size = 8 << 10
        var clients: [(Int, StackApp)] = []
        for i in 0..<n {
            let id = try #require(pair.clientTCP.connect(from: IPAddress("192.168.4.3")!, to: IPAddress("192.168.4.1")!, port: 443, now: pair.now))
            clients.append((id, StackApp(total: size, tag: i)))
        }
        #expect(Set(clients.map { pair.clientTCP.connection($0.0).localPort }).count == n)
        var servers: [(Int, StackApp)] = []
        let done = pair.run(seconds: 120, app: {
            for (id, app) in clients where app.step(pair.clientTCP.connection(id)) { pair.clientTCP.markReady(id) }
            while let s = pair.serverTCP.accept() {
                servers.append((s, StackApp(total: size, tag: 100_000 + servers.count)))
            }
            for (id, app) in servers where app.step(pair.serverTCP.connection(id)) { pair.serverTCP.markReady(id) }
        }, until: { clients.allSatisfy { $0.1.received.count == size } && servers.count == n && servers.allSatisfy { $0.1.received.count == size } })
        #expect(done, "clients done \(clients.filter { $0.1.received.count == size }.count), servers \(servers.count)")
        #expect(pair.serverTCP.count == n)
        // Each server connection received exactly one client's stream.
        var tags = Set<Int>()
        for (_, app) in servers {
            let tag = StackApp.tag(of: app.received)
            if app.receivedIsStream(tag: tag) { tags.insert(tag) }
        }
        #expect(tags == Set(0..<n))
        // And every client got back the stream its own server connection wrote.
        #expect(clients.allSatisfy { $0.1.receivedIsStream(tag: StackApp.tag(of: $0.1.received)) })
    }

    @Test func closedPortIsRefused() throws {
        let pair = StackPair(seed: 3)
        let id = try #require(pair.clientTCP.connect(from: IPAddress("192.168.4.3")!, to: IPAddress("192.168.4.1")!, port: 81, now: pair.now))
        let ended = pair.run(seconds: 5, app: {}, until: { pair.clientTCP.connection(id).state == .closed })
        #expect(ended && pair.clientTCP.connection(id).error == .refused)
        #expect(pair.server.stats.resetsSent == 1)
    }

    @Test func initialSequenceNumbersFollowRFC6528() {
        let stack = TCPStack(random: SeededRandom(seed: 4))
        let a = TCPStack.FourTuple(local: IPAddress("192.168.4.3")!, localPort: 50000, remote: IPAddress("192.168.4.1")!, remotePort: 80)
        var b = a
        b.localPort = 50001
        let t = Instant(nanoseconds: 1_000_000_000)
        #expect(stack.initialSequenceNumber(a, now: t) == stack.initialSequenceNumber(a, now: t))
        #expect(stack.initialSequenceNumber(a, now: t) != stack.initialSequenceNumber(b, now: t))
        // M advances one per 4 µs.
        #expect(stack.initialSequenceNumber(a, now: t.adding(4_000)) == stack.initialSequenceNumber(a, now: t) &+ 1)
        // Another secret, another F.
        #expect(TCPStack(random: SeededRandom(seed: 5)).initialSequenceNumber(a, now: t) != stack.initialSequenceNumber(a, now: t))
    }
}

extension StackPair {
    /// Replaces the server's stack with one listening on port 80 with `backlog`, then opens `clients`
    /// connections to it from the client; returns the server stack and the clients' ids.
    func listen(backlog: Int, seed: UInt64, clients: Int) throws -> (TCPStack, [Int]) {
        let stack = TCPStack(acceptBacklog: backlog, random: SeededRandom(seed: seed))
        server.tcp = stack
        stack.listen(port: 80)
        var ids: [Int] = []
        for _ in 0..<clients {
            ids.append(try #require(clientTCP.connect(from: IPAddress("192.168.4.3")!, to: IPAddress("192.168.4.1")!, port: 80, now: now)))
        }
        return (stack, ids)
    }
}

@Suite struct TCPStackBacklogTests {
    @Test func aFullBacklogDropsSYNsAndClientsRetry() throws {
        let pair = StackPair(seed: 9)
        let (server, ids) = try pair.listen(backlog: 4, seed: 10, clients: 10)
        // Nobody accepts for a while: the stack holds at most the backlog (the handshakes complete, and
        // the connections wait in the accept queue), and drops the other SYNs.
        _ = pair.run(seconds: 0.5, app: {}, until: { false })
        #expect(server.count == 4)
        #expect(server.synsDropped + server.halfOpenEvicted >= 6)
        // Accepting frees the backlog; the dropped SYNs are retried and every client gets through.
        var accepted = 0
        let done = pair.run(seconds: 30, app: { while server.accept() != nil { accepted += 1 } },
                            until: { accepted == 10 && ids.allSatisfy { pair.clientTCP.connection($0).state == .established } })
        #expect(done && accepted == 10)
    }
}

@Suite struct TCPStackHalfOpenTests {
    /// 100 clients send SYNs and never answer the SYN,ACK (everything the server sends is lost): nothing
    /// reaches `accept`, the server holds at most its backlog of half-open connections (newer SYNs push
    /// out the oldest), and once the SYN,ACK retries run out every one is gone. A client that completes the handshake is
    /// accepted only then, already established.
    @Test func halfOpenConnectionsAreBoundedAndNeverAccepted() throws {
        let pair = StackPair(seed: 21)
        let (server, _) = try pair.listen(backlog: 8, seed: 22, clients: 100)
        // The client's SYNs reach the server; nothing from the server reaches the client.
        var maximum = 0
        let limit = pair.now.adding(200 * Nanos.second)
        var steps = 0
        while pair.now < limit && steps < 100_000 {
            steps += 1
            pair.drain()
            for p in pair.inFlight where p.toServer {
                _ = p.packet.withUnsafeBytes { pair.server.receive(packet: $0, now: pair.now) }
            }
            pair.inFlight.removeAll()
            #expect(server.accept() == nil, "a half-open connection was handed to the application")
            maximum = max(maximum, server.count)
            var next = limit
            for interface in [pair.client, pair.server] {
                if let d = interface.nextDeadline() { next = min(next, d) }
            }
            pair.now = max(next, pair.now.adding(Nanos.millisecond))
            for interface in [pair.client, pair.server] {
                if let d = interface.nextDeadline(), d <= pair.now { interface.handleTimeout(now: pair.now) }
            }
        }
        #expect(maximum == 8, "half-open connections held at once: \(maximum)")
        #expect(server.halfOpenEvicted >= 92)
        #expect(server.handshakeOrder.count - server.handshakeOrderHead <= 4 * 16 + 1)
        #expect(server.count == 0, "\(server.count) half-open connections left after the SYN,ACK retries")
        #expect(server.handshaking.isEmpty)
        // A client that completes the handshake gets through, and is accepted established.
        let fresh = StackPair(seed: 23)
        fresh.server.tcp = server
        let id = try #require(fresh.clientTCP.connect(from: IPAddress("192.168.4.3")!, to: IPAddress("192.168.4.1")!, port: 80, now: pair.now))
        fresh.now = pair.now
        var accepted: Int?
        let done = fresh.run(seconds: 5, app: { if accepted == nil { accepted = server.accept() } }, until: { accepted != nil })
        #expect(done && fresh.clientTCP.connection(id).state == .established)
        #expect(accepted.map { server.connection($0).state } == .established)
    }
}

extension TCPStackHalfOpenTests {
    /// A handshake in SYN-RECEIVED ended by an ICMP destination-unreachable quoting our SYN,ACK: the stack
    /// releases it (the application never saw it), so it holds no slot and no place in the half-open limit.
    @Test func handshakeEndedByICMPIsReleased() throws {
        let pair = StackPair(seed: 24)
        let (server, _) = try pair.listen(backlog: 8, seed: 25, clients: 1)
        pair.drain()
        for p in pair.inFlight where p.toServer {
            _ = p.packet.withUnsafeBytes { pair.server.receive(packet: $0, now: pair.now) }
        }
        pair.inFlight.removeAll()
        pair.drain()
        let synAck = try #require(pair.inFlight.first { !$0.toServer }?.packet)
        try #require(server.handshaking.count == 1 && server.count == 1)
        let icmp = ICMPUnreachableTests.unreachable(
            quoting: synAck, from: IPv4Address(192, 168, 4, 3), to: IPv4Address(192, 168, 4, 1), code: 3)
        _ = icmp.withUnsafeBytes { pair.server.receive(packet: $0, now: pair.now) }
        pair.drain()
        #expect(server.handshaking.isEmpty)
        #expect(server.count == 0, "the ended handshake still holds its slot")
        #expect(server.accept() == nil)
    }
}

@Suite struct ICMPUnreachableTests {
    /// Wraps the first 28 bytes of `quoted` (IPv4 header + 8 bytes) in an ICMPv4 destination-unreachable
    /// message from `from` to `to`, as a router or the destination's host would send it (RFC 792).
    static func unreachable(quoting quoted: [UInt8], from: IPv4Address, to: IPv4Address, code: UInt8) -> [UInt8] {
        var icmp: [UInt8] = [3, code, 0, 0, 0, 0, 0, 0] + quoted.prefix(28)
        let c = icmp.withUnsafeBytes { Checksum.compute($0) }
        icmp[2] = UInt8(c >> 8)
        icmp[3] = UInt8(c & 0xFF)
        var ip: [UInt8] = [0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0] + [UInt8](repeating: 0, count: 8)
        let total = 20 + icmp.count
        ip[2] = UInt8(total >> 8)
        ip[3] = UInt8(total & 0xFF)
        ip.withUnsafeMutableBytes { from.store(into: $0, at: 12); to.store(into: $0, at: 16) }
        let h = ip.withUnsafeBytes { Checksum.compute($0) }
        ip[10] = UInt8(h >> 8)
        ip[11] = UInt8(h & 0xFF)
        return ip + icmp
    }

    @Test func unreachableEndsAnOpeningConnectionAtOnce() throws {
        let interface = NetworkInterface(addresses: [IPAddress("192.168.4.3")!])
        let stack = TCPStack(random: SeededRandom(seed: 31))
        interface.tcp = stack
        let now = Instant(nanoseconds: 1_000 * Nanos.second)
        let id = try #require(stack.connect(from: IPAddress("192.168.4.3")!, to: IPAddress("10.99.0.1")!, port: 80, now: now))
        var buffer = [UInt8](repeating: 0, count: 2048)
        let n = try #require(buffer.withUnsafeMutableBytes { interface.pollPacket(into: $0, now: now) })
        let syn = Array(buffer[0..<n])
        #expect(stack.connection(id).state == .synSent)
        // An error quoting someone else's port changes nothing.
        var other = syn
        other[20] ^= 0xFF
        let stray = Self.unreachable(quoting: other, from: IPv4Address("192.168.4.1")!, to: IPv4Address("192.168.4.3")!, code: 0)
        _ = stray.withUnsafeBytes { interface.receive(packet: $0, now: now) }
        #expect(stack.connection(id).state == .synSent)
        // So does one quoting a sequence number we never sent (RFC 5927 §4.1): a blind attacker's guess.
        var guessed = syn
        guessed[27] &+= 1
        let blind = Self.unreachable(quoting: guessed, from: IPv4Address("192.168.4.1")!, to: IPv4Address("192.168.4.3")!, code: 0)
        _ = blind.withUnsafeBytes { interface.receive(packet: $0, now: now) }
        #expect(stack.connection(id).state == .synSent)
        // The real one (network unreachable, from the peer's router) ends the connection.
        let error = Self.unreachable(quoting: syn, from: IPv4Address("192.168.4.1")!, to: IPv4Address("192.168.4.3")!, code: 0)
        let delivery = error.withUnsafeBytes { interface.receive(packet: $0, now: now) }
        #expect(delivery == .consumed)
        #expect(stack.connection(id).state == .closed)
        #expect(stack.connection(id).error == .unreachable)
        #expect(stack.pollEvent() == id)
    }
}

extension TCPStackHalfOpenTests {
    /// A SYN flood (forged sources that never answer, 10 per millisecond) against a table of 256
    /// half-open connections: a real client that connects in the middle of it still gets through, since
    /// each new SYN pushes out the oldest half-open connection, so one lasts 25 ms, and the client's ACK
    /// follows its SYN by one round trip (10 ms here).
    @Test func aSYNFloodDoesNotLockOutARealClient() throws {
        let pair = StackPair(seed: 26)
        pair.latency = 5 * Nanos.millisecond
        let server = TCPStack(acceptBacklog: 256, random: SeededRandom(seed: 27))
        pair.server.tcp = server
        server.listen(port: 80)
        var forgedPort: UInt16 = 1000
        func flood(_ n: Int) {
            for _ in 0..<n {
                forgedPort &+= 1
                let syn = TCPRepr(sourcePort: forgedPort, destinationPort: 80, sequenceNumber: UInt32(forgedPort), flags: .syn, window: 65535)
                let builder = PacketBuilder(source: IPAddress("10.66.0.9")!, destination: IPAddress("192.168.4.1")!, transport: .tcp(syn))
                var packet = [UInt8](repeating: 0, count: builder.headerLength)
                let n = packet.withUnsafeMutableBytes { builder.emit(into: $0, at: 0, payloadLength: 0) }
                _ = packet.withUnsafeBytes { pair.server.receive(packet: UnsafeRawBufferPointer(rebasing: $0[0..<n]), now: pair.now) }
            }
        }
        flood(2000)
        let id = try #require(pair.clientTCP.connect(from: IPAddress("192.168.4.3")!, to: IPAddress("192.168.4.1")!, port: 80, now: pair.now))
        var accepted: Int?
        let done = pair.run(seconds: 2, app: {
            flood(10)
            if accepted == nil { accepted = server.accept() }
        }, until: { accepted != nil })
        #expect(done && pair.clientTCP.connection(id).state == .established)
        #expect(server.handshaking.count <= 256)
        #expect(server.halfOpenEvicted > 1700)
    }
}

@Suite struct TCPStackCompactionTests {
    /// A wave of connections ends: `compactTables` drops the ids above the highest in use from every
    /// table and queue, the stack goes on working, and new connections take ids from the bottom.
    @Test func compactionAfterAWaveLeavesAWorkingStack() throws {
        let interface = NetworkInterface(addresses: [IPAddress("192.168.4.3")!])
        let stack = TCPStack(random: SeededRandom(seed: 61))
        interface.tcp = stack
        var now = Instant(nanoseconds: 1_000 * Nanos.second)
        var buffer = [UInt8](repeating: 0, count: 2048)
        func drain() { while buffer.withUnsafeMutableBytes({ interface.pollPacket(into: $0, now: now) }) != nil {} }
        var ids: [Int] = []
        for _ in 0..<200 { ids.append(try #require(stack.connect(from: IPAddress("192.168.4.3")!, to: IPAddress("10.0.0.1")!, port: 80, now: now))) }
        drain()
        // Every connection but the first ten ends (reset, then gone once its RST went out).
        for id in ids[10...] { stack.release(id) }
        drain()
        now = now.adding(2 * Nanos.second)
        stack.handleTimeout(now: now)
        drain()
        #expect(stack.count == 10)
        // The driver learns of the drop from the stack itself (ended connections may leave long after
        // their application let go of them), and the compaction resets that.
        #expect(stack.wantsCompaction)
        stack.compactTables()
        #expect(!stack.wantsCompaction)
        #expect(stack.slots.count == 10 && stack.queued.count == 10 && stack.idleQueued.count == 10)
        #expect(stack.freeSlots.allSatisfy { $0 < 10 })
        // The ten still time out on their own deadlines, and new connections get fresh ids that work.
        let fresh = try #require(stack.connect(from: IPAddress("192.168.4.3")!, to: IPAddress("10.0.0.1")!, port: 81, now: now))
        #expect(fresh == 10)
        drain()
        for _ in 0..<200 {
            guard let d = stack.nextDeadline() else { break }
            now = max(now, d)
            stack.handleTimeout(now: now)
            drain()
            while stack.pollEvent() != nil {}
        }
        #expect((ids[0..<10] + [fresh]).allSatisfy { stack.connection($0).error == .timedOut })
    }

    /// Connections that moved data and then sat idle for a second give their buffers back, and the
    /// stack counts the bytes (a driver trims its heap on that count).
    @Test func idleConnectionsGiveTheirBuffersBackAndSaySo() throws {
        let pair = StackPair(seed: 62)
        pair.serverTCP.listen(port: 80)
        let id = try #require(pair.clientTCP.connect(from: IPAddress("192.168.4.3")!, to: IPAddress("192.168.4.1")!, port: 80, now: pair.now))
        var serverID: Int?
        var sent = false
        var received = 0
        let payload = [UInt8](repeating: 7, count: 3000)
        let done = pair.run(seconds: 5, app: {
            if serverID == nil { serverID = pair.serverTCP.accept() }
            if !sent, pair.clientTCP.connection(id).state == .established {
                sent = payload.withUnsafeBytes { pair.clientTCP.connection(id).send($0) } == payload.count
                pair.clientTCP.markReady(id)
            }
            if let s = serverID {
                let connection = pair.serverTCP.connection(s)
                let n = connection.readable().count
                if n > 0 { received += n; connection.consume(n); pair.serverTCP.markReady(s) }
            }
        }, until: { received == payload.count })
        #expect(done)
        #expect(pair.clientTCP.idleBytesReleased == 0 && pair.serverTCP.idleBytesReleased == 0)
        #expect(pair.clientTCP.connection(id).holdsBuffers)
        _ = pair.run(seconds: 3, app: {}, until: { false })
        #expect(pair.clientTCP.connection(id).state == .established)
        #expect(!pair.clientTCP.connection(id).holdsBuffers && !pair.serverTCP.connection(serverID!).holdsBuffers)
        #expect(pair.clientTCP.idleBytesReleased >= payload.count)
        #expect(pair.serverTCP.idleBytesReleased >= payload.count)
    }

    @Test func deadlineHeapShrinkGivesCapacityBack() {
        var heap = DeadlineHeap()
        for id in 0..<10_000 { heap.set(id, Instant(nanoseconds: UInt64(10_000 - id))) }
        for id in 10..<10_000 { heap.set(id, nil) }
        heap.shrink(toIds: 10)
        #expect(heap.count == 10)
        #expect(heap.next?.id == 9)
        heap.set(3, Instant(nanoseconds: 1))
        #expect(heap.next?.id == 3)
        heap.set(12, Instant(nanoseconds: 0))
        #expect(heap.next?.id == 12)
    }
}
