import Foundation
import Glibc
import Testing
@_spi(OneTunInternals) @testable import OneTunCore

/// The sans-I/O `WireGuardTunnel`, driven by `BlockingDriver` over a real UDP socket, against wireguard-go
/// in a namespace made by the test. The peer's kernel answers our ICMP echo through its WireGuard
/// interface, so a reply proves the handshake, both transport directions and the inner packets.
/// (WireGuardInteropTests does the same through the onetun executable and its libuv loop.)
@Suite(.serialized) struct WireGuardTunnelInteropTests {
    /// Every wait in these tests is bounded by this.
    static let timeout = 10.0

    /// One tunnel to one fresh peer. Closing it stops wireguard-go and deletes the namespace.
    final class Session {
        let namespace: TestNamespace
        let peer: WireGuardGoPeer
        let driver: BlockingDriver

        init(presharedKey: Key32 = .zero, peerPresharedKey: String? = nil) throws {
            let ourPrivate = try Command.run(["wg", "genkey"]).trimmed
            let ourPublic = try Command.run(["wg", "pubkey"], input: ourPrivate + "\n").trimmed
            namespace = try TestNamespace()
            do {
                peer = try WireGuardGoPeer(in: namespace, ourPublicKey: ourPublic, presharedKey: peerPresharedKey)
                let config = WireGuardConfig(
                    privateKey: try #require(Key32(base64: ourPrivate)),
                    peerPublicKey: try #require(Key32(base64: peer.publicKey)),
                    presharedKey: presharedKey)
                driver = try BlockingDriver(namespace: namespace, peerPort: peer.listenPort, config: config)
            } catch {
                namespace.close()
                throw error
            }
            // Our X25519 agrees with `wg pubkey`; otherwise nothing below can work.
            #expect(driver.tunnel.publicKey.base64 == ourPublic)
        }

        deinit { close() }

        func close() {
            driver.close()
            peer.close()
            namespace.close()
        }

        /// Sends one echo request and runs the tunnel until its exact reply comes back (true) or the
        /// timeout passes (false).
        func echo(from source: String, to target: String, sequence: UInt16, identifier: UInt16 = 0x4f54,
                  payloadSize: Int = 56) -> Bool {
            let payload = (0..<payloadSize).map { _ in UInt8.random(in: 0...255) }
            let request = EchoMessage.request(from: source, to: target, identifier: identifier, sequence: sequence,
                                              payload: payload)
            let expected = request.expectedReply
            let result = driver.send(packet: request.packet())
            if case .dropped(let reason) = result {
                Issue.record("encapsulate dropped the request: \(reason)")
                return false
            }
            return driver.run(timeout: WireGuardTunnelInteropTests.timeout) { EchoMessage(parsing: $0) == expected }
        }

        /// Everything useful when a test fails.
        var diagnostics: String {
            let dump = (try? peer.showDump()) ?? "(wg show failed)"
            return """
                established \(driver.tunnel.isEstablished); stats \(driver.tunnel.stats)
                datagrams sent \(driver.datagramsSent), received \(driver.datagramsReceived)
                drops \(driver.drops); socket errors \(driver.socketErrors)
                other inner packets \(driver.innerPackets.map { EchoMessage(parsing: $0)?.description ?? "\($0.count) bytes" })
                wg show dump:
                \(dump)
                wireguard-go log (last 2000 characters):
                \(peer.log.suffix(2000))
                """
        }
    }

    @Test(.enabled(if: TestNamespace.canCreateNamespaces, TestNamespace.skipReason))
    func echoOverIPv4() throws {
        let session = try Session()
        defer { session.close() }
        let replied = session.echo(from: "192.168.4.3", to: "192.168.4.1", sequence: 1)
        #expect(replied, "no echo reply from 192.168.4.1\n\(session.diagnostics)")
        #expect(session.driver.tunnel.isEstablished)
    }

    @Test(.enabled(if: TestNamespace.canCreateNamespaces, TestNamespace.skipReason))
    func echoOverIPv6() throws {
        let session = try Session()
        defer { session.close() }
        let replied = session.echo(from: "fd00:4::3", to: "fd00:4::1", sequence: 1)
        #expect(replied, "no echo reply from fd00:4::1\n\(session.diagnostics)")
        #expect(session.driver.tunnel.isEstablished)
    }

    @Test(.enabled(if: TestNamespace.canCreateNamespaces, TestNamespace.skipReason))
    func severalEchoesOverOneSession() throws {
        let session = try Session()
        defer { session.close() }
        // Both families, alternating, all on the one session the first packet set up.
        for sequence in UInt16(1)...6 {
            let (source, target) = sequence % 2 == 1 ? ("192.168.4.3", "192.168.4.1") : ("fd00:4::3", "fd00:4::1")
            let replied = session.echo(from: source, to: target, sequence: sequence, payloadSize: 16 * Int(sequence))
            try #require(replied, "echo \(sequence) to \(target) got no reply\n\(session.diagnostics)")
        }
        let stats = session.driver.tunnel.stats
        #expect(stats.handshakesCompleted == 1, "\(stats)")
        #expect(stats.packetsReceived >= 6, "\(stats)")
        #expect(session.driver.drops.isEmpty, "\(session.driver.drops)")

        let status = try session.peer.peerStatus()
        let now = Int(Date().timeIntervalSince1970)
        #expect(status.latestHandshake > 0 && abs(now - status.latestHandshake) < 60, "\(status)")
        // Six requests with payloads of 16…96 bytes in, as many replies out, plus the handshake.
        #expect(status.receivedBytes > 6 * 60 && status.sentBytes > 6 * 60, "\(status)")
        #expect(status.endpoint.hasPrefix("127.0.0.1:"), "wireguard-go learned endpoint \(status.endpoint)")
    }

    @Test(.enabled(if: TestNamespace.canCreateNamespaces, TestNamespace.skipReason))
    func echoWithPresharedKey() throws {
        let psk = try Command.run(["wg", "genpsk"]).trimmed
        let session = try Session(presharedKey: try #require(Key32(base64: psk)), peerPresharedKey: psk)
        defer { session.close() }
        let replied = session.echo(from: "192.168.4.3", to: "192.168.4.1", sequence: 1)
        #expect(replied, "no echo reply with a preshared key\n\(session.diagnostics)")
    }

    @Test(.enabled(if: TestNamespace.canCreateNamespaces, TestNamespace.skipReason))
    func mismatchedPresharedKeyNeverEstablishes() throws {
        // The peer has a preshared key we do not: it answers our initiation, but its response cannot be
        // authenticated (paper §5.4.3: psk is mixed in before the response's empty AEAD), so we drop it.
        let psk = try Command.run(["wg", "genpsk"]).trimmed
        let session = try Session(peerPresharedKey: psk)
        defer { session.close() }
        let request = EchoMessage.request(from: "192.168.4.3", to: "192.168.4.1", identifier: 1, sequence: 1,
                                          payload: [1, 2, 3, 4])
        session.driver.send(packet: request.packet())
        // Well below REKEY_TIMEOUT (5 s): one initiation, one response, nothing retried yet.
        let replied = session.driver.run(timeout: 2) { _ in true }
        #expect(!replied, "a packet came through a tunnel with the wrong preshared key")
        #expect(!session.driver.tunnel.isEstablished)
        #expect(session.driver.drops.contains { if case .handshake = $0 { true } else { false } },
                "the peer's response was not rejected as a failed handshake\n\(session.diagnostics)")
        #expect(try session.peer.peerStatus().latestHandshake == 0)
    }
}
