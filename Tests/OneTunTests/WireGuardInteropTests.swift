import Foundation
import Testing

/// The core and the libuv loop against a real wireguard-go peer in a namespace made by the test: the
/// handshake runs over a real UDP socket, and ICMP echo through the tunnel must come back from the
/// peer's kernel.
@Suite(.serialized) struct WireGuardInteropTests {
    static let skipReason: Comment = "needs root to create network namespaces"

    func ping(_ peer: PeerNamespace, source: String, target: String, count: Int = 3,
              extra: [String] = [], peerKey: String? = nil) throws -> PeerNamespace.Outcome {
        try peer.execute([
            onetunExecutable, "--private-key-file", peer.ourPrivateKeyFile.path,
            "--endpoint-public-key", peerKey ?? peer.peerPublicKey, "--endpoint-addr", "127.0.0.1:\(peer.listenPort)",
            "--source-peer-ip", source, "--ping", target, "--ping-count", String(count),
        ] + extra, timeout: 30)
    }

    func replies(_ outcome: PeerNamespace.Outcome, from target: String) -> Int {
        outcome.stdout.split(separator: "\n").filter { $0.contains("bytes from \(target): icmp_seq=") }.count
    }

    @Test(.enabled(if: PeerNamespace.canCreateNamespaces, skipReason))
    func echoOverIPv4() throws {
        let peer = try PeerNamespace()
        defer { peer.close() }
        let outcome = try ping(peer, source: "192.168.4.3", target: "192.168.4.2")
        #expect(outcome.status == 0, "\(outcome.stderr)")
        #expect(replies(outcome, from: "192.168.4.2") == 3, "\(outcome.stdout)")
        let dump = try peer.peerDump()
        #expect(Int(dump[4]) ?? 0 > 0, "wireguard-go saw no handshake: \(dump)")
        #expect(Int(dump[5]) ?? 0 > 0 && Int(dump[6]) ?? 0 > 0, "no bytes moved: \(dump)")
    }

    @Test(.enabled(if: PeerNamespace.canCreateNamespaces, skipReason))
    func echoOverIPv6() throws {
        let peer = try PeerNamespace()
        defer { peer.close() }
        let outcome = try ping(peer, source: "fd00:4::3", target: "fd00:4::2")
        #expect(outcome.status == 0, "\(outcome.stderr)")
        #expect(replies(outcome, from: "fd00:4::2") == 3, "\(outcome.stdout)")
    }

    @Test(.enabled(if: PeerNamespace.canCreateNamespaces, skipReason))
    func presharedKeyAndRepeatedSessions() throws {
        let psk = try PeerNamespace.shell(["wg", "genpsk"]).trimmed
        let peer = try PeerNamespace(presharedKey: psk)
        defer { peer.close() }
        // A second run makes a new handshake with a later TAI64N timestamp, which the peer must accept.
        for _ in 0..<2 {
            let outcome = try ping(peer, source: "192.168.4.3", target: "192.168.4.2", count: 2, extra: ["--preshared-key", psk])
            #expect(outcome.status == 0, "\(outcome.stderr)")
            #expect(replies(outcome, from: "192.168.4.2") == 2, "\(outcome.stdout)")
        }
    }

    @Test(.enabled(if: PeerNamespace.canCreateNamespaces, skipReason))
    func wrongKeysGetNoReply() throws {
        let peer = try PeerNamespace()
        defer { peer.close() }
        // A preshared key the peer does not have: the handshake response cannot be authenticated.
        let psk = try PeerNamespace.shell(["wg", "genpsk"]).trimmed
        let outcome = try ping(peer, source: "192.168.4.3", target: "192.168.4.2", count: 1, extra: ["--preshared-key", psk])
        #expect(outcome.status == 1)
        #expect(replies(outcome, from: "192.168.4.2") == 0)
        #expect(outcome.stdout.contains("1 packets transmitted, 0 received"))
    }

    @Test(.enabled(if: PeerNamespace.canCreateNamespaces, skipReason))
    func peerPingsUsThroughTheTunnel() throws {
        let peer = try PeerNamespace()
        defer { peer.close() }
        // onetun runs for about eight seconds (its own pings); meanwhile the peer's kernel pings our address.
        let onetun = Process()
        onetun.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        onetun.arguments = ["netns", "exec", peer.name, onetunExecutable, "--private-key-file", peer.ourPrivateKeyFile.path,
                            "--endpoint-public-key", peer.peerPublicKey, "--endpoint-addr", "127.0.0.1:\(peer.listenPort)",
                            "--source-peer-ip", "192.168.4.3", "--ping", "192.168.4.2", "--ping-count", "5"]
        onetun.standardOutput = FileHandle.nullDevice
        onetun.standardError = FileHandle.nullDevice
        try onetun.run()
        defer {
            if onetun.isRunning { kill(onetun.processIdentifier, SIGKILL) }
            onetun.waitUntilExit()
        }
        usleep(500_000)
        let ping = try peer.execute(["ping", "-c", "3", "-i", "0.5", "-W", "2", "192.168.4.3"], timeout: 15)
        #expect(ping.status == 0, "\(ping.stdout) \(ping.stderr)")
        #expect(ping.stdout.contains("3 received"), "\(ping.stdout)")
        let ping6 = try peer.execute(["ping", "-6", "-c", "2", "-i", "0.5", "-W", "2", "fd00:4::3"], timeout: 15)
        // Our interface only has the IPv4 address in this run, so the IPv6 echo must go unanswered.
        #expect(!ping6.stdout.contains(" 2 received"), "\(ping6.stdout)")
    }
}
