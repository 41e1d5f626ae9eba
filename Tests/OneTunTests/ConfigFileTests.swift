import Foundation
import Glibc
import Testing

/// `onetun -c FILE`: a wg-quick file and a wireproxy configuration, run against a real wireguard-go peer in
/// a namespace made by each test; and a table of bad files, each a FILE:LINE message and exit status 2.
@Suite(.serialized) struct ConfigFileTests {
    static var needsNamespaces: Bool { ForwarderTests.needsNamespaces }

    /// The wg-quick file a VPN provider would hand out for this session's peer, written by a shell
    /// heredoc as a user would; `extra` goes at the end of [Interface].
    func writeWGQuick(_ s: ForwardSession, name: String = "wg0.conf", extra: String = "") throws -> URL {
        let file = s.directory.appendingPathComponent(name)
        let ourKey = try String(contentsOf: s.peer.privateKeyFile, encoding: .utf8).trimmed
        let script = """
            umask 077
            cat > '\(file.path)' <<EOF
            # from the provider
            [Interface]
            PrivateKey = \(ourKey)
            Address = 192.168.4.3/32, fd00:4::3/128
            DNS = 192.168.4.1
            PostUp = iptables -I OUTPUT -j ACCEPT   # a kernel matter: ignored with a warning
            \(extra)

            [Peer]
            PublicKey = \(s.peer.peer.publicKey)
            AllowedIPs = 192.168.4.0/24
            AllowedIPs = fd00:4::/64
            Endpoint = 127.0.0.1:\(s.peer.peer.listenPort)
            PersistentKeepalive = 25
            EOF
            """
        try Command.run(["sh", "-c", script])
        return file
    }

    /// The same tunnel from a wg-quick file as from flags: 4 MiB up over IPv4 and down over IPv6 (both
    /// addresses of the file's Address line, in one process), SHA-256-equal; the PostUp line is named in
    /// one warning.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(2)))
    func aWGQuickFileRunsTheTunnel() throws {
        try withForwardSession { s in
            let size = 4 << 20
            let (file, digest) = try s.randomFile("download.bin", size: size)
            try s.startServer(addresses: ["192.168.4.1", "fd00:4::1"], file: file)
            let conf = try writeWGQuick(s)
            try s.startOnetun([
                "-c", conf.path, "127.0.0.1:18001:192.168.4.1:\(ServicePort.sink)",
                "127.0.0.1:18002:[fd00:4::1]:\(ServicePort.source)", "--log", "debug",
            ])
            let upload = try s.client(18001, "upload", [file.path])
            #expect(upload[string: "digest"] == digest, "upload: \(upload)")
            let download = try s.client(18002, "download", [String(size)])
            #expect(download[string: "digest"] == digest, "download: \(download)")
            let log = s.onetunLog
            #expect(log.contains("as 192.168.4.3 and fd00:4::3"), "\(log.suffix(3000))")
            #expect(log.components(separatedBy: "PostUp").count == 2, "one warning naming PostUp: \(log.suffix(3000))")
            #expect(!log.contains("world accessible"), "\(log.suffix(3000))")
        }
    }

    /// A wireproxy configuration as wireproxy users have it: WGConfig naming the wg-quick file (beside
    /// it), a TCPClientTunnel, a TCPServerTunnel and a UDPProxyTunnel, with a `$VAR` value. Each tunnel
    /// carries traffic.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(2)))
    func aWireproxyConfigurationWorksAsIs() throws {
        try withForwardSession { s in
            let size = 2 << 20
            let (file, digest) = try s.randomFile("download.bin", size: size)
            // The TCP server answers inside the tunnel (192.168.4.1) and, for the remote forward, on
            // 127.0.0.1, onetun's own machine here.
            try s.startServer(addresses: ["192.168.4.1", "127.0.0.1"], file: file)
            _ = try s.startUDPServer(addresses: ["192.168.4.1"])
            _ = try writeWGQuick(s, name: "wg0.conf")
            let conf = s.directory.appendingPathComponent("wireproxy.conf")
            try """
                WGConfig = wg0.conf

                [TCPClientTunnel]
                BindAddress = 127.0.0.1:18021
                Target = $SINK_TARGET

                [TCPServerTunnel]
                ListenPort = 5555
                Target = 127.0.0.1:\(ServicePort.source)

                [UDPProxyTunnel]
                BindAddress = 127.0.0.1:18022
                Target = 192.168.4.1:\(UDPServicePort.echo)
                InactivityTimeout = 30
                """.write(to: conf, atomically: true, encoding: .utf8)
            chmod(conf.path, 0o600)
            try s.startOnetun(["-c", conf.path, "--log", "debug"], environment: ["SINK_TARGET": "192.168.4.1:\(ServicePort.sink)"])
            let upload = try s.client(18021, "upload", [file.path])
            #expect(upload[string: "digest"] == digest, "upload: \(upload)")
            try s.waitFor(try #require(s.onetun), "handshake with the peer complete", seconds: 10)
            let download = try s.client(5555, "download", [String(size)], host: "192.168.4.3")
            #expect(download[string: "digest"] == digest, "remote download: \(download)")
            let echo = try s.udpClient(18022, "echo", ["4", "200", "4"])
            #expect(echo[int: "ok"] == 200 && echo[int: "foreign"] == 0, "\(echo)")
        }
    }

    /// The command line wins over the file: a wrong Endpoint in the file, the right one as a flag.
    @Test(.enabled(if: needsNamespaces, TestNamespace.skipReason), .timeLimit(.minutes(2)))
    func theCommandLineWinsOverTheFile() throws {
        try withForwardSession { s in
            try s.startServer(addresses: ["192.168.4.1"])
            let conf = try writeWGQuick(s)
            let text = try String(contentsOf: conf, encoding: .utf8)
                .replacingOccurrences(of: "Endpoint = 127.0.0.1:\(s.peer.peer.listenPort)", with: "Endpoint = 127.0.0.1:9")
            try text.write(to: conf, atomically: true, encoding: .utf8)
            try s.startOnetun([
                "-c", conf.path, "127.0.0.1:18003:192.168.4.1:\(ServicePort.echo)",
                "--endpoint-addr", "127.0.0.1:\(s.peer.peer.listenPort)",
            ])
            let echo = try s.client(18003, "echo", ["4", String(64 << 10)])
            #expect(echo[int: "ok"] == 4, "\(echo)")
        }
    }

    func onetun(_ args: [String], environment: [String: String] = [:]) throws -> Command.Outcome {
        try Command.execute([onetunExecutable] + args, environment: environment, timeout: 20)
    }

    static let key = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
    static let peerKey = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="

    /// Bad files: each gives one line naming FILE:LINE (or FILE), and exit status 2; nothing starts.
    @Test(arguments: [
        ("[Interface]\nPrivateKey = \(key)\nAddress = 192.168.4.3\nMTU = lots\n[Peer]\nPublicKey = \(peerKey)\nEndpoint = 127.0.0.1:1\n", ":4: MTU"),
        ("[Interface]\nPrivateKey = nope\n", ":2: PrivateKey"),
        ("[Interface]\nPrivateKey = \(key)\nAddress = 192.168.4.3\n[Peer]\nPublicKey = \(peerKey)\nEndpoint = 127.0.0.1:1\n[Peer]\nPublicKey = \(key)\nEndpoint = 127.0.0.1:2\n", "--ping checks a tunnel with one peer"),
        ("[Interface]\nPrivateKey = \(key)\nAddress = 192.168.4.3\n[Peer]\nPublicKey = \(peerKey)\nEndpoint = 127.0.0.1:1\n[Peer]\nPublicKey = \(key)\nAllowedIPs = 10.0.0.0/8\n", ":7: [Peer] has no Endpoint and there is no ListenPort"),
        ("[Interface]\nPrivateKey = \(key)\nAddress = 192.168.4.3\n[Peer]\nPublicKey = \(peerKey)\nEndpoint = 127.0.0.1:1\n[Peer]\nPublicKey = \(key)\nEndpoint = [::1]:2\n", ":7: Endpoint: [::1]:2 is not of the IP version"),
        ("[Interface]\nPrivateKey = \(key)\nAddress = 192.168.4.3\n[Peer]\nPublicKey = \(peerKey)\nAllowedIPs = 0.0.0.0/0\n", ":4: [Peer] has no Endpoint"),
        ("[Interface]\nAddress = 192.168.4.3\n[Peer]\nPublicKey = \(peerKey)\nEndpoint = 127.0.0.1:1\n", "[Interface] has no PrivateKey"),
        ("[Interface]\nPrivateKey = \(key)\nAddress = 192.168.4.3\n[Peer]\nPublicKey = \(peerKey)\nEndpoint = 127.0.0.1:1\n[OneTun]\nkeep-alive = often\n", ":8: --keep-alive"),
        ("[Interface]\nPrivateKey = \(key)\nAddress = 192.168.4.3\n[Peer]\nPublicKey = \(peerKey)\nEndpoint = 127.0.0.1:1\n[OneTun]\nturbo = on\n", ":8: turbo: not an option"),
        ("[Interface]\nPrivateKey = \(key)\nAddress = 192.168.4.3\n[Peer]\nPublicKey = \(peerKey)\nEndpoint = 127.0.0.1:1\n[SNI]\nBindAddress = 127.0.0.1:1080\n", ":7: [SNI] is not supported yet"),
        ("[Interface]\nPrivateKey = \(key)\nAddress = 192.168.4.3\n[Peer]\nPublicKey = \(peerKey)\nEndpoint = 127.0.0.1:1\n[Forward]\nLocal = 8080:nowhere\n", ":8: Local: invalid port forward"),
        ("[Interface]\nPrivateKey = \(key)\nAddress = 192.168.4.3\n[Peer]\nPublicKey = \(peerKey)\nAllowedIPs = 10.0.0.0/8\nEndpoint = 127.0.0.1:1\n[Forward]\nLocal = 18009:192.168.4.1:80\n", "192.168.4.1 is in no peer's AllowedIPs (10.0.0.0/8)"),
        ("PrivateKey = \(key)\n", ":1: PrivateKey"),
    ])
    func aBadFileIsAUsageErrorNamingItsLine(text: String, message: String) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("onetun-conf-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let conf = directory.appendingPathComponent("bad.conf")
        try text.write(to: conf, atomically: true, encoding: .utf8)
        chmod(conf.path, 0o600)
        let outcome = try onetun(["-c", conf.path, "--ping", "192.168.4.1"])
        #expect(outcome.status == 2, "\(outcome.stderr)")
        let lines = outcome.stderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].contains(message), "\(outcome.stderr)")
        #expect(lines.first?.contains(conf.path) == true, "\(outcome.stderr)")
    }

    /// The command line and the environment win over the file, with the key and the key file one
    /// setting: each run must get past the settings to the missing forward.
    @Test func precedenceOverTheFile() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("onetun-conf-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let badKey = directory.appendingPathComponent("bad.key")
        try "garbage\n".write(to: badKey, atomically: true, encoding: .utf8)
        chmod(badKey.path, 0o600)
        let conf = directory.appendingPathComponent("wg.conf")
        try """
            [Interface]
            PrivateKey = \(Self.key)
            Address = 192.168.4.3
            ListenPort = 51999
            [Peer]
            PublicKey = \(Self.peerKey)
            Endpoint = 127.0.0.1:1
            [OneTun]
            private-key-file = \(badKey.path)
            keep-alive = often
            """.write(to: conf, atomically: true, encoding: .utf8)
        chmod(conf.path, 0o600)
        for (args, environment) in [
            // The environment's key beats the file's key file; the command line's keep-alive its own.
            (["-c", conf.path, "--keep-alive", "5"], ["ONETUN_PRIVATE_KEY": Self.key]),
            // A bind address with its own port beats the file's ListenPort.
            (["-c", conf.path, "--endpoint-bind-addr", "0.0.0.0:40000", "--private-key", Self.key], ["ONETUN_KEEP_ALIVE": "5"]),
        ] {
            let outcome = try onetun(args, environment: environment)
            #expect(outcome.status == 2 && outcome.stderr.contains("no port forward given"), "\(args): \(outcome.stderr)")
        }
        // Without them, the file's values are used, and their errors name the file's lines.
        let outcome = try onetun(["-c", conf.path, "--private-key", Self.key])
        #expect(outcome.stderr.contains("wg.conf:10: --keep-alive: 'often'"), "\(outcome.stderr)")
        let keyFile = try onetun(["-c", conf.path, "--keep-alive", "5"])
        #expect(keyFile.stderr.contains("wg.conf:9: --private-key-file \(badKey.path): a key is 32 bytes"), "\(keyFile.stderr)")
    }

    /// A file others may read gets wg-quick's warning (on stderr before anything else; the run then
    /// stops at a missing forward, which is the point: the warning comes first).
    @Test func aWorldReadableFileIsWarnedAbout() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("onetun-conf-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let conf = directory.appendingPathComponent("open.conf")
        try "[Interface]\nPrivateKey = \(Self.key)\nAddress = 192.168.4.3\n[Peer]\nPublicKey = \(Self.peerKey)\nEndpoint = 127.0.0.1:1\n"
            .write(to: conf, atomically: true, encoding: .utf8)
        chmod(conf.path, 0o644)
        let outcome = try onetun(["-c", conf.path])
        #expect(outcome.status == 2, "\(outcome.stderr)")
        #expect(outcome.stderr.contains("`\(conf.path)' is world accessible"), "\(outcome.stderr)")
        #expect(outcome.stderr.contains("no port forward given"), "\(outcome.stderr)")
    }
}
