import Foundation
import Glibc

/// A real WireGuard peer: wireguard-go running in foreground mode inside a `TestNamespace`, configured
/// with `wg` and `ip` to accept us as its one peer. Its tunnel addresses exist only inside the namespace.
///
/// wireguard-go's control socket (`/var/run/wireguard/IFNAME.sock`) is not per namespace, so every peer
/// gets its own interface name.
final class WireGuardGoPeer {
    let namespace: TestNamespace
    let interface: String
    /// The peer's keys, base64 as `wg` prints them.
    let privateKey: String
    let publicKey: String
    let listenPort: UInt16
    /// Tunnel addresses with prefix length, e.g. "192.168.4.1/24".
    let addresses: [String]
    private let process: ChildProcess
    private let ownsNamespace: Bool
    private var closed = false

    static let defaultAddresses = ["192.168.4.1/24", "fd00:4::1/64"]
    static let defaultAllowedIPs = ["192.168.4.3/32", "fd00:4::3/128"]

    /// Starts and configures the peer; on any failure everything started so far is torn down again.
    /// - Parameters:
    ///   - namespace: where the peer runs; nil makes a namespace that the peer owns and deletes on close.
    ///   - ourPublicKey: the public key of the side under test, the peer's only peer.
    ///   - allowedIPs: which inner source addresses the peer accepts from us (and routes back to us).
    ///   - presharedKey: base64, or nil for none.
    ///   - endpoint: "host:port" the peer sends to before it has heard from us; nil lets it learn ours.
    ///   - listenPort: fixed, or nil for a random free one in 20000..<60000.
    ///   - privateKey: base64, to come back as the same peer (a restart); nil makes a new one.
    init(
        in namespace: TestNamespace? = nil, ourPublicKey: String, allowedIPs: [String] = defaultAllowedIPs,
        addresses: [String] = defaultAddresses, presharedKey: String? = nil, endpoint: String? = nil,
        persistentKeepalive: Int? = nil, listenPort: UInt16? = nil, privateKey fixedKey: String? = nil
    ) throws {
        let ns = try namespace ?? TestNamespace()
        var succeeded = false
        defer { if !succeeded && namespace == nil { ns.close() } }

        let interface = try Self.freshInterfaceName()
        let (privateKey, publicKey) = try fixedKey.map { ($0, try Command.run(["wg", "pubkey"], input: $0 + "\n").trimmed) }
            ?? Self.generateKeyPair()
        // `ip netns exec` and `env` both exec, so the tracked PID is wireguard-go's own. Verbose logging
        // goes to a file and makes failure messages useful.
        let child = try ns.spawn(["env", "LOG_LEVEL=verbose", "wireguard-go", "-f", interface],
                                 logName: "wireguard-go-\(interface).log")
        defer {
            if !succeeded && child.terminate() { Self.removeStaleSocket(interface) }
        }
        try Self.waitUntilReady(ns, interface: interface, child: child)

        let keyFile = ns.directory.appendingPathComponent("\(interface).key")
        try writeSecret(privateKey, to: keyFile)
        try ns.run(["wg", "set", interface, "private-key", keyFile.path])
        let port = try Self.setListenPort(ns, interface: interface, fixed: listenPort)

        var peerArgs = ["wg", "set", interface, "peer", ourPublicKey, "allowed-ips", allowedIPs.joined(separator: ",")]
        if let presharedKey {
            let pskFile = ns.directory.appendingPathComponent("\(interface).psk")
            try writeSecret(presharedKey, to: pskFile)
            peerArgs += ["preshared-key", pskFile.path]
        }
        if let endpoint { peerArgs += ["endpoint", endpoint] }
        if let persistentKeepalive { peerArgs += ["persistent-keepalive", String(persistentKeepalive)] }
        try ns.run(peerArgs)

        for address in addresses {
            // wireguard-go's TUN device is NOARP, so the kernel skips DAD anyway; `nodad` makes sure an
            // IPv6 address is never "tentative" (and silently unusable) when the first echo arrives.
            let extra = address.contains(":") ? ["nodad"] : []
            try ns.run(["ip", "addr", "add", address, "dev", interface] + extra)
        }
        try ns.run(["ip", "link", "set", interface, "up"])

        self.namespace = ns
        self.interface = interface
        self.privateKey = privateKey
        self.publicKey = publicKey
        self.listenPort = port
        self.addresses = addresses
        self.process = child
        self.ownsNamespace = namespace == nil
        succeeded = true
    }

    deinit { close() }

    /// Stops wireguard-go (SIGTERM, bounded wait, SIGKILL, reaped) and, when the peer made its namespace,
    /// deletes that too. Safe to call more than once.
    func close() {
        guard !closed else { return }
        closed = true
        if process.terminate() { Self.removeStaleSocket(interface) }
        if ownsNamespace { namespace.close() }
    }

    var pid: Int32 { process.pid }
    var isRunning: Bool { process.isRunning }
    /// wireguard-go's own output, for failure messages.
    var log: String { process.output }

    /// `wg show IF dump`: the interface line, then one line per peer (tab-separated).
    func showDump() throws -> String {
        try namespace.run(["wg", "show", interface, "dump"], timeout: 10)
    }

    /// The peer line of `wg show dump`, parsed.
    struct PeerStatus: CustomStringConvertible {
        var publicKey: String
        var presharedKey: String
        var endpoint: String
        var allowedIPs: String
        /// Seconds since the epoch; 0 when no handshake has completed.
        var latestHandshake: Int
        var receivedBytes: Int
        var sentBytes: Int
        var description: String {
            "peer \(publicKey) endpoint \(endpoint) allowed \(allowedIPs) handshake \(latestHandshake) rx \(receivedBytes) tx \(sentBytes)"
        }
    }

    func peerStatus() throws -> PeerStatus {
        let dump = try showDump()
        let lines = dump.split(separator: "\n")
        guard lines.count >= 2 else { throw HarnessError("no peer in `wg show \(interface) dump`: \(dump)") }
        let f = lines[1].split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        guard f.count >= 8 else { throw HarnessError("unexpected peer line: \(lines[1])") }
        return PeerStatus(
            publicKey: f[0], presharedKey: f[1], endpoint: f[2], allowedIPs: f[3],
            latestHandshake: Int(f[4]) ?? 0, receivedBytes: Int(f[5]) ?? 0, sentBytes: Int(f[6]) ?? 0)
    }

    // MARK: Setup steps

    private static func socketPath(_ interface: String) -> String { "/var/run/wireguard/\(interface).sock" }

    /// "wgt" + 6 hex digits (≤ 15 characters), not in use by any running wireguard-go on this machine.
    private static func freshInterfaceName() throws -> String {
        for _ in 0..<20 {
            let candidate = "wgt" + randomHex(6)
            if !FileManager.default.fileExists(atPath: socketPath(candidate)) { return candidate }
        }
        throw HarnessError("no free wireguard-go interface name found")
    }

    private static func generateKeyPair() throws -> (privateKey: String, publicKey: String) {
        let privateKey = try Command.run(["wg", "genkey"]).trimmed
        let publicKey = try Command.run(["wg", "pubkey"], input: privateKey + "\n").trimmed
        return (privateKey, publicKey)
    }

    /// Waits (at most 30 s) for the TUN interface and the control socket that `wg` talks to. It is usually
    /// a few milliseconds; the budget is for a machine loaded by the tests running beside this one (a run
    /// once saw wireguard-go report both ready within its first second and this check still miss 5 s).
    private static func waitUntilReady(_ ns: TestNamespace, interface: String, child: ChildProcess) throws {
        let deadline = Date().addingTimeInterval(30)
        for _ in 0..<1500 {
            guard child.isRunning else {
                throw HarnessError("wireguard-go \(interface) exited early: \(child.output)")
            }
            if FileManager.default.fileExists(atPath: socketPath(interface)),
                (try? ns.run(["ip", "link", "show", interface], timeout: 5)) != nil
            {
                return
            }
            if Date() >= deadline { break }
            usleep(20_000)
        }
        throw HarnessError("wireguard-go did not create \(interface) within 30 s: \(child.output)")
    }

    /// A fixed port, or random ports in 20000..<60000 until one binds (a few tries).
    private static func setListenPort(_ ns: TestNamespace, interface: String, fixed: UInt16?) throws -> UInt16 {
        if let fixed {
            try ns.run(["wg", "set", interface, "listen-port", String(fixed)])
            return fixed
        }
        var lastError: Error = HarnessError("no listen port tried")
        for _ in 0..<5 {
            let port = UInt16.random(in: 20000..<60000)
            do {
                try ns.run(["wg", "set", interface, "listen-port", String(port)])
                return port
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    /// wireguard-go removes its control socket on a clean exit, not when it had to be SIGKILLed; only
    /// then is the socket ours to remove.
    private static func removeStaleSocket(_ interface: String) {
        unlink(socketPath(interface))
    }
}

/// Writes a key for `wg` to read, readable by its owner only.
func writeSecret(_ text: String, to url: URL) throws {
    _ = FileManager.default.createFile(atPath: url.path, contents: nil, attributes: [.posixPermissions: 0o600])
    try Data((text + "\n").utf8).write(to: url)
}
