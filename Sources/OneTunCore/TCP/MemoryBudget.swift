/// The bytes every TCP buffer of a stack holds, against one limit (`TCPConfig.bufferMemoryLimit`): the
/// sum over connections, not a per-connection cap, so ten thousand connections cannot each take what one
/// fast one may. Rings charge it as they allocate and credit it as they give memory back. Past the
/// limit, windows stop growing: receive-window autotuning holds, and the send space stays within what a
/// connection already has (and a small floor, so every connection still moves).
@_spi(OneTunInternals) public final class MemoryBudget {
    public let limit: Int
    @exclusivity(unchecked) public private(set) var used = 0

    public init(limit: Int) { self.limit = limit }

    @inline(__always) var isExhausted: Bool { used >= limit }

    @inline(__always) func charge(_ bytes: Int) { used += bytes }
}
