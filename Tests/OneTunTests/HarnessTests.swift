import Foundation
import Glibc
import Testing

/// The real-peer harness itself: namespaces isolate sockets, wireguard-go comes up configured, and
/// everything is gone after `close()`. If these fail, the interop tests' failures mean nothing.
@Suite(.serialized) struct HarnessTests {
    @Test(.enabled(if: TestNamespace.canCreateNamespaces, TestNamespace.skipReason))
    func namespaceSocketsStayInTheNamespace() throws {
        let ns = try TestNamespace()
        defer { ns.close() }
        // 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never configured on a real host, so it exists only here.
        try ns.run(["ip", "addr", "add", "192.0.2.77/32", "dev", "lo"])
        let inside = try ns.makeUDPSocket()
        defer { close(inside) }
        let outside = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(outside) }
        // The thread that made `inside` is gone; used from this thread, the socket is still the namespace's.
        #expect(bindUDP(inside, "192.0.2.77") == 0, "bind inside the namespace: \(String(cString: strerror(errno)))")
        // From this (host-namespace) thread, the address does not exist.
        #expect(bindUDP(outside, "192.0.2.77") == -1 && errno == EADDRNOTAVAIL)
        // Code run by withinNamespace sees the namespace's addresses.
        let result = try ns.withinNamespace { () -> Int32 in
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            defer { close(fd) }
            return bindUDP(fd, "192.0.2.77")
        }
        #expect(result == 0)
    }

    @Test(.enabled(if: TestNamespace.canCreateNamespaces, TestNamespace.skipReason))
    func closeRemovesNamespaceAndProcesses() throws {
        let ns = try TestNamespace()
        let child = try ns.spawn(["sleep", "30"], logName: "sleep.log")
        let pid = child.pid
        #expect(child.isRunning)
        #expect(FileManager.default.fileExists(atPath: "/var/run/netns/\(ns.name)"))
        let started = Date()
        ns.close()
        // `sleep` has no SIGTERM handler: it must die of SIGTERM at once, not wait out the SIGKILL grace.
        #expect(Date().timeIntervalSince(started) < 3, "SIGTERM did not reach the child")
        #expect(!child.isRunning)
        #expect(kill(pid, 0) == -1 && errno == ESRCH, "child \(pid) not reaped")
        #expect(!FileManager.default.fileExists(atPath: "/var/run/netns/\(ns.name)"))
        #expect(!FileManager.default.fileExists(atPath: ns.directory.path))
    }

    @Test(.enabled(if: TestNamespace.canCreateNamespaces, TestNamespace.skipReason))
    func wireguardGoPeerStartsAndListsUs() throws {
        let ourPublic = try Command.run(["wg", "pubkey"], input: Command.run(["wg", "genkey"])).trimmed
        let psk = try Command.run(["wg", "genpsk"]).trimmed
        let peer = try WireGuardGoPeer(ourPublicKey: ourPublic, presharedKey: psk, persistentKeepalive: 25)
        let pid = peer.pid, interface = peer.interface, ns = peer.namespace.name
        defer { peer.close() }

        let lines = try peer.showDump().split(separator: "\n").map { $0.split(separator: "\t").map(String.init) }
        try #require(lines.count == 2, "\(lines)")
        // Interface line: private key, public key, listen port, fwmark.
        #expect(lines[0][1] == peer.publicKey)
        #expect(lines[0][2] == String(peer.listenPort))
        let status = try peer.peerStatus()
        #expect(status.publicKey == ourPublic)
        #expect(status.presharedKey == psk)
        #expect(status.allowedIPs == "192.168.4.3/32,fd00:4::3/128")
        #expect(status.latestHandshake == 0, "no handshake yet: \(status)")
        let addresses = try peer.namespace.run(["ip", "-o", "addr", "show", "dev", peer.interface])
        #expect(addresses.contains("192.168.4.1/24") && addresses.contains("fd00:4::1/64"), "\(addresses)")
        let udp = try peer.namespace.run(["cat", "/proc/net/udp"])
        #expect(udp.uppercased().contains(String(format: ":%04X", peer.listenPort)), "not listening: \(udp)")

        peer.close()
        #expect(kill(pid, 0) == -1 && errno == ESRCH, "wireguard-go \(pid) not reaped")
        #expect(!FileManager.default.fileExists(atPath: "/var/run/wireguard/\(interface).sock"))
        #expect(!FileManager.default.fileExists(atPath: "/var/run/netns/\(ns)"))
    }
}

/// bind(2) to `address`:0; returns bind's result (errno set on failure).
private func bindUDP(_ fd: Int32, _ address: String) -> Int32 {
    var sa = sockaddr_in()
    sa.sin_family = sa_family_t(AF_INET)
    _ = inet_pton(AF_INET, address, &sa.sin_addr)
    return withUnsafePointer(to: &sa) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
}

/// The hand-made echo packets the interop tests compare replies against.
@Suite struct EchoMessageTests {
    @Test func checksumMatchesRFC1071Example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2, so the checksum is its complement.
        #expect(internetChecksum([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]) == ~UInt16(0xddf2))
        #expect(internetChecksum([0x00, 0x01, 0xf2]) == ~UInt16(0x0001 + 0xf200))
    }

    @Test(arguments: [("192.168.4.3", "192.168.4.1"), ("fd00:4::3", "fd00:4::1")])
    func requestRoundTripsAndCorruptionIsRejected(source: String, target: String) throws {
        let request = EchoMessage.request(from: source, to: target, identifier: 0x1234, sequence: 7, payload: Array(0..<33))
        let packet = request.packet()
        #expect(packet.count == (request.isIPv6 ? 40 : 20) + 8 + 33)
        #expect(EchoMessage(parsing: packet) == request)
        #expect(formatAddress(request.source) == source)
        // Any flipped bit in the addresses or the ICMP message breaks a checksum.
        for index in [12, 20, packet.count - 1] {
            var corrupted = packet
            corrupted[index] ^= 0x10
            #expect(EchoMessage(parsing: corrupted) == nil, "byte \(index) flipped yet parsed")
        }
        #expect(EchoMessage(parsing: Array(packet.dropLast())) == nil)
        #expect(request.expectedReply.expectedReply.source == request.source)
    }
}

/// CI must fail, not skip, when the end-to-end tests cannot run (ONETUN_REQUIRE_E2E=1, set by .ci/run).
@Suite struct EndToEndGuardTests {
    @Test(.enabled(if: TestNamespace.isRequired, "ONETUN_REQUIRE_E2E is not set"))
    func requiredEndToEndTestsCanRun() {
        #expect(getuid() == 0, "the end-to-end tests need root (ONETUN_REQUIRE_E2E=1)")
        #expect(TestNamespace.probe(), "`ip netns add` does not work here, and ONETUN_REQUIRE_E2E=1 says the end-to-end tests must run")
    }
}
