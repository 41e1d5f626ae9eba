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

    public init(
        mss: Int = 1380, receiveBufferLimit: Int = 4 << 20, sendBufferLimit: Int = 4 << 20,
        timeWait: UInt64 = 2 * Nanos.second, delayedAck: UInt64 = 40 * Nanos.millisecond,
        initialRTO: UInt64 = Nanos.second, minimumRTO: UInt64 = 200 * Nanos.millisecond,
        maximumRTO: UInt64 = 60 * Nanos.second, maximumRetransmissions: Int = 12
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
}

/// One TCP connection, sans-I/O: segments in (`handleSegment`), segments out (`pollSegment`), the
/// application's bytes in and out through bounded buffers, one deadline (`nextDeadline`).
///
/// RFC 9293 for the state machine, RFC 7323 window scaling, RFC 6298 RTO with Karn's rule and backoff,
/// RFC 5681 slow start and congestion avoidance with RFC 6582 NewReno fast recovery, RFC 6928 initial
/// window, delayed ACKs at most every second full segment. No Nagle delay: a forwarder must not add latency.
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

    // Congestion control.
    var cwnd: Int
    var ssthresh = Int.max
    var dupAcks = 0
    var recover: SeqNumber
    var inFastRecovery = false
    var retransmitOne = false
    var bytesAckedInCA = 0

    // Pending control output.
    var ackNow = false
    var fullSegmentsUnacked = 0
    var synPending = false
    var resetPending = false

    /// Active open (RFC 9293 §3.10.1): a SYN goes out at the first `pollSegment`.
    public init(localPort: UInt16, remotePort: UInt16, iss: UInt32, config: TCPConfig = TCPConfig(), now: Instant) {
        self.config = config
        self.localPort = localPort
        self.remotePort = remotePort
        self.iss = SeqNumber(iss)
        sndUna = SeqNumber(iss)
        sndNxt = SeqNumber(iss)
        sndMax = SeqNumber(iss)
        sendBase = SeqNumber(iss) + 1
        recover = SeqNumber(iss)
        sendBuffer = ByteRing(limit: config.sendBufferLimit)
        receiveBuffer = ByteRing(limit: config.receiveBufferLimit)
        rto = config.initialRTO
        cwnd = 10 * config.mss
        state = .synSent
        synPending = true
        while config.receiveBufferLimit >> Int(receiveShift) > 65_535 && receiveShift < 14 { receiveShift += 1 }
    }

    /// Passive open: a connection created for an incoming SYN (RFC 9293 §3.10.7.2, LISTEN).
    public convenience init?(accepting syn: TCPRepr, iss: UInt32, config: TCPConfig = TCPConfig(), now: Instant) {
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

    /// Contiguous received bytes, without copying; pass how many were used to `consume`.
    public func readable() -> UnsafeRawBufferPointer { receiveBuffer.readable() }

    public var readableBytes: Int { receiveBuffer.count }

    public func consume(_ n: Int) {
        let before = receiveWindow
        receiveBuffer.consume(n)
        // Tell the peer when the window opens substantially (RFC 9293 §3.8.6.2.2, receiver's SWS avoidance).
        if before < config.mss && receiveWindow >= min(config.mss * 2, config.receiveBufferLimit / 2) { ackNow = true }
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

    // MARK: Windows

    var receiveWindow: Int { receiveBuffer.free }

    var flightSize: Int { sndMax - sndUna }

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
    }

    var effectiveMSS: Int { min(config.mss, peerMSS) }

    // MARK: Segments in

    /// Processes one segment for this connection (RFC 9293 §3.10.7). The payload is valid only during the call.
    public func handleSegment(_ seg: TCPRepr, payload: UnsafeRawBufferPointer, now: Instant) {
        let seq = SeqNumber(seg.sequenceNumber)
        let ack = SeqNumber(seg.acknowledgmentNumber)
        let flags = seg.flags
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
        if ack > sndUna {
            let acked = ack - sndUna
            let dataAcked = min(max(0, ack - sendBase), sendBuffer.count)
            if dataAcked > 0 {
                sendBuffer.consume(dataAcked)
                sendBase += dataAcked
            }
            sndUna = ack
            if sndNxt < sndUna { sndNxt = sndUna }
            takeRTTSample(ack, now)
            retransmissions = 0
            // RFC 6298 §5.3: restart the timer when new data is acknowledged; stop it when all is.
            rtoDeadline = sndUna == sndMax ? nil : now.adding(rto)
            growWindow(acked: acked, ack: ack)
            dupAcks = 0
        } else if ack == sndUna, payloadLength == 0, window == sndWnd, flightSize > 0, !seg.flags.contains(.fin) {
            // RFC 5681 §2: a duplicate ACK.
            dupAcks += 1
            if dupAcks == 3 && !inFastRecovery {
                // RFC 6582 §3.2 step 2: enter fast recovery and retransmit the first unacknowledged segment.
                ssthresh = max(flightSize / 2, 2 * effectiveMSS)
                cwnd = ssthresh + 3 * effectiveMSS
                recover = sndMax
                inFastRecovery = true
                retransmitOne = true
                timedSeq = nil
                stats.fastRetransmits += 1
            } else if inFastRecovery {
                cwnd += effectiveMSS
            }
        }
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

    func growWindow(acked: Int, ack: SeqNumber) {
        let mss = effectiveMSS
        if inFastRecovery {
            if ack > recover {
                // RFC 6582 §3.2 step 3, full acknowledgment: deflate the window.
                cwnd = min(ssthresh, max(flightSize, mss) + mss)
                inFastRecovery = false
            } else {
                // Partial acknowledgment: retransmit the next hole, deflate by what was acked.
                retransmitOne = true
                cwnd = max(cwnd - acked + mss, mss)
            }
            return
        }
        if cwnd < ssthresh {
            // RFC 5681 §3.1 slow start with appropriate byte counting (RFC 3465, L = 2 SMSS).
            cwnd += min(acked, 2 * mss)
        } else {
            bytesAckedInCA += acked
            if bytesAckedInCA >= cwnd {
                bytesAckedInCA -= cwnd
                cwnd += mss
            }
        }
        cwnd = min(cwnd, 1 << 30)
    }

    /// RFC 6298 §2 with Karn's rule: only segments never retransmitted are timed.
    func takeRTTSample(_ ack: SeqNumber, _ now: Instant) {
        guard let timed = timedSeq, ack > timed else { return }
        timedSeq = nil
        let r = max(now.since(timedAt), 1)
        if !hasRTTSample {
            srtt = r
            rttvar = r / 2
            hasRTTSample = true
        } else {
            let delta = srtt > r ? srtt - r : r - srtt
            rttvar = (3 * rttvar + delta) / 4
            srtt = (7 * srtt + r) / 8
        }
        rto = min(max(srtt + max(Nanos.millisecond, 4 * rttvar), config.minimumRTO), config.maximumRTO)
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
    public func pollSegment(payload: UnsafeMutableRawBufferPointer, now: Instant) -> (TCPRepr, Int)? {
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
        // A retransmission of the first unacknowledged segment (fast retransmit / NewReno partial ack).
        if retransmitOne {
            retransmitOne = false
            let n = fill(payload, from: sndUna, max: mss)
            stats.bytesSent += n
            if n > 0 || finSeq == sndUna {
                let fin = finSeq.map { sndUna + n == $0 } ?? false
                armRTO(now)
                return (header(seq: sndUna, flags: fin ? [.ack, .fin] : .ack), n)
            }
        }
        // New data (or a go-back-N resend after a timeout), within min(send window, cwnd).
        let window = min(sndWnd, cwnd)
        let inFlight = sndNxt - sndUna
        let unsent = sendBase + sendBuffer.count - sndNxt
        if unsent > 0 {
            var allowed = window - inFlight
            if probeOne {
                // Zero-window probe: one byte beyond the window (RFC 9293 §3.8.6.1).
                probeOne = false
                allowed = max(allowed, 1)
            } else if sndWnd == 0 && rtoDeadline == nil {
                // The persist timer: the RTO timer doubles as it while the window is closed.
                armRTO(now)
            }
            if allowed > 0 {
                let n = fill(payload, from: sndNxt, max: min(mss, allowed))
                if n > 0 {
                    let seq = sndNxt
                    sndNxt += n
                    stats.bytesSent += n
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
                    return (header(seq: seq, flags: flags), n)
                }
            }
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

    func finSent() {
        switch state {
        case .established: state = .finWait1
        case .closeWait: state = .lastAck
        default: break
        }
    }

    func takeAck() -> (TCPRepr, Int)? {
        guard ackNow, state != .closed else { return nil }
        // SND.MAX, not SND.NXT: after a timeout rewinds SND.NXT, an ACK numbered below the peer's RCV.NXT
        // would be unacceptable to it (RFC 9293 §3.10.7.4) and its acknowledgment ignored.
        return (header(seq: sndMax, flags: .ack), 0)
    }

    func armRTO(_ now: Instant) { rtoDeadline = now.adding(rto) }

    func fill(_ payload: UnsafeMutableRawBufferPointer, from seq: SeqNumber, max: Int) -> Int {
        let offset = seq - sendBase
        guard offset >= 0, offset < sendBuffer.count else { return 0 }
        let n = min(max, sendBuffer.count - offset, payload.count)
        return sendBuffer.peek(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: payload[0..<n]))
    }

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

    /// The earliest of the three timers; no collection is built, as the stack asks after every poll.
    public func nextDeadline() -> Instant? {
        var earliest = rtoDeadline
        if let d = ackDeadline, earliest.map({ d < $0 }) ?? true { earliest = d }
        if let d = timeWaitDeadline, earliest.map({ d < $0 }) ?? true { earliest = d }
        return earliest
    }

    public func handleTimeout(now: Instant) {
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
            guard retransmissions <= config.maximumRetransmissions else {
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
                // The window is closed: probe it with one byte (RFC 9293 §3.8.6.1), not a loss.
                sndNxt = sndUna
                probeOne = true
            } else if flightSize > 0 {
                ssthresh = max(flightSize / 2, 2 * effectiveMSS)
                cwnd = effectiveMSS
                inFastRecovery = false
                dupAcks = 0
                // Go back to SND.UNA; data and FIN go out again.
                sndNxt = sndUna
            }
            armRTO(now)
        }
    }

    var probeOne = false
}
