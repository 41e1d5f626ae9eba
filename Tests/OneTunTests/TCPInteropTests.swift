import Foundation
import Glibc
import Testing
@_spi(OneTunInternals) @testable import OneTunCore
@_spi(OneTunInternals) import OneTunLoop

/// One TCP connection of the core's stack, riding the tunnel: it builds and parses the IP packets around
/// its segments and runs a simple application (write a stream, read what comes back).
final class TCPClientPayload: TunnelPayload {
    let local: IPAddress
    let remote: IPAddress
    let connection: TCPConnection
    let total: Int
    var written = 0
    var received: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65_536)
    let segmentPayload = UnsafeMutableRawBufferPointer.allocate(byteCount: 65_536, alignment: 16)
    var badPackets = 0

    init(local: IPAddress, remote: IPAddress, port: UInt16, total: Int, now: Instant) {
        self.local = local
        self.remote = remote
        self.total = total
        let mss = 1420 - (local.isV4 ? 20 : 40) - 20
        connection = TCPConnection(
            localPort: UInt16.random(in: 20_000...60_000), remotePort: port, iss: UInt32.random(in: 0...UInt32.max),
            config: TCPConfig(mss: mss), now: now)
    }

    deinit { segmentPayload.deallocate() }

    func application() {
        while written < total {
            // Only generate what the connection can take now: this runs after every inbound segment.
            let n = min(chunk.count, total - written, connection.writableBytes)
            if n == 0 { break }
            for i in 0..<n { chunk[i] = tcpInteropByte(written + i) }
            let accepted = chunk.withUnsafeBytes { connection.send(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            written += accepted
            if accepted < n { break }
        }
        if written == total && connection.writableBytes > 0 { connection.close() }
        while true {
            let readable = connection.readable()
            if readable.isEmpty { break }
            received.append(contentsOf: readable)
            connection.consume(readable.count)
        }
    }

    func receive(packet: UnsafeRawBufferPointer, now: Instant) {
        guard let ip = try? IPPacket(validating: packet), ip.upperLayerProtocol == .tcp, ip.source == remote,
            let segment = try? TCPSegment(validating: ip.upperLayerPayload),
            segment.verifyChecksum(src: ip.source, dst: ip.destination),
            segment.destinationPort == connection.localPort
        else {
            badPackets += 1
            return
        }
        connection.handleSegment(TCPRepr.parse(segment), payload: segment.payload, now: now)
        application()
    }

    func pollPacket(into buffer: UnsafeMutableRawBufferPointer, now: Instant) -> Int? {
        application()
        guard let (repr, n) = connection.pollSegment(payload: segmentPayload, now: now) else { return nil }
        let builder = PacketBuilder(source: local, destination: remote, transport: .tcp(repr))
        return builder.emit(into: buffer, at: 0, copying: UnsafeRawBufferPointer(rebasing: segmentPayload[0..<n]))
    }

    func nextDeadline() -> Instant? { connection.nextDeadline() }
    func handleTimeout(now: Instant) { connection.handleTimeout(now: now) }
}

func tcpInteropByte(_ i: Int) -> UInt8 { UInt8(truncatingIfNeeded: (i &* 2_654_435_761) >> 13 ^ i) }

/// The core's TCP and WireGuard together, through a real wireguard-go peer, to real Linux TCP sockets
/// inside the peer's namespace.
@Suite(.serialized) struct TCPInteropTests {
    static let echoServer = """
        import socket, sys
        s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8)
        print("ready", flush=True)
        while True:
            c, _ = s.accept()
            while True:
                d = c.recv(262144)
                if not d: break
                c.sendall(d)
            c.shutdown(socket.SHUT_WR)
            c.close()
        """

    func session() throws -> (TestNamespace, WireGuardGoPeer, BlockingDriver) {
        let ourPrivate = try Command.run(["wg", "genkey"]).trimmed
        let ourPublic = try Command.run(["wg", "pubkey"], input: ourPrivate + "\n").trimmed
        let namespace = try TestNamespace()
        do {
            let peer = try WireGuardGoPeer(in: namespace, ourPublicKey: ourPublic)
            let config = WireGuardConfig(privateKey: Key32(base64: ourPrivate)!, peerPublicKey: Key32(base64: peer.publicKey)!)
            let driver = try BlockingDriver(namespace: namespace, peerPort: peer.listenPort, config: config)
            return (namespace, peer, driver)
        } catch {
            namespace.close()
            throw error
        }
    }

    @Test(.enabled(if: TestNamespace.canCreateNamespaces, TestNamespace.skipReason), arguments: [
        ("192.168.4.3", "192.168.4.1"), ("fd00:4::3", "fd00:4::1"),
    ])
    func echoThroughLinux(local: String, remote: String) throws {
        let (namespace, peer, driver) = try session()
        defer {
            driver.close()
            peer.close()
            namespace.close()
        }
        let script = namespace.directory.appendingPathComponent("echo.py")
        try Self.echoServer.write(to: script, atomically: true, encoding: .utf8)
        let server = try namespace.spawn(["python3", script.path, remote, "5001"], logName: "echo.log")
        defer { _ = server.terminate() }
        for _ in 0..<100 where !server.output.contains("ready") { usleep(20_000) }
        let size = 32 << 20
        let client = TCPClientPayload(local: IPAddress(local)!, remote: IPAddress(remote)!, port: 5001, total: size, now: driver.now())
        let start = driver.now()
        let done = driver.run(payload: client, timeout: 90) { client.received.count == size && client.connection.isReadClosed }
        let seconds = Double(driver.now().since(start)) / 1e9
        #expect(done, "received \(client.received.count) of \(size); state \(client.connection.state) \(String(describing: client.connection.error)); server: \(server.output)")
        #expect(client.received.count == size)
        var mismatch = -1
        for i in client.received.indices where client.received[i] != tcpInteropByte(i) {
            mismatch = i
            break
        }
        #expect(mismatch == -1, "first differing byte at \(mismatch)")
        print("TCP echo through wireguard-go, \(local) → \(remote): \(size >> 20) MiB each way in \(String(format: "%.2f", seconds)) s; \(client.connection.stats); tunnel drops \(driver.drops.count), datagrams in \(driver.datagramsReceived) out \(driver.datagramsSent)")
    }

    static let resetServer = """
        import socket, struct, sys
        s = socket.socket(socket.AF_INET)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8)
        print("ready", flush=True)
        c, _ = s.accept()
        got = 0
        while got < 65536:
            d = c.recv(65536)
            if not d: break
            got += len(d)
        # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        """

    @Test(.enabled(if: TestNamespace.canCreateNamespaces, TestNamespace.skipReason))
    func serverResetMidTransferEndsPromptly() throws {
        let (namespace, peer, driver) = try session()
        defer {
            driver.close()
            peer.close()
            namespace.close()
        }
        let script = namespace.directory.appendingPathComponent("reset.py")
        try Self.resetServer.write(to: script, atomically: true, encoding: .utf8)
        let server = try namespace.spawn(["python3", script.path, "192.168.4.1", "5003"], logName: "reset.log")
        defer { _ = server.terminate() }
        for _ in 0..<100 where !server.output.contains("ready") { usleep(20_000) }
        let client = TCPClientPayload(local: IPAddress("192.168.4.3")!, remote: IPAddress("192.168.4.1")!, port: 5003, total: 8 << 20, now: driver.now())
        let ended = driver.run(payload: client, timeout: 10) { client.connection.state == .closed }
        #expect(ended, "state \(client.connection.state), written \(client.written)")
        #expect(client.connection.error == .reset)
    }

    @Test(.enabled(if: TestNamespace.canCreateNamespaces, TestNamespace.skipReason))
    func refusedConnectionEndsPromptly() throws {
        let (namespace, peer, driver) = try session()
        defer {
            driver.close()
            peer.close()
            namespace.close()
        }
        // Nothing listens on port 5002: Linux answers the SYN with RST.
        let client = TCPClientPayload(local: IPAddress("192.168.4.3")!, remote: IPAddress("192.168.4.1")!, port: 5002, total: 0, now: driver.now())
        let ended = driver.run(payload: client, timeout: 10) { client.connection.state == .closed }
        #expect(ended)
        #expect(client.connection.error == .refused)
    }
}
