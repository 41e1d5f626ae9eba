/// A WireGuard device, sans-I/O: our static identity and the peers we talk to, each a `WireGuardPeer`,
/// routed by their allowed IPs (cryptokey routing, WireGuard paper §2). Both handshake roles, transport,
/// cookies and the five timers of wireguard-go per peer, driven entirely by its inputs.
///
/// Contract (the same as the core's): inputs are `encapsulate`, `decapsulate`, `start` and
/// `handleTimeout`, each with a monotonic `now`. After any input the driver calls `pollTransmit` until it
/// returns nil, sending each datagram to `transmitDestination`, then re-arms its timer to
/// `nextDeadline()`. A spurious `handleTimeout` is a no-op. Buffers belong to the caller; an outgoing
/// packet sits at `buffer[headroom...]` with `tailroom` bytes free behind it and is sealed in place; an
/// incoming datagram is opened in place.
///
/// What belongs to no one peer is here, as in wireguard-go's device.go: the static key and the mac1 key
/// it gives, the cookie secret and the load that decides when to ask for cookies (a cookie reply goes to
/// the address the message came from, whoever it claims to be), the table of receiver indices (unique
/// across peers, so a transport message, a response or a cookie reply finds its peer in O(1)), the map
/// from static keys to peers (an initiation's first half reveals the key; an unknown key is dropped with
/// nothing kept), and the allowed-IPs trie (outgoing: the longest prefix holding the destination picks
/// the peer; incoming: the source must route back to the peer that sent it). Nothing per packet scans
/// the peers.
///
/// **Strangers.** A datagram from an address that is no peer's endpoint is refused before any
/// cryptography unless it names one of our sessions or pending handshakes, or is an initiation (which
/// gets the mac1 check first). When it authenticates, its peer roamed there (paper §2.1).
///
/// With one peer (`init(config:random:)`), it behaves as the one-peer tunnel always did; the one-peer
/// conveniences (`endpoint`, `isEstablished`, `handshakeProblem`, `initiateHandshake`, …) speak of the
/// first peer added.
@_spi(OneTunInternals) public final class WireGuardDevice {
    public static let headroom = TransportField.content
    public static let tailroom = 32
    /// The largest handshake or cookie message; `pollTransmit` needs at least this much or mtu + 32.
    public static let maxControlMessage = InitiationField.size

    /// The tunnel MTU; transport padding never grows a packet past it (wireguard-go `calculatePaddingSize`).
    public let mtu: Int
    /// Handshake messages per second above which we answer with cookie replies instead of doing
    /// Diffie-Hellman work (paper §5.3); `0` means always under load (for tests). The default, 512, is
    /// wireguard-go's mark (an eighth of its handshake queue) and a quarter of a core's worth of
    /// handshakes here: a hub whose hundred peers all call at once after a restart answers every one
    /// of them at once instead of sending most a cookie and a five-second wait.
    public let handshakeLoadThreshold: Int
    /// Wall-clock nanoseconds since the Unix epoch minus the monotonic `now`, set by the driver. Only the
    /// TAI64N timestamp of initiations needs wall time: a peer refuses a timestamp older than its last.
    public var wallClockOffset: Int64 = 0
    public var publicKey: Key32 { local.publicKey }

    let local: LocalIdentity
    let random: RandomSource

    // Peers.
    /// Peers by slot; nil marks a free slot (reused by the next peer added).
    @exclusivity(unchecked) var slots: [WireGuardPeer?] = []
    /// The same peers unretained, for the data path: `withPeer` lends one without touching its reference
    /// count. A removed peer's entry is stale, and never read: no index or prefix names its slot any more.
    @exclusivity(unchecked) var unretained: [Unmanaged<WireGuardPeer>] = []
    var freeSlots: [Int] = []
    /// Every peer, in the order they were added.
    public private(set) var peers: [WireGuardPeer] = []
    var byKey: [Key32: Int] = [:]
    /// The slot of the peer at each endpoint (the latest to be set there, when two share one): which
    /// peer a datagram naming nothing of ours comes from, for its diagnostics. Off the data path.
    var byEndpoint: [EndpointAddress: Int] = [:]
    let indices = IndexTable()
    let allowedIPs = AllowedIPs()

    // Responder state shared by every peer (paper §5.3, §5.4.7).
    var cookieSecret = Key32.zero
    var cookieSecretSetAt: Instant?
    var loadWindowStart = Instant.zero
    var loadCount = 0

    /// A handshake message for a peer (sent to its endpoint as it is when polled), or a cookie reply for
    /// whoever sent the message it answers.
    struct ControlMessage {
        var bytes: [UInt8]
        /// The peer's slot; -1 for a cookie reply.
        var slot: Int
        var to: EndpointAddress
    }
    /// Handshake and cookie messages waiting for `pollTransmit`, oldest first.
    var control: [ControlMessage] = []
    /// Where the datagram the last `pollTransmit` (or an `encapsulate` that returned `.send`) wrote goes:
    /// its peer's endpoint, or the source of the message a cookie reply answers. Empty: the driver's
    /// endpoint (a peer configured at an empty address).
    @exclusivity(unchecked) public private(set) var transmitDestination = EndpointAddress()
    /// Slots of peers whose staged packets a session can carry now, for `pollTransmit`.
    @exclusivity(unchecked) var ready: [Int] = []
    @exclusivity(unchecked) var readyHead = 0

    /// Each peer's earliest deadline, by slot; `rescheduled` lists the peers whose deadlines changed since
    /// the heap last looked (a peer arms and disarms timers per packet; the heap hears of it once per
    /// `nextDeadline`).
    var schedule = DeadlineHeap()
    @exclusivity(unchecked) var rescheduled: [Int] = []
    var expired: [Int] = []

    var events: [PeerEvent] = []
    /// Counters of what no one peer did (malformed datagrams, strangers, cookies, unknown keys, no route);
    /// `stats` adds every peer's.
    @exclusivity(unchecked) var ownStats = WireGuardStats()
    /// The counters of peers removed, so the totals never go backwards.
    var departedStats = WireGuardStats()
    /// Times any peer's endpoint changed: a driver compares it before and after a datagram to notice a roam.
    @exclusivity(unchecked) public private(set) var endpointChanges = 0
    /// Set when a handshake ended an outage; the core clears it after letting its connections know.
    public var recovered = false
    /// Why the most recent datagram was dropped, for diagnostics (a wrong key shows as a handshake failure).
    @exclusivity(unchecked) public private(set) var lastDrop: DropReason?
    /// `start` was called: peers added from now on with a persistent keepalive start their handshake.
    public private(set) var isStarted = false

    public init(privateKey: Key32, mtu: Int = 1420, handshakeLoadThreshold: Int = 512, random: RandomSource) {
        self.mtu = mtu
        self.handshakeLoadThreshold = handshakeLoadThreshold
        self.random = random
        local = LocalIdentity(privateKey: privateKey)
    }

    /// A device with the one peer of `config`, carrying every address, at the driver's endpoint.
    public convenience init(config: WireGuardConfig, random: RandomSource) {
        self.init(privateKey: config.privateKey, mtu: config.mtu, handshakeLoadThreshold: config.handshakeLoadThreshold, random: random)
        insertPeer(PeerConfig(config))
    }

    // MARK: Peers

    /// Adds a peer; nil when a peer with its key is already there, or the key is our own. Its prefixes
    /// are taken from any earlier peer holding them. Once the device started, a peer with a persistent
    /// keepalive and an endpoint starts its handshake now (as wireguard-go's does).
    @discardableResult
    public func addPeer(_ config: PeerConfig, now: Instant) -> WireGuardPeer? {
        guard let peer = insertPeer(config) else { return nil }
        if isStarted && peer.persistentKeepaliveSeconds > 0 { peer.initiateHandshake(now: now) }
        return peer
    }

    @discardableResult
    func insertPeer(_ config: PeerConfig) -> WireGuardPeer? {
        guard byKey[config.publicKey] == nil, config.publicKey != local.publicKey else { return nil }
        let slot: Int
        if let free = freeSlots.popLast() {
            slot = free
        } else {
            slot = slots.count
            slots.append(nil)
        }
        let peer = WireGuardPeer(device: self, slot: slot, config: config)
        slots[slot] = peer
        if slot < unretained.count {
            unretained[slot] = .passUnretained(peer)
        } else {
            unretained.append(.passUnretained(peer))
        }
        peers.append(peer)
        byKey[config.publicKey] = slot
        for prefix in config.allowedIPs { allowedIPs.insert(prefix, slot: slot) }
        if let endpoint = config.endpoint { setEndpoint(endpoint, of: peer) }
        rescheduled.reserveCapacity(slots.count)
        return peer
    }

    /// Removes the peer with `publicKey`: its keys are wiped, its indices and prefixes freed (packets for
    /// them have no route from now on), what it staged or queued dropped. False when there is none.
    @discardableResult
    public func removePeer(_ publicKey: Key32) -> Bool {
        guard let slot = byKey.removeValue(forKey: publicKey), let peer = slots[slot] else { return false }
        peer.forgetKeys()
        peer.stats.stagedDropped += peer.staged.count - peer.stagedHead
        peer.staged.removeAll()
        peer.stagedHead = 0
        if let endpoint = peer.endpoint, byEndpoint[endpoint] == slot { byEndpoint[endpoint] = nil }
        allowedIPs.removeAll(slot: slot)
        schedule.set(slot, nil)
        control.removeAll { $0.slot == slot }
        ready = ready[readyHead...].filter { $0 != slot }
        readyHead = 0
        rescheduled.removeAll { $0 == slot }
        departedStats.add(peer.stats)
        peers.removeAll { $0 === peer }
        slots[slot] = nil
        freeSlots.append(slot)
        return true
    }

    public func peer(for publicKey: Key32) -> WireGuardPeer? {
        byKey[publicKey].flatMap { slots[$0] }
    }

    /// The peer whose longest prefix holds `address`; nil when no peer's does.
    /// The peer in `slot` (one an index or a prefix names) lent to `body`, its reference count untouched.
    @inline(__always) func withPeer<R>(_ slot: Int, _ body: (WireGuardPeer) -> R) -> R {
        unretained[slot]._withUnsafeGuaranteedRef(body)
    }

    public func route(_ address: IPAddress) -> WireGuardPeer? {
        let slot = allowedIPs.lookup(address)
        return slot >= 0 ? slots[slot] : nil
    }

    /// Moves `peer` to `endpoint` (nil: unknown).
    public func setEndpoint(_ endpoint: EndpointAddress?, of peer: WireGuardPeer) {
        if let old = peer.endpoint, byEndpoint[old] == peer.slot { byEndpoint[old] = nil }
        peer.endpoint = endpoint
        if let endpoint { byEndpoint[endpoint] = peer.slot }
    }

    /// The peer a datagram from `source` comes from when it names nothing of ours: the one whose endpoint
    /// it is, or one at the driver's endpoint (empty), from which anything may come.
    func peerAt(_ source: EndpointAddress) -> WireGuardPeer? {
        guard let slot = byEndpoint[source] ?? byEndpoint[EndpointAddress()] else { return nil }
        return slots[slot]
    }

    /// What the device sees of `peer` now.
    public func status(of peer: WireGuardPeer) -> PeerStatus {
        PeerStatus(
            publicKey: peer.publicKey, endpoint: peer.endpoint, allowedIPs: allowedIPs.prefixes(of: peer.slot),
            persistentKeepaliveSeconds: peer.persistentKeepaliveSeconds, lastHandshake: peer.lastHandshake,
            isEstablished: peer.isEstablished, handshakeProblem: peer.handshakeProblem, outageSince: peer.lostSince,
            stats: peer.stats)
    }

    /// A fresh receiver index for `peer`, recorded in the table: random, and used by no other session or
    /// handshake of any peer.
    func newLocalIndex(for peer: WireGuardPeer) -> UInt32 {
        while true {
            let index = random.nextUInt32()
            if !indices.contains(index) {
                indices.insert(index, slot: peer.slot)
                return index
            }
        }
    }

    /// Every receiver index in the table, and every one the peers hold: equal sets when the bookkeeping is
    /// right (for tests and fuzzing; O(peers)).
    public var indexBookkeepingHolds: Bool {
        let held = peers.flatMap { p in p.localIndices.map { (p.slot, $0) } }
        return held.count == indices.count && held.allSatisfy { indices.lookup($0.1) == $0.0 }
            && Set(held.map(\.1)).count == held.count
    }

    // MARK: One-peer conveniences (the first peer added)

    /// The first peer's endpoint (empty when it has none); setting it moves that peer.
    public var endpoint: EndpointAddress {
        get { peers.first?.endpoint ?? EndpointAddress() }
        set { if let peer = peers.first { setEndpoint(newValue, of: peer) } }
    }

    public var isEstablished: Bool { peers.first?.isEstablished ?? false }
    public var handshakeProblem: HandshakeProblem? { peers.first?.handshakeProblem }
    var lostSince: Instant? { peers.first?.lostSince }

    /// Starts a handshake with the first peer.
    public func initiateHandshake(now: Instant) { peers.first?.initiateHandshake(now: now) }

    /// Starts a handshake with the first peer unless one is under way.
    public func retryHandshake(now: Instant) { peers.first?.retryHandshake(now: now) }

    /// The driver heard the first peer's endpoint refuse our datagrams (an ICMP error from it).
    public func endpointRefused() { peers.first?.endpointRefused() }

    /// Starts handshakes: with every peer that has an endpoint and a persistent keepalive, or with the
    /// only peer (the others start at their first packet, or when they contact us).
    public func start(now: Instant) {
        isStarted = true
        for peer in peers where peer.endpoint != nil && (peers.count == 1 || peer.persistentKeepaliveSeconds > 0) {
            peer.initiateHandshake(now: now)
        }
    }

    /// Counters for everything the device and its peers did or refused (peers removed included).
    public var stats: WireGuardStats {
        var total = ownStats
        total.add(departedStats)
        for peer in peers { total.add(peer.stats) }
        return total
    }

    // MARK: Events

    /// Queues an event; a driver that never polls loses the oldest, never memory.
    func emit(_ event: PeerEvent) {
        if events.count >= max(16, 4 * peers.count) { events.removeFirst() }
        events.append(event)
    }

    /// The next thing the driver should hear about a session; nil when there is none.
    public func pollEvent() -> TunnelEvent? { pollPeerEvent()?.event }

    /// The next event with the peer it is about; nil when there is none.
    public func pollPeerEvent() -> PeerEvent? {
        events.isEmpty ? nil : events.removeFirst()
    }

    // MARK: Timers

    /// Folds the peers whose deadlines changed into the heap.
    func refreshSchedule() {
        guard !rescheduled.isEmpty else { return }
        for slot in rescheduled {
            guard let peer = slots[slot] else { continue }
            peer.isRescheduled = false
            schedule.set(slot, peer.nextDeadline())
        }
        rescheduled.removeAll(keepingCapacity: true)
    }

    public func nextDeadline() -> Instant? {
        refreshSchedule()
        return schedule.next?.deadline
    }

    public func handleTimeout(now: Instant) {
        refreshSchedule()
        while let slot = schedule.popExpired(now: now) { expired.append(slot) }
        // Each expired peer once; its new earliest deadline goes back into the heap after.
        for slot in expired {
            guard let peer = slots[slot] else { continue }
            peer.handleTimeout(now: now)
            peer.rescheduled()
        }
        expired.removeAll(keepingCapacity: true)
        refreshSchedule()
    }

    // MARK: Sending

    /// Seals the IP packet at `buffer[headroom ..< headroom + packetLength]` in place for the peer its
    /// destination routes to when a session is usable, or stages a copy (and starts a handshake) when not.
    /// No route: dropped (`droppedNoRoute`).
    public func encapsulate(_ buffer: UnsafeMutableRawBufferPointer, packetLength: Int, now: Instant) -> Encapsulated {
        guard packetLength >= 0, buffer.count >= Self.headroom + packetLength + Self.tailroom else {
            ownStats.dropped += 1
            return .dropped(.packetTooLarge)
        }
        let packet = UnsafeRawBufferPointer(rebasing: buffer[Self.headroom..<Self.headroom + packetLength])
        let slot = route(packet: packet)
        guard slot >= 0 else { return noRoute() }
        return withPeer(slot) { sent($0.sealOrStage(buffer, packet, from: nil, now: now), by: $0) }
    }

    /// `encapsulate` for a packet kept elsewhere (a queue's slot): seals `packet[0..<packetLength]` into
    /// `buffer` after the headroom, the cipher doing the copy. `packet` must have room to pad to the MTU
    /// (`packet.count >= min(mtu, packetLength rounded up to 16)`); the padding is written there.
    public func encapsulate(
        _ buffer: UnsafeMutableRawBufferPointer, copying packet: UnsafeMutableRawBufferPointer, packetLength: Int, now: Instant
    ) -> Encapsulated {
        guard packetLength >= 0, packetLength <= packet.count, buffer.count >= Self.headroom + packetLength + Self.tailroom,
            packet.count >= min(mtu, (packetLength + 15) & ~15)
        else {
            ownStats.dropped += 1
            return .dropped(.packetTooLarge)
        }
        let inner = UnsafeRawBufferPointer(rebasing: packet[0..<packetLength])
        let slot = route(packet: inner)
        guard slot >= 0 else { return noRoute() }
        return withPeer(slot) { sent($0.sealOrStage(buffer, inner, from: packet.baseAddress, now: now), by: $0) }
    }

    /// The slot of the peer an outgoing packet's destination routes to (cryptokey routing, outgoing:
    /// paper §2); -1 for none.
    @inline(__always) func route(packet: UnsafeRawBufferPointer) -> Int {
        guard packet.count >= 20 else { return -1 }
        let slot: Int
        switch packet[0] >> 4 {
        case 4:
            slot = allowedIPs.lookup(v4: UInt32(bigEndian: packet.loadUnaligned(fromByteOffset: 16, as: UInt32.self)))
        case 6 where packet.count >= 40:
            slot = allowedIPs.lookup(
                v6High: UInt64(bigEndian: packet.loadUnaligned(fromByteOffset: 24, as: UInt64.self)),
                low: UInt64(bigEndian: packet.loadUnaligned(fromByteOffset: 32, as: UInt64.self)))
        default:
            return -1
        }
        return slot
    }

    @inline(__always) func sent(_ result: Encapsulated, by peer: WireGuardPeer) -> Encapsulated {
        if case .send = result { transmitDestination = peer.endpoint ?? EndpointAddress() }
        return result
    }

    func noRoute() -> Encapsulated {
        ownStats.droppedNoRoute += 1
        return .dropped(.noRoute)
    }

    func queueControl(_ message: [UInt8], for peer: WireGuardPeer) {
        control.append(ControlMessage(bytes: message, slot: peer.slot, to: EndpointAddress()))
    }

    func markReady(_ peer: WireGuardPeer) {
        guard !peer.isReady else { return }
        peer.isReady = true
        ready.append(peer.slot)
    }

    /// The next datagram to send, written to `buffer` (at least `max(maxControlMessage, mtu + 32)` bytes),
    /// its destination in `transmitDestination`: handshake and cookie messages first, then packets staged
    /// for peers whose session can now carry them.
    public func pollTransmit(into buffer: UnsafeMutableRawBufferPointer, now: Instant) -> Int? {
        while !control.isEmpty {
            let message = control.removeFirst()
            if message.slot >= 0 {
                guard let to = slots[message.slot]?.endpoint else { continue }
                transmitDestination = to
            } else {
                transmitDestination = message.to
            }
            message.bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
            return message.bytes.count
        }
        while readyHead < ready.count {
            if let peer = slots[ready[readyHead]] {
                switch peer.pollStaged(into: buffer, now: now) {
                case .sent(let n):
                    transmitDestination = peer.endpoint ?? EndpointAddress()
                    return n
                case .blocked:
                    return nil
                case .idle:
                    peer.isReady = false
                }
            }
            readyHead += 1
            if readyHead == ready.count {
                ready.removeAll(keepingCapacity: true)
                readyHead = 0
            }
        }
        return nil
    }

    // MARK: Receiving

    /// Processes one datagram, opening transport data in place.
    public func decapsulate(
        _ buffer: UnsafeMutableRawBufferPointer, datagramLength: Int, from source: EndpointAddress, now: Instant
    ) -> Decapsulated {
        let result = open(buffer, datagramLength: datagramLength, from: source, now: now)
        if case .dropped(let reason) = result { lastDrop = reason }
        return result
    }

    func open(
        _ buffer: UnsafeMutableRawBufferPointer, datagramLength: Int, from source: EndpointAddress, now: Instant
    ) -> Decapsulated {
        let bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<min(datagramLength, buffer.count)])
        let message: WireGuardMessage
        do {
            message = try WireGuardMessage(validating: bytes)
        } catch {
            ownStats.droppedMalformed += 1
            return drop(.malformed(error))
        }
        if message.type == .initiation { return receiveInitiation(message, source, now) }
        // Everything else names one of our indices.
        if let slot = indices.lookup(message.receiverIndex) {
            return withPeer(slot) { owner in
                let fromEndpoint = owner.isEndpoint(source)
                if !fromEndpoint && !owner.couldBeFromPeer(message) { return unknownSource() }
                return deliver(buffer, message, to: owner, from: source, fromEndpoint: fromEndpoint, now)
            }
        }
        // It names nothing of ours but comes from where a peer is: that peer hears why (it may send on a
        // session we lost).
        guard let owner = peerAt(source) else { return unknownSource() }
        return deliver(buffer, message, to: owner, from: source, fromEndpoint: true, now)
    }

    /// A transport message, response or cookie reply, to the peer it names (or comes from).
    @inline(__always)
    func deliver(
        _ buffer: UnsafeMutableRawBufferPointer, _ message: WireGuardMessage, to peer: WireGuardPeer, from source: EndpointAddress,
        fromEndpoint: Bool, _ now: Instant
    ) -> Decapsulated {
        let result: Decapsulated
        switch message.type {
        case .transport: result = peer.receiveTransport(buffer, message, now)
        case .cookieReply: return peer.receiveCookieReply(message, now)
        default: result = receiveResponse(message, peer, source, now)
        }
        if !fromEndpoint, !result.isDropped { follow(peer, to: source, fromEndpoint: false) }
        return result
    }

    /// It authenticated (a transport packet inside the replay window, or a handshake message) from
    /// elsewhere: the peer roamed, and we follow it (paper §2.1). A peer without an endpoint learns one.
    func follow(_ peer: WireGuardPeer, to source: EndpointAddress, fromEndpoint: Bool) {
        guard !fromEndpoint, source.count > 0 || peer.endpoint == nil else { return }
        setEndpoint(source, of: peer)
        peer.stats.endpointChanges += 1
        endpointChanges += 1
        peer.emit(.endpointChanged)
    }

    func drop(_ reason: DropReason) -> Decapsulated {
        ownStats.dropped += 1
        return .dropped(reason)
    }

    func unknownSource() -> Decapsulated {
        ownStats.droppedUnknownSource += 1
        return drop(.unknownSource)
    }

    /// Handshake messages seen in the current one-second window decide whether we are under load.
    func underLoad(_ now: Instant) -> Bool {
        if now.since(loadWindowStart) >= Nanos.second {
            loadWindowStart = now
            loadCount = 0
        }
        loadCount += 1
        return loadCount > handshakeLoadThreshold
    }

    /// mac1 proves the sender knows our public key (paper §5.4.4); under load, mac2 proves it can receive
    /// at its address (a cookie reply goes there first). Nil when the message may have Diffie-Hellman
    /// work; else why not.
    func checkMacs(_ message: WireGuardMessage, _ source: EndpointAddress, _ now: Instant) -> DropReason? {
        let mac1At = message.mac1Offset!
        var expected: (UInt64, UInt64) = (0, 0)
        withUnsafeMutableBytes(of: &expected) { e in
            local.mac1KeyIncoming.withUnsafeBytes { WGCrypto.mac(key: $0, message.slice(0, mac1At), into: e) }
        }
        let mac1Valid = withUnsafeBytes(of: expected) { WGCrypto.equal16($0.baseAddress!, message.bytes.baseAddress! + mac1At) }
        guard mac1Valid else { return .invalidMac1 }
        if underLoad(now) {
            // Under load only messages with a valid mac2 (a fresh cookie of ours) get DH work.
            let cookie = currentCookie(for: source, now)
            withUnsafeMutableBytes(of: &expected) { e in
                withUnsafeBytes(of: cookie) { WGCrypto.mac(key: $0, message.slice(0, mac1At + 16), into: e) }
            }
            let mac2Valid = withUnsafeBytes(of: expected) { WGCrypto.equal16($0.baseAddress!, message.bytes.baseAddress! + mac1At + 16) }
            if !mac2Valid {
                sendCookieReply(to: message, from: source, cookie: cookie, mac1At: mac1At)
                return .cookieRequired
            }
        }
        return nil
    }

    /// An initiation: checked (mac1, mac2 under load), then its first half opened with our private key
    /// to learn who sent it (wireguard-go `ConsumeMessageInitiation` up to `LookupPeer`); that peer does
    /// the rest. Unknown keys leave no state.
    func receiveInitiation(_ message: WireGuardMessage, _ source: EndpointAddress, _ now: Instant) -> Decapsulated {
        if let reason = checkMacs(message, source, now) { return drop(reason) }
        let opened: InitiationHalf
        do {
            opened = try Noise.openInitiationStatic(message, local: local)
        } catch {
            ownStats.droppedHandshake += 1
            return drop(.handshake(error))
        }
        var half = opened
        defer { half.wipe() }
        guard let slot = byKey[half.initiatorStatic], let peer = slots[slot] else {
            ownStats.droppedHandshake += 1
            ownStats.droppedUnknownPeer += 1
            return drop(.handshake(.unknownStaticKey))
        }
        let fromEndpoint = peer.isEndpoint(source)
        do {
            try peer.receiveInitiation(half, message, now)
        } catch {
            ownStats.droppedHandshake += 1
            return drop(.handshake(error))
        }
        follow(peer, to: source, fromEndpoint: fromEndpoint)
        return .consumed
    }

    func receiveResponse(_ message: WireGuardMessage, _ peer: WireGuardPeer, _ source: EndpointAddress, _ now: Instant) -> Decapsulated {
        if let reason = checkMacs(message, source, now) {
            if reason == .invalidMac1, peer.pending?.localIndex == message.receiverIndex { peer.noteProblem(.replyRefused) }
            return drop(reason)
        }
        do {
            try peer.receiveResponse(message, now)
            return .consumed
        } catch {
            ownStats.droppedHandshake += 1
            if error != .unexpectedResponse { peer.noteProblem(.replyRefused) }
            return drop(.handshake(error))
        }
    }

    /// Paper §5.4.7: cookie = MAC(R_m, source address), R_m a secret changing every two minutes.
    func currentCookie(for source: EndpointAddress, _ now: Instant) -> (UInt64, UInt64) {
        if cookieSecretSetAt == nil || now.since(cookieSecretSetAt!) >= WireGuardConstants.cookieRefreshTime {
            cookieSecret.withUnsafeMutableBytes { random.fill($0) }
            cookieSecretSetAt = now
        }
        var cookie: (UInt64, UInt64) = (0, 0)
        withUnsafeMutableBytes(of: &cookie) { c in
            cookieSecret.withUnsafeBytes { key in source.withUnsafeBytes { WGCrypto.mac(key: key, $0, into: c) } }
        }
        return cookie
    }

    /// The cookie reply goes to the address the message came from, not to any peer's endpoint: that is
    /// the address the cookie proves (paper §5.4.7).
    func sendCookieReply(to message: WireGuardMessage, from source: EndpointAddress, cookie: (UInt64, UInt64), mac1At: Int) {
        var reply = [UInt8](repeating: 0, count: CookieReplyField.size)
        reply.withUnsafeMutableBytes { m in
            storeLE32(WireGuardMessageType.cookieReply.rawValue, m, at: 0)
            storeLE32(message.senderIndex, m, at: CookieReplyField.receiver)
            let nonce = UnsafeMutableRawBufferPointer(rebasing: m[CookieReplyField.nonce..<CookieReplyField.nonce + 24])
            random.fill(nonce)
            let sealed = UnsafeMutableRawBufferPointer(rebasing: m[CookieReplyField.encryptedCookie..<CookieReplyField.encryptedCookie + 16])
            withUnsafeBytes(of: cookie) { sealed.copyMemory(from: $0) }
            WGCrypto.xseal(
                key: local.cookieKeyOutgoing, nonce: UnsafeRawBufferPointer(nonce), aad: message.slice(mac1At, 16),
                inPlace: sealed, tag: m.baseAddress! + CookieReplyField.encryptedCookie + 16)
        }
        control.append(ControlMessage(bytes: reply, slot: -1, to: source))
        ownStats.cookieRepliesSent += 1
    }
}
