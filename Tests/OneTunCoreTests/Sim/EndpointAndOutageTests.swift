import Testing
@_spi(OneTunInternals) @testable import OneTunCore

/// The endpoint check, roaming, and what the tunnel says about outages, in the fake-clock simulation.
@Suite struct EndpointAndOutageTests {
    /// A pair whose sides know each other's addresses, with a session up.
    func establishedPair(seed: UInt64) -> WireGuardPair {
        let pair = WireGuardPair(seed: seed)
        pair.sourceOfA = simAddress(1)
        pair.sourceOfB = simAddress(2)
        pair.a.endpoint = simAddress(2)
        pair.b.endpoint = simAddress(1)
        pair.send(fromA: true, simPacket(tag: 0))
        #expect(pair.run(seconds: 1) { pair.receivedByB.count == 1 })
        return pair
    }

    @Test func strangersAreRefusedBeforeCryptoAndARoamingPeerIsFollowed() throws {
        let pair = establishedPair(seed: 40)
        #expect(pair.a.drainEvents() == [.sessionEstablished(rekey: false, outage: nil)])
        // A transport message naming no session of ours, from a stranger: refused unopened.
        var forged = [UInt8](repeating: 0, count: 64)
        forged[0] = 4
        let refused = forged.withUnsafeMutableBytes { pair.a.decapsulate($0, datagramLength: 64, from: simAddress(9), now: pair.now) }
        #expect(refused == .dropped(.unknownSource))
        #expect(pair.a.stats.droppedUnknownSource == 1 && pair.a.stats.droppedDecryption == 0)
        // B moves: its next packet comes from a new address, authenticates, and A follows it.
        var captured: [UInt8] = []
        pair.filter = { fromA, d in
            if !fromA && captured.isEmpty { captured = d }
            return true
        }
        pair.sourceOfB = simAddress(3)
        pair.send(fromA: false, simPacket(tag: 1))
        #expect(pair.run(seconds: 1) { pair.receivedByA.count == 1 })
        #expect(pair.a.endpoint == simAddress(3))
        #expect(pair.a.stats.endpointChanges == 1)
        #expect(pair.a.drainEvents() == [.endpointChanged])
        // The same packet replayed from yet another address authenticates nothing: no move.
        var replay = captured
        let result = replay.withUnsafeMutableBytes { pair.a.decapsulate($0, datagramLength: captured.count, from: simAddress(4), now: pair.now) }
        #expect(result == .dropped(.replayed))
        #expect(pair.a.endpoint == simAddress(3))
        #expect(pair.b.endpoint == simAddress(1))
    }

    @Test func lostSessionIsSaidThenItsRecoveryWithTheOutage() {
        let pair = establishedPair(seed: 41)
        _ = pair.a.drainEvents()
        // The peer goes silent (restarting): A's data gets no answer.
        pair.filter = { fromA, _ in fromA }
        let silentFrom = pair.now
        for tag in 1...3 {
            pair.send(fromA: true, simPacket(tag: UInt32(tag)))
            pair.advance(seconds: 1)
        }
        pair.run(seconds: 30) { pair.a.handshakeProblem != nil }
        let events = pair.a.drainEvents()
        #expect(events.first == .sessionLost, "\(events)")
        #expect(events.contains(.handshakeFailing(.noReply)), "\(events)")
        #expect(pair.a.handshakeProblem == .noReply)
        // The peer is back: the next handshake ends the outage, and says how long it was.
        pair.filter = nil
        #expect(pair.run(seconds: 10) { pair.a.handshakeProblem == nil })
        let back = pair.a.drainEvents()
        guard case .sessionEstablished(rekey: false, outage: let outage?)? = back.last else {
            Issue.record("no recovery event: \(back)")
            return
        }
        // Measured from the peer's last authenticated packet, just before it went silent.
        #expect(outage >= 15 * Nanos.second && outage <= pair.now.since(silentFrom) + 2 * Nanos.second, "outage \(outage)")
        #expect(pair.a.recovered, "the core is to be told that its connections may retransmit at once")
    }

    @Test func aReplyThatDoesNotDecryptIsSaidAsSuch() {
        var psk = Key32.zero
        psk.withUnsafeMutableBytes { $0[0] = 9 }
        let pair = WireGuardPair(seed: 42) { a, _ in a.presharedKey = psk }
        pair.send(fromA: true, simPacket(tag: 1))
        pair.run(seconds: 2)
        #expect(pair.a.handshakeProblem == .replyRefused)
        #expect(pair.a.drainEvents() == [.handshakeFailing(.replyRefused)])
        // Said once per change, not per retry.
        pair.run(seconds: 30)
        #expect(pair.a.drainEvents().isEmpty)
    }

    @Test func sessionExpiryIsSaidWhenItHappens() {
        let pair = establishedPair(seed: 43)
        _ = pair.a.drainEvents()
        // No traffic at all (B's keepalive after A's first packet still arrives).
        pair.run(seconds: 179)
        #expect(pair.a.drainEvents().isEmpty)
        pair.run(seconds: 2)
        // Nothing was waiting to go: an idle expiry, not an outage.
        #expect(pair.a.drainEvents() == [.sessionExpired(idle: true)])
        #expect(pair.a.handshakeProblem == nil && pair.a.lostSince == nil)
        #expect(pair.a.isEstablished, "the keys are wiped later, at 3 × REJECT_AFTER_TIME")
        // B's session expires with a packet staged for it: that one is an outage.
        let b = establishedPair(seed: 47)
        _ = b.a.drainEvents()
        b.run(seconds: 170)
        b.filter = { _, _ in false }
        b.send(fromA: true, simPacket(tag: 9))
        b.run(seconds: 11)
        #expect(b.a.drainEvents().contains(.sessionExpired(idle: false)))
    }

    /// The peer pauses long enough for the session to be presumed lost, then answers on it again: the
    /// outage ends there, not at the next handshake.
    @Test func aPauseEndsWhenThePeerAnswersOnTheSameSession() {
        let pair = establishedPair(seed: 48)
        _ = pair.a.drainEvents()
        // Everything from B is held back (not lost) for 20 s, then delivered.
        var held: [[UInt8]] = []
        pair.filter = { fromA, d in
            if !fromA { held.append(d) }
            return fromA
        }
        pair.send(fromA: true, simPacket(tag: 1))
        pair.run(seconds: 16)
        #expect(pair.a.drainEvents().first == .sessionLost)
        // B's keepalive (on the old session) arrives; its handshake answers are withheld, so only the
        // transport packet can end the outage.
        pair.filter = { fromA, _ in fromA }
        let keepalive = held.first { $0[0] == 4 }
        var datagram = try! #require(keepalive)
        let length = datagram.count
        _ = datagram.withUnsafeMutableBytes { pair.a.decapsulate($0, datagramLength: length, from: simAddress(2), now: pair.now) }
        guard case .sessionResumed(let outage)? = pair.a.drainEvents().last else {
            Issue.record("the pause did not end")
            return
        }
        #expect(outage >= 15 * Nanos.second)
        #expect(pair.a.handshakeProblem == nil && pair.a.recovered)
    }

    /// Under load a responder answers with a cookie bound to the source address (paper §5.4.7): from a
    /// stable address the initiator proves it and completes; from an address that changes every datagram
    /// the cookie never fits and the initiator hears "cookie required".
    @Test func cookiesAreBoundToTheSourceAddress() {
        let stable = WireGuardPair(seed: 44) { _, b in b.handshakeLoadThreshold = 0 }
        stable.sourceOfA = simAddress(1)
        stable.send(fromA: true, simPacket(tag: 1))
        #expect(stable.run(seconds: 12) { stable.receivedByB.count == 1 })
        #expect(stable.b.stats.cookieRepliesSent >= 1)

        let moving = WireGuardPair(seed: 44) { _, b in b.handshakeLoadThreshold = 0 }
        var next: UInt8 = 10
        moving.filter = { fromA, _ in
            if fromA {
                next &+= 1
                moving.sourceOfA = simAddress(next)
            }
            return true
        }
        moving.send(fromA: true, simPacket(tag: 1))
        moving.run(seconds: 20)
        #expect(moving.receivedByB.isEmpty)
        #expect(moving.a.stats.cookieRepliesReceived >= 2)
        #expect(moving.a.handshakeProblem == .cookieRequired)
    }
}

@Suite struct ConnectTimeoutTests {
    /// The default connect time-out ends an unanswered open at 20 s, long before six SYN retries (127 s).
    @Test func anUnansweredOpenEndsAtTheConnectTimeout() {
        let pair = TCPPair(seed: 45)
        pair.filter = { _, _, _ in false }
        let start = pair.now
        #expect(pair.run(seconds: 200, until: { pair.client.state == .closed }))
        #expect(pair.client.error == .timedOut)
        #expect(pair.now.since(start) == 20 * Nanos.second)
    }

    /// After an outage, a connection whose retransmission timer backed off retransmits at once.
    @Test func pathRecoveryFiresABackedOffRetransmissionNow() {
        let pair = TCPPair(seed: 46)
        let up = TCPStreamApp(total: 1 << 20, tag: 1, closeWhenDone: false)
        #expect(pair.run(seconds: 1, app: { up.step(pair.client) }, until: { pair.client.state == .established }))
        pair.filter = { _, _, _ in false }
        pair.run(seconds: 10, app: { up.step(pair.client) }, until: { false })
        let backedOff = pair.client.nextDeadline()
        #expect(pair.client.retransmissions >= 2)
        #expect(backedOff.map { $0.since(pair.now) > Nanos.second } == true)
        #expect(pair.client.pathRecovered(now: pair.now))
        #expect(pair.client.nextDeadline() == pair.now)
    }
}
