/// Why a configuration file was refused, and where: `FILE:LINE: key: why`.
///
/// Without a key (a section header, a line with no `=`) it reads `FILE:LINE: why`; for the file as a whole
/// (a missing private key) `FILE: why`. The description is one line: text from the file is quoted and
/// escaped, and key material is never quoted (a mistyped private key is still a private key).
///
/// The parser throws these; a caller that checks what the parser cannot know (an option's value in
/// `[OneTun]`, a forward against the source peer IP) builds its own with ``init(file:line:key:_:)`` or
/// ``ConfigFile/error(line:key:_:)``, so every message about a file reads the same.
public struct ConfigError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The file's name as given to the parser.
    public var file: String
    /// The 1-based line at fault; nil for a problem of the whole file.
    public var line: Int?
    /// The key at fault as the format spells it (`PrivateKey`), or nil.
    public var key: String?
    /// What is wrong, in a few words.
    public var reason: String

    /// An error about `key` on `line` of `file`.
    public init(file: String, line: Int?, key: String? = nil, _ reason: String) {
        self.file = file
        self.line = line
        self.key = key
        self.reason = reason
    }

    /// `FILE:LINE: key: why`, `FILE:LINE: why` or `FILE: why`.
    public var description: String {
        var text = file
        if let line { text += ":\(line)" }
        text += ": "
        if let key { text += "\(key): " }
        return text + reason
    }
}

/// Something in a configuration file that was accepted but that the reader should know about; the caller
/// logs each one.
public struct ConfigWarning: Hashable, Sendable, CustomStringConvertible {
    /// What the warning is about.
    public enum Kind: Hashable, Sendable {
        /// Keys accepted and ignored: those of wg-quick and wg(8) that configure a kernel interface
        /// (`Table`, `PreUp`, `PostUp`, `PreDown`, `PostDown`, `SaveConfig`, `FwMark`) and wireproxy's
        /// health check (`CheckAlive`, `CheckAliveInterval`). One warning names them all.
        case ignoredKeys([IgnoredKey])
        /// Two peers list the same allowed IP. As in wg, the later peer takes it and the earlier one loses
        /// it; the warning's line is the later peer's `AllowedIPs` line.
        case allowedIPTakenByLaterPeer(IPPrefix, earlierPeerLine: Int, laterPeerLine: Int)
        /// An allowed IP written with bits set past its length (`10.1.2.3/8`), read as the network
        /// (`10.0.0.0/8`), as wg(8) does after the same warning.
        case allowedIPHostBits(written: String, IPPrefix)
    }

    /// One ignored key: how the format spells it and the line it was on.
    public struct IgnoredKey: Hashable, Sendable {
        /// The key as the format spells it (`PostUp`).
        public var key: String
        /// The 1-based line it was on.
        public var line: Int

        /// A key ignored on `line`.
        public init(key: String, line: Int) {
            self.key = key
            self.line = line
        }
    }

    /// The file's name as given to the parser.
    public var file: String
    /// The 1-based line concerned; nil for the ignored-keys warning, which names its lines itself.
    public var line: Int?
    /// What the warning is about.
    public var kind: Kind

    /// A warning of `kind` about `line` of `file`.
    public init(file: String, line: Int?, kind: Kind) {
        self.file = file
        self.line = line
        self.kind = kind
    }

    /// One line in the form of ``ConfigError``'s: `FILE:LINE: key: what`.
    public var description: String {
        let place = line.map { "\(file):\($0)" } ?? file
        switch kind {
        case .ignoredKeys(let keys):
            // One entry per key, its lines together: "PostUp (lines 7, 8)".
            var order: [String] = []
            var lines: [String: [Int]] = [:]
            for ignored in keys {
                if lines[ignored.key] == nil { order.append(ignored.key) }
                lines[ignored.key, default: []].append(ignored.line)
            }
            let list = order.map { key in
                let numbers = lines[key]!
                return "\(key) (line\(numbers.count > 1 ? "s" : "") \(numbers.map(String.init).joined(separator: ", ")))"
            }
            return "\(place): ignoring keys onetun has no use for (it creates no network interface, runs no "
                + "scripts and has no health check): \(list.joined(separator: ", "))"
        case .allowedIPTakenByLaterPeer(let prefix, let earlier, let later):
            return "\(place): AllowedIPs: \(prefix) is also an allowed IP of the peer at line \(earlier); "
                + "as in wg, the later peer (line \(later)) takes it and the earlier one no longer has it"
        case .allowedIPHostBits(let written, let prefix):
            return "\(place): AllowedIPs: \(written.debugDescription) has bits set past its length; "
                + "read as \(prefix)"
        }
    }
}
