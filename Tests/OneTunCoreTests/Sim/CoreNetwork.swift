@_spi(OneTunInternals) @testable import OneTunCore

/// Something on the simulated network: a `TunnelCore` with its applications, or a bare `WireGuardDevice`.
protocol SimHost: AnyObject {
    func receive(_ buffer: UnsafeMutableRawBufferPointer, length: Int, from source: EndpointAddress, now: Instant)
    /// The next datagram and where it goes.
    func transmit(into buffer: UnsafeMutableRawBufferPointer, now: Instant) -> (Int, EndpointAddress)?
    func nextDeadline() -> Instant?
    func handleTimeout(now: Instant)
    /// Lets the host's applications act on what arrived (before its datagrams are polled).
    func serve(now: Instant)
}

/// Several hosts on one simulated UDP network with a fake clock (WireGuardPair's style, for more than two):
/// each datagram goes to the host at the address its sender names and arrives from the sender's address,
/// after `latency`. A host may move (change its address): datagrams to its old address are then lost, as
/// behind a NAT that rebinds. Every datagram is logged when `recording` is set.
final class CoreNetwork {
    final class Node {
        let name: String
        let host: SimHost
        var address: EndpointAddress
        var sent = 0
        init(name: String, host: SimHost, address: EndpointAddress) {
            self.name = name
            self.host = host
            self.address = address
        }
    }

    struct Datagram {
        var deliverAt: UInt64
        var order: Int
        var from: EndpointAddress
        var to: EndpointAddress
        var bytes: [UInt8]
    }

    var now = Instant(nanoseconds: 1_000 * Nanos.second)
    var latency: UInt64 = 5 * Nanos.millisecond
    private(set) var nodes: [Node] = []
    private var inFlight: [Datagram] = []
    private var order = 0
    private var scratch = [UInt8](repeating: 0, count: 4096)
    /// Return false to lose a datagram.
    var filter: ((Datagram) -> Bool)?
    var recording = false
    private(set) var log: [Datagram] = []
    /// Datagrams sent to an address where no host is.
    private(set) var undeliverable = 0
    /// Datagrams whose sender named no address (`transmitDestination` empty).
    private(set) var unaddressed = 0

    @discardableResult
    func add(_ name: String, _ host: SimHost, at address: EndpointAddress) -> Node {
        let node = Node(name: name, host: host, address: address)
        nodes.append(node)
        return node
    }

    func drain(_ node: Node) {
        node.host.serve(now: now)
        var guardCount = 0
        while guardCount < 100_000, let (n, to) = scratch.withUnsafeMutableBytes({ node.host.transmit(into: $0, now: now) }) {
            guardCount += 1
            node.sent += 1
            guard !to.isEmpty else {
                unaddressed += 1
                continue
            }
            order += 1
            let d = Datagram(deliverAt: now.nanoseconds + latency, order: order, from: node.address, to: to, bytes: Array(scratch[0..<n]))
            if recording { log.append(d) }
            if let filter, !filter(d) { continue }
            inFlight.append(d)
        }
    }

    /// Puts a datagram on the wire as if `node` had sent it.
    func inject(from node: Node, to: EndpointAddress, _ bytes: [UInt8]) {
        order += 1
        inFlight.append(Datagram(deliverAt: now.nanoseconds + latency, order: order, from: node.address, to: to, bytes: bytes))
    }

    func deliverDue() {
        inFlight.sort { ($0.deliverAt, $0.order) < ($1.deliverAt, $1.order) }
        let due = inFlight.prefix { $0.deliverAt <= now.nanoseconds }
        inFlight.removeFirst(due.count)
        for d in due {
            guard let node = nodes.first(where: { $0.address == d.to }) else {
                undeliverable += 1
                continue
            }
            var bytes = d.bytes
            bytes.withUnsafeMutableBytes { node.host.receive($0, length: d.bytes.count, from: d.from, now: now) }
            drain(node)
        }
    }

    func processNow() {
        for node in nodes { drain(node) }
        deliverDue()
        for node in nodes {
            if let d = node.host.nextDeadline(), d <= now { node.host.handleTimeout(now: now) }
        }
        for node in nodes { drain(node) }
    }

    func jump(limit: Instant) {
        var next = limit.nanoseconds
        for d in inFlight { next = min(next, d.deliverAt) }
        for node in nodes { if let d = node.host.nextDeadline() { next = min(next, d.nanoseconds) } }
        now = Instant(nanoseconds: max(now.nanoseconds, next))
    }

    /// Runs until `done` or until `seconds` of simulated time pass; bounded in steps too.
    @discardableResult
    func run(seconds: Double, until done: () -> Bool = { false }) -> Bool {
        let limit = now.adding(UInt64(seconds * 1e9))
        var steps = 0
        while steps < 2_000_000 {
            processNow()
            if done() { return true }
            if now >= limit { break }
            jump(limit: limit)
            steps += 1
        }
        return done()
    }
}

/// A made-up UDP address on the simulated network: 10.0.0.n, port `port`.
func simEndpoint(_ n: UInt8, port: UInt16 = 51820) -> EndpointAddress {
    [10, 0, 0, n, UInt8(port >> 8), UInt8(port & 0xff)].withUnsafeBytes { EndpointAddress(bytes: $0) }
}

/// A `TunnelCore` and what runs on it: listeners that echo, stream clients, UDP datagrams kept.
final class CoreHost: SimHost {
    let core: TunnelCore
    var echoPorts: Set<UInt16> = []
    var echoing: [Int] = []
    var clients: [StreamClient] = []
    var datagrams: [TunnelCore.Datagram] = []
    var datagramPayloads: [[UInt8]] = []
    /// Connection ids that ended, with their error.
    var ended: [(Int, TCPError?)] = []
    /// Whether the applications call `touched` after changing a connection (they need not).
    var touches = true

    init(_ core: TunnelCore) { self.core = core }

    func echo(port: UInt16) {
        core.listen(port: port)
        echoPorts.insert(port)
    }

    func receive(_ buffer: UnsafeMutableRawBufferPointer, length: Int, from source: EndpointAddress, now: Instant) {
        core.handleDatagram(buffer, length: length, from: source, now: now)
    }

    func transmit(into buffer: UnsafeMutableRawBufferPointer, now: Instant) -> (Int, EndpointAddress)? {
        guard let n = core.pollTransmit(into: buffer, now: now) else { return nil }
        return (n, core.transmitDestination)
    }

    func nextDeadline() -> Instant? { core.nextDeadline() }
    func handleTimeout(now: Instant) { core.handleTimeout(now: now) }

    func serve(now: Instant) {
        while let d = core.pollDatagram() {
            datagrams.append(d)
            datagramPayloads.append(Array(d.payload))
        }
        while let id = core.accept() { echoing.append(id) }
        while let id = core.pollEvent() {
            let c = core.connection(id)
            if c.hasEnded, !ended.contains(where: { $0.0 == id }) { ended.append((id, c.error)) }
        }
        for id in echoing {
            let c = core.connection(id)
            let readable = c.readable()
            let n = min(readable.count, c.writableBytes)
            if n > 0 {
                let region = c.sendRegion(maxBytes: n)
                let m = min(n, region.count)
                region.copyMemory(from: UnsafeRawBufferPointer(rebasing: readable[0..<m]))
                c.commitSend(m)
                c.consume(m)
                if touches { core.touched(id) }
            }
        }
        for client in clients { client.step(core, touching: touches) }
    }
}

/// One TCP connection that writes `total` bytes of a pattern (set by `tag`) and reads them back from an
/// echo service, checking every byte.
final class StreamClient {
    let total: Int
    let tag: Int
    var id: Int?
    private(set) var sent = 0
    private(set) var received = 0
    private(set) var corrupt = false

    init(total: Int, tag: Int) {
        self.total = total
        self.tag = tag
    }

    @inline(__always) func byte(_ i: Int) -> UInt8 { UInt8(truncatingIfNeeded: i &* 7 &+ tag &+ (i >> 10)) }

    var done: Bool { received == total }

    func step(_ core: TunnelCore, touching: Bool = true) {
        guard let id else { return }
        let c = core.connection(id)
        var changed = false
        while sent < total && c.writableBytes > 0 {
            let region = c.sendRegion(maxBytes: min(total - sent, 65_536))
            guard region.count > 0 else { break }
            for i in 0..<region.count { region[i] = byte(sent + i) }
            c.commitSend(region.count)
            sent += region.count
            changed = true
        }
        let readable = c.readable()
        if !readable.isEmpty {
            for i in 0..<readable.count where readable[i] != byte(received + i) { corrupt = true }
            received += readable.count
            c.consume(readable.count)
            changed = true
        }
        if changed && touching { core.touched(id) }
    }
}

/// A bare `WireGuardDevice`: inner packets that arrive are kept.
final class DeviceHost: SimHost {
    let device: WireGuardDevice
    var packets: [[UInt8]] = []

    init(_ device: WireGuardDevice) { self.device = device }

    func receive(_ buffer: UnsafeMutableRawBufferPointer, length: Int, from source: EndpointAddress, now: Instant) {
        if case .packet(let range) = device.decapsulate(buffer, datagramLength: length, from: source, now: now) {
            packets.append(Array(buffer[range]))
        }
    }

    func transmit(into buffer: UnsafeMutableRawBufferPointer, now: Instant) -> (Int, EndpointAddress)? {
        if !pending.isEmpty {
            let (bytes, to) = pending.removeFirst()
            bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
            return (bytes.count, to)
        }
        guard let n = device.pollTransmit(into: buffer, now: now) else { return nil }
        return (n, device.transmitDestination)
    }

    func nextDeadline() -> Instant? { device.nextDeadline() }
    func handleTimeout(now: Instant) { device.handleTimeout(now: now) }
    func serve(now: Instant) {}

    /// Sends an inner packet through the device; a sealed datagram goes out with the next drain.
    @discardableResult
    func send(_ packet: [UInt8], now: Instant) -> Encapsulated {
        var buffer = [UInt8](repeating: 0, count: WireGuardDevice.headroom + packet.count + WireGuardDevice.tailroom)
        buffer.replaceSubrange(WireGuardDevice.headroom..<WireGuardDevice.headroom + packet.count, with: packet)
        let result = buffer.withUnsafeMutableBytes { device.encapsulate($0, packetLength: packet.count, now: now) }
        if case .send(let n) = result { pending.append((Array(buffer[0..<n]), device.transmitDestination)) }
        return result
    }

    /// Datagrams sealed by `send`, handed out before the device's own.
    var pending: [([UInt8], EndpointAddress)] = []
}

/// An IPv4 UDP packet from `source` to `destination` (port 9 to 9) carrying `payload`.
func udpPacket(from source: IPAddress, to destination: IPAddress, payload: [UInt8]) -> [UInt8] {
    let builder = PacketBuilder(source: source, destination: destination, transport: .udp(UDPRepr(sourcePort: 9, destinationPort: 9)))
    var packet = [UInt8](repeating: 0, count: builder.headerLength + payload.count)
    let n = packet.withUnsafeMutableBytes { p in payload.withUnsafeBytes { builder.emit(into: p, at: 0, copying: $0) } }
    return Array(packet[0..<n])
}

func simIP(_ text: String) -> IPAddress { IPAddress(text)! }
func simPrefix(_ text: String) -> IPPrefix { IPPrefix(text)! }
