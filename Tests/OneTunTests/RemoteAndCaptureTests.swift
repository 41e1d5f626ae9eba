import Foundation
import Glibc
import Testing

/// Remote port forwards, packet capture, an IPv6 endpoint and IPv4/IPv6 crossings, end to end against a
/// real wireguard-go peer in a namespace made by each test.
///
/// For a remote forward the namespace plays both roles: its 127.0.0.1 stands for onetun's own machine,
/// where the local servers listen, and a client connecting to 192.168.4.3 (onetun's address inside the
/// tunnel) goes out through the wireguard-go interface, from 192.168.4.1, like any host on the WireGuard side.
@Suite(.serialized) struct RemoteAndCaptureTests {
    static var needsNamespaces: Bool { ForwarderTests.needsNamespaces }

    func seconds(_ result: CheckResult) -> String { String(format: "%.2f s", result[double: "seconds"] ?? -1) }

    /// wireguard-go has no endpoint for us until our first handshake reaches it (it is not given one), so
    /// a connection from the WireGuard side can only start once onetun has made the handshake, which it
    /// does at start.
    func waitForHandshake(_ s: ForwardSession) throws {
        try s.waitFor(try #require(s.onetun), "handshake with the peer complete", seconds: 10)
    }

    // MARK: - Remote forwards

    /// `-r 192.168.4.3:5555:127.0.0.1:<sink>` and `--remote 5556:127.0.0.1:<source>`: a client on the
    /// WireGuard side uploads 16 MiB to the local sink and downloads 16 MiB from the local source.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(2)))
    func remoteTCPForwardSixteenMebibytesEachWay() throws {
        try withForwardSession { s in
            let size = 16 << 20
            let (file, digest) = try s.randomFile("download.bin", size: size)
            try s.startServer(addresses: ["127.0.0.1"], file: file)
            try s.startOnetun(s.onetunArguments([
                "-r", "192.168.4.3:5555:127.0.0.1:\(ServicePort.sink)", "--remote", "5556:127.0.0.1:\(ServicePort.source)",
            ], extra: []))
            #expect(s.onetunLog.contains("forwarding remote TCP"), "\(s.onetunLog)")
            try waitForHandshake(s)
            let upload = try s.client(5555, "upload", [file.path], host: "192.168.4.3")
            #expect(upload[int: "sent"] == size, "\(upload)")
            #expect(upload[string: "digest"] == digest, "upload: \(upload)")
            let download = try s.client(5556, "download", [String(size)], host: "192.168.4.3")
            #expect(download[int: "received"] == size, "\(download)")
            #expect(download[string: "digest"] == digest, "download: \(download)")
            print("onetun remote forward: 16 MiB up in \(seconds(upload)), 16 MiB down in \(seconds(download))")
        }
    }

    /// `--remote 5557:127.0.0.1:<echo>:UDP`: 1,000 datagrams from 8 sockets on the WireGuard side to
    /// 192.168.4.3:5557; each reply must come back to the socket that sent it, byte for byte.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func remoteUDPForwardEchoesToEachSocket() throws {
        try withForwardSession { s in
            try s.startRemoteUDPEcho(address: "127.0.0.1", port: 7007)
            try s.startOnetun(s.onetunArguments(["--remote", "5557:127.0.0.1:7007:UDP"], extra: []))
            #expect(s.onetunLog.contains("forwarding remote UDP"), "\(s.onetunLog)")
            try waitForHandshake(s)
            let echo = try s.remoteUDPEcho(host: "192.168.4.3", port: 5557, clients: 8, total: 1000, window: 4)
            #expect(echo[int: "sourcePorts"] == 8, "\(echo)")
            #expect(echo[int: "sent"] == 1000, "\(echo)")
            #expect(echo[int: "foreign"] == 0, "a socket got another socket's datagram: \(echo)")
            #expect(echo[int: "corrupt"] == 0 && echo[int: "unexpected"] == 0, "\(echo)")
            #expect(echo[int: "ok"] == 1000 && echo[int: "lost"] == 0, "\(echo)")
            #expect(echo[int: "clientsAllOk"] == 8, "\(echo)")
            print("onetun remote UDP forward: 1,000 datagrams from 8 sockets echoed in \(seconds(echo))")
        }
    }

    /// Remote forwards given only as ONETUN_REMOTE_PORT_FORWARD_1 (TCP) and _2 (UDP), no arguments.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func remoteForwardsFromTheEnvironment() throws {
        try withForwardSession { s in
            try s.startServer(addresses: ["127.0.0.1"])
            try s.startRemoteUDPEcho(address: "127.0.0.1", port: 7007)
            try s.startOnetun(s.onetunArguments([], extra: []), environment: [
                "ONETUN_REMOTE_PORT_FORWARD_1": "5555:127.0.0.1:\(ServicePort.echo)",
                "ONETUN_REMOTE_PORT_FORWARD_2": "192.168.4.3:5557:127.0.0.1:7007:UDP",
            ])
            #expect(s.onetunLog.contains("forwarding remote TCP"), "\(s.onetunLog)")
            #expect(s.onetunLog.contains("forwarding remote UDP"), "\(s.onetunLog)")
            try waitForHandshake(s)
            let tcp = try s.client(5555, "echo", ["4", String(1 << 20)], host: "192.168.4.3")
            #expect(tcp[int: "ok"] == 4, "\(tcp)")
            let udp = try s.remoteUDPEcho(host: "192.168.4.3", port: 5557, clients: 2, total: 200, window: 4)
            #expect(udp[int: "ok"] == 200 && udp[int: "foreign"] == 0 && udp[int: "corrupt"] == 0, "\(udp)")
        }
    }

    // MARK: - Packet capture

    /// `--pcap FILE` with a TCP forward to an HTTP server on 192.168.4.1: while onetun runs the file
    /// already holds the SYN; after SIGINT (exit 0) it holds the handshake, the request and the response.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func pcapHoldsHandshakeAndPayload() throws {
        try withForwardSession { s in
            let www = s.directory.appendingPathComponent("www")
            try FileManager.default.createDirectory(at: www, withIntermediateDirectories: true)
            let marker = "onetun-pcap-marker-\(randomHex(16))"
            try (marker + "\n").write(to: www.appendingPathComponent("payload.txt"), atomically: true, encoding: .utf8)
            let http = try s.namespace.spawn(
                ["python3", "-u", "-m", "http.server", "8080", "--bind", "192.168.4.1", "--directory", www.path],
                logName: "http.log")
            defer { http.terminate() }
            try s.waitFor(http, "Serving HTTP", seconds: 10)
            let capture = s.directory.appendingPathComponent("capture.pcap")
            try s.startOnetun(s.onetunArguments(["127.0.0.1:18080:192.168.4.1:8080"], extra: ["--pcap", capture.path]))

            let curl = try s.peer.execute(["curl", "-sS", "--max-time", "10", "http://127.0.0.1:18080/payload.txt"], timeout: 15)
            try #require(curl.status == 0, "curl: \(curl.stderr)")
            #expect(curl.stdout.trimmed == marker, "curl got '\(curl.stdout)'")

            // While onetun still runs: the SYN is already in the file.
            var running: [CapturedSegment] = []
            let deadline = Date().addingTimeInterval(5)
            repeat {
                running = try captured(capture)
                if running.contains(where: { $0.isSYN && $0.destinationPort == 8080 }) { break }
                usleep(100_000)
            } while Date() < deadline
            #expect(running.contains { $0.isSYN && $0.source == "192.168.4.3" && $0.destinationPort == 8080 },
                    "no SYN in the capture while onetun runs: \(running)")

            let onetun = try #require(s.onetun)
            kill(onetun.pid, SIGINT)
            #expect(onetun.waitForExit(seconds: 5), "onetun still running after SIGINT")
            #expect(onetun.exitCode == 0, "\(s.onetunLog)")
            #expect(s.onetunLog.contains("packets captured"), "\(s.onetunLog)")

            let segments = try captured(capture)
            let syn = try #require(segments.first { $0.isSYN && $0.source == "192.168.4.3" && $0.destinationPort == 8080 },
                                   "\(segments)")
            let synAck = segments.first {
                $0.isSYNACK && $0.source == "192.168.4.1" && $0.sourcePort == 8080 && $0.destinationPort == syn.sourcePort
            }
            #expect(synAck != nil, "no SYN/ACK: \(segments)")
            let ack = segments.first {
                !$0.syn && $0.ack && $0.source == "192.168.4.3" && $0.sourcePort == syn.sourcePort && $0.destinationPort == 8080
            }
            #expect(ack != nil, "no ACK of the handshake: \(segments)")
            let request = String(decoding: segments.filter { $0.source == "192.168.4.3" }.flatMap(\.payload), as: UTF8.self)
            let response = String(decoding: segments.filter { $0.source == "192.168.4.1" }.flatMap(\.payload), as: UTF8.self)
            #expect(request.hasPrefix("GET /payload.txt HTTP/1.1\r\n"), "request in the capture: '\(request)'")
            #expect(response.hasPrefix("HTTP/1.0 200 OK\r\n"), "response in the capture: '\(response.prefix(200))'")
            #expect(response.contains(marker), "the file's content is not in the capture: '\(response)'")
            print("onetun --pcap: \(segments.count) TCP segments captured")
        }
    }

    /// One TCP segment as tshark shows it.
    struct CapturedSegment: CustomStringConvertible {
        var source: String
        var destination: String
        var sourcePort: Int
        var destinationPort: Int
        var syn: Bool
        var ack: Bool
        var payload: [UInt8]
        var isSYN: Bool { syn && !ack }
        var isSYNACK: Bool { syn && ack }
        var description: String {
            "\(source):\(sourcePort)>\(destination):\(destinationPort)\(syn ? " SYN" : "")\(ack ? " ACK" : "") \(payload.count)B"
        }
    }

    /// The TCP segments in a pcap file, read by tshark (its standard error, a warning about running as
    /// root, is ignored).
    func captured(_ file: URL) throws -> [CapturedSegment] {
        let outcome = try Command.execute([
            "tshark", "-r", file.path, "-Y", "tcp", "-T", "fields", "-E", "separator=|",
            "-e", "ip.src", "-e", "ip.dst", "-e", "tcp.srcport", "-e", "tcp.dstport",
            "-e", "tcp.flags.syn", "-e", "tcp.flags.ack", "-e", "tcp.payload",
        ], timeout: 20)
        guard outcome.status == 0 else { throw HarnessError("tshark -r \(file.path) failed (\(outcome.status)): \(outcome.stderr)") }
        func flag(_ text: Substring) -> Bool { text == "1" || text.lowercased() == "true" }
        return outcome.stdout.split(separator: "\n").compactMap { line in
            let f = line.split(separator: "|", omittingEmptySubsequences: false)
            guard f.count >= 7, let sport = Int(f[2]), let dport = Int(f[3]) else { return nil }
            return CapturedSegment(
                source: String(f[0]), destination: String(f[1]), sourcePort: sport, destinationPort: dport,
                syn: flag(f[4]), ack: flag(f[5]), payload: hexBytes(f[6]))
        }
    }

    /// "47455420" (tshark's tcp.payload; older versions put colons between bytes) to bytes.
    func hexBytes(_ text: Substring) -> [UInt8] {
        let digits = Array(text.filter(\.isHexDigit).utf8)
        return stride(from: 0, to: digits.count - 1, by: 2).compactMap { i in
            UInt8(String(decoding: digits[i...i + 1], as: UTF8.self), radix: 16)
        }
    }

    // MARK: - IPv6 endpoint and IPv4/IPv6 crossings

    /// `--endpoint-addr [::1]:PORT --endpoint-bind-addr [::1]:19999`: the tunnel runs over IPv6 (wireguard-go
    /// sees our endpoint as [::1]:19999) and a TCP forward carries data both ways. 19999 is below the peer's
    /// random port range, so it cannot collide with it.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func ipv6EndpointForwards() throws {
        try withForwardSession { s in
            let size = 4 << 20
            let (file, digest) = try s.randomFile("upload.bin", size: size)
            try s.startServer(addresses: ["192.168.4.1"])
            try s.startOnetun([
                "127.0.0.1:18001:192.168.4.1:\(ServicePort.sink)", "127.0.0.1:18003:192.168.4.1:\(ServicePort.echo)",
                "--private-key-file", s.peer.privateKeyFile.path, "--endpoint-public-key", s.peer.peer.publicKey,
                "--endpoint-addr", "[::1]:\(s.peer.peer.listenPort)", "--endpoint-bind-addr", "[::1]:19999",
                "--source-peer-ip", "192.168.4.3",
            ])
            let upload = try s.client(18001, "upload", [file.path])
            #expect(upload[string: "digest"] == digest, "upload: \(upload)")
            let echo = try s.client(18003, "echo", ["4", String(1 << 20)])
            #expect(echo[int: "ok"] == 4, "\(echo)")
            let endpoints = try s.namespace.run(["wg", "show", s.peer.peer.interface, "endpoints"])
            #expect(endpoints.contains("[::1]:19999"), "wireguard-go's view of our endpoint: \(endpoints)")
            print("onetun over an IPv6 endpoint: 4 MiB up in \(seconds(upload)), echo in \(seconds(echo))")
        }
    }

    /// An IPv6 listener ([::1]:8081) forwarding to an IPv4 destination inside the tunnel.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func ipv6ListenerToIPv4Destination() throws {
        try withForwardSession { s in
            try s.startServer(addresses: ["192.168.4.1"])
            try s.startOnetun(s.onetunArguments(["[::1]:8081:192.168.4.1:\(ServicePort.echo)"], source: "192.168.4.3"))
            let echo = try s.client(8081, "echo", ["4", String(1 << 20)], host: "::1")
            #expect(echo[int: "ok"] == 4, "\(echo)")
            print("onetun [::1] -> 192.168.4.1: 4 x 1 MiB echoed in \(seconds(echo))")
        }
    }

    /// An IPv4 listener (127.0.0.1:8082) forwarding to an IPv6 destination inside the tunnel.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(1)))
    func ipv4ListenerToIPv6Destination() throws {
        try withForwardSession { s in
            try s.startServer(addresses: ["fd00:4::1"])
            try s.startOnetun(s.onetunArguments(["127.0.0.1:8082:[fd00:4::1]:\(ServicePort.echo)"], source: "fd00:4::3"))
            let echo = try s.client(8082, "echo", ["4", String(1 << 20)])
            #expect(echo[int: "ok"] == 4, "\(echo)")
            print("onetun 127.0.0.1 -> [fd00:4::1]: 4 x 1 MiB echoed in \(seconds(echo))")
        }
    }
}
