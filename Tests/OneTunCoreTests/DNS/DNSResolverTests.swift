import Testing
@_spi(OneTunInternals) @testable import OneTunCore

/// The resolver alone, on a fake clock: what it sends, when it retries and fails over, which datagrams it
/// believes (RFC 5452), CNAME chains, negative caching (RFC 2308), TTLs, TCP after TC (RFC 7766), the
/// cache's bounds, coalescing, and the limit on questions in flight.
final class ResolverHarness {
    var now = Instant(nanoseconds: 1_000 * Nanos.second)
    let start: Instant
    let resolver: DNSResolver
    var sent: [SeenQuery] = []
    var sentAt: [Instant] = []
    var results: [(token: DNSToken, outcome: DNSOutcome)] = []
    var buffer = [UInt8](repeating: 0, count: DNSQuery.maximumLength)

    static func server(_ n: Int) -> UDPEndpoint { UDPEndpoint(address: .v4(IPv4Address(192, 0, 2, UInt8(53 + n))), port: 53) }

    init(servers: Int = 1, types: [DNSType] = [.a], options: DNSResolverOptions = DNSResolverOptions(), seed: UInt64 = 1,
        portAvailable: @escaping (UInt16) -> Bool = { _ in true }) {
        resolver = DNSResolver(
            config: DNSResolverConfig(servers: (0..<servers).map(Self.server), queryTypes: types, options: options),
            random: SeededRandom(seed: seed), portAvailable: portAvailable)
        start = now
    }

    func drain() {
        while let t = buffer.withUnsafeMutableBytes({ resolver.pollTransmission(into: $0) }) {
            sent.append(SeenQuery(Array(buffer[0..<t.length]), t))
            sentAt.append(now)
        }
        while let r = resolver.pollResult() { results.append(r) }
    }

    @discardableResult
    func resolve(_ name: String) -> DNSToken {
        let token = resolver.resolve(name, now: now)
        drain()
        return token
    }

    /// Moves the clock to `seconds` after the start (by way of every deadline before it).
    func advance(to seconds: Double) {
        let target = start.adding(UInt64(seconds * 1e9))
        while let d = resolver.nextDeadline(), d <= target {
            now = max(now, d)
            resolver.handleTimeout(now: now)
            drain()
        }
        now = max(now, target)
        resolver.handleTimeout(now: now)
        drain()
    }

    /// Hands `bytes` to the resolver as a datagram from `query`'s server (or `from`) to its port.
    @discardableResult
    func reply(_ query: SeenQuery, _ bytes: [UInt8], from: UDPEndpoint? = nil, port: UInt16? = nil) -> Bool {
        let taken = bytes.withUnsafeBytes {
            resolver.handleDatagram($0, from: from ?? query.transmission.server, to: port ?? query.port!, now: now)
        }
        drain()
        return taken
    }

    func replyOverTCP(_ query: SeenQuery, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { resolver.handleStreamMessage($0, attempt: query.transmission.attempt, now: now) }
        drain()
    }

    func outcome(_ token: DNSToken) -> DNSOutcome? { results.first { $0.token == token }?.outcome }

    func seconds(_ i: Int) -> Double { Double(sentAt[i].since(start)) / 1e9 }
}

@Suite struct DNSResolverTests {
    let ip1 = IPAddress("192.0.2.1")!
    let ip2 = IPAddress("192.0.2.2")!

    @Test func anAnswerIsReportedThroughPollAndCachedForItsTTL() {
        let h = ResolverHarness()
        let token = h.resolve("www.example.com")
        #expect(h.sent.count == 1 && h.results.isEmpty)
        let q = h.sent[0]
        #expect(q.name == "www.example.com" && q.type == 1 && q.transmission.server == ResolverHarness.server(0))
        #expect(q.port.map { (1024...65535).contains($0) } == true)
        #expect(h.reply(q, q.response(answers: [TestRecord("www.example.com", ttl: 60, .a("192.0.2.1")), TestRecord("www.example.com", ttl: 30, .a("192.0.2.2"))])))
        #expect(h.outcome(token) == .addresses([ip1, ip2]))
        #expect(h.resolver.pendingCount == 0 && h.resolver.nextDeadline() == nil)
        // From the cache, through the same poll, for the least TTL (30 s), in any spelling.
        h.advance(to: 29.9)
        let cached = h.resolve("WWW.Example.Com.")
        #expect(h.sent.count == 1 && h.outcome(cached) == .addresses([ip1, ip2]))
        #expect(h.resolver.stats.cacheHits == 1)
        h.advance(to: 30)
        let expired = h.resolve("www.example.com")
        #expect(h.sent.count == 2 && h.outcome(expired) == nil)
    }

    @Test func idsAndPortsAreRandomAndTheDriverKeepsPortsOut() {
        let h = ResolverHarness(portAvailable: { $0 % 2 == 0 })
        for i in 0..<40 { h.resolve("host\(i).example") }
        let ports = h.sent.compactMap(\.port)
        let ids = h.sent.map(\.id)
        #expect(ports.count == 40 && Set(ports).count == 40)
        #expect(ports.allSatisfy { $0 % 2 == 0 && $0 >= 1024 })
        #expect(Set(ids).count > 35, "ids are drawn at random")
        #expect(ports.contains { $0 > 40_000 } && ports.contains { $0 < 30_000 })
        #expect(h.sent.allSatisfy { h.resolver.isUDPPort($0.port!) })
    }

    @Test func retriesBackOffAndFailOverThenTimeOut() {
        let h = ResolverHarness(servers: 2)
        let token = h.resolve("slow.example")
        h.advance(to: 20)
        // 1 s to each server, then 2 s to each, then 4 s (the cap) until 8 s in all.
        #expect(h.sent.map { $0.transmission.server } == [0, 1, 0, 1, 0].map(ResolverHarness.server))
        #expect((0..<h.sent.count).map(h.seconds) == [0, 1, 2, 4, 6])
        #expect(h.outcome(token) == .timedOut)
        #expect(Set(h.sent.map(\.id)).count == 5 && Set(h.sent.compactMap(\.port)).count == 5)
        #expect(h.resolver.pendingCount == 0 && h.resolver.nextDeadline() == nil)
        // Its ports are let go; a time-out is not cached.
        #expect(!h.sent.contains { h.resolver.isUDPPort($0.port!) })
        h.resolve("slow.example")
        #expect(h.sent.count == 6)
    }

    @Test func oneServerBacksOffAlone() {
        let h = ResolverHarness(servers: 1)
        let token = h.resolve("slow.example")
        h.advance(to: 20)
        #expect((0..<h.sent.count).map(h.seconds) == [0, 1, 3, 7])
        #expect(h.outcome(token) == .timedOut)
        #expect(h.resolver.stats.timeouts == 1)
    }

    @Test func aLateAnswerToAnEarlierAttemptCounts() {
        let h = ResolverHarness(servers: 2)
        let token = h.resolve("late.example")
        h.advance(to: 1.5)
        #expect(h.sent.count == 2)
        let first = h.sent[0]
        #expect(h.reply(first, first.response(answers: [TestRecord("late.example", .a("192.0.2.1"))])))
        #expect(h.outcome(token) == .addresses([ip1]))
        // The second attempt's answer, later, is the resolver's no more.
        let second = h.sent[1]
        #expect(!h.reply(second, second.response(answers: [TestRecord("late.example", .a("192.0.2.2"))])))
        #expect(h.results.count == 1)
    }

    @Test func datagramsThatAreNoAnswerAreIgnored() {
        let h = ResolverHarness(servers: 2)
        let token = h.resolve("www.example.com")
        let q = h.sent[0]
        let good = [TestRecord("www.example.com", .a("192.0.2.1"))]
        // From another address or port: not the resolver's at all.
        #expect(!h.reply(q, q.response(answers: good), from: ResolverHarness.server(1)))
        #expect(!h.reply(q, q.response(answers: good), from: UDPEndpoint(address: ResolverHarness.server(0).address, port: 5353)))
        // To a port of no query.
        #expect(!h.reply(q, q.response(answers: good), port: q.port! &+ 1))
        // The resolver's, but wrong: id, name, type, class, not a response, two questions, garbage.
        #expect(h.reply(q, q.response(answers: good, id: q.id &+ 1)))
        #expect(h.reply(q, q.response(answers: good, questionName: "www.example.org")))
        #expect(h.reply(q, q.response(answers: good, type: 28)))
        var wrongClass = q.response(answers: good)
        wrongClass[12 + DNSBuilder.wire(q.name).count + 3] = 3  // CHAOS
        #expect(h.reply(q, wrongClass))
        var query = q.response(answers: good)
        query[2] &= 0x7F
        #expect(h.reply(q, query))
        var twoQuestions = q.response(answers: good)
        twoQuestions[5] = 2
        #expect(h.reply(q, twoQuestions))
        #expect(h.reply(q, [1, 2, 3]))
        #expect(h.resolver.stats.responsesIgnored == 7)
        #expect(h.results.isEmpty && h.resolver.isUDPPort(q.port!))
        // The question in other letters is the question (RFC 4343).
        #expect(h.reply(q, q.response(answers: [TestRecord("WWW.EXAMPLE.COM", .a("192.0.2.1"))], questionName: "Www.Example.Com")))
        #expect(h.outcome(token) == .addresses([ip1]))
    }

    @Test func serverFailureFailsOverAtOnceAndEveryServerFailingIsReported() {
        let h = ResolverHarness(servers: 3)
        let token = h.resolve("broken.example")
        h.reply(h.sent[0], h.sent[0].response(rcode: 2))
        #expect(h.sent.count == 2 && h.sent[1].transmission.server == ResolverHarness.server(1) && h.seconds(1) == 0)
        // REFUSED without the question (allowed for failures).
        let refused = DNSBuilder.message(id: h.sent[1].id, flags: DNSBuilder.responseFlags(rcode: 5), question: nil)
        h.reply(h.sent[1], refused)
        #expect(h.sent.count == 3 && h.sent[2].transmission.server == ResolverHarness.server(2))
        // A referral (NS, no SOA, no answer) from a server that does not recurse.
        h.reply(h.sent[2], h.sent[2].response(authority: [TestRecord("example", .ns("ns.example"))]))
        #expect(h.outcome(token) == .serverFailure)
        #expect(h.sent.count == 3 && h.resolver.pendingCount == 0)
    }

    @Test func aFailedServerIsSkippedInLaterRounds() {
        let h = ResolverHarness(servers: 2)
        let token = h.resolve("half.example")
        h.reply(h.sent[0], h.sent[0].response(rcode: 2))
        h.advance(to: 5)
        // Everything after the failure goes to the second server.
        #expect(h.sent.dropFirst().allSatisfy { $0.transmission.server == ResolverHarness.server(1) })
        #expect(h.sent.count >= 3)
        h.advance(to: 9)
        #expect(h.outcome(token) == .serverFailure, "a server answered with a failure and none better")
    }

    @Test func aCNAMEChainInOneAnswerIsFollowed() {
        let h = ResolverHarness()
        let token = h.resolve("www.example.com")
        let q = h.sent[0]
        // Out of order, with an unrelated record in between.
        h.reply(q, q.response(answers: [
            TestRecord("b.cdn.example", ttl: 50, .a("192.0.2.2")),
            TestRecord("a.cdn.example", ttl: 40, .cname("b.cdn.example")),
            TestRecord("other.example", ttl: 5, .a("192.0.2.9")),
            TestRecord("www.example.com", ttl: 90, .cname("a.cdn.example")),
        ]))
        #expect(h.outcome(token) == .addresses([ip2]))
        #expect(h.sent.count == 1)
        // Cached under the name asked, for the chain's least TTL (40 s).
        h.advance(to: 39)
        h.resolve("www.example.com")
        #expect(h.sent.count == 1)
        h.advance(to: 40)
        h.resolve("www.example.com")
        #expect(h.sent.count == 2)
    }

    @Test func aChainEndingWithoutAnAddressAsksForItsEnd() {
        let h = ResolverHarness()
        let token = h.resolve("alias.example")
        let q = h.sent[0]
        h.reply(q, q.response(answers: [TestRecord("alias.example", ttl: 20, .cname("target.example"))]))
        #expect(h.sent.count == 2 && h.results.isEmpty)
        let follow = h.sent[1]
        #expect(follow.name == "target.example" && follow.type == 1 && follow.port != q.port)
        #expect(!h.resolver.isUDPPort(q.port!))
        h.reply(follow, follow.response(answers: [TestRecord("target.example", ttl: 100, .a("192.0.2.1"))]))
        #expect(h.outcome(token) == .addresses([ip1]))
        // Cached under the first name for the chain's 20 s.
        h.advance(to: 19)
        h.resolve("alias.example")
        #expect(h.sent.count == 2)
        h.advance(to: 20)
        h.resolve("alias.example")
        #expect(h.sent.count == 3)
    }

    @Test func aCNAMELoopEndsInFailure() {
        var options = DNSResolverOptions()
        options.maximumCNAMEs = 4
        let h = ResolverHarness(options: options)
        let token = h.resolve("loop.example")
        let q = h.sent[0]
        h.reply(q, q.response(answers: [
            TestRecord("loop.example", .cname("loop2.example")), TestRecord("loop2.example", .cname("loop.example")),
        ]))
        #expect(h.outcome(token) == .serverFailure)
        // Asked anew, step by step: the bound counts over every answer.
        let h2 = ResolverHarness(options: options)
        let token2 = h2.resolve("n0.example")
        for i in 0..<5 {
            let q = h2.sent.last!
            h2.reply(q, q.response(answers: [TestRecord("n\(i).example", .cname("n\(i + 1).example"))]))
        }
        #expect(h2.sent.count == 5, "four CNAMEs followed, the fifth refused")
        #expect(h2.outcome(token2) == .serverFailure)
    }

    @Test func nxdomainIsCachedForTheSOAsTTLOrMinimum() {
        let h = ResolverHarness()
        let token = h.resolve("nothing.example")
        let q = h.sent[0]
        h.reply(q, q.response(rcode: 3, authority: [TestRecord("example", ttl: 120, .soa(minimum: 45))]))
        #expect(h.outcome(token) == .nxdomain)
        h.advance(to: 44)
        #expect(h.outcome(h.resolve("nothing.example")) == .nxdomain)
        #expect(h.sent.count == 1)
        h.advance(to: 45)
        h.resolve("nothing.example")
        #expect(h.sent.count == 2)
    }

    @Test func negativeTTLsAreCappedAndWithoutSOANotCached() {
        let h = ResolverHarness()
        let token = h.resolve("capped.example")
        h.reply(h.sent[0], h.sent[0].response(rcode: 3, authority: [TestRecord("example", ttl: 86_400, .soa(minimum: 86_400))]))
        #expect(h.outcome(token) == .nxdomain)
        h.advance(to: 299)
        h.resolve("capped.example")
        #expect(h.sent.count == 1)
        h.advance(to: 300)
        h.resolve("capped.example")
        #expect(h.sent.count == 2, "five minutes at most")
        // NXDOMAIN without an SOA: reported, not cached.
        let bare = h.resolve("bare.example")
        h.reply(h.sent.last!, h.sent.last!.response(rcode: 3))
        #expect(h.outcome(bare) == .nxdomain)
        let sent = h.sent.count
        h.resolve("bare.example")
        #expect(h.sent.count == sent + 1)
    }

    @Test func noDataIsCachedWithAnSOAAndAChainsNegativeAnswerIsForItsEnd() {
        let h = ResolverHarness()
        let token = h.resolve("v6only.example")
        h.reply(h.sent[0], h.sent[0].response(authority: [TestRecord("example", ttl: 60, .soa(minimum: 600))]))
        #expect(h.outcome(token) == .noData)
        h.advance(to: 59)
        #expect(h.outcome(h.resolve("v6only.example")) == .noData)
        #expect(h.sent.count == 1)
        // A CNAME to a name that does not exist: NXDOMAIN for the chain (RFC 2308 §2.1), not asked again.
        let alias = h.resolve("alias.example")
        h.reply(h.sent.last!, h.sent.last!.response(rcode: 3, answers: [TestRecord("alias.example", .cname("gone.example"))],
            authority: [TestRecord("example", ttl: 60, .soa(minimum: 60))]))
        #expect(h.outcome(alias) == .nxdomain)
        #expect(h.sent.count == 2)
        // NOERROR with no answer and no SOA: no data, not cached.
        let bare = h.resolve("bare.example")
        h.reply(h.sent.last!, h.sent.last!.response())
        #expect(h.outcome(bare) == .noData)
        h.resolve("bare.example")
        #expect(h.sent.count == 4)
    }

    @Test func aZeroTTLIsUsedOnceAndTTLsAreCapped() {
        let h = ResolverHarness()
        let token = h.resolve("zero.example")
        h.reply(h.sent[0], h.sent[0].response(answers: [TestRecord("zero.example", ttl: 0, .a("192.0.2.1"))]))
        #expect(h.outcome(token) == .addresses([ip1]))
        h.resolve("zero.example")
        #expect(h.sent.count == 2)
        h.reply(h.sent[1], h.sent[1].response(answers: [TestRecord("zero.example", ttl: 0, .a("192.0.2.1"))]))
        let long = h.resolve("long.example")
        h.reply(h.sent[2], h.sent[2].response(answers: [TestRecord("long.example", ttl: 0x7FFF_FFFF, .a("192.0.2.2"))]))
        #expect(h.outcome(long) == .addresses([ip2]))
        h.advance(to: 86_399)
        h.resolve("long.example")
        #expect(h.sent.count == 3)
        h.advance(to: 86_400)
        h.resolve("long.example")
        #expect(h.sent.count == 4, "a day at most")
    }

    @Test func aTruncatedAnswerIsAskedAgainOverTCP() {
        let h = ResolverHarness(servers: 2)
        let token = h.resolve("big.example")
        let q = h.sent[0]
        h.reply(q, q.response(truncated: true))
        #expect(h.resolver.stats.truncatedAnswers == 1)
        #expect(h.sent.count == 2)
        let tcp = h.sent[1]
        #expect(tcp.transmission.transport == .tcp && tcp.transmission.server == q.transmission.server)
        #expect(tcp.name == "big.example" && tcp.type == 1)
        #expect(h.resolver.isAttemptOpen(tcp.transmission.attempt) && !h.resolver.isUDPPort(q.port!))
        // A TC bit over TCP means nothing more: the answer is taken as it is.
        let answers = (1...40).map { TestRecord("big.example", .a("192.0.2.\($0)")) }
        h.replyOverTCP(tcp, DNSBuilder.message(id: tcp.id, flags: DNSBuilder.responseFlags(truncated: true), question: ("big.example", 1), answers: answers))
        guard case .addresses(let list) = h.outcome(token) else {
            Issue.record("no addresses: \(h.results)")
            return
        }
        #expect(list.count == 40)
        #expect(!h.resolver.isAttemptOpen(tcp.transmission.attempt))
        #expect(h.resolver.stats.queriesSentOverTCP == 1)
    }

    @Test func aFailedStreamMovesToTheNextServerStillOverTCP() {
        let h = ResolverHarness(servers: 2)
        let token = h.resolve("big.example")
        h.reply(h.sent[0], h.sent[0].response(truncated: true))
        let tcp = h.sent[1]
        h.resolver.handleAttemptFailed(tcp.transmission.attempt, now: h.now)
        h.drain()
        #expect(h.sent.count == 3)
        #expect(h.sent[2].transmission.transport == .tcp && h.sent[2].transmission.server == ResolverHarness.server(1))
        // A wrong id over TCP is ignored too.
        h.replyOverTCP(h.sent[2], h.sent[2].response(answers: [TestRecord("big.example", .a("192.0.2.1"))], id: h.sent[2].id &+ 1))
        #expect(h.results.isEmpty && h.resolver.stats.responsesIgnored == 1)
        h.replyOverTCP(h.sent[2], h.sent[2].response(answers: [TestRecord("big.example", .a("192.0.2.1"))]))
        #expect(h.outcome(token) == .addresses([ip1]))
    }

    @Test func theCacheIsBoundedInEntriesAndBytes() {
        var options = DNSResolverOptions()
        options.cacheEntries = 8
        let h = ResolverHarness(options: options)
        for i in 0..<20 {
            h.resolve("n\(i).example")
            h.reply(h.sent.last!, h.sent.last!.response(answers: [TestRecord("n\(i).example", .a("192.0.2.1"))]))
        }
        #expect(h.resolver.cachedAnswers == 8)
        // The least recently used went: n0…n11; n12…n19 are there.
        let sent = h.sent.count
        h.resolve("n19.example")
        h.resolve("n12.example")
        #expect(h.sent.count == sent)
        h.resolve("n11.example")
        #expect(h.sent.count == sent + 1)

        var small = DNSResolverOptions()
        small.cacheBytes = 2_000
        let b = ResolverHarness(options: small)
        for i in 0..<50 {
            b.resolve("name-\(i).example")
            let many = (1...8).map { TestRecord("name-\(i).example", .a("192.0.2.\($0)")) }
            b.reply(b.sent.last!, b.sent.last!.response(answers: many))
        }
        #expect(b.resolver.cachedBytes <= 2_000 && b.resolver.cachedAnswers >= 1 && b.resolver.cachedAnswers < 50)
    }

    @Test func concurrentCallersOfOneNameShareItsQuestions() {
        let h = ResolverHarness(types: [.a, .aaaa])
        let first = h.resolve("shared.example")
        let second = h.resolve("SHARED.example")
        let other = h.resolve("other.example")
        #expect(h.sent.count == 4, "A and AAAA for each name, once")
        #expect(h.resolver.stats.coalesced == 1)
        let a = h.sent[0], aaaa = h.sent[1]
        #expect(a.type == 1 && aaaa.type == 28 && a.name == "shared.example")
        h.reply(aaaa, aaaa.response(answers: [TestRecord("shared.example", .aaaa("2001:db8::1"))]))
        h.reply(a, a.response(answers: [TestRecord("shared.example", .a("192.0.2.1"))]))
        // The order of `queryTypes`, whichever answered first.
        let both: DNSOutcome = .addresses([ip1, IPAddress("2001:db8::1")!])
        #expect(h.outcome(first) == both && h.outcome(second) == both)
        #expect(h.outcome(other) == nil)
        // Cancelled: its outcome never comes.
        h.resolver.cancel(other)
        h.reply(h.sent[2], h.sent[2].response(answers: [TestRecord("other.example", .a("192.0.2.1"))]))
        h.reply(h.sent[3], h.sent[3].response(authority: [TestRecord("example", ttl: 60, .soa(minimum: 60))]))
        #expect(h.outcome(other) == nil && h.results.count == 2)
        // But the cache has it.
        let again = h.resolve("other.example")
        #expect(h.sent.count == 4 && h.outcome(again) == .addresses([ip1]))
    }

    @Test func theSecondFamilyIsAwaitedBriefly() {
        let h = ResolverHarness(types: [.aaaa, .a])
        let token = h.resolve("slow6.example")
        let aaaa = h.sent[0], a = h.sent[1]
        #expect(aaaa.type == 28 && a.type == 1)
        h.reply(a, a.response(answers: [TestRecord("slow6.example", .a("192.0.2.1"))]))
        #expect(h.results.isEmpty)
        h.advance(to: 0.049)
        #expect(h.results.isEmpty)
        h.advance(to: 0.050)
        #expect(h.outcome(token) == .addresses([ip1]), "RFC 8305's resolution delay, then what there is")
        // The AAAA question goes on; its answer fills the cache.
        #expect(h.resolver.pendingCount == 1)
        h.reply(aaaa, aaaa.response(answers: [TestRecord("slow6.example", .aaaa("2001:db8::6"))]))
        #expect(h.resolver.pendingCount == 0)
        let again = h.resolve("slow6.example")
        #expect(h.outcome(again) == .addresses([IPAddress("2001:db8::6")!, ip1]) && h.sent.count == 2)
    }

    @Test func aNewCallerJoinsAQuestionLeftRunning() {
        let h = ResolverHarness(types: [.a, .aaaa])
        h.resolve("x.example")
        h.reply(h.sent[0], h.sent[0].response(answers: [TestRecord("x.example", .a("192.0.2.1"))]))
        h.advance(to: 0.1)
        #expect(h.results.count == 1 && h.resolver.pendingCount == 1)
        // A is cached, AAAA still asked: the new caller waits for that question, no new query.
        let token = h.resolve("x.example")
        #expect(h.sent.count == 2)
        h.reply(h.sent[1], h.sent[1].response(authority: [TestRecord("example", ttl: 60, .soa(minimum: 60))]))
        #expect(h.outcome(token) == .addresses([ip1]))
    }

    @Test func questionsInFlightAreBounded() {
        var options = DNSResolverOptions()
        options.maximumPending = 3
        let h = ResolverHarness(types: [.a, .aaaa], options: options)
        let first = h.resolve("one.example")
        let second = h.resolve("two.example")
        #expect(h.outcome(second) == .overloaded && h.sent.count == 2)
        // Joining one in flight asks nothing new: allowed.
        let joined = h.resolve("one.example")
        #expect(h.outcome(joined) == nil)
        for q in h.sent { h.reply(q, q.response(answers: [TestRecord("one.example", ttl: 60, q.type == 1 ? .a("192.0.2.1") : .aaaa("2001:db8::1"))])) }
        #expect(h.outcome(first) != nil && h.outcome(joined) == h.outcome(first))
        let third = h.resolve("two.example")
        #expect(h.outcome(third) == nil && h.sent.count == 4)
    }

    @Test func addressesInTextAndInvalidNamesAnswerAtOnce() {
        let h = ResolverHarness()
        let v4 = h.resolve("192.0.2.1")
        let v6 = h.resolve("2001:db8::1")
        let bad = h.resolve("a..b")
        let long = h.resolve(String(repeating: "x", count: 64) + ".example")
        #expect(h.outcome(v4) == .addresses([ip1]) && h.outcome(v6) == .addresses([IPAddress("2001:db8::1")!]))
        #expect(h.outcome(bad) == .invalidName && h.outcome(long) == .invalidName)
        #expect(h.sent.isEmpty && h.resolver.nextDeadline() == nil)
    }

    @Test func aQueryThatCannotBeSentFailsOverAtOnce() {
        let h = ResolverHarness(servers: 2)
        let token = h.resolve("unroutable.example")
        h.resolver.handleAttemptFailed(h.sent[0].transmission.attempt, now: h.now)
        h.drain()
        #expect(h.sent.count == 2 && h.sent[1].transmission.server == ResolverHarness.server(1))
        h.resolver.handleAttemptFailed(h.sent[1].transmission.attempt, now: h.now)
        h.drain()
        #expect(h.outcome(token) == .serverFailure)
    }

    @Test func theRunIsDeterministic() {
        func run() -> [UInt16] {
            let h = ResolverHarness(servers: 2, types: [.a, .aaaa], seed: 9)
            for i in 0..<5 { h.resolve("d\(i).example") }
            h.advance(to: 10)
            return h.sent.flatMap { [$0.id, $0.port ?? 0] }
        }
        #expect(run() == run())
    }
}
