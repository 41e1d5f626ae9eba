import Benchmark
import Glibc
@_spi(OneTunInternals) import OneTunCore

/// Two tunnels with an established session, driven through the public API with a fake clock.
final class Pair {
    let a: WireGuardDevice
    let b: WireGuardDevice
    var now = Instant(nanoseconds: 1_000_000_000_000)
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 16)

    init() {
        let keyA = WGCrypto.generatePrivateKey(using: SeededRandom(seed: 1))
        let keyB = WGCrypto.generatePrivateKey(using: SeededRandom(seed: 2))
        a = WireGuardDevice(config: WireGuardConfig(privateKey: keyA, peerPublicKey: WGCrypto.x25519PublicKey(privateKey: keyB)), random: SystemRandom())
        b = WireGuardDevice(config: WireGuardConfig(privateKey: keyB, peerPublicKey: WGCrypto.x25519PublicKey(privateKey: keyA)), random: SystemRandom())
    }

    /// Moves every pending datagram between the two until both are quiet.
    func exchange() {
        var moved = true
        var rounds = 0
        while moved && rounds < 16 {
            moved = false
            rounds += 1
            for (from, to) in [(a, b), (b, a)] {
                while let n = from.pollTransmit(into: scratch, now: now) {
                    _ = to.decapsulate(scratch, datagramLength: n, from: EndpointAddress(), now: now)
                    moved = true
                }
            }
        }
    }

    /// A full handshake (initiation, response, confirming keepalive).
    func handshake() {
        now = now.adding(6 * Nanos.second)  // past REKEY_TIMEOUT's rate limit
        a.initiateHandshake(now: now)
        exchange()
    }
}

/// An IPv4 packet header of `size` bytes total at `buffer[16...]`, so the inner-length check passes.
func writeInnerPacket(_ buffer: UnsafeMutableRawBufferPointer, size: Int) {
    let p = UnsafeMutableRawBufferPointer(rebasing: buffer[16..<(16 + size)])
    for i in 0..<size { p[i] = UInt8(truncatingIfNeeded: i) }
    p[0] = 0x45
    p.storeBytes(of: UInt16(size).bigEndian, toByteOffset: 2, as: UInt16.self)
}

let sealOpenMbps = BenchmarkMetric.custom("seal+open Mbit/s", polarity: .prefersLarger, useScalingFactor: false)
let checksumMBps = BenchmarkMetric.custom("checksum MB/s", polarity: .prefersLarger, useScalingFactor: false)
let transferMbps = BenchmarkMetric.custom("transfer Mbit/s", polarity: .prefersLarger, useScalingFactor: false)
let percentOfSealOpen = BenchmarkMetric.custom("% of seal+open", polarity: .prefersLarger, useScalingFactor: false)
let tcpSegmentsPerSecond = BenchmarkMetric.custom("TCP segments/s", polarity: .prefersLarger, useScalingFactor: false)

func monotonicNanoseconds() -> Int {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int(ts.tv_sec) * 1_000_000_000 + Int(ts.tv_nsec)
}

/// Two TCP connections joined in memory: one iteration moves one MSS of data from a to b, with b's
/// ACKs going back (segments are parsed representations here; the wire layer is measured apart).
final class TCPMemoryPair {
    var now = Instant(nanoseconds: 1_000_000_000)
    let a: TCPConnection
    var b: TCPConnection!
    let payload = UnsafeMutableRawBufferPointer.allocate(byteCount: 65_536, alignment: 16)
    let data = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
    var segments = 0

    init() {
        data.initializeMemory(as: UInt8.self, repeating: 0x5a)
        a = TCPConnection(localPort: 1, remotePort: 2, iss: 100, now: now)
        let (syn, _) = a.pollSegment(payload: payload, now: now)!
        b = TCPConnection(accepting: syn, iss: 7_000, now: now)
        exchange()
    }

    /// Moves every pending segment both ways until both are quiet.
    func exchange() {
        var moved = true
        while moved {
            moved = false
            for (from, to) in [(a, b!), (b!, a)] {
                while let (repr, n) = from.pollSegment(payload: payload, now: now) {
                    to.handleSegment(repr, payload: UnsafeRawBufferPointer(rebasing: payload[0..<n]), now: now)
                    segments += 1
                    moved = true
                }
            }
            let readable = b.readable()
            if !readable.isEmpty { b.consume(readable.count) }
        }
    }

    func pump(bytes: Int) {
        var left = bytes
        while left > 0 {
            let n = a.send(UnsafeRawBufferPointer(rebasing: data[0..<min(left, data.count)]))
            left -= n
            exchange()
            now = now.adding(1_000)
        }
    }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration.maxDuration = .seconds(3)
    Benchmark.defaultConfiguration.maxIterations = 1_000_000

    // One iteration = seal a 1420-byte packet in place on one side, open it in place on the other. The
    // opened plaintext is where the next seal reads it, so nothing is copied.
    Benchmark(
        "WireGuard transport seal+open, 1420-byte packets",
        configuration: .init(metrics: [.throughput, .wallClock, .mallocCountTotal, sealOpenMbps], scalingFactor: .kilo)
    ) { benchmark in
        let pair = Pair()
        pair.handshake()
        let size = 1420
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 + size + 32, alignment: 16)
        defer { buffer.deallocate() }
        writeInnerPacket(buffer, size: size)
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let start = Int(ts.tv_sec) * 1_000_000_000 + Int(ts.tv_nsec)
        benchmark.startMeasurement()
        var packets = 0
        for _ in benchmark.scaledIterations {
            guard case .send(let n) = pair.a.encapsulate(buffer, packetLength: size, now: pair.now) else { fatalError("no session") }
            guard case .packet = pair.b.decapsulate(buffer, datagramLength: n, from: EndpointAddress(), now: pair.now) else { fatalError("open failed") }
            packets += 1
        }
        benchmark.stopMeasurement()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let elapsed = Int(ts.tv_sec) * 1_000_000_000 + Int(ts.tv_nsec) - start
        let mbps = Double(packets * size * 8) / Double(max(elapsed, 1)) * 1000
        benchmark.measurement(sealOpenMbps, Int(mbps))
    }

    // RFC 1071 checksum of a 1500-byte packet.
    Benchmark("Internet checksum, 1500 bytes", configuration: .init(metrics: [.throughput, .mallocCountTotal, checksumMBps], scalingFactor: .kilo)) { benchmark in
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: 1500, alignment: 16)
        defer { bytes.deallocate() }
        for i in 0..<1500 { bytes[i] = UInt8(truncatingIfNeeded: i &* 7) }
        let start = monotonicNanoseconds()
        var sink: UInt16 = 0
        var count = 0
        benchmark.startMeasurement()
        for i in benchmark.scaledIterations {
            // Change a byte each time so the optimiser cannot compute the sum once and reuse it.
            bytes[i % 1500] &+= 1
            sink ^= Checksum.compute(UnsafeRawBufferPointer(bytes))
            count += 1
        }
        benchmark.stopMeasurement()
        blackHole(sink)
        let elapsed = max(monotonicNanoseconds() - start, 1)
        benchmark.measurement(checksumMBps, count * 1500 * 1000 / elapsed)
    }

    // TCP: 1 MiB through an in-memory connection pair per iteration (data segments and their ACKs).
    Benchmark("TCP connection pair, 1 MiB in memory", configuration: .init(metrics: [.throughput, .wallClock, .mallocCountTotal, tcpSegmentsPerSecond], scalingFactor: .one)) { benchmark in
        let pair = TCPMemoryPair()
        let start = monotonicNanoseconds()
        let before = pair.segments
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { pair.pump(bytes: 1 << 20) }
        benchmark.stopMeasurement()
        let elapsed = max(monotonicNanoseconds() - start, 1)
        benchmark.measurement(tcpSegmentsPerSecond, (pair.segments - before) * 1_000_000_000 / elapsed)
    }

    // The whole path in memory: one iteration moves 1 MiB from one TunnelCore's TCP connection to the
    // other's, through both WireGuard sessions (BackToBackCores), so mallocs per iteration are per MiB.
    // Then as many data packets of seal+open alone, in the same run: "% of seal+open" is the transfer's
    // rate as a share of the crypto's (issue 11: at least 75 %).
    Benchmark(
        "Two TunnelCores in memory, 1 MiB through TCP and WireGuard",
        configuration: .init(metrics: [.throughput, .wallClock, .mallocCountTotal, transferMbps, percentOfSealOpen], scalingFactor: .one)
    ) { benchmark in
        let pair = BackToBackCores(seed: 1, verify: false)
        precondition(pair.transfer(bytes: 1 << 20), "the warm-up transfer stalled")
        var mib = 0
        let start = monotonicNanoseconds()
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            precondition(pair.transfer(bytes: 1 << 20), "the transfer stalled")
            mib += 1
        }
        benchmark.stopMeasurement()
        let transferNanos = max(monotonicNanoseconds() - start, 1)
        let mss = pair.client.config.tcp.mss
        let packets = (mib << 20) / mss
        let sealStart = monotonicNanoseconds()
        precondition(pair.sealAndOpen(count: packets, size: mss + 40), "seal+open failed")
        let sealNanos = max(monotonicNanoseconds() - sealStart, 1)
        benchmark.measurement(transferMbps, mib * 8_388_608 * 1000 / transferNanos)
        benchmark.measurement(percentOfSealOpen, Int(Double(mib << 20) / Double(transferNanos) / (Double(packets * mss) / Double(sealNanos)) * 100))
    }

    Benchmark(
        "WireGuard handshake (initiation + response + confirmation)",
        configuration: .init(metrics: [.throughput, .wallClock, .mallocCountTotal], scalingFactor: .one)
    ) { benchmark in
        let pair = Pair()
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            pair.handshake()
        }
        benchmark.stopMeasurement()
        precondition(pair.a.stats.handshakesCompleted > 0)
    }
}
