/// A bounded FIFO of byte strings in fixed slots allocated once (at first use): no allocation per packet.
/// `push` refuses (false) when full or when the bytes do not fit a slot; the caller counts the drop.
struct PacketQueue {
    let slotSize: Int
    let capacity: Int
    private var storage: UnsafeMutableRawBufferPointer?
    private var lengths: [Int]
    private var head = 0
    private(set) var count = 0

    init(slotSize: Int, capacity: Int) {
        self.slotSize = slotSize
        self.capacity = capacity
        lengths = [Int](repeating: 0, count: capacity)
    }

    var isEmpty: Bool { count == 0 }
    var isFull: Bool { count == capacity }

    /// Room for the next packet, to fill in place; follow with `commit(length)`. nil when full.
    mutating func reserve() -> UnsafeMutableRawBufferPointer? {
        guard count < capacity else { return nil }
        if storage == nil { storage = .allocate(byteCount: slotSize * capacity, alignment: 16) }
        let slot = (head + count) % capacity
        return UnsafeMutableRawBufferPointer(rebasing: storage![(slot * slotSize)..<((slot + 1) * slotSize)])
    }

    mutating func commit(_ length: Int) {
        precondition(count < capacity && length <= slotSize)
        lengths[(head + count) % capacity] = length
        count += 1
    }

    /// The oldest packet, valid until the next mutation; nil when empty.
    func front() -> UnsafeRawBufferPointer? {
        guard count > 0, let storage else { return nil }
        return UnsafeRawBufferPointer(rebasing: storage[(head * slotSize)..<(head * slotSize + lengths[head])])
    }

    mutating func removeFront() {
        guard count > 0 else { return }
        head = (head + 1) % capacity
        count -= 1
    }

    func deallocate() { storage?.deallocate() }
}
