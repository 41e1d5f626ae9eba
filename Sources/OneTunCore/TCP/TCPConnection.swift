/// One TCP connection, sans-I/O: segments in (`handleSegment`), segments out (`pollSegment`), the
/// application's bytes in and out through bounded buffers, one deadline (`nextDeadline`).
///
/// RFC 9293 for the state machine, RFC 7323 window scaling, RFC 6298 RTO with Karn's rule and backoff,
/// SACK (RFC 2018) both ways with RFC 6675 loss recovery (NewReno, RFC 6582, when the peer has no SACK),
/// lost retransmissions detected from later SACKs, a BBR-style model or NewReno for the congestion window
/// (`CongestionControl`), paced sending (`Pacer`), RFC 6928 initial window, delayed ACKs at most every
/// second full segment, and a receive window that grows with what the application reads. No Nagle delay:
/// a forwarder must not add latency.
///
/// The class keeps the state machine and the sequence spaces; each mechanism with state of its own lives
/// in its own type: `RTTEstimator` (RFC 6298), `LossRecovery` (RFC 6675 / 6582 phases),
/// `SackScoreboard` (RFC 6675 §4), `DeliveryRounds` and `CongestionControl` (the model), `Pacer`,
/// `ReceiveAutotuner`, `Assembler` (out-of-order data), and `PendingOutput` (control segments owed).
public final class TCPConnection {
    public let config: TCPConfig
    /// The stack's memory budget, shared by every connection's buffers.
    let budget: MemoryBudget?
    /// When a segment last arrived (every exchange ends with one, an ACK at least): the stack gives the
    /// buffers of a connection idle since then back.
    @exclusivity(unchecked) var lastActivity = Instant.zero
    public let localPort: UInt16
    public let remotePort: UInt16
    @exclusivity(unchecked) var phase: TCPPhase
    /// The RFC 9293 state.
    public var state: TCPState { phase.state }
    /// Why the connection ended, once closed, when it was not an orderly close or the application's abort.
    public var error: TCPError? {
        if case .closed(let error) = phase { return error }
        return nil
    }
    @exclusivity(unchecked) public private(set) var stats = TCPStats()
    /// The stack holding this connection and its id there, while it does: a command of the application
    /// that leaves output owed (data, a FIN, a window update, a RST) queues the connection for the stack's
    /// `pollPacket` itself, so nothing waits for a timer when the application forgets to say so. Cleared
    /// by the stack when it lets the connection go, so it never outlives the stack.
    @exclusivity(unchecked) unowned(unsafe) var owner: TCPStack?
    @exclusivity(unchecked) var ownerID = -1

    // Send sequence space (RFC 9293 §3.3.1).
    let iss: SeqNumber
    @exclusivity(unchecked) var sndUna: SeqNumber
    @exclusivity(unchecked) var sndNxt: SeqNumber
    /// The highest sequence number sent so far (sndNxt goes back below it after a timeout).
    @exclusivity(unchecked) var sndMax: SeqNumber
    @exclusivity(unchecked) var sndWnd = 0
    @exclusivity(unchecked) var sndWl1 = SeqNumber(0)
    @exclusivity(unchecked) var sndWl2 = SeqNumber(0)
    /// Sequence number of the first byte in `sendBuffer`.
    @exclusivity(unchecked) var sendBase: SeqNumber
    let sendBuffer: ByteRing
    @exclusivity(unchecked) var finRequested = false
    @exclusivity(unchecked) var peerMSS = 536
    @exclusivity(unchecked) var sendShift: UInt8 = 0
    @exclusivity(unchecked) var receiveShift: UInt8 = 0
    @exclusivity(unchecked) var windowScaling = false
    /// Both SYNs carried SACK-permitted (RFC 2018 §2): our ACKs then report out-of-order data.
    @exclusivity(unchecked) var sackEnabled = false

    // Receive sequence space.
    @exclusivity(unchecked) var irs = SeqNumber(0)
    @exclusivity(unchecked) var rcvNxt = SeqNumber(0)
    let receiveBuffer: ByteRing
    @exclusivity(unchecked) var assembler = Assembler()
    @exclusivity(unchecked) public private(set) var finReceived = false
    /// The right edge we last advertised; never moved left (RFC 9293 §3.8.6.2.2).
    @exclusivity(unchecked) var advertisedEdge = SeqNumber(0)
    /// Data that arrived again, below RCV.NXT: reported once as the first SACK block of the next segment
    /// (D-SACK, RFC 2883), so the sender learns its retransmission was spurious (or the path duplicates)
    /// and undoes its window reduction; Linux's sender uses it to measure reordering too.
    @exclusivity(unchecked) var duplicateBlock: TCPSackBlock?
    @exclusivity(unchecked) var autotuner: ReceiveAutotuner

    // Output owed, and timers.
    @exclusivity(unchecked) var pending: PendingOutput = []
    /// The sequence number of a RST answering an unacceptable ACK; nil for our own abort (SND.MAX).
    @exclusivity(unchecked) var pendingResetSeq: SeqNumber?
    /// Full segments received since our last ACK (every second one is acknowledged at once).
    @exclusivity(unchecked) var fullSegmentsUnacked = 0
    @exclusivity(unchecked) var rtoDeadline: Instant?
    /// An active open fails at this time if still in SYN-SENT (`TCPConfig.connectTimeout`).
    var connectDeadline: Instant?
    @exclusivity(unchecked) var ackDeadline: Instant?
    @exclusivity(unchecked) var rtt: RTTEstimator
    /// Consecutive retransmission timeouts (reset by forward progress).
    @exclusivity(unchecked) var retransmissions = 0

    // Congestion control and loss recovery (RFC 6675 §5).
    @exclusivity(unchecked) var cc: CongestionControl
    @exclusivity(unchecked) var rounds: DeliveryRounds
    @exclusivity(unchecked) var rateSampler = DeliveryRateSampler()
    /// Data segments leave at the controller's pacing rate.
    @exclusivity(unchecked) var pacer = Pacer()
    @exclusivity(unchecked) var dupAcks = 0
    @exclusivity(unchecked) var scoreboard: SackScoreboard
    @exclusivity(unchecked) var recovery = LossRecovery.none
    /// RFC 6582's `recover`: SND.MAX when recovery last began. Duplicate ACKs for data sent before it
    /// start no new fast retransmit (this outlives the recovery episode).
    @exclusivity(unchecked) var recover: SeqNumber
    @exclusivity(unchecked) var spuriousCheck: SpuriousRetransmissionCheck?
    @exclusivity(unchecked) var lostRetransmissionWatch: LostRetransmissionWatch?
    /// RFC 6675's DupThresh, raised when a retransmission proves spurious (the path reorders): the
    /// cumulative ACK covered the retransmitted segment sooner than a round trip after it was sent, so the
    /// original had arrived. Linux adapts its reordering metric the same way.
    @exclusivity(unchecked) var dupThresh = SackScoreboard.defaultDupThresh
    /// Retransmissions found spurious (the originals arrived).
    @exclusivity(unchecked) var spuriousRetransmissions = 0
    static let maximumDupThresh = 64

    /// Active open (RFC 9293 §3.10.1): a SYN goes out at the first `pollSegment`.
    @_spi(OneTunInternals) public init(
        localPort: UInt16, remotePort: UInt16, iss: UInt32, config: TCPConfig = TCPConfig(), budget: MemoryBudget? = nil,
        now: Instant
    ) {
        self.budget = budget
        self.config = config
        self.localPort = localPort
        self.remotePort = remotePort
        self.iss = SeqNumber(iss)
        sndUna = SeqNumber(iss)
        sndNxt = SeqNumber(iss)
        sndMax = SeqNumber(iss)
        sendBase = SeqNumber(iss) + 1
        recover = SeqNumber(iss)
        rounds = DeliveryRounds(sndMax: SeqNumber(iss))
        scoreboard = SackScoreboard(una: iss)
        sendBuffer = ByteRing(limit: config.sendBufferLimit, budget: budget)
        receiveBuffer = ByteRing(limit: config.receiveBufferLimit, budget: budget)
        rtt = RTTEstimator(initialRTO: config.initialRTO, minimumRTO: config.minimumRTO, maximumRTO: config.maximumRTO)
        cc = CongestionControl(algorithm: config.congestionControl, mss: config.mss)
        autotuner = ReceiveAutotuner(initialWindow: config.initialReceiveWindow, limit: config.receiveBufferLimit, now: now)
        phase = .synSent
        pending = .syn
        if config.connectTimeout > 0 { connectDeadline = now.adding(config.connectTimeout) }
        while config.receiveBufferLimit >> Int(receiveShift) > 65_535 && receiveShift < 14 { receiveShift += 1 }
    }

    /// Passive open: a connection created for an incoming SYN (RFC 9293 §3.10.7.2, LISTEN).
    @_spi(OneTunInternals) public convenience init?(
        accepting syn: TCPRepr, iss: UInt32, config: TCPConfig = TCPConfig(), budget: MemoryBudget? = nil, now: Instant
    ) {
        guard syn.flags.contains(.syn), !syn.flags.contains(.ack), !syn.flags.contains(.rst) else { return nil }
        self.init(localPort: syn.destinationPort, remotePort: syn.sourcePort, iss: iss, config: config, budget: budget, now: now)
        phase = .synReceived
        connectDeadline = nil
        acceptSynOptions(syn)
        rcvNxt = irs + 1
        advertisedEdge = rcvNxt
    }

    // MARK: Application side

    /// Bytes the application may write now: the send buffer's room, within `sendSpace`. More queued than
    /// the window can carry soon only holds memory: four uploads at 4 MiB each made 16 MiB of a forwarder's
    /// resident size.
    public var writableBytes: Int {
        switch state {
        case .synSent, .synReceived, .established, .closeWait:
            finRequested ? 0 : max(0, min(sendBuffer.free, sendSpace - sendBuffer.count))
        default: 0
        }
    }

    static let minimumSendSpace = 256 << 10

    /// What the send buffer may hold (sent-not-yet-acknowledged plus unsent bytes), at least 256 KiB: twice
    /// the congestion window for Reno, after Linux's tcp_sndbuf_expand (which only ever grows; here the
    /// space follows the window down too), so that new data can still go out while recovery halves the
    /// window. BBR's window is already about twice the bandwidth-delay product (more in startup, plus the
    /// ACK-aggregation allowance) and does not halve on loss: one and a half of it keeps a lossless pipe full
    /// with a quarter less memory (2.1 MB instead of 2.75 a connection at 110 Mbit/s and 50 ms). While a
    /// hole holds SND.UNA back, the bytes SACKed beyond it stay in the buffer though they are no longer in
    /// flight, so the space is also at least what is outstanding plus half a window: new data keeps going
    /// out while the hole is repaired (Linux provisions three windows for BBR for the same reason). Once
    /// the stack's buffers exhaust their budget, no more than it has already (at least 16 KiB, so every
    /// connection moves).
    var sendSpace: Int {
        let window = cc.algorithm == .bbr ? max(cwnd, sndNxt - sndUna) + cwnd / 2 : 2 * cwnd
        let wanted = max(Self.minimumSendSpace, window)
        guard let budget, budget.isExhausted else { return wanted }
        return min(wanted, max(sendBuffer.capacity, 16 << 10))
    }

    /// Queues bytes to send; returns how many were accepted (backpressure: never more than the buffer has room for).
    public func send(_ data: UnsafeRawBufferPointer) -> Int {
        let room = writableBytes
        guard room > 0 else { return 0 }
        let n = sendBuffer.write(from: UnsafeRawBufferPointer(rebasing: data[0..<min(data.count, room)]))
        if n > 0 { outputOwed() }
        return n
    }

    /// Free space at the end of the send buffer, to fill in place (a socket read straight into it);
    /// follow with `commitSend`. Empty when nothing may be written. Valid until the next call on the connection.
    public func sendRegion(maxBytes: Int = 65_536) -> UnsafeMutableRawBufferPointer {
        let room = writableBytes
        guard room > 0 else { return UnsafeMutableRawBufferPointer(start: nil, count: 0) }
        return sendBuffer.writableRegion(maxBytes: min(maxBytes, room))
    }

    /// `n` bytes were placed at the start of the last `sendRegion`: queue them for sending.
    public func commitSend(_ n: Int) {
        sendBuffer.commit(n)
        if n > 0 { outputOwed() }
    }

    /// The application's command left something to send: the stack polls this connection next.
    @inline(__always) func outputOwed() {
        if let owner { owner.markReady(ownerID) }
    }

    /// Contiguous received bytes, without copying; pass how many were used to `consume`.
    public func readable() -> UnsafeRawBufferPointer { receiveBuffer.readable() }

    public var readableBytes: Int { receiveBuffer.count }

    public func consume(_ n: Int) {
        receiveBuffer.consume(n)
        autotuner.read(n)
        if hasEnded && receiveBuffer.count == 0 { receiveBuffer.compact() }
        // Tell the peer when the window opens substantially (RFC 9293 §3.8.6.2.2, receiver's SWS avoidance),
        // measured against what it was last told, as Linux's tcp_cleanup_rbuf does: the window now at
        // least doubles what the peer may still send, by at least one MSS, while that is at most half the
        // space. Measured against the window before this read instead, reads in chunks between one and two
        // MSS after a zero window would never announce it, and the peer would wait for its persist timer.
        // After the peer's FIN nothing more comes: a window update would only meet a closed socket (and
        // its RST).
        let advertised = max(0, advertisedEdge - rcvNxt)
        let window = receiveWindow
        if !finReceived && 2 * advertised <= receiveSpace && window >= 2 * advertised && window - advertised >= config.mss {
            pending.insert(.ack)
            outputOwed()
        }
    }

    /// True once the peer's FIN has arrived and every byte before it has been read.
    public var isReadClosed: Bool { finReceived && receiveBuffer.count == 0 }

    /// Half-close: a FIN follows the queued data (RFC 9293 §3.10.4). Before the handshake completes the
    /// FIN waits for it, so data queued by a client that closed early is still delivered.
    public func close() {
        switch state {
        case .synSent, .synReceived, .established, .closeWait:
            finRequested = true
            outputOwed()
        default:
            break
        }
    }

    /// Resets the connection (RFC 9293 §3.10.5).
    public func abort() {
        switch state {
        case .synReceived, .established, .finWait1, .finWait2, .closeWait:
            pending.insert(.reset)
        default:
            break
        }
        enterClosed(error: nil)
        outputOwed()
    }

    public var isClosed: Bool { state == .closed && !pending.contains(.reset) }

    /// True once the connection is over for the application: closed, or in TIME-WAIT after both sides
    /// closed. `error` is nil for an orderly end.
    public var hasEnded: Bool { state == .closed || state == .timeWait }

    /// An ICMP destination-unreachable error quoted one of our segments starting at `sequence`: fatal
    /// while opening, soft after. An off-path attacker who guesses the ports must also guess a sequence
    /// number in flight, SND.UNA ≤ SEG.SEQ < SND.NXT (RFC 5927 §4.1); others are ignored. True when the
    /// error was accepted.
    @_spi(OneTunInternals) public func destinationUnreachable(quoting sequence: UInt32) -> Bool {
        let seq = SeqNumber(sequence)
        guard sndUna <= seq, seq < max(sndNxt, sndMax) else { return false }
        if state == .synSent || state == .synReceived { enterClosed(error: .unreachable) }
        return true
    }

    // MARK: Windows

    var cwnd: Int { cc.cwnd }

    /// The autotuned space the peer may fill (`ReceiveAutotuner`).
    var receiveSpace: Int { autotuner.space }

    /// What the peer may send beyond RCV.NXT: the autotuned space less what the application has not read.
    var receiveWindow: Int { max(0, min(receiveBuffer.free, receiveSpace - receiveBuffer.count)) }

    var flightSize: Int { sndMax - sndUna }

    /// What the model compares with its BDP: the flight less what the receiver SACKed. Data above a hole
    /// has left the network; counting it kept a model that had overshot in DRAIN for as long as the hole
    /// lasted, pacing at a third of the bandwidth.
    var unsackedInFlight: Int { max(0, flightSize - scoreboard.sackedBytes) }

    var finSeq: SeqNumber? { finRequested ? sendBase + sendBuffer.count : nil }

    var effectiveMSS: Int { min(config.mss, peerMSS) }

    /// The DupThresh in use: the adapted one, but never more than the segments in flight can show (less
    /// one), or a loss in a small flight would wait for the retransmission timer.
    var lossThreshold: Int {
        max(SackScoreboard.defaultDupThresh, min(dupThresh, flightSize / max(effectiveMSS, 1) - 1))
    }

    func acceptSynOptions(_ syn: TCPRepr) {
        irs = SeqNumber(syn.sequenceNumber)
        if let mss = syn.maxSegmentSize { peerMSS = max(64, Int(mss)) }
        // RFC 7323 §2.2: scaling is on only when both SYNs carry the option.
        if let shift = syn.windowScale {
            windowScaling = true
            sendShift = min(shift, 14)
        } else {
            windowScaling = false
            receiveShift = 0
        }
        sackEnabled = syn.sackPermitted
        sndWnd = Int(syn.window)  // never scaled in a SYN
        sndWl1 = irs
        cc = CongestionControl(algorithm: config.congestionControl, mss: effectiveMSS)
    }

    // MARK: Segments in

    /// Processes one segment for this connection (RFC 9293 §3.10.7). The payload is valid only during the call.
    @_spi(OneTunInternals) public func handleSegment(_ seg: TCPRepr, payload: UnsafeRawBufferPointer, now: Instant) {
        lastActivity = now
        var seq = SeqNumber(seg.sequenceNumber)
        let ack = SeqNumber(seg.acknowledgmentNumber)
        var flags = seg.flags
        stats.segmentsReceived += 1
        switch state {
        case .closed, .listen:
            return
        case .synSent:
            handleSynSent(seg, now: now)
            return
        default:
            break
        }

        if state == .synReceived, flags.contains(.syn), seq == irs {
            // The peer's SYN again, now with an ACK (simultaneous open, RFC 9293 figure 8): trim the
            // duplicate SYN as BSD does and process the rest, so its ACK completes the handshake.
            flags.remove(.syn)
            seq += 1
            // A plain retransmitted SYN: our SYN,ACK was lost; send it again now.
            if !flags.contains(.ack) {
                pending.insert(.syn)
                return
            }
        }
        // §3.10.7.4 first: is the segment acceptable?
        guard isAcceptable(seq: seq, length: payload.count + (flags.contains(.syn) ? 1 : 0) + (flags.contains(.fin) ? 1 : 0)) else {
            if !flags.contains(.rst) {
                pending.insert(.ack)
                noteDuplicate(seq: seq, length: payload.count)
            }
            return
        }
        // Second: RST. RFC 5961 §3.2: only an exact match resets; an in-window one gets a challenge ACK.
        if flags.contains(.rst) {
            // RFC 1337 §3 (F1): TIME-WAIT ignores a RST. The exchange is complete; a RST now (the peer's
            // answer to a stray ACK once it has closed, say) must not turn it into a reset that costs the
            // application the bytes it has not read yet.
            if state == .timeWait { return }
            if seq == rcvNxt {
                enterClosed(error: state == .synReceived ? .refused : .reset)
            } else {
                pending.insert(.ack)
            }
            return
        }
        // Fourth: a SYN in a synchronized state gets a challenge ACK (RFC 5961 §4).
        if flags.contains(.syn) {
            pending.insert(.ack)
            return
        }
        // Fifth: no ACK, no processing.
        guard flags.contains(.ack) else { return }
        if state == .synReceived {
            guard ack > sndUna && ack <= sndMax else {
                pending.insert(.reset)
                pendingResetSeq = ack
                return
            }
            phase = .established
            sndWnd = Int(seg.window) << Int(sendShift)
            sndWl1 = seq
            sndWl2 = ack
        }
        processAck(seg, ack: ack, seq: seq, payloadLength: payload.count, now: now)
        if state == .closed { return }

        // Seventh: the text (§3.10.7.4).
        if payload.count > 0, state == .established || state == .finWait1 || state == .finWait2 {
            receiveData(seq: seq, payload: payload, now: now)
        }
        // Eighth: FIN, once everything before it has arrived.
        if flags.contains(.fin), seq + payload.count == rcvNxt, !finReceived {
            finReceived = true
            rcvNxt += 1
            pending.insert(.ack)
            switch state {
            case .synReceived, .established:
                phase = .closeWait
            case .finWait1:
                phase = .closing
            case .finWait2:
                enterTimeWait(now)
            default:
                break
            }
        }
    }

    /// SYN-SENT (§3.10.7.3): first check the ACK, then RST, then SYN.
    func handleSynSent(_ seg: TCPRepr, now: Instant) {
        let seq = SeqNumber(seg.sequenceNumber)
        let ack = SeqNumber(seg.acknowledgmentNumber)
        let flags = seg.flags
        if flags.contains(.ack) && (ack <= iss || ack > sndMax) {
            if !flags.contains(.rst) {
                // <SEQ=SEG.ACK><CTL=RST>
                pending.insert(.reset)
                pendingResetSeq = ack
            }
            return
        }
        if flags.contains(.rst) {
            if flags.contains(.ack) { enterClosed(error: .refused) }
            return
        }
        guard flags.contains(.syn) else { return }
        acceptSynOptions(seg)
        rcvNxt = irs + 1
        advertisedEdge = rcvNxt
        if flags.contains(.ack) {
            sndUna = ack
            sndWnd = Int(seg.window)
            sndWl1 = seq
            sndWl2 = ack
            rtoDeadline = nil
            measureRTT(ack: ack, now: now)
            retransmissions = 0
            phase = .established
            pending.insert(.ack)
        } else {
            // Simultaneous open (§3.10.7.3, fifth step): answer with SYN,ACK.
            phase = .synReceived
            pending.insert(.syn)
            sndNxt = iss
        }
    }

    /// RFC 9293 §3.10.7.4's acceptability test, for a segment occupying `length` sequence numbers.
    func isAcceptable(seq: SeqNumber, length: Int) -> Bool {
        let window = receiveWindow
        if length == 0 {
            return window == 0 ? seq == rcvNxt : seq.isInWindow(start: rcvNxt, length: window) || seq == rcvNxt
        }
        return window > 0
            && (seq.isInWindow(start: rcvNxt, length: window) || (seq + (length - 1)).isInWindow(start: rcvNxt, length: window))
    }

    /// The ACK of an acceptable segment (§3.10.7.4, fifth step), in the order the mechanisms need it:
    /// cumulative acknowledgment, SACK blocks, duplicate ACK counting, the spurious-retransmission test,
    /// loss recovery, the model, the send window, and our FIN.
    func processAck(_ seg: TCPRepr, ack: SeqNumber, seq: SeqNumber, payloadLength: Int, now: Instant) {
        if ack > sndMax {
            // Acknowledges something not yet sent: ACK and drop (§3.10.7.4).
            pending.insert(.ack)
            return
        }
        let window = Int(seg.window) << Int(sendShift)
        let oldUna = sndUna
        let sackedBefore = scoreboard.sackedBytes
        let acked = acknowledge(through: ack, now: now)
        let newlySacked = recordSacks(seg, now: now)
        // Bytes newly delivered: cumulatively acknowledged, less what was SACKed before, plus what is newly SACKed.
        let newlyDelivered = acked + scoreboard.sackedBytes - sackedBefore
        rounds.add(newlyDelivered)

        // RFC 5681 §2 duplicate ACK, or RFC 6675 §2: an ACK at SND.UNA carrying newly SACKed data.
        let duplicate = ack == oldUna && flightSize > 0
            && (newlySacked > 0 || (payloadLength == 0 && window == sndWnd && !seg.flags.contains(.fin)))
        if acked > 0 { dupAcks = 0 } else if duplicate { dupAcks += 1 }
        if acked > 0 { checkSpuriousRetransmission(ack: ack, now: now) }

        progressRecovery(ack: ack, acked: acked, duplicate: duplicate, now: now)
        enterRecoveryIfLost(ack: ack)
        watchLostRetransmission(newlySacked: newlySacked, now: now)
        if recovery.isAfterTimeout { rounds.appLimited = true }
        updateModel(newlyDelivered: newlyDelivered, now: now)
        updateSendWindow(window, seq: seq, ack: ack, acked: acked)
        // Our FIN acknowledged?
        if let fin = finSeq, ack > fin {
            switch state {
            case .finWait1:
                if finReceived { enterTimeWait(now) } else { phase = .finWait2 }
            case .closing:
                enterTimeWait(now)
            case .lastAck:
                enterClosed(error: nil)
            default:
                break
            }
        }
    }

    /// SND.UNA moves to `ack`: the send buffer frees what was acknowledged, the scoreboard forgets what is
    /// below, the RTT is measured, and the retransmission timer restarts (RFC 6298 §5.3) or stops. Returns
    /// the octets newly acknowledged.
    func acknowledge(through ack: SeqNumber, now: Instant) -> Int {
        guard ack > sndUna else { return 0 }
        let acked = ack - sndUna
        let dataAcked = min(max(0, ack - sendBase), sendBuffer.count)
        if dataAcked > 0 {
            sendBuffer.consume(dataAcked)
            sendBase += dataAcked
        }
        sndUna = ack
        if sndNxt < sndUna { sndNxt = sndUna }
        // `recover` compares modulo 2^32: left behind by over 2 GiB it would read as ahead, and no fast
        // retransmit could start. Outside recovery it follows SND.UNA (RFC 6582's test keeps its meaning).
        if !recovery.isActive && recover < sndUna { recover = sndUna }
        scoreboard.ackAdvanced(to: ack.rawValue)
        measureRTT(ack: ack, now: now)
        if retransmissions > 0 { rtt.endBackoff() }
        retransmissions = 0
        // RFC 6298 §5.3: restart the timer when new data is acknowledged; stop it when all is.
        rtoDeadline = sndUna == sndMax ? nil : now.adding(rtt.rto)
        return acked
    }

    /// RFC 6675 §4 Update(): records the SACK blocks; a SACK can also time the segment we measure. Returns
    /// the octets newly SACKed.
    func recordSacks(_ seg: TCPRepr, now: Instant) -> Int {
        guard sackEnabled && !seg.sackBlocks.isEmpty else { return 0 }
        var newlySacked = 0
        for block in seg.sackBlocks {
            newlySacked += scoreboard.addSack(start: block.left, end: block.right, nxt: sndMax.rawValue)
        }
        if newlySacked > 0, let timed = rtt.timedSeq, scoreboard.isSacked(timed.rawValue) { measureRTT(ack: nil, now: now) }
        return newlySacked
    }

    /// The cumulative ACK passed the last retransmission of SND.UNA's segment: was it needed?
    func checkSpuriousRetransmission(ack: SeqNumber, now: Instant) {
        guard let check = spuriousCheck, ack > check.seq else { return }
        spuriousCheck = nil
        if cc.minRTT > 0, now.since(check.sentAt) < cc.minRTT * 3 / 4 {
            // Acknowledged sooner than the retransmission could be: the original arrived, late.
            // Tolerate more reordering before calling a segment lost.
            spuriousRetransmissions += 1
            dupThresh = min(dupThresh * 2, Self.maximumDupThresh)
        }
    }

    /// While recovering: a full acknowledgment ends recovery; a partial one moves the watch to the new
    /// SND.UNA hole (SACK, or after a timeout) or resends it (NewReno, RFC 6582 §3.2 step 3).
    func progressRecovery(ack: SeqNumber, acked: Int, duplicate: Bool, now: Instant) {
        guard let point = recovery.point else { return }
        if ack >= point {
            recovery = .none
            lostRetransmissionWatch = nil
            cc.recoveryEnded(flightSize: flightSize)
        } else if acked > 0 {
            if sackEnabled || recovery.isAfterTimeout {
                // A new SND.UNA hole already resent in this recovery: watch that copy from now on.
                let resent = recovery.isAfterTimeout ? sndUna < sndNxt : sndUna < recovery.highRxt!
                lostRetransmissionWatch = resent ? LostRetransmissionWatch(since: now) : nil
            } else {
                // RFC 6582 §3.2 step 3, partial acknowledgment: retransmit the next hole.
                pending.insert(.retransmitFirst)
                cc.deflate(acked: acked)
            }
        } else if duplicate && !sackEnabled {
            cc.inflate()
        }
    }

    /// RFC 6675 §5 step 4 / RFC 6582 §3.2 step 2: DupThresh duplicate ACKs, or a SND.UNA the scoreboard
    /// finds lost, start fast recovery with a retransmission of the first segment.
    func enterRecoveryIfLost(ack: SeqNumber) {
        guard !recovery.isActive, flightSize > 0, ack >= recover else { return }
        let mss = effectiveMSS
        guard dupAcks >= lossThreshold || (sackEnabled && scoreboard.isLost(sndUna.rawValue, dupThresh: lossThreshold, mss: mss))
        else { return }
        recovery = .fast(point: sndMax, highRxt: sndUna, rescueRxt: nil)
        recover = sndMax
        lostRetransmissionWatch = nil
        cc.lossDetected(flightSize: flightSize)
        if !sackEnabled { for _ in 0..<SackScoreboard.defaultDupThresh { cc.inflate() } }
        pending.insert(.retransmitFirst)
        stats.fastRetransmits += 1
    }

    /// Was the copy of SND.UNA's segment lost as well? SACKs arriving a reordering window (a quarter of
    /// the minimum RTT) after one round trip cover data sent after it.
    func watchLostRetransmission(newlySacked: Int, now: Instant) {
        guard recovery.isActive, newlySacked > 0, let watch = lostRetransmissionWatch, !scoreboard.isSacked(sndUna.rawValue) else { return }
        let minRTT = cc.minRTT > 0 ? cc.minRTT : rtt.srtt
        guard now.since(watch.since) >= minRTT + minRTT / 4 else { return }
        let sacked = watch.sackedSince + newlySacked
        if sacked > (lossThreshold - 1) * effectiveMSS {
            lostRetransmissionWatch = nil
            pending.insert(.retransmitFirst)
            stats.lostRetransmissions += 1
        } else {
            lostRetransmissionWatch?.sackedSince = sacked
        }
    }

    /// The model's inputs: delivery-rate rounds, ACK aggregation, the window's growth, the gain cycle and
    /// PROBE_RTT.
    func updateModel(newlyDelivered: Int, now: Instant) {
        if newlyDelivered > 0 {
            let deliveredEdge = scoreboard.highestSackedEnd.map { max(SeqNumber($0), sndUna) } ?? sndUna
            if let rate = rateSampler.delivered(upTo: deliveredEdge, delivered: rounds.delivered, minRTT: cc.minRTT, now: now) {
                rounds.sample(rate)
            }
            if let round = rounds.advance(deliveredEdge: deliveredEdge, sndMax: sndMax, minRTT: cc.minRTT, now: now) {
                cc.roundEnded(
                    rate: round.rate, appLimited: round.appLimited, inFlight: unsackedInFlight,
                    delivered: round.delivered, lost: round.retransmitted, now: now)
            }
            cc.measureAggregation(newlyDelivered, now: now)
            cc.delivered(newlyDelivered, inRecovery: recovery.isActive)
            cc.advanceCycle(inFlight: unsackedInFlight, now: now)
        }
        if cc.probingRTT { cc.updateProbeRTT(inFlight: unsackedInFlight, now: now) }
    }

    /// Window update (§3.10.7.4, SND.WL1/SND.WL2 rule), and from every ACK that moved SND.UNA (`acked` > 0),
    /// as Linux's tcp_may_update_window does. SND.WND counts from SND.UNA: kept across an ACK that moved
    /// SND.UNA, it would slide the right edge past anything the peer offered (RFC 9293 §3.8.6.2.1). The rule
    /// alone keeps it when the peer resends data below SND.WL1: that segment is numbered lower but was sent
    /// later, and its ACK and window are the newest.
    func updateSendWindow(_ window: Int, seq: SeqNumber, ack: SeqNumber, acked: Int) {
        // A peer answering our probes of its closed window is alive: probing continues indefinitely.
        if ack == sndUna && window == 0 { retransmissions = 0 }
        if acked > 0 || sndWl1 < seq || (sndWl1 == seq && sndWl2 <= ack) {
            sndWnd = window
            sndWl1 = seq
            sndWl2 = ack
        }
    }

    /// RFC 6298 §2 with Karn's rule; the congestion controller takes the sample too. `ack` nil: the timed
    /// segment was SACKed.
    func measureRTT(ack: SeqNumber?, now: Instant) {
        if let r = rtt.measure(ack: ack, now: now) { cc.rttSample(r, now: now) }
    }

    /// RFC 2883 §4: a segment whose data (some or all) we hold already is reported as a D-SACK block.
    func noteDuplicate(seq: SeqNumber, length: Int) {
        guard sackEnabled, length > 0, seq < rcvNxt else { return }
        let end = min(seq + length, rcvNxt)
        duplicateBlock = TCPSackBlock(left: seq.rawValue, right: end.rawValue)
    }

    func receiveData(seq: SeqNumber, payload: UnsafeRawBufferPointer, now: Instant) {
        var offset = seq - rcvNxt
        var data = payload
        if offset < 0 {
            noteDuplicate(seq: seq, length: payload.count)
            // Already received in part: keep the new tail.
            data = UnsafeRawBufferPointer(rebasing: payload[(-offset)...])
            offset = 0
        }
        guard !data.isEmpty else {
            pending.insert(.ack)
            return
        }
        let hadHoles = !assembler.isEmpty
        let kept = receiveBuffer.write(at: offset, from: data)
        if kept > 0, assembler.add(offset: offset, length: kept) {
            let ready = assembler.removeFront()
            if ready > 0 {
                receiveBuffer.commit(ready)
                rcvNxt += ready
            }
        }
        stats.bytesReceived += kept
        if offset > 0 { stats.outOfOrderSegments += 1 }
        if budget?.isExhausted != true { autotuner.update(rtt: rtt.hasSample ? rtt.srtt : nil, now: now) }
        if offset > 0 || hadHoles {
            // Out of order, or filling a hole (in part or the last of them): ACK at once so the sender
            // learns fast (RFC 5681 §4.2).
            pending.insert(.ack)
        } else {
            fullSegmentsUnacked += payload.count >= effectiveMSS ? 1 : 0
            if fullSegmentsUnacked >= 2 {
                pending.insert(.ack)
            } else if ackDeadline == nil {
                ackDeadline = now.adding(config.delayedAck)
            }
        }
    }

    func enterTimeWait(_ now: Instant) {
        phase = .timeWait(until: now.adding(config.timeWait))
        rtoDeadline = nil
        releaseBuffers()
    }

    func enterClosed(error: TCPError?) {
        // The first reason stands: a connection already closed by a reset stays "reset".
        phase = .closed(self.error ?? error)
        rtoDeadline = nil
        ackDeadline = nil
        pending.remove(.ack)
        releaseBuffers()
    }

    /// Whether the buffers hold memory an idle connection could give back.
    var holdsBuffers: Bool { sendBuffer.capacity > 0 || receiveBuffer.capacity > 0 }

    /// Gives back the storage of buffers that hold nothing (everything sent was acknowledged, everything
    /// received was read): an idle connection then costs no buffer memory until data moves again.
    /// Returns the bytes given back.
    @discardableResult func releaseIdleBuffers() -> Int {
        let held = sendBuffer.capacity + receiveBuffer.capacity
        if sendBuffer.isEmpty && sndUna == sndMax { sendBuffer.compact() }
        if receiveBuffer.isEmpty { receiveBuffer.compact() }
        return held - sendBuffer.capacity - receiveBuffer.capacity
    }

    /// Nothing more will be sent or received: the buffers keep only what the application has yet to read.
    /// A connection lingers in TIME-WAIT for `timeWait`; at a few thousand short connections a second, their
    /// rings (64 KiB from the first client read) doubled a forwarder's resident size.
    func releaseBuffers() {
        sendBuffer.compact()
        receiveBuffer.compact()
        rateSampler.reset(releasingStorage: true)
        scoreboard.reset(una: sndUna.rawValue, releasingStorage: true)
    }

    // MARK: Segments out

    /// What the congestion and receive windows let out now, or a segment recovery chose.
    enum Allowance {
        case bytes(Int)
        case segment((TCPRepr, Int))
        /// Nothing but perhaps an ACK.
        case nothing
    }

    /// The next segment to send: its header, and its payload written to `payload` (at least `mss` bytes).
    /// nil when there is nothing to send now. Control first (RST, SYN), then, at the pacing rate, a
    /// retransmission of the first segment, what loss recovery chooses, a zero-window probe, new data (or
    /// a go-back-N resend after a timeout), and a bare FIN; an ACK otherwise if one is owed.
    @_spi(OneTunInternals) public func pollSegment(payload: UnsafeMutableRawBufferPointer, now: Instant) -> (TCPRepr, Int)? {
        if pending.contains(.reset) {
            pending.remove(.reset)
            let seq = pendingResetSeq ?? sndMax
            pendingResetSeq = nil
            return (TCPRepr(sourcePort: localPort, destinationPort: remotePort, sequenceNumber: seq.rawValue, flags: .rst, window: 0), 0)
        }
        switch state {
        case .closed, .listen, .timeWait:
            return takeAck()
        case .synSent, .synReceived:
            return pending.contains(.syn) ? synSegment(now) : takeAck()
        default:
            break
        }
        // Data waits for its departure time; ACKs never do.
        guard pacer.allows(now) else {
            if hasDataToSend { pacer.waiting = true }
            // A closed window needs the persist timer whatever pacing says: with no RTO armed and no
            // departure awaited, a lost window update would leave the connection with no deadline at all.
            if sndWnd == 0 && rtoDeadline == nil && sendBase + sendBuffer.count > sndNxt { armRTO(now) }
            return takeAck()
        }
        pacer.waiting = false
        if pending.contains(.retransmitFirst) {
            pending.remove(.retransmitFirst)
            if let out = retransmit(from: sndUna, length: effectiveMSS, payload: payload, now: now) {
                recovery.resent(through: sndUna + max(out.1, 1))
                lostRetransmissionWatch = LostRetransmissionWatch(since: now)
                return paced(out, now)
            }
        }
        let allowance: Int
        switch recoveryAllowance(payload: payload, now: now) {
        case .bytes(let n): allowance = n
        case .segment(let out): return paced(out, now)
        case .nothing: return takeAck()
        }
        // After a timeout SND.NXT went back to SND.UNA: the resend skips what the receiver SACKed.
        while sndNxt < sndMax, let end = scoreboard.sackedRangeEnd(containing: sndNxt.rawValue) {
            sndNxt = min(SeqNumber(end), sndMax)
        }
        if pending.contains(.probe) {
            // Zero-window probe (RFC 9293 §3.8.6.1), the way Linux sends it: an empty segment numbered
            // SND.UNA - 1, which any receiver answers with an ACK carrying its window. A probe holding a
            // byte beyond the window would move SND.MAX past what the receiver accepts, and every later
            // segment numbered from it would be dropped as out of window.
            pending.remove(.probe)
            return (header(seq: sndUna - 1, flags: .ack), 0)
        }
        if let out = newData(allowance: allowance, payload: payload, now: now) { return paced(out, now) }
        // A bare FIN once all data is out.
        if let fin = finSeq, sndNxt == fin {
            sndNxt += 1
            if sndNxt > sndMax { sndMax = sndNxt }
            finSent()
            armRTO(now)
            return (header(seq: fin, flags: [.ack, .fin]), 0)
        }
        return takeAck()
    }

    /// Our SYN or SYN,ACK (RFC 9293 §3.10.1, §3.10.7.2), timed unless it is a retransmission.
    func synSegment(_ now: Instant) -> (TCPRepr, Int) {
        pending.remove(.syn)
        sndNxt = iss + 1
        if sndMax < sndNxt { sndMax = sndNxt }
        armRTO(now)
        if !rtt.isTiming && retransmissions == 0 { rtt.time(iss, sentAt: now) }
        var repr = header(seq: iss, flags: state == .synSent ? .syn : [.syn, .ack])
        repr.maxSegmentSize = UInt16(clamping: config.mss)
        if state == .synSent || windowScaling { repr.windowScale = receiveShift }
        repr.sackPermitted = state == .synSent || sackEnabled
        repr.window = UInt16(clamping: receiveWindow)
        return (repr, 0)
    }

    /// What the window lets out: outside recovery min(SND.WND, cwnd) less the octets in flight; after a
    /// timeout, less only what was resent since and not SACKed; in SACK recovery cwnd less RFC 6675's
    /// pipe, with NextSeg choosing what to send (a lost segment, new data, or the rescue).
    func recoveryAllowance(payload: UnsafeMutableRawBufferPointer, now: Instant) -> Allowance {
        switch recovery {
        case .none:
            return .bytes(windowRoom)
        case .afterTimeout:
            // In flight: what was resent since the timeout and not SACKed since.
            return .bytes(min(sndWnd, cwnd) - max(0, (sndNxt - sndUna) - scoreboard.sackedBytes(below: sndNxt.rawValue)))
        case .fast(let point, let highRxt, let rescueRxt):
            guard sackEnabled else { return .bytes(windowRoom) }
            let mss = effectiveMSS
            let pipe = scoreboard.pipe(highRxt: highRxt.rawValue, nxt: sndMax.rawValue, mss: mss, dupThresh: lossThreshold)
            let allowance = cwnd - pipe
            guard allowance > 0 else { return .nothing }
            let unsent = sendBase + sendBuffer.count - sndMax
            let receiverRoom = sndWnd - (sndMax - sndUna)
            let next = scoreboard.nextSegment(
                highRxt: highRxt.rawValue, nxt: sndMax.rawValue, newDataAvailable: max(0, min(unsent, receiverRoom)),
                mss: mss, dupThresh: lossThreshold, rescueAllowed: rescueRxt.map { sndUna > $0 } ?? true)
            switch next?.rule {
            case .lost:
                let start = SeqNumber(next!.start)
                if let out = retransmit(from: start, length: next!.length, payload: payload, now: now) {
                    // What went out: with SACK blocks in the header a segment carries less than an MSS,
                    // and the rest of the lost range is still to resend.
                    recovery.resent(through: start + max(out.1, 1))
                    if start == sndUna { lostRetransmissionWatch = LostRetransmissionWatch(since: now) }
                    return .segment(out)
                }
                return .bytes(allowance)
            case .unsackedBelowHighestSack:
                // Rule (3) is a SHOULD; under reordering or a closed receive window it resends segments
                // that are merely late, so we wait for them to be lost (or for the timer).
                return .bytes(0)
            case .rescue:
                // RFC 6675 rule (4): the segment MUST hold the highest unSACKed octet, so it ends there.
                let size = min(next!.length, segmentPayloadLimit)
                if let out = retransmit(from: SeqNumber(next!.end) - size, length: size, payload: payload, now: now) {
                    recovery = .fast(point: point, highRxt: highRxt, rescueRxt: point)
                    return .segment(out)
                }
                return .bytes(allowance)
            case .newData:
                // Rule (2): new data, within what the receiver allows.
                return .bytes(min(allowance, receiverRoom))
            case nil:
                return .bytes(0)
            }
        }
    }

    /// New data, or a go-back-N resend after a timeout, within `allowance`; notes a round held back by the
    /// application or the receiver.
    func newData(allowance: Int, payload: UnsafeMutableRawBufferPointer, now: Instant) -> (TCPRepr, Int)? {
        let unsent = sendBase + sendBuffer.count - sndNxt
        guard unsent > 0 else {
            // Nothing to send though the window has room: the application limits this round.
            if allowance >= effectiveMSS { rounds.appLimited = true }
            return nil
        }
        if sndWnd == 0 && rtoDeadline == nil {
            // The persist timer: the RTO timer doubles as it while the window is closed.
            armRTO(now)
        }
        guard allowance > 0 else {
            // Held back by the receiver's window, not the path: the round says nothing about bandwidth.
            if sndWnd < cwnd { rounds.appLimited = true }
            return nil
        }
        let resend = sndNxt < sndMax
        // New data never passes the receiver's right edge, SND.UNA + SND.WND (RFC 9293 §3.8.6): after a
        // timeout the allowance counts only what is in flight, and SACKed bytes do not move that edge.
        let n = fill(payload, from: sndNxt, max: min(effectiveMSS, allowance, resend ? sndMax - sndNxt : max(0, sndUna + sndWnd - sndNxt)))
        guard n > 0 else { return nil }
        let seq = sndNxt
        sndNxt += n
        stats.bytesSent += n
        if resend {
            stats.retransmittedSegments += 1
            rounds.retransmitted += n
            if seq == sndUna { lostRetransmissionWatch = LostRetransmissionWatch(since: now) }
        }
        var flags: TCPFlags = .ack
        if let fin = finSeq, sndNxt == fin {
            flags.insert(.fin)
            sndNxt += 1
            finSent()
        }
        if sndNxt > sndMax {
            if !rtt.isTiming && retransmissions == 0 { rtt.time(seq, sentAt: now) }
            rateSampler.sent(
                end: sndNxt, delivered: rounds.delivered, wasIdle: sndMax == sndUna,
                spacing: max(effectiveMSS, cwnd / (DeliveryRateSampler.capacity / 2)), now: now)
            sndMax = sndNxt
        }
        if rtoDeadline == nil { armRTO(now) }
        if unsent == n { flags.insert(.psh) }
        return (header(seq: seq, flags: flags), n)
    }

    /// A data segment leaves now: the next one waits its turn at the pacing rate.
    func paced(_ out: (TCPRepr, Int), _ now: Instant) -> (TCPRepr, Int) {
        pacer.departed(out.1, rate: cc.pacingRate(srtt: rtt.hasSample ? rtt.srtt : 0), mss: effectiveMSS, now: now)
        return out
    }

    /// Something besides an ACK would go out if pacing allowed: a retransmission, a probe, recovery's
    /// next segment, the FIN, or new data the windows let out.
    var hasDataToSend: Bool {
        if !pending.isDisjoint(with: [.retransmitFirst, .probe]) || recovery.isActive { return true }
        if let fin = finSeq, sndNxt <= fin { return true }
        return sendBase + sendBuffer.count > sndNxt && windowRoom > 0
    }

    /// Outside recovery: what min(SND.WND, cwnd) leaves after the octets in flight (negative when a
    /// window shrank below the flight).
    var windowRoom: Int { min(sndWnd, cwnd) - (sndNxt - sndUna) }

    func finSent() {
        switch state {
        case .established: phase = .finWait1
        case .closeWait: phase = .lastAck
        default: break
        }
    }

    func takeAck() -> (TCPRepr, Int)? {
        guard pending.contains(.ack), state != .closed else { return nil }
        return (header(seq: pureAckSequence, flags: .ack), 0)
    }

    func armRTO(_ now: Instant) { rtoDeadline = now.adding(rtt.rto) }

    /// The sequence number of an empty ACK: SND.MAX, not SND.NXT (after a timeout rewinds SND.NXT, an ACK
    /// numbered below the peer's RCV.NXT could be unacceptable to it, RFC 9293 §3.10.7.4), but never past
    /// the right edge of the peer's window: with a closed window only SEG.SEQ = RCV.NXT is acceptable.
    var pureAckSequence: SeqNumber {
        let edge = sndUna + sndWnd
        return sndMax > edge ? max(edge, sndUna) : sndMax
    }

    /// Sends again up to `length` octets from `seq` (with the FIN if they reach it and it was sent before).
    func retransmit(from seq: SeqNumber, length: Int, payload: UnsafeMutableRawBufferPointer, now: Instant) -> (TCPRepr, Int)? {
        let n = fill(payload, from: seq, max: min(length, effectiveMSS))
        let fin = finSeq.map { seq + n == $0 && sndMax > $0 } ?? false
        guard n > 0 || fin else { return nil }
        rtt.retransmitted(from: seq, length: n)
        if seq == sndUna { spuriousCheck = SpuriousRetransmissionCheck(seq: seq, sentAt: now) }
        stats.bytesSent += n
        stats.retransmittedSegments += 1
        rounds.retransmitted += n
        if rtoDeadline == nil { armRTO(now) }
        return (header(seq: seq, flags: fin ? [.ack, .fin] : .ack), n)
    }

    func fill(_ payload: UnsafeMutableRawBufferPointer, from seq: SeqNumber, max: Int) -> Int {
        let offset = seq - sendBase
        guard offset >= 0, offset < sendBuffer.count else { return 0 }
        let n = min(max, sendBuffer.count - offset, payload.count, segmentPayloadLimit)
        return sendBuffer.peek(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: payload[0..<n]))
    }

    /// Header bytes the SACK option takes in the next segment (NOP, NOP, kind, length, 8 per block): they
    /// come out of the MSS, which counts data only (RFC 9293 §3.7.1; Linux's tcp_current_mss), or a full
    /// segment would exceed the MTU while the receive side has holes.
    var sackOptionRoom: Int {
        guard sackEnabled else { return 0 }
        let blocks = min((assembler.isEmpty ? 0 : assembler.islandCount) + (duplicateBlock == nil ? 0 : 1), TCPSackBlocks.capacity)
        return blocks == 0 ? 0 : 4 + 8 * blocks
    }

    /// The TCP header length of the next data segment: no options but SACK blocks. The stack places the
    /// payload after it, so `pollSegment` writes it once, straight into the packet.
    @_spi(OneTunInternals) public var dataHeaderLength: Int { TCPSegment.minimumHeaderLength + sackOptionRoom }

    /// The most data the next segment carries: the MSS less the SACK option's room (at least one byte).
    var segmentPayloadLimit: Int { max(1, effectiveMSS - sackOptionRoom) }

    /// Every segment but a SYN carries the current ACK and window; sending one clears pending ACKs.
    func header(seq: SeqNumber, flags: TCPFlags) -> TCPRepr {
        var flags = flags
        stats.segmentsSent += 1
        if state != .synSent { flags.insert(.ack) }
        pending.remove(.ack)
        ackDeadline = nil
        fullSegmentsUnacked = 0
        let window = min(receiveWindow >> Int(receiveShift), 65_535)
        let edge = rcvNxt + (window << Int(receiveShift))
        if edge > advertisedEdge { advertisedEdge = edge }
        var repr = TCPRepr(
            sourcePort: localPort, destinationPort: remotePort, sequenceNumber: seq.rawValue,
            acknowledgmentNumber: flags.contains(.ack) ? rcvNxt.rawValue : 0, flags: flags,
            window: UInt16(window))
        // RFC 2018 §4: report the islands above RCV.NXT, the most recently changed first; a D-SACK block
        // comes first, once (RFC 2883 §4).
        if sackEnabled && !flags.contains(.syn) {
            if let duplicate = duplicateBlock {
                duplicateBlock = nil
                repr.sackBlocks.append(duplicate)
                for block in assembler.sackBlocks(relativeTo: rcvNxt, maxBlocks: TCPSackBlocks.capacity - 1) {
                    repr.sackBlocks.append(block)
                }
            } else if !assembler.isEmpty {
                repr.sackBlocks = assembler.sackBlocks(relativeTo: rcvNxt)
            }
        }
        return repr
    }

    // MARK: Time

    /// The earliest of the timers (retransmission, delayed ACK, TIME-WAIT, and the departure time of a
    /// paced segment); no collection is built, as the stack asks after every poll.
    @_spi(OneTunInternals) public func nextDeadline() -> Instant? {
        var earliest = rtoDeadline
        if let d = ackDeadline, earliest.map({ d < $0 }) ?? true { earliest = d }
        if case .timeWait(let d) = phase, earliest.map({ d < $0 }) ?? true { earliest = d }
        if pacer.waiting, earliest.map({ pacer.nextDeparture < $0 }) ?? true { earliest = pacer.nextDeparture }
        if case .synSent = phase, let d = connectDeadline, earliest.map({ d < $0 }) ?? true { earliest = d }
        return earliest
    }

    @_spi(OneTunInternals) public func handleTimeout(now: Instant) {
        if pacer.waiting && pacer.allows(now) { pacer.waiting = false }
        if let d = ackDeadline, d <= now {
            ackDeadline = nil
            pending.insert(.ack)
        }
        if case .timeWait(let d) = phase, d <= now {
            enterClosed(error: nil)
            return
        }
        if case .synSent = phase, let d = connectDeadline, d <= now {
            enterClosed(error: .timedOut)
            return
        }
        if let d = rtoDeadline, d <= now {
            rtoDeadline = nil
            retransmissionTimeout(now)
        }
    }

    /// The tunnel under this connection came back after an outage: a retransmission timer that backed
    /// off during it fires now, as its backoff measured the outage, not the path. True when it did.
    @_spi(OneTunInternals) public func pathRecovered(now: Instant) -> Bool {
        guard retransmissions > 0, rtoDeadline != nil else { return false }
        rtt.endBackoff()
        rtoDeadline = now
        return true
    }

    /// RFC 6298 §5.5–5.7: back off and retransmit from SND.UNA; RFC 5681 §3.1: a loss window of one
    /// segment. While the window is closed the timer is the persist timer and probes instead.
    func retransmissionTimeout(_ now: Instant) {
        retransmissions += 1
        stats.timeouts += 1
        let limit = state == .synSent || state == .synReceived ? config.maximumSynRetransmissions : config.maximumRetransmissions
        guard retransmissions <= limit else {
            enterClosed(error: .timedOut)
            return
        }
        rtt.backOff()
        rtt.cancel()
        if state == .synSent || state == .synReceived {
            pending.insert(.syn)
            return
        }
        if sndWnd == 0 {
            // The window is closed: probe it (RFC 9293 §3.8.6.1), not a loss.
            pending.insert(.probe)
        } else if flightSize > 0 {
            cc.timedOut(flightSize: flightSize)
            dupAcks = 0
            // A timeout means losses went undetected: back to the standard threshold (as Linux does
            // when it enters loss recovery).
            dupThresh = SackScoreboard.defaultDupThresh
            // Recovery from the timeout: RecoveryPoint doubles as RFC 6582 §3.2 step 1's `recover`, so
            // duplicate ACKs for data sent before the timeout start no fast retransmit.
            recovery = .afterTimeout(point: sndMax, highRxt: sndUna)
            recover = sndMax
            lostRetransmissionWatch = nil
            // RFC 2018 §8: a receiver may renege. The cumulative ACK stuck at data it SACKed says so at
            // once (Linux's tcp_timeout_mark_lost); otherwise a third timeout in a row forgets the SACKs.
            if retransmissions >= 3 || scoreboard.sackedRangeEnd(containing: sndUna.rawValue) != nil {
                scoreboard.reset(una: sndUna.rawValue)
            }
            // Go back to SND.UNA; data and FIN go out again.
            sndNxt = sndUna
            rateSampler.reset()
        }
        armRTO(now)
    }
}

extension TCPConnection {
    /// The congestion controller's state, for logs: window, model and bounds.
    public var congestionSummary: String {
        let bound = cc.inflightHigh == Int.max ? "none" : "\(cc.inflightHigh)"
        return "cwnd \(cwnd) B, bandwidth \(cc.bottleneckBandwidth * 8 / 1_000_000) Mbit/s, min RTT \(cc.minRTT / 1000) µs, srtt \(rtt.srtt / 1000) µs, inflight bound \(bound)"
    }
}

extension TCPConnection: CustomDebugStringConvertible {
    public var debugDescription: String {
        "\(state) una=\(sndUna.rawValue &- iss.rawValue) nxt=\(sndNxt.rawValue &- iss.rawValue) max=\(sndMax.rawValue &- iss.rawValue) "
            + "wnd=\(sndWnd) cwnd=\(cwnd) recovery=\(recovery) recover=\(recover.rawValue &- iss.rawValue) "
            + "sacked=\(scoreboard.sackedBytes)/\(scoreboard.blockCount) "
            + "rto=\(rtt.rto / Nanos.millisecond)ms retx=\(retransmissions) rcvNxt=\(rcvNxt.rawValue &- irs.rawValue) "
            + "rtoAt=\(String(describing: rtoDeadline)) ackAt=\(String(describing: ackDeadline)) pending=\(pending.rawValue) "
            + "rwin=\(receiveWindow) space=\(receiveSpace) buffered=\(receiveBuffer.count) bw=\(cc.bottleneckBandwidth) minRTT=\(cc.minRTT / 1000)us"
    }
}
