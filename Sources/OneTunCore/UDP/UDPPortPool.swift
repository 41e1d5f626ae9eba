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
///   entry, and two intrusive doubly linked LRU lists (all mappings, and each IP's). A datagram of a known
///   client costs one hash lookup on the way out (`port(for:)`) and none on the way back (`client(for:)`):
///   each entry knows its IP's list by index, so only making a mapping, or removing an IP's last one,
///   touches the table of IPs.
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
        /// The index of this IP's list in `addressLists`.
        var list: Int32
    }

    struct AddressList {
        var count = 0
        var head: Int32 = -1
        var tail: Int32 = -1
    }

    @exclusivity(unchecked) var entries: [Entry] = []
    @exclusivity(unchecked) var freeEntries: [Int32] = []
    @exclusivity(unchecked) var byClient: [UDPEndpoint: Int32] = [:]
    /// Each client IP's LRU list, by index; `listOfAddress` finds them, and only new mappings ask it.
    @exclusivity(unchecked) var addressLists: [AddressList] = []
    @exclusivity(unchecked) var freeAddressLists: [Int32] = []
    @exclusivity(unchecked) var listOfAddress: [IPAddress: Int32] = [:]
    /// Per port of `range`: the entry holding it, `free`, or `reservedPort`.
    @exclusivity(unchecked) var entryOfPort: [Int32] = []
    static let free: Int32 = -1
    static let reservedPort: Int32 = -2
    @exclusivity(unchecked) var reservedPorts: Set<UInt16> = []
    @exclusivity(unchecked) var head: Int32 = -1
    @exclusivity(unchecked) var tail: Int32 = -1
    @exclusivity(unchecked) public private(set) var reclaimed = 0
    @exclusivity(unchecked) public private(set) var expired = 0

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

    /// A free port taken out of the pool until `release(_:)`, for a service that answers on it for a while
    /// (a SOCKS5 UDP relay inside the tunnel); nil when the pool would be left without a free port.
    public func reserveFree() -> UInt16? {
        if entryOfPort.isEmpty { allocateTables() }
        guard byClient.count + 1 < capacity else { return nil }
        let port = freePort()
        reservedPorts.insert(port)
        entryOfPort[Int(port - range.lowerBound)] = Self.reservedPort
        return port
    }

    /// Gives a port `reserveFree()` took back to the pool (not for `reserve(_:)`'s, which are for good).
    public func release(_ port: UInt16) {
        guard reservedPorts.remove(port) != nil, !entryOfPort.isEmpty else { return }
        entryOfPort[Int(port - range.lowerBound)] = Self.free
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
        if let l = listOfAddress[client.address], addressLists[Int(l)].count >= perAddressLimit {
            let oldest = addressLists[Int(l)].head
            port = entries[Int(oldest)].port
            remove(oldest)
            reclaimed += 1
        } else if byClient.count >= capacity {
            port = entries[Int(head)].port
            remove(head)
            reclaimed += 1
        } else {
            port = freePort()
        }
        // After any reclaiming, which may have emptied and freed this IP's list.
        let entry = Entry(client: client, port: port, lastUsed: now, list: list(of: client.address))
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
        if addressLists[Int(entry.list)].count == 0 {
            listOfAddress[entry.client.address] = nil
            freeAddressLists.append(entry.list)
        }
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

    /// The index of `address`'s list, made (empty) if it has none.
    func list(of address: IPAddress) -> Int32 {
        if let l = listOfAddress[address] { return l }
        let l: Int32
        if let reuse = freeAddressLists.popLast() {
            l = reuse
            addressLists[Int(l)] = AddressList()
        } else {
            l = Int32(addressLists.count)
            addressLists.append(AddressList())
        }
        listOfAddress[address] = l
        return l
    }

    func appendAddress(_ e: Int32) {
        let l = Int(entries[Int(e)].list)
        let tail = addressLists[l].tail
        entries[Int(e)].ipPrev = tail
        entries[Int(e)].ipNext = -1
        if tail >= 0 { entries[Int(tail)].ipNext = e } else { addressLists[l].head = e }
        addressLists[l].tail = e
        addressLists[l].count += 1
    }

    /// Takes `e` out of its IP's list; an emptied list stays allocated until `remove` frees it.
    func unlinkAddress(_ e: Int32) {
        let l = Int(entries[Int(e)].list)
        let (p, n) = (entries[Int(e)].ipPrev, entries[Int(e)].ipNext)
        if p >= 0 { entries[Int(p)].ipNext = n } else { addressLists[l].head = n }
        if n >= 0 { entries[Int(n)].ipPrev = p } else { addressLists[l].tail = p }
        addressLists[l].count -= 1
    }
}
