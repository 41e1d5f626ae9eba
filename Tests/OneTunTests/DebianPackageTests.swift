import Foundation
import Glibc
import Testing

/// `make deb`'s package: lintian's verdict, then a real `dpkg -i` and `dpkg -r` on this machine (root).
@Suite(.serialized) struct DebianPackageTests {
    static let skipReason: Comment = "needs root and onetun_*.deb in the package root (make deb)"

    /// What the package installs, each checked present after `dpkg -i` and gone after `dpkg -r`.
    static let files = [
        "/usr/bin/onetun", "/usr/share/man/man1/onetun.1.gz", "/usr/share/bash-completion/completions/onetun",
        "/usr/share/zsh/vendor-completions/_onetun", "/usr/share/fish/vendor_completions.d/onetun.fish",
        "/usr/lib/systemd/system/onetun@.service", "/usr/share/doc/onetun/copyright",
        "/usr/share/doc/onetun/changelog.Debian.gz", "/usr/share/lintian/overrides/onetun",
    ]

    /// No E: line. Warnings are printed, not failed on; the full output goes to the test log.
    @Test(.enabled(if: DistArtifacts.debTestsEnabled, skipReason), .timeLimit(.minutes(3)))
    func lintianReportsNoErrors() throws {
        let deb = try #require(DistArtifacts.deb, "no package: `make test` runs `make deb`")
        let outcome = try Command.execute(["lintian", "--info", "--pedantic", "--display-experimental", deb.path], timeout: 170)
        let tags = outcome.stdout.split(separator: "\n").filter { line in
            line.dropFirst().hasPrefix(": ") && "EWIPXO".contains(line.first ?? " ")
        }
        let errors = tags.filter { $0.hasPrefix("E:") }
        #expect(errors.isEmpty, "lintian \(deb.lastPathComponent):\n\(outcome.stdout)")
        #expect(outcome.status == 0, "lintian (\(outcome.status)): \(outcome.stderr)")
        print("lintian \(deb.lastPathComponent): \(tags.isEmpty ? "no tags" : tags.joined(separator: "; "))")
    }

    func packageStatus() throws -> String {
        try Command.execute(["dpkg-query", "-W", "-f=${db:Status-Status}", "onetun"]).stdout.trimmed
    }

    /// Installs the package for real, checks its files and the installed unit, removes it, and checks
    /// that nothing is left. A onetun package installed before is put back afterwards (this package, at
    /// this tree's version); a file at one of the package's paths that no package owns (a hand-copied
    /// binary) stops the test instead of being overwritten. `make install` uses /usr/local: no clash.
    @Test(.enabled(if: DistArtifacts.debTestsEnabled, skipReason), .timeLimit(.minutes(3)))
    func installsAndRemovesCleanly() throws {
        let deb = try #require(DistArtifacts.deb, "no package: `make test` runs `make deb`")
        let installedBefore = try packageStatus() == "installed"
        if !installedBefore {
            for file in Self.files where FileManager.default.fileExists(atPath: file) {
                let owner = try Command.execute(["dpkg", "-S", file])
                Issue.record("\(file) exists before the install (dpkg -S: \(owner.stdout.trimmed)\(owner.stderr.trimmed)): dpkg -i would overwrite it or fail")
                return
            }
        }
        defer {
            if installedBefore, (try? Command.execute(["dpkg", "-i", deb.path], timeout: 120))?.status != 0 {
                Issue.record("onetun was installed before the test; putting \(deb.lastPathComponent) back failed")
            }
        }

        try runChecked(["dpkg", "-i", deb.path], timeout: 120)
        #expect(try packageStatus() == "installed")
        let listed = Set(try runChecked(["dpkg", "-L", "onetun"]).split(separator: "\n").map(String.init))
        for file in Self.files {
            #expect(FileManager.default.fileExists(atPath: file), "\(file) missing after dpkg -i")
            #expect(listed.contains(file), "dpkg -L onetun does not list \(file)")
        }
        let version = try runChecked(["dpkg-deb", "-f", deb.path, "Version"]).trimmed
        #expect(try runChecked(["/usr/bin/onetun", "--version"]).trimmed == String(version.prefix { $0 != "-" }))
        #expect(try runChecked(["man", "-w", "onetun"]).trimmed == "/usr/share/man/man1/onetun.1.gz")
        // The unit as installed, with the binary and the manual page where the package put them.
        let verify = try Command.execute(["systemd-analyze", "verify", "/usr/lib/systemd/system/onetun@.service"], timeout: 60)
        #expect(verify.status == 0 && verify.stderr.trimmed.isEmpty, "systemd-analyze verify: \(verify.stderr)")

        try runChecked(["dpkg", "-r", "onetun"], timeout: 120)
        let status = try packageStatus()
        #expect(status == "not-installed" || status.isEmpty, "after dpkg -r: \(status)")
        for file in Self.files + ["/usr/share/doc/onetun", "/usr/share/zsh/vendor-completions/_onetun"] {
            #expect(!FileManager.default.fileExists(atPath: file), "\(file) left after dpkg -r")
        }
    }
}
