/// The tunnel core's DNS client: a `DNSResolver` whose queries go through the tunnel, over the core's UDP
/// path from random ports and, after a truncated answer, over streams of the core's TCP stack. Neither
/// reaches the driver: answers are taken before `pollDatagram`, the streams' events before `pollEvent`.
final class TunnelDNS {
    let resolver: DNSResolver

    /// A TCP query's stream (RFC 7766 §6.2: one query per connection here, closed after its answer).
    struct Stream {
        var connection: Int
        var attempt: DNSAttemptID
        /// The 2-octet length and the answer so far (RFC 1035 §4.2.2).
        var received: [UInt8] = []
        /// When we closed our side after the answer (or once the query was no longer wanted); the stream
        /// is released when the connection has ended, or `closingLimit` later.
        var closingSince: Instant?
    }

    var streams: [Stream] = []
    /// The connection ids of `streams`, whose events `pollEvent` keeps from the driver.
    var connections: Set<Int> = []
    /// Streams querying at once at most; a TCP query past it fails as if its server could not be reached.
    static let maximumOpenStreams = 64
    /// How long a closing stream may wait for the server's FIN before it is reset.
    static let closingLimit: UInt64 = 10 * Nanos.second
    /// One query with its 2-octet TCP length in front.
    let scratch: UnsafeMutableRawBufferPointer

    init?(config: TunnelCoreConfig, random: RandomSource, udpPorts: UDPPortPool) {
        // Only servers we have a source address for; A for an IPv4 address of ours, AAAA for an IPv6 one,
        // in the order of our addresses.
        var servers: [UDPEndpoint] = []
        for address in config.dnsServers where config.addresses.contains(where: { $0.isV4 == address.isV4 }) {
            let server = UDPEndpoint(address: address, port: 53)
            if !servers.contains(server) && servers.count < 64 { servers.append(server) }
        }
        var types: [DNSType] = []
        for address in config.addresses {
            let type: DNSType = address.isV4 ? .a : .aaaa
            if !types.contains(type) { types.append(type) }
        }
        guard !servers.isEmpty, !types.isEmpty else { return nil }
        resolver = DNSResolver(
            config: DNSResolverConfig(servers: servers, queryTypes: types, options: config.dnsOptions), random: random,
            portAvailable: { [udpPorts] port in !udpPorts.holds(port) })
        scratch = .allocate(byteCount: 2 + DNSQuery.maximumLength, alignment: 8)
    }

    deinit { scratch.deallocate() }

    var openStreams: Int { streams.count { $0.closingSince == nil } }

    func nextDeadline() -> Instant? {
        var earliest = resolver.nextDeadline()
        for stream in streams {
            guard let since = stream.closingSince else { continue }
            let d = since.adding(Self.closingLimit)
            if earliest.map({ d < $0 }) ?? true { earliest = d }
        }
        return earliest
    }
}

extension UDPPortPool {
    /// Whether `port` is held by a mapping or reserved (a remote UDP forward listens there): the resolver
    /// does not send from it.
    func holds(_ port: UInt16) -> Bool {
        if reservedPorts.contains(port) { return true }
        guard range.contains(port), !entryOfPort.isEmpty else { return false }
        return entryOfPort[Int(port - range.lowerBound)] != Self.free
    }
}

extension TunnelCore {
    // MARK: DNS commands and outputs

    /// Starts resolving `name` through the tunnel, asking the servers of `config.dnsServers` (see
    /// `DNSResolver` for the questions, retries, TCP fallback and cache); nil when there are none (no
    /// resolver: the driver resolves names itself). The outcome comes out of `pollResolution` with the
    /// token, always, even when known at once (cached, an address in text, an invalid name): call
    /// `pollResolution` after this, as after any input.
    public func resolve(name: String, now: Instant) -> DNSToken? {
        guard let dns else { return nil }
        let token = dns.resolver.resolve(name, now: now)
        flushDNS(now: now)
        return token
    }

    /// The next resolution whose outcome is known; nil when none is (or there is no resolver).
    public func pollResolution() -> (token: DNSToken, outcome: DNSOutcome)? { dns?.resolver.pollResult() }

    /// The driver no longer wants `token`'s outcome (its client went away); its questions go on and fill
    /// the cache.
    public func cancelResolution(_ token: DNSToken) { dns?.resolver.cancel(token) }

    /// The resolver's counters; nil without a resolver.
    public var dnsStats: DNSResolverStats? { dns?.resolver.stats }

    // MARK: Inside the core

    /// Whether a datagram that arrived is an answer to a DNS query of ours (from the query's server to its
    /// port): then the resolver takes it and it never reaches `pollDatagram`.
    func interceptDNS(_ packet: UnsafeRawBufferPointer, _ arrival: NetworkInterface.UDPArrival, now: Instant) -> Bool {
        guard let dns, dns.resolver.isUDPPort(arrival.destination.port) else { return false }
        let start = arrival.payloadOffset
        let payload = UnsafeRawBufferPointer(rebasing: packet[start..<(start + arrival.payloadLength)])
        return dns.resolver.handleDatagram(payload, from: arrival.source, to: arrival.destination.port, now: now)
    }

    /// After an input: reads the DNS streams, then sends what the resolver has to send.
    func serviceDNS(now: Instant) {
        guard let dns else { return }
        if !dns.streams.isEmpty { serviceDNSStreams(dns, now: now) }
        flushDNS(now: now)
    }

    /// Sends the resolver's queries: datagrams into the UDP queue, TCP queries on new streams. One that
    /// cannot go (no route, a full queue, too many streams) is reported failed at once, and the resolver
    /// moves to its next server.
    func flushDNS(now: Instant) {
        guard let dns else { return }
        let query = UnsafeMutableRawBufferPointer(rebasing: dns.scratch[2...])
        while let t = dns.resolver.pollTransmission(into: query) {
            switch t.transport {
            case .udp(let port):
                if !sendDatagram(from: port, to: t.server, payload: UnsafeRawBufferPointer(rebasing: query[0..<t.length])) {
                    dns.resolver.handleAttemptFailed(t.attempt, now: now)
                }
            case .tcp:
                guard dns.openStreams < TunnelDNS.maximumOpenStreams, let id = connect(to: t.server.address, port: t.server.port, now: now)
                else {
                    dns.resolver.handleAttemptFailed(t.attempt, now: now)
                    continue
                }
                // RFC 1035 §4.2.2: the message after its length, two octets. The send buffer takes it whole
                // in SYN-SENT; it goes with the handshake's end.
                dns.scratch.netStore(UInt16(t.length), at: 0)
                let connection = tcp.connection(id)
                guard connection.send(UnsafeRawBufferPointer(rebasing: dns.scratch[0..<(2 + t.length)])) == 2 + t.length else {
                    tcp.release(id)
                    dns.resolver.handleAttemptFailed(t.attempt, now: now)
                    continue
                }
                dns.streams.append(TunnelDNS.Stream(connection: id, attempt: t.attempt))
                dns.connections.insert(id)
            }
        }
    }

    /// Reads each TCP query's answer, hands it to the resolver, and closes streams that are done; a stream
    /// that ends before a whole answer fails its query.
    func serviceDNSStreams(_ dns: TunnelDNS, now: Instant) {
        var i = 0
        while i < dns.streams.count {
            var stream = dns.streams[i]
            let connection = tcp.connection(stream.connection)
            if stream.closingSince == nil {
                // The answer may lie in two pieces of the receive ring: read until it is whole or nothing is left.
                while true {
                    let want = stream.received.count < 2 ? 2 : 2 + (Int(stream.received[0]) << 8 | Int(stream.received[1]))
                    let readable = connection.readable()
                    let take = min(readable.count, want - stream.received.count)
                    guard take > 0 else { break }
                    stream.received.append(contentsOf: UnsafeRawBufferPointer(rebasing: readable[0..<take]))
                    connection.consume(take)
                }
                let length = stream.received.count >= 2 ? Int(stream.received[0]) << 8 | Int(stream.received[1]) : -1
                if length >= 0 && stream.received.count == 2 + length {
                    stream.received.withUnsafeBytes {
                        dns.resolver.handleStreamMessage(UnsafeRawBufferPointer(rebasing: $0[2...]), attempt: stream.attempt, now: now)
                    }
                    // Still open: the answer was not one (a wrong id or question) and none will follow.
                    if dns.resolver.isAttemptOpen(stream.attempt) { dns.resolver.handleAttemptFailed(stream.attempt, now: now) }
                    stream.received = []
                    stream.closingSince = now
                    connection.close()
                } else if connection.hasEnded || connection.isReadClosed {
                    dns.resolver.handleAttemptFailed(stream.attempt, now: now)
                    stream.closingSince = now
                    connection.close()
                } else if !dns.resolver.isAttemptOpen(stream.attempt) {
                    stream.closingSince = now
                    connection.close()
                }
            }
            if let since = stream.closingSince {
                // Whatever else the server sends is not read.
                if connection.readableBytes > 0 { connection.consume(connection.readableBytes) }
                if connection.hasEnded || now >= since.adding(TunnelDNS.closingLimit) {
                    tcp.release(stream.connection)
                    dns.connections.remove(stream.connection)
                    dns.streams.remove(at: i)
                    continue
                }
            }
            dns.streams[i] = stream
            i += 1
        }
    }

    /// Whether connection `id` is a DNS stream's, whose events the driver never sees.
    func isDNSConnection(_ id: Int) -> Bool { dns?.connections.contains(id) ?? false }
}
