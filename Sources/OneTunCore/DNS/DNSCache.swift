/// What one question (a name and a type) came to, as the resolver keeps it per type.
enum DNSAnswer: Equatable, Sendable {
    case addresses([IPAddress])
    /// NXDOMAIN (RFC 2308 §2.1).
    case nxdomain
    /// NOERROR without the type asked for (RFC 2308 §2.2).
    case noData
    case serverFailure
    case timedOut

    var addresses: [IPAddress]? {
        if case .addresses(let list) = self { return list }
        return nil
    }
}

/// The resolver's cache of answers, by name and type: positive ones for their TTL, negative ones (NXDOMAIN,
/// NODATA) for the TTL RFC 2308 §5 gives them; the resolver caps both before inserting. Bounded in entries
/// and in bytes (an estimate: the name, the addresses and a fixed overhead per entry); when full, the least
/// recently used entry goes. Expired entries are dropped when looked up or when they reach the end of the
/// LRU list, so no timer is needed: what they hold still counts against the bounds.
struct DNSCache {
    struct Key: Hashable {
        var name: DNSName
        var type: DNSType
    }

    struct Entry {
        var key: Key
        var answer: DNSAnswer
        var expires: Instant
        var cost: Int
        // LRU list: head is the least recently used.
        var prev: Int32 = -1
        var next: Int32 = -1
    }

    let entryLimit: Int
    let byteLimit: Int
    /// Bytes an entry costs beyond its name and addresses (the entry, the dictionary slot).
    static let overhead = 96

    var entries: [Entry] = []
    var freeEntries: [Int32] = []
    var byKey: [Key: Int32] = [:]
    var head: Int32 = -1
    var tail: Int32 = -1
    private(set) var bytes = 0

    init(entryLimit: Int, byteLimit: Int) {
        self.entryLimit = entryLimit
        self.byteLimit = byteLimit
    }

    var count: Int { byKey.count }

    /// The answer cached for `key` that has not expired at `now`; looking marks it used.
    mutating func lookup(_ key: Key, now: Instant) -> DNSAnswer? {
        guard let e = byKey[key] else { return nil }
        guard now < entries[Int(e)].expires else {
            remove(e)
            return nil
        }
        unlink(e)
        append(e)
        return entries[Int(e)].answer
    }

    /// Caches `answer` for `ttl` seconds from `now`, replacing what `key` held. A zero TTL caches nothing
    /// (RFC 1035 §3.2.1: use the answer once, do not keep it), and drops the old entry.
    mutating func insert(_ key: Key, _ answer: DNSAnswer, ttl: UInt32, now: Instant) {
        if let e = byKey[key] { remove(e) }
        let cost = key.name.wire.count + (answer.addresses?.count ?? 0) * MemoryLayout<IPAddress>.stride + Self.overhead
        guard ttl > 0, entryLimit > 0, cost <= byteLimit else { return }
        while head >= 0 && (byKey.count >= entryLimit || bytes + cost > byteLimit) { remove(head) }
        let entry = Entry(key: key, answer: answer, expires: now.adding(UInt64(ttl) * Nanos.second), cost: cost)
        let e: Int32
        if let reuse = freeEntries.popLast() {
            e = reuse
            entries[Int(e)] = entry
        } else {
            e = Int32(entries.count)
            entries.append(entry)
        }
        byKey[key] = e
        bytes += cost
        append(e)
    }

    mutating func remove(_ e: Int32) {
        unlink(e)
        byKey[entries[Int(e)].key] = nil
        bytes -= entries[Int(e)].cost
        // Give the addresses back now; the slot waits for reuse.
        entries[Int(e)].answer = .noData
        freeEntries.append(e)
    }

    mutating func append(_ e: Int32) {
        entries[Int(e)].prev = tail
        entries[Int(e)].next = -1
        if tail >= 0 { entries[Int(tail)].next = e } else { head = e }
        tail = e
    }

    mutating func unlink(_ e: Int32) {
        let (p, n) = (entries[Int(e)].prev, entries[Int(e)].next)
        if p >= 0 { entries[Int(p)].next = n } else { head = n }
        if n >= 0 { entries[Int(n)].prev = p } else { tail = p }
    }
}
