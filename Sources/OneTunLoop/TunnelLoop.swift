import CUV
import Glibc
import Logging
import OneTunCore

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

/// The single-threaded libuv driver: one UDP socket to the WireGuard endpoint, one timer armed to the
/// earliest deadline, one prepare handle that drains outputs once per loop iteration (STYLE §8).
public final class TunnelLoop {
    public let tunnel: WireGuardTunnel
    public let payload: TunnelPayload
    let logger: Logger
    let loop: UnsafeMutablePointer<uv_loop_t>
    let udp = UnsafeMutablePointer<uv_udp_t>.allocate(capacity: 1)
    let timer = UnsafeMutablePointer<uv_timer_t>.allocate(capacity: 1)
    let prepare = UnsafeMutablePointer<uv_prepare_t>.allocate(capacity: 1)
    let signals = UnsafeMutablePointer<uv_signal_t>.allocate(capacity: 2)
    /// One receive buffer and one send buffer, allocated once: every datagram is opened and sealed in place.
    let receiveBuffer: UnsafeMutableRawBufferPointer
    let sendBuffer: UnsafeMutableRawBufferPointer
    var armedDeadline: UInt64 = .max
    var wasEstablished = false
    public private(set) var sendFailures = 0
    public var onStop: (() -> Void)?

    public init(tunnel: WireGuardTunnel, payload: TunnelPayload, logger: Logger) {
        self.tunnel = tunnel
        self.payload = payload
        self.logger = logger
        loop = uv_default_loop()
        receiveBuffer = .allocate(byteCount: 65_536 + 64, alignment: 16)
        sendBuffer = .allocate(byteCount: 65_536 + 64, alignment: 16)
    }

    deinit {
        receiveBuffer.deallocate()
        sendBuffer.deallocate()
    }

    @inline(__always) public static func now() -> Instant { Instant(nanoseconds: uv_hrtime()) }

    /// Binds the endpoint socket (`bind` may be nil for an ephemeral port), connects it to the peer and
    /// starts the handshake.
    public func start(endpoint: sockaddr_storage, bind: sockaddr_storage?) throws(LoopError) {
        var endpoint = endpoint
        var rc = uv_udp_init_ex(loop, udp, UInt32(endpoint.ss_family))
        guard rc == 0 else { throw .uv("endpoint socket", rc) }
        udp.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        if var local = bind {
            rc = withUnsafePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_udp_bind(udp, $0, 0) } }
            guard rc == 0 else { throw .uv("binding the endpoint socket", rc) }
        }
        rc = withUnsafePointer(to: &endpoint) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_udp_connect(udp, $0) } }
        guard rc == 0 else { throw .uv("connecting to the endpoint", rc) }
        rc = uv_udp_recv_start(
            udp,
            { handle, _, buf in
                let me = Unmanaged<TunnelLoop>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                buf!.pointee = uv_buf_init(me.receiveBuffer.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(me.receiveBuffer.count))
            },
            { handle, nread, _, addr, _ in
                let me = Unmanaged<TunnelLoop>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
                me.received(count: nread, from: addr)
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
                me.stop()
            }, signal)
        }
        tunnel.wallClockOffset = Self.wallClockOffset()
        tunnel.initiateHandshake(now: Self.now())
    }

    static func wallClockOffset() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let wall = Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
        return wall - Int64(uv_hrtime())
    }

    /// Runs until `stop()`.
    public func run() {
        uv_run(loop, UV_RUN_DEFAULT)
    }

    public func stop() {
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

    func received(count: Int, from addr: UnsafePointer<sockaddr>?) {
        guard count > 0 else { return }  // 0 with nil addr: nothing more to read now
        let now = Self.now()
        let result = tunnel.decapsulate(receiveBuffer, datagramLength: count, from: EndpointAddress(), now: now)
        switch result {
        case .packet(let range):
            payload.receive(packet: UnsafeRawBufferPointer(rebasing: receiveBuffer[range]), now: now)
        case .consumed:
            break
        case .dropped(let reason):
            logger.debug("dropped a datagram from the endpoint: \(reason)")
        }
    }

    /// Drains everything the tunnel and the payload want sent, then re-arms the one timer.
    func flush() {
        let now = Self.now()
        var budget = 4096
        while budget > 0, let n = tunnel.pollTransmit(into: sendBuffer, now: now) {
            send(n)
            budget -= 1
        }
        let inner = UnsafeMutableRawBufferPointer(rebasing: sendBuffer[WireGuardTunnel.headroom..<(sendBuffer.count - WireGuardTunnel.tailroom)])
        while budget > 0, let n = payload.pollPacket(into: inner, now: now) {
            switch tunnel.encapsulate(sendBuffer, packetLength: n, now: now) {
            case .send(let length): send(length)
            case .queued: break
            case .dropped(let reason): logger.debug("dropped an outgoing packet: \(reason)")
            }
            budget -= 1
        }
        while budget > 0, let n = tunnel.pollTransmit(into: sendBuffer, now: now) {
            send(n)
            budget -= 1
        }
        if tunnel.isEstablished != wasEstablished {
            wasEstablished = tunnel.isEstablished
            logger.info(wasEstablished ? "handshake with the peer complete" : "session with the peer expired")
        }
        rearm(now)
    }

    func send(_ length: Int) {
        var buf = uv_buf_init(sendBuffer.baseAddress!.assumingMemoryBound(to: CChar.self), UInt32(length))
        let rc = uv_udp_try_send(udp, &buf, 1, nil)
        if rc < 0 {
            sendFailures += 1
            logger.debug("send to the endpoint failed: \(String(cString: uv_strerror(rc)))")
        }
    }

    func rearm(_ now: Instant) {
        var deadline = UInt64.max
        if let d = tunnel.nextDeadline() { deadline = d.nanoseconds }
        if let d = payload.nextDeadline() { deadline = min(deadline, d.nanoseconds) }
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
            let now = TunnelLoop.now()
            me.tunnel.handleTimeout(now: now)
            me.payload.handleTimeout(now: now)
        }, ms, 0)
    }
}
