/// Every TCP connection of one interface: demultiplexing by four-tuple, listening ports, RFC 6528
/// initial sequence numbers, one deadline over all connections (an indexed heap, O(log n) per update, no
/// scan of every connection per tick), and a queue of the connections that may have something to send.
@_spi(OneTunInternals) public final class TCPStack {
    struct FourTuple: Hashable {
        var local: IPAddress
        var localPort: UInt16
        var remote: IPAddress
        var remotePort: UInt16
    }

    struct Slot {
        var tuple: FourTuple
        var connection: TCPConnection
    }

    public let config: TCPConfig
    let random: RandomSource
    /// Every connection's buffers together, against `config.bufferMemoryLimit`.
    public let budget: MemoryBudget
    /// Connections that may sit idle holding buffer memory, in the order they were last looked at, each
    /// once: when one has seen no segment for `idleRelease`, its empty buffers are given back. Each entry
    /// is handled once per `idleRelease` at most, so the work is bounded by the connections that move.
    var idleQueue: [(id: Int, since: Instant)] = []
    var idleQueueHead = 0
    var idleQueued: [Bool] = []
    static let idleRelease: UInt64 = Nanos.second
    /// The secret of RFC 6528's F(); fixed for the stack's life.
    let isnSecret: Key32
    @exclusivity(unchecked) var slots: [Slot?] = []
    @exclusivity(unchecked) var freeSlots: [Int] = []
    @exclusivity(unchecked) var byTuple: [FourTuple: Int] = [:]
    @exclusivity(unchecked) var deadlines = DeadlineHeap()
    /// Connections to poll for output, each at most once (`queued`).
    @exclusivity(unchecked) var ready: [Int] = []
    @exclusivity(unchecked) var readyHead = 0
    @exclusivity(unchecked) var queued: [Bool] = []
    @exclusivity(unchecked) var listening: Set<UInt16> = []
    /// Connections a listener made that the application has not accepted yet, at most; and, separately,
    /// handshakes in progress (SYN-RECEIVED) at most. Linux keeps the same two queues (somaxconn and
    /// max_syn_backlog). A SYN past the accept queue's limit is dropped (the client retries); past the
    /// half-open limit it pushes out the oldest half-open connection (`handshakeOrder`).
    public let acceptBacklog: Int
    @exclusivity(unchecked) public private(set) var synsDropped = 0
    /// Established connections waiting for `accept`, from `acceptHead` on.
    @exclusivity(unchecked) var acceptQueue: [Int] = []
    @exclusivity(unchecked) var acceptHead = 0
    /// Passive opens still in SYN-RECEIVED: not the application's until the handshake completes, so a
    /// peer that sends SYNs and never completes them costs a bounded table and no driver resources.
    @exclusivity(unchecked) var handshaking: Set<Int> = []
    /// The same, oldest first, each id with the serial of its handshake (an id released and reused is
    /// another handshake; its old place in the queue no longer counts). When the table is full a new SYN
    /// pushes out the oldest half-open connection, silently (its source may be forged): a SYN flood then
    /// only shortens how long a half-open connection may wait for its ACK, to the time the flood takes
    /// to send `acceptBacklog` SYNs, and a real client, whose ACK follows its SYN by one round trip,
    /// still gets through. Linux's SYN cookies buy the same; this needs no change to the handshake.
    var handshakeOrder: [(id: Int, serial: UInt32)] = []
    var handshakeOrderHead = 0
    var handshakeSerial: [UInt32] = []
    var nextHandshakeSerial: UInt32 = 0
    /// Half-open connections pushed out by newer SYNs (a SYN flood, or just more clients than the table).
    public private(set) var halfOpenEvicted = 0
    /// Connections whose state input or timers changed, for the application (`pollEvent`), each once.
    @exclusivity(unchecked) var events: [Int] = []
    @exclusivity(unchecked) var eventHead = 0
    @exclusivity(unchecked) var eventQueued: [Bool] = []

    public init(config: TCPConfig = TCPConfig(), acceptBacklog: Int = 1024, random: RandomSource) {
        self.config = config
        self.acceptBacklog = acceptBacklog
        self.random = random
        budget = MemoryBudget(limit: config.bufferMemoryLimit)
        var secret = Key32.zero
        secret.withUnsafeMutableBytes { random.fill($0) }
        isnSecret = secret
    }

    deinit {
        // The application may still hold a connection: it must not reach a stack that is gone.
        for slot in slots { slot?.connection.owner = nil }
    }

    public var count: Int { byTuple.count }

    public func connection(_ id: Int) -> TCPConnection { slots[id]!.connection }

    /// Connection `id`'s addresses: ours and the other end's.
    public func addresses(of id: Int) -> (local: IPAddress, remote: IPAddress) {
        let tuple = slots[id]!.tuple
        return (tuple.local, tuple.remote)
    }

    // MARK: Opening

    /// RFC 6528 §3: ISN = M + F(localip, localport, remoteip, remoteport, secretkey), M a 4 µs clock.
    func initialSequenceNumber(_ tuple: FourTuple, now: Instant) -> UInt32 {
        var state = isnSecret.withUnsafeBytes { Blake2s(outputLength: 4, key: $0) }
        func add(_ address: IPAddress) {
            switch address {
            case .v4(let a): withUnsafeBytes(of: a.rawValue) { state.update($0) }
            case .v6(let a): withUnsafeBytes(of: (a.high, a.low)) { state.update($0) }
            }
        }
        add(tuple.local)
        withUnsafeBytes(of: tuple.localPort) { state.update($0) }
        add(tuple.remote)
        withUnsafeBytes(of: tuple.remotePort) { state.update($0) }
        var f: UInt32 = 0
        withUnsafeMutableBytes(of: &f) { state.finalize(into: $0) }
        return UInt32(truncatingIfNeeded: now.nanoseconds / 4_000) &+ f
    }

    /// The configuration for one connection: IPv6's header is 20 bytes longer, so its MSS is 20 smaller.
    func config(for tuple: FourTuple) -> TCPConfig {
        guard tuple.local.isV6 else { return config }
        var c = config
        c.mss -= 20
        return c
    }

    func insert(_ connection: TCPConnection, _ tuple: FourTuple) -> Int {
        let id: Int
        if let reuse = freeSlots.popLast() {
            id = reuse
            slots[id] = Slot(tuple: tuple, connection: connection)
        } else {
            id = slots.count
            slots.append(Slot(tuple: tuple, connection: connection))
            queued.append(false)
            eventQueued.append(false)
            handshakeSerial.append(0)
            idleQueued.append(false)
        }
        byTuple[tuple] = id
        connection.owner = self
        connection.ownerID = id
        markReady(id)
        return id
    }

    /// Active open to `remote`:`port` from an ephemeral port of `local`; nil when no port is free.
    public func connect(from local: IPAddress, to remote: IPAddress, port: UInt16, now: Instant) -> Int? {
        for _ in 0..<64 {
            let localPort = UInt16(49_152 + random.uniform(below: 16_384))
            let tuple = FourTuple(local: local, localPort: localPort, remote: remote, remotePort: port)
            guard byTuple[tuple] == nil else { continue }
            let connection = TCPConnection(
                localPort: localPort, remotePort: port, iss: initialSequenceNumber(tuple, now: now), config: config(for: tuple),
                budget: budget, now: now)
            return insert(connection, tuple)
        }
        return nil
    }

    /// Accepts connections to `port` on any of the interface's addresses.
    public func listen(port: UInt16) { listening.insert(port) }

    /// The next connection a listener accepted, if any.
    public func accept() -> Int? {
        guard acceptHead < acceptQueue.count else { return nil }
        let id = acceptQueue[acceptHead]
        acceptHead += 1
        if acceptHead == acceptQueue.count {
            acceptQueue.removeAll(keepingCapacity: true)
            acceptHead = 0
        }
        return id
    }

    /// Input or a timer moved connection `id`: poll its output, tell the application, and settle a
    /// handshake in progress.
    func changed(_ id: Int) {
        markReady(id)
        notify(id)
        handshakeProgressed(id)
    }

    /// A passive open left SYN-RECEIVED: synchronized, it joins the accept queue (with an event, as it may
    /// hold data already); reset or timed out, nobody will accept it, so it is released here.
    func handshakeProgressed(_ id: Int) {
        guard handshaking.contains(id), let connection = slots[id]?.connection, connection.state != .synReceived else { return }
        handshaking.remove(id)
        if connection.hasEnded {
            release(id)
        } else {
            acceptQueue.append(id)
            notify(id)
        }
    }

    /// Forgets a connection the application is done with (closing or aborting it first if needed).
    public func release(_ id: Int) {
        guard let slot = slots[id] else { return }
        if slot.connection.state != .closed && slot.connection.state != .timeWait { slot.connection.abort() }
        // A connection still owing a RST or in TIME-WAIT stays until its timers are done.
        if slot.connection.isClosed {
            remove(id)
        } else {
            releasedEarly.insert(id)
            markReady(id)
        }
    }

    @exclusivity(unchecked) var releasedEarly: Set<Int> = []

    func remove(_ id: Int) {
        guard let slot = slots[id] else { return }
        slot.connection.owner = nil
        byTuple[slot.tuple] = nil
        slots[id] = nil
        deadlines.set(id, nil)
        releasedEarly.remove(id)
        handshaking.remove(id)
        freeSlots.append(id)
        removedSinceCompaction += 1
    }

    /// Buffer bytes idle connections gave back, in total.
    public private(set) var idleBytesReleased = 0

    /// Connections removed since the last `compactTables`.
    var removedSinceCompaction = 0

    /// True after a real drop: more connections removed since the last `compactTables` than are left
    /// (at least 64). Connections in TIME-WAIT leave the tables after their client has gone, so a driver
    /// that compacts only when its clients close would miss them.
    public var wantsCompaction: Bool { removedSinceCompaction >= max(64, byTuple.count) }

    // MARK: Input

    /// Hands a segment to its connection, or to a listener for a SYN. False when nothing takes it: the
    /// caller answers with RST (RFC 9293 §3.10.7.1).
    public func receive(_ ip: IPPacket, _ segment: TCPSegment, now: Instant) -> Bool {
        let tuple = FourTuple(local: ip.destination, localPort: segment.destinationPort, remote: ip.source, remotePort: segment.sourcePort)
        let repr = TCPRepr.parse(segment)
        if let id = byTuple[tuple] {
            slots[id]!.connection.handleSegment(repr, payload: segment.payload, now: now)
            changed(id)
            return true
        }
        guard listening.contains(segment.destinationPort), repr.flags.contains(.syn), !repr.flags.contains(.ack) else {
            return false
        }
        guard acceptQueue.count - acceptHead < acceptBacklog else {
            // The application is not accepting: drop the SYN, as Linux does; the client retries after
            // its RTO.
            synsDropped += 1
            return true
        }
        guard let connection = TCPConnection(
            accepting: repr, iss: initialSequenceNumber(tuple, now: now), config: config(for: tuple), budget: budget, now: now)
        else { return false }
        if handshaking.count >= acceptBacklog { evictOldestHalfOpen() }
        let id = insert(connection, tuple)
        handshaking.insert(id)
        nextHandshakeSerial &+= 1
        handshakeSerial[id] = nextHandshakeSerial
        handshakeOrder.append((id, nextHandshakeSerial))
        if handshakeOrder.count - handshakeOrderHead > 4 * max(handshaking.count, 16) {
            // Mostly handshakes that completed: keep the live ones (amortized over the SYNs that came).
            handshakeOrder = handshakeOrder[handshakeOrderHead...].filter { handshaking.contains($0.id) && handshakeSerial[$0.id] == $0.serial }
            handshakeOrderHead = 0
        }
        return true
    }

    /// Forgets the oldest connection still in SYN-RECEIVED, without a RST (see `handshakeOrder`).
    func evictOldestHalfOpen() {
        while handshakeOrderHead < handshakeOrder.count {
            let (id, serial) = handshakeOrder[handshakeOrderHead]
            handshakeOrderHead += 1
            if handshaking.contains(id) && handshakeSerial[id] == serial {
                remove(id)
                halfOpenEvicted += 1
                break
            }
        }
        // Entries of handshakes that ended are skipped lazily; the queue is compacted as it drains.
        if handshakeOrderHead >= 64 && handshakeOrderHead * 2 >= handshakeOrder.count {
            handshakeOrder.removeFirst(handshakeOrderHead)
            handshakeOrderHead = 0
        }
    }

    /// An ICMP destination-unreachable error quoted a segment of this four-tuple with `sequence`.
    func unreachable(local: IPAddress, localPort: UInt16, remote: IPAddress, remotePort: UInt16, sequence: UInt32) {
        let tuple = FourTuple(local: local, localPort: localPort, remote: remote, remotePort: remotePort)
        guard let id = byTuple[tuple], slots[id]!.connection.destinationUnreachable(quoting: sequence) else { return }
        changed(id)
    }

    /// Connection `id` may have output now (the application's commands say so themselves; a segment
    /// or a timer through `changed`).
    public func markReady(_ id: Int) {
        guard !queued[id] else { return }
        queued[id] = true
        ready.append(id)
    }

    /// Queues `id` for `pollEvent` (also for a driver whose own I/O completed, e.g. a client write).
    public func notify(_ id: Int) {
        guard id < eventQueued.count, !eventQueued[id], slots[id] != nil else { return }
        eventQueued[id] = true
        events.append(id)
    }

    /// The next connection whose state may have changed (readable, writable, half-closed, closed,
    /// established) since the application last looked; the application inspects it. nil when none.
    public func pollEvent() -> Int? {
        while eventHead < events.count {
            let id = events[eventHead]
            eventHead += 1
            if eventHead == events.count {
                events.removeAll(keepingCapacity: true)
                eventHead = 0
            }
            eventQueued[id] = false
            if slots[id] != nil && !releasedEarly.contains(id) && !handshaking.contains(id) { return id }
        }
        return nil
    }

    // MARK: Output

    /// Writes the next IP packet to send at the start of `buffer`; nil when no connection has output.
    public func pollPacket(into buffer: UnsafeMutableRawBufferPointer, now: Instant) -> Int? {
        while readyHead < ready.count {
            let id = ready[readyHead]
            guard let slot = slots[id] else {
                // Removed while queued: clear its flag, or a connection reusing the id would never be polled.
                readyHead += 1
                queued[id] = false
                continue
            }
            // The payload goes once from the send ring to its final place in the packet: after the IP
            // header and the TCP header a data segment will have (no options but SACK blocks).
            let ipHeader = slot.tuple.local.isV6 ? IPv6Repr.headerLength : IPv4Repr.headerLength
            let payloadOffset = min(ipHeader + slot.connection.dataHeaderLength, buffer.count)
            let region = UnsafeMutableRawBufferPointer(rebasing: buffer[payloadOffset...])
            if let (repr, n) = slot.connection.pollSegment(payload: region, now: now) {
                let builder = PacketBuilder(source: slot.tuple.local, destination: slot.tuple.remote, transport: .tcp(repr))
                if n > 0 && builder.headerLength != payloadOffset {
                    // Not the header foreseen (never expected): move the payload to where it belongs.
                    guard let base = buffer.baseAddress, builder.headerLength + n <= buffer.count else { preconditionFailure("segment does not fit") }
                    (base + builder.headerLength).copyMemory(from: base + payloadOffset, byteCount: n)
                }
                return builder.emit(into: buffer, at: 0, payloadLength: n)
            }
            // Nothing more from this one: re-file its deadline, then move on.
            readyHead += 1
            queued[id] = false
            deadlines.set(id, slot.connection.nextDeadline())
            if !idleQueued[id] && slot.connection.holdsBuffers {
                idleQueued[id] = true
                idleQueue.append((id, now))
            }
            if slot.connection.isClosed && releasedEarly.contains(id) { remove(id) }
        }
        ready.removeAll(keepingCapacity: true)
        readyHead = 0
        return nil
    }

    // MARK: Time

    public func nextDeadline() -> Instant? {
        let heap = deadlines.next?.deadline
        guard idleQueueHead < idleQueue.count else { return heap }
        let idle = idleQueue[idleQueueHead].since.adding(Self.idleRelease)
        return heap.map { min($0, idle) } ?? idle
    }

    /// Gives back the buffers of connections idle for `idleRelease`; one that moved since goes to the
    /// back of the queue, to be looked at again an `idleRelease` later.
    func releaseIdleBuffers(now: Instant) {
        var steps = idleQueue.count - idleQueueHead
        while steps > 0, idleQueueHead < idleQueue.count, idleQueue[idleQueueHead].since.adding(Self.idleRelease) <= now {
            steps -= 1
            let id = idleQueue[idleQueueHead].id
            idleQueueHead += 1
            idleQueued[id] = false
            guard let connection = slots[id]?.connection else { continue }
            if now.since(connection.lastActivity) >= Self.idleRelease {
                idleBytesReleased &+= connection.releaseIdleBuffers()
            }
            if connection.holdsBuffers {
                idleQueued[id] = true
                idleQueue.append((id, now))
            }
        }
        if idleQueueHead >= 1024 && idleQueueHead * 2 >= idleQueue.count {
            idleQueue.removeFirst(idleQueueHead)
            idleQueueHead = 0
        }
    }

    /// Gives back what the per-connection tables grew to once most connections are gone: ids above the
    /// highest in use leave every table and queue, and the four-tuple index is rebuilt to its size.
    /// O(connections): a driver calls it rarely (the forwarder does, a second after a wave of closes).
    public func compactTables() {
        removedSinceCompaction = 0
        var top = slots.count
        while top > 0 && slots[top - 1] == nil { top -= 1 }
        if top < slots.count {
            ready = ready[readyHead...].filter { $0 < top }
            readyHead = 0
            events = events[eventHead...].filter { $0 < top }
            eventHead = 0
            idleQueue = idleQueue[idleQueueHead...].filter { $0.id < top }
            idleQueueHead = 0
            handshakeOrder = handshakeOrder[handshakeOrderHead...].filter { $0.id < top }
            handshakeOrderHead = 0
            acceptQueue = acceptQueue[acceptHead...].filter { $0 < top }
            acceptHead = 0
            freeSlots = freeSlots.filter { $0 < top }
            slots = Array(slots[0..<top])
            queued = Array(queued[0..<top])
            eventQueued = Array(eventQueued[0..<top])
            handshakeSerial = Array(handshakeSerial[0..<top])
            idleQueued = Array(idleQueued[0..<top])
            deadlines.shrink(toIds: top)
        }
        if byTuple.capacity > 4 * max(byTuple.count, 64) {
            var index = [FourTuple: Int](minimumCapacity: byTuple.count)
            for (tuple, id) in byTuple { index[tuple] = id }
            byTuple = index
        }
        // Sets keep their largest capacity too (`Set(set)` would share the old storage).
        func shrunk(_ set: Set<Int>) -> Set<Int> {
            guard set.capacity > 4 * max(set.count, 64) else { return set }
            var fresh = Set<Int>(minimumCapacity: set.count)
            for id in set { fresh.insert(id) }
            return fresh
        }
        releasedEarly = shrunk(releasedEarly)
        handshaking = shrunk(handshaking)
    }

    /// The tunnel came back after an outage: connections in retransmission backoff try again now. A
    /// walk over every connection, once per outage.
    public func pathRecovered(now: Instant) {
        for id in slots.indices {
            guard let connection = slots[id]?.connection, connection.pathRecovered(now: now) else { continue }
            deadlines.set(id, connection.nextDeadline())
        }
    }

    public func handleTimeout(now: Instant) {
        releaseIdleBuffers(now: now)
        var budget = slots.count + 1
        while budget > 0, let id = deadlines.popExpired(now: now) {
            budget -= 1
            slots[id]?.connection.handleTimeout(now: now)
            changed(id)
        }
    }
}
