/// Names one `resolve` call; its outcome comes out of `pollResult` with it.
public struct DNSToken: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public var description: String { "dns#\(rawValue)" }
}

/// Names one query the resolver sent (one attempt at one question). A driver that sends a query over TCP
/// reports the answer, or the stream's failure, by it.
public struct DNSAttemptID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public var description: String { "attempt#\(rawValue)" }
}

/// What resolving a name came to.
public enum DNSOutcome: Equatable, Sendable, CustomStringConvertible {
    /// The addresses of the name (after any CNAME chain), of the types asked in the order asked.
    case addresses([IPAddress])
    /// The name does not exist (NXDOMAIN, RFC 2308 §2.1; for a CNAME chain, its last name).
    case nxdomain
    /// The name exists but has no address of the types asked (NODATA, RFC 2308 §2.2).
    case noData
    /// Every server answered with a failure (SERVFAIL, REFUSED, NOTIMP, FORMERR, a referral, or a CNAME
    /// chain too long), or could not be reached, and none gave an answer in time.
    case serverFailure
    /// No server answered within the total time-out.
    case timedOut
    /// The text is no name: empty, an empty label, a label over 63 octets or a name over 255.
    case invalidName
    /// Too many questions in flight (`DNSResolverOptions.maximumPending`) or too many callers waiting;
    /// nothing was asked.
    case overloaded

    public var description: String {
        switch self {
        case .addresses(let list): list.map(\.description).joined(separator: ", ")
        case .nxdomain: "no such name"
        case .noData: "no address for the name"
        case .serverFailure: "DNS server failure"
        case .timedOut: "DNS servers did not answer"
        case .invalidName: "invalid name"
        case .overloaded: "too many names being resolved"
        }
    }
}

/// Timing and bounds of a `DNSResolver`; the defaults suit a stub resolver behind a tunnel.
public struct DNSResolverOptions: Sendable, Equatable {
    /// The first attempt's time-out; each round over all servers doubles it (RFC 1035 §4.2.1 asks for
    /// back-off, RFC 1536 §1 for an exponential one), up to `maximumAttemptTimeout`.
    public var initialTimeout: UInt64 = 1 * Nanos.second
    public var maximumAttemptTimeout: UInt64 = 4 * Nanos.second
    /// From the first query of a question to giving up on it (attempts, failover, a CNAME target asked
    /// anew, all within it).
    public var totalTimeout: UInt64 = 8 * Nanos.second
    /// When one type (A or AAAA) has addresses, how long to wait for the other before answering with what
    /// there is: RFC 8305 §3's Resolution Delay. The other question goes on, to fill the cache.
    public var secondFamilyWait: UInt64 = 50 * Nanos.millisecond
    /// Questions (a name and a type) in flight at most; a name that needs more is `overloaded` at once.
    public var maximumPending = 256
    /// Tokens waiting for an outcome at most (coalesced callers of one name each count).
    public var maximumWaiting = 4096
    /// Queries sent for one question at most (retries, failover, TCP), so a chatty failure stays bounded.
    public var maximumAttempts = 16
    public var cacheEntries = 1024
    public var cacheBytes = 256 << 10
    /// Cap on how long a positive answer is cached, in seconds (its TTL otherwise; zero is not cached).
    public var maximumTTL: UInt32 = 86_400
    /// Cap on how long NXDOMAIN or NODATA is cached, in seconds (RFC 2308 §5 suggests one to three hours;
    /// a tunnel's names come and go, so less).
    public var maximumNegativeTTL: UInt32 = 300
    /// CNAMEs followed for one name at most, over every answer (RFC 1034 §5.2.2 asks for a bound).
    public var maximumCNAMEs = 8
    /// UDP source ports queries are sent from, each query a random free one (RFC 5452 §9.2).
    public var sourcePorts: ClosedRange<UInt16> = 1024...65535

    public init() {}
}

/// A `DNSResolver`'s servers, what it asks them, and its options.
public struct DNSResolverConfig: Sendable, Equatable {
    /// Tried in this order, the first first each time; each is asked again in later rounds.
    public var servers: [UDPEndpoint]
    /// `.a`, `.aaaa` or both, each at most once: the types asked for every name, and the order of the
    /// addresses in an outcome.
    public var queryTypes: [DNSType]
    public var options: DNSResolverOptions

    public init(servers: [UDPEndpoint], queryTypes: [DNSType], options: DNSResolverOptions = DNSResolverOptions()) {
        precondition(!servers.isEmpty && servers.count <= 64, "a resolver needs 1–64 servers")
        precondition(!queryTypes.isEmpty && queryTypes.allSatisfy { $0 == .a || $0 == .aaaa } && Set(queryTypes).count == queryTypes.count,
            "a resolver asks for A, AAAA or both")
        self.servers = servers
        self.queryTypes = queryTypes
        self.options = options
    }
}

/// Counters for logs and tests.
public struct DNSResolverStats: Sendable, Equatable {
    public var queriesSent = 0
    public var queriesSentOverTCP = 0
    /// Datagrams to a query's port from its server that were no answer to it (wrong id, wrong question,
    /// not a response) or did not parse: ignored (RFC 5452 §9.1).
    public var responsesIgnored = 0
    public var truncatedAnswers = 0
    public var cacheHits = 0
    public var coalesced = 0
    public var timeouts = 0
}

/// A sans-I/O DNS stub resolver: it asks recursive servers for the addresses of names and keeps a cache.
/// It opens no socket and reads no clock; its driver (the tunnel core, or a test) carries its queries.
///
/// Methods come in the core's four kinds (see `TunnelCore`):
/// - **Commands**: `resolve(_:now:)` returns a token at once; `cancel(_:)` forgets one.
/// - **Inputs**, each with `now`: `handleDatagram(_:from:to:now:)` for a UDP datagram (true when it was
///   the resolver's), `handleStreamMessage(_:attempt:now:)` for a message read from a TCP query's stream
///   (without its 2-octet length), `handleAttemptFailed(_:now:)` when a query could not be sent or its
///   stream failed, and `handleTimeout(now:)`.
/// - **Outputs**: `pollTransmission(into:)` (a query to send: its bytes in the caller's buffer, of at
///   least `DNSQuery.maximumLength` octets, and where and how to send them), `pollResult()` (a token's
///   outcome), `nextDeadline()`.
/// - **Getters**: `isAttemptOpen(_:)` (whether a TCP query's stream is still wanted), `stats`, `isUDPPort`.
///
/// **Every outcome comes from `pollResult`**, a cached one or an invalid name's too: `resolve` never
/// answers synchronously, so a caller has one path. After each command or input, call `pollTransmission`
/// until nil and `pollResult` until nil.
///
/// **Questions.** Each name is asked as one question per type of `queryTypes` (A when the tunnel has an
/// IPv4 address, AAAA when it has an IPv6 one). Callers of a name that is being resolved wait for the
/// same questions (coalescing). When one type has addresses, the outcome waits `secondFamilyWait` at most
/// for the other.
///
/// **Queries and answers (RFC 5452).** Every query goes from a fresh random UDP port with a fresh random
/// id. A datagram is an answer only when it comes from the server's address and port to the query's port,
/// carries the query's id, is a response, and repeats the question (name compared case-insensitively,
/// type and class); anything else sent to that port from the server is ignored and counted. A query stays
/// open, its answer welcome, until its question is done, so a slow first answer still counts after a retry
/// went out.
///
/// **Retries.** The first attempt goes to the first server and waits `initialTimeout`; each next attempt
/// goes to the next server, and every round over the servers doubles the wait (to
/// `maximumAttemptTimeout`), until `totalTimeout` after the first. A server that answers with a failure
/// (SERVFAIL, REFUSED, NOTIMP, FORMERR), a referral, or cannot be reached is left out of the rest of the
/// question, and the next server is asked at once.
///
/// **TCP.** An answer with TC set is asked again, of the same server, over TCP (RFC 7766 §5), and the
/// question stays on TCP. The driver opens a stream per TCP query, writes the query with its 2-octet
/// length (RFC 1035 §4.2.2) and reads one answer the same way.
///
/// **Answers.** The answer section is followed along CNAMEs from the name asked (RFC 1034 §3.6.2, at most
/// `maximumCNAMEs` in all); if the chain ends without an address and the server gave no negative answer
/// for its end, the end is asked for in a new question. NXDOMAIN, and NOERROR with an SOA and no address,
/// are negative answers (RFC 2308 §2).
///
/// **Cache.** Answers are cached per name and type, positive ones for the least TTL of the chain and the
/// addresses (at most `maximumTTL`), negative ones for the least of the SOA's TTL and its MINIMUM (RFC 2308
/// §5, at most `maximumNegativeTTL`); a negative answer without an SOA, a failure or a time-out is not
/// cached. A TTL of zero is used once, not cached.
public final class DNSResolver {
    public let config: DNSResolverConfig
    let random: RandomSource
    /// Whether a UDP port may be used as a source: the driver keeps out ports it uses otherwise.
    let portAvailable: (UInt16) -> Bool

    struct Attempt {
        var id: DNSAttemptID
        var server: Int
        var messageID: UInt16
        /// The UDP source port; nil over TCP.
        var port: UInt16?
    }

    /// One name and type being asked (RFC 1034 §5.3.3's "SNAME, STYPE"), its attempts, and where its
    /// CNAME chain has led.
    struct Question {
        /// The name and type the caller wanted, which the answer is cached under.
        var key: DNSCache.Key
        /// The name asked now: `key.name`, or the end of a CNAME chain.
        var name: DNSName
        /// The least TTL of the CNAMEs followed so far.
        var chainTTL: UInt32 = .max
        var cnames = 0
        var started: Instant
        var attempts: [Attempt] = []
        var attemptsMade = 0
        var lastServer = -1
        /// Servers that failed this question (bit per server index).
        var failedServers: UInt64 = 0
        var overTCP = false
        /// The resolution waiting for it; nil once it answered without this question (it still fills the
        /// cache).
        var resolution: Int?
    }

    /// The callers of one name and its questions, one per query type.
    struct Resolution {
        enum Part {
            case asking(question: Int)
            case done(DNSAnswer)
        }

        var name: DNSName
        var waiters: [DNSToken]
        var parts: [Part]
    }

    public private(set) var stats = DNSResolverStats()

    var cache: DNSCache
    var nextToken: UInt64 = 1
    var nextAttempt: UInt32 = 1
    /// Tokens whose outcome has not been polled, and was not cancelled.
    var live: Set<DNSToken> = []
    var results: [(DNSToken, DNSOutcome)] = []
    var resultsHead = 0

    var questions: [Question?] = []
    var freeQuestions: [Int] = []
    var pendingQuestions = 0
    var questionByKey: [DNSCache.Key: Int] = [:]
    var questionDeadlines = DeadlineHeap()
    var byPort: [UInt16: Int] = [:]
    var byAttempt: [DNSAttemptID: Int] = [:]

    var resolutions: [Resolution?] = []
    var freeResolutions: [Int] = []
    var resolutionByName: [DNSName: Int] = [:]
    /// RFC 8305 §3's wait for the second type, per resolution.
    var graceDeadlines = DeadlineHeap()

    /// Queries to send: question slot and attempt (skipped when the attempt closed meanwhile).
    var outbox: [(question: Int, attempt: DNSAttemptID)] = []
    var outboxHead = 0

    public init(config: DNSResolverConfig, random: RandomSource, portAvailable: @escaping (UInt16) -> Bool = { _ in true }) {
        self.config = config
        self.random = random
        self.portAvailable = portAvailable
        cache = DNSCache(entryLimit: config.options.cacheEntries, byteLimit: config.options.cacheBytes)
    }

    var options: DNSResolverOptions { config.options }

    /// Entries in the cache (some may have expired and not been looked at since).
    public var cachedAnswers: Int { cache.count }
    /// Bytes the cache's entries are estimated to hold.
    public var cachedBytes: Int { cache.bytes }
    /// Questions in flight.
    public var pendingCount: Int { pendingQuestions }

    // MARK: Commands

    /// Starts resolving `name` (dotted text; an IPv4 or IPv6 address in text is its own answer) and returns
    /// the token its outcome will carry out of `pollResult`, which is where every outcome comes, even one
    /// known at once (cached, coalesced, invalid, overloaded).
    public func resolve(_ name: String, now: Instant) -> DNSToken {
        let token = DNSToken(rawValue: nextToken)
        nextToken += 1
        live.insert(token)
        if live.count > options.maximumWaiting {
            deliver(.overloaded, to: [token])
            return token
        }
        if let address = IPAddress(name) {
            deliver(.addresses([address]), to: [token])
            return token
        }
        guard let name = DNSName(name) else {
            deliver(.invalidName, to: [token])
            return token
        }
        if let r = resolutionByName[name] {
            stats.coalesced += 1
            resolutions[r]!.waiters.append(token)
            return token
        }
        var parts: [Resolution.Part] = []
        var newQuestions = 0
        for type in config.queryTypes {
            let key = DNSCache.Key(name: name, type: type)
            if let answer = cache.lookup(key, now: now) {
                stats.cacheHits += 1
                parts.append(.done(answer))
            } else if let q = questionByKey[key] {
                // Left running by an earlier resolution that answered without it.
                parts.append(.asking(question: q))
            } else {
                parts.append(.asking(question: -1))
                newQuestions += 1
            }
        }
        guard pendingQuestions + newQuestions <= options.maximumPending else {
            deliver(.overloaded, to: [token])
            return token
        }
        if parts.allSatisfy({ if case .done = $0 { true } else { false } }) {
            deliver(Self.outcome(of: parts), to: [token])
            return token
        }
        let r = freeResolutions.popLast() ?? {
            resolutions.append(nil)
            return resolutions.count - 1
        }()
        resolutions[r] = Resolution(name: name, waiters: [token], parts: parts)
        resolutionByName[name] = r
        for (i, part) in parts.enumerated() {
            guard case .asking(let existing) = part else { continue }
            let q = existing >= 0 ? existing : startQuestion(DNSCache.Key(name: name, type: config.queryTypes[i]), now: now)
            questions[q]!.resolution = r
            resolutions[r]!.parts[i] = .asking(question: q)
        }
        if parts.contains(where: { if case .done(.addresses) = $0 { true } else { false } }) {
            graceDeadlines.set(r, now.adding(options.secondFamilyWait))
        }
        return token
    }

    /// Forgets `token`: its outcome will not come out of `pollResult`. The questions go on (their answers
    /// fill the cache); nothing happens for a token already polled or unknown.
    public func cancel(_ token: DNSToken) { live.remove(token) }

    // MARK: Outputs

    /// The next token whose outcome is known, with it; nil when none is.
    public func pollResult() -> (token: DNSToken, outcome: DNSOutcome)? {
        while resultsHead < results.count {
            let (token, outcome) = results[resultsHead]
            resultsHead += 1
            if resultsHead == results.count {
                results.removeAll(keepingCapacity: true)
                resultsHead = 0
            }
            if live.remove(token) != nil { return (token, outcome) }
        }
        return nil
    }

    /// The next query to send, written at the start of `buffer` (at least `DNSQuery.maximumLength` octets),
    /// with where and how to send it; nil when none is waiting. A TCP query is the message alone: the
    /// driver puts the 2-octet length before it (RFC 1035 §4.2.2).
    public func pollTransmission(into buffer: UnsafeMutableRawBufferPointer) -> DNSTransmission? {
        precondition(buffer.count >= DNSQuery.maximumLength, "the buffer cannot hold a query")
        while outboxHead < outbox.count {
            let (q, id) = outbox[outboxHead]
            outboxHead += 1
            if outboxHead == outbox.count {
                outbox.removeAll(keepingCapacity: true)
                outboxHead = 0
            }
            guard let question = questions[q], let attempt = question.attempts.first(where: { $0.id == id }) else { continue }
            let length = DNSQuery.write(id: attempt.messageID, name: question.name, type: question.key.type, into: buffer)!
            stats.queriesSent += 1
            if attempt.port == nil { stats.queriesSentOverTCP += 1 }
            return DNSTransmission(
                attempt: id, server: config.servers[attempt.server],
                transport: attempt.port.map { .udp(sourcePort: $0) } ?? .tcp, length: length)
        }
        return nil
    }

    public func nextDeadline() -> Instant? {
        switch (questionDeadlines.next?.deadline, graceDeadlines.next?.deadline) {
        case (let a?, let b?): min(a, b)
        case (let a?, nil): a
        case (nil, let b): b
        }
    }

    // MARK: Getters

    /// Whether `port` is the source port of a UDP query in flight: a datagram to it from that query's
    /// server is the resolver's (`handleDatagram` takes it).
    public func isUDPPort(_ port: UInt16) -> Bool { byPort[port] != nil }

    /// Whether the query `attempt` is still wanted: false once its question is done (answered, given up,
    /// or answered by another attempt). A driver closes a TCP query's stream then.
    public func isAttemptOpen(_ attempt: DNSAttemptID) -> Bool { byAttempt[attempt] != nil }

    // MARK: Inputs

    /// A UDP datagram `payload` from `source` to our port `port`. True when it was the resolver's: `port` is
    /// a query's and `source` its server (then it is an answer, or ignored and counted); false, untouched,
    /// otherwise.
    @discardableResult
    public func handleDatagram(_ payload: UnsafeRawBufferPointer, from source: UDPEndpoint, to port: UInt16, now: Instant) -> Bool {
        guard let q = byPort[port], let attempt = questions[q]!.attempts.first(where: { $0.port == port }),
            config.servers[attempt.server] == source
        else { return false }
        handleResponse(payload, question: q, attempt: attempt, now: now)
        return true
    }

    /// One message read from the stream of TCP query `attempt`, without its 2-octet length. A message for
    /// a query no longer open is ignored.
    public func handleStreamMessage(_ message: UnsafeRawBufferPointer, attempt id: DNSAttemptID, now: Instant) {
        guard let q = byAttempt[id], let attempt = questions[q]!.attempts.first(where: { $0.id == id }) else { return }
        handleResponse(message, question: q, attempt: attempt, now: now)
    }

    /// Query `attempt` could not be sent (no route, a full queue) or its stream failed (refused, reset, or
    /// closed before a whole answer): its server is left out of the question, and the next is asked now.
    public func handleAttemptFailed(_ id: DNSAttemptID, now: Instant) {
        guard let q = byAttempt[id], let attempt = questions[q]!.attempts.first(where: { $0.id == id }) else { return }
        serverFailed(q, attempt, now: now)
    }

    /// Retries questions whose attempt timed out, gives up on those past `totalTimeout`, and answers
    /// resolutions whose wait for the second type is over. Early or spurious calls do nothing.
    public func handleTimeout(now: Instant) {
        var budget = questions.count + 1
        while budget > 0, let q = questionDeadlines.popExpired(now: now) {
            budget -= 1
            guard let question = questions[q] else { continue }
            if now >= question.started.adding(options.totalTimeout) {
                stats.timeouts += 1
                finish(q, question.failedServers != 0 ? .serverFailure : .timedOut, ttl: nil, now: now)
            } else {
                startAttempt(q, now: now)
            }
        }
        budget = resolutions.count + 1
        while budget > 0, let r = graceDeadlines.popExpired(now: now) {
            budget -= 1
            finishResolution(r)
        }
    }

    // MARK: Questions

    func startQuestion(_ key: DNSCache.Key, now: Instant) -> Int {
        let q = freeQuestions.popLast() ?? {
            questions.append(nil)
            return questions.count - 1
        }()
        questions[q] = Question(key: key, name: key.name, started: now)
        questionByKey[key] = q
        pendingQuestions += 1
        startAttempt(q, now: now)
        return q
    }

    /// Sends the question's next query: to `server` if given (the TC retry), else to the next server that
    /// has not failed it, over TCP once the question moved there; and arms its time-out.
    func startAttempt(_ q: Int, server: Int? = nil, now: Instant) {
        var question = questions[q]!
        let end = question.started.adding(options.totalTimeout)
        let n = config.servers.count
        var chosen = server
        if chosen == nil {
            for step in 1...n {
                let s = (question.lastServer + step) % n
                if question.failedServers & (1 << UInt64(s)) == 0 {
                    chosen = s
                    break
                }
            }
        }
        guard let s = chosen, question.attemptsMade < options.maximumAttempts else {
            // Nothing more to send: wait for the open attempts until the end.
            questionDeadlines.set(q, end)
            return
        }
        let id = DNSAttemptID(rawValue: nextAttempt)
        nextAttempt &+= 1
        var port: UInt16? = nil
        if !question.overTCP {
            guard let free = freePort() else {
                // Every draw was taken: try again at the next time-out, as if this one got no answer.
                questionDeadlines.set(q, min(now.adding(options.initialTimeout), end))
                return
            }
            port = free
            byPort[free] = q
        }
        let attempt = Attempt(id: id, server: s, messageID: UInt16(truncatingIfNeeded: random.uniform(below: 1 << 16)), port: port)
        byAttempt[id] = q
        // RFC 1035 §4.2.1: back off; here per round over every server.
        var timeout = options.initialTimeout
        for _ in 0..<(question.attemptsMade / n) where timeout < options.maximumAttemptTimeout {
            timeout = timeout > UInt64.max / 2 ? .max : timeout * 2
        }
        timeout = min(timeout, options.maximumAttemptTimeout)
        question.attempts.append(attempt)
        question.attemptsMade += 1
        question.lastServer = s
        questions[q] = question
        outbox.append((q, id))
        questionDeadlines.set(q, min(now.adding(timeout), end))
    }

    /// A random port of `sourcePorts` that no query uses and the driver allows (RFC 5452 §9.2); nil
    /// after 64 draws that all hit used ones.
    func freePort() -> UInt16? {
        let range = options.sourcePorts
        for _ in 0..<64 {
            let port = range.lowerBound + UInt16(random.uniform(below: UInt64(range.count)))
            if byPort[port] == nil && portAvailable(port) { return port }
        }
        return nil
    }

    func closeAttempt(_ q: Int, _ id: DNSAttemptID) {
        guard let i = questions[q]!.attempts.firstIndex(where: { $0.id == id }) else { return }
        let attempt = questions[q]!.attempts.remove(at: i)
        if let port = attempt.port { byPort[port] = nil }
        byAttempt[id] = nil
    }

    func closeAllAttempts(_ q: Int) {
        for attempt in questions[q]!.attempts {
            if let port = attempt.port { byPort[port] = nil }
            byAttempt[attempt.id] = nil
        }
        questions[q]!.attempts.removeAll()
    }

    /// The server of `attempt` cannot help with question `q`: leave it out, ask the next one now, or give
    /// up when none is left.
    func serverFailed(_ q: Int, _ attempt: Attempt, now: Instant) {
        closeAttempt(q, attempt.id)
        questions[q]!.failedServers |= 1 << UInt64(attempt.server)
        if questions[q]!.failedServers == (config.servers.count == 64 ? .max : (1 << UInt64(config.servers.count)) - 1) {
            finish(q, .serverFailure, ttl: nil, now: now)
        } else {
            startAttempt(q, now: now)
        }
    }

    /// Question `q` has its answer: cache it (for `ttl` seconds, capped; nil: not cached), close its
    /// queries, and tell its resolution.
    func finish(_ q: Int, _ answer: DNSAnswer, ttl: UInt32?, now: Instant) {
        let question = questions[q]!
        if let ttl {
            let cap = answer.addresses == nil ? options.maximumNegativeTTL : options.maximumTTL
            cache.insert(question.key, answer, ttl: min(ttl, cap), now: now)
        }
        closeAllAttempts(q)
        questionDeadlines.set(q, nil)
        questionByKey[question.key] = nil
        questions[q] = nil
        freeQuestions.append(q)
        pendingQuestions -= 1
        guard let r = question.resolution, var resolution = resolutions[r],
            let i = resolution.parts.firstIndex(where: { if case .asking(q) = $0 { true } else { false } })
        else { return }
        resolution.parts[i] = .done(answer)
        resolutions[r] = resolution
        if resolution.parts.allSatisfy({ if case .done = $0 { true } else { false } }) {
            finishResolution(r)
        } else if answer.addresses != nil && graceDeadlines.deadline(of: r) == nil {
            graceDeadlines.set(r, now.adding(options.secondFamilyWait))
        }
    }

    /// Answers the callers of resolution `r` with what its questions have so far; questions still asking go
    /// on without it.
    func finishResolution(_ r: Int) {
        guard let resolution = resolutions[r] else { return }
        for part in resolution.parts {
            if case .asking(let q) = part { questions[q]?.resolution = nil }
        }
        graceDeadlines.set(r, nil)
        resolutionByName[resolution.name] = nil
        resolutions[r] = nil
        freeResolutions.append(r)
        deliver(Self.outcome(of: resolution.parts), to: resolution.waiters)
    }

    /// The outcome of a name from its types' answers: any addresses (in the order of the types); else
    /// NXDOMAIN if either said so; else a failure; else no data.
    static func outcome(of parts: [Resolution.Part]) -> DNSOutcome {
        var addresses: [IPAddress] = []
        var answers: [DNSAnswer] = []
        for part in parts {
            guard case .done(let answer) = part else { continue }
            answers.append(answer)
            if let list = answer.addresses { addresses += list }
        }
        if !addresses.isEmpty { return .addresses(addresses) }
        if answers.contains(.nxdomain) { return .nxdomain }
        if answers.contains(.serverFailure) { return .serverFailure }
        if answers.contains(.timedOut) { return .timedOut }
        return .noData
    }

    func deliver(_ outcome: DNSOutcome, to tokens: [DNSToken]) {
        for token in tokens where live.contains(token) { results.append((token, outcome)) }
    }

    // MARK: Answers

    /// What an answer to question `q` says.
    enum Reading {
        case addresses([IPAddress], ttl: UInt32)
        /// NXDOMAIN or NODATA, cached for `ttl` (nil: no SOA, not cached).
        case negative(DNSAnswer, ttl: UInt32?)
        /// The chain ended at `name` without an address or a negative answer: ask for it.
        case follow(DNSName, ttl: UInt32, cnames: Int)
        /// The server cannot help: a referral, or a chain longer than allowed.
        case failure
    }

    func handleResponse(_ bytes: UnsafeRawBufferPointer, question q: Int, attempt: Attempt, now: Instant) {
        let question = questions[q]!
        guard let header = DNSHeader(bytes), header.isResponse, header.opcode == 0, header.id == attempt.messageID,
            let message = try? DNSMessage(validating: bytes)
        else {
            stats.responsesIgnored += 1
            return
        }
        let code = header.responseCode
        let failure = code != .noError && code != .nameError
        // RFC 5452 §9.1: the question must be ours. Some servers leave it out of a failure (FORMERR, say).
        if header.questionCount == 1 {
            let asked = message.question(0)
            guard asked.type == question.key.type, asked.questionClass == .internet, message.name(at: asked.nameOffset, equals: question.name)
            else {
                stats.responsesIgnored += 1
                return
            }
        } else if !(header.questionCount == 0 && failure) {
            stats.responsesIgnored += 1
            return
        }
        if header.isTruncated && attempt.port != nil {
            // RFC 7766 §5: ask the same server again over TCP.
            stats.truncatedAnswers += 1
            closeAttempt(q, attempt.id)
            questions[q]!.overTCP = true
            startAttempt(q, server: attempt.server, now: now)
            return
        }
        if failure {
            serverFailed(q, attempt, now: now)
            return
        }
        switch read(message, question) {
        case .addresses(let list, let ttl):
            finish(q, .addresses(list), ttl: ttl, now: now)
        case .negative(let answer, let ttl):
            finish(q, answer, ttl: ttl, now: now)
        case .failure:
            serverFailed(q, attempt, now: now)
        case .follow(let target, let ttl, let cnames):
            // A new question for the chain's end, within the first one's total time.
            closeAllAttempts(q)
            var next = questions[q]!
            next.name = target
            next.chainTTL = ttl
            next.cnames = cnames
            next.attemptsMade = 0
            next.lastServer = -1
            next.failedServers = 0
            next.overTCP = false
            questions[q] = next
            startAttempt(q, now: now)
        }
    }

    /// Follows the answer section from the name asked along CNAMEs (RFC 1034 §3.6.2, §5.3.3) to addresses
    /// of the type asked, or reads the negative answer for the chain's end (RFC 2308 §2.1, §2.2, §5).
    func read(_ message: DNSMessage, _ question: Question) -> Reading {
        var current = question.name
        var ttl = question.chainTTL
        var cnames = question.cnames
        while true {
            var addresses: [IPAddress] = []
            var addressTTL = UInt32.max
            var next: (DNSName, UInt32)? = nil
            for record in message.records(.answer) where record.recordClass == .internet {
                guard record.type == question.key.type || (record.type == .cname && next == nil),
                    message.name(at: record.nameOffset, equals: current)
                else { continue }
                if record.type == .cname {
                    next = (message.canonicalName(of: record), record.ttl)
                } else {
                    addresses.append(message.address(of: record))
                    addressTTL = min(addressTTL, record.ttl)
                }
            }
            if !addresses.isEmpty { return .addresses(addresses, ttl: min(ttl, addressTTL)) }
            guard let (target, cnameTTL) = next else { break }
            cnames += 1
            guard cnames <= options.maximumCNAMEs else { return .failure }
            ttl = min(ttl, cnameTTL)
            current = target
        }
        // RFC 2308 §5: a negative answer lives for the SOA's TTL and MINIMUM, whichever is less.
        var soaTTL: UInt32? = nil
        var referral = false
        for record in message.records(.authority) where record.recordClass == .internet {
            if record.type == .soa && soaTTL == nil { soaTTL = min(record.ttl, message.soaMinimum(of: record)) }
            if record.type == .ns { referral = true }
        }
        let negativeTTL = soaTTL.map { min($0, ttl) }
        if message.header.responseCode == .nameError { return .negative(.nxdomain, ttl: negativeTTL) }
        if soaTTL != nil { return .negative(.noData, ttl: negativeTTL) }
        if current != question.name { return .follow(current, ttl: ttl, cnames: cnames) }
        // RFC 2308 §2.2: NS records and no SOA is a referral, not NODATA: this server does not recurse.
        if referral { return .failure }
        return .negative(.noData, ttl: nil)
    }
}

/// A query for its driver to send: `length` octets written at the start of the buffer given to
/// `pollTransmission`, for `server`, by `transport`.
public struct DNSTransmission: Equatable, Sendable {
    public enum Transport: Equatable, Sendable {
        /// A datagram from this UDP source port of ours.
        case udp(sourcePort: UInt16)
        /// A new TCP stream to the server: the driver writes the 2-octet length and the query, reads one
        /// answer, and reports it (`handleStreamMessage`) or the stream's failure (`handleAttemptFailed`)
        /// with `attempt`.
        case tcp
    }

    public var attempt: DNSAttemptID
    public var server: UDPEndpoint
    public var transport: Transport
    public var length: Int
}
