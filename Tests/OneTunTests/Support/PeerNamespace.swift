import Foundation
import Glibc

/// A network namespace made for one test, with a real wireguard-go peer inside it. Everything it creates
/// (namespace, wireguard-go process, key files) is removed by `close()`, which `deinit` also calls.
/// wireguard-go's control socket is not per-namespace, so every instance uses its own interface name.
final class PeerNamespace {
    let name: String
    let interface: String
    let directory: URL
    var peerPublicKey = ""
    var ourPrivateKeyFile: URL { directory.appendingPathComponent("onetun.key") }
    var ourPublicKey = ""
    let listenPort: Int = 51820
    private var wireguardGo: Process?
    private var closed = false

    static var canCreateNamespaces: Bool {
        getuid() == 0 && (try? PeerNamespace.shell(["ip", "netns", "list"])) != nil
    }

    /// Creates the namespace, starts wireguard-go, gives the peer `peerAddresses` and lets our side
    /// use `allowedIPs`.
    init(peerAddresses: [String] = ["192.168.4.2/24", "fd00:4::2/64"],
         allowedIPs: String = "192.168.4.3/32,fd00:4::3/128", presharedKey: String? = nil) throws {
        let tag = String(UInt32.random(in: 0..<UInt32.max), radix: 16)
        name = "ott\(tag)"
        interface = "wgt\(tag.prefix(8))"
        directory = FileManager.default.temporaryDirectory.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        do {
            try Self.shell(["ip", "netns", "add", name])
            try run(["ip", "link", "set", "lo", "up"])
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            process.arguments = ["netns", "exec", name, "wireguard-go", "-f", interface]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            wireguardGo = process
            var up = false
            for _ in 0..<100 where !up {
                up = (try? run(["ip", "link", "show", interface])) != nil
                if !up { usleep(50_000) }
            }
            guard up else { throw HarnessError("wireguard-go did not create \(interface)") }
            let peerKey = try Self.shell(["wg", "genkey"]).trimmed
            let ourKey = try Self.shell(["wg", "genkey"]).trimmed
            peerPublicKey = try Self.shell(["wg", "pubkey"], input: peerKey).trimmed
            ourPublicKey = try Self.shell(["wg", "pubkey"], input: ourKey).trimmed
            let peerKeyFile = directory.appendingPathComponent("peer.key")
            try write(peerKey, to: peerKeyFile)
            try write(ourKey, to: ourPrivateKeyFile)
            var args = ["wg", "set", interface, "private-key", peerKeyFile.path, "listen-port", String(listenPort),
                        "peer", ourPublicKey, "allowed-ips", allowedIPs]
            if let presharedKey {
                let pskFile = directory.appendingPathComponent("psk")
                try write(presharedKey, to: pskFile)
                args += ["preshared-key", pskFile.path]
            }
            try run(args)
            for address in peerAddresses { try run(["ip", "addr", "add", address, "dev", interface]) }
            try run(["ip", "link", "set", interface, "up"])
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    func close() {
        guard !closed else { return }
        closed = true
        if let process = wireguardGo, process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            process.waitUntilExit()
        }
        _ = try? Self.shell(["ip", "netns", "del", name])
        try? FileManager.default.removeItem(at: directory)
    }

    private func write(_ text: String, to url: URL) throws {
        try (text + "\n").write(to: url, atomically: true, encoding: .utf8)
        chmod(url.path, 0o600)
    }

    /// Runs a command inside the namespace and returns its standard output.
    @discardableResult
    func run(_ args: [String], timeout: Double = 20) throws -> String {
        try Self.shell(["ip", "netns", "exec", name] + args, timeout: timeout)
    }

    /// `wg show IF dump`'s peer line, split into fields (public key, psk, endpoint, allowed ips,
    /// latest handshake, rx, tx, keepalive).
    func peerDump() throws -> [String] {
        let lines = try run(["wg", "show", interface, "dump"]).split(separator: "\n")
        guard lines.count >= 2 else { throw HarnessError("no peer in wg show dump") }
        return lines[1].split(separator: "\t").map(String.init)
    }

    struct Outcome {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs a program inside the namespace, bounded by `timeout` seconds (then killed).
    func execute(_ args: [String], environment: [String: String]? = nil, timeout: Double = 30) throws -> Outcome {
        try Self.execute(["ip", "netns", "exec", name] + args, environment: environment, timeout: timeout)
    }

    static func execute(_ args: [String], environment: [String: String]? = nil, input: String? = nil, timeout: Double = 30) throws -> Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = args
        if let environment { process.environment = environment }
        // Output goes to files, not pipes, so a chatty child never blocks and nothing runs concurrently.
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("onetun-test-\(UUID().uuidString)")
        let outURL = base.appendingPathExtension("out"), errURL = base.appendingPathExtension("err")
        FileManager.default.createFile(atPath: outURL.path, contents: nil)
        FileManager.default.createFile(atPath: errURL.path, contents: nil)
        defer {
            try? FileManager.default.removeItem(at: outURL)
            try? FileManager.default.removeItem(at: errURL)
        }
        let inPipe = Pipe()
        process.standardOutput = try FileHandle(forWritingTo: outURL)
        process.standardError = try FileHandle(forWritingTo: errURL)
        process.standardInput = inPipe
        try process.run()
        if let input { inPipe.fileHandleForWriting.write(Data(input.utf8)) }
        try? inPipe.fileHandleForWriting.close()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
        }
        process.waitUntilExit()
        let outData = (try? Data(contentsOf: outURL)) ?? Data()
        let errData = (try? Data(contentsOf: errURL)) ?? Data()
        return Outcome(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                       stderr: String(decoding: errData, as: UTF8.self))
    }

    @discardableResult
    static func shell(_ args: [String], input: String? = nil, timeout: Double = 20) throws -> String {
        let outcome = try execute(args, input: input, timeout: timeout)
        guard outcome.status == 0 else {
            throw HarnessError("\(args.joined(separator: " ")) failed (\(outcome.status)): \(outcome.stderr)")
        }
        return outcome.stdout
    }
}

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension String {
    var trimmed: String { trimmingCharacters(in: .whitespacesAndNewlines) }
}

/// The onetun executable built next to the test bundle.
var onetunExecutable: String {
    let bundleDir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    var candidates = [bundleDir.appendingPathComponent("onetun").path]
    // When run as `swift test`, argv[0] may be the xctest helper; fall back to the package's build folder.
    candidates.append(FileManager.default.currentDirectoryPath + "/.build/debug/onetun")
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
}
