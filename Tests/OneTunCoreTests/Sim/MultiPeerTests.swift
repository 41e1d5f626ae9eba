import Foundation
import Testing
@_spi(OneTunInternals) @testable import OneTunCore

/// Several peers on one core, in the fake-clock network: cryptokey routing both ways (paper §2), a peer
/// that only calls us, unknown keys, no route, cookies under load, a hundred handshakes, and receiver
/// indices that must stay unique across peers whatever the random source does.
@Suite struct MultiPeerTests {
    static func key(_ n: UInt64) -> Key32 { WGCrypto.generatePrivateKey(using: SeededRandom(seed: 0x5EED_0000 &+ n)) }
    static func pub(_ key: Key32) -> Key32 { WGCrypto.x25519PublicKey(privateKey: key) }
    static let hubKey = key(0)
    static let hubPublic = pub(hubKey)
    static let keyA = key(1), keyB = key(2), keyC = key(3)
    static let wallClock: Int64 = 1_700_000_000 * Int64(Nanos.second)
    static let hubAt = simEndpoint(1)

    /// The core under test: several peers, our address 10.0.0.1.
    func hub(_ peers: [PeerConfig], threshold: Int = 64, seed: UInt64 = 1) -> CoreHost {
        let core = TunnelCore(
            config: TunnelCoreConfig(privateKey: Self.hubKey, peers: peers, addresses: [simIP("10.0.0.1")], handshakeLoadThreshold: threshold),
            random: SeededRandom(seed: seed))
        core.wallClockOffset = Self.wallClock
        return CoreHost(core)
    }

    /// A one-peer core whose peer is the hub, at `Self.hubAt`.
    func spoke(_ key: Key32, address: String, seed: UInt64) -> CoreHost {
        let core = TunnelCore(
            config: TunnelCoreConfig(wireGuard: WireGuardConfig(privateKey: key, peerPublicKey: Self.hubPublic), addresses: [simIP(address)]),
            random: SeededRandom(seed: seed))
        core.wallClockOffset = Self.wallClock
        core.endpoint = Self.hubAt
        return CoreHost(core)
    }

    func peerEvents(_ core: TunnelCore) -> [PeerEvent] {
        var events: [PeerEvent] = []
        while let e = core.pollPeerEvent() { events.append(e) }
        return events
    }

    /// Two peers, one holding 10.1.0.0/16 and one 10.1.2.0/24 inside it: a stream to a service behind each
    /// at the same time, both byte-exact, each through its own peer (the /24 wins for its addresses).
    @Test func twoPeersCarryTheirOwnPrefixesAtOnce() {
        let net = CoreNetwork()
        let hub = hub([
            PeerConfig(publicKey: Self.pub(Self.keyA), allowedIPs: [simPrefix("10.1.0.0/16")], endpoint: simEndpoint(2)),
            PeerConfig(publicKey: Self.pub(Self.keyB), allowedIPs: [simPrefix("10.1.2.0/24")], endpoint: simEndpoint(3)),
        ])
        let a = spoke(Self.keyA, address: "10.1.0.1", seed: 2)
        let b = spoke(Self.keyB, address: "10.1.2.5", seed: 3)
        net.add("hub", hub, at: Self.hubAt)
        net.add("a", a, at: simEndpoint(2))
        net.add("b", b, at: simEndpoint(3))
        a.echo(port: 5001)
        b.echo(port: 5001)
        hub.core.start(now: net.now)
        #expect(hub.core.stats.wireGuard.handshakeInitiationsSent == 0, "no keepalive: each handshake waits for its first packet")
        let device = hub.core.device
        #expect(device.route(simIP("10.1.2.5"))?.publicKey == Self.pub(Self.keyB))
        #expect(device.route(simIP("10.1.2.255"))?.publicKey == Self.pub(Self.keyB))
        #expect(device.route(simIP("10.1.3.1"))?.publicKey == Self.pub(Self.keyA))
        #expect(device.route(simIP("10.1.0.1"))?.publicKey == Self.pub(Self.keyA))
        #expect(device.route(simIP("10.2.0.1")) == nil)

        let toA = StreamClient(total: 1 << 20, tag: 1)
        let toB = StreamClient(total: 1 << 20, tag: 2)
        toA.id = hub.core.connect(to: simIP("10.1.0.1"), port: 5001, now: net.now)
        toB.id = hub.core.connect(to: simIP("10.1.2.5"), port: 5001, now: net.now)
        hub.clients = [toA, toB]
        #expect(net.run(seconds: 60) { toA.done && toB.done })
        #expect(!toA.corrupt && !toB.corrupt)
        #expect(toA.received == 1 << 20 && toB.received == 1 << 20)
        // Each stream went through its own peer: a packet for one spoke's address at the other would have
        // been refused there ("not for us"), and each peer carried at least its own megabyte.
        #expect(a.core.stats.packetsRefused == 0 && b.core.stats.packetsRefused == 0)
        let peerA = hub.core.peer(Self.pub(Self.keyA))!
        let peerB = hub.core.peer(Self.pub(Self.keyB))!
        #expect(peerA.stats.bytesSent > 1 << 20 && peerB.stats.bytesSent > 1 << 20)
        #expect(peerA.stats.bytesReceived > 1 << 20 && peerB.stats.bytesReceived > 1 << 20)
        #expect(peerA.isEstablished && peerB.isEstablished)
        #expect(peerA.lastHandshake != nil && peerA.endpoint == simEndpoint(2) && peerB.endpoint == simEndpoint(3))
        #expect(peerA.allowedIPs == [simPrefix("10.1.0.0/16")] && peerB.allowedIPs == [simPrefix("10.1.2.0/24")])
        #expect(hub.core.stats.wireGuard.handshakesCompleted == 2 && hub.core.stats.wireGuard.droppedNoRoute == 0)
        // Session events name their peer.
        let established = Set(peerEvents(hub.core).filter { $0.event == .sessionEstablished(rekey: false, outage: nil) }.map(\.publicKey))
        #expect(established == [Self.pub(Self.keyA), Self.pub(Self.keyB)])
        #expect(device.indexBookkeepingHolds)
        #expect(net.unaddressed == 0 && net.undeliverable == 0)
    }

    /// Cryptokey routing, incoming: a packet from one peer whose source belongs to another peer's prefix
    /// (or to no peer's) is dropped and counted; one from its own prefix passes.
    @Test func aPeerSpeaksOnlyForItsOwnAddresses() {
        let net = CoreNetwork()
        let hub = hub([
            PeerConfig(publicKey: Self.pub(Self.keyA), allowedIPs: [simPrefix("10.1.0.0/16")], endpoint: simEndpoint(2)),
            PeerConfig(publicKey: Self.pub(Self.keyB), allowedIPs: [simPrefix("10.1.2.0/24")], endpoint: simEndpoint(3)),
        ])
        let a = spoke(Self.keyA, address: "10.1.0.1", seed: 4)
        net.add("hub", hub, at: Self.hubAt)
        let aNode = net.add("a", a, at: simEndpoint(2))
        let payload: [UInt8] = [1, 2, 3, 4]
        #expect(payload.withUnsafeBytes { a.core.sendDatagram(from: 4000, to: UDPEndpoint(address: simIP("10.0.0.1"), port: 53), payload: $0) })
        #expect(net.run(seconds: 2) { hub.datagrams.count == 1 })
        #expect(hub.datagrams.first?.source == UDPEndpoint(address: simIP("10.1.0.1"), port: 4000))
        // A's session sealing packets whose sources A may not speak for.
        for source in ["10.1.2.5", "172.16.0.1", "10.1.9.9"] {
            let packet = udpPacket(from: simIP(source), to: simIP("10.0.0.1"), payload: payload)
            var buffer = [UInt8](repeating: 0, count: 16 + packet.count + 32)
            buffer.replaceSubrange(16..<16 + packet.count, with: packet)
            guard case .send(let n) = buffer.withUnsafeMutableBytes({ a.core.device.encapsulate($0, packetLength: packet.count, now: net.now) })
            else {
                Issue.record("no session at A")
                return
            }
            net.inject(from: aNode, to: Self.hubAt, Array(buffer[0..<n]))
        }
        net.run(seconds: 1)
        // 10.1.2.5 is B's (the /24 inside A's /16), 172.16.0.1 nobody's; 10.1.9.9 is A's own.
        #expect(hub.datagrams.map(\.source.address) == [simIP("10.1.0.1"), simIP("10.1.9.9")])
        #expect(hub.core.stats.wireGuard.droppedSourceNotAllowed == 2)
        #expect(hub.core.peer(Self.pub(Self.keyA))?.stats.droppedSourceNotAllowed == 2)
        #expect(hub.core.peer(Self.pub(Self.keyB))?.stats.droppedSourceNotAllowed == 0)
    }

    /// A peer configured without an endpoint: nothing goes to it (no initiation, no "no reply"), its
    /// packets wait; it calls us, we answer at its source, the waiting packets go, and when it moves
    /// mid-transfer we follow it without losing a byte.
    @Test func aPeerWithoutEndpointIsFoundWhenItCallsAndFollowedWhenItMoves() {
        let net = CoreNetwork()
        let hub = hub([PeerConfig(publicKey: Self.pub(Self.keyC), allowedIPs: [simPrefix("10.3.0.0/16")])])
        let c = spoke(Self.keyC, address: "10.3.0.1", seed: 5)
        let hubNode = net.add("hub", hub, at: Self.hubAt)
        hub.echo(port: 7000)
        hub.core.start(now: net.now)
        let early = hub.core.connect(to: simIP("10.3.0.1"), port: 9, now: net.now)
        #expect(early != nil, "the peer carries the address: the SYN waits for it")
        net.run(seconds: 10)
        #expect(hubNode.sent == 0 && hub.core.stats.wireGuard.handshakeInitiationsSent == 0)
        #expect(hub.core.handshakeProblem == nil && hub.core.peer(Self.pub(Self.keyC))?.handshakeProblem == nil)
        #expect(hub.core.peer(Self.pub(Self.keyC))?.endpoint == nil)

        let cNode = net.add("c", c, at: simEndpoint(7))
        let client = StreamClient(total: 2 << 20, tag: 3)
        client.id = c.core.connect(to: simIP("10.0.0.1"), port: 7000, now: net.now)
        c.clients = [client]
        #expect(net.run(seconds: 30) { client.received >= 512 << 10 })
        #expect(hub.core.peer(Self.pub(Self.keyC))?.endpoint == simEndpoint(7))
        // The packets that waited went once the session was confirmed: C has no port 9, so it refused.
        #expect(hub.ended.contains { $0.0 == early! && $0.1 == .refused })
        // C moves to another port (a NAT rebinding): what was on its way to the old one is lost.
        cNode.address = simEndpoint(7, port: 40_000)
        #expect(net.run(seconds: 60) { client.done })
        #expect(!client.corrupt)
        let status = hub.core.peer(Self.pub(Self.keyC))!
        #expect(status.endpoint == simEndpoint(7, port: 40_000))
        #expect(status.stats.endpointChanges == 2)
        #expect(peerEvents(hub.core).filter { $0.event == .endpointChanged }.count == 2)
        #expect(hub.core.stats.wireGuard.handshakeInitiationsSent == 0, "a responder only, for this peer")
    }

    /// An initiation from someone who knows our public key but is no peer of ours: dropped, counted, and
    /// nothing kept (no index, no event, no endpoint moved).
    @Test func anInitiationFromAnUnknownKeyLeavesNoState() {
        let net = CoreNetwork()
        let hub = hub([PeerConfig(publicKey: Self.pub(Self.keyA), allowedIPs: [simPrefix("10.1.0.0/16")], endpoint: simEndpoint(2))])
        let stranger = spoke(Self.key(99), address: "10.9.0.1", seed: 6)
        net.add("hub", hub, at: Self.hubAt)
        net.add("stranger", stranger, at: simEndpoint(9))
        stranger.core.start(now: net.now)
        net.run(seconds: 12)
        let stats = hub.core.stats.wireGuard
        #expect(stats.droppedUnknownPeer == 3 && stats.handshakeResponsesSent == 0)
        #expect(hub.core.device.lastDrop == .handshake(.unknownStaticKey))
        #expect(hub.core.device.indices.count == 0)
        #expect(hub.core.pollPeerEvent() == nil)
        #expect(hub.core.peers.map(\.endpoint) == [simEndpoint(2)])
        #expect(stranger.core.handshakeProblem == .noReply)
    }

    /// No peer carries the destination: `connect` and `sendDatagram` refuse at once, a packet is a
    /// counted drop; and removing a peer takes its prefixes (its connection's packets then have no route)
    /// and its indices.
    @Test func noRouteRefusesAtOnceAndRemovingAPeerTakesItsRoutes() {
        let net = CoreNetwork()
        let hub = hub([PeerConfig(publicKey: Self.pub(Self.keyA), allowedIPs: [simPrefix("10.1.0.0/16")], endpoint: simEndpoint(2))])
        let a = spoke(Self.keyA, address: "10.1.0.1", seed: 7)
        net.add("hub", hub, at: Self.hubAt)
        net.add("a", a, at: simEndpoint(2))
        a.echo(port: 5001)
        #expect(hub.core.connect(to: simIP("192.168.1.1"), port: 80, now: net.now) == nil)
        #expect(!hub.core.hasRoute(to: simIP("192.168.1.1")) && hub.core.hasRoute(to: simIP("10.1.200.3")))
        #expect(hub.core.handshakeProblem(for: simIP("192.168.1.1")) == nil)
        #expect(!hub.core.sendDatagram(from: 4000, to: UDPEndpoint(address: simIP("192.168.1.1"), port: 53), payload: UnsafeRawBufferPointer(start: nil, count: 0)))
        #expect(hub.core.stats.datagramsDropped == 1 && hub.core.stats.tcpConnections == 0)
        let host = DeviceHost(hub.core.device)
        #expect(host.send(udpPacket(from: simIP("10.0.0.1"), to: simIP("192.168.1.1"), payload: [1]), now: net.now) == .dropped(.noRoute))
        #expect(host.send([0x45, 0, 0, 4], now: net.now) == .dropped(.noRoute), "too short to name a destination")
        #expect(hub.core.stats.wireGuard.droppedNoRoute == 2)

        let client = StreamClient(total: 4 << 20, tag: 4)
        client.id = hub.core.connect(to: simIP("10.1.0.1"), port: 5001, now: net.now)
        hub.clients = [client]
        #expect(net.run(seconds: 30) { client.received > 0 })
        #expect(hub.core.removePeer(Self.pub(Self.keyA)))
        #expect(!hub.core.removePeer(Self.pub(Self.keyA)))
        #expect(hub.core.peers.isEmpty && !hub.core.hasRoute(to: simIP("10.1.0.1")))
        #expect(hub.core.device.indices.count == 0)
        let dropped = hub.core.packetsDropped
        net.run(seconds: 5)
        #expect(hub.core.packetsDropped > dropped && hub.core.stats.wireGuard.droppedNoRoute > 2)
        #expect(hub.core.stats.wireGuard.handshakesCompleted == 1, "a removed peer's counters stay in the totals")
        #expect(hub.core.connect(to: simIP("10.1.0.1"), port: 5001, now: net.now) == nil)
    }

    /// Only peers with a persistent keepalive and an endpoint start at `start`; one added later with both
    /// starts at once.
    @Test func startBeginsHandshakesOnlyWithKeepalivePeers() {
        let net = CoreNetwork()
        let hub = hub([
            PeerConfig(publicKey: Self.pub(Self.keyA), allowedIPs: [simPrefix("10.1.0.0/16")], endpoint: simEndpoint(2)),
            PeerConfig(publicKey: Self.pub(Self.keyB), allowedIPs: [simPrefix("10.2.0.0/16")], endpoint: simEndpoint(3), persistentKeepaliveSeconds: 25),
            PeerConfig(publicKey: Self.pub(Self.keyC), allowedIPs: [simPrefix("10.3.0.0/16")], persistentKeepaliveSeconds: 25),
        ])
        net.recording = true
        net.add("hub", hub, at: Self.hubAt)
        hub.core.start(now: net.now)
        net.run(seconds: 1)
        #expect(net.log.map(\.to) == [simEndpoint(3)])
        #expect(hub.core.addPeer(PeerConfig(publicKey: Self.pub(Self.key(4)), allowedIPs: [], endpoint: simEndpoint(4), persistentKeepaliveSeconds: 10), now: net.now))
        #expect(!hub.core.addPeer(PeerConfig(publicKey: Self.pub(Self.keyA), allowedIPs: []), now: net.now), "a key already there")
        #expect(!hub.core.addPeer(PeerConfig(publicKey: Self.hubPublic, allowedIPs: []), now: net.now), "our own key")
        net.run(seconds: 1)
        #expect(net.log.map(\.to) == [simEndpoint(3), simEndpoint(4)])
        #expect(hub.core.peerCount == 4)
    }

    /// Under load every initiation gets a cookie reply at the address it came from, not at the endpoint
    /// configured for its peer (peer A is configured at an address it does not use); all then complete.
    @Test func cookieRepliesGoToTheRealSource() {
        let net = CoreNetwork()
        let hub = hub([
            PeerConfig(publicKey: Self.pub(Self.keyA), allowedIPs: [simPrefix("10.1.0.0/16")], endpoint: simEndpoint(20)),
            PeerConfig(publicKey: Self.pub(Self.keyB), allowedIPs: [simPrefix("10.2.0.0/16")]),
            PeerConfig(publicKey: Self.pub(Self.keyC), allowedIPs: [simPrefix("10.3.0.0/16")]),
        ], threshold: 0)
        let spokes = [
            spoke(Self.keyA, address: "10.1.0.1", seed: 8), spoke(Self.keyB, address: "10.2.0.1", seed: 9),
            spoke(Self.keyC, address: "10.3.0.1", seed: 10),
        ]
        net.recording = true
        net.add("hub", hub, at: Self.hubAt)
        for (i, s) in spokes.enumerated() {
            net.add("spoke \(i)", s, at: simEndpoint(UInt8(2 + i)))
            s.core.start(now: net.now)
        }
        #expect(net.run(seconds: 20) { spokes.allSatisfy(\.core.isEstablished) })
        func le32(_ b: [UInt8], _ at: Int) -> UInt32 { UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24 }
        let cookies = net.log.filter { $0.from == Self.hubAt && $0.bytes[0] == 3 }
        let initiations = net.log.filter { $0.to == Self.hubAt && $0.bytes[0] == 1 }
        #expect(cookies.count >= 3 && hub.core.stats.wireGuard.cookieRepliesSent == cookies.count)
        for cookie in cookies {
            let answered = initiations.first { le32($0.bytes, 4) == le32(cookie.bytes, 4) }
            #expect(answered != nil && cookie.to == answered?.from)
        }
        #expect(Set(cookies.map(\.to)) == [simEndpoint(2), simEndpoint(3), simEndpoint(4)])
        #expect(hub.core.peer(Self.pub(Self.keyA))?.endpoint == simEndpoint(2), "followed to where it is")
        #expect(net.undeliverable == 0)
    }

    /// A hundred peers, each calling one listening device at once: every handshake completes (a third of
    /// them after a cookie round: a hundred initiations in a second is load), every session carries a
    /// packet each way. Prints the count and the time taken.
    @Test func aHundredPeersHandshakeWithAListeningDevice() {
        let count = 100
        let net = CoreNetwork()
        let hub = WireGuardDevice(privateKey: Self.hubKey, random: SeededRandom(seed: 11))
        hub.wallClockOffset = Self.wallClock
        var spokes: [DeviceHost] = []
        for i in 0..<count {
            let key = Self.key(UInt64(1000 + i))
            let address = IPPrefix(address: .v4(IPv4Address(10, 100, UInt8(i / 200), UInt8(1 + i % 200))), length: 32)
            #expect(hub.addPeer(PeerConfig(publicKey: Self.pub(key), allowedIPs: [address]), now: net.now) != nil)
            let spoke = WireGuardDevice(config: WireGuardConfig(privateKey: key, peerPublicKey: Self.hubPublic), random: SeededRandom(seed: 2000 + UInt64(i)))
            spoke.wallClockOffset = Self.wallClock
            spoke.endpoint = Self.hubAt
            spokes.append(DeviceHost(spoke))
        }
        let hubHost = DeviceHost(hub)
        net.add("hub", hubHost, at: Self.hubAt)
        for (i, s) in spokes.enumerated() { net.add("spoke \(i)", s, at: simEndpoint(UInt8(2 + i))) }
        let clock = ContinuousClock()
        let started = clock.now
        for s in spokes { s.device.start(now: net.now) }
        let done = net.run(seconds: 30) { hub.stats.handshakesCompleted == count }
        let elapsed = clock.now - started
        #expect(done)
        #expect(hub.peers.allSatisfy(\.isEstablished) && spokes.allSatisfy(\.device.isEstablished))
        #expect(hub.indices.count == count && hub.indexBookkeepingHolds)
        // One packet each way per session.
        for (i, s) in spokes.enumerated() {
            let address = simIP("10.100.\(i / 200).\(1 + i % 200)")
            s.send(udpPacket(from: address, to: simIP("10.0.0.1"), payload: [UInt8(i)]), now: net.now)
            hubHost.send(udpPacket(from: simIP("10.0.0.1"), to: address, payload: [UInt8(i)]), now: net.now)
        }
        net.run(seconds: 1)
        #expect(hubHost.packets.count == count && spokes.allSatisfy { $0.packets.count == 1 })
        let stats = hub.stats
        let ms = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
        print(
            "\(count) peers, one listening device: \(stats.handshakesCompleted) handshakes completed in "
                + String(format: "%.1f ms", ms) + " of computation (" + String(format: "%.0f", Double(count) / ms * 1000)
                + "/s, both sides, this build), \(stats.cookieRepliesSent) cookie replies under load, \(net.now.since(Instant(nanoseconds: 1_000 * Nanos.second)) / Nanos.millisecond) ms simulated")
    }

    /// Receiver indices are unique across every peer of a device even when the random source keeps
    /// repeating itself (indices drawn from forty values): handshakes, rekeys and packets all work, and
    /// the index table always holds exactly the peers' indices.
    @Test func receiverIndicesStayUniqueWhenTheRandomRepeats() {
        let count = 8
        let net = CoreNetwork()
        let hub = WireGuardDevice(privateKey: Self.hubKey, random: CollidingRandom(seed: 12))
        hub.wallClockOffset = Self.wallClock
        var spokes: [DeviceHost] = []
        for i in 0..<count {
            let key = Self.key(UInt64(3000 + i))
            #expect(hub.addPeer(PeerConfig(publicKey: Self.pub(key), allowedIPs: [simPrefix("10.50.0.\(i + 1)/32")]), now: net.now) != nil)
            let spoke = WireGuardDevice(config: WireGuardConfig(privateKey: key, peerPublicKey: Self.hubPublic), random: CollidingRandom(seed: 40 + UInt64(i)))
            spoke.wallClockOffset = Self.wallClock
            spoke.endpoint = Self.hubAt
            spokes.append(DeviceHost(spoke))
        }
        let hubHost = DeviceHost(hub)
        net.add("hub", hubHost, at: Self.hubAt)
        for (i, s) in spokes.enumerated() { net.add("spoke \(i)", s, at: simEndpoint(UInt8(2 + i))) }
        for s in spokes { s.device.start(now: net.now) }
        #expect(net.run(seconds: 10) { hub.stats.handshakesCompleted == count })
        var delivered = 0
        for round in 0..<4 {
            // Traffic each way, then past REKEY_AFTER_TIME: the initiators rekey on their next packet.
            for (i, s) in spokes.enumerated() {
                let address = simIP("10.50.0.\(i + 1)")
                s.send(udpPacket(from: address, to: simIP("10.0.0.1"), payload: [UInt8(round)]), now: net.now)
                hubHost.send(udpPacket(from: simIP("10.0.0.1"), to: address, payload: [UInt8(round)]), now: net.now)
            }
            delivered += count
            net.run(seconds: 1)
            #expect(hubHost.packets.count == delivered && spokes.allSatisfy { $0.packets.count == round + 1 }, "round \(round)")
            #expect(hub.indexBookkeepingHolds, "round \(round)")
            net.run(seconds: 125)
        }
        #expect(hub.stats.handshakesCompleted > count)
        #expect(hub.indexBookkeepingHolds)
    }

    /// The device never hands out an index in use, however often the random source repeats one.
    @Test func newIndicesAvoidEveryIndexInUse() {
        let device = WireGuardDevice(privateKey: Self.hubKey, random: CollidingRandom(seed: 13))
        let peers = (0..<3).map { device.insertPeer(PeerConfig(publicKey: Self.pub(Self.key(UInt64(50 + $0))), allowedIPs: []))! }
        var taken: [UInt32] = []
        for i in 0..<39 { taken.append(device.newLocalIndex(for: peers[i % 3])) }
        #expect(Set(taken).count == 39 && device.indices.count == 39)
        for i in stride(from: 0, to: 39, by: 2) { device.indices.remove(taken[i]) }
        for (i, index) in taken.enumerated() { #expect(device.indices.lookup(index) == (i % 2 == 0 ? nil : i % 3)) }
        for _ in 0..<20 { _ = device.newLocalIndex(for: peers[0]) }
        #expect(device.indices.count == 39)
    }
}

/// `touched(id)` is not needed: a connection's commands queue its output themselves. After a quiet spell
/// (nothing arriving that would poll the connection anyway) a write, a half-close and an abort each leave
/// at once without it.
@Suite struct ForgottenTouchTests {
    @Test func commandsAfterAQuietSpellLeaveWithoutTouched() {
        let net = CoreNetwork()
        let keyA = MultiPeerTests.key(20), keyB = MultiPeerTests.key(21)
        let a = TunnelCore(
            config: TunnelCoreConfig(wireGuard: WireGuardConfig(privateKey: keyA, peerPublicKey: MultiPeerTests.pub(keyB)), addresses: [simIP("10.0.0.1")]),
            random: SeededRandom(seed: 30))
        let b = TunnelCore(
            config: TunnelCoreConfig(wireGuard: WireGuardConfig(privateKey: keyB, peerPublicKey: MultiPeerTests.pub(keyA)), addresses: [simIP("10.0.0.2")]),
            random: SeededRandom(seed: 31))
        for core in [a, b] { core.wallClockOffset = MultiPeerTests.wallClock }
        a.endpoint = simEndpoint(2)
        b.endpoint = simEndpoint(1)
        let client = CoreHost(a), server = CoreHost(b)
        server.touches = false
        net.add("client", client, at: simEndpoint(1))
        net.add("server", server, at: simEndpoint(2))
        server.echo(port: 5001)
        let id = a.connect(to: simIP("10.0.0.2"), port: 5001, now: net.now)!
        #expect(net.run(seconds: 2) { a.connection(id).state == .established && server.echoing.count == 1 })
        net.run(seconds: 5)
        let payload = [UInt8](repeating: 7, count: 1000)
        #expect(payload.withUnsafeBytes { a.connection(id).send($0) } == 1000)
        #expect(net.run(seconds: 0.2) { a.connection(id).readableBytes == 1000 }, "the write left without touched")
        a.connection(id).consume(1000)
        net.run(seconds: 5)
        a.connection(id).close()
        let accepted = server.echoing[0]
        #expect(net.run(seconds: 0.2) { b.connection(accepted).isReadClosed }, "the FIN left without touched")
        b.connection(accepted).abort()
        #expect(net.run(seconds: 0.2) { a.connection(id).error == .reset }, "the RST left without touched")
    }
}

/// A random source that keeps repeating itself where indices come from: every 8-byte draw is one of forty
/// values (the other draws, keys and nonces, are a seeded stream).
final class CollidingRandom: RandomSource {
    let base: SeededRandom
    init(seed: UInt64) { base = SeededRandom(seed: seed) }
    func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        guard buffer.count == 8 else { return base.fill(buffer) }
        let value = base.next() % 40
        buffer.storeBytes(of: value.littleEndian, as: UInt64.self)
    }
}
