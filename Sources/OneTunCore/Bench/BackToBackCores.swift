/// Two `TunnelCore`s joined in memory, one thread, a fake clock: the client (the WireGuard initiator,
/// 10.0.0.1) opens one TCP connection to the server (the responder, 10.0.0.2, listening on port 5001)
/// and streams bytes to it through both WireGuard sessions. The link is lossless, in order and one round
/// long each way: what a core transmits in one round is delivered, as one batch, at the start of the next
/// (as the forwarder reads a batch of datagrams and then polls its output). Each round advances the
/// clock by `roundNanos`; an idle round jumps to the earliest deadline.
///
/// It is the harness of the in-memory benchmark (`make bench-micro`: throughput against the seal+open
/// micro-benchmark, allocations per MiB) and of `make bench-instr` (instructions per MiB under callgrind),
/// so it is deterministic for a given seed: the same instructions on every run (with
/// SWIFT_DETERMINISTIC_HASHING=1, which `make bench-instr` sets: dictionaries otherwise hash with a
/// per-process seed).
@_spi(OneTunInternals) public final class BackToBackCores {
    public let client: TunnelCore
    public let server: TunnelCore
    @exclusivity(unchecked) public private(set) var now = Instant(nanoseconds: 1_000_000_000)
    /// The client's connection, and the server's once accepted.
    @exclusivity(unchecked) public private(set) var clientID: Int?
    @exclusivity(unchecked) public private(set) var serverID: Int?
    /// Bytes the client application wrote and the server application read (and, with `verify`, checked).
    @exclusivity(unchecked) public private(set) var sent = 0
    @exclusivity(unchecked) public private(set) var received = 0
    /// Datagrams carried each way.
    @exclusivity(unchecked) public private(set) var datagrams = 0
    public let verify: Bool
    public static let port: UInt16 = 5001
    let roundNanos: UInt64 = 20_000

    /// The bytes sent: position i carries `i % patternPeriod`, so the receiver can check any stretch.
    static let patternPeriod = 251
    let pattern: UnsafeMutableRawBufferPointer
    let datagram: UnsafeMutableRawBufferPointer
    /// The datagrams in flight each way; a core whose queue is full transmits no more that round.
    var toServer: PacketQueue<Void>
    var toClient: PacketQueue<Void>
    static let linkSlots = 1024

    public init(seed: UInt64, verify: Bool = true) {
        self.verify = verify
        let keys = SeededRandom(seed: seed)
        let clientKey = WGCrypto.generatePrivateKey(using: keys)
        let serverKey = WGCrypto.generatePrivateKey(using: keys)
        let clientAddress = IPAddress.v4(IPv4Address(10, 0, 0, 1))
        let serverAddress = IPAddress.v4(IPv4Address(10, 0, 0, 2))
        client = TunnelCore(
            config: TunnelCoreConfig(
                wireGuard: WireGuardConfig(privateKey: clientKey, peerPublicKey: WGCrypto.x25519PublicKey(privateKey: serverKey)),
                addresses: [clientAddress]),
            random: SeededRandom(seed: seed &+ 1))
        server = TunnelCore(
            config: TunnelCoreConfig(
                wireGuard: WireGuardConfig(privateKey: serverKey, peerPublicKey: WGCrypto.x25519PublicKey(privateKey: clientKey)),
                addresses: [serverAddress]),
            random: SeededRandom(seed: seed &+ 2))
        let wallClock: Int64 = 1_800_000_000 * 1_000_000_000
        client.wallClockOffset = wallClock
        server.wallClockOffset = wallClock
        pattern = .allocate(byteCount: 65_536 + Self.patternPeriod, alignment: 16)
        for i in 0..<pattern.count { pattern[i] = UInt8(i % Self.patternPeriod) }
        datagram = .allocate(byteCount: TunnelCore.minimumTransmitBuffer(mtu: 1420), alignment: 16)
        toServer = PacketQueue(slotSize: TunnelCore.minimumTransmitBuffer(mtu: 1420), capacity: Self.linkSlots)
        toClient = PacketQueue(slotSize: TunnelCore.minimumTransmitBuffer(mtu: 1420), capacity: Self.linkSlots)
        server.listen(port: Self.port)
        client.start(now: now)
        clientID = client.connect(to: serverAddress, port: Self.port, now: now)
    }

    deinit {
        pattern.deallocate()
        datagram.deallocate()
        toServer.deallocate()
        toClient.deallocate()
    }

    /// Streams `bytes` more from the client to the server; false if they did not all arrive within
    /// `maxRounds` rounds, or (with `verify`) arrived altered.
    public func transfer(bytes: Int, maxRounds: Int = 1 << 26) -> Bool {
        let target = received + bytes
        let sendTarget = sent + bytes
        var rounds = 0
        while received < target {
            rounds += 1
            if rounds > maxRounds { return false }
            guard round(sendLimit: sendTarget) else { return false }
        }
        return true
    }

    /// One round: last round's datagrams arrive, both applications act, both cores transmit, time passes.
    func round(sendLimit: Int) -> Bool {
        let moved = !toServer.isEmpty || !toClient.isEmpty
        deliver(&toServer, to: server)
        deliver(&toClient, to: client)
        if let id = clientID, sent < sendLimit {
            let connection = client.connection(id)
            let offset = sent % Self.patternPeriod
            let want = min(sendLimit - sent, 65_536)
            let n = connection.send(UnsafeRawBufferPointer(rebasing: pattern[offset..<(offset + want)]))
            if n > 0 {
                sent += n
                client.touched(id)
            }
        }
        while client.pollEvent() != nil {}
        if serverID == nil { serverID = server.accept() }
        while server.pollEvent() != nil {}
        if let id = serverID {
            let connection = server.connection(id)
            let readable = connection.readable()
            if !readable.isEmpty {
                if verify, !matchesPattern(readable, from: received) { return false }
                received += readable.count
                connection.consume(readable.count)
                server.touched(id)
            }
        }
        transmit(from: client, into: &toServer)
        transmit(from: server, into: &toClient)
        now = now.adding(roundNanos)
        if !moved, toServer.isEmpty, toClient.isEmpty {
            var earliest = client.nextDeadline()
            if let d = server.nextDeadline(), earliest.map({ d < $0 }) ?? true { earliest = d }
            // Nothing in flight and no timer: the transfer cannot progress (a reset connection, say).
            guard let earliest else { return false }
            if now < earliest { now = earliest }
        }
        if let d = client.nextDeadline(), d <= now { client.handleTimeout(now: now) }
        if let d = server.nextDeadline(), d <= now { server.handleTimeout(now: now) }
        return true
    }

    func deliver(_ link: inout PacketQueue<Void>, to core: TunnelCore) {
        while let (slot, length, _) = link.front() {
            core.handleDatagram(slot, length: length, now: now)
            link.removeFront()
            datagrams += 1
        }
    }

    func transmit(from core: TunnelCore, into link: inout PacketQueue<Void>) {
        while let slot = link.reserve(), let n = core.pollTransmit(into: slot, now: now) { link.commit(n) }
    }

    /// Seals `count` IPv4 packets of `size` bytes with the client's session and opens them with the
    /// server's, in place, past the TCP/IP stacks: the crypto alone, the yardstick the in-memory transfer is
    /// measured against. False when there is no session yet or a packet does not open.
    public func sealAndOpen(count: Int, size: Int = 1420) -> Bool {
        let headroom = WireGuardDevice.headroom
        guard size >= 20, headroom + size + WireGuardDevice.tailroom <= datagram.count else { return false }
        let packet = UnsafeMutableRawBufferPointer(rebasing: datagram[headroom..<(headroom + size)])
        for i in 0..<size { packet[i] = UInt8(truncatingIfNeeded: i) }
        packet[0] = 0x45
        packet.storeBytes(of: UInt16(size).bigEndian, toByteOffset: 2, as: UInt16.self)
        for _ in 0..<count {
            guard case .send(let n) = client.device.encapsulate(datagram, packetLength: size, now: now),
                case .packet = server.device.decapsulate(datagram, datagramLength: n, from: EndpointAddress(), now: now)
            else { return false }
        }
        return true
    }

    /// True when `bytes` are the pattern from stream offset `position` on.
    func matchesPattern(_ bytes: UnsafeRawBufferPointer, from position: Int) -> Bool {
        var checked = 0
        while checked < bytes.count {
            let offset = (position + checked) % Self.patternPeriod
            let n = min(65_536, bytes.count - checked)
            for i in 0..<n where bytes[checked + i] != pattern[offset + i] { return false }
            checked += n
        }
        return true
    }
}
