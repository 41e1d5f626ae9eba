import Foundation

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension String {
    var trimmed: String { trimmingCharacters(in: .whitespacesAndNewlines) }
}

/// The onetun executable: `ONETUN_BINARY` when set (`make test` sets it to a release build, since the
/// end-to-end tests move hundreds of MiB and a debug build is ten times slower), else the one built next
/// to the test bundle (`swift build --build-tests` builds it).
var onetunExecutable: String {
    if let path = ProcessInfo.processInfo.environment["ONETUN_BINARY"], !path.isEmpty { return path }
    let bundleDir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    let candidates = [
        bundleDir.appendingPathComponent("onetun").path,
        FileManager.default.currentDirectoryPath + "/.build/debug/onetun",
    ]
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
}

/// A wireguard-go peer in a fresh namespace plus a key pair for the onetun side, whose private key is in
/// a 0600 file; onetun runs inside the same namespace and reaches the peer on 127.0.0.1.
final class OneTunPeer {
    let namespace: TestNamespace
    private(set) var peer: WireGuardGoPeer
    let privateKeyFile: URL
    let ourPublicKey: String

    init(presharedKey: String? = nil) throws {
        let ourPrivate = try Command.run(["wg", "genkey"]).trimmed
        let ourPublic = try Command.run(["wg", "pubkey"], input: ourPrivate + "\n").trimmed
        ourPublicKey = ourPublic
        namespace = try TestNamespace()
        do {
            peer = try WireGuardGoPeer(in: namespace, ourPublicKey: ourPublic, presharedKey: presharedKey)
            privateKeyFile = namespace.directory.appendingPathComponent("onetun.key")
            try (ourPrivate + "\n").write(to: privateKeyFile, atomically: true, encoding: .utf8)
            chmod(privateKeyFile.path, 0o600)
        } catch {
            namespace.close()
            throw error
        }
    }

    func close() {
        peer.close()
        namespace.close()
    }

    /// Stops the peer's wireguard-go (its interface and addresses go with it), waits `seconds`, and
    /// starts it again with the same keys, port and addresses, as a rebooted router comes back: it has
    /// forgotten every session.
    func restart(downFor seconds: Double) throws {
        let old = peer
        old.close()
        usleep(UInt32(seconds * 1_000_000))
        peer = try WireGuardGoPeer(
            in: namespace, ourPublicKey: ourPublicKey, addresses: old.addresses, listenPort: old.listenPort,
            privateKey: old.privateKey)
    }

    /// Stops the peer's wireguard-go (its interface and addresses go with it) until `start`.
    func stop() { peer.close() }

    /// Starts the peer's wireguard-go again after `stop`, with the same keys, port and addresses; it has
    /// forgotten every session.
    func start() throws {
        let old = peer
        peer = try WireGuardGoPeer(
            in: namespace, ourPublicKey: ourPublicKey, addresses: old.addresses, listenPort: old.listenPort,
            privateKey: old.privateKey)
    }

    /// onetun's arguments to reach this peer.
    var tunnelArguments: [String] {
        ["--private-key-file", privateKeyFile.path, "--endpoint-public-key", peer.publicKey,
         "--endpoint-addr", "127.0.0.1:\(peer.listenPort)"]
    }

    /// Runs a command inside the namespace, bounded by `timeout`.
    func execute(_ args: [String], timeout: Double = 30) throws -> Command.Outcome {
        try Command.execute(["ip", "netns", "exec", namespace.name] + args, timeout: timeout)
    }
}
