/// One peer of a `WireGuardDevice`, sans-I/O: its sessions (paper §6.2: current, previous, next), the
/// handshake it initiated, the five timers of wireguard-go, its staged packets, its endpoint, and what the
/// driver hears about it. The device owns it: it hands it only datagrams that are its own (by receiver
/// index, or by the static key an initiation revealed), routes to it the packets its allowed IPs hold,
/// and sends what it queues. Everything that belongs to no peer (our static key, cookies, load, the
/// tables) is the device's.
///
/// Its timers are data (`enum Timer` over a fixed table, hooks named after wireguard-go's timers.go);
/// the device folds each peer's earliest deadline into one heap.
///
/// A peer refers to its device without a reference count: it must not be used after the device is gone
/// or after `removePeer` took it out.
@_spi(OneTunInternals) public final class WireGuardPeer {
    unowned(unsafe) let device: WireGuardDevice
    /// The device's allowed-IPs trie, for the source check of every packet received.
    unowned(unsafe) let allowedIPs: AllowedIPs
    let identity: PeerIdentity
    /// The device's number for this peer: its place in the device's tables (reused after removal).
    let slot: Int
    public var publicKey: Key32 { identity.publicKey }
    /// Seconds between keepalives sent whatever the traffic; 0 disables.
    public let persistentKeepaliveSeconds: UInt16
    /// What this peer's traffic and handshakes did; the device's `stats` add every peer's to its own.
    @exclusivity(unchecked) public internal(set) var stats = WireGuardStats()
    /// The `now` of the latest completed handshake.
    public private(set) var lastHandshake: Instant?

    // Keypairs (paper §6.2: current, previous, next). Each one's local index is in the device's table
    // while it is here; `retire` takes it out.
    @exclusivity(unchecked) var current: Keypair?
    var previous: Keypair?
    var next: Keypair?
    var pending: PendingInitiation?

    // Responder state: the newest initiation timestamp this peer sent (paper §5.1) and when.
    var lastTimestamp = TAI64N.zero
    var lastInitiationConsumed: Instant?

    /// Where the peer is: its datagrams come from here and ours go here. nil: unknown, nothing can be
    /// sent until the peer contacts us. Empty: the driver's endpoint (and any source is the peer's).
    /// Set through the device, which keeps an index of endpoints.
    @exclusivity(unchecked) public internal(set) var endpoint: EndpointAddress?

    // What the driver is told (through the device's event queue).
    /// The last authenticated packet from the peer.
    var lastReceived: Instant?
    /// Set while the session is lost or expired: the last authenticated packet before that.
    var lostSince: Instant?
    /// What the current attempt heard (nil: nothing), and what was last reported.
    var heard: HandshakeProblem?
    /// Why handshakes are failing while no session works (none yet, or lost or expired); nil otherwise.
    public private(set) var handshakeProblem: HandshakeProblem?

    // Initiator's cookie state (paper §5.4.7).
    var receivedCookie: (UInt64, UInt64) = (0, 0)
    var receivedCookieAt: Instant?
    var lastMac1Sent: (UInt64, UInt64) = (0, 0)
    var lastMac1SenderIndex: UInt32?

    var lastSentHandshake: Instant?
    var handshakeAttempts = 0
    @exclusivity(unchecked) var needAnotherKeepalive = false
    var sentLastMinuteHandshake = false

    /// Packets waiting for a session (wireguard-go's staged queue). Empty arrays are keepalives.
    @exclusivity(unchecked) var staged: [[UInt8]] = []
    @exclusivity(unchecked) var stagedHead = 0
    /// On the device's list of peers whose staged packets a session can now carry.
    @exclusivity(unchecked) var isReady = false

    /// The five timers of wireguard-go's device/timers.go, and one that notices when the current session
    /// reaches REJECT_AFTER_TIME (for the driver's log; sending already checks the age); `.max` means not
    /// armed.
    enum Timer: Int, CaseIterable {
        case retransmitHandshake, sendKeepalive, newHandshake, zeroKeyMaterial, persistentKeepalive, sessionExpiry
    }
    @exclusivity(unchecked) var deadlines = InlineArray<6, UInt64>(repeating: .max)
    /// On the device's list of peers whose earliest deadline must be looked at again.
    @exclusivity(unchecked) var isRescheduled = false

    init(device: WireGuardDevice, slot: Int, config: PeerConfig) {
        self.device = device
        allowedIPs = device.allowedIPs
        self.slot = slot
        identity = PeerIdentity(publicKey: config.publicKey, presharedKey: config.presharedKey, local: device.local)
        persistentKeepaliveSeconds = config.persistentKeepaliveSeconds
    }

    public var isEstablished: Bool { current != nil }

    /// Whether a datagram from `source` comes from where the peer is (always, for the driver's endpoint).
    @inline(__always) func isEndpoint(_ source: EndpointAddress) -> Bool {
        guard let endpoint else { return false }
        return endpoint.count == 0 || endpoint == source
    }

    // MARK: Timers

    @inline(__always) func isArmed(_ t: Timer) -> Bool { deadlines[t.rawValue] != .max }
    @inline(__always) func arm(_ t: Timer, _ now: Instant, after ns: UInt64) { arm(t, at: now.adding(ns).nanoseconds) }
    @inline(__always) func arm(_ t: Timer, at deadline: UInt64) {
        deadlines[t.rawValue] = deadline
        rescheduled()
    }
    @inline(__always) func disarm(_ t: Timer) {
        guard deadlines[t.rawValue] != .max else { return }
        deadlines[t.rawValue] = .max
        rescheduled()
    }

    /// A deadline changed: the device looks at this peer's earliest again before it next answers
    /// `nextDeadline` (once, however many changes).
    @inline(__always) func rescheduled() {
        if !isRescheduled {
            isRescheduled = true
            device.rescheduled.append(slot)
        }
    }

    func jitter() -> UInt64 { device.random.uniform(below: WireGuardConstants.rekeyTimeoutJitterMax) }

    func nextDeadline() -> Instant? {
        var earliest = UInt64.max
        for i in 0..<6 { earliest = min(earliest, deadlines[i]) }
        return earliest == .max ? nil : Instant(nanoseconds: earliest)
    }

    func handleTimeout(now: Instant) {
        for t in Timer.allCases where deadlines[t.rawValue] <= now.nanoseconds {
            disarm(t)
            switch t {
            case .retransmitHandshake: expiredRetransmitHandshake(now)
            case .sendKeepalive:
                sendKeepalive(now)
                if needAnotherKeepalive {
                    needAnotherKeepalive = false
                    arm(.sendKeepalive, now, after: WireGuardConstants.keepaliveTimeout)
                }
            case .newHandshake:
                // Data went out but nothing authenticated came back for KEEPALIVE + REKEY_TIMEOUT: the
                // session may be dead on the peer's side, so start a new one (paper §6.5).
                if current != nil && lostSince == nil {
                    lostSince = lastReceived ?? now
                    emit(.sessionLost)
                }
                sendHandshakeInitiation(now, isRetry: false)
            case .zeroKeyMaterial:
                // Paper §6.3: after REJECT_AFTER_TIME × 3 with no new session, forget every key.
                forgetKeys()
            case .persistentKeepalive:
                if persistentKeepaliveSeconds > 0 { sendKeepalive(now) }
            case .sessionExpiry:
                if let keypair = current, !keypair.canReceive(now: now) {
                    // Something waits to go (data unanswered, or staged for a handshake): an outage.
                    let idle = !isArmed(.newHandshake) && stagedHead == staged.count
                    if !idle && lostSince == nil { lostSince = lastReceived ?? keypair.created }
                    emit(.sessionExpired(idle: idle))
                }
            }
        }
    }

    /// Every keypair and the pending handshake go, their indices with them.
    func forgetKeys() {
        retire(current)
        retire(previous)
        retire(next)
        current = nil
        previous = nil
        next = nil
        if var p = pending {
            device.indices.remove(p.localIndex)
            p.wipe()
            pending = nil
        }
    }

    /// A keypair leaves this peer: its index leaves the device's table (its keys are wiped when the last
    /// reference goes).
    @inline(__always) func retire(_ keypair: Keypair?) {
        if let keypair { device.indices.remove(keypair.localIndex) }
    }

    func expiredRetransmitHandshake(_ now: Instant) {
        // The initiation went unanswered, or its answer failed: say why, and listen afresh for the next.
        report(heard ?? .noReply)
        heard = nil
        if handshakeAttempts > WireGuardConstants.maxTimerHandshakes {
            // REKEY_ATTEMPT_TIME is over: give up, drop what waited for this session.
            emit(.handshakeGaveUp)
            heard = nil
            stats.stagedDropped += staged.count - stagedHead
            staged.removeAll()
            stagedHead = 0
            disarm(.sendKeepalive)
            if !isArmed(.zeroKeyMaterial) { arm(.zeroKeyMaterial, now, after: WireGuardConstants.rejectAfterTime * 3) }
            return
        }
        handshakeAttempts += 1
        sendHandshakeInitiation(now, isRetry: true)
    }

    // Hooks named after wireguard-go's timers.go; "should be called after …" each event.
    @inline(__always) func timersDataSent(_ now: Instant) {
        if !isArmed(.newHandshake) {
            arm(.newHandshake, now, after: WireGuardConstants.keepaliveTimeout + WireGuardConstants.rekeyTimeout + jitter())
        }
    }

    @inline(__always) func timersDataReceived(_ now: Instant) {
        if !isArmed(.sendKeepalive) {
            arm(.sendKeepalive, now, after: WireGuardConstants.keepaliveTimeout)
        } else {
            needAnotherKeepalive = true
        }
    }

    @inline(__always) func timersAnyAuthenticatedPacketSent() { disarm(.sendKeepalive) }
    @inline(__always) func timersAnyAuthenticatedPacketReceived(_ now: Instant) {
        disarm(.newHandshake)
        lastReceived = now
    }

    @inline(__always) func timersAnyAuthenticatedPacketTraversal(_ now: Instant) {
        if persistentKeepaliveSeconds > 0 {
            arm(.persistentKeepalive, now, after: UInt64(persistentKeepaliveSeconds) * Nanos.second)
        }
    }

    func timersHandshakeComplete(_ now: Instant) {
        disarm(.retransmitHandshake)
        handshakeAttempts = 0
        stats.handshakesCompleted += 1
        lastHandshake = now
        let outage = lostSince.map { now.since($0) }
        let rekey = outage == nil && stats.handshakesCompleted > 1 && handshakeProblem == nil
        emit(.sessionEstablished(rekey: rekey, outage: outage))
        if outage != nil { device.recovered = true }
        lostSince = nil
        heard = nil
        handshakeProblem = nil
        if let keypair = current { arm(.sessionExpiry, at: keypair.created.adding(WireGuardConstants.rejectAfterTime).nanoseconds) }
    }

    /// The driver heard the endpoint refuse our datagrams (an ICMP error from it).
    public func endpointRefused() { noteProblem(.endpointUnreachable) }

    /// Something the current handshake attempt heard: said at once when there is no working session,
    /// otherwise kept for when the attempt's retransmission timer fires.
    func noteProblem(_ problem: HandshakeProblem) {
        heard = problem
        report(problem)
    }

    /// Sets `handshakeProblem`, and says so, when no session works: a rekey that fails while the current
    /// session still carries traffic is not an outage (yet).
    func report(_ problem: HandshakeProblem) {
        guard current == nil || lostSince != nil, problem != handshakeProblem else { return }
        handshakeProblem = problem
        emit(.handshakeFailing(problem))
    }

    @inline(__always) func emit(_ event: TunnelEvent) { device.emit(PeerEvent(publicKey: identity.publicKey, event: event)) }

    func timersSessionDerived(_ now: Instant) {
        arm(.zeroKeyMaterial, now, after: WireGuardConstants.rejectAfterTime * 3)
    }

    // MARK: Handshake initiation

    public func initiateHandshake(now: Instant) { sendHandshakeInitiation(now, isRetry: false) }

    /// Starts a handshake unless one is under way (its retransmission timer armed).
    public func retryHandshake(now: Instant) {
        if !isArmed(.retransmitHandshake) { sendHandshakeInitiation(now, isRetry: false) }
    }

    func sendHandshakeInitiation(_ now: Instant, isRetry: Bool) {
        // Nowhere to send it: the peer starts the handshake when it contacts us.
        guard endpoint != nil else { return }
        if !isRetry { handshakeAttempts = 0 }
        // At most one initiation per REKEY_TIMEOUT (paper §6.1).
        if let last = lastSentHandshake, now.since(last) < WireGuardConstants.rekeyTimeout { return }
        lastSentHandshake = now
        var message = [UInt8](repeating: 0, count: InitiationField.size)
        let wall = Int64(bitPattern: now.nanoseconds) &+ device.wallClockOffset
        // The new index is drawn while the old handshake still holds its own, so the two differ.
        let localIndex = device.newLocalIndex(for: self)
        if var old = pending {
            device.indices.remove(old.localIndex)
            old.wipe()
            pending = nil
        }
        let created = message.withUnsafeMutableBytes { m -> Bool in
            do {
                pending = try Noise.createInitiation(
                    m, local: device.local, peer: identity, localIndex: localIndex, timestamp: TAI64N(unixNanoseconds: wall),
                    random: device.random, now: now)
            } catch {
                return false
            }
            addMacs(m, mac1At: InitiationField.mac1, senderIndex: localIndex, now: now)
            return true
        }
        guard created else {
            device.indices.remove(localIndex)
            return
        }
        device.queueControl(message, for: self)
        stats.handshakeInitiationsSent += 1
        timersAnyAuthenticatedPacketTraversal(now)
        timersAnyAuthenticatedPacketSent()
        arm(.retransmitHandshake, now, after: WireGuardConstants.rekeyTimeout + jitter())
    }

    /// mac1 always; mac2 when we hold a fresh cookie from the peer (paper §5.4.4).
    func addMacs(_ m: UnsafeMutableRawBufferPointer, mac1At: Int, senderIndex: UInt32, now: Instant) {
        let mac1 = UnsafeMutableRawBufferPointer(rebasing: m[mac1At..<mac1At + 16])
        identity.mac1KeyOutgoing.withUnsafeBytes { WGCrypto.mac(key: $0, UnsafeRawBufferPointer(rebasing: m[0..<mac1At]), into: mac1) }
        withUnsafeMutableBytes(of: &lastMac1Sent) { $0.copyMemory(from: UnsafeRawBufferPointer(mac1)) }
        lastMac1SenderIndex = senderIndex
        let mac2 = UnsafeMutableRawBufferPointer(rebasing: m[mac1At + 16..<mac1At + 32])
        if let at = receivedCookieAt, now.since(at) < WireGuardConstants.cookieRefreshTime {
            withUnsafeBytes(of: receivedCookie) { WGCrypto.mac(key: $0, UnsafeRawBufferPointer(rebasing: m[0..<mac1At + 16]), into: mac2) }
        } else {
            mac2.initializeMemory(as: UInt8.self, repeating: 0)
        }
    }

    // MARK: Sending

    /// Seals `packet` now when a session can carry it (in place when `source` is nil, else from `source`,
    /// which is `packet`'s start with room to pad), or stages a copy and starts a handshake. The device
    /// checked the sizes.
    @inline(__always)
    func sealOrStage(
        _ buffer: UnsafeMutableRawBufferPointer, _ packet: UnsafeRawBufferPointer, from source: UnsafeMutableRawPointer?, now: Instant
    ) -> Encapsulated {
        if stagedHead == staged.count, let keypair = current, keypair.canSend(now: now) {
            return .send(seal(buffer, packetLength: packet.count, from: source, keypair: keypair, now: now))
        }
        stage(packet)
        sendStagedOrHandshake(now)
        return .queued
    }

    func stage(_ packet: UnsafeRawBufferPointer) {
        if staged.count - stagedHead >= WireGuardConstants.maxStagedPackets {
            // wireguard-go drops the oldest staged packet when the queue is full.
            stagedHead += 1
            stats.stagedDropped += 1
        }
        if stagedHead > 0 && stagedHead * 2 >= staged.count {
            staged.removeFirst(stagedHead)
            stagedHead = 0
        }
        staged.append(Array(packet))
    }

    /// wireguard-go `SendStagedPackets`: with no usable session, make one; with one, the staged packets
    /// go at the device's next `pollTransmit`.
    func sendStagedOrHandshake(_ now: Instant) {
        guard let keypair = current, keypair.canSend(now: now) else {
            sendHandshakeInitiation(now, isRetry: false)
            return
        }
        device.markReady(self)
    }

    func sendKeepalive(_ now: Instant) {
        if stagedHead == staged.count { staged.append([]) }
        sendStagedOrHandshake(now)
    }

    /// Writes the transport header, pads, seals (paper §5.4.6): in place, or from `source` (which has room
    /// for the padding) into `buffer` after the headroom. Returns the datagram length.
    @inline(__always)
    func seal(
        _ buffer: UnsafeMutableRawBufferPointer, packetLength: Int, from source: UnsafeMutableRawPointer? = nil,
        keypair: Keypair, now: Instant
    ) -> Int {
        let headroom = WireGuardDevice.headroom
        var padded = (packetLength + 15) & ~15
        if padded > device.mtu { padded = max(packetLength, device.mtu) }
        let base = buffer.baseAddress!
        let plaintext = source ?? base + headroom
        if padded > packetLength {
            (plaintext + packetLength).initializeMemory(as: UInt8.self, repeating: 0, count: padded - packetLength)
        }
        let counter = keypair.sendCounter
        keypair.sendCounter = counter + 1
        storeLE32(WireGuardMessageType.transport.rawValue, buffer, at: 0)
        storeLE32(keypair.remoteIndex, buffer, at: TransportField.receiver)
        storeLE64(counter, buffer, at: TransportField.counter)
        if let source, padded > 0 {
            WGCrypto.seal(
                key: keypair.sendKey, counter: counter, plaintext: source, into: base + headroom, count: padded,
                tag: base + headroom + padded)
        } else {
            WGCrypto.seal(
                key: keypair.sendKey, counter: counter, aad: UnsafeRawBufferPointer(start: base, count: 0),
                inPlace: UnsafeMutableRawBufferPointer(start: base + headroom, count: padded),
                tag: base + headroom + padded)
        }
        stats.packetsSent += 1
        stats.bytesSent += packetLength
        timersAnyAuthenticatedPacketTraversal(now)
        timersAnyAuthenticatedPacketSent()
        if packetLength > 0 {
            timersDataSent(now)
        } else {
            stats.keepalivesSent += 1
        }
        // keepKeyFreshSending (paper §6.2): the initiator rekeys after REKEY_AFTER_TIME; anyone after
        // REKEY_AFTER_MESSAGES.
        if counter >= WireGuardConstants.rekeyAfterMessages
            || (keypair.isInitiator && now.since(keypair.created) >= WireGuardConstants.rekeyAfterTime)
        {
            sendHandshakeInitiation(now, isRetry: false)
        }
        return headroom + padded + 16
    }

    /// What `pollStaged` did.
    enum StagedResult {
        /// A staged packet was sealed into the buffer: `buffer[0..<n]`.
        case sent(Int)
        /// Nothing staged, or no session can carry it: off the device's ready list.
        case idle
        /// The next staged packet does not fit the buffer: it waits.
        case blocked
    }

    /// Seals the next staged packet into `buffer` once a session can carry it.
    func pollStaged(into buffer: UnsafeMutableRawBufferPointer, now: Instant) -> StagedResult {
        guard stagedHead < staged.count, let keypair = current, keypair.canSend(now: now) else { return .idle }
        let packet = staged[stagedHead]
        guard buffer.count >= WireGuardDevice.headroom + packet.count + WireGuardDevice.tailroom else { return .blocked }
        staged[stagedHead] = []
        stagedHead += 1
        if stagedHead == staged.count {
            staged.removeAll(keepingCapacity: true)
            stagedHead = 0
        }
        packet.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: buffer[WireGuardDevice.headroom...]).copyMemory(from: $0) }
        return .sent(seal(buffer, packetLength: packet.count, keypair: keypair, now: now))
    }

    // MARK: Receiving

    /// The cheap test a datagram from an address other than the endpoint must pass before any
    /// cryptography: it names one of this peer's sessions or the handshake message it sent last.
    func couldBeFromPeer(_ message: WireGuardMessage) -> Bool {
        switch message.type {
        case .transport:
            let index = message.receiverIndex
            return current?.localIndex == index || next?.localIndex == index || previous?.localIndex == index
        case .response: return pending?.localIndex == message.receiverIndex
        case .cookieReply: return lastMac1SenderIndex == message.receiverIndex
        default: return true
        }
    }

    func drop(_ reason: DropReason) -> Decapsulated {
        stats.dropped += 1
        return .dropped(reason)
    }

    func receiveTransport(_ buffer: UnsafeMutableRawBufferPointer, _ message: WireGuardMessage, _ now: Instant) -> Decapsulated {
        let index = message.receiverIndex
        let keypair: Keypair
        if let k = current, k.localIndex == index {
            keypair = k
        } else if let k = next, k.localIndex == index {
            keypair = k
        } else if let k = previous, k.localIndex == index {
            keypair = k
        } else {
            noteProblem(.unknownSession)
            return drop(.unknownReceiverIndex)
        }
        guard keypair.canReceive(now: now) else { return drop(.expiredKeys) }
        let counter = message.counter
        // A replay costs no decryption; the window itself moves only once the packet authenticates.
        guard keypair.replay.mayAccept(counter) else {
            stats.droppedReplayed += 1
            return drop(.replayed)
        }
        let length = message.bytes.count - TransportField.minimumSize
        let base = buffer.baseAddress!
        let opened = WGCrypto.open(
            key: keypair.receiveKey, counter: counter, aad: UnsafeRawBufferPointer(start: base, count: 0),
            inPlace: UnsafeMutableRawBufferPointer(start: base + TransportField.content, count: length),
            tag: base + TransportField.content + length)
        guard opened else {
            stats.droppedDecryption += 1
            return drop(.decryptionFailed)
        }
        guard keypair.replay.accept(counter) else {
            stats.droppedReplayed += 1
            return drop(.replayed)
        }
        if let since = lostSince, keypair === current {
            // The peer answers on the session we thought lost: it was only a pause.
            lostSince = nil
            heard = nil
            handshakeProblem = nil
            device.recovered = true
            emit(.sessionResumed(outage: now.since(since)))
        }
        // The first packet under `next` confirms the responder's new session (paper §5.4.6).
        if keypair === next {
            retire(previous)
            previous = current
            current = keypair
            next = nil
            timersHandshakeComplete(now)
            if stagedHead < staged.count { device.markReady(self) }
        }
        // keepKeyFreshReceiving: an initiator whose keys near REJECT_AFTER_TIME rekeys once.
        if keypair.isInitiator, !sentLastMinuteHandshake,
            now.since(keypair.created) >= WireGuardConstants.rejectAfterTime - WireGuardConstants.keepaliveTimeout
                - WireGuardConstants.rekeyTimeout
        {
            sentLastMinuteHandshake = true
            sendHandshakeInitiation(now, isRetry: false)
        }
        timersAnyAuthenticatedPacketTraversal(now)
        timersAnyAuthenticatedPacketReceived(now)
        stats.packetsReceived += 1
        if length == 0 {
            stats.keepalivesReceived += 1
            return .consumed
        }
        // Strip the padding: the inner IP header says how long the packet is.
        let content = UnsafeRawBufferPointer(start: base + TransportField.content, count: length)
        let innerLength: Int
        let sourceSlot: Int
        switch content[0] >> 4 {
        case 4 where length >= 20:
            innerLength = Int(UInt16(bigEndian: content.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
            sourceSlot = allowedIPs.lookup(v4: UInt32(bigEndian: content.loadUnaligned(fromByteOffset: 12, as: UInt32.self)))
        case 6 where length >= 40:
            innerLength = 40 + Int(UInt16(bigEndian: content.loadUnaligned(fromByteOffset: 4, as: UInt16.self)))
            sourceSlot = allowedIPs.lookup(
                v6High: UInt64(bigEndian: content.loadUnaligned(fromByteOffset: 8, as: UInt64.self)),
                low: UInt64(bigEndian: content.loadUnaligned(fromByteOffset: 16, as: UInt64.self)))
        default:
            return drop(.invalidInnerPacket)
        }
        guard innerLength <= length, innerLength > 0 else { return drop(.invalidInnerPacket) }
        timersDataReceived(now)
        // Cryptokey routing, incoming (paper §2): the peer speaks only for the addresses routed to it.
        guard sourceSlot == slot else {
            stats.droppedSourceNotAllowed += 1
            return drop(.sourceNotAllowed)
        }
        stats.bytesReceived += innerLength
        return .packet(TransportField.content..<TransportField.content + innerLength)
    }

    func receiveCookieReply(_ message: WireGuardMessage, _ now: Instant) -> Decapsulated {
        // Only for the handshake message we sent last (paper §5.4.7: its mac1 is the AAD).
        guard let index = lastMac1SenderIndex, message.receiverIndex == index else { return drop(.unknownReceiverIndex) }
        var cookie: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        let ok = withUnsafeMutableBytes(of: &cookie) { c -> Bool in
            c.copyMemory(from: message.slice(CookieReplyField.encryptedCookie, 32))
            return withUnsafeBytes(of: lastMac1Sent) { aad in
                WGCrypto.xopen(
                    key: identity.cookieKeyIncoming, nonce: message.slice(CookieReplyField.nonce, 24), aad: aad,
                    inPlace: UnsafeMutableRawBufferPointer(rebasing: c[0..<16]), tag: c.baseAddress! + 16)
            }
        }
        guard ok else { return drop(.invalidCookieReply) }
        receivedCookie = (cookie.0, cookie.1)
        receivedCookieAt = now
        stats.cookieRepliesReceived += 1
        noteProblem(.cookieRequired)
        return .consumed
    }

    /// The rest of an initiation, once the device found this peer by the static key its first half
    /// revealed (the device checked mac1 and, under load, mac2).
    func receiveInitiation(_ half: InitiationHalf, _ message: WireGuardMessage, _ now: Instant) throws(HandshakeFailure) {
        let (consumed, timestamp) = try Noise.finishInitiation(message, half, peer: identity)
        // Replay protection: the timestamp must grow (paper §5.1), and initiations come at most 50/s.
        guard lastTimestamp < timestamp else { throw .replayedTimestamp }
        if let last = lastInitiationConsumed, now.since(last) < WireGuardConstants.handshakeInitiationRate {
            throw .initiationFlood
        }
        lastTimestamp = timestamp
        lastInitiationConsumed = now
        timersAnyAuthenticatedPacketTraversal(now)
        timersAnyAuthenticatedPacketReceived(now)

        var response = [UInt8](repeating: 0, count: ResponseField.size)
        let localIndex = device.newLocalIndex(for: self)
        let created = response.withUnsafeMutableBytes { m -> Result<SessionKeys, HandshakeFailure> in
            do throws(HandshakeFailure) {
                let keys = try Noise.createResponse(m, to: consumed, peer: identity, localIndex: localIndex, random: device.random)
                addMacs(m, mac1At: ResponseField.mac1, senderIndex: localIndex, now: now)
                return .success(keys)
            } catch {
                return .failure(error)
            }
        }
        let keys: SessionKeys
        do {
            keys = try created.get()
        } catch {
            device.indices.remove(localIndex)
            throw error
        }
        device.queueControl(response, for: self)
        stats.handshakeResponsesSent += 1
        beginSession(keys, isInitiator: false, now)
        timersSessionDerived(now)
        timersAnyAuthenticatedPacketTraversal(now)
        timersAnyAuthenticatedPacketSent()
    }

    func receiveResponse(_ message: WireGuardMessage, _ now: Instant) throws(HandshakeFailure) {
        guard var initiation = pending, initiation.localIndex == message.receiverIndex else { throw .unexpectedResponse }
        let keys = try Noise.consumeResponse(message, pending: initiation, local: device.local, peer: identity)
        // The handshake's index now names the session (wireguard-go `SwapIndexForKeypair`).
        initiation.wipe()
        pending = nil
        timersAnyAuthenticatedPacketTraversal(now)
        timersAnyAuthenticatedPacketReceived(now)
        beginSession(keys, isInitiator: true, now)
        timersSessionDerived(now)
        timersHandshakeComplete(now)
        // The responder may use the session only once it hears from us (paper §5.4.6): confirm it now.
        sendKeepalive(now)
    }

    /// Installs new transport keys (wireguard-go `BeginSymmetricSession`); the keypairs pushed out retire.
    func beginSession(_ keys: SessionKeys, isInitiator: Bool, _ now: Instant) {
        let keypair = Keypair(
            sendKey: keys.send, receiveKey: keys.receive, created: now, isInitiator: isInitiator,
            localIndex: keys.localIndex, remoteIndex: keys.remoteIndex)
        if isInitiator {
            retire(previous)
            if let n = next {
                retire(current)
                next = nil
                previous = n
            } else {
                previous = current
            }
            current = keypair
        } else {
            // Unconfirmed until the initiator's first transport message arrives.
            retire(next)
            retire(previous)
            next = keypair
            previous = nil
        }
        sentLastMinuteHandshake = false
    }

    /// Every index this peer holds in the device's table (for checks).
    var localIndices: [UInt32] {
        [current?.localIndex, previous?.localIndex, next?.localIndex, pending?.localIndex].compactMap { $0 }
    }
}
