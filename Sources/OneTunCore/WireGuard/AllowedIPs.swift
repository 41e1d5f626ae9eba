/// Cryptokey routing's table (paper §2): which peer holds which prefixes. Outgoing, the peer whose prefix
/// holding the destination is the longest gets the packet; incoming, a packet is accepted only when that
/// lookup on its source names the peer that sent it.
///
/// A path-compressed binary trie per address family, as wireguard-go's allowedips.go and the kernel's
/// allowedips.c keep: every node holds a prefix, the nodes under it hold longer prefixes inside it, a node
/// exists only where a prefix is stored or two branches fork, so a lookup visits at most one node per
/// stored prefix length on its path (never more than 33 or 129) and never looks at other peers. An IPv4
/// address is the top 32 bits of a 128-bit key. Nodes live in one buffer and name their children by
/// position: a lookup allocates nothing and touches no reference count (a class over raw memory, so that
/// reading it through the device's `let` copies and retains nothing).
///
/// Inserting a prefix that is already there gives it to the new peer (the later one takes it, as `wg set`
/// does). Removing a peer's prefixes rebuilds the trie from what is left: peers come and go rarely.
final class AllowedIPs {
    struct Node {
        /// The prefix, its bits past `length` zero.
        var high: UInt64
        var low: UInt64
        var length: UInt8
        /// The peer's slot when this prefix is stored; -1 for a fork only.
        var value: Int32
        var zero: Int32 = -1
        var one: Int32 = -1
    }

    private var nodes: UnsafeMutablePointer<Node>
    private var nodeCount = 0
    private var nodeCapacity = 16
    private var rootV4: Int32 = -1
    private var rootV6: Int32 = -1
    /// Every stored prefix and its peer's slot: what a rebuild starts from, and what `prefixes(of:)` reads.
    private(set) var entries: [IPPrefix: Int] = [:]

    init() { nodes = .allocate(capacity: nodeCapacity) }

    deinit { nodes.deallocate() }

    var count: Int { entries.count }

    /// Gives `prefix` to the peer in `slot`; returns the slot that held it before, if another did.
    @discardableResult
    func insert(_ prefix: IPPrefix, slot: Int) -> Int? {
        let previous = entries.updateValue(slot, forKey: prefix)
        let (high, low) = Self.key(prefix.address)
        insert(high, low, Int(prefix.length), Int32(slot), v6: prefix.address.isV6)
        return previous == slot ? nil : previous
    }

    /// Takes every prefix away from the peer in `slot`.
    func removeAll(slot: Int) {
        let before = entries.count
        entries = entries.filter { $0.value != slot }
        guard entries.count != before else { return }
        nodeCount = 0
        rootV4 = -1
        rootV6 = -1
        // Sorted so the rebuilt trie does not depend on the dictionary's order.
        for (prefix, slot) in entries.sorted(by: { ($0.key.address, $0.key.length) < ($1.key.address, $1.key.length) }) {
            let (high, low) = Self.key(prefix.address)
            insert(high, low, Int(prefix.length), Int32(slot), v6: prefix.address.isV6)
        }
    }

    /// The prefixes the peer in `slot` holds, sorted.
    func prefixes(of slot: Int) -> [IPPrefix] {
        entries.compactMap { $0.value == slot ? $0.key : nil }.sorted { ($0.address, $0.length) < ($1.address, $1.length) }
    }

    /// The slot of the peer whose longest prefix holds `address`; -1 when none does.
    @inline(__always) func lookup(_ address: IPAddress) -> Int {
        switch address {
        case .v4(let a): return lookup(v4: a.rawValue)
        case .v6(let a): return lookup(high: a.high, low: a.low, root: rootV6)
        }
    }

    @inline(__always) func lookup(v4 address: UInt32) -> Int {
        lookup(high: UInt64(address) << 32, low: 0, root: rootV4)
    }

    @inline(__always) func lookup(v6High high: UInt64, low: UInt64) -> Int {
        lookup(high: high, low: low, root: rootV6)
    }

    @inline(__always) func lookup(high: UInt64, low: UInt64, root: Int32) -> Int {
        var best: Int32 = -1
        var at = root
        while at >= 0 {
            let node = nodes[Int(at)]
            let (maskHigh, maskLow) = IPPrefix.mask128(Int(node.length))
            guard (node.high ^ high) & maskHigh == 0, (node.low ^ low) & maskLow == 0 else { break }
            if node.value >= 0 { best = node.value }
            guard node.length < 128 else { break }
            at = Self.bit(high, low, Int(node.length)) == 0 ? node.zero : node.one
        }
        return Int(best)
    }

    // MARK: Trie mechanics

    /// The 128-bit key of an address: IPv4 in the top 32 bits.
    static func key(_ address: IPAddress) -> (UInt64, UInt64) {
        switch address {
        case .v4(let a): (UInt64(a.rawValue) << 32, 0)
        case .v6(let a): (a.high, a.low)
        }
    }

    /// Bit `i` of the key, counted from the most significant.
    @inline(__always) static func bit(_ high: UInt64, _ low: UInt64, _ i: Int) -> Int {
        i < 64 ? Int(truncatingIfNeeded: high >> UInt64(63 - i)) & 1 : Int(truncatingIfNeeded: low >> UInt64(127 - i)) & 1
    }

    /// How many leading bits two keys share.
    static func common(_ aHigh: UInt64, _ aLow: UInt64, _ bHigh: UInt64, _ bLow: UInt64) -> Int {
        aHigh != bHigh ? (aHigh ^ bHigh).leadingZeroBitCount : 64 + (aLow ^ bLow).leadingZeroBitCount
    }

    private func make(_ high: UInt64, _ low: UInt64, _ length: Int, _ value: Int32) -> Int32 {
        if nodeCount == nodeCapacity {
            let grown = UnsafeMutablePointer<Node>.allocate(capacity: nodeCapacity * 2)
            grown.moveInitialize(from: nodes, count: nodeCount)
            nodes.deallocate()
            nodes = grown
            nodeCapacity *= 2
        }
        let (maskHigh, maskLow) = IPPrefix.mask128(length)
        (nodes + nodeCount).initialize(to: Node(high: high & maskHigh, low: low & maskLow, length: UInt8(length), value: value))
        nodeCount += 1
        return Int32(nodeCount - 1)
    }

    private func setChild(_ parent: Int32, _ bit: Int, _ child: Int32) {
        if bit == 0 { nodes[Int(parent)].zero = child } else { nodes[Int(parent)].one = child }
    }

    /// Walks down from the root while the stored prefixes contain the new one; stores it where it
    /// belongs: on its own node, as a new leaf, above a node it contains, or beside one under a new fork.
    private func insert(_ high: UInt64, _ low: UInt64, _ length: Int, _ value: Int32, v6: Bool) {
        var parent: Int32 = -1
        var side = 0
        var at = v6 ? rootV6 : rootV4
        func attach(_ node: Int32) {
            if parent >= 0 {
                setChild(parent, side, node)
            } else if v6 {
                rootV6 = node
            } else {
                rootV4 = node
            }
        }
        while true {
            guard at >= 0 else {
                attach(make(high, low, length, value))
                return
            }
            let node = nodes[Int(at)]
            let shared = min(Self.common(node.high, node.low, high, low), Int(node.length), length)
            if shared == Int(node.length) {
                if Int(node.length) == length {
                    nodes[Int(at)].value = value
                    return
                }
                parent = at
                side = Self.bit(high, low, Int(node.length))
                at = side == 0 ? node.zero : node.one
                continue
            }
            let leaf = make(high, low, length, value)
            if shared == length {
                // The new prefix contains the node's: it goes above it.
                setChild(leaf, Self.bit(node.high, node.low, length), at)
                attach(leaf)
            } else {
                // They part at bit `shared`: a fork holds both.
                let fork = make(high, low, shared, -1)
                setChild(fork, Self.bit(node.high, node.low, shared), at)
                setChild(fork, Self.bit(high, low, shared), leaf)
                attach(fork)
            }
            return
        }
    }
}
