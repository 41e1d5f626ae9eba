/// A byte ring for one direction of a TCP connection: the send buffer (bytes the application wrote that are
/// not yet acknowledged) or the receive buffer (bytes received that the application has not yet read, plus
/// out-of-order bytes beyond them).
///
/// RFC 9293 §3.3.2 describes both as windows over the sequence space: the send buffer holds
/// `SND.UNA ..< SND.UNA + count` and the receive buffer `(app read point) ..< RCV.NXT`, with out-of-order data
/// kept beyond `RCV.NXT` up to `RCV.NXT + RCV.WND` (§3.10.7.4: segments "beyond" the next expected one "may be
/// held for later processing"). Positions in this type are offsets from the oldest byte held, so the ring
/// never sees sequence numbers and never wraps in sequence space.
///
/// Memory follows data in flight: no storage until the first write, then 4 KiB, doubling on demand up to
/// 1 MiB and growing by a quarter (in 64 KiB units) past it, up to `capacityLimit` (the last step clamped to
/// the limit so an idle-but-open connection never holds more than its window). A ring touches every page of
/// its storage as it wraps, so storage is resident memory: doubling all the way would make a connection that
/// needs 2.2 MiB hold 4 MiB. `compact()` gives memory back when the data has drained. Storage is one
/// manually managed allocation; no operation allocates except growth.
///
/// A final class rather than a struct: a connection mutates its buffers in place on every segment, and a
/// copy-on-write struct held in an enum payload would be copied on each mutation. Not thread-safe; the core
/// is single-threaded.
///
/// Two kinds of region:
/// - the *contiguous* bytes, `0 ..< count`: readable, peekable, consumable;
/// - beyond them, bytes placed by `write(at:from:)` that become contiguous only when `commit(_:)` says so
///   (the `Assembler` knows which ones have arrived).
final class ByteRing {
    /// The first allocation; later ones double it up to `doublingLimit`, then add a quarter.
    static let initialCapacity = 4096

    private var storage: UnsafeMutableRawPointer?
    /// Bytes allocated; 0 before the first write.
    private(set) var capacity = 0
    /// Physical index of logical offset 0. Always `< capacity` (or 0 when nothing is allocated).
    private var head = 0
    /// Contiguous bytes from `head`.
    private(set) var count = 0
    /// Bytes from `head` that may hold data: `count` plus any out-of-order tail. Growth preserves these.
    private var extent = 0

    /// Charged for every byte allocated, credited for every byte given back.
    let budget: MemoryBudget?

    /// The most the ring may hold. Raising it lets storage grow further; it may not drop below what is held.
    var capacityLimit: Int {
        didSet { precondition(capacityLimit >= extent, "ByteRing limit below the bytes it holds") }
    }

    init(limit: Int, budget: MemoryBudget? = nil) {
        precondition(limit >= 0)
        capacityLimit = limit
        self.budget = budget
    }

    deinit {
        storage?.deallocate()
        budget?.charge(-capacity)
    }

    /// Room for more contiguous bytes: `capacityLimit - count`. On the receive side this is the window to
    /// advertise (RFC 9293 §3.8.6.2.2 receiver window management), on the send side the backpressure signal.
    var free: Int { capacityLimit - count }

    var isEmpty: Bool { count == 0 }

    // MARK: Writing

    /// Appends up to `source.count` bytes to the contiguous end, as many as `free` allows, and returns how
    /// many were taken (the rest is the caller's backpressure). Overwrites any out-of-order bytes there.
    @discardableResult
    func write(from source: UnsafeRawBufferPointer) -> Int {
        let n = min(source.count, free)
        guard n > 0 else { return 0 }
        reserve(count + n)
        copyIn(at: count, from: source.baseAddress!, byteCount: n)
        count += n
        extent = max(extent, count)
        return n
    }

    /// Places bytes `offset` bytes past the contiguous end (offset 0 is the next in-order byte), without
    /// making them readable; `commit(_:)` does that once everything before them has arrived too. Only the part
    /// inside `capacityLimit` is stored: returns how many bytes from the start of `source` were kept.
    /// RFC 9293 §3.10.7.4: the receiver trims a segment to the window; this is that trim.
    @discardableResult
    func write(at offset: Int, from source: UnsafeRawBufferPointer) -> Int {
        precondition(offset >= 0, "ByteRing.write(at:) before the contiguous end")
        let start = count + offset
        let n = min(source.count, capacityLimit - start)
        guard n > 0 else { return 0 }
        reserve(start + n)
        copyIn(at: start, from: source.baseAddress!, byteCount: n)
        extent = max(extent, start + n)
        return n
    }

    /// The free space right after the contiguous end, for filling in place (e.g. reading a socket straight
    /// into the send buffer); follow with `commit(_:)`. Grows storage so that up to `maxBytes` (bounded by
    /// `free`) fit, but returns only the first contiguous piece, which may be shorter when it wraps.
    /// The pointer is valid until the next call that may grow or compact the ring.
    func writableRegion(maxBytes: Int) -> UnsafeMutableRawBufferPointer {
        let n = min(maxBytes, free)
        guard n > 0 else { return UnsafeMutableRawBufferPointer(start: nil, count: 0) }
        reserve(count + n)
        let p = physical(count)
        return UnsafeMutableRawBufferPointer(start: storage! + p, count: min(n, capacity - p))
    }

    /// Makes `n` more bytes after the contiguous end readable: bytes placed by `write(at:from:)` once the
    /// `Assembler` reports them complete, or bytes filled through `writableRegion(maxBytes:)`.
    func commit(_ n: Int) {
        precondition(n >= 0 && count + n <= min(capacity, capacityLimit), "ByteRing.commit past its storage")
        count += n
        extent = max(extent, count)
    }

    // MARK: Reading

    /// The first contiguous run of readable bytes, without copying (hand it to a socket write, then
    /// `consume` what was written). Empty when nothing is readable. Valid until the next mutating call.
    func readable() -> UnsafeRawBufferPointer {
        guard count > 0 else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: storage! + head, count: min(count, capacity - head))
    }

    /// All readable bytes as at most two runs (the second non-empty only when the data wraps), for a
    /// vectored write.
    func readableChunks() -> (UnsafeRawBufferPointer, UnsafeRawBufferPointer) {
        let first = readable()
        let rest = count - first.count
        guard rest > 0 else { return (first, UnsafeRawBufferPointer(start: nil, count: 0)) }
        return (first, UnsafeRawBufferPointer(start: storage!, count: rest))
    }

    /// Copies contiguous bytes starting `offset` bytes from the front into `destination`, as many as fit and
    /// exist, and returns how many. The send side builds a segment this way: offset `SEG.SEQ - SND.UNA`
    /// (RFC 9293 §3.8.6.2.1), the bytes stay until acknowledged.
    func peek(at offset: Int, into destination: UnsafeMutableRawBufferPointer) -> Int {
        precondition(offset >= 0 && offset <= count, "ByteRing.peek outside the contiguous bytes")
        let n = min(destination.count, count - offset)
        guard n > 0 else { return 0 }
        copyOut(at: offset, to: destination.baseAddress!, byteCount: n)
        return n
    }

    /// Drops `n` bytes from the front: acknowledged bytes on the send side (RFC 9293 §3.10.7.4, "SND.UNA <
    /// SEG.ACK =< SND.NXT" ... "Any segments on the retransmission queue that are thereby entirely
    /// acknowledged are removed"), bytes delivered to the application on the receive side.
    func consume(_ n: Int) {
        precondition(n >= 0 && n <= count, "ByteRing.consume more than is readable")
        guard n > 0 else { return }
        count -= n
        extent -= n
        if extent == 0 {
            head = 0  // keeps the next writes in one contiguous run
        } else {
            head = physical(n)
        }
    }

    // MARK: Memory

    /// Gives memory back: shrinks storage to the smallest growth step that holds the current data, and frees
    /// it entirely when empty. Costs a copy of the held bytes, so call it when the flow goes idle, not per
    /// segment.
    func compact() {
        let target = extent == 0 ? 0 : Self.steppedCapacity(for: extent, limit: capacityLimit)
        if target < capacity { reallocate(target) }
    }

    /// Drops everything, including storage.
    func reset() {
        count = 0
        extent = 0
        head = 0
        reallocate(0)
    }

    // MARK: Internals

    /// Past this, storage grows by a quarter rather than doubling.
    static let doublingLimit = 1 << 20

    /// 4 KiB doubled until it holds `needed` (past `doublingLimit`: grown by a quarter, rounded up to 64 KiB),
    /// clamped to `limit` (but never below `needed`).
    static func steppedCapacity(for needed: Int, limit: Int) -> Int {
        var c = initialCapacity
        while c < needed {
            c = c < doublingLimit ? c << 1 : (c + c / 4 + 0xFFFF) & ~0xFFFF
        }
        return max(min(c, limit), needed)
    }

    @inline(__always) private func reserve(_ needed: Int) {
        if needed > capacity { reallocate(Self.steppedCapacity(for: needed, limit: capacityLimit)) }
    }

    /// Moves the held bytes (`extent` of them, out-of-order tail included) to a new allocation of
    /// `newCapacity` bytes, starting at index 0.
    private func reallocate(_ newCapacity: Int) {
        precondition(newCapacity >= extent)
        var fresh: UnsafeMutableRawPointer? = nil
        if newCapacity > 0 {
            let p = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 16)
            if extent > 0 { copyOut(at: 0, to: p, byteCount: extent) }
            fresh = p
        }
        storage?.deallocate()
        storage = fresh
        budget?.charge(newCapacity - capacity)
        capacity = newCapacity
        head = 0
    }

    /// Physical index of logical offset `logical` (`0 ... capacity`).
    @inline(__always) private func physical(_ logical: Int) -> Int {
        let p = head + logical
        return p >= capacity ? p - capacity : p
    }

    private func copyIn(at logical: Int, from source: UnsafeRawPointer, byteCount n: Int) {
        let p = physical(logical)
        let first = min(n, capacity - p)
        (storage! + p).copyMemory(from: source, byteCount: first)
        if first < n { storage!.copyMemory(from: source + first, byteCount: n - first) }
    }

    private func copyOut(at logical: Int, to destination: UnsafeMutableRawPointer, byteCount n: Int) {
        let p = physical(logical)
        let first = min(n, capacity - p)
        destination.copyMemory(from: storage! + p, byteCount: first)
        if first < n { (destination + first).copyMemory(from: storage!, byteCount: n - first) }
    }
}
