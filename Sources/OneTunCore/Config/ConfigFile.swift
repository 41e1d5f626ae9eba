/// A configuration file: the WireGuard part in wg-quick(8) form, wireproxy's tunnels, and onetun's own
/// forwards and options, in any mix.
///
/// The parser is sans-I/O like the rest of the core: it is handed the text, a file name for its messages
/// and the environment for wireproxy's `$VAR` values, and returns a model or throws a ``ConfigError`` that
/// names the file and line. It reads no file itself: wireproxy's `WGConfig = path` is returned as
/// ``wgConfig`` for the caller to read, parse and ``merge(wireGuard:)``.
///
/// ```
/// var config = try ConfigFile.parse(text, fileName: path, environment: env)
/// if let wg = config.wgConfigPath {
///     try config.merge(wireGuard: ConfigFile.parse(read(wg), fileName: wg, environment: env))
/// }
/// try config.validate()
/// config.warnings.forEach { log.warning("\($0)") }
/// let forwards = try config.portForwards(sourcePeerIP: ...)
/// ```
///
/// ## The format
/// Lines are `Key = value` under `[Section]` headers. Section and key names are case-insensitive (wg-quick
/// matches with `nocasematch`, wireproxy loads with go-ini's `Insensitive`). `#` starts a comment anywhere
/// on a line, as in wg-quick and wg(8); a line whose first character is `;` is a comment too, as in go-ini.
/// Blank lines and the whitespace around keys and values do not matter. The value is everything after the
/// first `=`, so base64 padding needs no quoting; there is no quoting at all.
///
/// - `[Interface]` (once): `PrivateKey`, `Address`, `DNS`, `MTU`, `ListenPort`. `Address` and `DNS` are
///   lists (commas or spaces, as wg-quick splits them) and add up over repeated lines. wg-quick's `Table`,
///   `PreUp`, `PostUp`, `PreDown`, `PostDown`, `SaveConfig`, wg's `FwMark` and wireproxy's `CheckAlive`,
///   `CheckAliveInterval` are accepted and reported in one ``ConfigWarning/Kind/ignoredKeys(_:)`` warning.
/// - `[Peer]` (any number): `PublicKey` (required), `PresharedKey`, `AllowedIPs` (a comma list, adding up;
///   empty means none), `Endpoint`, `PersistentKeepalive` (seconds, or `off`).
/// - wireproxy: `WGConfig = path` before any section; `[TCPClientTunnel]` (`BindAddress`, `Target`),
///   `[TCPServerTunnel]` (`ListenPort`, `Target`), `[UDPProxyTunnel]` (`BindAddress`, `Target`,
///   `InactivityTimeout`, default 0 = never), `[Socks5]` and `[http]` (`BindAddress`, `Username`,
///   `Password`; `[http]`'s `CertFile` and `KeyFile` are refused: no TLS), `[STDIOTunnel]` (`Target`).
///   `[SNI]` and `[Resolve]` are recognised and refused as not supported yet.
/// - onetun: `[Forward]` with `Local` and `Remote` lines in the positional notation of ``PortForwardSpec``,
///   and `[OneTun]`, whose `name = value` lines are the long options without their dashes, handed over
///   uninterpreted in ``options``.
///
/// Following wireproxy, a value of `PrivateKey`, `Address`, `DNS`, `PublicKey`, `AllowedIPs`,
/// `BindAddress` or `Target` that begins with `$` is read from the environment variable it names (whole
/// value: `$WG_KEY`); an unset variable is an error, and `$$` at the start stands for a literal `$`. Other
/// keys take `$` literally.
///
/// Every malformed line is an error; nothing is skipped silently except comments and the keys above.
///
/// ## Equality
/// Two models are equal when they configure the same thing. Where things were written is not part of it:
/// the line numbers of the sections and keys (each a ``SourceLine``), ``fileName``, ``wireGuardFileName``
/// and the ``warnings`` take no part in `==`. So ``canonicalText`` parses back to an equal model, though
/// every line moves and the warnings that led to a normalisation do not come back.
public struct ConfigFile: Equatable, Sendable {
    /// The name the file was parsed under, for messages: the path as the user gave it, normally.
    public var fileName: String
    /// The file ``interface`` and ``peers`` were read from: ``fileName``, or after
    /// ``merge(wireGuard:)`` the name the WGConfig file was parsed under. Messages about them name it.
    public var wireGuardFileName: String
    /// wireproxy's `WGConfig = path`, until ``merge(wireGuard:)`` brings that file's part in.
    public var wgConfig: WGConfigReference?
    /// The `[Interface]` section, or nil when the file has none.
    public var interface: Interface?
    /// The `[Peer]` sections in file order.
    public var peers: [Peer]
    /// wireproxy's tunnel sections in file order.
    public var tunnels: [Tunnel]
    /// The `Local` and `Remote` lines of the `[Forward]` sections, in file order.
    public var forwards: [Forward]
    /// The lines of the `[OneTun]` sections in file order, for the CLI to interpret.
    public var options: [Option]
    /// What the reader should be told, each with its place; the caller logs them.
    public var warnings: [ConfigWarning]

    /// An empty configuration, as parsing an empty file gives.
    public init(fileName: String) {
        self.fileName = fileName
        wireGuardFileName = fileName
        wgConfig = nil
        interface = nil
        peers = []
        tunnels = []
        forwards = []
        options = []
        warnings = []
    }

    /// Parses `text`, read from the file `fileName` (used only in messages). `environment` supplies the
    /// `$VAR` values; pass the process environment, or nothing to refuse every `$VAR`.
    ///
    /// The result may still lack what a tunnel needs (a WGConfig file to merge, a private key): call
    /// ``validate()`` once everything is merged.
    public static func parse(
        _ text: String, fileName: String, environment: [String: String] = [:]
    ) throws(ConfigError) -> ConfigFile {
        var parser = ConfigParser(fileName: fileName, environment: environment)
        return try parser.parse(text)
    }

    /// The file to read for ``wgConfig``, as wireproxy finds it: a bare file name (no `/`) lives beside
    /// this file, so it is joined to the directory of ``fileName`` (taken as the path this file was read
    /// from); any other path is used as written. nil without `WGConfig`.
    public var wgConfigPath: String? {
        guard let path = wgConfig?.path else { return nil }
        guard !path.utf8.contains(UInt8(ascii: "/")), let slash = fileName.utf8.lastIndex(of: UInt8(ascii: "/"))
        else { return path }
        return String(fileName[..<slash]) + "/" + path
    }

    /// Takes `[Interface]` and the peers from `wireGuard`, the parsed file that ``wgConfig`` names, as
    /// wireproxy does; ``wgConfig`` becomes nil and ``wireGuardFileName`` that file's name. Its warnings
    /// join these.
    ///
    /// That file must be a WireGuard configuration: a tunnel, forward, option or WGConfig of its own is an
    /// error there (wireproxy would ignore it silently), and so is an `[Interface]` or `[Peer]` here.
    public mutating func merge(wireGuard other: ConfigFile) throws(ConfigError) {
        if let reference = other.wgConfig {
            throw other.error(line: reference.line, key: "WGConfig", "a WGConfig file cannot name another one")
        }
        let stray = other.tunnels.map { ($0.line, $0.kind.sectionName) } + other.forwards.map { ($0.line, "[Forward]") }
            + other.options.map { ($0.line, "[OneTun]") }
        if let first = stray.min(by: { $0.0 < $1.0 }) {
            throw other.error(line: first.0, "\(first.1) is not read from a WGConfig file, only [Interface] and [Peer] are")
        }
        // Only possible when this file has no WGConfig: parsing refuses both together.
        if let line = interface?.line ?? peers.first?.line {
            throw error(line: line, "the WireGuard part cannot come from both this file and \(other.fileName.debugDescription)")
        }
        wgConfig = nil
        interface = other.interface
        peers = other.peers
        wireGuardFileName = other.fileName
        warnings += other.warnings
    }

    /// Checks what only the whole configuration can show: that a WGConfig file was merged, that there is
    /// an `[Interface]` with a `PrivateKey` (`FILE: [Interface] has no PrivateKey`) and at least one
    /// `[Peer]`. Run it after ``merge(wireGuard:)``.
    public func validate() throws(ConfigError) {
        if let reference = wgConfig {
            throw error(line: reference.line, key: "WGConfig", "\(reference.path.debugDescription) was not read")
        }
        guard let interface else {
            throw ConfigError(file: wireGuardFileName, line: nil, "no [Interface] section")
        }
        guard interface.privateKey != nil else {
            throw ConfigError(file: wireGuardFileName, line: nil, "[Interface] has no PrivateKey")
        }
        guard !peers.isEmpty else {
            throw ConfigError(file: wireGuardFileName, line: nil, "no [Peer] section")
        }
    }

    /// An error about `line` of this file (``fileName``), for checks the parser cannot make, such as an
    /// `[OneTun]` option's value. For ``interface`` and ``peers`` name ``wireGuardFileName`` instead.
    public func error(line: Int?, key: String? = nil, _ reason: String) -> ConfigError {
        ConfigError(file: fileName, line: line, key: key, reason)
    }

    /// Every forward the file asks for, in file order: `[Forward]` lines (a `TCP,UDP` notation gives two)
    /// and wireproxy's tunnels. Remote forwards listen on `sourcePeerIP`, onetun's own address in the
    /// tunnel; a `Remote` notation that names another `src_host` is an error on its line.
    ///
    /// Host names stay names for the CLI to resolve. Note that wireproxy resolves a tunnel's `Target`
    /// through the tunnel's DNS servers, while onetun resolves every name on this machine.
    public func portForwards(sourcePeerIP: IPAddress) throws(ConfigError) -> [PortForward] {
        var located: [(line: Int, forwards: [PortForward])] = []
        for forward in forwards {
            let specs: [PortForwardSpec]
            do {
                specs = try forward.remote
                    ? PortForwardSpec.parseRemote(forward.notation, sourcePeerIP: sourcePeerIP)
                    : PortForwardSpec.parse(forward.notation)
            } catch {
                throw self.error(line: forward.line, key: forward.remote ? "Remote" : "Local", error.description)
            }
            located.append((forward.line, specs.map { PortForward(spec: $0, line: forward.line) }))
        }
        for tunnel in tunnels {
            let forward: PortForward
            switch tunnel.kind {
            case .tcpClient(let bind, let target):
                forward = PortForward(
                    spec: PortForwardSpec(
                        source: bind.host, sourcePort: bind.port, destination: target.host,
                        destinationPort: target.port, proto: .tcp),
                    line: tunnel.line)
            case .tcpServer(let port, let target):
                forward = PortForward(
                    spec: PortForwardSpec(
                        source: .address(sourcePeerIP), sourcePort: port, destination: target.host,
                        destinationPort: target.port, proto: .tcp, remote: true),
                    line: tunnel.line)
            case .udpProxy(let bind, let target, let timeout):
                forward = PortForward(
                    spec: PortForwardSpec(
                        source: bind.host, sourcePort: bind.port, destination: target.host,
                        destinationPort: target.port, proto: .udp),
                    line: tunnel.line, inactivityTimeout: timeout)
            case .socks5, .http, .stdio:
                continue  // proxies and the stdio tunnel are not port forwards
            }
            located.append((tunnel.line, [forward]))
        }
        // Both lists are in file order already; a stable sort interleaves them.
        return located.enumerated().sorted { ($0.element.line, $0.offset) < ($1.element.line, $1.offset) }
            .flatMap(\.element.forwards)
    }

    /// Content equality: see "Equality" above.
    public static func == (a: ConfigFile, b: ConfigFile) -> Bool {
        a.wgConfig == b.wgConfig && a.interface == b.interface && a.peers == b.peers && a.tunnels == b.tunnels
            && a.forwards == b.forwards && a.options == b.options
    }
}

extension ConfigFile {
    /// wireproxy's `WGConfig = path`: the file holding `[Interface]` and `[Peer]`.
    public struct WGConfigReference: Hashable, Sendable {
        /// The path as written; ``ConfigFile/wgConfigPath`` is where to read it.
        public var path: String
        /// The 1-based line of the `WGConfig` key.
        @SourceLine public var line: Int

        /// A reference to `path`, written on `line`.
        public init(path: String, line: Int) {
            self.path = path
            self.line = line
        }
    }

    /// The `[Interface]` section: this end of the tunnel.
    public struct Interface: Hashable, Sendable {
        /// Our static private key.
        public var privateKey: Key32?
        /// Our addresses inside the tunnel, in file order.
        public var addresses: [Address]
        /// The `DNS` entries that are IP addresses: DNS servers.
        public var dnsServers: [IPAddress]
        /// The `DNS` entries that are names: search domains, as wg-quick reads them.
        public var dnsSearchDomains: [String]
        /// The tunnel MTU, 576–65475 (the CLI's range); nil when not given (wg-quick then picks one,
        /// wireproxy takes 1420).
        public var mtu: Int?
        /// The UDP port to listen on; 0 asks for any. nil when not given.
        public var listenPort: UInt16?
        /// The 1-based line of the `[Interface]` header.
        @SourceLine public var line: Int

        /// An interface; every part may be filled in later.
        public init(
            privateKey: Key32? = nil, addresses: [Address] = [], dnsServers: [IPAddress] = [],
            dnsSearchDomains: [String] = [], mtu: Int? = nil, listenPort: UInt16? = nil, line: Int
        ) {
            self.privateKey = privateKey
            self.addresses = addresses
            self.dnsServers = dnsServers
            self.dnsSearchDomains = dnsSearchDomains
            self.mtu = mtu
            self.listenPort = listenPort
            self.line = line
        }
    }

    /// One `Address` entry: an address of ours, and the prefix length it was written with, if any. The
    /// length only describes the network around us (wg-quick adds a route for it); it is kept for printing
    /// and the host bits are not cleared.
    public struct Address: Hashable, Sendable, CustomStringConvertible {
        /// Our address.
        public var address: IPAddress
        /// The length after `/`, at most 32 or 128; nil when written bare.
        public var prefixLength: UInt8?

        /// An address, with the prefix length it was written with.
        public init(_ address: IPAddress, prefixLength: UInt8? = nil) {
            self.address = address
            self.prefixLength = prefixLength
        }

        /// `10.0.0.2/32`, `fd00::2`: as written, with the address canonical.
        public var description: String { prefixLength.map { "\(address)/\($0)" } ?? "\(address)" }
    }

    /// A host and a port: `Endpoint`, `BindAddress`, `Target`.
    public struct HostPort: Hashable, Sendable, CustomStringConvertible {
        /// An address, or a name for the CLI to resolve.
        public var host: ForwardHost
        /// 1–65535.
        public var port: UInt16

        /// `host:port`.
        public init(_ host: ForwardHost, _ port: UInt16) {
            self.host = host
            self.port = port
        }

        /// `host:port`, IPv6 in brackets.
        public var description: String { "\(host):\(port)" }
    }

    /// A proxy's `Username` and `Password` (either may be empty when only the other was given).
    public struct Credentials: Hashable, Sendable {
        public var username: String
        public var password: String

        public init(username: String, password: String) {
            self.username = username
            self.password = password
        }
    }

    /// One `[Peer]` section.
    public struct Peer: Hashable, Sendable {
        /// The peer's static public key; unique among the peers.
        public var publicKey: Key32
        /// The preshared key, when there is one.
        public var presharedKey: Key32?
        /// The networks routed to this peer, normalised, each once; a network another peer lists later
        /// has been taken away (see ``ConfigWarning/Kind/allowedIPTakenByLaterPeer(_:earlierPeerLine:laterPeerLine:)``).
        public var allowedIPs: [IPPrefix]
        /// Where to reach the peer; nil when it is to reach us.
        public var endpoint: HostPort?
        /// The persistent keepalive interval in seconds, 1–65535; nil when off (`0`, `off` or not given).
        public var persistentKeepalive: UInt16?
        /// The 1-based line of the `[Peer]` header.
        @SourceLine public var line: Int

        /// A peer.
        public init(
            publicKey: Key32, presharedKey: Key32? = nil, allowedIPs: [IPPrefix] = [], endpoint: HostPort? = nil,
            persistentKeepalive: UInt16? = nil, line: Int
        ) {
            self.publicKey = publicKey
            self.presharedKey = presharedKey
            self.allowedIPs = allowedIPs
            self.endpoint = endpoint
            self.persistentKeepalive = persistentKeepalive
            self.line = line
        }
    }

    /// One of wireproxy's tunnel sections.
    public struct Tunnel: Hashable, Sendable {
        /// Which section, with its keys.
        public enum Kind: Hashable, Sendable {
            /// `[TCPClientTunnel]`: listen on `bindAddress` here, connect to `target` through the tunnel
            /// (a local TCP forward). A `BindAddress` with no host (`:8080`) means 0.0.0.0.
            case tcpClient(bindAddress: HostPort, target: HostPort)
            /// `[TCPServerTunnel]`: listen on `listenPort` inside the tunnel, connect to `target` from here
            /// (a remote TCP forward).
            case tcpServer(listenPort: UInt16, target: HostPort)
            /// `[UDPProxyTunnel]`: a local UDP forward whose flows end after `inactivityTimeout` idle
            /// seconds; 0, the default, never ends them.
            case udpProxy(bindAddress: HostPort, target: HostPort, inactivityTimeout: UInt32)
            /// `[Socks5]`: a SOCKS5 proxy listening on `bindAddress` here, asking for `credentials`
            /// (RFC 1929) when given.
            case socks5(bindAddress: HostPort, credentials: Credentials?)
            /// `[http]`: an HTTP proxy listening on `bindAddress` here (plain HTTP; CONNECT and
            /// absolute-form requests), asking for `credentials` (Basic) when given.
            case http(bindAddress: HostPort, credentials: Credentials?)
            /// `[STDIOTunnel]`: one connection to `target` through the tunnel, over standard input and output.
            case stdio(target: HostPort)

            /// `[TCPClientTunnel]`, …: the header, as wireproxy spells it.
            public var sectionName: String {
                switch self {
                case .tcpClient: "[TCPClientTunnel]"
                case .tcpServer: "[TCPServerTunnel]"
                case .udpProxy: "[UDPProxyTunnel]"
                case .socks5: "[Socks5]"
                case .http: "[http]"
                case .stdio: "[STDIOTunnel]"
                }
            }
        }

        /// The section and its keys.
        public var kind: Kind
        /// The 1-based line of the section header.
        @SourceLine public var line: Int

        /// A tunnel from the section on `line`.
        public init(_ kind: Kind, line: Int) {
            self.kind = kind
            self.line = line
        }
    }

    /// One `Local` or `Remote` line of a `[Forward]` section.
    public struct Forward: Hashable, Sendable {
        /// The notation as written, surrounding whitespace removed; it parses with ``PortForwardSpec``.
        public var notation: String
        /// `Remote`: a remote forward, whose source is onetun's address inside the tunnel.
        public var remote: Bool
        /// The 1-based line of the key.
        @SourceLine public var line: Int

        /// A forward written on `line`.
        public init(notation: String, remote: Bool, line: Int) {
            self.notation = notation
            self.remote = remote
            self.line = line
        }
    }

    /// One `name = value` line of an `[OneTun]` section, not interpreted: the CLI checks it as it checks
    /// the option `--name value`, and reports problems with ``ConfigFile/error(line:key:_:)``.
    public struct Option: Hashable, Sendable {
        /// The long option name, lower-cased, without dashes: `connect-timeout`.
        public var name: String
        /// The value, surrounding whitespace removed; may be empty.
        public var value: String
        /// The 1-based line of the key.
        @SourceLine public var line: Int

        /// An option written on `line`.
        public init(name: String, value: String, line: Int) {
            self.name = name
            self.value = value
            self.line = line
        }
    }

    /// A forward ready for the CLI, with the line it came from for later messages.
    public struct PortForward: Hashable, Sendable {
        /// What to forward.
        public var spec: PortForwardSpec
        /// The 1-based line of the `[Forward]` key or the tunnel section header.
        public var line: Int
        /// A `[UDPProxyTunnel]`'s `InactivityTimeout` in seconds (0 = never); nil for every other forward.
        public var inactivityTimeout: UInt32?

        /// A forward from `line`.
        public init(spec: PortForwardSpec, line: Int, inactivityTimeout: UInt32? = nil) {
            self.spec = spec
            self.line = line
            self.inactivityTimeout = inactivityTimeout
        }
    }
}

extension ConfigFile {
    /// A line number that takes no part in equality or hashing: every one equals every other. The models'
    /// `line` properties are wrapped in it so that their synthesised `==` compares what they configure, not
    /// where it was written (see "Equality" on ``ConfigFile``).
    @propertyWrapper public struct SourceLine: Hashable, Sendable {
        /// The 1-based line number.
        public var wrappedValue: Int

        /// Wraps `wrappedValue`.
        public init(wrappedValue: Int) { self.wrappedValue = wrappedValue }

        /// Always true: where a thing was written is not part of what it is.
        public static func == (_: SourceLine, _: SourceLine) -> Bool { true }

        /// Adds nothing, consistently with `==`.
        public func hash(into hasher: inout Hasher) {}
    }
}

extension ConfigFile {
    /// The model as a configuration file that parses back to an equal model (see "Equality"): sections in a
    /// fixed order (WGConfig, `[Interface]`, the peers, the tunnels, one `[Forward]`, one `[OneTun]`), keys
    /// in a fixed order and spelling, lists on one line, addresses and networks in canonical form, no
    /// comments, no ignored keys. A merged model prints as one self-contained file.
    ///
    /// It holds the private key, which is why the model is not `CustomStringConvertible`: interpolating a
    /// configuration into a log line should not be possible by accident.
    public var canonicalText: String {
        var blocks: [[String]] = []
        if let wgConfig { blocks.append(["WGConfig = \(wgConfig.path)"]) }
        if let interface {
            var lines = ["[Interface]"]
            if let key = interface.privateKey { lines.append("PrivateKey = \(key.base64)") }
            if !interface.addresses.isEmpty {
                lines.append("Address = " + interface.addresses.map(\.description).joined(separator: ", "))
            }
            let dns = interface.dnsServers.map(\.description) + interface.dnsSearchDomains
            if !dns.isEmpty { lines.append("DNS = " + dns.joined(separator: ", ")) }
            if let mtu = interface.mtu { lines.append("MTU = \(mtu)") }
            if let port = interface.listenPort { lines.append("ListenPort = \(port)") }
            blocks.append(lines)
        }
        for peer in peers {
            var lines = ["[Peer]", "PublicKey = \(peer.publicKey.base64)"]
            if let key = peer.presharedKey { lines.append("PresharedKey = \(key.base64)") }
            if !peer.allowedIPs.isEmpty {
                lines.append("AllowedIPs = " + peer.allowedIPs.map(\.description).joined(separator: ", "))
            }
            if let endpoint = peer.endpoint { lines.append("Endpoint = \(endpoint)") }
            if let seconds = peer.persistentKeepalive { lines.append("PersistentKeepalive = \(seconds)") }
            blocks.append(lines)
        }
        for tunnel in tunnels {
            switch tunnel.kind {
            case .tcpClient(let bind, let target):
                blocks.append([tunnel.kind.sectionName, "BindAddress = \(bind)", "Target = \(target)"])
            case .tcpServer(let port, let target):
                blocks.append([tunnel.kind.sectionName, "ListenPort = \(port)", "Target = \(target)"])
            case .udpProxy(let bind, let target, let timeout):
                var lines = [tunnel.kind.sectionName, "BindAddress = \(bind)", "Target = \(target)"]
                if timeout != 0 { lines.append("InactivityTimeout = \(timeout)") }
                blocks.append(lines)
            case .socks5(let bind, let credentials), .http(let bind, let credentials):
                var lines = [tunnel.kind.sectionName, "BindAddress = \(bind)"]
                // A value that starts with "$" is written "$$…" so that it does not name a variable.
                func escaped(_ v: String) -> String { v.utf8.first == UInt8(ascii: "$") ? "$" + v : v }
                if let credentials {
                    if !credentials.username.isEmpty { lines.append("Username = \(escaped(credentials.username))") }
                    if !credentials.password.isEmpty { lines.append("Password = \(escaped(credentials.password))") }
                }
                blocks.append(lines)
            case .stdio(let target):
                blocks.append([tunnel.kind.sectionName, "Target = \(target)"])
            }
        }
        if !forwards.isEmpty {
            blocks.append(["[Forward]"] + forwards.map { "\($0.remote ? "Remote" : "Local") = \($0.notation)" })
        }
        if !options.isEmpty {
            blocks.append(["[OneTun]"] + options.map { $0.value.isEmpty ? "\($0.name) =" : "\($0.name) = \($0.value)" })
        }
        return blocks.map { $0.joined(separator: "\n") + "\n" }.joined(separator: "\n")
    }
}
