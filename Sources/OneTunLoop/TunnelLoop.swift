import CUV
import Glibc
import Logging
@_spi(OneTunInternals) import OneTunCore

/// What rides inside the tunnel: it consumes inner IP packets and produces them, sans-I/O, with its own
/// deadline. The loop asks it for packets after every batch of inputs.
public protocol TunnelPayload: AnyObject {
    /// One inner IP packet from the peer; the bytes are valid only during the call.
    func receive(packet: UnsafeRawBufferPointer, now: Instant)
    /// Writes the next outgoing inner IP packet at the start of `buffer`; nil when there is none.
    func pollPacket(into buffer: UnsafeMutableRawBufferPointer, now: Instant) -> Int?
    func nextDeadline() -> Instant?
    func handleTimeout(now: Instant)
}

/// Errors the loop reports at start-up, each naming the culprit.
public struct LoopError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }

    static func uv(_ what: String, _ code: Int32) -> LoopError {
        LoopError("\(what): \(String(cString: uv_strerror(code)))")
    }
}

/// A sans-I/O core the loop can drive: datagrams from the endpoint in, datagrams for it out, one deadline.
/// `TunnelCore` is one; `PayloadCore` adapts a `TunnelPayload` riding in a bare WireGuard tunnel.
public protocol DatagramCore: AnyObject {
    func handleDatagram(_ buffer: UnsafeMutableRawBufferPointer, length: Int, now: Instant)
    func pollTransmit(into buffer: UnsafeMutableRawBufferPointer, now: Instant) -> Int?
    func nextDeadline() -> Instant?
    func handleTimeout(now: Instant)
    /// Starts the handshake; `wallClockOffset` is wall-clock ns minus `now`.
    func start(now: Instant, wallClockOffset: Int64)
    var isEstablished: Bool { get }
    /// The buffer `pollTransmit` needs for one datagram (it grows with the MTU).
    var transmitBufferSize: Int { get }
    var handshakeInitiationsSent: Int { get }
    var lastDropDescription: String? { get }
}

extension TunnelCore: DatagramCore {
    public func start(now: Instant, wallClockOffset: Int64) {
        self.wallClockOffset = wallClockOffset
        start(now: now)
    }

    public var handshakeInitiationsSent: Int { stats.wireGuard.handshakeInitiationsSent }
    public var transmitBufferSize: Int { Self.minimumTransmitBuffer(mtu: config.wireGuard.mtu) }
}

/// A WireGuard tunnel with a `TunnelPayload` inside, as a `DatagramCore`.
@_spi(OneTunInternals) public final class PayloadCore: DatagramCore {
    public let tunnel: WireGuardTunnel
    public let payload: TunnelPayload
    let logger: Logger

    public init(tunnel: WireGuardTunnel, payload: TunnelPayload, logger: Logger) {
        self.tunnel = tunnel
        self.payload = payload
        self.logger = logger
    }

    public func handleDatagram(_ buffer: UnsafeMutableRawBufferPointer, length: Int, now: Instant) {
        switch tunnel.decapsulate(buffer, datagramLength: length, from: EndpointAddress(), now: now) {
        case .packet(let range):
            payload.receive(packet: UnsafeRawBufferPointer(rebasing: buffer[range]), now: now)
        case .consumed:
            break
        case .dropped(let reason):
            logger.debug("dropped a datagram from the endpoint: \(reason)")
        }
    }

    public func pollTransmit(into buffer: UnsafeMutableRawBufferPointer, now: Instant) -> Int? {
        if let n = tunnel.pollTransmit(into: buffer, now: now) { return n }
        let inner = UnsafeMutableRawBufferPointer(rebasing: buffer[WireGuardTunnel.headroom..<(buffer.count - WireGuardTunnel.tailroom)])
        while let n = payload.pollPacket(into: inner, now: now) {
            switch tunnel.encapsulate(buffer, packetLength: n, now: now) {
            case .send(let length): return length
            case .queued: continue
            case .dropped(let reason): logger.debug("dropped an outgoing packet: \(reason)")
            }
        }
        return tunnel.pollTransmit(into: buffer, now: now)
    }

    public func nextDeadline() -> Instant? {
        switch (tunnel.nextDeadline(), payload.nextDeadline()) {
        case (let a?, let b?): min(a, b)
        case (let a, nil): a
        case (nil, let b): b
        }
    }

    public func handleTimeout(now: Instant) {
        tunnel.handleTimeout(now: now)
        payload.handleTimeout(now: now)
    }

    public func start(now: Instant, wallClockOffset: Int64) {
        tunnel.wallClockOffset = wallClockOffset
        tunnel.initiateHandshake(now: now)
    }

    public var isEstablished: Bool { tunnel.isEstablished }
    public var transmitBufferSize: Int { TunnelCore.minimumTransmitBuffer(mtu: tunnel.config.mtu) }
    public var handshakeInitiationsSent: Int { tunnel.stats.handshakeInitiationsSent }
    public var lastDropDescription: String? { tunnel.lastDrop.map { "\($0)" } }
}

/// The single-threaded libuv driver: one UDP socket to the WireGuard endpoint, one timer armed to the
/// earliest deadline, one prepare handle that drains outputs once per loop iteration (STYLE §8).
///
/// Datagrams arrive in batches (recvmmsg, through libuv's `UV_UDP_RECVMMSG`) into one buffer allocated
/// once and are opened in place; outgoing datagrams are sealed in place, end to end in one buffer, and
/// leave in batches of up to `batch` with one sendmmsg(2) call, runs of equal size as one UDP GSO send.
public final class TunnelLoop {
    public let core: DatagramCore
    let logger: Logger
    public let loop: UnsafeMutablePointer<uv_loop_t>
    let udp = UnsafeMutablePointer<uv_udp_t>.allocate(capacity: 1)
    let timer = UnsafeMutablePointer<uv_timer_t>.allocate(capacity: 1)
    let prepare = UnsafeMutablePointer<uv_prepare_t>.allocate(capacity: 1)
    let signals = UnsafeMutablePointer<uv_signal_t>.allocate(capacity: 2)
    static let batch = 64
    /// The most one datagram may take in the send buffer: 2 KiB, or more for an MTU above about 1950.
    let slot: Int
    /// libuv's recvmmsg hands each datagram a 64 KiB chunk of the receive buffer (UV__UDP_DGRAM_MAXSIZE)
    /// and reads at most 20 per call: a buffer of 20 chunks reads 20 datagrams per system call.
    static let receiveChunks = 20
    /// recvmmsg's buffer and the send slots.
    let receiveBuffer: UnsafeMutableRawBufferPointer
    let sendSlots: UnsafeMutableRawBufferPointer
    let sendLengths = UnsafeMutablePointer<Int>.allocate(capacity: TunnelLoop.batch)
    let sendOffsets = UnsafeMutablePointer<Int>.allocate(capacity: TunnelLoop.batch)
    let iovecs = UnsafeMutablePointer<iovec>.allocate(capacity: TunnelLoop.batch)
    let gsoSizes = UnsafeMutablePointer<UInt16>.allocate(capacity: TunnelLoop.batch)
    let datagramsIn = UnsafeMutablePointer<Int>.allocate(capacity: TunnelLoop.batch)
    let controls = UnsafeMutablePointer<UInt8>.allocate(capacity: 32 * TunnelLoop.batch)
    let messages = UnsafeMutablePointer<onetun_mmsghdr>.allocate(capacity: TunnelLoop.batch)
    /// UDP GSO (UDP_SEGMENT): runs of equal-sized datagrams leave as one buffer the kernel cuts up. Turned
    /// off for good if the kernel refuses it.
    public var segmentationOffload = true
    var fd: Int32 = -1
    var armedDeadline: UInt64 = .max
    var wasEstablished = false
    var initiationsReported = 0
    var stopped = false
    public private(set) var sendFailures = 0
    public private(set) var datagramsSent = 0
    public private(set) var datagramsReceived = 0
    /// Runs in every flush before the core is drained: the forwarder moves bytes between its clients and
    /// the core's connections here.
    public var beforeTransmit: (() -> Void)?
    /// Runs at the end of every flush (the pcap writer writes its buffer here).
    public var afterFlush: (() -> Void)?
    /// SIGINT or SIGTERM; the default stops the loop.
    public var onSignal: (() -> Void)?
    public var onStop: (() -> Void)?

    public init(core: DatagramCore, logger: Logger) {
        self.core = core
        self.logger = logger
        loop = uv_default_loop()
        slot = (max(2048, core.transmitBufferSize) + 63) & ~63
        receiveBuffer = .allocate(byteCount: Self.receiveChunks * 65_536, alignment: 16)
        sendSlots = .allocate(byteCount: Self.batch * slot, alignment: 16)
    }

    deinit {
        receiveBuffer.deallocate()
        sendSlots.deallocate()
        sendLengths.deallocate()
        sendOffsets.deallocate()
        iovecs.deallocate()
        gsoSizes.deallocate()
        datagramsIn.deallocate()
        controls.deallocate()
        messages.deallocate()
    }

    @inline(__always) public static func now() -> Instant { Instant(nanoseconds: uv_hrtime()) }

    /// Binds the endpoint socket (`bind` may be nil for an ephemeral port), connects it to the peer and
    /// starts the handshake.
    public func start(endpoint: sockaddr_storage, bind: sockaddr_storage?) throws(LoopError) {
        var endpoint = endpoint
        var rc = uv_udp_init_ex(loop, udp, UInt32(endpoint.ss_family) | UInt32(UV_UDP_RECVMMSG.rawValue))
        guard rc == 0 else { throw .uv("endpoint socket", rc) }
        udp.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        if var local = bind {
            rc = withUnsafePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_udp_bind(udp, $0, 0) } }
            guard rc == 0 else { throw .uv("binding the endpoint socket", rc) }
        }
        rc = withUnsafePointer(to: &endpoint) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_udp_connect(udp, $0) } }
        guard rc == 0 else { throw .uv("connecting to the endpoint", rc) }
        var size: Int32 = 4 << 20
        _ = uv_recv_buffer_size(UnsafeMutableRawPointer(udp).assumingMemoryBound(to: uv_handle_t.self), &size)
        size = 4 << 20
        _ = uv_send_buffer_size(UnsafeMutableRawPointer(udp).assumingMemoryBound(to: uv_handle_t.self), &size)
        var descriptor = uv_os_fd_t()
        uv_fileno(UnsafeMutableRawPointer(udp).assumingMemoryBound(to: uv_handle_t.self), &descriptor)
        fd = descriptor
        rc = uv_udp_recv_start(
            udp,
            { handle, _, buf in
                let me = Unmanaged<TunnelLoop>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                buf!.pointee = uv_buf_init(me.receiveBuffer.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(me.receiveBuffer.count))
            },
            { handle, nread, buf, addr, _ in
                // With recvmmsg each datagram comes as its own chunk of the buffer; a final call with
                // nread 0 and no address hands the buffer back (it is ours and reused).
                guard nread > 0, let base = buf?.pointee.base else { return }
                let me = Unmanaged<TunnelLoop>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                me.datagramsReceived += 1
                let chunk = UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(base), count: Int(buf!.pointee.len))
                me.core.handleDatagram(chunk, length: nread, now: TunnelLoop.now())
            })
        guard rc == 0 else { throw .uv("receiving on the endpoint socket", rc) }

        uv_timer_init(loop, timer)
        timer.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        uv_prepare_init(loop, prepare)
        prepare.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        uv_prepare_start(prepare) { handle in
            Unmanaged<TunnelLoop>.fromOpaque(handle!.pointee.data).takeUnretainedValue().flush()
        }
        for (i, signal) in [SIGINT, SIGTERM].enumerated() {
            uv_signal_init(loop, signals + i)
            signals[i].data = Unmanaged.passUnretained(self).toOpaque()
            uv_signal_start(signals + i, { handle, signum in
                let me = Unmanaged<TunnelLoop>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                me.logger.info("received signal \(signum), shutting down")
                if let onSignal = me.onSignal { onSignal() } else { me.stop() }
            }, signal)
        }
        core.start(now: Self.now(), wallClockOffset: Self.wallClockOffset())
    }

    static func wallClockOffset() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let wall = Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
        return wall - Int64(uv_hrtime())
    }

    /// Runs until `stop()` and every handle has closed.
    public func run() {
        uv_run(loop, UV_RUN_DEFAULT)
    }

    /// Flushes what is pending once more, then closes the loop's own handles; `run` returns when the
    /// other handles (listeners, clients) are closed too.
    public func stop() {
        guard !stopped else { return }
        flush()
        stopped = true
        uv_udp_recv_stop(udp)
        uv_timer_stop(timer)
        uv_prepare_stop(prepare)
        for i in 0..<2 { uv_signal_stop(signals + i) }
        for handle in [OpaquePointer(udp), OpaquePointer(timer), OpaquePointer(prepare), OpaquePointer(signals), OpaquePointer(signals + 1)] {
            let h = UnsafeMutablePointer<uv_handle_t>(handle)
            if uv_is_closing(h) == 0 { uv_close(h, nil) }
        }
        onStop?()
    }

    /// Drains everything the core wants sent, in batches, then re-arms the one timer.
    public func flush() {
        guard !stopped else { return }
        beforeTransmit?()
        let now = Self.now()
        var budget = 16_384
        while budget > 0 {
            var count = 0
            var offset = 0
            while count < Self.batch && offset + slot <= sendSlots.count {
                let room = UnsafeMutableRawBufferPointer(rebasing: sendSlots[offset..<(offset + slot)])
                guard let n = core.pollTransmit(into: room, now: now) else { break }
                sendLengths[count] = n
                sendOffsets[count] = offset
                offset += n
                count += 1
            }
            if count > 0 { sendBatch(count) }
            budget -= count
            if count < Self.batch { break }
        }
        if core.isEstablished != wasEstablished {
            wasEstablished = core.isEstablished
            logger.info(wasEstablished ? "handshake with the peer complete" : "session with the peer expired")
            if wasEstablished { initiationsReported = core.handshakeInitiationsSent }
        }
        let initiations = core.handshakeInitiationsSent
        if !wasEstablished, initiations != initiationsReported, initiations - initiationsReported >= 2 {
            // Retries every 5 s: say so from the second, with the last reason a reply was refused.
            initiationsReported = initiations
            var why = "no reply from the endpoint (is it reachable, and is our public key among its peers?)"
            if let drop = core.lastDropDescription { why = "last datagram from the endpoint refused: \(drop) (check both public keys and the preshared key)" }
            logger.warning("handshake with the peer not complete after \(initiations) initiations; \(why)")
        }
        rearm(now)
        afterFlush?()
    }

    func sendBatch(_ count: Int) {
        // Group into messages: a run of equal-sized datagrams (and one shorter last one) up to 64 KiB is
        // one GSO message; anything else is a message of its own.
        var messageCount = 0
        var i = 0
        while i < count {
            let size = sendLengths[i]
            var j = i + 1
            var total = size
            if segmentationOffload {
                while j < count && sendLengths[j] == size && total + size <= 65_000 && j - i < 64 {
                    total += size
                    j += 1
                }
                if j < count && sendLengths[j] < size && total + sendLengths[j] <= 65_000 && j - i < 64 {
                    total += sendLengths[j]
                    j += 1
                }
            }
            iovecs[messageCount] = iovec(iov_base: sendSlots.baseAddress! + sendOffsets[i], iov_len: total)
            gsoSizes[messageCount] = j - i > 1 ? UInt16(size) : 0
            datagramsIn[messageCount] = j - i
            messageCount += 1
            i = j
        }
        var sent = 0
        var attempts = 0
        while sent < messageCount && attempts < 4 {
            attempts += 1
            let rc = onetun_sendmmsg_gso(fd, iovecs + sent, gsoSizes + sent, messages + sent, controls + 32 * sent, UInt32(messageCount - sent))
            if rc > 0 {
                sent += Int(rc)
            } else if rc < 0 && errno == EINTR {
                continue
            } else if rc < 0 && segmentationOffload && (errno == EIO || errno == EINVAL || errno == ENOPROTOOPT || errno == EOPNOTSUPP) && gsoSizes[sent] > 0 {
                // No UDP GSO here: send this batch and everything after datagram by datagram.
                logger.info("UDP segmentation offload refused (\(String(cString: strerror(errno)))); sending datagrams one by one")
                segmentationOffload = false
                var first = 0
                for m in 0..<sent { first += datagramsIn[m] }
                let rest = count - first
                for k in 0..<rest {
                    sendLengths[k] = sendLengths[first + k]
                    sendOffsets[k] = sendOffsets[first + k]
                }
                datagramsSent += first
                sendBatch(rest)
                return
            } else {
                break
            }
        }
        var delivered = 0
        for m in 0..<sent { delivered += datagramsIn[m] }
        datagramsSent += delivered
        if delivered < count {
            // The socket buffer is full (or the endpoint unreachable): UDP may drop, and the tunnel's
            // traffic recovers from loss; count it.
            sendFailures += count - delivered
            logger.debug("\(count - delivered) datagrams to the endpoint not sent: \(String(cString: strerror(errno)))")
        }
    }

    func rearm(_ now: Instant) {
        let deadline = core.nextDeadline()?.nanoseconds ?? .max
        guard deadline != armedDeadline else { return }
        armedDeadline = deadline
        if deadline == .max {
            uv_timer_stop(timer)
            return
        }
        // Rounded up to whole milliseconds: an early wake-up is a harmless no-op, a late one is not.
        let ms = (deadline.subtractingReportingOverflow(now.nanoseconds).overflow ? 0 : deadline - now.nanoseconds + 999_999) / 1_000_000
        uv_timer_start(timer, { handle in
            let me = Unmanaged<TunnelLoop>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
            me.armedDeadline = .max
            me.core.handleTimeout(now: TunnelLoop.now())
        }, ms, 0)
    }
}
