// PollForwarder: one local TCP port forwarded through WireGuard, driven with poll(2) and plain sockets.
// The point is the shape, not the features: everything a driver of the sans-I/O `TunnelCore` has to do
// (the contract is the doc comment in TunnelCore.swift), with no libuv, no Dispatch and no Foundation.
import Glibc
import OneTunCore

/// The driver's monotonic clock; the core never reads one itself.
func now() -> Instant {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Instant(nanoseconds: UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec))
}

/// A line on standard output, unbuffered (a test waits for it).
func say(_ line: String) {
    let text = line + "\n"
    _ = write(STDOUT_FILENO, text, text.utf8.count)
}

func fail(_ message: String) -> Never {
    say("PollForwarder: \(message)")
    exit(2)
}

func check(_ rc: Int32, _ what: String) {
    if rc < 0 { fail("\(what): \(String(cString: strerror(errno)))") }
}

func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) {
    var value = value
    setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size))
}

/// Calls `body` with `host`:`port` (IPv4) as a sockaddr.
func withIPv4(_ host: String, _ port: UInt16, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else { fail("not an IPv4 address: \(host)") }
    return withUnsafePointer(to: address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
}

let nonBlocking = Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)

/// One accepted local client, joined to the tunnel connection `core.connection(id)`.
struct Client {
    let fd: Int32
    var sentEOF = false  // the client half-closed; our FIN is queued behind its bytes
    var shutdownSent = false  // the destination's FIN was passed on with shutdown(SHUT_WR)
}

final class PollForwarder {
    let core: TunnelCore
    let destination: IPAddress
    let destinationPort: UInt16
    let udp: Int32
    let listener: Int32
    var clients: [Int: Client] = [:]
    let buffer: UnsafeMutableRawBufferPointer  // one datagram, in or out; opened and sealed in place

    init(core: TunnelCore, destination: IPAddress, destinationPort: UInt16, udp: Int32, listener: Int32) {
        self.core = core
        self.destination = destination
        self.destinationPort = destinationPort
        self.udp = udp
        self.listener = listener
        let size = TunnelCore.minimumTransmitBuffer(mtu: core.config.wireGuard.mtu)
        buffer = .allocate(byteCount: max(size, 2048), alignment: 16)
    }

    func run() -> Never {
        var wallClock = timespec()
        clock_gettime(CLOCK_REALTIME, &wallClock)
        core.wallClockOffset = Int64(wallClock.tv_sec) * 1_000_000_000 + Int64(wallClock.tv_nsec) - Int64(now().nanoseconds)
        core.start(now: now())
        var fds: [pollfd] = []
        var ids: [Int] = []  // ids[i] is the connection of fds[i + 2]
        var established = false
        while true {
            // Ask only for what can make progress: reads while the send buffer has room, writes while
            // received bytes wait (service() stops only when the client socket is full).
            fds.removeAll(keepingCapacity: true)
            ids.removeAll(keepingCapacity: true)
            fds.append(pollfd(fd: udp, events: Int16(POLLIN), revents: 0))
            fds.append(pollfd(fd: listener, events: Int16(POLLIN), revents: 0))
            for (id, client) in clients {
                let connection = core.connection(id)
                var events: Int32 = 0
                if !client.sentEOF && connection.writableBytes > 0 { events |= Int32(POLLIN) }
                if connection.readableBytes > 0 { events |= Int32(POLLOUT) }
                // A negative fd is skipped: no wake-ups for POLLHUP while there is nothing to do.
                fds.append(pollfd(fd: events == 0 ? -1 : client.fd, events: Int16(events), revents: 0))
                ids.append(id)
            }
            // Sleep until the core's next deadline, rounded up to whole ms (waking early is a no-op).
            var timeout: Int32 = -1
            if let deadline = core.nextDeadline() {
                let t = now()
                timeout = deadline <= t ? 0 : Int32(clamping: (deadline.since(t) + 999_999) / 1_000_000)
            }
            if poll(&fds, nfds_t(fds.count), timeout) < 0 && errno != EINTR { fail("poll: \(String(cString: strerror(errno)))") }
            let t = now()

            // 1. Inputs: datagrams, new clients, client sockets, the timer.
            if fds[0].revents != 0 {
                for _ in 0..<256 {
                    let n = recv(udp, buffer.baseAddress, buffer.count, 0)
                    if n <= 0 { break }
                    core.handleDatagram(buffer, length: n, now: t)
                }
            }
            if fds[1].revents != 0 { acceptClients(now: t) }
            for (i, id) in ids.enumerated() {
                let revents = Int32(fds[i + 2].revents)
                if revents & Int32(POLLIN | POLLHUP | POLLERR) != 0 { readClient(id) }
                if revents & Int32(POLLOUT | POLLHUP | POLLERR) != 0 { service(id) }
            }
            if let deadline = core.nextDeadline(), deadline <= t { core.handleTimeout(now: t) }

            // 2. Events: every connection whose state may have changed.
            while let id = core.pollEvent() { service(id) }

            // 3. Transmit everything for the endpoint. A full socket drops a datagram; TCP recovers.
            while let n = core.pollTransmit(into: buffer, now: t) { send(udp, buffer.baseAddress, n, 0) }

            if core.isEstablished != established {
                established = core.isEstablished
                say(established ? "PollForwarder: handshake complete" : "PollForwarder: session expired")
            }
        }
    }

    func acceptClients(now: Instant) {
        while true {
            let fd = accept(listener, nil, nil)
            if fd < 0 { return }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            guard let id = core.connect(to: destination, port: destinationPort, now: now) else {
                close(fd)
                continue
            }
            clients[id] = Client(fd: fd)
            core.touched(id)
        }
    }

    /// Client → tunnel: read straight into the connection's send buffer.
    func readClient(_ id: Int) {
        guard var client = clients[id], !client.sentEOF else { return }
        let connection = core.connection(id)
        let region = connection.sendRegion()
        guard !region.isEmpty else { return }  // full: no POLLIN until it has room again
        let n = recv(client.fd, region.baseAddress, region.count, 0)
        if n > 0 {
            connection.commitSend(n)
        } else if n == 0 {
            client.sentEOF = true
            clients[id] = client
            connection.close()  // half-close: a FIN follows the queued bytes
        } else if errno != EAGAIN && errno != EINTR {
            return teardown(id, reset: false)
        }
        core.touched(id)
    }

    /// Tunnel → client: write what the connection received, pass its FIN on, close when it is done.
    func service(_ id: Int) {
        guard var client = clients[id] else { return }
        let connection = core.connection(id)
        while true {
            let readable = connection.readable()
            if readable.isEmpty { break }
            let n = send(client.fd, readable.baseAddress, readable.count, Int32(MSG_NOSIGNAL))
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { break }  // full: POLLOUT while bytes remain
                return teardown(id, reset: true)
            }
            connection.consume(n)  // the receive window opens again
            core.touched(id)
        }
        if connection.isReadClosed && !client.shutdownSent {
            client.shutdownSent = true
            clients[id] = client
            shutdown(client.fd, Int32(SHUT_WR))
        }
        switch connection.state {
        case .closed, .timeWait:
            if connection.error != nil {
                teardown(id, reset: true)  // refused, reset or timed out: the client sees a reset
            } else if connection.readableBytes == 0 {
                teardown(id, reset: false)
            }
        default:
            break
        }
    }

    /// Closes the client (with RST when `reset`) and lets go of its connection.
    func teardown(_ id: Int, reset: Bool) {
        guard let client = clients.removeValue(forKey: id) else { return }
        if reset {
            var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
            setsockopt(client.fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        }
        close(client.fd)
        core.release(id)  // resets the connection if it is still open
    }
}

// MARK: Start-up

let args = CommandLine.arguments
guard args.count == 8 else {
    fail("usage: PollForwarder <listen-port> <dst-ip> <dst-port> <endpoint-ipv4>:<port> <our-private-key> <peer-public-key> <source-ip>")
}
guard let listenPort = UInt16(args[1]), let destination = IPAddress(args[2]), let destinationPort = UInt16(args[3]),
    let colon = args[4].lastIndex(of: ":"), let endpointPort = UInt16(args[4][args[4].index(after: colon)...]),
    let privateKey = Key32(base64: args[5]), let peerPublicKey = Key32(base64: args[6]), let source = IPAddress(args[7])
else { fail("bad arguments: \(args.dropFirst().joined(separator: " "))") }

// One UDP socket, connected to the endpoint: plain send/recv, and only the endpoint's datagrams arrive.
let udp = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | nonBlocking, 0)
check(udp, "UDP socket")
setOption(udp, SOL_SOCKET, SO_RCVBUF, 4 << 20)
setOption(udp, SOL_SOCKET, SO_SNDBUF, 4 << 20)
check(withIPv4(String(args[4][..<colon]), endpointPort) { connect(udp, $0, $1) }, "connecting to the endpoint")

let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | nonBlocking, 0)
check(listener, "TCP socket")
setOption(listener, SOL_SOCKET, SO_REUSEADDR, 1)
check(withIPv4("127.0.0.1", listenPort) { bind(listener, $0, $1) }, "binding 127.0.0.1:\(listenPort)")
check(listen(listener, 128), "listening")
signal(SIGPIPE, SIG_IGN)

let wireGuard = WireGuardConfig(privateKey: privateKey, peerPublicKey: peerPublicKey)
let core = TunnelCore(config: TunnelCoreConfig(wireGuard: wireGuard, addresses: [source]), random: SystemRandom())
say("PollForwarder: forwarding 127.0.0.1:\(listenPort) -> \(destination):\(destinationPort) via \(args[4])")
PollForwarder(core: core, destination: destination, destinationPort: destinationPort, udp: udp, listener: listener).run()
