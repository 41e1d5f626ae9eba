import Foundation
import Glibc
import Testing
@_spi(OneTunInternals) @testable import OneTunLoop

/// Operating onetun: /metrics checked by promtool and against the bytes a transfer moved, /readyz
/// following the peer, SIGUSR1's status report, JSON logs, and sd_notify to a fake NOTIFY_SOCKET; all
/// against a real wireguard-go peer in a namespace. Then the pure parts: the Prometheus text writer, the
/// JSON log line's escaping, the request line parser.
@Suite(.serialized) struct ObservabilityTests {
    static var needsNamespaces: Bool { ForwarderTests.needsNamespaces }
    static let metricsPort: UInt16 = 19570

    // MARK: - End to end

    /// A 4 MiB upload and a 4 MiB download: the forward's byte counters move by exactly 4 MiB, the peer's
    /// by 4 MiB plus the headers (under 10 %); scrapes taken while a paced transfer runs pass
    /// `promtool check metrics`; connections are counted; the process metrics are plausible. Then SIGUSR1
    /// reports the peer and both forwards in `wg show`'s shape.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(2)))
    func metricsFollowATransfer() throws {
        try withForwardSession { s in
            let size = 4 << 20
            let (file, digest) = try s.randomFile("data.bin", size: size)
            try s.startServer(addresses: ["192.168.4.1"], file: file)
            try s.startOnetun(s.onetunArguments([
                "127.0.0.1:18070:192.168.4.1:\(ServicePort.sink)", "127.0.0.1:18071:192.168.4.1:\(ServicePort.source)",
                "127.0.0.1:18072:192.168.4.1:\(ServicePort.echo)",
            ], extra: ["--metrics", "127.0.0.1:\(Self.metricsPort)"]))
            let onetun = try #require(s.onetun)
            try s.waitFor(onetun, "handshake with the peer complete", seconds: 10)
            let peerKey = s.peer.peer.publicKey
            let upLabel = "forward=\"TCP 127.0.0.1:18070 -> 192.168.4.1:\(ServicePort.sink)\""
            let downLabel = "forward=\"TCP 127.0.0.1:18071 -> 192.168.4.1:\(ServicePort.source)\""
            let peerLabel = "public_key=\"\(peerKey)\""

            // Scrapes while bytes move, each checked by promtool.
            let paced = try s.startClient(18072, "echo-paced", ["2", "262144"], logName: "paced.log")
            var checked = 0
            while paced.isRunning && checked < 20 {
                let body = try scrape(s)
                try promtool(body)
                checked += 1
                usleep(100_000)
            }
            let pacedResult = try s.finish(paced, seconds: 30)
            #expect(pacedResult[bool: "equal"] == true, "\(pacedResult)")
            #expect(checked >= 3, "only \(checked) scrapes during the paced transfer")

            let before = try Metrics(scrape(s))
            let upload = try s.client(18070, "upload", [file.path])
            #expect(upload[string: "digest"] == digest, "\(upload)")
            let download = try s.client(18071, "download", [String(size)])
            #expect(download[string: "digest"] == digest, "\(download)")
            // Both clients are gone once their sockets closed on onetun's side too.
            var after = try Metrics(scrape(s))
            let deadline = Date().addingTimeInterval(10)
            while (after["onetun_forward_open_connections{\(upLabel)}"] != 0 || after["onetun_forward_open_connections{\(downLabel)}"] != 0)
                && Date() < deadline {
                usleep(50_000)
                after = try Metrics(scrape(s))
            }
            let body = try scrape(s)
            try promtool(body)
            after = Metrics(body)
            func delta(_ key: String) -> Double { (after[key] ?? .nan) - (before[key] ?? .nan) }
            #expect(delta("onetun_forward_sent_bytes_total{\(upLabel)}") == Double(size), "\(body)")
            #expect(delta("onetun_forward_received_bytes_total{\(downLabel)}") == Double(size), "\(body)")
            #expect(delta("onetun_forward_connections_total{\(upLabel)}") == 1)
            #expect(delta("onetun_forward_connections_total{\(downLabel)}") == 1)
            #expect(after["onetun_forward_open_connections{\(upLabel)}"] == 0)
            #expect(after["onetun_forward_refused_total{\(upLabel)}"] == 0)
            let peerSent = delta("onetun_peer_sent_bytes_total{\(peerLabel)}")
            let peerReceived = delta("onetun_peer_received_bytes_total{\(peerLabel)}")
            // The upload's bytes leave in inner packets, with the download's ACKs; and the other way round.
            #expect(peerSent >= Double(size) && peerSent <= Double(size) * 1.1, "peer sent \(peerSent)")
            #expect(peerReceived >= Double(size) && peerReceived <= Double(size) * 1.1, "peer received \(peerReceived)")
            #expect(delta("onetun_peer_sent_packets_total{\(peerLabel)}") > Double(size / 1500))
            #expect(after["onetun_peer_handshakes_total{\(peerLabel)}"] ?? 0 >= 1)
            let handshake = after["onetun_peer_latest_handshake_seconds{\(peerLabel)}"] ?? 0
            #expect(abs(handshake - Date().timeIntervalSince1970) < 120, "latest handshake \(handshake)")
            #expect(after["onetun_peer_info{\(peerLabel),endpoint=\"127.0.0.1:\(s.peer.peer.listenPort)\"}"] == 1, "\(body)")
            #expect(after["onetun_peer_session_up{\(peerLabel)}"] == 1)
            #expect(after["onetun_tcp_smoothed_rtt_seconds"] != nil)
            #expect(after["onetun_wireguard_dropped_total{reason=\"decryption_failed\"}"] == 0)
            #expect((after["process_open_fds"] ?? 0) >= 5, "\(body)")
            #expect((after["process_resident_memory_bytes"] ?? 0) > Double(1 << 20))
            let start = after["process_start_time_seconds"] ?? 0
            #expect(abs(start - Date().timeIntervalSince1970) < 120, "start time \(start)")
            #expect(after["onetun_udp_ports_in_use"] == 0)

            // Health, readiness, and what is not served.
            #expect(try fetch(s, "/healthz").status == 200)
            let ready = try fetch(s, "/readyz")
            #expect(ready.status == 200 && ready.body == "ready\n", "\(ready)")
            #expect(try fetch(s, "/nothing").status == 404)
            #expect(try fetch(s, "/metrics", method: "POST").status == 405)
            // A head far past the limit, still being sent when the 431 comes: the answer arrives whole and
            // the connection ends with a FIN (closing on unread input would reset it and lose the answer).
            let big = try s.peer.execute(["python3", "-c", """
                import socket, sys
                s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
                try:
                    s.sendall(b"GET /metrics HTTP/1.1\\r\\nX: " + b"a" * 65536)
                    data = b""
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    print("answer", data.split(b"\\r\\n")[0].decode())
                except OSError as e:
                    print("error", e)
                """, String(Self.metricsPort)], timeout: 20)
            #expect(big.stdout.trimmed == "answer HTTP/1.1 431 Request Header Fields Too Large", "\(big.stdout) \(big.stderr)")
            let head = try fetch(s, "/metrics", method: "HEAD")
            #expect(head.status == 200 && head.body.isEmpty, "\(head)")

            // SIGUSR1: the status report.
            kill(onetun.pid, SIGUSR1)
            try s.waitFor(onetun, "forward: TCP 127.0.0.1:18072", seconds: 5)
            let log = s.onetunLog
            let report = String(log[log.range(of: "status (SIGUSR1):")!.lowerBound...])
            for line in [
                "interface: onetun", "  listening port: ", "peer: \(peerKey)", "  endpoint: 127.0.0.1:\(s.peer.peer.listenPort)",
                "  allowed ips: 0.0.0.0/0, ::/0", " seconds ago", "forward: TCP 127.0.0.1:18070 -> 192.168.4.1:\(ServicePort.sink)",
                "  connections: 0 open, 1 total, 0 refused", "  transfer: 4.00 MiB received, ",
                "forward: TCP 127.0.0.1:18071 -> 192.168.4.1:\(ServicePort.source)",
            ] {
                #expect(report.contains(line), "no '\(line)' in:\n\(report)")
            }
            #expect(report.contains("B sent\n\nforward: TCP 127.0.0.1:18071"), "\(report)")
            print("onetun metrics: \(checked) scrapes passed promtool during a paced echo; forward bytes +\(Int(delta("onetun_forward_sent_bytes_total{\(upLabel)}"))) up, +\(Int(delta("onetun_forward_received_bytes_total{\(downLabel)}"))) down; peer +\(Int(peerSent)) sent, +\(Int(peerReceived)) received (x\(String(format: "%.3f", peerSent / Double(size))), x\(String(format: "%.3f", peerReceived / Double(size)))); \(body.utf8.count) bytes of metrics")
        }
    }

    /// /readyz says 503, naming the lost session, once the peer's wireguard-go is gone and data went
    /// unanswered (Keepalive-Timeout + Rekey-Timeout), and 200 again once a handshake with the restarted
    /// peer completed; /healthz stays 200 throughout.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(2)))
    func readinessFollowsThePeer() throws {
        try withForwardSession { s in
            try s.startServer(addresses: ["192.168.4.1"])
            try s.startOnetun(s.onetunArguments(
                ["127.0.0.1:18073:192.168.4.1:\(ServicePort.echo)"], extra: ["--metrics", "\(Self.metricsPort)", "--log", "debug"]))
            let onetun = try #require(s.onetun)
            let up = try waitForStatus(s, "/readyz", 200, seconds: 15)
            #expect(up.body == "ready\n")
            // Data keeps flowing into the tunnel while the peer is away (the paced echo), so its silence shows.
            let paced = try s.startClient(18073, "echo-paced", ["60"], logName: "paced.log")
            try s.waitFor(onetun, "client accepted", seconds: 10)
            s.peer.stop()
            let stopped = Date()
            let down = try waitForStatus(s, "/readyz", 503, seconds: 40)
            let tookDown = Date().timeIntervalSince(stopped)
            #expect(down.body.hasPrefix("not ready: session with the peer lost"), "\(down)")
            #expect(tookDown >= 10 && tookDown < 35, "503 after \(tookDown) s")
            #expect(try fetch(s, "/healthz").status == 200)
            let metrics = try Metrics(scrape(s))
            #expect(metrics["onetun_peer_session_up{public_key=\"\(s.peer.peer.publicKey)\"}"] == 0)
            try s.peer.start()
            let started = Date()
            let back = try waitForStatus(s, "/readyz", 200, seconds: 40)
            let tookUp = Date().timeIntervalSince(started)
            #expect(back.body == "ready\n")
            paced.terminate()
            print("onetun readiness: 503 (\(down.body.trimmingCharacters(in: .whitespacesAndNewlines))) \(String(format: "%.1f", tookDown)) s after the peer stopped, 200 again \(String(format: "%.1f", tookUp)) s after it came back")
        }
    }

    /// A fake NOTIFY_SOCKET: READY=1 comes once the listeners are bound (a connection right after it is
    /// accepted), STATUS= says when the handshake is done, WATCHDOG=1 comes every WATCHDOG_USEC/2
    /// (400 ms: about ten in two seconds), and STOPPING=1 at SIGTERM.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func systemdNotificationsArrive() throws {
        try withForwardSession { s in
            try s.startServer(addresses: ["192.168.4.1"])
            let socketPath = s.directory.appendingPathComponent("notify.sock").path
            let notify = try NotifySocket(path: socketPath)
            defer { notify.close() }
            try s.startOnetun(
                s.onetunArguments(["127.0.0.1:18074:192.168.4.1:\(ServicePort.echo)"], extra: []),
                environment: ["NOTIFY_SOCKET": socketPath, "WATCHDOG_USEC": "400000"])
            let onetun = try #require(s.onetun)
            var messages: [(Date, String)] = []
            let deadline = Date().addingTimeInterval(10)
            while !messages.contains(where: { $0.1.hasPrefix("READY=1") }) && Date() < deadline {
                if let m = notify.receive(timeout: 0.5) { messages.append((Date(), m)) }
            }
            let ready = try #require(messages.first(where: { $0.1.hasPrefix("READY=1") }), "\(messages)")
            // From this process, inside the namespace: no interpreter to start first.
            let accepted = try s.namespace.withinNamespace { () -> Bool in
                let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
                defer { Glibc.close(fd) }
                var address = sockaddr_in()
                address.sin_family = sa_family_t(AF_INET)
                address.sin_port = UInt16(18074).bigEndian
                address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
                return withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                } == 0
            }
            #expect(accepted, "connecting right after READY=1 failed")
            // Two seconds of pings from READY=1 on.
            let window = ready.0.addingTimeInterval(2)
            while Date() < window {
                if let m = notify.receive(timeout: window.timeIntervalSinceNow) { messages.append((Date(), m)) }
            }
            let pings = messages.filter { $0.1 == "WATCHDOG=1" && $0.0 >= ready.0 && $0.0 <= window }.count
            #expect((7...12).contains(pings), "\(pings) WATCHDOG=1 in 2 s: \(messages.map(\.1))")
            var statusDone = messages.contains { $0.1.contains("STATUS=handshake done with 1/1 peer") }
            let statusDeadline = Date().addingTimeInterval(10)
            while !statusDone && Date() < statusDeadline {
                if let m = notify.receive(timeout: 0.5) {
                    messages.append((Date(), m))
                    statusDone = m.contains("STATUS=handshake done with 1/1 peer")
                }
            }
            #expect(statusDone, "\(messages.map(\.1))")
            kill(onetun.pid, SIGTERM)
            var stopping = false
            let stopDeadline = Date().addingTimeInterval(5)
            while !stopping && Date() < stopDeadline {
                if let m = notify.receive(timeout: 0.5) { stopping = m == "STOPPING=1" }
            }
            #expect(stopping, "no STOPPING=1")
            #expect(onetun.waitForExit(seconds: 5) && onetun.exitCode == 0)
            print("onetun sd_notify: READY=1 then \(pings) WATCHDOG=1 in 2 s (WATCHDOG_USEC=400000), STATUS and STOPPING=1")
        }
    }

    /// `--log-format json`: every line onetun writes is one JSON object with time (RFC 3339, UTC), level,
    /// label and message; the status report's line breaks come escaped inside its message.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func jsonLogLinesParse() throws {
        try withForwardSession { s in
            try s.startServer(addresses: ["192.168.4.1"])
            try s.startOnetun(s.onetunArguments(
                ["127.0.0.1:18075:192.168.4.1:\(ServicePort.echo)"], extra: ["--log", "debug", "--log-format", "json"]))
            let onetun = try #require(s.onetun)
            try s.waitFor(onetun, "handshake with the peer complete", seconds: 10)
            let echo = try s.client(18075, "echo", ["2", "65536"])
            #expect(echo[int: "ok"] == 2, "\(echo)")
            kill(onetun.pid, SIGUSR1)
            try s.waitFor(onetun, "forward: TCP 127.0.0.1:18075", seconds: 5)
            onetun.terminate()
            let lines = s.onetunLog.split(separator: "\n")
            #expect(lines.count >= 8, "\(s.onetunLog)")
            let time = try Regex(#"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$"#)
            var levels: Set<String> = []
            for line in lines {
                let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
                guard let object else {
                    Issue.record("not a JSON object: \(line)")
                    continue
                }
                let stamp = object["time"] as? String ?? ""
                #expect(stamp.wholeMatch(of: time) != nil, "\(line)")
                #expect(object["label"] as? String == "onetun", "\(line)")
                #expect(object["message"] is String, "\(line)")
                levels.insert(object["level"] as? String ?? "?")
            }
            #expect(levels.isSuperset(of: ["info", "debug"]), "\(levels)")
            let report = lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
                .compactMap { $0["message"] as? String }.first { $0.hasPrefix("status (SIGUSR1):") }
            #expect(report?.contains("\npeer: \(s.peer.peer.publicKey)\n") == true, "\(report ?? "no report")")
        }
    }

    // MARK: - Command line

    @Test(arguments: [
        (["--metrics", "notaport"], "--metrics: 'notaport' is not [host:]port"),
        (["--log-format", "xml"], "--log-format: 'xml' is not json or text"),
    ])
    func badOptionsAreUsageErrors(extra: [String], message: String) throws {
        let key = CommandLineTests.key
        let outcome = try Command.execute(
            [onetunExecutable, "127.0.0.1:1:192.168.4.1:1", "--private-key", key, "--endpoint-public-key", key,
             "--endpoint-addr", "127.0.0.1:1", "--source-peer-ip", "192.168.4.3"] + extra, timeout: 20)
        #expect(outcome.status == 2, "\(outcome.stderr)")
        #expect(outcome.stderr.contains(message), "\(outcome.stderr)")
    }

    // MARK: - Pure parts

    @Test func prometheusTextIsWellFormed() {
        var out = PrometheusText()
        out.family("onetun_example_total", .counter, help: "A help text with a \\ backslash\nand a line feed.")
        out.sample("onetun_example_total", [("forward", "TCP 127.0.0.1:80 -> [fd00::1]:80"), ("note", "a \"quote\", a \\ and\na line")], 42)
        out.family("onetun_example_ratio", .gauge, help: "Ratios.")
        out.sample("onetun_example_ratio", [], 0.25)
        out.sample("onetun_example_ratio", [("k", "é ✓")], Double.infinity)
        out.sample("onetun_example_ratio", [("k", "n")], -Double.infinity)
        out.sample("onetun_example_ratio", [("k", "nan")], Double.nan)
        #expect(out.text == """
            # HELP onetun_example_total A help text with a \\\\ backslash\\nand a line feed.
            # TYPE onetun_example_total counter
            onetun_example_total{forward="TCP 127.0.0.1:80 -> [fd00::1]:80",note="a \\"quote\\", a \\\\ and\\na line"} 42
            # HELP onetun_example_ratio Ratios.
            # TYPE onetun_example_ratio gauge
            onetun_example_ratio 0.25
            onetun_example_ratio{k="é ✓"} +Inf
            onetun_example_ratio{k="n"} -Inf
            onetun_example_ratio{k="nan"} NaN

            """)
        // An empty list writes no family at all (a HELP without samples is noise).
        var empty = PrometheusText()
        empty.family("onetun_none", .gauge, help: "None.", [Int]()) { _ in ([], 0) }
        #expect(empty.text.isEmpty)
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/promtool") {
            let outcome = try? Command.execute(["promtool", "check", "metrics"], input: out.text)
            #expect(outcome?.status == 0, "\(outcome?.stderr ?? "")")
        }
    }

    @Test func jsonLogLinesEscapeWhatTheyMust() throws {
        let message = "quote \" backslash \\ newline \n tab \t cr \r nul \u{0} bell \u{07} esc \u{1B} del \u{7F} é ✓ 𝄞"
        let line = JSONLogLine.format(
            seconds: 1_764_772_906, nanoseconds: 123_456_789, level: "info", label: "onetun", message: message,
            metadata: [("key \"k\"", "value\nline"), ("empty", "")])
        #expect(line.hasSuffix("}\n"))
        #expect(!line.dropLast().contains("\n"), "a raw line feed inside: \(line)")
        #expect(line.contains(#"nul \u0000 bell \u0007 esc \u001b del \u007f é ✓ 𝄞"#), "\(line)")
        #expect(line.hasPrefix(#"{"time":"2025-12-03T14:41:46.123456Z","level":"info","label":"onetun","message":"quote \" backslash \\ newline \n tab \t cr \r"#), "\(line)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["message"] as? String == message)
        #expect(object["level"] as? String == "info")
        #expect((object["metadata"] as? [String: String]) == ["key \"k\"": "value\nline", "empty": ""])
        #expect(JSONLogLine.rfc3339(seconds: 0, nanoseconds: 0) == "1970-01-01T00:00:00.000000Z")
        #expect(JSONLogLine.rfc3339(seconds: 951_782_400, nanoseconds: 999_999_999) == "2000-02-29T00:00:00.999999Z")
    }

    @Test func requestLinesAreParsed() {
        func parse(_ text: String) -> MetricsServer.Request? {
            Array(text.utf8).withUnsafeBytes { MetricsServer.parseRequest($0) }
        }
        #expect(parse("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n") == .request(method: "GET", path: "/metrics"))
        #expect(parse("HEAD /readyz?verbose=1 HTTP/1.0\n\n") == .request(method: "HEAD", path: "/readyz"))
        #expect(parse("GET / HTTP/1.1\r\nA: b\r\n\r\nrest") == .request(method: "GET", path: "/"))
        #expect(parse("GET / HTTP/1.1\r\n") == .incomplete)
        #expect(parse("GET  /metrics HTTP/1.1\r\n\r\n") == nil)
        #expect(parse("GET metrics HTTP/1.1\r\n\r\n") == nil)
        #expect(parse("GET /metrics SPDY/3\r\n\r\n") == nil)
        #expect(Observability.bytes(1023) == "1023 B")
        #expect(Observability.bytes(4 << 20) == "4.00 MiB")
        #expect(Observability.bytes(1536) == "1.50 KiB")
    }

    // MARK: - Helpers

    func fetch(_ s: ForwardSession, _ path: String, method: String = "GET") throws -> (status: Int, body: String) {
        var args = ["curl", "-s", "-S", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"]
        args += method == "HEAD" ? ["-I"] : ["-X", method]
        let outcome = try s.peer.execute(args + ["http://127.0.0.1:\(Self.metricsPort)\(path)"], timeout: 15)
        guard outcome.status == 0, let cut = outcome.stdout.lastIndex(of: "\n") else {
            throw HarnessError("curl \(path): \(outcome.status) \(outcome.stderr)")
        }
        var body = String(outcome.stdout[..<cut])
        // curl -I prints the head: keep only what came after it (nothing).
        if method == "HEAD" { body = body.components(separatedBy: "\r\n\r\n").dropFirst().joined() }
        return (Int(outcome.stdout[outcome.stdout.index(after: cut)...]) ?? 0, body)
    }

    func scrape(_ s: ForwardSession) throws -> String {
        let answer = try fetch(s, "/metrics")
        guard answer.status == 200 else { throw HarnessError("/metrics: \(answer.status) \(answer.body)") }
        return answer.body + "\n"
    }

    func promtool(_ body: String) throws {
        let outcome = try Command.execute(["promtool", "check", "metrics"], input: body, timeout: 20)
        guard outcome.status == 0 else {
            throw HarnessError("promtool check metrics failed (\(outcome.status)): \(outcome.stdout) \(outcome.stderr)\n\(body)")
        }
    }

    func waitForStatus(_ s: ForwardSession, _ path: String, _ status: Int, seconds: Double) throws -> (status: Int, body: String) {
        let deadline = Date().addingTimeInterval(seconds)
        var last = (status: 0, body: "")
        while Date() < deadline {
            last = try fetch(s, path)
            if last.status == status { return last }
            usleep(200_000)
        }
        throw HarnessError("\(path) still \(last.status) (\(last.body)) after \(seconds) s, not \(status)")
    }
}

/// A scrape's samples by `name{labels}` as written.
struct Metrics {
    var values: [String: Double] = [:]

    init(_ text: String) {
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " ") else { continue }
            let value = line[line.index(after: space)...]
            values[String(line[..<space])] = value == "+Inf" ? .infinity : value == "NaN" ? .nan : Double(value)
        }
    }

    subscript(key: String) -> Double? { values[key] }
}

/// The service manager's end of sd_notify: a datagram socket bound to a path.
final class NotifySocket {
    let fd: Int32
    let path: String

    init(path: String) throws {
        self.path = path
        unlink(path)
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw HarnessError("socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { throw HarnessError("bind \(path): \(String(cString: strerror(errno)))") }
    }

    /// The next datagram, or nil after `timeout` seconds.
    func receive(timeout: Double) -> String? {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, Int32(max(0, timeout) * 1000)) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = recv(fd, &buffer, buffer.count, 0)
        return n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : nil
    }

    func close() {
        Glibc.close(fd)
        unlink(path)
    }
}
