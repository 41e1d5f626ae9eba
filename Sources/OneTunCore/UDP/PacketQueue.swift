/// A bounded FIFO of byte strings in fixed slots allocated once (at first use), each with a small `Tag`
/// (who sent it, say): no allocation per packet. `reserve` refuses (nil) when full; the caller counts the
/// drop.
struct PacketQueue<Tag> {
    let slotSize: Int
    let capacity: Int
    private var storage: UnsafeMutableRawBufferPointer?
    private var lengths: [Int]
    private var tags: [Tag]
    private var head = 0
    private(set) var count = 0

    init(slotSize: Int, capacity: Int, blank: Tag) {
        self.slotSize = slotSize
        self.capacity = capacity
        lengths = [Int](repeating: 0, count: capacity)
        tags = [Tag](repeating: blank, count: capacity)
    }

    var isEmpty: Bool { count == 0 }
    var isFull: Bool { count == capacity }

    /// Room for the next packet (the whole slot), to fill in place; follow with `commit`, with no
    /// `removeFront` in between (emptying the queue moves its start). nil when full.
    mutating func reserve() -> UnsafeMutableRawBufferPointer? {
        guard count < capacity else { return nil }
        if storage == nil { storage = .allocate(byteCount: slotSize * capacity, alignment: 16) }
        let slot = (head + count) % capacity
        return UnsafeMutableRawBufferPointer(rebasing: storage![(slot * slotSize)..<((slot + 1) * slotSize)])
    }

    mutating func commit(_ length: Int, tag: Tag) {
        precondition(count < capacity && length <= slotSize)
        let slot = (head + count) % capacity
        lengths[slot] = length
        tags[slot] = tag
        count += 1
    }

    /// The oldest packet's whole slot, its length and its tag; nil when empty. The slot stays valid and
    /// unchanged until `removeFront` (`reserve` and `commit` never touch it). It is writable: the bytes
    /// past the length are free for the holder's use (padding).
    func front() -> (slot: UnsafeMutableRawBufferPointer, length: Int, tag: Tag)? {
        guard count > 0, let storage else { return nil }
        let slot = UnsafeMutableRawBufferPointer(rebasing: storage[(head * slotSize)..<((head + 1) * slotSize)])
        return (slot, lengths[head], tags[head])
    }

    /// Drops the oldest packet. An emptied queue starts again at its first slot, so a queue that is
    /// drained after every batch keeps reusing the same few slots, warm in the cache.
    mutating func removeFront() {
        guard count > 0 else { return }
        head = (head + 1) % capacity
        count -= 1
        if count == 0 { head = 0 }
    }

    func deallocate() { storage?.deallocate() }
}

extension PacketQueue where Tag == Void {
    init(slotSize: Int, capacity: Int) { self.init(slotSize: slotSize, capacity: capacity, blank: ()) }
    mutating func commit(_ length: Int) { commit(length, tag: ()) }
}
