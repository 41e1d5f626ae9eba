/// One deadline per small integer id (a connection slot), kept as an indexed binary min-heap so the core can
/// hand its driver a single next deadline over every timer of every connection.
///
/// Each connection folds its own timers (quinn-proto's `Timer` table, STYLE §2) into one earliest `Instant`
/// and stores it here under its slot; the façade's `nextDeadline()` is then `next?.deadline` in O(1), and
/// `handleTimeout(now:)` loops on `popExpired(now:)` instead of scanning every connection.
///
/// - `set` inserts, moves or removes (with `nil`) an id's deadline in O(log n).
/// - Ties are broken by the smaller id, so the order in which expired ids pop is deterministic, which keeps
///   simulation runs replayable from a seed.
/// - Storage is two arrays that grow (amortised): `entries` (the heap itself, deadline next to id for
///   locality) and `slots` (id → heap position). Removing keeps capacity, so in steady state neither `set`
///   nor `popExpired` allocates; only `shrink` gives capacity back.
struct DeadlineHeap {
    private struct Entry {
        var deadline: Instant
        var id: Int
    }

    /// The heap, ordered by `(deadline, id)`: `entries[i]` is never later than its children `2i+1`, `2i+2`.
    private var entries: [Entry] = []
    /// `slots[id]` is the position of `id` in `entries`, or `absent`. Grows to the largest id ever set.
    private var slots: [Int] = []
    private static let absent = -1

    init() {}

    /// Reserves room for ids `0..<capacity` so later `set` calls never allocate.
    init(capacity: Int) {
        entries.reserveCapacity(capacity)
        slots = Array(repeating: Self.absent, count: capacity)
    }

    /// Number of ids that currently have a deadline.
    var count: Int { entries.count }

    var isEmpty: Bool { entries.isEmpty }

    /// The earliest deadline and its id (smallest id among ties), in O(1).
    var next: (id: Int, deadline: Instant)? {
        guard let root = entries.first else { return nil }
        return (root.id, root.deadline)
    }

    /// The deadline currently stored for `id`, if any.
    func deadline(of id: Int) -> Instant? {
        guard id >= 0, id < slots.count else { return nil }
        let position = slots[id]
        return position == Self.absent ? nil : entries[position].deadline
    }

    /// Gives `id` the deadline `deadline`, replacing any earlier one; `nil` removes it. O(log n).
    mutating func set(_ id: Int, _ deadline: Instant?) {
        precondition(id >= 0, "DeadlineHeap ids are non-negative slot numbers")
        if id >= slots.count {
            guard deadline != nil else { return }
            // Grow to cover `id`; `append` is amortised O(1) (only `shrink` makes the array smaller).
            while slots.count <= id { slots.append(Self.absent) }
        }
        let position = slots[id]
        switch (position == Self.absent, deadline) {
        case (true, nil):
            return
        case (true, let deadline?):
            entries.append(Entry(deadline: deadline, id: id))
            slots[id] = entries.count - 1
            siftUp(entries.count - 1)
        case (false, nil):
            remove(at: position)
        case (false, let deadline?):
            let old = entries[position].deadline
            entries[position].deadline = deadline
            if deadline < old { siftUp(position) } else if old < deadline { siftDown(position) }
        }
    }

    /// Removes and returns one id whose deadline is at or before `now` (the earliest such, smallest id among
    /// ties), or `nil` when nothing has expired. Call in a loop from `handleTimeout(now:)`.
    mutating func popExpired(now: Instant) -> Int? {
        guard let root = entries.first, root.deadline <= now else { return nil }
        remove(at: 0)
        return root.id
    }

    /// Forgets ids from `count` on (none may have a deadline) and the room the tables grew to beyond
    /// what is left.
    mutating func shrink(toIds count: Int) {
        precondition(entries.allSatisfy { $0.id < count }, "DeadlineHeap.shrink below an id with a deadline")
        if slots.count > count { slots = Array(slots[0..<count]) }
        // A copy of its own size: `Array(entries)` would share the old storage, capacity and all.
        var kept: [Entry] = []
        kept.reserveCapacity(entries.count)
        kept.append(contentsOf: entries)
        entries = kept
    }

    /// Removes every deadline, keeping capacity.
    mutating func removeAll() {
        for entry in entries { slots[entry.id] = Self.absent }
        entries.removeAll(keepingCapacity: true)
    }

    // MARK: - Heap mechanics

    private static func precedes(_ a: Entry, _ b: Entry) -> Bool {
        a.deadline < b.deadline || (a.deadline == b.deadline && a.id < b.id)
    }

    private mutating func remove(at position: Int) {
        let removedID = entries[position].id
        let lastIndex = entries.count - 1
        if position != lastIndex {
            // Move the last entry into the hole, then restore the heap property in whichever direction it
            // was broken (a middle hole can need either).
            entries[position] = entries[lastIndex]
            slots[entries[position].id] = position
            entries.removeLast()
            siftDown(position)
            siftUp(position)
        } else {
            entries.removeLast()
        }
        slots[removedID] = Self.absent
    }

    private mutating func siftUp(_ start: Int) {
        var child = start
        let moving = entries[child]
        while child > 0 {
            let parent = (child - 1) / 2
            guard Self.precedes(moving, entries[parent]) else { break }
            entries[child] = entries[parent]
            slots[entries[child].id] = child
            child = parent
        }
        entries[child] = moving
        slots[moving.id] = child
    }

    private mutating func siftDown(_ start: Int) {
        let n = entries.count
        guard start < n else { return }
        var parent = start
        let moving = entries[parent]
        while true {
            let left = 2 * parent + 1
            guard left < n else { break }
            let right = left + 1
            let smaller = right < n && Self.precedes(entries[right], entries[left]) ? right : left
            guard Self.precedes(entries[smaller], moving) else { break }
            entries[parent] = entries[smaller]
            slots[entries[parent].id] = parent
            parent = smaller
        }
        entries[parent] = moving
        slots[moving.id] = parent
    }
}
