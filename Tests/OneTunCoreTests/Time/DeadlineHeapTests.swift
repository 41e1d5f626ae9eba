import Testing
@_spi(OneTunInternals) @testable import OneTunCore


private func at(_ ns: UInt64) -> Instant { Instant(nanoseconds: ns) }

@Test func deadlineHeapEmpty() {
    var heap = DeadlineHeap()
    #expect(heap.count == 0)
    #expect(heap.next == nil)
    #expect(heap.deadline(of: 0) == nil)
    #expect(heap.deadline(of: 1000) == nil)
    #expect(heap.popExpired(now: at(.max)) == nil)
    heap.set(5, nil)  // removing an unknown id is a no-op
    #expect(heap.count == 0)
}

@Test func deadlineHeapOrdersAndPopsOnlyExpired() {
    var heap = DeadlineHeap()
    heap.set(3, at(30))
    heap.set(1, at(10))
    heap.set(2, at(20))
    #expect(heap.count == 3)
    #expect(heap.next?.id == 1)
    #expect(heap.next?.deadline == at(10))
    #expect(heap.popExpired(now: at(9)) == nil)
    #expect(heap.popExpired(now: at(20)) == 1)
    #expect(heap.popExpired(now: at(20)) == 2)
    #expect(heap.popExpired(now: at(20)) == nil)
    #expect(heap.deadline(of: 1) == nil)
    #expect(heap.deadline(of: 3) == at(30))
    #expect(heap.count == 1)
}

@Test func deadlineHeapTiesPopSmallestIDFirst() {
    var heap = DeadlineHeap()
    for id in [7, 2, 9, 0, 4] { heap.set(id, at(100)) }
    heap.set(5, at(50))
    var popped: [Int] = []
    while let id = heap.popExpired(now: at(100)) { popped.append(id) }
    #expect(popped == [5, 0, 2, 4, 7, 9])
}

@Test func deadlineHeapMoveUpAndDown() {
    var heap = DeadlineHeap()
    for id in 0..<8 { heap.set(id, at(UInt64(10 * (id + 1)))) }
    heap.set(6, at(1))  // move to the root
    #expect(heap.next?.id == 6)
    heap.set(6, at(1000))  // and back to a leaf
    #expect(heap.next?.id == 0)
    heap.set(0, at(45))  // root moves down into the middle
    #expect(heap.next?.id == 1)
    var popped: [Int] = []
    while let id = heap.popExpired(now: at(.max)) { popped.append(id) }
    #expect(popped == [1, 2, 3, 0, 4, 5, 7, 6])
}

@Test func deadlineHeapRemoveRootAndMiddle() {
    var heap = DeadlineHeap()
    for id in 0..<15 { heap.set(id, at(UInt64(id * 10))) }
    heap.set(0, nil)  // the root
    #expect(heap.next?.id == 1)
    #expect(heap.deadline(of: 0) == nil)
    heap.set(6, nil)  // a middle element
    heap.set(2, nil)  // an inner node with children
    #expect(heap.count == 12)
    var popped: [Int] = []
    while let id = heap.popExpired(now: at(.max)) { popped.append(id) }
    #expect(popped == [1, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14])
    #expect(heap.count == 0)
}

@Test func deadlineHeapRemovingMiddleCanSiftUp() {
    // Removing a node whose replacement (the last leaf) is earlier than the removed node's parent.
    var heap = DeadlineHeap()
    let deadlines: [UInt64] = [1, 100, 2, 101, 102, 3, 4]
    for (id, d) in deadlines.enumerated() { heap.set(id, at(d)) }
    heap.set(3, nil)  // child of 100; the last leaf (4) replaces it and must rise above 100
    var popped: [UInt64] = []
    while let id = heap.popExpired(now: at(.max)) { popped.append(deadlines[id]) }
    #expect(popped == [1, 2, 3, 4, 100, 102])
}

@Test func deadlineHeapReusesIDsAfterRemoval() {
    var heap = DeadlineHeap(capacity: 4)
    heap.set(2, at(20))
    heap.set(2, nil)
    #expect(heap.deadline(of: 2) == nil)
    heap.set(2, at(5))
    #expect(heap.deadline(of: 2) == at(5))
    #expect(heap.popExpired(now: at(5)) == 2)
    heap.set(2, at(7))
    heap.set(40, at(6))  // grows past the reserved capacity
    #expect(heap.next?.id == 40)
    #expect(heap.count == 2)
    heap.removeAll()
    #expect(heap.count == 0)
    #expect(heap.deadline(of: 40) == nil)
    heap.set(40, at(1))
    #expect(heap.next?.id == 40)
}

@Test(arguments: [1, 42, 0xDEAD_BEEF] as [UInt64])
func deadlineHeapMatchesNaiveModel(seed: UInt64) {
    var rng = XorShift64(seed: seed)
    var heap = DeadlineHeap()
    var model: [Int: Instant] = [:]
    var now: UInt64 = 0

    func modelNext() -> (id: Int, deadline: Instant)? {
        model.min { a, b in a.value < b.value || (a.value == b.value && a.key < b.key) }
            .map { ($0.key, $0.value) }
    }

    for step in 0..<20_000 {
        let id = rng.below(64)
        switch rng.below(10) {
        case 0..<5:
            // Small range of deadlines so ties are frequent.
            let deadline = at(now + UInt64(rng.below(50)))
            heap.set(id, deadline)
            model[id] = deadline
        case 5..<7:
            heap.set(id, nil)
            model[id] = nil
        case 7..<9:
            now += UInt64(rng.below(10))
            let popped = heap.popExpired(now: at(now))
            if let expected = modelNext(), expected.deadline <= at(now) {
                #expect(popped == expected.id, "seed \(seed) step \(step)")
                model[expected.id] = nil
            } else {
                #expect(popped == nil, "seed \(seed) step \(step)")
            }
        default:
            #expect(heap.deadline(of: id) == model[id], "seed \(seed) step \(step)")
        }
        #expect(heap.count == model.count, "seed \(seed) step \(step)")
        let expected = modelNext()
        #expect(heap.next?.id == expected?.id, "seed \(seed) step \(step)")
        #expect(heap.next?.deadline == expected?.deadline, "seed \(seed) step \(step)")
    }
    // Drain: everything pops in (deadline, id) order.
    var last: (Instant, Int)?
    while let id = heap.popExpired(now: at(.max)) {
        let deadline = model.removeValue(forKey: id)!
        if let last { #expect(last.0 < deadline || (last.0 == deadline && last.1 < id)) }
        last = (deadline, id)
    }
    #expect(model.isEmpty)
}
