import Foundation
import Glibc
import Testing

/// The onetun executable (core + libuv loop) against a real wireguard-go peer in a namespace made by the
/// test: the handshake runs over a real UDP socket, and ICMP echo through the tunnel must come back from
/// the peer's kernel. (WireGuardTunnelInteropTests drives the core in-process instead.)
@Suite(.serialized) struct WireGuardInteropTests {
    func ping(_ peer: OneTunPeer, source: String, target: String, count: Int = 3, extra: [String] = []) throws -> Command.Outcome {
        try peer.execute([onetunExecutable] + peer.tunnelArguments + [
            "--source-peer-ip", source, "--ping", target, "--ping-count", String(count),
        ] + extra, timeout: 30)
    }

    func replies(_ outcome: Command.Outcome, from target: String) -> Int {
        outcome.stdout.split(separator: "\n").filter { $0.contains("bytes from \(target): icmp_seq=") }.count
    }

    @Test(.enabled(if: TestNamespace.canCreateNamespaces, TestNamespace.skipReason))
    func echoOverIPv4() throws {
        let peer = try OneTunPeer()
        defer { peer.close() }
        let outcome = try ping(peer, source: "192.168.4.3", target: "192.168.4.1")
        #expect(outcome.status == 0, "\(outcome.stderr)")
        #expect(replies(outcome, from: "192.168.4.1") == 3, "\(outcome.stdout)")
        let status = try peer.peer.peerStatus()
        #expect(status.latestHandshake > 0, "wireguard-go saw no handshake: \(status)")
        #expect(status.receivedBytes > 0 && status.sentBytes > 0, "no bytes moved: \(status)")
    }

    @Test(.enabled(if: TestNamespace.canCreateNamespaces, TestNamespace.skipReason))
    func echoOverIPv6() throws {
        let peer = try OneTunPeer()
        defer { peer.close() }
        let outcome = try ping(peer, source: "fd00:4::3", target: "fd00:4::1")
        #expect(outcome.status == 0, "\(outcome.stderr)")
        #expect(replies(outcome, from: "fd00:4::1") == 3, "\(outcome.stdout)")
    }

    @Test(.enabled(if: TestNamespace.canCreateNamespaces, TestNamespace.skipReason))
    func presharedKeyAndRepeatedSessions() throws {
        let psk = try Command.run(["wg", "genpsk"]).trimmed
        let peer = try OneTunPeer(presharedKey: psk)
        defer { peer.close() }
        // A second run makes a new handshake with a later TAI64N timestamp, which the peer must accept.
        for _ in 0..<2 {
            let outcome = try ping(peer, source: "192.168.4.3", target: "192.168.4.1", count: 2, extra: ["--preshared-key", psk])
            #expect(outcome.status == 0, "\(outcome.stderr)")
            #expect(replies(outcome, from: "192.168.4.1") == 2, "\(outcome.stdout)")
        }
    }

    @Test(.enabled(if: TestNamespace.canCreateNamespaces, TestNamespace.skipReason))
    func wrongKeysGetNoReply() throws {
        let peer = try OneTunPeer()
        defer { peer.close() }
        // A preshared key the peer does not have: the handshake response cannot be authenticated.
        let psk = try Command.run(["wg", "genpsk"]).trimmed
        let outcome = try ping(peer, source: "192.168.4.3", target: "192.168.4.1", count: 1, extra: ["--preshared-key", psk])
        #expect(outcome.status == 1)
        #expect(replies(outcome, from: "192.168.4.1") == 0)
        #expect(outcome.stdout.contains("1 packets transmitted, 0 received"))
    }

    @Test(.enabled(if: TestNamespace.canCreateNamespaces, TestNamespace.skipReason))
    func peerPingsUsThroughTheTunnel() throws {
        let peer = try OneTunPeer()
        defer { peer.close() }
        // onetun runs for about eight seconds (its own pings); meanwhile the peer's kernel pings our address.
        let onetun = try peer.namespace.spawn(
            [onetunExecutable] + peer.tunnelArguments + ["--source-peer-ip", "192.168.4.3", "--ping", "192.168.4.1", "--ping-count", "5"],
            logName: "onetun.log")
        defer { _ = onetun.terminate() }
        // The peer can reach us once the session is up (it does not know our endpoint before).
        for _ in 0..<250 where !onetun.output.contains("handshake with the peer complete") { usleep(20_000) }
        let ping = try peer.execute(["ping", "-c", "3", "-i", "0.5", "-W", "2", "192.168.4.3"], timeout: 15)
        #expect(ping.status == 0, "\(ping.stdout) \(ping.stderr) \(onetun.output)")
        #expect(ping.stdout.contains("3 received"), "\(ping.stdout)")
        // Our interface only has the IPv4 address in this run, so IPv6 echo must go unanswered.
        let ping6 = try peer.execute(["ping", "-6", "-c", "2", "-i", "0.5", "-W", "2", "fd00:4::3"], timeout: 15)
        #expect(!ping6.stdout.contains(" 2 received"), "\(ping6.stdout)")
    }
}
