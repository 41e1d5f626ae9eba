/// The device's receiver indices (wireguard-go's indextable.go): every index one of our sessions or
/// pending handshakes put in a message's sender field, mapped to the peer it belongs to, so a transport
/// message, a response or a cookie reply finds its peer in O(1) whoever sent it. The indices are random
/// 32-bit values chosen by us, unique across all peers.
///
/// Open addressing with linear probing over a power-of-two table kept at most half full; removal shifts
/// the entries behind back (no tombstones, so a lookup's probe stays short however many sessions came and
/// went). The table grows only when a handshake adds an index: a lookup allocates nothing and, a class
/// over raw memory read through the device's `let`, retains nothing. A message names any index it likes,
/// but where it lands depends only on our own indices' spread.
final class IndexTable {
    private var keys: UnsafeMutablePointer<UInt32>
    /// The peer's slot, or -1 for an empty entry.
    private var slots: UnsafeMutablePointer<Int32>
    private(set) var count = 0
    private var capacity = 16
    private var mask = 15

    init() {
        keys = .allocate(capacity: capacity)
        slots = .allocate(capacity: capacity)
        keys.initialize(repeating: 0, count: capacity)
        slots.initialize(repeating: -1, count: capacity)
    }

    deinit {
        keys.deallocate()
        slots.deallocate()
    }

    @inline(__always) private func home(_ index: UInt32) -> Int {
        Int(truncatingIfNeeded: (UInt64(index) &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
    }

    /// The slot of the peer that owns `index`, or nil.
    @inline(__always) func lookup(_ index: UInt32) -> Int? {
        var i = home(index)
        while slots[i] >= 0 {
            if keys[i] == index { return Int(slots[i]) }
            i = (i + 1) & mask
        }
        return nil
    }

    func contains(_ index: UInt32) -> Bool { lookup(index) != nil }

    /// Records `index` (not yet present) as the peer in `slot`'s.
    func insert(_ index: UInt32, slot: Int) {
        if (count + 1) * 2 > capacity { grow() }
        var i = home(index)
        while slots[i] >= 0 {
            precondition(keys[i] != index, "receiver index \(index) is already in use")
            i = (i + 1) & mask
        }
        keys[i] = index
        slots[i] = Int32(slot)
        count += 1
    }

    /// Forgets `index`; nothing happens when it is not there.
    func remove(_ index: UInt32) {
        var i = home(index)
        while true {
            guard slots[i] >= 0 else { return }
            if keys[i] == index { break }
            i = (i + 1) & mask
        }
        slots[i] = -1
        count -= 1
        // Backward shift: an entry further along the run moves into the hole unless its home lies
        // cyclically in (hole, entry], where a lookup would never pass the hole to reach it.
        var j = i
        while true {
            j = (j + 1) & mask
            guard slots[j] >= 0 else { return }
            let h = home(keys[j])
            let stays = i <= j ? (i < h && h <= j) : (i < h || h <= j)
            if stays { continue }
            keys[i] = keys[j]
            slots[i] = slots[j]
            slots[j] = -1
            i = j
        }
    }

    private func grow() {
        let oldKeys = keys
        let oldSlots = slots
        let oldCapacity = capacity
        capacity *= 2
        mask = capacity - 1
        keys = .allocate(capacity: capacity)
        slots = .allocate(capacity: capacity)
        keys.initialize(repeating: 0, count: capacity)
        slots.initialize(repeating: -1, count: capacity)
        count = 0
        for i in 0..<oldCapacity where oldSlots[i] >= 0 { insert(oldKeys[i], slot: Int(oldSlots[i])) }
        oldKeys.deallocate()
        oldSlots.deallocate()
    }
}
