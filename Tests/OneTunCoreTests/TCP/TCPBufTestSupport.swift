@_spi(OneTunInternals) @testable import OneTunCore

// Shared helpers for the TCP buffer tests; prefixed `tcpBuf` to stay clear of other suites' helpers.

/// One step of the shared xorshift64 (see `XorShift64`) on a bare state.
func tcpBufNext(_ state: inout UInt64) -> UInt64 {
    var generator = XorShift64(seed: 0)
    generator.state = state
    let value = generator.next()
    state = generator.state
    return value
}

/// Uniform-enough integer in `0 ..< n` (n > 0).
func tcpBufBelow(_ n: Int, _ state: inout UInt64) -> Int {
    Int(tcpBufNext(&state) % UInt64(n))
}

/// The byte at absolute position `i` of a test stream: not periodic at any power of two, so misplaced
/// bytes show up.
func tcpBufStreamByte(_ i: Int) -> UInt8 {
    UInt8(truncatingIfNeeded: (i &* 131) ^ (i >> 7) ^ (i >> 15))
}

func tcpBufStream(_ range: Range<Int>) -> [UInt8] {
    range.map(tcpBufStreamByte)
}

/// All readable bytes of a ring, via `peek`.
func tcpBufContents(_ ring: ByteRing) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: ring.count)
    let n = out.withUnsafeMutableBytes { ring.peek(at: 0, into: $0) }
    precondition(n == ring.count)
    return out
}

/// Writes `bytes` with `write(from:)`, returning how many were taken.
@discardableResult
func tcpBufWrite(_ ring: ByteRing, _ bytes: [UInt8]) -> Int {
    bytes.withUnsafeBytes { ring.write(from: $0) }
}
