import Testing
@_spi(OneTunInternals) @testable import OneTunCore

/// The allowed-IPs trie against a model that scans every prefix, and the receiver-index table against a
/// dictionary, under random operations (each failure replays from its seed).
@Suite struct RoutingTableTests {
    /// Longest match by brute force: the model the trie must agree with.
    static func model(_ entries: [IPPrefix: Int], _ address: IPAddress) -> Int {
        var best = -1
        var length = -1
        for (prefix, slot) in entries where prefix.contains(address) && Int(prefix.length) > length {
            best = slot
            length = Int(prefix.length)
        }
        return best
    }

    static func randomAddress(_ r: inout XorShift64, v6: Bool, near: [IPPrefix]) -> IPAddress {
        // Half the time inside (or next to) a stored prefix, where the answers are interesting.
        if !near.isEmpty && r.below(2) == 0 {
            let p = near[r.below(near.count)]
            switch p.address {
            case .v4(let a) where !v6:
                let host = p.length == 32 ? 0 : UInt32(truncatingIfNeeded: r.next()) & (UInt32.max >> UInt32(p.length))
                let flip: UInt32 = r.below(4) == 0 ? 1 << UInt32(r.below(32)) : 0
                return .v4(IPv4Address(rawValue: (a.rawValue | host) ^ flip))
            case .v6(let a) where v6:
                let (maskHigh, maskLow) = IPPrefix.mask128(Int(p.length))
                let flip = r.below(4) == 0 ? r.below(128) : -1
                var high = a.high | (r.next() & ~maskHigh)
                var low = a.low | (r.next() & ~maskLow)
                if flip >= 0 { if flip < 64 { high ^= 1 << UInt64(63 - flip) } else { low ^= 1 << UInt64(127 - flip) } }
                return .v6(IPv6Address(high: high, low: low))
            default: break
            }
        }
        return v6 ? .v6(IPv6Address(high: r.next(), low: r.next())) : .v4(IPv4Address(rawValue: UInt32(truncatingIfNeeded: r.next())))
    }

    static func randomPrefix(_ r: inout XorShift64) -> IPPrefix {
        // Few distinct networks and lengths, so prefixes nest and collide.
        let v6 = r.below(3) == 0
        if v6 {
            let high = UInt64(r.below(4)) << 62 | UInt64(r.below(8)) << 40 | (r.below(2) == 0 ? 0 : r.next())
            return IPPrefix(address: .v6(IPv6Address(high: high, low: r.below(2) == 0 ? 0 : r.next())), length: [0, 2, 8, 24, 48, 64, 100, 127, 128][r.below(9)])
        }
        let raw = UInt32(r.below(4)) << 30 | UInt32(r.below(16)) << 16 | (r.below(2) == 0 ? 0 : UInt32(truncatingIfNeeded: r.next()) & 0xFFFF)
        return IPPrefix(address: .v4(IPv4Address(rawValue: raw)), length: [0, 1, 2, 8, 16, 20, 24, 31, 32][r.below(9)])
    }

    @Test(arguments: [1, 2, 3, 4, 5] as [UInt64])
    func theTrieFindsTheLongestPrefixAsAScanWould(seed: UInt64) {
        var r = XorShift64(seed: seed)
        let trie = AllowedIPs()
        var entries: [IPPrefix: Int] = [:]
        func check(_ round: String) {
            let stored = Array(entries.keys)
            for _ in 0..<400 {
                let address = Self.randomAddress(&r, v6: r.below(3) == 0, near: stored)
                let expected = Self.model(entries, address)
                guard trie.lookup(address) == expected else {
                    Issue.record("seed \(seed) \(round): \(address) → \(trie.lookup(address)), the scan says \(expected)")
                    return
                }
            }
            for (prefix, slot) in entries { #expect(trie.lookup(prefix.address) == Self.model(entries, prefix.address) && slot >= 0) }
        }
        for _ in 0..<300 {
            let p = Self.randomPrefix(&r)
            let slot = r.below(12)
            let previous = entries[p]
            entries[p] = slot
            #expect(trie.insert(p, slot: slot) == (previous == slot ? nil : previous), "the later peer takes a prefix; the earlier is said")
        }
        check("after inserts")
        for slot in [3, 7, 0, 11] {
            trie.removeAll(slot: slot)
            entries = entries.filter { $0.value != slot }
            check("after removing \(slot)")
            #expect(trie.prefixes(of: slot).isEmpty)
        }
        for slot in 0..<12 { #expect(Set(trie.prefixes(of: slot)) == Set(entries.filter { $0.value == slot }.keys)) }
    }

    @Test func familiesAndEdgesStayApart() {
        let trie = AllowedIPs()
        #expect(trie.lookup(simIP("1.2.3.4")) == -1 && trie.lookup(simIP("::1")) == -1)
        trie.insert(simPrefix("0.0.0.0/0"), slot: 1)
        #expect(trie.lookup(simIP("255.255.255.255")) == 1 && trie.lookup(simIP("::")) == -1, "an IPv4 prefix never holds an IPv6 address")
        trie.insert(simPrefix("::/0"), slot: 2)
        trie.insert(simPrefix("::ffff:0:0/96"), slot: 3)
        #expect(trie.lookup(simIP("::ffff:1.2.3.4")) == 3 && trie.lookup(simIP("1.2.3.4")) == 1, "nor a mapped address an IPv4 prefix")
        trie.insert(simPrefix("10.0.0.1/32"), slot: 4)
        trie.insert(simPrefix("10.0.0.0/31"), slot: 5)
        #expect(trie.lookup(simIP("10.0.0.1")) == 4 && trie.lookup(simIP("10.0.0.0")) == 5 && trie.lookup(simIP("10.0.0.2")) == 1)
        trie.insert(simPrefix("fd00::1/128"), slot: 6)
        #expect(trie.lookup(simIP("fd00::1")) == 6 && trie.lookup(simIP("fd00::")) == 2)
        // The same prefix again: the later peer takes it.
        #expect(trie.insert(simPrefix("10.0.0.0/31"), slot: 7) == 5)
        #expect(trie.lookup(simIP("10.0.0.0")) == 7 && trie.prefixes(of: 5).isEmpty)
        trie.removeAll(slot: 1)
        #expect(trie.lookup(simIP("10.0.0.2")) == -1 && trie.lookup(simIP("10.0.0.1")) == 4)
    }

    @Test(arguments: [1, 2, 3] as [UInt64])
    func theIndexTableAgreesWithADictionary(seed: UInt64) {
        var r = XorShift64(seed: seed)
        let table = IndexTable()
        var model: [UInt32: Int] = [:]
        for step in 0..<20_000 {
            // Indices from a small range half the time, so runs form and removals shift them.
            let index = r.below(2) == 0 ? UInt32(r.below(300)) : UInt32(truncatingIfNeeded: r.next())
            if model[index] == nil, r.below(3) != 0 {
                let slot = r.below(50)
                table.insert(index, slot: slot)
                model[index] = slot
            } else if model[index] != nil {
                table.remove(index)
                model[index] = nil
            } else {
                table.remove(index)
            }
            if step % 97 == 0 {
                for (k, v) in model { #expect(table.lookup(k) == v) }
                for _ in 0..<50 {
                    let k = UInt32(r.below(600))
                    #expect(table.lookup(k) == model[k])
                }
            }
        }
        #expect(table.count == model.count)
        for (k, v) in model { #expect(table.lookup(k) == v) }
    }
}
