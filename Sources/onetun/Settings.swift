import Glibc
import Logging
@_spi(OneTunInternals) import OneTunCore

/// Validated settings: command line first, then ONETUN_* environment variables, then defaults.
struct Settings {
    var privateKey: Key32
    var endpointPublicKey: Key32
    var presharedKey: Key32 = .zero
    var endpoint: sockaddr_storage
    var endpointDescription: String
    /// The endpoint's host name when it is one (re-resolved while handshakes fail); nil for an address.
    var endpointName: String?
    var bind: sockaddr_storage?
    /// Our addresses inside the tunnel: one, or one of each IP version.
    var sourcePeerIPs: [IPAddress]
    var keepAlive: UInt16 = 0
    var mtu = 1420
    var logLevel: Logger.Level = .info
    var ping: IPAddress?
    var pingCount = 3
    var warnings: [String] = []
    var logFilterWarning: String?
    var forwards: [PortForwardSpec] = []
    var remoteForwards: [PortForwardSpec] = []
    var pcap: String?
    var connectTimeout: UInt64 = 20 * Nanos.second
    var udpTimeout: UInt64 = 60 * Nanos.second
    var maxBufferMemory = 256 << 20
    /// nil: derived from the descriptor limit at start.
    var maxConnections: Int?
    /// `--stdio HOST:PORT` or the file's `[STDIOTunnel]` Target: one connection over standard input and output.
    var stdio: ConfigFile.HostPort?

    /// A proxy to listen for: `--socks5`, or the file's `[Socks5]`.
    struct Proxy {
        enum Kind { case socks5, http }
        var kind: Kind
        var listen: sockaddr_storage
        var text: String
        var credentials: ConfigFile.Credentials?
    }
    var proxies: [Proxy] = []
    /// `--remote-socks5 PORT`: a SOCKS5 server on our tunnel address for the peers, with these credentials.
    var remoteSocks5: UInt16?
    var remoteSocks5Credentials: ConfigFile.Credentials?
    /// `--metrics [HOST:]PORT`: where `/metrics`, `/readyz` and `/healthz` are served, and as given.
    var metrics: (address: sockaddr_storage, text: String)?
    /// `--log-format`: text (swift-log's stream handler) or one JSON object per line.
    enum LogFormat: String { case text, json }
    var logFormat = LogFormat.text

    /// Refuses a destination outside the peer's AllowedIPs (from a configuration file): WireGuard would
    /// have no peer to send it to (wg's cryptokey routing), so every connection to it would fail.
    func checkRoute(to destination: IPAddress, what: String) throws {
        guard let allowed = peerAllowedIPs, !allowed.contains(where: { $0.contains(destination) }) else { return }
        let list = allowed.isEmpty ? "none" : allowed.map { "\($0)" }.joined(separator: ", ")
        throw UsageError("\(what): \(destination) is in no peer's AllowedIPs (\(list)) in \(configFile ?? "the configuration file")")
    }

    /// Our tunnel address of `destination`'s IP version, if we have one.
    func sourcePeerIP(for destination: IPAddress) -> IPAddress? {
        sourcePeerIPs.first { $0.isV4 == destination.isV4 }
    }

    /// One of several peers from a configuration file.
    struct Peer {
        var publicKey: Key32
        var presharedKey: Key32
        var allowedIPs: [IPPrefix]
        /// nil: the peer calls us (at our ListenPort).
        var endpoint: sockaddr_storage?
        /// The Endpoint's host when it is a name (resolved again while handshakes fail), and its port.
        var endpointName: String?
        var endpointPort: UInt16 = 0
        var keepAlive: UInt16
    }

    /// The configuration file's peers when it has several, or one without an Endpoint that will call
    /// us; empty for the one peer of the command line (`endpointPublicKey`, `endpoint`).
    var peers: [Peer] = []

    /// The file's peers, their endpoints resolved, and a socket address of the family to bind (the first
    /// endpoint's, or IPv4 when no peer has one).
    static func peers(_ c: OneTunCommand, _ env: [String: String], _ file: FileSettings, privateKey: Key32) throws -> (peers: [Peer], socket: sockaddr_storage) {
        let config = file.config
        let wgFile = config.wireGuardFileName
        for (option, variable, flag) in [
            ("--endpoint-public-key", "ONETUN_ENDPOINT_PUBLIC_KEY", c.endpointPublicKey), ("--endpoint-addr", "ONETUN_ENDPOINT_ADDR", c.endpointAddr),
            ("--preshared-key", "ONETUN_PRESHARED_KEY", c.presharedKey), ("--keep-alive", "ONETUN_KEEP_ALIVE", c.keepAlive),
        ] where flag != nil || env[variable] != nil {
            throw UsageError("\(option): \(wgFile) sets up its peers (\(config.peers.count)) itself; give each its settings there")
        }
        var peers: [Peer] = []
        var socket: sockaddr_storage?
        // Our port is known to peers that call us: a ListenPort, or a bind address with a port.
        let bindText = c.endpointBindAddr ?? env["ONETUN_ENDPOINT_BIND_ADDR"]
        let bindPort = bindText.flatMap { SocketAddress.split($0) }.flatMap { UInt16($0.port) } ?? 0
        let fixedPort = config.interface?.listenPort != nil || c.listenPort != nil || env["ONETUN_LISTEN_PORT"] != nil || bindPort != 0
        let ours = WGCrypto.x25519PublicKey(privateKey: privateKey)
        for peer in config.peers where peer.publicKey == ours {
            throw UsageError("\(wgFile):\(peer.line): [Peer] PublicKey is our own public key")
        }
        for peer in config.peers {
            var address: sockaddr_storage?
            var name: String?
            if let endpoint = peer.endpoint {
                let host = "\(endpoint.host)".trimmed(where: { $0 == "[" || $0 == "]" })
                let resolved = try SocketAddress.resolve(host: host, port: endpoint.port, what: "\(wgFile):\(peer.line): Endpoint")
                if let first = socket, first.ss_family != resolved.ss_family {
                    throw UsageError("\(wgFile):\(peer.line): Endpoint: \(endpoint) is not of the IP version of the first peer's endpoint; onetun has one UDP socket")
                }
                socket = socket ?? resolved
                address = resolved
                if IPAddress(host) == nil { name = host }
            } else if !fixedPort {
                throw UsageError("\(wgFile):\(peer.line): [Peer] has no Endpoint and there is no ListenPort: neither side could reach the other")
            }
            peers.append(Peer(
                publicKey: peer.publicKey, presharedKey: peer.presharedKey ?? .zero, allowedIPs: peer.allowedIPs,
                endpoint: address, endpointName: name, endpointPort: peer.endpoint?.port ?? 0, keepAlive: peer.persistentKeepalive ?? 0))
        }
        if c.ping != nil { throw UsageError("--ping checks a tunnel with one peer at an Endpoint; \(wgFile) has \(config.peers.count) peers, or one without Endpoint") }
        // No peer with an Endpoint: the bind address says the family (IPv4 without one).
        var wildcard = sockaddr_storage()
        wildcard.ss_family = sa_family_t(AF_INET)
        if socket == nil, let bindText {
            wildcard.ss_family = try SocketAddress.resolve(bindText, option: "--endpoint-bind-addr").ss_family
        }
        return (peers, socket ?? wildcard)
    }

    /// The peer's AllowedIPs from a configuration file (nil without one: everything goes to the peer).
    var peerAllowedIPs: [IPPrefix]?
    /// Where each forward from the configuration file was written ("FILE:LINE").
    var forwardPlaces: [PortForwardSpec: String] = [:]

    /// "FILE:LINE: " for a forward from the configuration file, "" otherwise.
    func place(of spec: PortForwardSpec) -> String {
        forwardPlaces[spec].map { "\($0): " } ?? ""
    }
    /// DNS servers from a configuration file, kept for resolving names through the tunnel.
    var dnsServers: [IPAddress] = []
    /// The configuration file's name, for messages.
    var configFile: String?

    /// The settings from the command line `c`, the environment and the configuration file they name, in
    /// that order of precedence.
    static func load(_ c: OneTunCommand, environment: [String: String], arguments: [String]) throws -> Settings {
        guard let path = c.config ?? environment["ONETUN_CONFIG"] else {
            return try Settings(c, environment: environment, file: nil)
        }
        var file = try FileSettings(path: path, environment: environment)
        // Settings that are one thing however given: the key (inline or in a key file), and the peer (a
        // public key from elsewhere is another peer, whose AllowedIPs the file does not know).
        let given = { (variable: String, flag: Bool) in flag || environment[variable] != nil }
        if given("ONETUN_PRIVATE_KEY", c.privateKey != nil) || given("ONETUN_PRIVATE_KEY_FILE", c.privateKeyFile != nil) {
            file.drop(["ONETUN_PRIVATE_KEY", "ONETUN_PRIVATE_KEY_FILE"])
        }
        if let other = c.endpointPublicKey ?? environment["ONETUN_ENDPOINT_PUBLIC_KEY"],
           (try? Settings.key(other, "")) != file.config.peers.first?.publicKey {
            file.dropPeerRoutes()
        }
        // A bind address with a port of its own, from the command line or the environment, wins over the
        // file's ListenPort.
        if let bind = c.endpointBindAddr ?? environment["ONETUN_ENDPOINT_BIND_ADDR"],
           let port = SocketAddress.split(bind).flatMap({ UInt16($0.port) }), port != 0 {
            file.drop(["ONETUN_LISTEN_PORT"])
        }
        let endpointGiven = c.endpointAddr != nil || environment["ONETUN_ENDPOINT_ADDR"] != nil
        if file.config.peers.count > 1 || (file.config.peers.count == 1 && file.config.peers[0].endpoint == nil && !endpointGiven) {
            file.usePeers()
        }
        var merged = environment
        for (variable, value) in file.variables where merged[variable] == nil { merged[variable] = value }
        do {
            return try Settings(c, environment: merged, file: file)
        } catch {
            // The file's warnings (a readable key) matter most when it fails.
            for warning in file.warnings { writeStandardError("onetun: warning: \(warning)\n") }
            if let error = error as? UsageError {
                throw file.locate(error, environment: environment, arguments: arguments)
            } else if let error = error as? RunError {
                throw RunError(file.locate(UsageError(error.description), environment: environment, arguments: arguments).description)
            }
            throw error
        }
    }

    init(_ c: OneTunCommand, environment env: [String: String], file: FileSettings? = nil) throws {
        warnings += file?.warnings ?? []
        configFile = file?.config.fileName
        peerAllowedIPs = file?.allowedIPs
        dnsServers = file?.config.interface?.dnsServers ?? []
        func value(_ flag: String?, _ variable: String) -> String? { flag ?? env[variable] }

        // Private key: --private-key, --private-key-file, or their variables.
        var keyText: String
        var keyOption = "--private-key"
        if let file = value(c.privateKeyFile, "ONETUN_PRIVATE_KEY_FILE"), c.privateKey == nil {
            var info = stat()
            if stat(file, &info) == 0 {
                if info.st_mode & S_IRGRP != 0 { warnings.append("private key file \(file) is readable by its group") }
                if info.st_mode & S_IROTH != 0 { warnings.append("private key file \(file) is readable by others") }
            }
            guard let text = readTextFile(file) else {
                throw RunError("cannot read the private key file \(file)")
            }
            keyText = text.trimmed()
            keyOption = "--private-key-file \(file)"
        } else if let key = value(c.privateKey, "ONETUN_PRIVATE_KEY") {
            if c.privateKey != nil {
                warnings.append("the private key was given on the command line, where other users can see it; use --private-key-file or ONETUN_PRIVATE_KEY")
            }
            keyText = key
        } else {
            throw UsageError("missing --private-key or --private-key-file")
        }
        privateKey = try Self.key(keyText, keyOption)
        if let file, file.usesPeers {
            let loaded = try Self.peers(c, env, file, privateKey: privateKey)
            peers = loaded.peers
            endpointPublicKey = loaded.peers[0].publicKey
            endpoint = loaded.socket
            endpointDescription = "\(loaded.peers.count) peer\(loaded.peers.count == 1 ? "" : "s")"
        } else {
            guard let peer = value(c.endpointPublicKey, "ONETUN_ENDPOINT_PUBLIC_KEY") else {
                throw UsageError("missing --endpoint-public-key")
            }
            endpointPublicKey = try Self.key(peer, "--endpoint-public-key")
            if let psk = value(c.presharedKey, "ONETUN_PRESHARED_KEY") {
                presharedKey = try Self.key(psk, "--preshared-key")
            }
            guard let endpointText = value(c.endpointAddr, "ONETUN_ENDPOINT_ADDR") else {
                throw UsageError("missing --endpoint-addr")
            }
            endpoint = try SocketAddress.resolve(endpointText, option: "--endpoint-addr")
            endpointDescription = endpointText
            if let (host, _) = SocketAddress.split(endpointText), IPAddress(host) == nil { endpointName = host }
        }
        if let bindText = value(c.endpointBindAddr, "ONETUN_ENDPOINT_BIND_ADDR") {
            let address = try SocketAddress.resolve(bindText, option: "--endpoint-bind-addr")
            guard address.ss_family == endpoint.ss_family else {
                throw UsageError("--endpoint-bind-addr \(bindText) and --endpoint-addr must be the same IP version")
            }
            bind = address
        }
        if let text = value(c.listenPort, "ONETUN_LISTEN_PORT") {
            guard let port = UInt16(text) else {
                throw UsageError("--listen-port: '\(text)' is not a port number between 0 and 65535")
            }
            var address = bind ?? sockaddr_storage()
            address.ss_family = endpoint.ss_family
            // sin_port and sin6_port are both at offset 2, in network order.
            let bound = withUnsafeBytes(of: &address) { UInt16(bigEndian: $0.load(fromByteOffset: 2, as: UInt16.self)) }
            guard bound == 0 || bound == port else {
                throw UsageError("--listen-port \(port) and --endpoint-bind-addr with port \(bound) disagree")
            }
            withUnsafeMutableBytes(of: &address) { $0.storeBytes(of: port.bigEndian, toByteOffset: 2, as: UInt16.self) }
            bind = address
        }
        let sourceTexts = (c.sourcePeerIp.isEmpty ? env["ONETUN_SOURCE_PEER_IP"].map { [$0] } ?? [] : c.sourcePeerIp)
            .flatMap { $0.split(separator: ",") }.map { String($0).trimmed() }
        guard !sourceTexts.isEmpty else {
            throw UsageError("missing --source-peer-ip")
        }
        sourcePeerIPs = []
        for text in sourceTexts {
            guard let address = IPAddress(text) else {
                throw UsageError("--source-peer-ip: '\(text)' is not an IP address")
            }
            if let other = sourcePeerIPs.first(where: { $0.isV4 == address.isV4 }) {
                throw UsageError("--source-peer-ip: \(other) and \(address) are both IPv\(address.isV4 ? 4 : 6); give at most one address of each version")
            }
            sourcePeerIPs.append(address)
        }
        let sourceText = sourcePeerIPs.map { "\($0)" }.joined(separator: ",")
        if let text = value(c.keepAlive, "ONETUN_KEEP_ALIVE") {
            guard let seconds = UInt16(text) else {
                throw UsageError("--keep-alive: '\(text)' is not a number of seconds between 0 and 65535")
            }
            keepAlive = seconds
        }
        if let text = value(c.maxTransmissionUnit, "ONETUN_MTU") {
            // The outer UDP payload is the MTU plus 32 bytes of WireGuard header and tag, and a UDP
            // payload over IPv4 is at most 65507 bytes.
            guard let m = Int(text), m >= 576, m <= 65_475 else {
                throw UsageError("--max-transmission-unit: '\(text)' is not an MTU between 576 and 65475")
            }
            mtu = m
        }
        if let text = value(c.log, "ONETUN_LOG") {
            guard let (level, applies) = Self.logLevel(filter: text) else {
                throw UsageError("--log: '\(text)' is not a level (off, error, warn, info, debug, trace) or an env_logger filter")
            }
            if !applies {
                logFilterWarning = "--log '\(text)' sets no level for onetun (no bare level, no onetun=…), so logging is off, as with env_logger"
            }
            logLevel = level
        }
        // Port forwards: the command line's and ONETUN_PORT_FORWARD_1, _2, … (consecutive), a union as in
        // onetun's config.rs.
        let notations = c.portForwards + Self.numbered("ONETUN_PORT_FORWARD_", env)
        for text in notations {
            do {
                // The same forward twice is one forward, as in onetun (a set), not a port conflict.
                for spec in try PortForwardSpec.parse(text) where !forwards.contains(spec) { forwards.append(spec) }
            } catch {
                throw UsageError("\(error)")
            }
        }
        // Then the file's: [Forward] lines and wireproxy's tunnels, in file order.
        var fileUDPTimeouts: [(seconds: UInt32, place: String)] = []
        for forward in try file?.forwards(sourcePeerIPs: sourcePeerIPs) ?? [] {
            forwardPlaces[forward.spec] = "\(file!.config.fileName):\(forward.line)"
            if forward.spec.remote {
                if !remoteForwards.contains(forward.spec) { remoteForwards.append(forward.spec) }
            } else if !forwards.contains(forward.spec) {
                forwards.append(forward.spec)
            }
            if let timeout = forward.inactivityTimeout {
                fileUDPTimeouts.append((timeout, "\(file!.config.fileName):\(forward.line)"))
            }
        }
        for spec in forwards {
            if case .address(let destination) = spec.destination, sourcePeerIP(for: destination) == nil {
                throw UsageError("\(place(of: spec))\(spec.notation): the destination \(destination) and --source-peer-ip \(sourceText) must be the same IP version")
            }
        }
        for text in c.remote + Self.numbered("ONETUN_REMOTE_PORT_FORWARD_", env) {
            // The src_host, when given, must be one of our addresses (the first when not given); the port
            // listens on every address of ours in the tunnel.
            var parsed: [PortForwardSpec]?
            var firstError: PortForwardSpecError?
            for address in sourcePeerIPs where parsed == nil {
                do throws(PortForwardSpecError) {
                    parsed = try PortForwardSpec.parseRemote(text, sourcePeerIP: address)
                } catch {
                    firstError = firstError ?? error
                }
            }
            guard let parsed else { throw UsageError("\(firstError!)") }
            for spec in parsed where !remoteForwards.contains(spec) { remoteForwards.append(spec) }
        }
        pcap = value(c.pcap, "ONETUN_PCAP")
        if let text = value(c.connectTimeout, "ONETUN_CONNECT_TIMEOUT") {
            guard let seconds = UInt64(text), (1...3600).contains(seconds) else {
                throw UsageError("--connect-timeout: '\(text)' is not a number of seconds between 1 and 3600")
            }
            connectTimeout = seconds * Nanos.second
        }
        if let text = value(c.maxBufferMemory, "ONETUN_MAX_BUFFER_MEMORY") {
            guard let bytes = Self.byteCount(text), bytes >= 1 << 20 else {
                throw UsageError("--max-buffer-memory: '\(text)' is not a size of at least 1M (bytes, or a number with K, M or G)")
            }
            maxBufferMemory = bytes
        }
        if let text = value(c.udpTimeout, "ONETUN_UDP_TIMEOUT") {
            guard let seconds = UInt64(text), (1...86_400).contains(seconds) else {
                throw UsageError("--udp-timeout: '\(text)' is not a number of seconds between 1 and 86400")
            }
            udpTimeout = seconds * Nanos.second
        } else if !fileUDPTimeouts.isEmpty {
            // wireproxy's InactivityTimeout is per tunnel, 0 for never; onetun has one UDP timeout for
            // every forward, at most a day: the longest asked for applies, and each tunnel that asked
            // for something else is told.
            let longest = fileUDPTimeouts.map { $0.seconds == 0 ? 86_400 : min($0.seconds, 86_400) }.max()!
            udpTimeout = UInt64(longest) * Nanos.second
            for (seconds, place) in fileUDPTimeouts where (seconds == 0 ? 86_400 : seconds) != longest {
                let asked = seconds == 0 ? "0 (never)" : "\(seconds) s"
                warnings.append("\(place): InactivityTimeout \(asked): onetun has one UDP timeout for every forward, at most 86400 s; \(longest) s applies")
            }
        }
        if let text = value(c.maxConnections, "ONETUN_MAX_CONNECTIONS") {
            guard let n = Int(text), (1...1_000_000).contains(n) else {
                throw UsageError("--max-connections: '\(text)' is not a number between 1 and 1000000")
            }
            maxConnections = n
        }
        if let text = value(c.dns, "ONETUN_DNS") {
            dnsServers = []
            for item in text.split(separator: ",").map({ String($0).trimmed() }) where !item.isEmpty {
                guard let address = IPAddress(item) else { throw UsageError("--dns: '\(item)' is not an IP address") }
                dnsServers.append(address)
            }
        }
        for server in dnsServers where sourcePeerIP(for: server) == nil {
            warnings.append("DNS server \(server) is IPv\(server.isV4 ? 4 : 6) and we have no tunnel address of that version: it is not asked")
        }
        // Proxies: the command line's (with --proxy-auth), then the file's sections with their own.
        var cliCredentials: ConfigFile.Credentials?
        if let auth = value(c.proxyAuth, "ONETUN_PROXY_AUTH") {
            guard let colon = auth.firstIndex(of: ":"), colon != auth.startIndex else {
                throw UsageError("--proxy-auth: 'user:password' expected (a user name, a colon, the password)")
            }
            cliCredentials = ConfigFile.Credentials(username: String(auth[..<colon]), password: String(auth[auth.index(after: colon)...]))
        }
        let socksTexts = (c.socks5.isEmpty ? env["ONETUN_SOCKS5"].map { [$0] } ?? [] : c.socks5)
            .flatMap { $0.split(separator: ",") }.map { String($0).trimmed() }
        for text in socksTexts {
            proxies.append(Proxy(kind: .socks5, listen: try Self.proxyAddress(text, option: "--socks5"), text: text, credentials: cliCredentials))
        }
        let httpTexts = (c.httpProxy.isEmpty ? env["ONETUN_HTTP_PROXY"].map { [$0] } ?? [] : c.httpProxy)
            .flatMap { $0.split(separator: ",") }.map { String($0).trimmed() }
        for text in httpTexts {
            proxies.append(Proxy(kind: .http, listen: try Self.proxyAddress(text, option: "--http-proxy"), text: text, credentials: cliCredentials))
        }
        for proxy in proxies where proxy.kind == .socks5 && proxy.credentials.map({ $0.username.utf8.count > 255 || $0.password.utf8.count > 255 }) == true {
            throw UsageError("--proxy-auth: a SOCKS5 user name and password are at most 255 bytes each (RFC 1929)")
        }
        if cliCredentials?.username.contains(":") == true {
            throw UsageError("--proxy-auth: the user name cannot hold a colon (RFC 7617: the first colon ends it)")
        }
        for tunnel in file?.config.tunnels ?? [] {
            let place = "\(file!.config.fileName):\(tunnel.line)"
            switch tunnel.kind {
            case .socks5(let bind, let fileCredentials):
                // --proxy-auth stands in for a section that sets no credentials of its own.
                let credentials = fileCredentials ?? cliCredentials
                if let credentials, credentials.username.utf8.count > 255 || credentials.password.utf8.count > 255 {
                    throw UsageError("\(place): [Socks5]: a user name and password are at most 255 bytes each (RFC 1929)")
                }
                let text = "\(bind)"
                proxies.append(Proxy(kind: .socks5, listen: try Self.proxyAddress(text, option: "\(place): [Socks5] BindAddress"), text: text, credentials: credentials))
            case .http(let bind, let fileCredentials):
                let credentials = fileCredentials ?? cliCredentials
                if let credentials, credentials.username.contains(":") {
                    throw UsageError("\(place): [http] Username: a user name cannot hold a colon (RFC 7617: the first colon ends it)")
                }
                let text = "\(bind)"
                proxies.append(Proxy(kind: .http, listen: try Self.proxyAddress(text, option: "\(place): [http] BindAddress"), text: text, credentials: credentials))
            default:
                break
            }
        }
        if let text = value(c.remoteSocks5, "ONETUN_REMOTE_SOCKS5") {
            guard let port = UInt16(text), port > 0 else { throw UsageError("--remote-socks5: '\(text)' is not a port number from 1 to 65535") }
            if remoteForwards.contains(where: { $0.sourcePort == port && $0.proto == .tcp }) {
                throw UsageError("--remote-socks5 \(port): a remote TCP forward listens on that port already")
            }
            remoteSocks5 = port
            remoteSocks5Credentials = cliCredentials
            if cliCredentials == nil {
                warnings.append("--remote-socks5 \(port) asks for no user name and password: every peer, and every host behind one, reaches whatever this machine reaches (--proxy-auth)")
            }
            if let credentials = cliCredentials, credentials.username.utf8.count > 255 || credentials.password.utf8.count > 255 {
                throw UsageError("--proxy-auth: a SOCKS5 user name and password are at most 255 bytes each (RFC 1929)")
            }
        }
        for proxy in proxies where proxy.credentials == nil {
            // Not on a loopback address: 127.0.0.0/8 (sin_addr at offset 4), ::1 (sin6_addr at offset 8).
            let open = withUnsafeBytes(of: proxy.listen) { raw -> Bool in
                raw.load(as: sa_family_t.self) == sa_family_t(AF_INET)
                    ? raw.load(fromByteOffset: 4, as: UInt8.self) != 127
                    : !(raw.load(fromByteOffset: 8, as: UInt64.self) == 0 && raw.load(fromByteOffset: 16, as: UInt64.self) == UInt64(1).bigEndian)
            }
            if open {
                warnings.append("the \(proxy.kind == .socks5 ? "SOCKS5" : "HTTP") proxy on \(proxy.text) listens beyond this machine and asks for no user name and password: anyone who reaches it reaches the tunnel (--proxy-auth, or Username and Password in the file)")
            }
        }
        if let text = c.stdio {
            guard let (host, portText) = SocketAddress.split(text), !host.isEmpty, let port = UInt16(portText), port > 0 else {
                throw UsageError("--stdio: '\(text)' is not host:port")
            }
            stdio = ConfigFile.HostPort(IPAddress(host).map { .address($0) } ?? .name(host), port)
        } else if let file {
            let tunnels = file.config.tunnels.compactMap { tunnel -> (ConfigFile.HostPort, Int)? in
                if case .stdio(let target) = tunnel.kind { return (target, tunnel.line) }
                return nil
            }
            if tunnels.count > 1 {
                throw UsageError("\(file.config.fileName):\(tunnels[1].1): a second [STDIOTunnel] (the first is at line \(tunnels[0].1)); standard input and output carry one connection")
            }
            stdio = tunnels.first?.0
        }
        if let stdio {
            if case .address(let destination) = stdio.host {
                guard sourcePeerIP(for: destination) != nil else {
                    throw UsageError("--stdio \(stdio): the destination and --source-peer-ip \(sourceText) must be the same IP version")
                }
                try checkRoute(to: destination, what: "--stdio \(stdio)")
            }
            // Standard error is the only channel; what the user sees is ssh's, say: warnings only.
            if value(c.log, "ONETUN_LOG") == nil { logLevel = .warning }
        }
        if let text = value(c.metrics, "ONETUN_METRICS") {
            metrics = (try Self.proxyAddress(text, option: "--metrics"), text)
        }
        if let text = value(c.logFormat, "ONETUN_LOG_FORMAT") {
            guard let format = LogFormat(rawValue: text.lowercased()) else {
                throw UsageError("--log-format: '\(text)' is not json or text")
            }
            logFormat = format
        }
        if let target = c.ping {
            guard let address = IPAddress(target) else { throw UsageError("--ping: '\(target)' is not an IP address") }
            guard sourcePeerIP(for: address) != nil else {
                throw UsageError("--ping \(target) and --source-peer-ip \(sourceText) must be the same IP version")
            }
            ping = address
            guard (1...65535).contains(c.pingCount) else { throw UsageError("--ping-count must be 1 to 65535 (one echo sequence number each)") }
            pingCount = c.pingCount
        }
    }

    /// A proxy's `[HOST:]PORT`: a bare port listens on 127.0.0.1 (a proxy open to the network is a choice
    /// to spell out).
    static func proxyAddress(_ text: String, option: String) throws -> sockaddr_storage {
        if let port = UInt16(text), port > 0 {
            return try SocketAddress.resolve(host: "127.0.0.1", port: port, what: option)
        }
        guard let (host, portText) = SocketAddress.split(text), let port = UInt16(portText), port > 0 else {
            throw UsageError("\(option): '\(text)' is not [host:]port")
        }
        return try SocketAddress.resolve(host: host.isEmpty ? "0.0.0.0" : host, port: port, what: option)
    }

    /// "268435456", "256M", "1G", "512k": binary multiples; nil when malformed or above 1 TiB.
    static func byteCount(_ text: String) -> Int? {
        var digits = text.trimmed()
        var scale = 1
        switch digits.last.map({ $0.lowercased() }) {
        case "k": scale = 1 << 10
        case "m": scale = 1 << 20
        case "g": scale = 1 << 30
        default: break
        }
        if scale > 1 { digits.removeLast() }
        guard let n = Int(digits), n >= 0, n <= (1 << 40) / scale else { return nil }
        return n * scale
    }

    /// PREFIX1, PREFIX2, … up to the first one missing.
    static func numbered(_ prefix: String, _ env: [String: String]) -> [String] {
        var values: [String] = []
        var i = 1
        while let v = env["\(prefix)\(i)"], i <= 10_000 {
            values.append(v)
            i += 1
        }
        return values
    }

    /// A 32-byte key: base64 (as `wg` prints it; the padding may be left out) or 64 hex digits, both of
    /// which onetun (boringtun's key parser) takes.
    static func key(_ text: String, _ option: String) throws -> Key32 {
        let trimmed = text.trimmed()
        if trimmed.utf8.count == 64, let bytes = Hex.decode(trimmed) { return Key32(bytes: bytes) }
        let padded = trimmed.utf8.count % 4 == 0 ? trimmed : trimmed + String(repeating: "=", count: 4 - trimmed.utf8.count % 4)
        guard let bytes = Base64.decode(padded) else {
            throw UsageError("\(option): not valid base64 (or 64 hex digits)")
        }
        guard bytes.count == 32 else { throw UsageError("\(option): a key is 32 bytes, this one is \(bytes.count)") }
        return Key32(bytes: bytes)
    }


    /// The level for our messages from onetun's `--log`, an env_logger filter: directives separated by
    /// commas, each `level`, `module`, `module=level` or `module=` (trace), optionally followed by
    /// `/regex` (ignored). As in env_logger, the directive with the longest module name that prefixes
    /// our module, `onetun`, applies (a bare level, or an empty name, prefixes everything), the later of
    /// two equal ones; none applying turns logging off (`applies` false then); no directive at all is
    /// env_logger's default, error. Directives for other modules (smoltcp, boringtun, onetun::x) do not
    /// apply here. `off` keeps only critical messages (onetun logs none). nil: a level that is not one,
    /// in a directive that applies to us.
    static func logLevel(filter: String) -> (level: Logger.Level, applies: Bool)? {
        func level(_ word: String) -> Logger.Level? {
            switch word.lowercased() {
            case "off", "critical": return .critical
            case "error": return .error
            case "warn", "warning": return .warning
            case "notice": return .notice
            case "info": return .info
            case "debug": return .debug
            case "trace": return .trace
            default: return nil
            }
        }
        let directives = filter.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        var best: (nameLength: Int, level: Logger.Level)?
        var any = false
        for raw in directives.split(separator: ",") {
            let d = raw.trimmed()
            if d.isEmpty { continue }
            any = true
            let name: String
            let chosen: Logger.Level?
            if let eq = d.firstIndex(of: "=") {
                name = d[..<eq].trimmed()
                let text = d[d.index(after: eq)...].trimmed()
                chosen = text.isEmpty ? .trace : level(text)
            } else if let l = level(d) {
                name = ""
                chosen = l
            } else {
                name = d
                chosen = .trace
            }
            guard "onetun".hasPrefix(name) else { continue }
            guard let l = chosen else { return nil }
            if best.map({ name.count >= $0.nameLength }) ?? true { best = (name.count, l) }
        }
        if let best { return (best.level, true) }
        return any ? (.critical, false) : (.error, true)
    }
}

/// Socket address parsing and name resolution.
enum SocketAddress {
    /// Splits "host:port" or "[v6]:port".
    static func split(_ text: String) -> (host: String, port: String)? {
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            let host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            return (host, String(rest.dropFirst()))
        }
        guard let colon = text.lastIndex(of: ":") else { return nil }
        let host = String(text[..<colon])
        // An IPv6 literal without brackets ("::1:51820"): the port follows the last colon, as Rust's
        // ToSocketAddrs reads it. Anything else with a colon in the host is ambiguous.
        guard !host.contains(":") || IPAddress(host)?.isV4 == false else { return nil }
        return (host, String(text[text.index(after: colon)...]))
    }

    /// "1.2.3.4:51820" or "[fd00::1]:51820".
    static func describe(_ address: sockaddr_storage) -> String {
        guard let ip = ipAddress(address) else { return "?" }
        let port = withUnsafeBytes(of: address) { UInt16(bigEndian: $0.load(fromByteOffset: 2, as: UInt16.self)) }
        return ip.isV4 ? "\(ip):\(port)" : "[\(ip)]:\(port)"
    }

    /// The first address of `host` (a literal or a name) as a socket address with `port`.
    static func resolve(host: String, port: UInt16, what: String) throws -> sockaddr_storage {
        var hints = addrinfo()
        // Any socket type gives the same addresses; one type avoids a duplicate per protocol.
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &result)
        guard rc == 0, let first = result else {
            throw RunError("\(what): cannot resolve '\(host)': \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(result) }
        var storage = sockaddr_storage()
        withUnsafeMutableBytes(of: &storage) { s in
            s.copyMemory(from: UnsafeRawBufferPointer(start: first.pointee.ai_addr, count: Int(first.pointee.ai_addrlen)))
        }
        return storage
    }

    /// The IP address in a socket address.
    static func ipAddress(_ storage: sockaddr_storage) -> IPAddress? {
        let family = Int32(storage.ss_family)
        return withUnsafeBytes(of: storage) { raw -> IPAddress? in
            switch family {
            case AF_INET:
                // sin_addr at offset 4, network order.
                return .v4(IPv4Address(loading: raw, at: 4))
            case AF_INET6:
                // sin6_addr at offset 8.
                return .v6(IPv6Address(loading: raw, at: 8))
            default:
                return nil
            }
        }
    }

    /// A forward's host as an IP address inside the tunnel: literal, or resolved here.
    static func address(_ host: ForwardHost, port: UInt16, what: String) throws -> IPAddress {
        switch host {
        case .address(let a): return a
        case .name(let name):
            guard let a = ipAddress(try resolve(host: name, port: port, what: what)) else {
                throw RunError("\(what): '\(name)' has no IPv4 or IPv6 address")
            }
            return a
        }
    }

    /// "host:port" (IPv6 in brackets) resolved for the endpoint's UDP socket.
    static func resolve(_ text: String, option: String) throws -> sockaddr_storage {
        guard let (host, port) = split(text), !host.isEmpty, let portNumber = UInt16(port) else {
            throw UsageError("\(option): '\(text)' is not host:port")
        }
        return try resolve(host: host, port: portNumber, what: option)
    }
}
