import CSodium

/// Where the core's randomness comes from (ephemeral keys, indices, jitter, cookie secrets). Injected so
/// tests and simulations are deterministic.
public protocol RandomSource: AnyObject {
    func fill(_ buffer: UnsafeMutableRawBufferPointer)
}

extension RandomSource {
    public func nextUInt64() -> UInt64 {
        var value: UInt64 = 0
        withUnsafeMutableBytes(of: &value) { fill($0) }
        return value
    }

    public func nextUInt32() -> UInt32 { UInt32(truncatingIfNeeded: nextUInt64()) }

    /// Uniform in `0..<bound`, without modulo bias: Lemire's multiply-shift, rejecting the few low
    /// products below 2^64 mod bound ("Fast Random Integer Generation in an Interval", 2019).
    public func uniform(below bound: UInt64) -> UInt64 {
        precondition(bound > 0)
        while true {
            let x = nextUInt64()
            let (high, low) = x.multipliedFullWidth(by: bound)
            if low >= (0 &- bound) % bound { return high }
        }
    }
}

/// The operating system's CSPRNG through libsodium. Requests of up to 64 bytes (indices, ports, jitter,
/// keys) are served from a 256-byte pool refilled in one system call, not one call each (a short
/// connection asked for several); every byte handed out is wiped from the pool. Like the core it feeds,
/// one instance is used from one thread at a time.
public final class SystemRandom: RandomSource {
    private let pool = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 16)
    /// Bytes of `pool` already handed out (and wiped); the rest are fresh.
    private var used = 256
    static let largestPooled = 64

    public init() { precondition(sodiumInitialised, "libsodium failed to initialise") }

    deinit {
        sodium_memzero(pool.baseAddress, pool.count)
        pool.deallocate()
    }

    public func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        guard buffer.count <= Self.largestPooled else {
            randombytes_buf(base, buffer.count)
            return
        }
        if pool.count - used < buffer.count {
            randombytes_buf(pool.baseAddress!, pool.count)
            used = 0
        }
        base.copyMemory(from: pool.baseAddress! + used, byteCount: buffer.count)
        sodium_memzero(pool.baseAddress! + used, buffer.count)
        used += buffer.count
    }
}

/// A deterministic generator (xoshiro256**, seeded through splitmix64) for tests and simulations only:
/// the same seed gives the same bytes on every run and platform, so a failing simulation replays from its
/// printed seed. Never for keys that protect real traffic.
@_spi(OneTunInternals) public final class SeededRandom: RandomSource {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var z = seed
        func splitmix() -> UInt64 {
            z &+= 0x9E37_79B9_7F4A_7C15
            var x = z
            x = (x ^ (x >> 30)) &* 0xBF58_476D_1CE4_E5B9
            x = (x ^ (x >> 27)) &* 0x94D0_49BB_1331_11EB
            return x ^ (x >> 31)
        }
        s = (splitmix(), splitmix(), splitmix(), splitmix())
    }

    func next() -> UInt64 {
        let result = ((s.1 &* 5) << 7 | (s.1 &* 5) >> 57) &* 9
        let t = s.1 << 17
        s.2 ^= s.0
        s.3 ^= s.1
        s.1 ^= s.2
        s.0 ^= s.3
        s.2 ^= t
        s.3 = s.3 << 45 | s.3 >> 19
        return result
    }

    public func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        var i = 0
        while i < buffer.count {
            var word = next().littleEndian
            let take = min(8, buffer.count - i)
            withUnsafeBytes(of: &word) { (buffer.baseAddress! + i).copyMemory(from: $0.baseAddress!, byteCount: take) }
            i += take
        }
    }
}
