import Testing
@_spi(OneTunInternals) @testable import OneTunCore

/// onetun's virtual port pool for UDP forwards, on a fake clock (plain `Instant`s, nothing sleeps): ports
/// stick to their client while used either way, idle mappings expire at exactly 60 s, a full pool gives
/// up its least recently used mapping, one client IP is held to its limit at its own expense, and a
/// seeded random run agrees with a plain reference model operation by operation.
@Suite struct UDPPortPoolTests {
    static let second = Nanos.second

    func at(_ seconds: Double) -> Instant { Instant(nanoseconds: UInt64(seconds * 1e9)) }

    func client(_ host: UInt8, _ port: UInt16, net: UInt8 = 1) -> UDPEndpoint {
        UDPEndpoint(address: .v4(IPv4Address(127, 0, net, host)), port: port)
    }

    func pool(_ range: ClosedRange<UInt16> = 1000...60999, limit: Int = 100, seed: UInt64 = 1) -> UDPPortPool {
        UDPPortPool(range: range, perAddressLimit: limit, random: SeededRandom(seed: seed))
    }

    // MARK: - Stickiness and expiry

    @Test func sameClientKeepsItsPortWhileUsed() {
        let p = pool()
        let a = client(1, 40000)
        let port = p.port(for: a, now: at(0))
        #expect(p.range.contains(port))
        // Used every 30 s for ten minutes: never idle for 60 s, so the same port throughout.
        for step in 1...20 {
            let now = at(Double(step) * 30)
            p.expire(now: now)
            #expect(p.port(for: a, now: now) == port)
        }
        #expect(p.count == 1)
        #expect(p.expired == 0 && p.reclaimed == 0)
        #expect(p.client(for: port, now: at(600)) == a)
    }

    @Test func repliesKeepTheMappingAlive() {
        let p = pool()
        let a = client(1, 40000)
        let port = p.port(for: a, now: at(0))
        // The client goes quiet; replies every 45 s keep its mapping.
        for step in 1...10 {
            let now = at(Double(step) * 45)
            p.expire(now: now)
            #expect(p.client(for: port, now: now) == a)
        }
        #expect(p.nextDeadline() == at(450 + 60))
        p.expire(now: at(509.999))
        #expect(p.port(for: a, now: at(509.999)) == port)
        #expect(p.expired == 0)
    }

    @Test func idleMappingExpiresAtExactlySixtySeconds() {
        let p = pool()
        let a = client(1, 40000), b = client(2, 40000)
        let pa = p.port(for: a, now: at(0))
        let pb = p.port(for: b, now: at(10))
        #expect(p.nextDeadline() == at(60), "the oldest mapping's last use + 60 s")
        p.expire(now: Instant(nanoseconds: 60 * Self.second - 1))
        #expect(p.count == 2, "59.999999999 s idle: still there")
        p.expire(now: at(59.999))
        #expect(p.count == 2)
        // A spurious early call changes nothing.
        p.expire(now: at(30))
        #expect(p.count == 2 && p.expired == 0)
        p.expire(now: at(60))
        #expect(p.count == 1 && p.expired == 1, "60 s idle: gone")
        #expect(p.client(for: pa, now: at(60)) == nil)
        #expect(p.nextDeadline() == at(70), "now b's last use + 60 s")
        #expect(p.client(for: pb, now: at(60)) == b)  // a reply at 60 s moves b's deadline
        #expect(p.nextDeadline() == at(120))
        p.expire(now: at(119.999))
        #expect(p.count == 1)
        p.expire(now: at(120))
        #expect(p.count == 0 && p.expired == 2)
        #expect(p.nextDeadline() == nil)
        // Coming back after expiry gets a port again (any free one).
        let again = p.port(for: a, now: at(200))
        #expect(p.range.contains(again))
        #expect(p.client(for: again, now: at(200)) == a)
    }

    @Test func nextDeadlineFollowsTheOldestLastUse() {
        let p = pool()
        let clients = (1...5).map { client($0, 5000) }
        for (i, c) in clients.enumerated() { _ = p.port(for: c, now: at(Double(i))) }
        #expect(p.nextDeadline() == at(60))
        _ = p.port(for: clients[0], now: at(10))  // the oldest is now clients[1], last used at 1 s
        #expect(p.nextDeadline() == at(61))
        _ = p.client(for: p.port(for: clients[1], now: at(11)), now: at(12))
        #expect(p.nextDeadline() == at(62))
        p.expire(now: at(64))  // clients[2], [3] and [4] (last used at 2, 3, 4 s: 64 s is exactly [4]'s deadline)
        #expect(p.count == 2 && p.expired == 3)
        #expect(p.nextDeadline() == at(70))
    }

    // MARK: - Reclaiming

    @Test func fullPoolReclaimsTheLeastRecentlyUsed() {
        let p = pool(1000...1009)
        #expect(p.capacity == 10)
        var ports: [UDPEndpoint: UInt16] = [:]
        for i in 0..<10 {
            let c = client(UInt8(i + 1), 7000)
            ports[c] = p.port(for: c, now: at(Double(i)))
        }
        #expect(Set(ports.values) == Set(1000...1009), "ten clients, ten distinct ports: the whole range")
        // Touch the oldest (client 1) by a reply and client 2 by a send: client 3 is now least recent.
        #expect(p.client(for: ports[client(1, 7000)]!, now: at(20)) == client(1, 7000))
        _ = p.port(for: client(2, 7000), now: at(21))
        let newcomer = client(50, 7000)
        let port = p.port(for: newcomer, now: at(22))
        #expect(p.reclaimed == 1)
        #expect(port == ports[client(3, 7000)], "client 3's port, the least recently used, was reclaimed")
        #expect(p.client(for: port, now: at(22)) == newcomer)
        #expect(p.count == 10)
        // The most recent ones survive with their ports.
        #expect(p.port(for: client(1, 7000), now: at(23)) == ports[client(1, 7000)])
        #expect(p.port(for: client(2, 7000), now: at(23)) == ports[client(2, 7000)])
        #expect(p.port(for: client(10, 7000), now: at(23)) == ports[client(10, 7000)])
        #expect(p.reclaimed == 1)
        // Client 3 returns: it takes the then least recently used (client 4), not the newest.
        let back = p.port(for: client(3, 7000), now: at(24))
        #expect(back == ports[client(4, 7000)])
        #expect(p.reclaimed == 2)
    }

    @Test func perAddressLimitReclaimsThatAddressesOldest() {
        let p = pool(limit: 3)
        let other = client(9, 1111)
        let otherPort = p.port(for: other, now: at(0))
        var mine: [UInt16] = []
        for i in 0..<3 { mine.append(p.port(for: client(1, UInt16(2000 + i)), now: at(Double(1 + i)))) }
        // A reply touches the first of the three: the second becomes this IP's least recently used.
        _ = p.client(for: mine[0], now: at(5))
        let fourth = p.port(for: client(1, 2003), now: at(6))
        #expect(p.reclaimed == 1)
        #expect(fourth == mine[1], "the IP's own least recently used port is reused")
        #expect(p.client(for: fourth, now: at(6)) == client(1, 2003))
        #expect(p.port(for: client(1, 2000), now: at(7)) == mine[0])
        #expect(p.port(for: client(1, 2002), now: at(7)) == mine[2])
        // The other IP's mapping, older than all of them, survives.
        #expect(p.client(for: otherPort, now: at(8)) == other)
        #expect(p.count == 4)
        // Another IP is not limited by this one's count.
        for i in 0..<3 { _ = p.port(for: client(2, UInt16(3000 + i)), now: at(9)) }
        #expect(p.count == 7 && p.reclaimed == 1)
    }

    @Test func limitAppliesPerAddressAcrossFamilies() {
        let p = pool(limit: 2)
        let v6 = IPAddress("::1")!
        let a = (0..<3).map { UDPEndpoint(address: v6, port: UInt16(100 + $0)) }
        let b = (0..<2).map { client(1, UInt16(100 + $0)) }
        for (i, c) in (a + b).enumerated() { _ = p.port(for: c, now: at(Double(i))) }
        #expect(p.count == 4 && p.reclaimed == 1)
    }

    @Test func distinctClientsNeverShareAPortAndPortsStayInRange() {
        let range: ClosedRange<UInt16> = 20000...20499
        let p = pool(range, limit: 1000, seed: 3)
        var owner: [UInt16: UDPEndpoint] = [:]
        for i in 0..<500 {
            let c = client(UInt8(i % 7 + 1), UInt16(10000 + i))
            let port = p.port(for: c, now: at(Double(i) / 10))
            #expect(range.contains(port))
            #expect(owner[port] == nil, "port \(port) given to \(c) while \(owner[port].map { "\($0)" } ?? "") holds it")
            owner[port] = c
        }
        #expect(p.count == 500 && p.reclaimed == 0)
        for (port, c) in owner { #expect(p.client(for: port, now: at(60)) == c) }
        #expect(p.client(for: 19999, now: at(60)) == nil)
        #expect(p.client(for: 20500, now: at(60)) == nil)
    }

    @Test func portsAreHandedOutInRandomOrder() {
        let a = pool(seed: 1), b = pool(seed: 2)
        let first = (0..<20).map { a.port(for: client(1, UInt16(100 + $0)), now: .zero) }
        let second = (0..<20).map { b.port(for: client(1, UInt16(100 + $0)), now: .zero) }
        #expect(first != second)
        #expect(first != first.sorted())
    }

    @Test func lookupOfAnUnknownPortIsNil() {
        let p = pool()
        #expect(p.client(for: 1000, now: .zero) == nil, "before any port was handed out")
        #expect(p.client(for: 0, now: .zero) == nil)
        #expect(p.client(for: 65535, now: .zero) == nil)
        #expect(p.nextDeadline() == nil)
        p.expire(now: at(1000))
        #expect(p.count == 0)
    }

    // MARK: - Reserved ports (remote UDP forwards)

    /// A small pool with two ports reserved (one before first use, one after it was handed out): a full
    /// cycle of clients never gets either, the pool's capacity shrinks, and the client that held the
    /// second loses its mapping and gets another port next time.
    @Test func reservedPortsAreNeverHandedOut() {
        let p = pool(1000...1009, limit: 100)
        #expect(p.reserve(1003))
        #expect(!p.reserve(999) && !p.reserve(1010), "outside the range")
        let first = client(1, 5000)
        let held = p.port(for: first, now: at(0))
        #expect(held != 1003)
        #expect(p.reserve(held))
        #expect(p.client(for: held, now: at(1)) == nil, "the holder lost it")
        #expect(p.capacity == 8)
        var seen = Set<UInt16>()
        for i in 0..<200 {
            let port = p.port(for: client(UInt8(i % 50), UInt16(6000 + i)), now: at(2 + Double(i)))
            seen.insert(port)
            #expect(port != 1003 && port != held)
            #expect(p.count <= 8)
        }
        #expect(seen.count == 8, "every other port is used")
        let again = p.port(for: first, now: at(300))
        #expect(again != held && again != 1003)
        #expect(p.client(for: 1003, now: at(300)) == nil)
    }

    /// Relay ports (SOCKS5 UDP from the tunnel): `reserveFree` takes free ports only, never one a client
    /// holds, keeps the last free port for clients, and `release` hands a port back.
    @Test func freePortsAreReservedAndReleased() {
        let p = pool(1000...1004)
        let held = p.port(for: client(1, 1), now: at(0))
        var taken: [UInt16] = []
        while let port = p.reserveFree() { taken.append(port) }
        #expect(taken.count == 3, "\(taken): one port stays for clients")
        #expect(!taken.contains(held))
        #expect(p.client(for: held, now: at(1)) == client(1, 1), "the holder keeps its port")
        let other = p.port(for: client(2, 1), now: at(2))
        #expect(!taken.contains(other) && other != held)
        #expect(p.reserveFree() == nil)
        p.release(taken[0])
        #expect(p.capacity == 3)
        p.expire(now: at(1000))
        var seen = Set<UInt16>()
        for i in 0..<50 { seen.insert(p.port(for: client(UInt8(i), 9), now: at(1001 + Double(i)))) }
        #expect(seen.contains(taken[0]), "a released port is handed out again")
        #expect(!seen.contains(taken[1]) && !seen.contains(taken[2]))
    }

    @Test func theLastPortCannotBeReserved() {
        let p = pool(1000...1001)
        #expect(p.reserve(1000))
        #expect(!p.reserve(1001))
        #expect(p.capacity == 1)
        #expect(p.port(for: client(1, 1), now: at(0)) == 1001)
        #expect(p.port(for: client(2, 1), now: at(1)) == 1001, "reclaimed, never the reserved port")
    }

    // MARK: - The whole range

    @Test func wholeRangeFillsAndLookupsStayCorrect() {
        let p = pool()
        #expect(p.capacity == 60000)
        // 600 addresses × 100 ports each: exactly the range, within the per-IP limit.
        var clients: [UDPEndpoint] = []
        clients.reserveCapacity(60000)
        for host in 0..<600 {
            for port in 0..<100 {
                clients.append(UDPEndpoint(address: .v4(IPv4Address(10, 0, UInt8(host >> 8), UInt8(host & 0xff))), port: UInt16(30000 + port)))
            }
        }
        var ports = [UInt16](repeating: 0, count: clients.count)
        for (i, c) in clients.enumerated() { ports[i] = p.port(for: c, now: Instant(nanoseconds: UInt64(i))) }
        #expect(p.count == 60000 && p.reclaimed == 0)
        var seen = [Bool](repeating: false, count: 65536)
        var problems = 0
        for (i, port) in ports.enumerated() {
            if port < 1000 || port > 60999 || seen[Int(port)] { problems += 1 }
            seen[Int(port)] = true
            if p.client(for: port, now: at(1)) != clients[i] { problems += 1 }
        }
        #expect(problems == 0)
        #expect((1000...60999).allSatisfy { seen[$0] }, "every port of the range is used")
        // Every lookup above touched its mapping in order, so clients[0] is the least recently used: a
        // new address (under its limit) takes its port.
        let newcomer = UDPEndpoint(address: .v4(IPv4Address(10, 9, 9, 9)), port: 1)
        #expect(p.port(for: newcomer, now: at(2)) == ports[0])
        #expect(p.reclaimed == 1 && p.count == 60000)
        #expect(p.client(for: ports[1], now: at(2)) == clients[1])
        // Those last touched at 1 s expire together at 61 s; the two touched at 2 s at 62 s.
        p.expire(now: at(60.999))
        #expect(p.count == 60000)
        p.expire(now: at(61))
        #expect(p.count == 2 && p.expired == 59998)
        p.expire(now: at(62))
        #expect(p.count == 0 && p.expired == 60000)
    }

    // MARK: - Against a reference model

    /// The pool's behaviour written as plainly as possible: a list of mappings with last-use order.
    struct Model {
        struct Mapping {
            var client: UDPEndpoint
            var port: UInt16
            var lastUsed: Instant
            var order: Int
        }
        let capacity: Int
        let limit: Int
        let timeout: UInt64
        var mappings: [Mapping] = []
        var clock = 0
        var reclaimed = 0
        var expired = 0

        mutating func touch(_ i: Int, _ now: Instant) {
            clock += 1
            mappings[i].lastUsed = now
            mappings[i].order = clock
        }

        func oldest(where match: (Mapping) -> Bool) -> Int? {
            mappings.indices.filter { match(mappings[$0]) }.min { mappings[$0].order < mappings[$1].order }
        }

        /// The port the client already has, or which mapping must be reclaimed to give it one (nil: none).
        mutating func prepare(_ client: UDPEndpoint, _ now: Instant) -> (existing: UInt16?, victim: UInt16?) {
            if let i = mappings.firstIndex(where: { $0.client == client }) {
                touch(i, now)
                return (mappings[i].port, nil)
            }
            let sameAddress = mappings.filter { $0.client.address == client.address }.count
            var victim: Int?
            if sameAddress >= limit {
                victim = oldest { $0.client.address == client.address }
            } else if mappings.count >= capacity {
                victim = oldest { _ in true }
            }
            guard let victim else { return (nil, nil) }
            reclaimed += 1
            return (nil, mappings.remove(at: victim).port)
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
            mappings.removeAll { $0.lastUsed.adding(timeout) <= now }
            expired += before - mappings.count
        }

        var nextDeadline: Instant? { mappings.map { $0.lastUsed.adding(timeout) }.min() }
    }

    @Test(arguments: [1, 2, 3, 4, 5] as [UInt64])
    func agreesWithAReferenceModel(seed: UInt64) {
        let range: ClosedRange<UInt16> = 5000...5031
        let limit = 6
        let p = UDPPortPool(range: range, idleTimeout: 60 * Self.second, perAddressLimit: limit, random: SeededRandom(seed: seed))
        var model = Model(capacity: range.count, limit: limit, timeout: 60 * Self.second)
        var rng = XorShift64(seed: seed &* 0x9E37_79B9)
        var now = Instant.zero
        // Few enough clients (8 addresses × 8 ports) that the limit, a full pool and reuse all happen.
        func randomClient() -> UDPEndpoint { client(UInt8(rng.below(8) + 1), UInt16(rng.below(8) + 100)) }
        var mismatches: [String] = []
        for step in 0..<12000 where mismatches.count < 5 {
            // Time moves in small steps, sometimes by a whole idle timeout or a deadline exactly.
            switch rng.below(20) {
            case 0: now = now.adding(UInt64(rng.below(90)) * Self.second)
            case 1: if let d = p.nextDeadline() { now = max(now, d) }
            default: now = now.adding(UInt64(rng.below(3000)) * Nanos.millisecond)
            }
            switch rng.below(10) {
            case 0...4:
                let c = randomClient()
                let (existing, victim) = model.prepare(c, now)
                let port = p.port(for: c, now: now)
                if let existing {
                    if port != existing { mismatches.append("step \(step): \(c) got \(port), had \(existing)") }
                } else {
                    if !range.contains(port) { mismatches.append("step \(step): port \(port) out of range") }
                    if model.mappings.contains(where: { $0.port == port }) {
                        mismatches.append("step \(step): \(c) got \(port), still held by another client")
                    }
                    // A reclaimed port the pool did not hand straight back is free (the lookup touches nothing).
                    if let victim, victim != port, p.client(for: victim, now: now) != nil {
                        mismatches.append("step \(step): reclaimed port \(victim) still mapped")
                    }
                    model.add(c, port, now)
                }
            case 5...7:
                let port = UInt16(Int(range.lowerBound) + rng.below(range.count + 2) - 1)
                let expected = model.client(for: port, now)
                let got = p.client(for: port, now: now)
                if got != expected { mismatches.append("step \(step): port \(port) maps to \(got.map { "\($0)" } ?? "nil"), model \(expected.map { "\($0)" } ?? "nil")") }
            default:
                model.expire(now)
                p.expire(now: now)
            }
            if p.count != model.mappings.count { mismatches.append("step \(step): count \(p.count), model \(model.mappings.count)") }
            if p.nextDeadline() != model.nextDeadline { mismatches.append("step \(step): deadline \(String(describing: p.nextDeadline())), model \(String(describing: model.nextDeadline))") }
            if p.reclaimed != model.reclaimed || p.expired != model.expired {
                mismatches.append("step \(step): reclaimed/expired \(p.reclaimed)/\(p.expired), model \(model.reclaimed)/\(model.expired)")
            }
        }
        // Finally every mapping agrees both ways.
        for m in model.mappings where mismatches.isEmpty {
            if p.client(for: m.port, now: now) != m.client { mismatches.append("end: port \(m.port) not \(m.client)") }
        }
        #expect(mismatches.isEmpty, "seed \(seed): \(mismatches.joined(separator: "; "))")
        #expect(model.reclaimed > 0 && model.expired > 0, "seed \(seed): the run exercised reclaiming and expiry")
    }
}

extension UDPPortPoolTests {
    /// With one port per IP, every new port of an IP reclaims its last: the IP's list empties and is
    /// made again each time, and the pool never holds two mappings for one IP.
    @Test func aLimitOfOneReusesTheAddressList() {
        let p = pool(limit: 1)
        var last: UInt16 = 0
        for i in 0..<50 {
            let port = p.port(for: client(1, UInt16(40000 + i)), now: at(Double(i)))
            // The reclaimed port passes to the IP's new client.
            if i > 0 { #expect(port == last) }
            #expect(p.client(for: port, now: at(Double(i))) == client(1, UInt16(40000 + i)))
            last = port
            _ = p.port(for: client(2, 1), now: at(Double(i)))
        }
        #expect(p.count == 2 && p.reclaimed == 49)
        #expect(p.addressLists.count == 2)
    }
}
