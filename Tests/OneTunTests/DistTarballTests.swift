import Foundation
import Glibc
import Testing

/// `make dist`'s tarball: a /usr/local tree whose binary needs only the C library.
@Suite(.serialized) struct DistTarballTests {
    static let skipReason: Comment = "no onetun-*-linux-*.tar.gz in the package root: run make dist"

    /// The tarball unpacked into `directory`; the path of its top directory.
    func unpack(_ tarball: URL, into directory: String) throws -> String {
        try runChecked(["tar", "-xzf", tarball.path, "-C", directory])
        let top = try FileManager.default.contentsOfDirectory(atPath: directory)
        guard top.count == 1, let name = top.first, name.hasPrefix("onetun-") else {
            throw HarnessError("\(tarball.lastPathComponent) holds \(top), not one onetun-VERSION-linux-ARCH directory")
        }
        return "\(directory)/\(name)"
    }

    @Test(.enabled(if: DistArtifacts.tarballTestsEnabled, skipReason))
    func holdsTheTreeAndABinaryNeedingOnlyTheCLibrary() throws {
        let tarball = try #require(DistArtifacts.tarball, "no tarball: `make test` runs `make deb`, which runs `make dist`")
        let scratch = try ScratchDirectory("dist")
        let top = try unpack(tarball, into: scratch.url.path)
        let files = try runChecked(["find", top, "-type", "f"]).split(separator: "\n").map { String($0.dropFirst(top.count + 1)) }
        #expect(Set(files) == [
            "bin/onetun", "share/man/man1/onetun.1", "share/bash-completion/completions/onetun",
            "share/zsh/site-functions/_onetun", "share/fish/vendor_completions.d/onetun.fish",
            "lib/systemd/system/onetun@.service", "share/doc/onetun/README.md",
        ], "\(files.sorted())")
        let binary = "\(top)/bin/onetun"
        let version = try runChecked([binary, "--version"]).trimmed
        #expect(tarball.lastPathComponent.hasPrefix("onetun-\(version)-linux-"), "\(tarball.lastPathComponent), onetun --version: \(version)")
        let libraries = try sharedLibraries(of: binary)
        let glibc = libraries.filter { library in
            library.name.hasPrefix("linux-vdso.so") || library.name.hasPrefix("libc.so.") || library.name.hasPrefix("libm.so.")
                || library.name.contains("/ld-linux")
        }
        #expect(glibc.count == libraries.count, "beyond the C library: \(libraries.map(\.name))")
        print("make dist: \(tarball.lastPathComponent), bin/onetun needs \(libraries.map(\.name).joined(separator: " "))")
    }

    /// The demo's curl, with onetun from the tarball in a chroot that holds nothing but the unpacked
    /// tree, the C library and its loader, the private key and /proc: no Swift toolchain, no libuv, no
    /// libsodium, no libstdc++, no /dev or /etc. A wireguard-go peer in a namespace, a web server on its
    /// tunnel address, curl through onetun's forward on the namespace's 127.0.0.1.
    ///
    /// /proc is needed: the Swift runtime reads the arguments from /proc/self/cmdline (without it onetun
    /// sees none). It is mounted in a mount namespace of onetun's own (`unshare -m`), gone when it exits.
    @Test(.enabled(if: ForwarderTests.needsNamespaces, TestNamespace.skipReason), .enabled(if: DistArtifacts.tarballTestsEnabled, skipReason),
          .timeLimit(.minutes(2)))
    func forwardsInAChrootHoldingOnlyTheCLibrary() throws {
        let tarball = try #require(DistArtifacts.tarball, "no tarball: `make test` runs `make deb`, which runs `make dist`")
        let scratch = try ScratchDirectory("chroot")
        let top = try unpack(tarball, into: scratch.url.path)
        // The libraries at the paths the binary asks for (the loader's is absolute, the others are found
        // by the loader's default search, so the same directories work inside).
        for library in try sharedLibraries(of: "\(top)/bin/onetun") {
            guard let path = library.path else { continue }
            let target = top + path
            try FileManager.default.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try runChecked(["cp", "-L", path, target])
        }
        try FileManager.default.createDirectory(atPath: "\(top)/proc", withIntermediateDirectories: true)
        // The chroot's onetun with `arguments`; every step execs, so the PID is onetun's.
        func chrooted(_ arguments: [String]) -> [String] {
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             #"mount -t proc proc "$0/proc" && exec chroot "$0" /bin/onetun "$@""#, top] + arguments
        }
        let version = try runChecked(chrooted(["--version"])).trimmed
        #expect(tarball.lastPathComponent.hasPrefix("onetun-\(version)-linux-"), "onetun --version in the chroot: \(version)")

        try withForwardSession { s in
            let www = s.directory.appendingPathComponent("www")
            try FileManager.default.createDirectory(at: www, withIntermediateDirectories: true)
            let page = "behind the peer, reached by onetun \(version) from make dist"
            try "<p>\(page)</p>\n".write(to: www.appendingPathComponent("index.html"), atomically: true, encoding: .utf8)
            let server = try s.namespace.spawn(["python3", "-m", "http.server", "8000", "--bind", "192.168.4.1", "--directory", www.path],
                                               logName: "http.log")
            defer { server.terminate() }
            try waitUntilListening(s, "192.168.4.1", 8000, child: server)

            try FileManager.default.copyItem(atPath: s.peer.privateKeyFile.path, toPath: "\(top)/onetun.key")
            chmod("\(top)/onetun.key", 0o600)
            let onetun = try s.namespace.spawn(chrooted([
                "127.0.0.1:18080:192.168.4.1:8000", "--private-key-file", "/onetun.key",
                "--endpoint-public-key", s.peer.peer.publicKey, "--endpoint-addr", "127.0.0.1:\(s.peer.peer.listenPort)",
                "--source-peer-ip", "192.168.4.3",
            ]), logName: "onetun-dist.log")
            defer { onetun.terminate() }
            try s.waitFor(onetun, "tunnel to", seconds: 10)
            let curl = try s.peer.execute(["curl", "-sS", "--max-time", "20", "http://127.0.0.1:18080/"], timeout: 30)
            #expect(curl.status == 0 && curl.stdout.contains(page), "curl (\(curl.status)): \(curl.stdout) \(curl.stderr)\nonetun: \(onetun.output)")
            #expect(!onetun.terminate(), "onetun ignored SIGTERM: \(onetun.output)")
        }
    }

    /// Polls until something accepts TCP connections on `host`:`port` in the session's namespace.
    func waitUntilListening(_ s: ForwardSession, _ host: String, _ port: UInt16, child: ChildProcess) throws {
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if try s.peer.execute(["bash", "-c", "exec 3<>/dev/tcp/\(host)/\(port)"], timeout: 5).status == 0 { return }
            guard child.isRunning else { throw HarnessError("\(child.arguments.joined(separator: " ")) exited: \(child.output)") }
            usleep(50_000)
        }
        throw HarnessError("nothing listens on \(host):\(port): \(child.output)")
    }
}
