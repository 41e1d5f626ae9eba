/// Settings of one TCP connection.
public struct TCPConfig: Sendable {
    /// Our MSS: MTU minus the IP and TCP headers (RFC 9293 §3.7.1).
    public var mss: Int
    /// Receive and send buffers grow with the data in flight up to these caps.
    public var receiveBufferLimit: Int
    public var sendBufferLimit: Int
    /// How long TIME-WAIT lasts; short, because a forwarder's ports are virtual and plentiful.
    public var timeWait: UInt64
    /// Delayed ACKs wait at most this long (RFC 9293 §3.8.6.3: under 0.5 s; Linux uses 40 ms).
    public var delayedAck: UInt64
    public var initialRTO: UInt64
    public var minimumRTO: UInt64
    public var maximumRTO: UInt64
    /// Retransmissions of one segment before the connection is given up.
    public var maximumRetransmissions: Int
    /// Retransmissions of a SYN before an opening connection is given up (Linux: 6, about 2 minutes).
    public var maximumSynRetransmissions: Int
    public var congestionControl: CongestionAlgorithm
    /// The receive window a connection starts with; it grows towards `receiveBufferLimit` as the
    /// application reads faster (receive-buffer autotuning: twice what was read per round trip).
    public var initialReceiveWindow: Int

    public init(
        mss: Int = 1380, receiveBufferLimit: Int = 4 << 20, sendBufferLimit: Int = 4 << 20,
        timeWait: UInt64 = 2 * Nanos.second, delayedAck: UInt64 = 40 * Nanos.millisecond,
        initialRTO: UInt64 = Nanos.second, minimumRTO: UInt64 = 200 * Nanos.millisecond,
        maximumRTO: UInt64 = 60 * Nanos.second, maximumRetransmissions: Int = 12, maximumSynRetransmissions: Int = 6,
        congestionControl: CongestionAlgorithm = .bbr, initialReceiveWindow: Int = 128 << 10
    ) {
        self.mss = mss
        self.receiveBufferLimit = receiveBufferLimit
        self.sendBufferLimit = sendBufferLimit
        self.timeWait = timeWait
        self.delayedAck = delayedAck
        self.initialRTO = initialRTO
        self.minimumRTO = minimumRTO
        self.maximumRTO = maximumRTO
        self.maximumRetransmissions = maximumRetransmissions
        self.maximumSynRetransmissions = maximumSynRetransmissions
        self.congestionControl = congestionControl
        self.initialReceiveWindow = initialReceiveWindow
    }
}

/// Counters of one connection, for logs and tests.
public struct TCPStats: Equatable, Sendable {
    public var segmentsSent = 0
    public var segmentsReceived = 0
    public var bytesSent = 0
    public var bytesReceived = 0
    public var timeouts = 0
    public var fastRetransmits = 0
    /// Segments sent again: fast retransmits, SACK recovery and go-back-N after a timeout.
    public var retransmittedSegments = 0
    /// Retransmissions found lost again (SACKs for data sent after them arrived first).
    public var lostRetransmissions = 0
    public var outOfOrderSegments = 0
    public init() {}
}

/// The connection states of RFC 9293 §3.3.2.
public enum TCPState: Equatable, Sendable {
    case closed, listen, synSent, synReceived, established, finWait1, finWait2, closeWait, closing, lastAck, timeWait
}

/// Why a connection ended other than by an orderly close.
public enum TCPError: Error, Equatable, Sendable {
    /// The peer answered our SYN with RST.
    case refused
    /// The peer reset an established connection.
    case reset
    /// Retransmissions ran out.
    case timedOut
    /// An ICMP destination-unreachable error answered our SYN.
    case unreachable
}

/// One TCP connection, sans-I/O: segments in (`handleSegment`), segments out (`pollSegment`), the
/// application's bytes in and out through bounded buffers, one deadline (`nextDeadline`).
///
/// RFC 9293 for the state machine, RFC 7323 window scaling, RFC 6298 RTO with Karn's rule and backoff,
/// SACK (RFC 2018) both ways with RFC 6675 loss recovery (NewReno, RFC 6582, when the peer has no SACK),
/// lost retransmissions detected from later SACKs, a BBR-style model or NewReno for the congestion window
/// (`CongestionControl`), RFC 6928 initial window, delayed ACKs at most every second full segment, and a
/// receive window that grows with what the application reads. No Nagle delay: a forwarder must not add latency.
public final class TCPConnection {
    public let config: TCPConfig
    public let localPort: UInt16
    public let remotePort: UInt16
    public private(set) var state: TCPState
    public private(set) var error: TCPError?
    public private(set) var stats = TCPStats()

    // Send sequence space (RFC 9293 §3.3.1).
    let iss: SeqNumber
    var sndUna: SeqNumber
    var sndNxt: SeqNumber
    /// The highest sequence number sent so far (sndNxt goes back below it after a timeout).
    var sndMax: SeqNumber
    var sndWnd = 0
    var sndWl1 = SeqNumber(0)
    var sndWl2 = SeqNumber(0)
    /// Sequence number of the first byte in `sendBuffer`.
    var sendBase: SeqNumber
    let sendBuffer: ByteRing
    var finRequested = false
    var peerMSS = 536
    var sendShift: UInt8 = 0
    var receiveShift: UInt8 = 0
    var windowScaling = false
    /// Both SYNs carried SACK-permitted (RFC 2018 §2): our ACKs then report out-of-order data.
    var sackEnabled = false

    // Receive sequence space.
    var irs = SeqNumber(0)
    var rcvNxt = SeqNumber(0)
    let receiveBuffer: ByteRing
    var assembler = Assembler()
    public private(set) var finReceived = false
    /// The right edge we last advertised; never moved left (RFC 9293 §3.8.6.2.2).
    var advertisedEdge = SeqNumber(0)

    // Timers.
    var rtoDeadline: Instant?
    var ackDeadline: Instant?
    var timeWaitDeadline: Instant?
    var rto: UInt64
    var srtt: UInt64 = 0
    var rttvar: UInt64 = 0
    var hasRTTSample = false
    var timedSeq: SeqNumber?
    var timedAt = Instant.zero
    var retransmissions = 0

    // Congestion control and loss recovery (RFC 6675 §5).
    var cc: CongestionControl
    var cwnd: Int { cc.cwnd }
    var dupAcks = 0
    var scoreboard: SackScoreboard
    var inRecovery = false
    /// RFC 6675 RecoveryPoint (one past HighData when recovery began); also RFC 6582's `recover`, which
    /// keeps duplicate ACKs for data sent before a timeout from starting a fast retransmit.
    var recoveryPoint: SeqNumber
    /// One past RFC 6675 HighRxt, and RescueRxt.
    var highRxt: SeqNumber
    var rescueRxt: SeqNumber?
    /// When the segment at SND.UNA was last retransmitted, and how many octets were newly SACKed since a
    /// reordering window after it: more than DupThresh segments' worth means that copy was lost too (the
    /// idea of RFC 8985 RACK, for the one segment that blocks the cumulative ACK).
    var unaRetransmittedAt: Instant?
    var sackedSinceUnaRetransmit = 0
    var retransmitOne = false
    /// RFC 6675's DupThresh, raised when a retransmission proves spurious (the path reorders): the
    /// cumulative ACK covered the retransmitted segment sooner than a round trip after it was sent, so the
    /// original had arrived. Linux adapts its reordering metric the same way.
    var dupThresh = SackScoreboard.defaultDupThresh
    static let maximumDupThresh = 64
    /// The DupThresh in use: the adapted one, but never more than the segments in flight can show (less
    /// one), or a loss in a small flight would wait for the retransmission timer.
    var lossThreshold: Int {
        max(SackScoreboard.defaultDupThresh, min(dupThresh, flightSize / max(effectiveMSS, 1) - 1))
    }
    /// Retransmissions found spurious (the originals arrived).
    var spuriousRetransmissions = 0
    /// The segment at SND.UNA last sent again, and when: the timing test for a spurious retransmission.
    var unaRetransmission: (seq: SeqNumber, at: Instant)?
    /// Recovery entered by a retransmission timeout: everything unSACKed below RecoveryPoint is taken as
    /// lost and resent in order from SND.UNA (SND.NXT rewinds), skipping SACKed ranges.
    var recoveryAfterTimeout = false

    /// Data segments leave at the controller's pacing rate.
    var pacer = Pacer()

    // Delivery-rate rounds for the model: a round ends when data sent after its start is delivered
    // (an edge past `roundEnd`, SND.MAX when the round began), so it lasts at least one round trip.
    var delivered = 0
    var roundStart = Instant.zero
    var roundDelivered = 0
    var roundEnd: SeqNumber
    var roundAppLimited = false
    var roundRetransmitted = 0

    // Receive-window autotuning.
    var receiveSpace: Int
    var receiveSpaceStamp = Instant.zero
    var bytesReadSinceStamp = 0

    // Pending control output.
    var ackNow = false
    var fullSegmentsUnacked = 0
    var synPending = false
    var resetPending = false

    /// Active open (RFC 9293 §3.10.1): a SYN goes out at the first `pollSegment`.
    @_spi(OneTunInternals) public init(localPort: UInt16, remotePort: UInt16, iss: UInt32, config: TCPConfig = TCPConfig(), now: Instant) {
        self.config = config
        self.localPort = localPort
        self.remotePort = remotePort
        self.iss = SeqNumber(iss)
        sndUna = SeqNumber(iss)
        sndNxt = SeqNumber(iss)
        sndMax = SeqNumber(iss)
        sendBase = SeqNumber(iss) + 1
        recoveryPoint = SeqNumber(iss)
        highRxt = SeqNumber(iss)
        roundEnd = SeqNumber(iss)
        scoreboard = SackScoreboard(una: iss)
        sendBuffer = ByteRing(limit: config.sendBufferLimit)
        receiveBuffer = ByteRing(limit: config.receiveBufferLimit)
        rto = config.initialRTO
        cc = CongestionControl(algorithm: config.congestionControl, mss: config.mss)
        receiveSpace = max(min(config.initialReceiveWindow, config.receiveBufferLimit), 0)
        receiveSpaceStamp = now
        state = .synSent
        synPending = true
        while config.receiveBufferLimit >> Int(receiveShift) > 65_535 && receiveShift < 14 { receiveShift += 1 }
    }

    /// Passive open: a connection created for an incoming SYN (RFC 9293 §3.10.7.2, LISTEN).
    @_spi(OneTunInternals) public convenience init?(accepting syn: TCPRepr, iss: UInt32, config: TCPConfig = TCPConfig(), now: Instant) {
        guard syn.flags.contains(.syn), !syn.flags.contains(.ack), !syn.flags.contains(.rst) else { return nil }
        self.init(localPort: syn.destinationPort, remotePort: syn.sourcePort, iss: iss, config: config, now: now)
        state = .synReceived
        acceptSynOptions(syn)
        rcvNxt = irs + 1
        advertisedEdge = rcvNxt
    }

    // MARK: Application side

    /// Bytes the application may write now without exceeding the send buffer.
    public var writableBytes: Int {
        switch state {
        case .synSent, .synReceived, .established, .closeWait: finRequested ? 0 : sendBuffer.free
        default: 0
        }
    }

    /// Queues bytes to send; returns how many were accepted (backpressure: never more than the buffer has room for).
    public func send(_ data: UnsafeRawBufferPointer) -> Int {
        guard writableBytes > 0 else { return 0 }
        return sendBuffer.write(from: data)
    }

    /// Free space at the end of the send buffer, to fill in place (a socket read straight into it);
    /// follow with `commitSend`. Empty when nothing may be written. Valid until the next call on the connection.
    public func sendRegion(maxBytes: Int = 65_536) -> UnsafeMutableRawBufferPointer {
        guard writableBytes > 0 else { return UnsafeMutableRawBufferPointer(start: nil, count: 0) }
        return sendBuffer.writableRegion(maxBytes: maxBytes)
    }

    /// `n` bytes were placed at the start of the last `sendRegion`: queue them for sending.
    public func commitSend(_ n: Int) { sendBuffer.commit(n) }

    /// Contiguous received bytes, without copying; pass how many were used to `consume`.
    public func readable() -> UnsafeRawBufferPointer { receiveBuffer.readable() }

    public var readableBytes: Int { receiveBuffer.count }

    public func consume(_ n: Int) {
        receiveBuffer.consume(n)
        bytesReadSinceStamp += n
        // Tell the peer when the window opens substantially (RFC 9293 §3.8.6.2.2, receiver's SWS avoidance),
        // measured against what it was last told, as Linux's tcp_cleanup_rbuf does: the window now at
        // least doubles what the peer may still send, by at least one MSS, while that is at most half the
        // space. Measured against the window before this read instead, reads in chunks between one and two
        // MSS after a zero window would never announce it, and the peer would wait for its persist timer.
        let advertised = max(0, advertisedEdge - rcvNxt)
        let window = receiveWindow
        if 2 * advertised <= receiveSpace && window >= 2 * advertised && window - advertised >= config.mss { ackNow = true }
    }

    /// True once the peer's FIN has arrived and every byte before it has been read.
    public var isReadClosed: Bool { finReceived && receiveBuffer.count == 0 }

    /// Half-close: a FIN follows the queued data (RFC 9293 §3.10.4). Before the handshake completes the
    /// FIN waits for it, so data queued by a client that closed early is still delivered.
    public func close() {
        switch state {
        case .synSent, .synReceived, .established, .closeWait:
            finRequested = true
        default:
            break
        }
    }

    /// Resets the connection (RFC 9293 §3.10.5).
    public func abort() {
        switch state {
        case .synReceived, .established, .finWait1, .finWait2, .closeWait:
            resetPending = true
        default:
            break
        }
        enterClosed(error: nil)
    }

    public var isClosed: Bool { state == .closed && !resetPending }

    /// True once the connection is over for the application: closed, or in TIME-WAIT after both sides
    /// closed. `error` is nil for an orderly end.
    public var hasEnded: Bool { state == .closed || state == .timeWait }

    /// An ICMP destination-unreachable error quoted one of our segments: fatal while opening, soft after.
    @_spi(OneTunInternals) public func destinationUnreachable() {
        if state == .synSent || state == .synReceived { enterClosed(error: .unreachable) }
    }

    // MARK: Windows

    /// What the peer may send beyond RCV.NXT: the autotuned space less what the application has not read.
    var receiveWindow: Int { max(0, min(receiveBuffer.free, receiveSpace - receiveBuffer.count)) }

    var flightSize: Int { sndMax - sndUna }

    /// What the model compares with its BDP: the flight less what the receiver SACKed. Data above a hole
    /// has left the network; counting it kept a model that had overshot in DRAIN for as long as the hole
    /// lasted, pacing at a third of the bandwidth.
    var unsackedInFlight: Int { max(0, flightSize - scoreboard.sackedBytes) }

    var finSeq: SeqNumber? { finRequested ? sendBase + sendBuffer.count : nil }

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

    var effectiveMSS: Int { min(config.mss, peerMSS) }

    // MARK: Segments in

    /// Processes one segment for this connection (RFC 9293 §3.10.7). The payload is valid only during the call.
    @_spi(OneTunInternals) public func handleSegment(_ seg: TCPRepr, payload: UnsafeRawBufferPointer, now: Instant) {
        var seq = SeqNumber(seg.sequenceNumber)
        let ack = SeqNumber(seg.acknowledgmentNumber)
        var flags = seg.flags
        stats.segmentsReceived += 1
        switch state {
        case .closed, .listen:
            return
        case .synSent:
            // §3.10.7.3: first check the ACK, then RST, then SYN.
            if flags.contains(.ack) && (ack <= iss || ack > sndMax) {
                if !flags.contains(.rst) {
                    // <SEQ=SEG.ACK><CTL=RST>
                    resetPending = true
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
                takeRTTSample(ack, now)
                retransmissions = 0
                state = .established
                ackNow = true
            } else {
                // Simultaneous open (§3.10.7.3, fifth step): answer with SYN,ACK.
                state = .synReceived
                synPending = true
                sndNxt = iss
            }
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
                synPending = true
                return
            }
        }
        // §3.10.7.4 first: is the segment acceptable?
        let length = payload.count + (flags.contains(.syn) ? 1 : 0) + (flags.contains(.fin) ? 1 : 0)
        let window = receiveWindow
        let acceptable: Bool
        if length == 0 {
            acceptable = window == 0 ? seq == rcvNxt : seq.isInWindow(start: rcvNxt, length: window) || seq == rcvNxt
        } else {
            acceptable = window > 0
                && (seq.isInWindow(start: rcvNxt, length: window) || (seq + (length - 1)).isInWindow(start: rcvNxt, length: window))
        }
        if !acceptable {
            if !flags.contains(.rst) { ackNow = true }
            return
        }
        // Second: RST. RFC 5961 §3.2: only an exact match resets; an in-window one gets a challenge ACK.
        if flags.contains(.rst) {
            if seq == rcvNxt {
                enterClosed(error: state == .synReceived ? .refused : .reset)
            } else {
                ackNow = true
            }
            return
        }
        // Fourth: a SYN in a synchronized state gets a challenge ACK (RFC 5961 §4).
        if flags.contains(.syn) {
            ackNow = true
            return
        }
        // Fifth: no ACK, no processing.
        guard flags.contains(.ack) else { return }
        if state == .synReceived {
            guard ack > sndUna && ack <= sndMax else {
                resetPending = true
                pendingResetSeq = ack
                return
            }
            state = .established
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
            ackNow = true
            switch state {
            case .synReceived, .established:
                state = .closeWait
            case .finWait1:
                state = .closing
            case .finWait2:
                enterTimeWait(now)
            default:
                break
            }
        }
    }

    /// The sequence number of a RST answering an unacceptable ACK; nil for our own abort (SND.NXT).
    var pendingResetSeq: SeqNumber?

    func processAck(_ seg: TCPRepr, ack: SeqNumber, seq: SeqNumber, payloadLength: Int, now: Instant) {
        if ack > sndMax {
            // Acknowledges something not yet sent: ACK and drop (§3.10.7.4).
            ackNow = true
            return
        }
        let window = Int(seg.window) << Int(sendShift)
        let mss = effectiveMSS
        let oldUna = sndUna
        let sackedBefore = scoreboard.sackedBytes
        var acked = 0
        if ack > sndUna {
            acked = ack - sndUna
            let dataAcked = min(max(0, ack - sendBase), sendBuffer.count)
            if dataAcked > 0 {
                sendBuffer.consume(dataAcked)
                sendBase += dataAcked
            }
            sndUna = ack
            if sndNxt < sndUna { sndNxt = sndUna }
            scoreboard.ackAdvanced(to: ack.rawValue)
            takeRTTSample(ack, now)
            if retransmissions > 0 && hasRTTSample {
                // Forward progress ends the backoff (as Linux does): without it a lossy path whose
                // retransmissions are never timed (Karn) would keep the backed-off RTO for good.
                retransmissions = 0
                rto = computedRTO
            }
            retransmissions = 0
            // RFC 6298 §5.3: restart the timer when new data is acknowledged; stop it when all is.
            rtoDeadline = sndUna == sndMax ? nil : now.adding(rto)
        }
        // RFC 6675 §4 Update(): record the SACK blocks; a SACK can also time the segment we measure.
        var newlySacked = 0
        if sackEnabled && !seg.sackBlocks.isEmpty {
            for block in seg.sackBlocks {
                newlySacked += scoreboard.addSack(start: block.left, end: block.right, nxt: sndMax.rawValue)
            }
            if newlySacked > 0, let timed = timedSeq, scoreboard.isSacked(timed.rawValue) { takeRTTSample(nil, now) }
        }
        // Bytes newly delivered: cumulatively acknowledged, less what was SACKed before, plus what is newly SACKed.
        let newlyDelivered = acked + scoreboard.sackedBytes - sackedBefore
        delivered += max(newlyDelivered, 0)

        // RFC 5681 §2 duplicate ACK, or RFC 6675 §2: an ACK at SND.UNA carrying newly SACKed data.
        let duplicate = ack == oldUna && flightSize > 0
            && (newlySacked > 0 || (payloadLength == 0 && window == sndWnd && !seg.flags.contains(.fin)))
        if acked > 0 { dupAcks = 0 } else if duplicate { dupAcks += 1 }
        if acked > 0, let r = unaRetransmission, ack > r.seq {
            unaRetransmission = nil
            if cc.minRTT > 0, now.since(r.at) < cc.minRTT * 3 / 4 {
                // Acknowledged sooner than the retransmission could be: the original arrived, late.
                // Tolerate more reordering before calling a segment lost.
                spuriousRetransmissions += 1
                dupThresh = min(dupThresh * 2, Self.maximumDupThresh)
            }
        }

        if inRecovery {
            if ack >= recoveryPoint {
                inRecovery = false
                recoveryAfterTimeout = false
                unaRetransmittedAt = nil
                cc.recoveryEnded(flightSize: flightSize)
            } else if acked > 0 {
                if sackEnabled || recoveryAfterTimeout {
                    // A new SND.UNA hole already resent in this recovery: watch that copy from now on.
                    let resent = recoveryAfterTimeout ? sndUna < sndNxt : sndUna < highRxt
                    unaRetransmittedAt = resent ? now : nil
                    sackedSinceUnaRetransmit = 0
                } else {
                    // RFC 6582 §3.2 step 3, partial acknowledgment: retransmit the next hole.
                    retransmitOne = true
                    cc.deflate(acked: acked)
                }
            } else if duplicate && !sackEnabled {
                cc.inflate()
            }
        }
        if !inRecovery, flightSize > 0, ack >= recoveryPoint,
            dupAcks >= lossThreshold || (sackEnabled && scoreboard.isLost(sndUna.rawValue, dupThresh: lossThreshold, mss: mss))
        {
            // RFC 6675 §5 step 4 / RFC 6582 §3.2 step 2: enter recovery, retransmit the first lost segment.
            inRecovery = true
            recoveryPoint = sndMax
            highRxt = sndUna
            rescueRxt = nil
            unaRetransmittedAt = nil
            cc.lossDetected(flightSize: flightSize)
            if !sackEnabled { for _ in 0..<SackScoreboard.defaultDupThresh { cc.inflate() } }
            retransmitOne = true
            stats.fastRetransmits += 1
        }
        // Was the copy of SND.UNA's segment lost as well? SACKs arriving a reordering window (a quarter of
        // the minimum RTT) after one round trip cover data sent after it.
        if inRecovery, newlySacked > 0, let at = unaRetransmittedAt, !scoreboard.isSacked(sndUna.rawValue) {
            let minRTT = cc.minRTT > 0 ? cc.minRTT : srtt
            if now.since(at) >= minRTT + minRTT / 4 {
                sackedSinceUnaRetransmit += newlySacked
                if sackedSinceUnaRetransmit > (lossThreshold - 1) * mss {
                    unaRetransmittedAt = nil
                    retransmitOne = true
                    stats.lostRetransmissions += 1
                }
            }
        }
        if recoveryAfterTimeout { roundAppLimited = true }

        // Delivery-rate rounds for the model.
        if newlyDelivered > 0 {
            let deliveredEdge = scoreboard.highestSackedEnd.map { max(SeqNumber($0), sndUna) } ?? sndUna
            if roundStart == .zero {
                startRound(now)
            } else if deliveredEdge > roundEnd {
                // A round lasts at least the minimum RTT; a shorter one means a burst of old SACKed data
                // was counted again (after the scoreboard forgot it), not a faster path.
                let interval = max(now.since(roundStart), cc.minRTT)
                if interval > 0 {
                    let rate = Int(Double(delivered - roundDelivered) * 1e9 / Double(interval))
                    cc.roundEnded(
                        rate: rate, appLimited: roundAppLimited, inFlight: unsackedInFlight,
                        delivered: delivered - roundDelivered, lost: roundRetransmitted, now: now)
                }
                startRound(now)
            }
            cc.measureAggregation(newlyDelivered, now: now)
            cc.delivered(newlyDelivered, inRecovery: inRecovery)
            cc.advanceCycle(inFlight: unsackedInFlight, now: now)
        }
        if cc.probingRTT { cc.updateProbeRTT(inFlight: unsackedInFlight, now: now) }

        // A peer answering our probes of its closed window is alive: probing continues indefinitely.
        if ack == sndUna && window == 0 { retransmissions = 0 }
        // Window update (§3.10.7.4, SND.WL1/SND.WL2 rule).
        if sndWl1 < seq || (sndWl1 == seq && sndWl2 <= ack) {
            sndWnd = window
            sndWl1 = seq
            sndWl2 = ack
        }
        // Our FIN acknowledged?
        if let fin = finSeq, ack > fin {
            switch state {
            case .finWait1:
                state = finReceived ? .timeWait : .finWait2
                if finReceived { enterTimeWait(now) }
            case .closing:
                enterTimeWait(now)
            case .lastAck:
                enterClosed(error: nil)
            default:
                break
            }
        }
    }

    func startRound(_ now: Instant) {
        roundStart = now
        roundDelivered = delivered
        roundRetransmitted = 0
        roundEnd = sndMax
        roundAppLimited = false
    }

    /// RFC 6298 §2 with Karn's rule: only segments never retransmitted are timed.
    /// `ack` nil: the timed segment was SACKed.
    func takeRTTSample(_ ack: SeqNumber?, _ now: Instant) {
        guard let timed = timedSeq, ack.map({ $0 > timed }) ?? true else { return }
        timedSeq = nil
        let r = max(now.since(timedAt), 1)
        cc.rttSample(r, now: now)
        if !hasRTTSample {
            srtt = r
            rttvar = r / 2
            hasRTTSample = true
        } else {
            let delta = srtt > r ? srtt - r : r - srtt
            rttvar = (3 * rttvar + delta) / 4
            srtt = (7 * srtt + r) / 8
        }
        rto = computedRTO
    }

    /// RFC 6298 §2.3: RTO = SRTT + max(G, 4·RTTVAR), clamped to the configured bounds.
    var computedRTO: UInt64 {
        min(max(srtt + max(Nanos.millisecond, 4 * rttvar), config.minimumRTO), config.maximumRTO)
    }

    func receiveData(seq: SeqNumber, payload: UnsafeRawBufferPointer, now: Instant) {
        var offset = seq - rcvNxt
        var data = payload
        if offset < 0 {
            // Already received in part: keep the new tail.
            data = UnsafeRawBufferPointer(rebasing: payload[(-offset)...])
            offset = 0
        }
        guard !data.isEmpty else {
            ackNow = true
            return
        }
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
        autotuneReceiveSpace(now)
        if offset > 0 || !assembler.isEmpty {
            // Out of order, or filling a hole: ACK at once so the sender learns fast (RFC 5681 §4.2).
            ackNow = true
        } else {
            fullSegmentsUnacked += payload.count >= effectiveMSS ? 1 : 0
            if fullSegmentsUnacked >= 2 {
                ackNow = true
            } else if ackDeadline == nil {
                ackDeadline = now.adding(config.delayedAck)
            }
        }
    }

    /// Receive-buffer autotuning (after Linux's tcp_rcv_space_adjust): once per round trip, offer twice
    /// what the application read during it, up to `receiveBufferLimit`. A fast reader lets the sender's
    /// window double every round trip; a slow one keeps the buffer, and memory, small.
    func autotuneReceiveSpace(_ now: Instant) {
        guard receiveSpace < config.receiveBufferLimit else { return }
        let rtt = hasRTTSample ? max(srtt, Nanos.millisecond) : 100 * Nanos.millisecond
        let elapsed = now.since(receiveSpaceStamp)
        guard elapsed >= rtt else { return }
        let perRTT = Int(Double(bytesReadSinceStamp) * Double(rtt) / Double(elapsed))
        if 2 * perRTT > receiveSpace {
            receiveSpace = min(config.receiveBufferLimit, 2 * perRTT)
        }
        receiveSpaceStamp = now
        bytesReadSinceStamp = 0
    }

    func enterTimeWait(_ now: Instant) {
        state = .timeWait
        rtoDeadline = nil
        timeWaitDeadline = now.adding(config.timeWait)
    }

    func enterClosed(error: TCPError?) {
        state = .closed
        if self.error == nil { self.error = error }
        rtoDeadline = nil
        ackDeadline = nil
        timeWaitDeadline = nil
        ackNow = false
    }

    // MARK: Segments out

    /// The next segment to send: its header, and its payload written to `payload` (at least `mss` bytes).
    /// nil when there is nothing to send now.
    @_spi(OneTunInternals) public func pollSegment(payload: UnsafeMutableRawBufferPointer, now: Instant) -> (TCPRepr, Int)? {
        if resetPending {
            resetPending = false
            let seq = pendingResetSeq ?? sndMax
            pendingResetSeq = nil
            return (TCPRepr(sourcePort: localPort, destinationPort: remotePort, sequenceNumber: seq.rawValue, flags: .rst, window: 0), 0)
        }
        switch state {
        case .closed, .listen, .timeWait:
            return takeAck()
        case .synSent, .synReceived:
            guard synPending else { return takeAck() }
            synPending = false
            sndNxt = iss + 1
            if sndMax < sndNxt { sndMax = sndNxt }
            armRTO(now)
            if timedSeq == nil && retransmissions == 0 {
                timedSeq = iss
                timedAt = now
            }
            var repr = header(seq: iss, flags: state == .synSent ? .syn : [.syn, .ack])
            repr.maxSegmentSize = UInt16(clamping: config.mss)
            if state == .synSent || windowScaling { repr.windowScale = receiveShift }
            repr.sackPermitted = state == .synSent || sackEnabled
            repr.window = UInt16(clamping: receiveWindow)
            return (repr, 0)
        default:
            break
        }
        let mss = effectiveMSS
        // Data waits for its departure time; ACKs never do.
        guard pacer.allows(now) else {
            if hasDataToSend { pacer.waiting = true }
            return takeAck()
        }
        pacer.waiting = false
        // A retransmission of the first unacknowledged segment (fast retransmit, NewReno partial ACK, or a
        // retransmission found lost).
        if retransmitOne {
            retransmitOne = false
            if let out = retransmit(from: sndUna, length: mss, payload: payload, now: now) {
                highRxt = max(highRxt, sndUna + max(out.1, 1))
                unaRetransmittedAt = now
                sackedSinceUnaRetransmit = 0
                return paced(out, now)
            }
        }
        // What the window lets out: outside recovery min(SND.WND, cwnd) less the octets in flight; in SACK
        // recovery cwnd less RFC 6675's pipe, with NextSeg choosing what to send.
        var allowance = min(sndWnd, cwnd) - (sndNxt - sndUna)
        if recoveryAfterTimeout {
            // In flight: what was resent since the timeout and not SACKed since.
            allowance = min(sndWnd, cwnd) - max(0, (sndNxt - sndUna) - scoreboard.sackedBytes(below: sndNxt.rawValue))
        } else if inRecovery && sackEnabled {
            let pipe = scoreboard.pipe(highRxt: highRxt.rawValue, nxt: sndMax.rawValue, mss: mss, dupThresh: lossThreshold)
            allowance = cwnd - pipe
            guard allowance > 0 else { return takeAck() }
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
                    highRxt = max(highRxt, start + max(out.1, 1))
                    if start == sndUna {
                        unaRetransmittedAt = now
                        sackedSinceUnaRetransmit = 0
                    }
                    return paced(out, now)
                }
            case .unsackedBelowHighestSack:
                // Rule (3) is a SHOULD; under reordering or a closed receive window it resends segments
                // that are merely late, so we wait for them to be lost (or for the timer).
                allowance = 0
            case .rescue:
                // RFC 6675 rule (4): the segment MUST hold the highest unSACKed octet, so it ends there.
                let size = min(next!.length, segmentPayloadLimit)
                if let out = retransmit(from: SeqNumber(next!.end) - size, length: size, payload: payload, now: now) {
                    rescueRxt = recoveryPoint
                    return paced(out, now)
                }
            case .newData:
                // Rule (2): new data, within what the receiver allows.
                allowance = min(allowance, receiverRoom)
            case nil:
                allowance = 0
            }
        }
        // After a timeout SND.NXT went back to SND.UNA: the resend skips what the receiver SACKed.
        while sndNxt < sndMax, let end = scoreboard.sackedRangeEnd(containing: sndNxt.rawValue) {
            sndNxt = min(SeqNumber(end), sndMax)
        }
        if probeOne {
            // Zero-window probe (RFC 9293 §3.8.6.1), the way Linux sends it: an empty segment numbered
            // SND.UNA - 1, which any receiver answers with an ACK carrying its window. A probe holding a
            // byte beyond the window would move SND.MAX past what the receiver accepts, and every later
            // segment numbered from it would be dropped as out of window.
            probeOne = false
            return (header(seq: sndUna - 1, flags: .ack), 0)
        }
        // New data (or a go-back-N resend after a timeout).
        let unsent = sendBase + sendBuffer.count - sndNxt
        if unsent > 0 {
            let allowed = allowance
            if sndWnd == 0 && rtoDeadline == nil {
                // The persist timer: the RTO timer doubles as it while the window is closed.
                armRTO(now)
            }
            if allowed > 0 {
                let resend = sndNxt < sndMax
                let n = fill(payload, from: sndNxt, max: min(mss, allowed, resend ? sndMax - sndNxt : .max))
                if n > 0 {
                    let seq = sndNxt
                    sndNxt += n
                    stats.bytesSent += n
                    if resend {
                        stats.retransmittedSegments += 1
                        roundRetransmitted += n
                        if seq == sndUna {
                            unaRetransmittedAt = now
                            sackedSinceUnaRetransmit = 0
                        }
                    }
                    var flags: TCPFlags = .ack
                    if let fin = finSeq, sndNxt == fin {
                        flags.insert(.fin)
                        sndNxt += 1
                        finSent()
                    }
                    if sndNxt > sndMax {
                        if timedSeq == nil && retransmissions == 0 {
                            timedSeq = seq
                            timedAt = now
                        }
                        sndMax = sndNxt
                    }
                    if rtoDeadline == nil { armRTO(now) }
                    if unsent == n { flags.insert(.psh) }
                    return paced((header(seq: seq, flags: flags), n), now)
                }
            } else if sndWnd < cwnd {
                // Held back by the receiver's window, not the path: the round says nothing about bandwidth.
                roundAppLimited = true
            }
        } else if allowance >= mss {
            // Nothing to send though the window has room: the application limits this round.
            roundAppLimited = true
        }
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

    /// A data segment leaves now: the next one waits its turn at the pacing rate.
    func paced(_ out: (TCPRepr, Int), _ now: Instant) -> (TCPRepr, Int) {
        pacer.departed(out.1, rate: cc.pacingRate(srtt: hasRTTSample ? srtt : 0), mss: effectiveMSS, now: now)
        return out
    }

    /// Something besides an ACK would go out if pacing allowed: a retransmission, a probe, recovery's
    /// next segment, the FIN, or new data the windows let out.
    var hasDataToSend: Bool {
        if retransmitOne || probeOne || inRecovery { return true }
        if let fin = finSeq, sndNxt <= fin { return true }
        return sendBase + sendBuffer.count > sndNxt && sndNxt - sndUna < min(sndWnd, cwnd)
    }

    func finSent() {
        switch state {
        case .established: state = .finWait1
        case .closeWait: state = .lastAck
        default: break
        }
    }

    func takeAck() -> (TCPRepr, Int)? {
        guard ackNow, state != .closed else { return nil }
        return (header(seq: pureAckSequence, flags: .ack), 0)
    }

    func armRTO(_ now: Instant) { rtoDeadline = now.adding(rto) }

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
        // Karn's rule: a retransmitted segment is never timed.
        if let timed = timedSeq, timed >= seq, timed - seq <= n { timedSeq = nil }
        if seq == sndUna { unaRetransmission = (seq, now) }
        stats.bytesSent += n
        stats.retransmittedSegments += 1
        roundRetransmitted += n
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
        guard sackEnabled && !assembler.isEmpty else { return 0 }
        return 4 + 8 * min(assembler.islandCount, TCPSackBlocks.capacity)
    }

    /// The most data the next segment carries: the MSS less the SACK option's room (at least one byte).
    var segmentPayloadLimit: Int { max(1, effectiveMSS - sackOptionRoom) }

    /// Every segment but a SYN carries the current ACK and window; sending one clears pending ACKs.
    func header(seq: SeqNumber, flags: TCPFlags) -> TCPRepr {
        var flags = flags
        stats.segmentsSent += 1
        if state != .synSent { flags.insert(.ack) }
        ackNow = false
        ackDeadline = nil
        fullSegmentsUnacked = 0
        let window = min(receiveWindow >> Int(receiveShift), 65_535)
        let edge = rcvNxt + (window << Int(receiveShift))
        if edge > advertisedEdge { advertisedEdge = edge }
        var repr = TCPRepr(
            sourcePort: localPort, destinationPort: remotePort, sequenceNumber: seq.rawValue,
            acknowledgmentNumber: flags.contains(.ack) ? rcvNxt.rawValue : 0, flags: flags,
            window: UInt16(window))
        // RFC 2018 §4: report the islands above RCV.NXT, the most recently changed first.
        if sackEnabled && !assembler.isEmpty && !flags.contains(.syn) {
            repr.sackBlocks = assembler.sackBlocks(relativeTo: rcvNxt)
        }
        return repr
    }

    // MARK: Time

    /// The earliest of the timers (retransmission, delayed ACK, TIME-WAIT, and the departure time of a
    /// paced segment); no collection is built, as the stack asks after every poll.
    @_spi(OneTunInternals) public func nextDeadline() -> Instant? {
        var earliest = rtoDeadline
        if let d = ackDeadline, earliest.map({ d < $0 }) ?? true { earliest = d }
        if let d = timeWaitDeadline, earliest.map({ d < $0 }) ?? true { earliest = d }
        if pacer.waiting, earliest.map({ pacer.nextDeparture < $0 }) ?? true { earliest = pacer.nextDeparture }
        return earliest
    }

    @_spi(OneTunInternals) public func handleTimeout(now: Instant) {
        if pacer.waiting && pacer.allows(now) { pacer.waiting = false }
        if let d = ackDeadline, d <= now {
            ackDeadline = nil
            ackNow = true
        }
        if let d = timeWaitDeadline, d <= now {
            enterClosed(error: nil)
            return
        }
        if let d = rtoDeadline, d <= now {
            rtoDeadline = nil
            retransmissions += 1
            stats.timeouts += 1
            let limit = state == .synSent || state == .synReceived ? config.maximumSynRetransmissions : config.maximumRetransmissions
            guard retransmissions <= limit else {
                enterClosed(error: .timedOut)
                return
            }
            // RFC 6298 §5.5–5.7: back off, retransmit from SND.UNA; RFC 5681 §3.1: loss window of one segment.
            rto = min(rto * 2, config.maximumRTO)
            timedSeq = nil
            if state == .synSent || state == .synReceived {
                synPending = true
                return
            }
            if sndWnd == 0 {
                // The window is closed: probe it (RFC 9293 §3.8.6.1), not a loss.
                probeOne = true
            } else if flightSize > 0 {
                cc.timedOut(flightSize: flightSize)
                dupAcks = 0
                // A timeout means losses went undetected: back to the standard threshold (as Linux does
                // when it enters loss recovery).
                dupThresh = SackScoreboard.defaultDupThresh
                // Recovery from the timeout: RecoveryPoint doubles as RFC 6582 §3.2 step 1's `recover`, so
                // duplicate ACKs for data sent before the timeout start no fast retransmit.
                inRecovery = true
                recoveryAfterTimeout = true
                recoveryPoint = sndMax
                highRxt = sndUna
                unaRetransmittedAt = nil
                // RFC 2018 §8: a receiver may renege. The cumulative ACK stuck at data it SACKed says so at
                // once (Linux's tcp_timeout_mark_lost); otherwise a third timeout in a row forgets the SACKs.
                if retransmissions >= 3 || scoreboard.sackedRangeEnd(containing: sndUna.rawValue) != nil {
                    scoreboard.reset(una: sndUna.rawValue)
                }
                // Go back to SND.UNA; data and FIN go out again.
                sndNxt = sndUna
            }
            armRTO(now)
        }
    }

    var probeOne = false
}

extension TCPConnection {
    /// The congestion controller's state, for logs: window, model and bounds.
    public var congestionSummary: String {
        let bound = cc.inflightHigh == Int.max ? "none" : "\(cc.inflightHigh)"
        return "cwnd \(cwnd) B, bandwidth \(cc.bottleneckBandwidth * 8 / 1_000_000) Mbit/s, min RTT \(cc.minRTT / 1000) µs, srtt \(srtt / 1000) µs, inflight bound \(bound)"
    }
}

extension TCPConnection: CustomDebugStringConvertible {
    public var debugDescription: String {
        "\(state) una=\(sndUna.rawValue &- iss.rawValue) nxt=\(sndNxt.rawValue &- iss.rawValue) max=\(sndMax.rawValue &- iss.rawValue) "
            + "wnd=\(sndWnd) cwnd=\(cwnd) recovery=\(inRecovery) point=\(recoveryPoint.rawValue &- iss.rawValue) "
            + "highRxt=\(highRxt.rawValue &- iss.rawValue) sacked=\(scoreboard.sackedBytes)/\(scoreboard.blockCount) "
            + "rto=\(rto / Nanos.millisecond)ms retx=\(retransmissions) rcvNxt=\(rcvNxt.rawValue &- irs.rawValue) "
            + "rtoAt=\(String(describing: rtoDeadline)) ackAt=\(String(describing: ackDeadline)) probe=\(probeOne) "
            + "rwin=\(receiveWindow) space=\(receiveSpace) buffered=\(receiveBuffer.count) bw=\(cc.bottleneckBandwidth) minRTT=\(cc.minRTT / 1000)us"
    }
}
