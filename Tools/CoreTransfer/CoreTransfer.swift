// core-transfer: streams a fixed number of MiB through two TunnelCores joined in memory (BackToBackCores)
// and prints what it moved, as JSON.
//   core-transfer MIB          `make bench-instr` runs this under callgrind twice, with 0 MiB and with MIB,
//                              and reports the difference in instructions per MiB: a figure that does not
//                              move with the machine's noise.
//   core-transfer --timed MIB  also times it, and times as many bytes of seal+open alone (the crypto's
//                              ceiling), in the same process, and prints both rates and their ratio.
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
        let start = monotonicNanoseconds()
        guard pair.transfer(bytes: mib << 20) else { fail(pair) }
        let transferNanos = monotonicNanoseconds() - start
        var line = "{\"mib\": \(mib), \"received\": \(pair.received), \"datagrams\": \(pair.datagrams)"
        if timed {
            // As many packets as the transfer's data segments, each a full segment with its headers.
            let mss = pair.client.config.tcp.mss
            let packets = (mib << 20) / mss
            let sealStart = monotonicNanoseconds()
            guard pair.sealAndOpen(count: packets, size: mss + 40) else { fail(pair) }
            let sealNanos = monotonicNanoseconds() - sealStart
            let transferMbps = Double(mib << 23) / Double(max(transferNanos, 1)) * 1000
            let sealMbps = Double(packets * mss * 8) / Double(max(sealNanos, 1)) * 1000
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
