import Glibc
@_spi(OneTunInternals) @testable import OneTunCore
@_spi(OneTunInternals) import OneTunLoop

/// The smallest real driver of the sans-I/O `WireGuardDevice`: one UDP socket (made inside the peer's
/// namespace and connected to the peer's 127.0.0.1:port there), the monotonic clock, and poll(2).
///
/// It follows the core's contract: after every input (`encapsulate`, `decapsulate`, `handleTimeout`,
/// `initiateHandshake`) it drains `pollTransmit` until nil and sends each datagram; it then sleeps in
/// poll(2) until the socket is readable or `nextDeadline()` comes, rounded up to whole milliseconds (an
/// early wake-up would only be a spurious `handleTimeout`, which is a no-op). Every wait is bounded by the
/// caller's overall timeout and by an iteration cap.
final class BlockingDriver {
    let tunnel: WireGuardDevice
    private let socket: Int32
    /// One buffer for everything, as the real loop does: big enough for any datagram (the core needs at
    /// least `max(maxControlMessage, mtu + 32)` for `pollTransmit`).
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)
    private var closed = false

    /// What happened, for assertions and failure messages.
    private(set) var datagramsSent = 0
    private(set) var datagramsReceived = 0
    private(set) var innerPackets: [[UInt8]] = []
    private(set) var drops: [DropReason] = []
    private(set) var socketErrors: [String] = []

    /// - Parameters:
    ///   - namespace: where the peer listens; our socket is created there so 127.0.0.1 is its loopback.
    ///   - peerPort: the peer's UDP listen port on 127.0.0.1.
    init(namespace: TestNamespace, peerPort: UInt16, config: WireGuardConfig,
         random: RandomSource = SystemRandom()) throws {
        let fd = try namespace.makeUDPSocket(family: AF_INET)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = peerPort.bigEndian
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        let status = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard status == 0 else {
            let message = String(cString: strerror(errno))
            Glibc.close(fd)
            throw HarnessError("connect to 127.0.0.1:\(peerPort): \(message)")
        }
        socket = fd
        tunnel = WireGuardDevice(config: config, random: random)
        // TAI64N timestamps in initiations come from the wall clock; wireguard-go rejects one that is not
        // newer than the last it accepted from us, so the core needs real time, not monotonic time.
        tunnel.wallClockOffset = Self.clock(CLOCK_REALTIME) &- Self.clock(CLOCK_MONOTONIC)
    }

    deinit { close() }

    func close() {
        guard !closed else { return }
        closed = true
        Glibc.close(socket)
        buffer.deallocate()
    }

    /// Our monotonic clock as the core's `Instant`.
    func now() -> Instant { Instant(nanoseconds: UInt64(Self.clock(CLOCK_MONOTONIC))) }

    private static func clock(_ id: clockid_t) -> Int64 {
        var ts = timespec()
        clock_gettime(id, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    // MARK: Inputs

    /// Starts a handshake now, without waiting for data to need one.
    func initiateHandshake() {
        tunnel.initiateHandshake(now: now())
        flush()
    }

    /// Hands one inner IP packet to the tunnel: sent at once with a session, otherwise queued behind a
    /// handshake that `run` then carries out.
    @discardableResult
    func send(packet: [UInt8]) -> Encapsulated {
        let headroom = WireGuardDevice.headroom
        precondition(headroom + packet.count + WireGuardDevice.tailroom <= buffer.count, "packet too large")
        packet.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: buffer[headroom...]).copyMemory(from: $0) }
        let result = tunnel.encapsulate(buffer, packetLength: packet.count, now: now())
        switch result {
        case .send(let n): transmit(n)
        case .queued: break
        case .dropped(let reason): drops.append(reason)
        }
        flush()
        return result
    }

    /// Runs the loop until `until` accepts a decrypted inner packet (true) or `timeout` seconds pass
    /// (false). Inner packets it does not accept are kept in `innerPackets`.
    @discardableResult
    func run(timeout: Double, until: ([UInt8]) -> Bool) -> Bool {
        let start = now()
        let end = start.adding(UInt64(timeout * 1e9))
        flush()
        // Each iteration waits in poll(2) or handles something, so this cap is far above what a timeout
        // of seconds needs; it only stops a core whose deadline never moves from spinning forever.
        for _ in 0..<100_000 {
            let t = now()
            if t >= end { return false }
            if let deadline = tunnel.nextDeadline(), deadline <= t {
                tunnel.handleTimeout(now: t)
                flush()
                continue
            }
            var wait = end.since(t)
            if let deadline = tunnel.nextDeadline() { wait = min(wait, deadline.since(t)) }
            let milliseconds = Int32(min((wait + 999_999) / 1_000_000, 60_000))
            var pfd = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, milliseconds)
            if ready < 0 && errno != EINTR {
                socketErrors.append("poll: \(String(cString: strerror(errno)))")
                return false
            }
            if ready > 0, receiveAll(until: until) { return true }
        }
        return false
    }

    /// Runs the tunnel with `payload` riding inside it (the loop's `TunnelPayload` contract): inner packets
    /// go to `payload.receive`, its packets are sealed and sent after every input, and its deadline joins
    /// the tunnel's. Returns when `done()` holds (true) or after `timeout` seconds (false).
    @discardableResult
    func run(payload: TunnelPayload, timeout: Double, until done: () -> Bool) -> Bool {
        let end = now().adding(UInt64(timeout * 1e9))
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)
        defer { out.deallocate() }
        func pump() {
            let t = now()
            let inner = UnsafeMutableRawBufferPointer(rebasing: out[WireGuardDevice.headroom..<(out.count - WireGuardDevice.tailroom)])
            var budget = 10_000
            while budget > 0, let n = payload.pollPacket(into: inner, now: t) {
                budget -= 1
                if case .send(let length) = tunnel.encapsulate(out, packetLength: n, now: t) {
                    if Glibc.send(socket, out.baseAddress, length, 0) >= 0 { datagramsSent += 1 }
                }
            }
            flush()
        }
        for _ in 0..<10_000_000 {
            pump()
            if done() { return true }
            let t = now()
            if t >= end { return false }
            var deadline = end
            if let d = tunnel.nextDeadline() { deadline = min(deadline, d) }
            if let d = payload.nextDeadline() { deadline = min(deadline, d) }
            if deadline <= t {
                tunnel.handleTimeout(now: t)
                payload.handleTimeout(now: t)
                continue
            }
            let milliseconds = Int32(min((deadline.since(t) + 999_999) / 1_000_000, 60_000))
            var pfd = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, milliseconds) > 0 else { continue }
            for _ in 0..<256 {
                let n = recv(socket, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT))
                if n < 0 { break }
                datagramsReceived += 1
                let t = now()
                if case .packet(let range) = tunnel.decapsulate(buffer, datagramLength: n, from: EndpointAddress(), now: t) {
                    payload.receive(packet: UnsafeRawBufferPointer(rebasing: buffer[range]), now: t)
                }
            }
        }
        return false
    }

    // MARK: Socket

    /// Reads every queued datagram (at most 256 per wake-up) and decapsulates each; true as soon as
    /// `until` accepts an inner packet.
    private func receiveAll(until: ([UInt8]) -> Bool) -> Bool {
        for _ in 0..<256 {
            var from = sockaddr_storage()
            var fromLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let n = withUnsafeMutablePointer(to: &from) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    recvfrom(socket, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT), $0, &fromLength)
                }
            }
            if n < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { return false }
                // A connected UDP socket reports an earlier ICMP port unreachable here; keep going.
                socketErrors.append("recvfrom: \(String(cString: strerror(errno)))")
                continue
            }
            datagramsReceived += 1
            let source = Self.endpoint(from)
            let result = tunnel.decapsulate(buffer, datagramLength: n, from: source, now: now())
            var accepted = false
            switch result {
            case .packet(let range):
                let packet = Array(buffer[range])
                if until(packet) { accepted = true } else { innerPackets.append(packet) }
            case .consumed: break
            case .dropped(let reason): drops.append(reason)
            }
            // Drain outputs before anything else, as the contract asks (a response may have produced a
            // keepalive or released staged packets); the buffer's inner packet was copied out above.
            flush()
            if accepted { return true }
        }
        return false
    }

    /// The sender's address and port as opaque bytes (ip || port) for cookie binding.
    private static func endpoint(_ storage: sockaddr_storage) -> EndpointAddress {
        let bytes: [UInt8]
        if Int32(storage.ss_family) == AF_INET6 {
            let a = withUnsafeBytes(of: storage) { $0.load(as: sockaddr_in6.self) }
            bytes = withUnsafeBytes(of: a.sin6_addr) { Array($0) } + withUnsafeBytes(of: a.sin6_port) { Array($0) }
        } else {
            let a = withUnsafeBytes(of: storage) { $0.load(as: sockaddr_in.self) }
            bytes = withUnsafeBytes(of: a.sin_addr) { Array($0) } + withUnsafeBytes(of: a.sin_port) { Array($0) }
        }
        return bytes.withUnsafeBytes { EndpointAddress(bytes: $0) }
    }

    /// `pollTransmit` until nil, sending each datagram (bounded: the core never has that many queued).
    private func flush() {
        for _ in 0..<4096 {
            guard let n = tunnel.pollTransmit(into: buffer, now: now()) else { return }
            transmit(n)
        }
    }

    private func transmit(_ length: Int) {
        let sent = Glibc.send(socket, buffer.baseAddress, length, Int32(MSG_NOSIGNAL))
        if sent == length {
            datagramsSent += 1
        } else {
            socketErrors.append("send \(length) bytes: \(sent < 0 ? String(cString: strerror(errno)) : "short, \(sent)")")
        }
    }
}
