/// A UDP socket address: an IP address and a port.
public struct UDPEndpoint: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16

    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    public var description: String { address.isV4 ? "\(address):\(port)" : "[\(address)]:\(port)" }
}

/// onetun's virtual port pool for UDP forwards: each local client address gets a virtual source port
/// inside the tunnel, kept while traffic flows in either direction.
///
/// - A mapping idle for `idleTimeout` (60 s) expires; expiry runs off the injected clock
///   (`nextDeadline` / `expire(now:)`), never by scanning.
/// - When every port is taken, the least recently used mapping is reclaimed.
/// - One client IP holds at most `perAddressLimit` (100) ports; past that its own least recently used
///   mapping is reclaimed, so one client cannot starve the others.
/// - Lookups both ways and every update are O(1): a dictionary from client to entry, an array from port to
///   entry, and two intrusive doubly linked LRU lists (all mappings, and each IP's).
/// - Ports are handed out in a random order (as onetun does): a random port, or the next free one after it.
/// - `reserve(_:)` keeps a port out of the pool: a remote UDP forward listening on it must not receive the
///   replies meant for a local client.
public final class UDPPortPool {
    public let range: ClosedRange<UInt16>
    public let idleTimeout: UInt64
    public let perAddressLimit: Int
    let random: RandomSource

    struct Entry {
        var client: UDPEndpoint
        var port: UInt16
        var lastUsed: Instant
        // Global LRU list (head = least recently used) and the same IP's list.
        var prev: Int32 = -1
        var next: Int32 = -1
        var ipPrev: Int32 = -1
        var ipNext: Int32 = -1
    }

    struct AddressList {
        var count = 0
        var head: Int32 = -1
        var tail: Int32 = -1
    }

    var entries: [Entry] = []
    var freeEntries: [Int32] = []
    var byClient: [UDPEndpoint: Int32] = [:]
    var byAddress: [IPAddress: AddressList] = [:]
    /// Per port of `range`: the entry holding it, `free`, or `reservedPort`.
    var entryOfPort: [Int32] = []
    static let free: Int32 = -1
    static let reservedPort: Int32 = -2
    var reservedPorts: Set<UInt16> = []
    var head: Int32 = -1
    var tail: Int32 = -1
    public private(set) var reclaimed = 0
    public private(set) var expired = 0

    public init(
        range: ClosedRange<UInt16> = 1000...60999, idleTimeout: UInt64 = 60 * Nanos.second, perAddressLimit: Int = 100,
        random: RandomSource
    ) {
        precondition(perAddressLimit > 0, "a client needs at least one port")
        self.range = range
        self.idleTimeout = idleTimeout
        self.perAddressLimit = perAddressLimit
        self.random = random
    }

    public var count: Int { byClient.count }
    /// Ports that can be handed out: the range less the reserved ports.
    public var capacity: Int { range.count - reservedPorts.count }

    /// Keeps `port` out of the pool for good; a client holding it now loses the mapping (its next datagram
    /// gets another port). Returns false, reserving nothing, for a port outside the range, or when it is the
    /// last port the pool could hand out.
    @discardableResult
    public func reserve(_ port: UInt16) -> Bool {
        guard range.contains(port) else { return false }
        if reservedPorts.contains(port) { return true }
        guard capacity > 1 else { return false }
        reservedPorts.insert(port)
        if !entryOfPort.isEmpty {
            let i = Int(port - range.lowerBound)
            remove(entryOfPort[i])
            entryOfPort[i] = Self.reservedPort
        }
        return true
    }

    /// The virtual port of `client`, assigning one if it has none; marks the mapping used at `now`.
    public func port(for client: UDPEndpoint, now: Instant) -> UInt16 {
        if let e = byClient[client] {
            touch(e, now)
            return entries[Int(e)].port
        }
        if entryOfPort.isEmpty { allocateTables() }
        // This IP at its limit gives up its own least recently used port; a full pool its oldest overall.
        // Reclaiming hands the reclaimed port to the new client.
        var port: UInt16
        if let list = byAddress[client.address], list.count >= perAddressLimit {
            port = entries[Int(list.head)].port
            remove(list.head)
            reclaimed += 1
        } else if byClient.count >= capacity {
            port = entries[Int(head)].port
            remove(head)
            reclaimed += 1
        } else {
            port = freePort()
        }
        let entry = Entry(client: client, port: port, lastUsed: now)
        let e: Int32
        if let reuse = freeEntries.popLast() {
            e = reuse
            entries[Int(e)] = entry
        } else {
            e = Int32(entries.count)
            entries.append(entry)
        }
        byClient[client] = e
        entryOfPort[Int(port - range.lowerBound)] = e
        appendGlobal(e)
        appendAddress(e)
        return port
    }

    /// The client that owns virtual `port`, marking the mapping used (a reply keeps it alive too).
    public func client(for port: UInt16, now: Instant) -> UDPEndpoint? {
        guard range.contains(port), !entryOfPort.isEmpty else { return nil }
        let e = entryOfPort[Int(port - range.lowerBound)]
        guard e >= 0 else { return nil }
        touch(e, now)
        return entries[Int(e)].client
    }

    /// When the least recently used mapping will expire; nil when there is none.
    public func nextDeadline() -> Instant? {
        head < 0 ? nil : entries[Int(head)].lastUsed.adding(idleTimeout)
    }

    /// Expires every mapping idle for `idleTimeout`.
    public func expire(now: Instant) {
        var budget = entries.count
        while budget > 0, head >= 0, entries[Int(head)].lastUsed.adding(idleTimeout) <= now {
            budget -= 1
            remove(head)
            expired += 1
        }
    }

    // MARK: Lists

    func allocateTables() {
        entryOfPort = [Int32](repeating: Self.free, count: range.count)
        for port in reservedPorts { entryOfPort[Int(port - range.lowerBound)] = Self.reservedPort }
    }

    /// A random free port: a few random draws (almost always enough while the pool is not nearly full),
    /// then the next free port after a random start. There is one: callers reclaim first when full.
    func freePort() -> UInt16 {
        let n = range.count
        for _ in 0..<8 {
            let i = Int(random.uniform(below: UInt64(n)))
            if entryOfPort[i] == Self.free { return range.lowerBound + UInt16(i) }
        }
        var i = Int(random.uniform(below: UInt64(n)))
        for _ in 0..<n {
            if entryOfPort[i] == Self.free { return range.lowerBound + UInt16(i) }
            i = i + 1 == n ? 0 : i + 1
        }
        preconditionFailure("UDPPortPool: no free port after reclaiming")
    }

    func touch(_ e: Int32, _ now: Instant) {
        entries[Int(e)].lastUsed = now
        guard e != tail else { return }
        unlinkGlobal(e)
        appendGlobal(e)
        unlinkAddress(e)
        appendAddress(e)
    }

    func remove(_ e: Int32) {
        guard e >= 0 else { return }
        unlinkGlobal(e)
        unlinkAddress(e)
        let entry = entries[Int(e)]
        byClient[entry.client] = nil
        entryOfPort[Int(entry.port - range.lowerBound)] = Self.free
        freeEntries.append(e)
    }

    func appendGlobal(_ e: Int32) {
        entries[Int(e)].prev = tail
        entries[Int(e)].next = -1
        if tail >= 0 { entries[Int(tail)].next = e } else { head = e }
        tail = e
    }

    func unlinkGlobal(_ e: Int32) {
        let (p, n) = (entries[Int(e)].prev, entries[Int(e)].next)
        if p >= 0 { entries[Int(p)].next = n } else { head = n }
        if n >= 0 { entries[Int(n)].prev = p } else { tail = p }
    }

    func appendAddress(_ e: Int32) {
        let address = entries[Int(e)].client.address
        var list = byAddress[address] ?? AddressList()
        entries[Int(e)].ipPrev = list.tail
        entries[Int(e)].ipNext = -1
        if list.tail >= 0 { entries[Int(list.tail)].ipNext = e } else { list.head = e }
        list.tail = e
        list.count += 1
        byAddress[address] = list
    }

    func unlinkAddress(_ e: Int32) {
        let address = entries[Int(e)].client.address
        guard var list = byAddress[address] else { return }
        let (p, n) = (entries[Int(e)].ipPrev, entries[Int(e)].ipNext)
        if p >= 0 { entries[Int(p)].ipNext = n } else { list.head = n }
        if n >= 0 { entries[Int(n)].ipPrev = p } else { list.tail = p }
        list.count -= 1
        byAddress[address] = list.count == 0 ? nil : list
    }
}
