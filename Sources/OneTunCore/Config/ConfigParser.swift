/// Reads a configuration file into a ``ConfigFile`` in one pass over its UTF-8 bytes (bytes, not
/// `Character`s: "\r\n" is one `Character`, and a combining mark after `=` or `#` would join it).
///
/// Each section is checked when the next one starts or the file ends; what concerns several sections (the
/// same allowed IP in two peers) is settled at the end.
struct ConfigParser {
    private let fileName: String
    private let environment: [String: String]
    private var config: ConfigFile

    private var section = Section.top
    /// Single-valued keys seen in the current section, with their lines.
    private var seen: [Key: Int] = [:]
    private var peer: PeerDraft?
    private var tunnel: TunnelDraft?

    /// Finished peers' public keys, with their peers' lines.
    private var publicKeys: [Key32: Int] = [:]
    /// For each finished peer, the line of each allowed IP (parallel to `config.peers[i].allowedIPs`).
    private var allowedIPLines: [[Int]] = []
    private var ignored: [ConfigWarning.IgnoredKey] = []
    private var lineWarnings: [ConfigWarning] = []

    init(fileName: String, environment: [String: String]) {
        self.fileName = fileName
        self.environment = environment
        config = ConfigFile(fileName: fileName)
    }

    // MARK: - Lines

    mutating func parse(_ text: String) throws(ConfigError) -> ConfigFile {
        var bytes = Array(text.utf8)
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }  // a byte-order mark (Notepad)
        var lineNumber = 0
        var start = 0
        while start <= bytes.count {
            let end = bytes[start...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.count
            lineNumber += 1
            try read(line: bytes[start..<end], number: lineNumber)
            start = end + 1
        }
        try finishSection()
        settleAllowedIPs()
        config.warnings = lineWarnings.enumerated()
            .sorted { ($0.element.line ?? 0, $0.offset) < ($1.element.line ?? 0, $1.offset) }.map(\.element)
        if !ignored.isEmpty {
            config.warnings.append(ConfigWarning(file: fileName, line: nil, kind: .ignoredKeys(ignored)))
        }
        return config
    }

    private mutating func read(line raw: ArraySlice<UInt8>, number: Int) throws(ConfigError) {
        // wg-quick and wg(8): "#" starts a comment anywhere. go-ini: so does ";" at the start of a line.
        let uncommented = raw[..<(raw.firstIndex(of: UInt8(ascii: "#")) ?? raw.endIndex)]
        let content = uncommented.trimmed
        guard let first = content.first, first != UInt8(ascii: ";") else { return }
        if first == UInt8(ascii: "[") {
            guard content.last == UInt8(ascii: "]"), content.count >= 2 else {
                throw error(number, "a section header is [Name] alone on its line")
            }
            try startSection(content.dropFirst().dropLast().trimmed, line: number)
            return
        }
        guard let equals = content.firstIndex(of: UInt8(ascii: "=")) else {
            throw error(number, "expected Key = value, or a [Section] header")
        }
        let key = content[..<equals].trimmed
        guard !key.isEmpty else { throw error(number, "no key before =") }
        // No key has a space or is this long. Such a "key" is most likely a line missing its "=" whose
        // value has one: base64 padding, which would quote most of a private key in the message.
        guard key.count <= 32, !key.contains(where: \.isASCIIWhitespace) else {
            throw error(number, "expected Key = value, or a [Section] header")
        }
        try entry(key: key.string, value: content[(equals + 1)...].trimmed.string, line: number)
    }

    // MARK: - Sections

    private enum Section {
        case top, interface, peer, tunnel, forward, oneTun
    }

    private enum TunnelKind {
        case tcpClient, tcpServer, udpProxy, socks5, http, stdio

        var sectionName: String {
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

    private struct PeerDraft {
        var line: Int
        var publicKey: Key32?
        var presharedKey: Key32?
        var allowedIPs: [IPPrefix] = []
        var allowedIPLines: [Int] = []
        var listed: Set<IPPrefix> = []
        var endpoint: ConfigFile.HostPort?
        var persistentKeepalive: UInt16?
    }

    private struct TunnelDraft {
        var kind: TunnelKind
        var line: Int
        var bindAddress: ConfigFile.HostPort?
        var listenPort: UInt16?
        var target: ConfigFile.HostPort?
        var inactivityTimeout: UInt32 = 0  // wireproxy's default: flows never time out
        var username: String?
        var password: String?
    }

    /// wireproxy's sections that onetun recognises but does not implement yet, as wireproxy spells them.
    private static let unsupportedSections = ["sni": "[SNI]", "resolve": "[Resolve]"]

    private mutating func startSection(_ name: ArraySlice<UInt8>, line: Int) throws(ConfigError) {
        try finishSection()
        seen = [:]
        switch name.asciiLowercased {
        case "interface":
            try refuseWithWGConfig("[Interface]", line: line)
            if let earlier = config.interface {
                throw error(line, "a second [Interface] section (the first is at line \(earlier.line))")
            }
            config.interface = ConfigFile.Interface(line: line)
            section = .interface
        case "peer":
            try refuseWithWGConfig("[Peer]", line: line)
            peer = PeerDraft(line: line)
            section = .peer
        case "tcpclienttunnel":
            tunnel = TunnelDraft(kind: .tcpClient, line: line)
            section = .tunnel
        case "tcpservertunnel":
            tunnel = TunnelDraft(kind: .tcpServer, line: line)
            section = .tunnel
        case "udpproxytunnel":
            tunnel = TunnelDraft(kind: .udpProxy, line: line)
            section = .tunnel
        case "socks5":
            tunnel = TunnelDraft(kind: .socks5, line: line)
            section = .tunnel
        case "http":
            tunnel = TunnelDraft(kind: .http, line: line)
            section = .tunnel
        case "stdiotunnel":
            tunnel = TunnelDraft(kind: .stdio, line: line)
            section = .tunnel
        case "forward":
            section = .forward
        case "onetun":
            section = .oneTun
        case let lowered:
            if let spelled = ConfigParser.unsupportedSections[lowered] {
                throw error(line, "\(spelled) is not supported yet")
            }
            throw error(line, "unknown section \("[\(name.string)]".debugDescription)")
        }
    }

    /// wireproxy reads `[Interface]` and `[Peer]` only from the WGConfig file when there is one, ignoring
    /// them here; having both is a mistake, so it is an error.
    private func refuseWithWGConfig(_ header: String, line: Int) throws(ConfigError) {
        if let reference = config.wgConfig {
            throw error(line, "\(header) cannot be used with WGConfig (line \(reference.line)), which names the "
                + "file holding the WireGuard part")
        }
    }

    private mutating func finishSection() throws(ConfigError) {
        if let draft = peer {
            peer = nil
            guard let publicKey = draft.publicKey else { throw error(draft.line, "[Peer] has no PublicKey") }
            publicKeys[publicKey] = draft.line
            config.peers.append(
                ConfigFile.Peer(
                    publicKey: publicKey, presharedKey: draft.presharedKey, allowedIPs: draft.allowedIPs,
                    endpoint: draft.endpoint, persistentKeepalive: draft.persistentKeepalive, line: draft.line))
            allowedIPLines.append(draft.allowedIPLines)
        }
        if let draft = tunnel {
            tunnel = nil
            let name = draft.kind.sectionName
            let kind: ConfigFile.Tunnel.Kind
            switch draft.kind {
            case .tcpClient, .udpProxy:
                guard let bind = draft.bindAddress else { throw error(draft.line, "\(name) has no BindAddress") }
                guard let target = draft.target else { throw error(draft.line, "\(name) has no Target") }
                kind = draft.kind == .tcpClient
                    ? .tcpClient(bindAddress: bind, target: target)
                    : .udpProxy(bindAddress: bind, target: target, inactivityTimeout: draft.inactivityTimeout)
            case .tcpServer:
                guard let port = draft.listenPort else { throw error(draft.line, "\(name) has no ListenPort") }
                guard let target = draft.target else { throw error(draft.line, "\(name) has no Target") }
                kind = .tcpServer(listenPort: port, target: target)
            case .socks5, .http:
                guard let bind = draft.bindAddress else { throw error(draft.line, "\(name) has no BindAddress") }
                // wireproxy asks for credentials when either is set; a missing one is then empty.
                let credentials = draft.username == nil && draft.password == nil
                    ? nil : ConfigFile.Credentials(username: draft.username ?? "", password: draft.password ?? "")
                kind = draft.kind == .socks5
                    ? .socks5(bindAddress: bind, credentials: credentials) : .http(bindAddress: bind, credentials: credentials)
            case .stdio:
                guard let target = draft.target else { throw error(draft.line, "\(name) has no Target") }
                kind = .stdio(target: target)
            }
            config.tunnels.append(ConfigFile.Tunnel(kind, line: draft.line))
        }
    }

    /// wg's rule for one allowed IP in two peers: the later peer takes it (its trie node is re-pointed), so
    /// the earlier peer loses it. Nested networks of different lengths are not a conflict: the longest
    /// prefix wins address by address, which is how a default route beside one specific peer is written.
    private mutating func settleAllowedIPs() {
        var owner: [IPPrefix: Int] = [:]
        var lost = [Set<IPPrefix>](repeating: [], count: config.peers.count)
        for (index, peer) in config.peers.enumerated() {
            for (prefix, line) in zip(peer.allowedIPs, allowedIPLines[index]) {
                if let earlier = owner[prefix] {
                    lost[earlier].insert(prefix)
                    lineWarnings.append(
                        ConfigWarning(
                            file: fileName, line: line,
                            kind: .allowedIPTakenByLaterPeer(
                                prefix, earlierPeerLine: config.peers[earlier].line, laterPeerLine: peer.line)))
                }
                owner[prefix] = index
            }
        }
        for index in config.peers.indices where !lost[index].isEmpty {
            config.peers[index].allowedIPs.removeAll { lost[index].contains($0) }
        }
    }

    // MARK: - Keys

    /// Every key the parser knows, spelled as its format documents it.
    private enum Key: String, CaseIterable {
        case wgConfig = "WGConfig"
        case privateKey = "PrivateKey", address = "Address", dns = "DNS", mtu = "MTU", listenPort = "ListenPort"
        case publicKey = "PublicKey", presharedKey = "PresharedKey", allowedIPs = "AllowedIPs"
        case endpoint = "Endpoint", persistentKeepalive = "PersistentKeepalive"
        case bindAddress = "BindAddress", target = "Target", inactivityTimeout = "InactivityTimeout"
        case local = "Local", remote = "Remote"
        case username = "Username", password = "Password", certFile = "CertFile", keyFile = "KeyFile"

        static let byLowercasedName = Dictionary(uniqueKeysWithValues: allCases.map { ($0.rawValue.lowercased(), $0) })

        /// Lists add up over repeated lines; any other key may be given once per section.
        var isList: Bool { [.address, .dns, .allowedIPs, .local, .remote].contains(self) }

        /// The keys whose values wireproxy reads with `parseString`, the function that expands `$VAR`.
        var readsEnvironment: Bool {
            [.privateKey, .address, .dns, .publicKey, .allowedIPs, .bindAddress, .target, .username, .password]
                .contains(self)
        }
    }

    /// The keys of each section. wg-quick's kernel-interface keys and wireproxy's health check are
    /// accepted in `[Interface]` and reported as ignored.
    private func keys(of section: Section) -> [Key] {
        switch section {
        case .top: [.wgConfig]
        case .interface: [.privateKey, .address, .dns, .mtu, .listenPort]
        case .peer: [.publicKey, .presharedKey, .allowedIPs, .endpoint, .persistentKeepalive]
        case .tunnel:
            switch tunnel!.kind {
            case .tcpClient: [.bindAddress, .target]
            case .tcpServer: [.listenPort, .target]
            case .udpProxy: [.bindAddress, .target, .inactivityTimeout]
            case .socks5: [.bindAddress, .username, .password]
            case .http: [.bindAddress, .username, .password, .certFile, .keyFile]
            case .stdio: [.target]
            }
        case .forward: [.local, .remote]
        case .oneTun: []
        }
    }

    private static let ignoredInterfaceKeys = [
        "Table", "PreUp", "PostUp", "PreDown", "PostDown", "SaveConfig", "FwMark", "CheckAlive", "CheckAliveInterval",
    ]
    private static let ignoredByLowercasedName = Dictionary(
        uniqueKeysWithValues: ignoredInterfaceKeys.map { ($0.lowercased(), $0) })

    private var sectionName: String {
        switch section {
        case .top: "the top of the file"
        case .interface: "[Interface]"
        case .peer: "[Peer]"
        case .tunnel: tunnel!.kind.sectionName
        case .forward: "[Forward]"
        case .oneTun: "[OneTun]"
        }
    }

    private mutating func entry(key written: String, value raw: String, line: Int) throws(ConfigError) {
        let lowered = Array(written.utf8)[...].asciiLowercased
        if section == .oneTun { return try option(lowered, written: written, value: raw, line: line) }
        if section == .interface, let spelled = ConfigParser.ignoredByLowercasedName[lowered] {
            ignored.append(ConfigWarning.IgnoredKey(key: spelled, line: line))
            return
        }
        guard let key = Key.byLowercasedName[lowered], keys(of: section).contains(key) else {
            if section == .top {
                throw error(line, key: written.displayed, "only WGConfig may come before the first section")
            }
            throw error(line, key: written.displayed, "not a key of \(sectionName)")
        }
        if !key.isList {
            if let first = seen[key] {
                throw error(line, key: key.rawValue, "given twice in this section (first at line \(first))")
            }
            seen[key] = line
        }
        var value = raw
        var variable: String?
        if key.readsEnvironment, raw.utf8.first == UInt8(ascii: "$") {
            if raw.utf8.starts(with: "$$".utf8) {
                value = String(raw.dropFirst())  // wireproxy: a leading "$$" is a literal "$"
            } else {
                let name = String(raw.dropFirst())
                guard let set = environment[name] else {
                    throw error(line, key: key.rawValue, "\(raw.debugDescription) names an unset environment variable")
                }
                value = Array(set.utf8)[...].trimmed.string
                variable = raw
            }
        }
        if value.isEmpty && key != .allowedIPs {
            throw error(line, key: key.rawValue, variable.map { "\($0.debugDescription) is empty" } ?? "no value")
        }
        try assign(key, value, line: line)
    }

    private mutating func assign(_ key: Key, _ value: String, line: Int) throws(ConfigError) {
        let at = ValueContext(file: fileName, line: line, key: key.rawValue)
        switch key {
        case .wgConfig:
            config.wgConfig = ConfigFile.WGConfigReference(path: value, line: line)
        case .privateKey:
            config.interface!.privateKey = try at.key(value)
        case .address:
            for item in try at.list(value) {
                config.interface!.addresses.append(try at.interfaceAddress(item))
            }
        case .dns:
            for item in try at.list(value) {
                switch try at.dnsEntry(item) {
                case .server(let address): config.interface!.dnsServers.append(address)
                case .searchDomain(let name): config.interface!.dnsSearchDomains.append(name)
                }
            }
        case .mtu:
            guard let mtu = decimal(value, upTo: 65475), mtu >= 576 else {
                throw at.error("\(value.debugDescription) is not an MTU between 576 and 65475")
            }
            config.interface!.mtu = mtu
        case .listenPort where section == .interface:
            guard let port = decimal(value, upTo: 65535) else {
                throw at.error("\(value.debugDescription) is not a port number from 0 to 65535")
            }
            config.interface!.listenPort = UInt16(port)
        case .listenPort:
            guard let port = decimal(value, upTo: 65535), port > 0 else {
                throw at.error("\(value.debugDescription) is not a port number from 1 to 65535")
            }
            tunnel!.listenPort = UInt16(port)
        case .publicKey:
            let publicKey = try at.key(value)
            if let other = publicKeys[publicKey] {
                throw at.error("the same key as the peer at line \(other)")
            }
            peer!.publicKey = publicKey
        case .presharedKey:
            peer!.presharedKey = try at.key(value)
        case .allowedIPs:
            for item in try at.list(value) {
                guard let parsed = IPPrefix.parse(item) else {
                    throw at.error("\(item.debugDescription) is not an IP address or network (10.0.0.0/8, fd00::/64)")
                }
                let prefix = parsed.prefix
                if parsed.hostBitsCleared {
                    lineWarnings.append(
                        ConfigWarning(file: fileName, line: line, kind: .allowedIPHostBits(written: item, prefix)))
                }
                // The same network twice in one peer is one network, as in wg's trie.
                if peer!.listed.insert(prefix).inserted {
                    peer!.allowedIPs.append(prefix)
                    peer!.allowedIPLines.append(line)
                }
            }
        case .endpoint:
            peer!.endpoint = try at.hostPort(value, emptyHostMeans: nil)
        case .persistentKeepalive:
            // wg(8): "off" or a decimal number of seconds; 0 is off too.
            if value.utf8.count == 3, Array(value.utf8)[...].asciiLowercased == "off" {
                peer!.persistentKeepalive = nil
            } else if let seconds = decimal(value, upTo: 65535) {
                peer!.persistentKeepalive = seconds == 0 ? nil : UInt16(seconds)
            } else {
                throw at.error("\(value.debugDescription) is neither off nor a number of seconds from 0 to 65535")
            }
        case .bindAddress:
            // Go's net.ResolveTCPAddr reads ":8080" as every address; onetun listens on 0.0.0.0 for it.
            tunnel!.bindAddress = try at.hostPort(value, emptyHostMeans: .address(.v4(.unspecified)))
        case .target:
            tunnel!.target = try at.hostPort(value, emptyHostMeans: nil)
        case .username:
            tunnel!.username = value
        case .password:
            tunnel!.password = value
        case .certFile, .keyFile:
            throw at.error("onetun's HTTP proxy speaks plain HTTP only; TLS termination of the proxy (wireproxy's CertFile and KeyFile) is not supported")
        case .inactivityTimeout:
            guard let seconds = decimal(value, upTo: Int(UInt32.max)) else {
                throw at.error("\(value.debugDescription) is not a number of seconds (0 for never)")
            }
            tunnel!.inactivityTimeout = UInt32(seconds)
        case .local:
            do {
                _ = try PortForwardSpec.parse(value)
            } catch {
                throw at.error(error.description)
            }
            config.forwards.append(ConfigFile.Forward(notation: value, remote: false, line: line))
        case .remote:
            // The source peer IP is not known yet (it may come from the CLI): check the notation now, the
            // src_host against that address in portForwards(sourcePeerIP:).
            let specs: [PortForwardSpec]
            do {
                specs = try PortForwardSpec.parse(value)
            } catch {
                throw at.error(error.description)
            }
            if case .name(let name) = specs[0].source {
                throw at.error("src_host \(name.debugDescription) must be the source peer IP, or be omitted")
            }
            config.forwards.append(ConfigFile.Forward(notation: value, remote: true, line: line))
        }
    }

    /// An `[OneTun]` line: any option name, lower-cased, and its value uninterpreted.
    private mutating func option(_ name: String, written: String, value: String, line: Int) throws(ConfigError) {
        let bytes = Array(name.utf8)
        if bytes.first == UInt8(ascii: "-") {
            throw error(line, key: written.displayed, "write option names without their leading dashes")
        }
        let isOptionByte = { (b: UInt8) in
            (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9"))
                || b == UInt8(ascii: "-")
        }
        guard bytes.allSatisfy(isOptionByte) else {
            throw error(line, key: written.displayed, "not an option name (letters, digits and dashes)")
        }
        config.options.append(ConfigFile.Option(name: name, value: value, line: line))
    }

    private func error(_ line: Int, key: String? = nil, _ reason: String) -> ConfigError {
        ConfigError(file: fileName, line: line, key: key, reason)
    }
}

/// Where a value was read, and the parsers of the kinds of value, each throwing an error at that place.
private struct ValueContext {
    let file: String
    let line: Int
    let key: String

    func error(_ reason: String) -> ConfigError { ConfigError(file: file, line: line, key: key, reason) }

    /// A base64 key of 32 bytes. The value is never quoted: it may be a private key with a typo.
    func key(_ text: String) throws(ConfigError) -> Key32 {
        guard let key = Key32(base64: text) else {
            throw error("not a WireGuard key: 32 bytes in base64, 44 characters ending in =")
        }
        return key
    }

    /// Comma-separated, and within an entry space-separated, as wg-quick splits `Address` and `DNS`
    /// (`${value//,/ }`); an empty entry (",," or a trailing comma) is an error.
    func list(_ text: String) throws(ConfigError) -> [String] {
        var items: [String] = []
        for entry in Array(text.utf8).split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false) {
            let words = entry.split(whereSeparator: \.isASCIIWhitespace)
            guard !words.isEmpty else {
                if text.isEmpty { return [] }  // "AllowedIPs =": none
                throw error("empty entry in the list \(text.debugDescription)")
            }
            items += words.map(\.string)
        }
        return items
    }

    /// `10.0.0.2`, `10.0.0.2/24`: an address of ours; the length is kept, the host bits too.
    func interfaceAddress(_ text: String) throws(ConfigError) -> ConfigFile.Address {
        let bytes = Array(text.utf8)
        let slash = bytes.firstIndex(of: UInt8(ascii: "/"))
        guard let address = IPAddress(bytes[..<(slash ?? bytes.count)].string) else {
            throw error("\(text.debugDescription) is not an IPv4 or IPv6 address")
        }
        guard slash != nil else { return ConfigFile.Address(address) }
        // IPPrefix reads the length the same way; its normalised address is not ours to use.
        guard let parsed = IPPrefix.parse(text) else {
            throw error("\(text.debugDescription): the length after / is not 0 to \(address.isV4 ? 32 : 128)")
        }
        return ConfigFile.Address(address, prefixLength: parsed.prefix.length)
    }

    enum DNSEntry {
        case server(IPAddress)
        case searchDomain(String)
    }

    /// wg-quick's rule: digits and dots only, or any colon, is a server address; anything else is a search
    /// domain. What wg-quick would hand to resolvconf as a broken address is an error here.
    func dnsEntry(_ text: String) throws(ConfigError) -> DNSEntry {
        if let address = IPAddress(text) { return .server(address) }
        let bytes = text.utf8
        if bytes.contains(UInt8(ascii: ":")) || bytes.allSatisfy({ $0 == UInt8(ascii: ".") || $0.isASCIIDigit }) {
            throw error("\(text.debugDescription) is not an IP address")
        }
        guard text.isPlausibleHostName else {
            throw error("\(text.debugDescription) is neither an IP address nor a domain name")
        }
        return .searchDomain(text)
    }

    /// `host:port`, `[IPv6]:port`. A host is an IPv4 address or a name; an empty host is an error unless
    /// `emptyHostMeans` stands in for it.
    func hostPort(_ text: String, emptyHostMeans: ForwardHost?) throws(ConfigError) -> ConfigFile.HostPort {
        let bytes = Array(text.utf8)
        let host: ForwardHost
        let portText: ArraySlice<UInt8>
        if bytes.first == UInt8(ascii: "[") {
            guard let close = bytes.firstIndex(of: UInt8(ascii: "]")), close + 1 < bytes.count,
                bytes[close + 1] == UInt8(ascii: ":")
            else { throw error("\(text.debugDescription) is not [IPv6 address]:port") }
            guard let address = IPv6Address(bytes[1..<close].string) else {
                throw error("\(bytes[...close].string.debugDescription) is not an IPv6 address in brackets")
            }
            host = .address(.v6(address))
            portText = bytes[(close + 2)...]
        } else {
            guard let colon = bytes.lastIndex(of: UInt8(ascii: ":")) else {
                throw error("\(text.debugDescription) is not host:port")
            }
            let name = bytes[..<colon]
            if name.contains(UInt8(ascii: ":")) {
                throw error("\(text.debugDescription): IPv6 addresses must be in brackets, as in [fd00::1]:51820")
            }
            if name.isEmpty {
                guard let stand = emptyHostMeans else { throw error("\(text.debugDescription) has no host") }
                host = stand
            } else if let address = IPv4Address(name.string) {
                host = .address(.v4(address))
            } else if name.string.isPlausibleHostName {
                host = .name(name.string)
            } else {
                throw error("\(name.string.debugDescription) is neither an IPv4 address nor a host name")
            }
            portText = bytes[(colon + 1)...]
        }
        guard let port = decimal(portText.string, upTo: 65535), port > 0 else {
            throw error("\(portText.string.debugDescription) is not a port number from 1 to 65535")
        }
        return ConfigFile.HostPort(host, UInt16(port))
    }
}

/// A decimal number of at most `limit`: digits only, no sign, leading zeros allowed (as strtoul reads them).
private func decimal(_ text: String, upTo limit: Int) -> Int? {
    guard !text.isEmpty else { return nil }
    var value = 0
    for byte in text.utf8 {
        guard byte.isASCIIDigit else { return nil }
        value = value * 10 + Int(byte - UInt8(ascii: "0"))
        if value > limit { return nil }
    }
    return value
}

extension UInt8 {
    fileprivate var isASCIIDigit: Bool { self >= UInt8(ascii: "0") && self <= UInt8(ascii: "9") }
    /// Space, tab, CR, vertical tab, form feed (and LF, which never reaches a line).
    fileprivate var isASCIIWhitespace: Bool { self == 0x20 || (self >= 0x09 && self <= 0x0D) }
}

extension String {
    /// A key as written, for a message: as is when it is printable ASCII, else quoted and escaped.
    fileprivate var displayed: String {
        utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F } ? self : debugDescription
    }
}

extension ArraySlice<UInt8> {
    fileprivate var trimmed: ArraySlice<UInt8> {
        guard let first = firstIndex(where: { !$0.isASCIIWhitespace }),
            let last = lastIndex(where: { !$0.isASCIIWhitespace })
        else { return self[endIndex...] }
        return self[first...last]
    }

    fileprivate var string: String { String(decoding: self, as: UTF8.self) }

    /// ASCII letters lower-cased, nothing else touched: Unicode case mapping could make a key of some
    /// other letter.
    fileprivate var asciiLowercased: String {
        String(decoding: map { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") ? $0 + 0x20 : $0 }, as: UTF8.self)
    }
}
