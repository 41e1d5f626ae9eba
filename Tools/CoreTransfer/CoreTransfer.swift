// core-transfer: streams a fixed number of MiB through two TunnelCores joined in memory (BackToBackCores)
// and prints what it moved, as JSON.
//   core-transfer MIB          `make bench-instr` runs this under callgrind twice, with 0 MiB and with MIB,
//                              and reports the difference in instructions per MiB: a figure that does not
//                              move with the machine's noise.
//   core-transfer --timed MIB  also times it, and times as many bytes of seal+open alone (the crypto's
//                              ceiling), alternating with it in 8 MiB chunks, and prints both rates and
//                              their ratio.
#if canImport(Glibc)
import Glibc
#endif
@_spi(OneTunInternals) import OneTunCore

@main
struct CoreTransfer {
    static func main() {
        var arguments = Array(CommandLine.arguments.dropFirst())
        let timed = arguments.first == "--timed"
        if timed { arguments.removeFirst() }
        guard arguments.count == 1, let mib = Int(arguments[0]), mib >= 0 else {
            print("usage: core-transfer [--timed] MIB   (streams MIB mebibytes through two in-memory TunnelCores)")
            exit(2)
        }
        let pair = BackToBackCores(seed: 1, verify: false)
        // The handshake and the TCP connection, so that MIB = 0 measures exactly the set-up.
        guard pair.transfer(bytes: 1) else { fail(pair) }
        // Timed, the transfer and seal+open alternate in chunks of 8 MiB, so both see the same machine: a
        // noisy neighbour slows both rather than one.
        let chunk = timed ? min(mib, 8) : mib
        let mss = pair.client.config.tcp.mss
        var transferNanos = 0
        var sealNanos = 0
        var sealedBytes = 0
        var moved = 0
        while moved < mib || (mib == 0 && moved == 0) {
            let n = min(chunk, mib - moved)
            let start = monotonicNanoseconds()
            guard pair.transfer(bytes: n << 20) else { fail(pair) }
            transferNanos += monotonicNanoseconds() - start
            if timed {
                // As many packets as the chunk's data segments, each a full segment with its headers.
                let packets = (n << 20) / mss
                let sealStart = monotonicNanoseconds()
                guard pair.sealAndOpen(count: packets, size: mss + 40) else { fail(pair) }
                sealNanos += monotonicNanoseconds() - sealStart
                sealedBytes += packets * mss
            }
            moved += max(n, 1)
        }
        var line = "{\"mib\": \(mib), \"received\": \(pair.received), \"datagrams\": \(pair.datagrams)"
        if timed && sealNanos > 0 && transferNanos > 0 && sealedBytes > 0 {
            let transferMbps = Double(mib << 23) / Double(max(transferNanos, 1)) * 1000
            let sealMbps = Double(sealedBytes * 8) / Double(max(sealNanos, 1)) * 1000
            line += ", \"transfer_mbps\": \(Int(transferMbps)), \"seal_open_mbps\": \(Int(sealMbps))"
            line += ", \"ratio\": \(Double(Int(transferMbps / sealMbps * 1000)) / 1000)"
        }
        print(line + "}")
    }

    static func monotonicNanoseconds() -> Int {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int(ts.tv_sec) * 1_000_000_000 + Int(ts.tv_nsec)
    }

    static func fail(_ pair: BackToBackCores) -> Never {
        print("core-transfer: the transfer stalled after \(pair.received) bytes")
        exit(1)
    }
}
