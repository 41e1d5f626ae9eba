/// The sliding anti-replay window for transport counters: 2048 bits kept as a ring of 64-bit blocks,
/// in the style of RFC 6479 (as the Linux WireGuard module and wireguard-go do).
///
/// The newest block is always partly ahead of the highest counter seen, so the window accepts counters
/// up to `windowSize` (1984) behind the highest one. Updated only after a packet has been authenticated,
/// so forged packets can never move it; `mayAccept` answers the same question without recording, so a
/// replayed packet is refused before it costs a decryption.
struct ReplayWindow {
    static let blockBits = 64
    static let ringBlocks = 32  // 2048 bits
    static let windowSize = UInt64((ringBlocks - 1) * blockBits)

    private var blocks = InlineArray<32, UInt64>(repeating: 0)
    private var last: UInt64 = 0
    private var seenAny = false

    /// Whether `accept(counter)` would return true now; changes nothing.
    func mayAccept(_ counter: UInt64) -> Bool {
        guard counter < WireGuardConstants.rejectAfterMessages else { return false }
        if !seenAny || counter > last { return true }
        guard last - counter <= Self.windowSize else { return false }
        let bit = UInt64(1) << (counter & 63)
        return blocks[Int(truncatingIfNeeded: counter >> 6) & (Self.ringBlocks - 1)] & bit == 0
    }

    /// Returns true, and records `counter`, when it is new and inside the window.
    mutating func accept(_ counter: UInt64) -> Bool {
        // Paper §5.4.6: counters at or beyond REJECT_AFTER_MESSAGES are never valid.
        guard counter < WireGuardConstants.rejectAfterMessages else { return false }
        var blockIndex = Int(truncatingIfNeeded: counter >> 6)
        if !seenAny || counter > last {
            let current = seenAny ? Int(truncatingIfNeeded: last >> 6) : blockIndex - Self.ringBlocks
            let advance = min(blockIndex &- current, Self.ringBlocks)
            var i = 1
            while i <= advance {
                blocks[(current &+ i) & (Self.ringBlocks - 1)] = 0
                i += 1
            }
            last = counter
            seenAny = true
        } else if last - counter > Self.windowSize {
            return false
        }
        blockIndex &= Self.ringBlocks - 1
        let bit = UInt64(1) << (counter & 63)
        let old = blocks[blockIndex]
        blocks[blockIndex] = old | bit
        return old & bit == 0
    }
}
