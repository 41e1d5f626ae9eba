/// xorshift64 (Marsaglia): a tiny deterministic generator for randomised tests, so every failure replays
/// from its seed. (The core's `SeededRandom` serves the simulations, which need a `RandomSource`.)
struct XorShift64 {
    var state: UInt64
    init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }
    mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }
    /// Uniform-enough integer in `0 ..< n` (n > 0).
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}
