import Foundation
import Glibc
import Testing

/// Examples/PollForwarder, the poll(2) driver of the core, end to end: the core forwards without libuv.
/// A wireguard-go peer in a namespace, forward_check.py's sink and source on its tunnel address, and the
/// example (one port each, so one run per direction) on the namespace's 127.0.0.1.
@Suite(.serialized) struct PollForwarderTests {
    /// Built next to the test bundle (`swift build --build-tests` builds every product).
    static var executable: String {
        let bundleDir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let candidates = [
            bundleDir.appendingPathComponent("PollForwarder").path,
            FileManager.default.currentDirectoryPath + "/.build/debug/PollForwarder",
        ]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
    }

    /// Starts the example forwarding 127.0.0.1:`port` to `service` on the peer, and waits until it listens.
    func startPollForwarder(_ s: ForwardSession, port: UInt16, service: UInt16) throws -> ChildProcess {
        let key = try String(contentsOf: s.peer.privateKeyFile, encoding: .utf8).trimmed
        let child = try s.namespace.spawn([
            Self.executable, String(port), "192.168.4.1", String(service), "127.0.0.1:\(s.peer.peer.listenPort)",
            key, s.peer.peer.publicKey, "192.168.4.3",
        ], logName: "poll-forwarder-\(port).log")
        try s.waitFor(child, "forwarding", seconds: 10)
        return child
    }

    /// utime + stime of `pid` in clock ticks (usually 100 a second), from /proc/PID/stat.
    func cpuTicks(_ pid: pid_t) -> Int {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let end = stat.lastIndex(of: ")")
        else { return 0 }
        // Fields after the command name: state is field 3, utime 14 and stime 15.
        let fields = stat[stat.index(after: end)...].split(separator: " ")
        return (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)
    }

    @Test(.enabled(if: ForwarderTests.needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(2)))
    func sixteenMebibytesEachWay() throws {
        let s = try ForwardSession()
        defer { s.close() }
        var log = ""
        do {
            let size = 16 << 20
            let (file, digest) = try s.randomFile("download.bin", size: size)
            try s.startServer(addresses: ["192.168.4.1"], file: file)

            let up = try startPollForwarder(s, port: 18101, service: ServicePort.sink)
            let upload = try s.client(18101, "upload", [file.path])
            log = up.output
            #expect(upload[int: "sent"] == size, "\(upload)")
            #expect(upload[string: "digest"] == digest, "upload: \(upload)")
            #expect(up.isRunning && up.output.contains("handshake complete"), "\(up.output)")
            // Idle now: poll sleeps until the core's next deadline, so the loop must not spin.
            let busy = cpuTicks(up.pid)
            usleep(1_000_000)
            #expect(cpuTicks(up.pid) - busy < 20, "PollForwarder used CPU while idle")
            up.terminate()

            // A second run, a second handshake: the peer takes the newer session.
            let down = try startPollForwarder(s, port: 18102, service: ServicePort.source)
            let download = try s.client(18102, "download", [String(size)])
            log = down.output
            #expect(download[int: "received"] == size, "\(download)")
            #expect(download[string: "digest"] == digest, "download: \(download)")
            #expect(down.isRunning, "\(down.output)")
            down.terminate()
            print(String(format: "PollForwarder: 16 MiB up in %.2f s, 16 MiB down in %.2f s",
                         upload[double: "seconds"] ?? -1, download[double: "seconds"] ?? -1))
        } catch {
            Issue.record("\(error)\nPollForwarder log:\n\(log)\nservices log:\n\(s.serverLog)")
        }
    }
}
