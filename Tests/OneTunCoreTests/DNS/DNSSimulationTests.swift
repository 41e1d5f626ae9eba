import Testing
@_spi(OneTunInternals) @testable import OneTunCore

/// A tiny DNS server on a `TunnelCore`: UDP and TCP on port 53, answering from a zone; names in
/// `truncateOverUDP` get an empty answer with TC over UDP and the whole one over TCP.
final class DNSServerHost: SimHost {
    let core: TunnelCore
    /// Name → its records (A, AAAA, CNAME); a name not here is NXDOMAIN.
    var zone: [String: [TestRecord]] = [:]
    var truncateOverUDP: Set<String> = []
    var udpQueries: [String] = []
    var tcpQueries: [String] = []
    var streams: [(id: Int, received: [UInt8], answered: Bool)] = []

    init(_ core: TunnelCore) {
        self.core = core
        core.listen(port: 53)
    }

    func receive(_ buffer: UnsafeMutableRawBufferPointer, length: Int, from source: EndpointAddress, now: Instant) {
        core.handleDatagram(buffer, length: length, from: source, now: now)
    }

    func transmit(into buffer: UnsafeMutableRawBufferPointer, now: Instant) -> (Int, EndpointAddress)? {
        guard let n = core.pollTransmit(into: buffer, now: now) else { return nil }
        return (n, core.transmitDestination)
    }

    func nextDeadline() -> Instant? { core.nextDeadline() }
    func handleTimeout(now: Instant) { core.handleTimeout(now: now) }

    func answer(_ query: [UInt8], overTCP: Bool) -> [UInt8] {
        let seen = SeenQuery(query, DNSTransmission(attempt: DNSAttemptID(rawValue: 0), server: UDPEndpoint(address: core.config.addresses[0], port: 53), transport: .tcp, length: query.count))
        if overTCP { tcpQueries.append(seen.name) } else { udpQueries.append(seen.name) }
        guard let records = zone[seen.name] else {
            return seen.response(rcode: 3, authority: [TestRecord("example", ttl: 60, .soa(minimum: 30))])
        }
        if !overTCP && truncateOverUDP.contains(seen.name) { return seen.response(truncated: true) }
        let answers = records.filter {
            switch $0.data {
            case .a: seen.type == 1
            case .aaaa: seen.type == 28
            case .cname: true
            default: false
            }
        }
        return seen.response(answers: answers, authority: answers.isEmpty ? [TestRecord("example", ttl: 60, .soa(minimum: 30))] : [])
    }

    func serve(now: Instant) {
        var replies: [([UInt8], UDPEndpoint)] = []
        while let d = core.pollDatagram() {
            guard d.destination.port == 53 else { continue }
            replies.append((answer(Array(d.payload), overTCP: false), d.source))
        }
        for (bytes, to) in replies {
            #expect(bytes.withUnsafeBytes { core.sendDatagram(from: 53, to: to, payload: $0) })
        }
        while let id = core.accept() {
            if core.connection(id).localPort == 53 { streams.append((id, [], false)) }
        }
        while core.pollEvent() != nil {}
        for i in streams.indices where !streams[i].answered {
            let c = core.connection(streams[i].id)
            let readable = c.readable()
            streams[i].received += Array(readable)
            c.consume(readable.count)
            let r = streams[i].received
            guard r.count >= 2, r.count >= 2 + (Int(r[0]) << 8 | Int(r[1])) else { continue }
            let reply = answer(Array(r[2...]), overTCP: true)
            let framed = [UInt8(reply.count >> 8), UInt8(reply.count & 0xFF)] + reply
            #expect(framed.withUnsafeBytes { c.send($0) } == framed.count)
            streams[i].answered = true
        }
        // Close when the client does (RFC 7766 §6.2.1: the client closes first).
        for s in streams where s.answered {
            let c = core.connection(s.id)
            if c.isReadClosed && c.state == .closeWait { c.close() }
        }
    }
}

/// A `TunnelCore` that resolves names: every datagram and event the driver would see is recorded, and
/// every resolution.
final class DNSClientHost: SimHost {
    let core: TunnelCore
    var datagrams: [(UDPEndpoint, [UInt8])] = []
    var events: [Int] = []
    var outcomes: [DNSToken: DNSOutcome] = [:]

    init(_ core: TunnelCore) { self.core = core }

    func receive(_ buffer: UnsafeMutableRawBufferPointer, length: Int, from source: EndpointAddress, now: Instant) {
        core.handleDatagram(buffer, length: length, from: source, now: now)
    }

    func transmit(into buffer: UnsafeMutableRawBufferPointer, now: Instant) -> (Int, EndpointAddress)? {
        guard let n = core.pollTransmit(into: buffer, now: now) else { return nil }
        return (n, core.transmitDestination)
    }

    func nextDeadline() -> Instant? { core.nextDeadline() }
    func handleTimeout(now: Instant) { core.handleTimeout(now: now) }

    func serve(now: Instant) {
        while let d = core.pollDatagram() { datagrams.append((d.source, Array(d.payload))) }
        while let id = core.pollEvent() { events.append(id) }
        while let (token, outcome) = core.pollResolution() { outcomes[token] = outcome }
    }
}

/// Names resolved through the tunnel, end to end: two cores in the fake-clock network, the far one running
/// a DNS server; an answer over UDP, a truncated one asked again over TCP on an internal connection, a
/// name that does not exist, and both families. The driver of the resolving core never sees DNS traffic.
@Suite struct DNSSimulationTests {
    static let clientKey = WGCrypto.generatePrivateKey(using: SeededRandom(seed: 0xD45_0001))
    static let serverKey = WGCrypto.generatePrivateKey(using: SeededRandom(seed: 0xD45_0002))
    static let wallClock: Int64 = 1_700_000_000 * Int64(Nanos.second)

    func network(clientAddresses: [String] = ["10.0.0.1"], serverAddresses: [String] = ["10.0.0.2"], dnsServers: [String] = ["10.0.0.2"])
        -> (CoreNetwork, DNSClientHost, DNSServerHost)
    {
        var clientConfig = TunnelCoreConfig(
            wireGuard: WireGuardConfig(privateKey: Self.clientKey, peerPublicKey: WGCrypto.x25519PublicKey(privateKey: Self.serverKey)),
            addresses: clientAddresses.map(simIP))
        clientConfig.dnsServers = dnsServers.map(simIP)
        let client = TunnelCore(config: clientConfig, random: SeededRandom(seed: 21))
        let server = TunnelCore(
            config: TunnelCoreConfig(
                wireGuard: WireGuardConfig(privateKey: Self.serverKey, peerPublicKey: WGCrypto.x25519PublicKey(privateKey: Self.clientKey)),
                addresses: serverAddresses.map(simIP)),
            random: SeededRandom(seed: 22))
        for core in [client, server] { core.wallClockOffset = Self.wallClock }
        client.endpoint = simEndpoint(2)
        server.endpoint = simEndpoint(1)
        let net = CoreNetwork()
        let clientHost = DNSClientHost(client)
        let serverHost = DNSServerHost(server)
        net.add("client", clientHost, at: simEndpoint(1))
        net.add("server", serverHost, at: simEndpoint(2))
        client.start(now: net.now)
        return (net, clientHost, serverHost)
    }

    @Test func aNameIsResolvedThroughTheTunnelOverUDP() throws {
        let (net, client, server) = network()
        server.zone["www.example"] = [TestRecord("www.example", .a("10.9.0.1")), TestRecord("www.example", .a("10.9.0.2"))]
        let token = try #require(client.core.resolve(name: "www.example", now: net.now))
        #expect(net.run(seconds: 5) { client.outcomes[token] != nil })
        #expect(client.outcomes[token] == .addresses([simIP("10.9.0.1"), simIP("10.9.0.2")]))
        #expect(server.udpQueries == ["www.example"] && server.tcpQueries.isEmpty)
        // The driver saw none of it.
        #expect(client.datagrams.isEmpty && client.events.isEmpty)
        #expect(client.core.dnsStats?.queriesSent == 1)
        // Cached: answered without a query, through the same poll.
        let again = try #require(client.core.resolve(name: "WWW.example.", now: net.now))
        net.run(seconds: 0.1)
        #expect(client.outcomes[again] == client.outcomes[token] && server.udpQueries.count == 1)
        // Other UDP still reaches the driver, to any port.
        let payload: [UInt8] = [1, 2, 3]
        #expect(payload.withUnsafeBytes { server.core.sendDatagram(from: 53, to: UDPEndpoint(address: simIP("10.0.0.1"), port: 4000), payload: $0) })
        net.run(seconds: 0.1)
        #expect(client.datagrams.count == 1 && client.datagrams.first?.1 == payload)
    }

    @Test func aTruncatedAnswerIsAskedAgainOverTCPInsideTheCore() throws {
        let (net, client, server) = network()
        // Too many addresses for 512 octets: 60 A records.
        server.zone["big.example"] = (1...60).map { TestRecord("big.example", .a("10.9.1.\($0)")) }
        server.truncateOverUDP = ["big.example"]
        // An application connection at the same time, whose events must still come.
        server.core.listen(port: 8080)
        let app = try #require(client.core.connect(to: simIP("10.0.0.2"), port: 8080, now: net.now))
        let token = try #require(client.core.resolve(name: "big.example", now: net.now))
        #expect(net.run(seconds: 10) { client.outcomes[token] != nil })
        guard case .addresses(let list) = client.outcomes[token] else {
            Issue.record("\(String(describing: client.outcomes[token]))")
            return
        }
        #expect(list.count == 60 && list.first == simIP("10.9.1.1") && list.last == simIP("10.9.1.60"))
        #expect(server.udpQueries == ["big.example"] && server.tcpQueries == ["big.example"])
        #expect(client.core.dnsStats?.truncatedAnswers == 1 && client.core.dnsStats?.queriesSentOverTCP == 1)
        // Only the application's connection came out of pollEvent.
        #expect(!client.events.isEmpty && client.events.allSatisfy { $0 == app })
        #expect(client.core.connection(app).state == .established)
        // The stream closes in order (we close first, the server follows) and leaves the core.
        #expect(net.run(seconds: 30) { client.core.dns!.streams.isEmpty })
        net.run(seconds: 1)
        #expect(server.core.connection(server.streams[0].id).hasEnded)
        #expect(client.datagrams.isEmpty)
        #expect(client.events.allSatisfy { $0 == app })
    }

    @Test func aMissingNameIsNXDOMAINAndBothFamiliesAreAsked() throws {
        let (net, client, server) = network(clientAddresses: ["10.0.0.1", "fd00::1"], serverAddresses: ["10.0.0.2", "fd00::2"],
            dnsServers: ["fd00::2", "10.0.0.2"])
        server.zone["dual.example"] = [TestRecord("dual.example", .aaaa("fd00:9::1")), TestRecord("dual.example", .a("10.9.2.1"))]
        server.zone["alias.example"] = [TestRecord("alias.example", .cname("dual.example"))]
        let missing = try #require(client.core.resolve(name: "missing.example", now: net.now))
        let dual = try #require(client.core.resolve(name: "dual.example", now: net.now))
        #expect(net.run(seconds: 5) { client.outcomes[missing] != nil && client.outcomes[dual] != nil })
        #expect(client.outcomes[missing] == .nxdomain)
        // A first (our first address is IPv4), then AAAA; asked of the first server, over IPv6.
        #expect(client.outcomes[dual] == .addresses([simIP("10.9.2.1"), simIP("fd00:9::1")]))
        #expect(server.udpQueries.count == 4)
        // A CNAME to a name the server does not follow: the resolver asks for the target itself.
        let alias = try #require(client.core.resolve(name: "alias.example", now: net.now))
        #expect(net.run(seconds: 5) { client.outcomes[alias] != nil })
        #expect(client.outcomes[alias] == .addresses([simIP("10.9.2.1"), simIP("fd00:9::1")]))
        #expect(client.datagrams.isEmpty && client.events.isEmpty)
    }

    @Test func withoutServersThereIsNoResolver() {
        let (net, client, _) = network(dnsServers: [])
        #expect(client.core.resolve(name: "www.example", now: net.now) == nil)
        #expect(client.core.pollResolution() == nil && client.core.dnsStats == nil)
        // A server of a family we have no address of is left out.
        let (net6, client6, _) = network(dnsServers: ["fd00::2"])
        #expect(client6.core.resolve(name: "www.example", now: net6.now) == nil)
    }

    @Test func anUnansweredQueryTimesOutAndItsDeadlineIsTheCores() throws {
        let (net, client, _) = network(dnsServers: ["10.0.0.3"])
        let token = try #require(client.core.resolve(name: "www.example", now: net.now))
        let asked = net.now
        #expect(net.run(seconds: 20) { client.outcomes[token] != nil })
        #expect(client.outcomes[token] == .timedOut)
        #expect(net.now.since(asked) >= 8 * Nanos.second && net.now.since(asked) < 9 * Nanos.second)
        #expect(client.core.dnsStats?.queriesSent == 4)
    }
}
