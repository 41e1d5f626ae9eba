import Testing
@_spi(OneTunInternals) @testable import OneTunCore

@Suite struct WireGuardSimTests {
    @Test func handshakeAndDataBothWays() {
        let pair = WireGuardPair(seed: 1)
        #expect(pair.send(fromA: true, simPacket(tag: 1)) == .queued)
        #expect(pair.run(seconds: 1) { pair.receivedByB.count == 1 })
        #expect(pair.a.isEstablished && pair.b.isEstablished)
        #expect(pair.receivedByB == [simPacket(tag: 1)])
        // B's first transport packet uses the confirmed session directly.
        guard case .send = pair.send(fromA: false, simPacket(tag: 2, size: 1400)) else {
            Issue.record("responder could not send on a confirmed session")
            return
        }
        #expect(pair.run(seconds: 1) { pair.receivedByA.count == 1 })
        #expect(pair.receivedByA == [simPacket(tag: 2, size: 1400)])
        #expect(pair.a.stats.handshakesCompleted == 1)
        #expect(pair.b.stats.handshakesCompleted == 1)
    }

    @Test func presharedKeyMustMatch() {
        var psk = Key32.zero
        psk.withUnsafeMutableBytes { $0[0] = 7 }
        let same = WireGuardPair(seed: 2, psk: psk)
        same.send(fromA: true, simPacket(tag: 1))
        #expect(same.run(seconds: 1) { same.receivedByB.count == 1 })

        let different = WireGuardPair(seed: 2) { a, _ in a.presharedKey = psk }
        different.send(fromA: true, simPacket(tag: 1))
        different.run(seconds: 2)
        #expect(different.receivedByB.isEmpty)
        #expect(different.dropsAtA.contains(.handshake(.decryptionFailed)))
    }

    @Test func paddingKeepsDatagramsAlignedAndWithinMTU() {
        let pair = WireGuardPair(seed: 3)
        pair.send(fromA: true, simPacket(tag: 0))
        pair.run(seconds: 1) { pair.receivedByB.count == 1 }
        for size in [24, 25, 39, 40, 1407, 1408, 1419, 1420] {
            var buffer = [UInt8](repeating: 0, count: 16 + size + 32)
            buffer.replaceSubrange(16..<16 + size, with: simPacket(tag: UInt32(size), size: size))
            let result = buffer.withUnsafeMutableBytes { pair.a.encapsulate($0, packetLength: size, now: pair.now) }
            guard case .send(let n) = result else {
                Issue.record("no send for size \(size)")
                continue
            }
            let padded = n - 32
            #expect(padded >= size && padded <= max(size, 1420))
            #expect(padded % 16 == 0 || padded == 1420)
        }
    }

    @Test func rekeyAfterTimeLosesNoPacket() {
        let pair = WireGuardPair(seed: 4)
        var sent: UInt32 = 0
        // One packet each way every 100 ms for 400 simulated seconds: three rekeys at least.
        for _ in 0..<4000 {
            sent += 1
            pair.send(fromA: true, simPacket(tag: sent))
            pair.send(fromA: false, simPacket(tag: sent))
            pair.advance(seconds: 0.1)
        }
        pair.run(seconds: 1)
        #expect(pair.receivedByB.map(simTag) == Array(1...sent))
        #expect(pair.receivedByA.map(simTag) == Array(1...sent))
        #expect(pair.a.stats.handshakesCompleted + pair.b.stats.handshakesCompleted >= 4)
        #expect(pair.a.stats.stagedDropped == 0 && pair.b.stats.stagedDropped == 0)
    }

    @Test func replayedAndReorderedTransport() {
        let pair = WireGuardPair(seed: 5)
        pair.send(fromA: true, simPacket(tag: 0))
        pair.run(seconds: 1) { pair.receivedByB.count == 1 }
        // Capture ten datagrams, deliver them in reverse, then all again.
        var captured: [[UInt8]] = []
        pair.filter = { fromA, d in
            if fromA { captured.append(d) }
            return !fromA
        }
        for tag in 1...10 { pair.send(fromA: true, simPacket(tag: UInt32(tag))) }
        pair.filter = nil
        #expect(captured.count == 10)
        for d in captured.reversed() + captured {
            var bytes = d
            let result = bytes.withUnsafeMutableBytes {
                pair.b.decapsulate($0, datagramLength: d.count, from: EndpointAddress(), now: pair.now)
            }
            if case .packet(let r) = result { pair.receivedByB.append(Array(bytes[r])) } else if case .dropped(let why) = result { pair.dropsAtB.append(why) }
        }
        #expect(pair.receivedByB.dropFirst().map(simTag) == Array((1...10).reversed()))
        #expect(pair.dropsAtB.filter { $0 == .replayed }.count == 10)
        #expect(pair.b.stats.droppedReplayed == 10)
        // A replayed counter is refused before decryption: a corrupted replay is "replayed", not a failed tag.
        var forged = captured[0]
        forged[forged.count - 1] ^= 1
        let result = forged.withUnsafeMutableBytes {
            pair.b.decapsulate($0, datagramLength: captured[0].count, from: EndpointAddress(), now: pair.now)
        }
        #expect(result == .dropped(.replayed))
        #expect(pair.b.stats.droppedDecryption == 0)
    }

    @Test func replayWindowEdges() {
        var w = ReplayWindow()
        // mayAccept predicts accept exactly, and changes nothing.
        func accept(_ c: UInt64) -> Bool {
            let predicted = w.mayAccept(c)
            #expect(w.mayAccept(c) == predicted)
            let accepted = w.accept(c)
            #expect(accepted == predicted)
            return accepted
        }
        #expect(accept(0))
        #expect(!accept(0))
        #expect(accept(5000))
        #expect(!accept(5000 - ReplayWindow.windowSize - 1))
        #expect(accept(5000 - ReplayWindow.windowSize))
        #expect(accept(4999))
        #expect(!accept(4999))
        #expect(accept(1_000_000))
        #expect(!accept(4999))
        #expect(!accept(WireGuardConstants.rejectAfterMessages))
        // Every counter of a shuffled run inside the window is accepted exactly once.
        var v = ReplayWindow()
        let random = SeededRandom(seed: 9)
        var counters = Array(UInt64(0)..<1900)
        for i in stride(from: counters.count - 1, to: 0, by: -1) {
            counters.swapAt(i, Int(random.uniform(below: UInt64(i + 1))))
        }
        var firstTime = 0, secondTime = 0
        for c in counters where v.accept(c) { firstTime += 1 }
        for c in counters where v.mayAccept(c) || v.accept(c) { secondTime += 1 }
        #expect(firstTime == counters.count)
        #expect(secondTime == 0)
    }

    @Test func lostHandshakeMessagesAreRetried() {
        let pair = WireGuardPair(seed: 6)
        var initiationsLost = 0
        var responsesLost = 0
        pair.filter = { _, d in
            if d[0] == 1 && initiationsLost < 2 {
                initiationsLost += 1
                return false
            }
            if d[0] == 2 && responsesLost < 1 {
                responsesLost += 1
                return false
            }
            return true
        }
        let start = pair.now
        pair.send(fromA: true, simPacket(tag: 42))
        #expect(pair.run(seconds: 30) { pair.receivedByB.count == 1 })
        #expect(initiationsLost == 2 && responsesLost == 1)
        #expect(pair.a.stats.handshakeInitiationsSent == 4)
        // Three REKEY_TIMEOUTs (with jitter) before the fourth initiation succeeds.
        let elapsed = pair.now.since(start)
        #expect(elapsed >= 15 * Nanos.second && elapsed < 17 * Nanos.second, "elapsed \(elapsed), sent \(pair.a.stats.handshakeInitiationsSent), drops \(pair.dropsAtA) \(pair.dropsAtB)")
    }

    @Test func handshakeGivesUpAfterRekeyAttemptTime() {
        let pair = WireGuardPair(seed: 7)
        pair.filter = { _, _ in false }
        pair.send(fromA: true, simPacket(tag: 1))
        pair.run(seconds: 120)
        // As in wireguard-go: retries continue while attempts <= MAX_TIMER_HANDSHAKES, so one initiation
        // plus MAX_TIMER_HANDSHAKES + 1 retries (about 100 s), then nothing more.
        #expect(pair.a.stats.handshakeInitiationsSent == WireGuardConstants.maxTimerHandshakes + 2)
        #expect(pair.a.stats.stagedDropped == 1)
    }

    @Test func rejectAfterTimeIsEnforced() {
        let pair = WireGuardPair(seed: 8)
        pair.send(fromA: true, simPacket(tag: 1))
        pair.run(seconds: 1) { pair.receivedByB.count == 1 }
        // From now on B hears nothing: no rekey can complete. Keep one old datagram of A's for later.
        var old: [UInt8]?
        pair.filter = { fromA, d in
            if fromA && d[0] == 4 && old == nil { old = d }
            return false
        }
        pair.send(fromA: true, simPacket(tag: 2))
        pair.advance(seconds: 179)
        guard case .send = pair.send(fromA: true, simPacket(tag: 3)) else {
            Issue.record("keys unusable before REJECT_AFTER_TIME")
            return
        }
        pair.advance(seconds: 1.5)
        // Past REJECT_AFTER_TIME: A may not send with these keys, B may not accept them.
        #expect(pair.send(fromA: true, simPacket(tag: 4)) == .queued)
        var stale = old!
        let result = stale.withUnsafeMutableBytes {
            pair.b.decapsulate($0, datagramLength: old!.count, from: EndpointAddress(), now: pair.now)
        }
        #expect(result == .dropped(.expiredKeys))
        // After REJECT_AFTER_TIME × 3 the keys are gone altogether.
        pair.advance(seconds: 600)
        #expect(!pair.a.isEstablished && !pair.b.isEstablished)
    }

    @Test func cookieReplyUnderLoad() {
        let pair = WireGuardPair(seed: 9) { _, b in b.handshakeLoadThreshold = 0 }
        pair.send(fromA: true, simPacket(tag: 1))
        #expect(pair.run(seconds: 30) { pair.receivedByB.count == 1 })
        #expect(pair.b.stats.cookieRepliesSent == 1)
        #expect(pair.a.stats.cookieRepliesReceived == 1)
        #expect(pair.dropsAtB.first == .cookieRequired)
        // The retry carried a valid mac2 and was answered.
        #expect(pair.a.stats.handshakeInitiationsSent == 2)
        #expect(pair.b.stats.handshakeResponsesSent == 1)
    }

    @Test func replayedInitiationIsRefused() {
        let pair = WireGuardPair(seed: 10)
        var initiation: [UInt8]?
        pair.filter = { fromA, d in
            if fromA && d[0] == 1 { initiation = d }
            return true
        }
        pair.send(fromA: true, simPacket(tag: 1))
        pair.run(seconds: 1) { pair.receivedByB.count == 1 }
        pair.advance(seconds: 1)
        var replay = initiation!
        let result = replay.withUnsafeMutableBytes {
            pair.b.decapsulate($0, datagramLength: initiation!.count, from: EndpointAddress(), now: pair.now)
        }
        #expect(result == .dropped(.handshake(.replayedTimestamp)))
        var tampered = initiation!
        tampered[60] ^= 1
        let bad = tampered.withUnsafeMutableBytes {
            pair.b.decapsulate($0, datagramLength: initiation!.count, from: EndpointAddress(), now: pair.now)
        }
        #expect(bad == .dropped(.invalidMac1))
    }

    @Test func keepaliveAfterReceivingData() {
        let pair = WireGuardPair(seed: 11)
        pair.send(fromA: true, simPacket(tag: 1))
        pair.run(seconds: 1) { pair.receivedByB.count == 1 }
        let before = pair.b.stats.keepalivesSent
        pair.advance(seconds: 11)
        // B received data and sent nothing back for KEEPALIVE_TIMEOUT: it sends one keepalive.
        #expect(pair.b.stats.keepalivesSent == before + 1)
        #expect(pair.a.stats.keepalivesReceived >= 1)
    }

    @Test func persistentKeepalive() {
        let pair = WireGuardPair(seed: 12) { a, _ in a.persistentKeepaliveSeconds = 25 }
        pair.send(fromA: true, simPacket(tag: 1))
        pair.run(seconds: 1) { pair.receivedByB.count == 1 }
        let before = pair.a.stats.keepalivesSent
        pair.advance(seconds: 100)
        #expect(pair.a.stats.keepalivesSent - before >= 3)
    }

    @Test func lossyLinkDeliversWhatArrives() {
        for seed in UInt64(20)..<25 {
            let pair = WireGuardPair(seed: seed)
            pair.loss = 0.05
            pair.duplicate = 0.05
            pair.jitter = 30 * Nanos.millisecond
            for tag in UInt32(1)...2000 {
                pair.send(fromA: tag % 2 == 0, simPacket(tag: tag))
                pair.advance(seconds: 0.05)
            }
            pair.run(seconds: 5)
            let all = pair.receivedByA.map(simTag) + pair.receivedByB.map(simTag)
            // No duplicate is ever delivered, and most packets arrive.
            #expect(Set(all).count == all.count, "seed \(seed)")
            #expect(all.count > 1700, "seed \(seed)")
        }
    }

    @Test func malformedDatagramsAreCountedDrops() {
        let pair = WireGuardPair(seed: 13)
        let random = SeededRandom(seed: 99)
        for length in 0..<200 {
            var bytes = [UInt8](repeating: 0, count: length)
            bytes.withUnsafeMutableBytes { random.fill($0) }
            if length > 0 { bytes[0] = UInt8(length % 5) }
            if length > 3 { bytes[1] = 0; bytes[2] = 0; bytes[3] = 0 }
            let result = bytes.withUnsafeMutableBytes {
                pair.b.decapsulate($0, datagramLength: length, from: EndpointAddress(), now: pair.now)
            }
            guard case .dropped = result else {
                Issue.record("random datagram of \(length) bytes accepted")
                continue
            }
        }
        #expect(pair.b.stats.dropped == 200)
    }
}
