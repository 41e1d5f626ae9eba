import Foundation
import Testing

/// Bad input on the command line: one clear line on stderr naming the culprit, exit status 2.
@Suite struct CommandLineTests {
    static let key = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="

    func onetun(_ args: [String], environment: [String: String] = [:]) throws -> Command.Outcome {
        try Command.execute([onetunExecutable] + args, environment: environment, timeout: 20)
    }

    @Test(arguments: [
        (["--endpoint-public-key", key, "--endpoint-addr", "127.0.0.1:1", "--source-peer-ip", "192.168.4.3", "--ping", "192.168.4.2"], "missing --private-key"),
        (["--private-key", "not-base64!", "--endpoint-public-key", key, "--endpoint-addr", "127.0.0.1:1", "--source-peer-ip", "192.168.4.3"], "--private-key: not valid base64"),
        (["--private-key", "AAAA", "--endpoint-public-key", key, "--endpoint-addr", "127.0.0.1:1", "--source-peer-ip", "192.168.4.3"], "--private-key: a key is 32 bytes, this one is 3"),
        (["--private-key", key, "--endpoint-addr", "127.0.0.1:1", "--source-peer-ip", "192.168.4.3"], "missing --endpoint-public-key"),
        (["--private-key", key, "--endpoint-public-key", key, "--endpoint-addr", "127.0.0.1", "--source-peer-ip", "192.168.4.3"], "--endpoint-addr: '127.0.0.1' is not host:port"),
        (["--private-key", key, "--endpoint-public-key", key, "--endpoint-addr", "127.0.0.1:1", "--source-peer-ip", "192.168.4"], "--source-peer-ip: '192.168.4' is not an IP address"),
        (["--private-key", key, "--endpoint-public-key", key, "--endpoint-addr", "127.0.0.1:1", "--source-peer-ip", "192.168.4.3", "--keep-alive", "70000"], "--keep-alive"),
        (["--private-key", key, "--endpoint-public-key", key, "--endpoint-addr", "127.0.0.1:1", "--source-peer-ip", "192.168.4.3", "--ping", "fd00::1"], "same IP version"),
        (["--private-key", key, "--endpoint-public-key", key, "--endpoint-addr", "127.0.0.1:1", "--source-peer-ip", "192.168.4.3", "--ping", "192.168.4.2", "--ping-count", "70000"], "--ping-count must be 1 to 65535"),
        // An unbracketed IPv6 endpoint is taken (as Rust's ToSocketAddrs does): the next problem is reported.
        (["--private-key", key, "--endpoint-public-key", key, "--endpoint-addr", "::1:51820"], "missing --source-peer-ip"),
        (["--private-key", key, "--endpoint-public-key", key, "--endpoint-addr", "127.0.0.1:1", "--source-peer-ip", "192.168.4.3", "--log", "onetun=loud"], "--log"),
        (["--private-key", String(repeating: "0g", count: 32), "--endpoint-public-key", key, "--endpoint-addr", "127.0.0.1:1", "--source-peer-ip", "192.168.4.3"], "--private-key: a key is 32 bytes, this one is 48"),
        (["--private-key", key, "--endpoint-public-key", key, "--endpoint-addr", "127.0.0.1:1", "--source-peer-ip", "192.168.4.3", "--source-peer-ip", "192.168.4.4"], "--source-peer-ip: 192.168.4.3 and 192.168.4.4 are both IPv4"),
        (["--private-key", key, "--endpoint-public-key", key, "--endpoint-addr", "127.0.0.1:1", "--source-peer-ip", "fd00::3,fd00::4"], "--source-peer-ip: fd00::3 and fd00::4 are both IPv6"),
        (["--bogus"], "--bogus"),
    ])
    func badInputIsAUsageError(args: [String], message: String) throws {
        let outcome = try onetun(args)
        #expect(outcome.status == 2, "\(outcome.stderr)")
        let lines = outcome.stderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].contains(message), "\(outcome.stderr)")
    }

    @Test func unresolvableEndpointIsARunTimeError() throws {
        let outcome = try onetun(["--private-key", Self.key, "--endpoint-public-key", Self.key,
                                  "--endpoint-addr", "no-such-host.invalid:51820", "--source-peer-ip", "192.168.4.3"])
        #expect(outcome.status == 1)
        #expect(outcome.stderr.contains("cannot resolve 'no-such-host.invalid'"), "\(outcome.stderr)")
    }

    @Test func environmentVariablesAreRead() throws {
        // Everything from the environment except a malformed key, which must then be reported.
        let outcome = try onetun([], environment: [
            "ONETUN_PRIVATE_KEY": Self.key, "ONETUN_ENDPOINT_PUBLIC_KEY": "bad", "ONETUN_ENDPOINT_ADDR": "127.0.0.1:1",
            "ONETUN_SOURCE_PEER_IP": "192.168.4.3",
        ])
        #expect(outcome.status == 2)
        #expect(outcome.stderr.contains("--endpoint-public-key: a key is 32 bytes, this one is 2"), "\(outcome.stderr)")
    }

    /// `onetun genkey`, `pubkey` and `genpsk` print what wg(8) prints: wireguard-tools derives the same
    /// public key from onetun's private key, and onetun the same as wg from wg's.
    @Test func keyCommandsAgreeWithWireGuardTools() throws {
        for _ in 0..<3 {
            let ours = try Command.run([onetunExecutable, "genkey"]).trimmed
            #expect(ours.count == 44 && ours.hasSuffix("="), "\(ours)")
            let theirs = try Command.run(["wg", "genkey"]).trimmed
            for key in [ours, theirs] {
                let byWG = try Command.run(["wg", "pubkey"], input: key + "\n").trimmed
                let byUs = try Command.run([onetunExecutable, "pubkey"], input: key + "\n").trimmed
                #expect(byUs == byWG && byUs.count == 44, "\(key): \(byUs) vs \(byWG)")
            }
            // wg clamps what genkey prints: pubkey of the raw key and of the clamped one agree.
            let raw = Data(base64Encoded: ours)!
            #expect(raw[0] & 7 == 0 && raw[31] & 0xC0 == 0x40)
        }
        let psk = try Command.run([onetunExecutable, "genpsk"]).trimmed
        #expect(Data(base64Encoded: psk)?.count == 32)
        #expect(psk != (try Command.run([onetunExecutable, "genpsk"]).trimmed))
        // Bad input: wg's two messages (with our program name), for what wg refuses too.
        var nonCanonical = Array(Self.key.utf8)
        nonCanonical[42] = UInt8(ascii: "n")  // 'n' is 39: its low bits are not zero
        for (bad, message) in [
            ("", "Key is not the correct length or format"), ("AAAA", "Key is not the correct length or format"),
            // 44 characters read, the key's '=' left over.
            (" " + Self.key, "Trailing characters found after key"),
            (String(decoding: nonCanonical, as: UTF8.self), "Key is not the correct length or format"),
            (Self.key + " extra", "Trailing characters found after key"),
        ] {
            let ours = try Command.execute([onetunExecutable, "pubkey"], input: bad, timeout: 20)
            #expect(ours.status == 1 && ours.stderr == "onetun: \(message)\n", "\(bad): \(ours.stderr)")
            let wg = try Command.execute(["wg", "pubkey"], input: bad, timeout: 20)
            #expect(wg.status == 1 && wg.stderr == "wg: \(message)\n", "\(bad): wg says \(wg.stderr)")
        }
        let extra = try onetun(["genkey", "now"])
        #expect(extra.status == 1 && extra.stderr.contains("Usage: onetun genkey"), "\(extra.stderr)")
    }

    @Test func versionExitsZero() throws {
        let outcome = try onetun(["--version"])
        #expect(outcome.status == 0)
        #expect(outcome.stdout.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ".").count == 3, "\(outcome.stdout)")
    }

    @Test func helpExitsZero() throws {
        let outcome = try onetun(["--help"])
        #expect(outcome.status == 0)
        #expect(outcome.stdout.contains("--endpoint-public-key"))
    }
}

/// The manual page documents every option that `--help` lists.
@Suite struct ManualPageTests {
    @Test func everyHelpOptionIsInTheManualPage() throws {
        let help = try Command.execute([onetunExecutable, "--help"], timeout: 20).stdout
        let page = try String(contentsOfFile: FileManager.default.currentDirectoryPath + "/man/onetun.1", encoding: .utf8)
        let options = Set(help.split(whereSeparator: { " ,\n\t".contains($0) }).filter { $0.hasPrefix("--") && $0.count > 2 }
            .map { String($0).trimmingCharacters(in: CharacterSet(charactersIn: ".,;:)")) })
        #expect(options.count >= 10, "\(options)")
        for option in options {
            #expect(page.contains("Fl -\(option.dropFirst(2))"), "man/onetun.1 does not document \(option)")
        }
    }
}
