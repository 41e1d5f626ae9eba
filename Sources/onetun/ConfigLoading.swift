import Glibc
@_spi(OneTunInternals) import OneTunCore

/// A configuration file (`-c FILE`, ONETUN_CONFIG) turned into settings of the lowest precedence: the
/// command line wins over the environment, which wins over the file. The file's WireGuard part and its
/// `[OneTun]` options become the ONETUN_* variables they stand for (unless the environment sets them),
/// so every value goes through the same checks as on the command line; an error about such a value
/// names the file and line instead of the option.
struct FileSettings {
    /// The long options an `[OneTun]` line may set, and the variable each stands for.
    static let options: [String: String] = [
        "private-key": "ONETUN_PRIVATE_KEY", "private-key-file": "ONETUN_PRIVATE_KEY_FILE",
        "endpoint-public-key": "ONETUN_ENDPOINT_PUBLIC_KEY", "preshared-key": "ONETUN_PRESHARED_KEY",
        "endpoint-addr": "ONETUN_ENDPOINT_ADDR", "endpoint-bind-addr": "ONETUN_ENDPOINT_BIND_ADDR",
        "source-peer-ip": "ONETUN_SOURCE_PEER_IP", "keep-alive": "ONETUN_KEEP_ALIVE",
        "max-transmission-unit": "ONETUN_MTU", "log": "ONETUN_LOG", "pcap": "ONETUN_PCAP",
        "connect-timeout": "ONETUN_CONNECT_TIMEOUT", "max-connections": "ONETUN_MAX_CONNECTIONS",
        "max-buffer-memory": "ONETUN_MAX_BUFFER_MEMORY", "udp-timeout": "ONETUN_UDP_TIMEOUT",
        "listen-port": "ONETUN_LISTEN_PORT", "socks5": "ONETUN_SOCKS5", "proxy-auth": "ONETUN_PROXY_AUTH",
        "dns": "ONETUN_DNS", "http-proxy": "ONETUN_HTTP_PROXY",
        "remote-socks5": "ONETUN_REMOTE_SOCKS5", "metrics": "ONETUN_METRICS", "log-format": "ONETUN_LOG_FORMAT",
    ]

    let config: ConfigFile
    /// What the file sets, as ONETUN_* variables, and where each was written ("FILE:LINE").
    private(set) var variables: [String: String] = [:]
    private(set) var origins: [String: String] = [:]
    private(set) var warnings: [String] = []
    /// The peer's AllowedIPs: a forward's destination must be in them.
    private(set) var allowedIPs: [IPPrefix]?
    /// Where the peer without an Endpoint is, when that is the problem.
    private(set) var peerWithoutEndpoint: String?
    /// The file's peers are set up as they are, not through the one-peer options.
    private(set) var usesPeers = false

    /// Reads, parses and checks `path` (and the WGConfig file it names).
    init(path: String, environment: [String: String]) throws {
        config = try Self.read(path, environment: environment, warnings: &warnings)
        let wgFile = config.wireGuardFileName
        if let interface = config.interface {
            // The model keeps the section's line, not each key's: the message names the key.
            func place(_ key: String) -> String { "\(wgFile):\(interface.line): [Interface] \(key)" }
            if let key = interface.privateKey { set("ONETUN_PRIVATE_KEY", key.base64, place("PrivateKey")) }
            if !interface.addresses.isEmpty {
                set("ONETUN_SOURCE_PEER_IP", interface.addresses.map { "\($0.address)" }.joined(separator: ","), place("Address"))
            }
            if let mtu = interface.mtu { set("ONETUN_MTU", String(mtu), place("MTU")) }
            if let port = interface.listenPort { set("ONETUN_LISTEN_PORT", String(port), place("ListenPort")) }
        }
        if let peer = config.peers.first, config.peers.count == 1 {
            func place(_ key: String) -> String { "\(wgFile):\(peer.line): [Peer] \(key)" }
            set("ONETUN_ENDPOINT_PUBLIC_KEY", peer.publicKey.base64, place("PublicKey"))
            if let psk = peer.presharedKey { set("ONETUN_PRESHARED_KEY", psk.base64, place("PresharedKey")) }
            if let endpoint = peer.endpoint {
                set("ONETUN_ENDPOINT_ADDR", "\(endpoint)", place("Endpoint"))
            } else {
                peerWithoutEndpoint = "\(wgFile):\(peer.line)"
            }
            if let keepalive = peer.persistentKeepalive { set("ONETUN_KEEP_ALIVE", String(keepalive), place("PersistentKeepalive")) }
            allowedIPs = peer.allowedIPs
        }
        for option in config.options {
            let place = "\(config.fileName):\(option.line)"
            guard let variable = Self.options[option.name.lowercased()] else {
                throw UsageError(config.error(
                    line: option.line, key: option.name,
                    "not an option onetun takes in a file (\(Self.options.keys.sorted().joined(separator: ", ")))").description)
            }
            set(variable, option.value, place)
        }
    }

    private mutating func set(_ variable: String, _ value: String, _ place: String) {
        variables[variable] = value
        origins[variable] = place
    }

    /// Forgets what the file says for `names`: the command line or the environment settled them.
    mutating func drop(_ names: [String]) {
        for name in names {
            variables[name] = nil
            origins[name] = nil
        }
    }

    /// The peer is another than the file's: its AllowedIPs do not apply.
    mutating func dropPeerRoutes() { allowedIPs = nil }

    /// Several peers, or one without an Endpoint that none is given for (it will call us): the peers
    /// are set up from the file as they are (`Settings.peers`), not through the one-peer options.
    mutating func usePeers() {
        usesPeers = true
        drop(["ONETUN_ENDPOINT_PUBLIC_KEY", "ONETUN_PRESHARED_KEY", "ONETUN_ENDPOINT_ADDR", "ONETUN_KEEP_ALIVE"])
        allowedIPs = config.peers.flatMap(\.allowedIPs)
    }

    private static func read(_ path: String, environment: [String: String], warnings: inout [String]) throws -> ConfigFile {
        func text(of file: String) throws -> String {
            var info = stat()
            if stat(file, &info) == 0 {
                // wg-quick's warning, for the group as well: the file holds a private key.
                if info.st_mode & 0o007 != 0 { warnings.append("`\(file)' is world accessible") }
                else if info.st_mode & S_IRGRP != 0 { warnings.append("`\(file)' is readable by its group") }
            }
            guard let text = readTextFile(file) else {
                throw RunError("cannot read the configuration file \(file) (missing, unreadable, over 1 MiB or not UTF-8)")
            }
            return text
        }
        do {
            var config = try ConfigFile.parse(text(of: path), fileName: path, environment: environment)
            if let wgPath = config.wgConfigPath {
                try config.merge(wireGuard: ConfigFile.parse(text(of: wgPath), fileName: wgPath, environment: environment))
            }
            warnings += config.warnings.map { "\($0)" }
            return config
        } catch let error as ConfigError {
            throw UsageError(error.description)
        }
    }

    /// The message of `error`, located in the file when the value it is about came from there (and not
    /// from the command line or the environment).
    func locate(_ error: UsageError, environment: [String: String], arguments: [String]) -> UsageError {
        let text = error.description
        if text.hasPrefix("missing --endpoint-addr"), let place = peerWithoutEndpoint {
            return UsageError("\(place): [Peer] has no Endpoint: add one (or give --endpoint-addr), or a ListenPort for the peer to call")
        }
        let wgFile = config.wireGuardFileName
        if config.interface != nil || !config.peers.isEmpty {
            if text.hasPrefix("missing --private-key") {
                return UsageError("\(wgFile): [Interface] has no PrivateKey (and no --private-key-file was given)")
            }
            if text.hasPrefix("missing --source-peer-ip") {
                return UsageError("\(wgFile): [Interface] has no Address (and no --source-peer-ip was given)")
            }
            if text.hasPrefix("missing --endpoint-public-key") {
                return UsageError("\(wgFile): no [Peer] section (and no --endpoint-public-key was given)")
            }
        }
        guard text.hasPrefix("--") else { return error }
        let option = String(text.dropFirst(2).prefix { $0 != ":" && $0 != " " })
        guard let variable = Self.options[option], let place = origins[variable], environment[variable] == nil,
              !arguments.contains(where: { $0 == "--\(option)" || $0.hasPrefix("--\(option)=") })
        else { return error }
        return UsageError("\(place): \(text)")
    }

    /// Every forward the file asks for, in file order. A `Remote` line's src_host may be any of
    /// `sourcePeerIPs` (the first when it names none), as with `--remote`.
    func forwards(sourcePeerIPs: [IPAddress]) throws -> [ConfigFile.PortForward] {
        do {
            var onlyTunnels = config
            onlyTunnels.forwards = []
            var result = try onlyTunnels.portForwards(sourcePeerIP: sourcePeerIPs[0])
            for forward in config.forwards {
                var one = config
                one.forwards = [forward]
                one.tunnels = []
                var firstError: ConfigError?
                var parsed: [ConfigFile.PortForward]?
                for address in sourcePeerIPs where parsed == nil {
                    do throws(ConfigError) {
                        parsed = try one.portForwards(sourcePeerIP: address)
                    } catch {
                        firstError = firstError ?? error
                    }
                }
                guard let parsed else { throw firstError! }
                result += parsed
            }
            // Stable: lines in file order, the two specs of one TCP,UDP line together.
            return result.enumerated().sorted { ($0.element.line, $0.offset) < ($1.element.line, $1.offset) }.map(\.element)
        } catch {
            throw UsageError("\(error)")
        }
    }
}
