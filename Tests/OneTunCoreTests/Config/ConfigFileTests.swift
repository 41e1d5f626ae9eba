import Testing
@testable import OneTunCore

// Keys as `wg genkey` would print them (any 32 bytes do for parsing).
private let key1 = "EREREREREREREREREREREREREREREREREREREREREQE="
private let key2 = "IiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIgI="
private let key3 = "MzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMwM="
private let key4 = "RERERERERERERERERERERERERERERERERERERERERAQ="
private let key5 = "VVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVQU="

private func key(_ base64: String) -> Key32 { Key32(base64: base64)! }
private func ip(_ text: String) -> IPAddress { IPAddress(text)! }
private func net(_ text: String) -> IPPrefix { IPPrefix(text)! }
private func hostPort(_ host: String, _ port: UInt16) -> ConfigFile.HostPort {
    ConfigFile.HostPort(IPAddress(host).map(ForwardHost.address) ?? .name(host), port)
}

private func parse(_ text: String, _ env: [String: String] = [:], file: String = "wg0.conf") throws -> ConfigFile {
    try ConfigFile.parse(text, fileName: file, environment: env)
}

/// The message a bad file is refused with; a file that parses is a test failure.
private func refusal(_ text: String, _ env: [String: String] = [:], file: String = "f.conf") -> String? {
    do {
        let config = try ConfigFile.parse(text, fileName: file, environment: env)
        Issue.record("parsed: \(config.canonicalText)")
        return nil
    } catch {
        return error.description
    }
}

/// Parses the canonical text of `config` and expects an equal model printing the same text.
private func expectRoundTrip(_ config: ConfigFile, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let text = config.canonicalText
    let again = try ConfigFile.parse(text, fileName: "canonical.conf")
    #expect(again == config, "\(text)", sourceLocation: sourceLocation)
    #expect(again.canonicalText == text, sourceLocation: sourceLocation)
}

@Suite struct ConfigFileTests {
    /// A file as VPN providers ship them (Mullvad's layout, with a second site-to-site peer added): both
    /// families with lengths, DNS with a search domain, the kill-switch hooks, comments everywhere.
    static let providerFile = """
        # Device: Quick Fox
        [Interface]
        PrivateKey = \(key1)
        Address = 10.68.12.34/32,fc00:bbbb:bbbb:bb01::5:c21/128
        DNS = 10.64.0.1, fc00:bbbb:bbbb:bb01::1, corp.example
        PostUp = iptables -I OUTPUT ! -o %i -m mark ! --mark $(wg show %i fwmark) -m addrtype ! --dst-type LOCAL -j REJECT
        PreDown = iptables -D OUTPUT ! -o %i -m mark ! --mark $(wg show %i fwmark) -m addrtype ! --dst-type LOCAL -j REJECT
        MTU = 1380

        [Peer]
        PublicKey = \(key2)
        AllowedIPs = 0.0.0.0/0,::0/0
        Endpoint = 185.65.134.82:51820

        [Peer]   # the office
        PublicKey = \(key3)
        PresharedKey = \(key4)
        AllowedIPs = 10.8.0.0/24  # the office LAN
        AllowedIPs = fd08::/64
        Endpoint = [2a03:1b20:1:f011::a02f]:51820
        PersistentKeepalive = 25
        """

    @Test func providerFile() throws {
        let config = try parse(ConfigFileTests.providerFile)
        var interface = ConfigFile.Interface(line: 2)
        interface.privateKey = key(key1)
        interface.addresses = [
            ConfigFile.Address(ip("10.68.12.34"), prefixLength: 32),
            ConfigFile.Address(ip("fc00:bbbb:bbbb:bb01::5:c21"), prefixLength: 128),
        ]
        interface.dnsServers = [ip("10.64.0.1"), ip("fc00:bbbb:bbbb:bb01::1")]
        interface.dnsSearchDomains = ["corp.example"]
        interface.mtu = 1380
        #expect(config.interface == interface)
        #expect(config.interface?.line == 2)
        #expect(config.peers == [
            ConfigFile.Peer(
                publicKey: key(key2), allowedIPs: [net("0.0.0.0/0"), net("::/0")],
                endpoint: hostPort("185.65.134.82", 51820), line: 10),
            ConfigFile.Peer(
                publicKey: key(key3), presharedKey: key(key4), allowedIPs: [net("10.8.0.0/24"), net("fd08::/64")],
                endpoint: hostPort("2a03:1b20:1:f011::a02f", 51820), persistentKeepalive: 25, line: 15),
        ])
        #expect(config.peers.map(\.line) == [10, 15])
        #expect(config.wgConfig == nil && config.tunnels.isEmpty && config.forwards.isEmpty && config.options.isEmpty)
        // A default route beside a narrower network of another peer is not a conflict: no warning for it.
        #expect(config.warnings.map(\.description) == [
            "wg0.conf: ignoring keys onetun has no use for (it creates no network interface, runs no scripts and "
                + "has no health check): PostUp (line 6), PreDown (line 7)"
        ])
        try config.validate()
        try expectRoundTrip(config)
        #expect(config.canonicalText == """
            [Interface]
            PrivateKey = \(key1)
            Address = 10.68.12.34/32, fc00:bbbb:bbbb:bb01::5:c21/128
            DNS = 10.64.0.1, fc00:bbbb:bbbb:bb01::1, corp.example
            MTU = 1380

            [Peer]
            PublicKey = \(key2)
            AllowedIPs = 0.0.0.0/0, ::/0
            Endpoint = 185.65.134.82:51820

            [Peer]
            PublicKey = \(key3)
            PresharedKey = \(key4)
            AllowedIPs = 10.8.0.0/24, fd08::/64
            Endpoint = [2a03:1b20:1:f011::a02f]:51820
            PersistentKeepalive = 25

            """)
    }

    /// wg-quick's matching is case-insensitive (`nocasematch`), so is go-ini's for wireproxy; "#" comments
    /// anywhere, ";" comment lines (go-ini), CRLF line ends, a byte-order mark, tabs.
    @Test func lexicalRules() throws {
        let text = "\u{FEFF}; written on Windows\r\n[INTERFACE]\r\n\tprivatekey\t=\t\(key1)\t# ours\r\n"
            + "ADDRESS=10.0.0.2\r\naddress = fd00::2/64 10.0.0.3/24\r\n\r\n  [ peer ]  \r\n"
            + "PUBLICKEY = \(key2)\r\nallowedips = 10.0.0.0/24\r\nEndPoint = vpn.example.com:51820\r\n"
            + "persistentkeepalive = OFF\r\n# the end"
        let config = try parse(text)
        #expect(config.interface?.privateKey == key(key1))
        #expect(config.interface?.addresses.map(\.description) == ["10.0.0.2", "fd00::2/64", "10.0.0.3/24"])
        #expect(config.peers.count == 1)
        #expect(config.peers.first?.line == 7)
        #expect(config.peers.first?.endpoint == ConfigFile.HostPort(.name("vpn.example.com"), 51820))
        #expect(config.peers.first?.persistentKeepalive == nil)
        #expect(config.warnings.isEmpty)
        // Keepalive 0 is off too; the value is kept when on.
        let zero = try parse("[Peer]\nPublicKey = \(key2)\nPersistentKeepalive = 0")
        #expect(zero.peers.first?.persistentKeepalive == nil)
        let on = try parse("[Peer]\nPublicKey = \(key2)\nPersistentKeepalive = 065535")
        #expect(on.peers.first?.persistentKeepalive == 65535)
        // "AllowedIPs =" is no networks, as in wg(8); an empty file is an empty model.
        #expect(try parse("[Peer]\nPublicKey = \(key2)\nAllowedIPs =").peers.first?.allowedIPs == [])
        #expect(try parse("") == ConfigFile(fileName: "x"))
        #expect(try parse("\n # nothing\n;\n") == ConfigFile(fileName: "x"))
    }

    /// wireproxy's README sample with `$VAR`s, its WireGuard part in another file.
    static let wireproxyFile = """
        WGConfig = wg0.conf

        # TCPClientTunnel is a tunnel listening on your machine,
        [TCPClientTunnel]
        BindAddress = 127.0.0.1:25565
        Target = play.cubecraft.net:25565

        [TCPServerTunnel]
        ListenPort = 3422
        Target = localhost:25545

        [UDPProxyTunnel]
        BindAddress = $DNS_BIND
        Target = 1.1.1.1:53
        InactivityTimeout = 30 # If its set to 0, it will never timeout

        [tcpclienttunnel]
        BindAddress = :2222
        Target = $SSH_TARGET

        [UDPProxyTunnel]
        BindAddress = [::1]:5353
        Target = [fd00::53]:53
        """

    static let wireproxyEnvironment = [
        "DNS_BIND": "127.0.0.1:53\n", "SSH_TARGET": "[fd00::22]:22", "WG_KEY": key1, "PEER_IPS": "10.200.200.0/24",
    ]

    static let wireGuardPart = """
        [Interface]
        Address = 10.200.200.2/32 # The subnet should be /32 and /128 for IPv4 and v6 respectively
        PrivateKey = $WG_KEY
        DNS = 10.200.200.1

        [Peer]
        PublicKey = \(key2)
        AllowedIPs = $PEER_IPS
        Endpoint = my.ddns.example.com:51820
        """

    @Test func wireproxyFile() throws {
        let env = ConfigFileTests.wireproxyEnvironment
        var config = try parse(ConfigFileTests.wireproxyFile, env, file: "/etc/wireproxy/wireproxy.conf")
        #expect(config.wgConfig == ConfigFile.WGConfigReference(path: "wg0.conf", line: 1))
        // A bare name lives beside the file naming it (wireproxy's filepath.Join(filepath.Dir(path), …)).
        #expect(config.wgConfigPath == "/etc/wireproxy/wg0.conf")
        #expect(config.tunnels == [
            ConfigFile.Tunnel(
                .tcpClient(bindAddress: hostPort("127.0.0.1", 25565), target: hostPort("play.cubecraft.net", 25565)),
                line: 4),
            ConfigFile.Tunnel(.tcpServer(listenPort: 3422, target: hostPort("localhost", 25545)), line: 8),
            ConfigFile.Tunnel(
                .udpProxy(bindAddress: hostPort("127.0.0.1", 53), target: hostPort("1.1.1.1", 53), inactivityTimeout: 30),
                line: 12),
            ConfigFile.Tunnel(
                .tcpClient(bindAddress: hostPort("0.0.0.0", 2222), target: hostPort("fd00::22", 22)), line: 17),
            ConfigFile.Tunnel(
                .udpProxy(bindAddress: hostPort("::1", 5353), target: hostPort("fd00::53", 53), inactivityTimeout: 0),
                line: 21),
        ])
        #expect(config.tunnels.map(\.line) == [4, 8, 12, 17, 21])
        #expect(config.interface == nil && config.peers.isEmpty)
        #expect(throws: ConfigError(file: "/etc/wireproxy/wireproxy.conf", line: 1, key: "WGConfig", "\"wg0.conf\" was not read")) {
            try config.validate()
        }
        try expectRoundTrip(config)

        let wireGuard = try parse(ConfigFileTests.wireGuardPart, env, file: "/etc/wireproxy/wg0.conf")
        try config.merge(wireGuard: wireGuard)
        try config.validate()
        #expect(config.wgConfig == nil)
        #expect(config.wireGuardFileName == "/etc/wireproxy/wg0.conf")
        #expect(config.fileName == "/etc/wireproxy/wireproxy.conf")
        #expect(config.interface?.privateKey == key(key1))
        #expect(config.interface?.addresses == [ConfigFile.Address(ip("10.200.200.2"), prefixLength: 32)])
        #expect(config.interface?.dnsServers == [ip("10.200.200.1")])
        #expect(config.peers == [
            ConfigFile.Peer(
                publicKey: key(key2), allowedIPs: [net("10.200.200.0/24")],
                endpoint: hostPort("my.ddns.example.com", 51820), line: 6)
        ])

        let source = ip("10.200.200.2")
        let forwards = try config.portForwards(sourcePeerIP: source)
        #expect(forwards == [
            ConfigFile.PortForward(
                spec: PortForwardSpec(
                    source: .address(ip("127.0.0.1")), sourcePort: 25565, destination: .name("play.cubecraft.net"),
                    destinationPort: 25565, proto: .tcp),
                line: 4),
            ConfigFile.PortForward(
                spec: PortForwardSpec(
                    source: .address(source), sourcePort: 3422, destination: .name("localhost"), destinationPort: 25545,
                    proto: .tcp, remote: true),
                line: 8),
            ConfigFile.PortForward(
                spec: PortForwardSpec(
                    source: .address(ip("127.0.0.1")), sourcePort: 53, destination: .address(ip("1.1.1.1")),
                    destinationPort: 53, proto: .udp),
                line: 12, inactivityTimeout: 30),
            ConfigFile.PortForward(
                spec: PortForwardSpec(
                    source: .address(ip("0.0.0.0")), sourcePort: 2222, destination: .address(ip("fd00::22")),
                    destinationPort: 22),
                line: 17),
            ConfigFile.PortForward(
                spec: PortForwardSpec(
                    source: .address(ip("::1")), sourcePort: 5353, destination: .address(ip("fd00::53")),
                    destinationPort: 53, proto: .udp),
                line: 21, inactivityTimeout: 0),
        ])
        // Merged, it prints as one file holding everything, and reads back the same.
        let merged = config.canonicalText
        #expect(!merged.contains("WGConfig"))
        #expect(try parse(merged) == config)
    }

    /// wireproxy's `parseString`: only its keys expand `$VAR`; `$$` is a literal `$`; an unset variable is
    /// an error, an empty one an empty value.
    @Test func environmentVariables() throws {
        let env = ["KEY": "  \(key1)\n", "ADDRS": "10.0.0.2/32, fd00::2", "EMPTY": "", "DOLLAR": "$KEY"]
        let config = try parse("[Interface]\nPrivateKey = $KEY\nAddress = $ADDRS\n", env)
        #expect(config.interface?.privateKey == key(key1))
        #expect(config.interface?.addresses.map(\.description) == ["10.0.0.2/32", "fd00::2"])
        // A variable's value is not expanded again.
        #expect(refusal("[Interface]\nPrivateKey = $DOLLAR", env)
            == "f.conf:2: PrivateKey: not a WireGuard key: 32 bytes in base64, 44 characters ending in =")
        #expect(refusal("[Interface]\nPrivateKey = $UNSET", env)
            == #"f.conf:2: PrivateKey: "$UNSET" names an unset environment variable"#)
        #expect(refusal("[Interface]\nPrivateKey = $", env)
            == #"f.conf:2: PrivateKey: "$" names an unset environment variable"#)
        #expect(refusal("[Interface]\nAddress = $EMPTY", env) == #"f.conf:2: Address: "$EMPTY" is empty"#)
        #expect(refusal("[Interface]\nPrivateKey = $KEY", [:])
            == #"f.conf:2: PrivateKey: "$KEY" names an unset environment variable"#)
        // "$$" stands for "$", which no address begins with.
        #expect(refusal("[TCPClientTunnel]\nBindAddress = $$KEY:80", env)
            == #"f.conf:2: BindAddress: "$KEY" is neither an IPv4 address nor a host name"#)
        // Keys wireproxy reads without parseString take "$" literally: Endpoint, PresharedKey, ports, WGConfig.
        #expect(refusal("[Peer]\nPublicKey = \(key2)\nEndpoint = $EP:51820", ["EP": "1.2.3.4"])
            == #"f.conf:3: Endpoint: "$EP" is neither an IPv4 address nor a host name"#)
        #expect(refusal("[Peer]\nPublicKey = \(key2)\nPresharedKey = $KEY", env)
            == "f.conf:3: PresharedKey: not a WireGuard key: 32 bytes in base64, 44 characters ending in =")
        #expect(refusal("[TCPServerTunnel]\nListenPort = $PORT\nTarget = h:1", ["PORT": "80"])
            == #"f.conf:2: ListenPort: "$PORT" is not a port number from 1 to 65535"#)
        #expect(try parse("WGConfig = $HOME/wg.conf", ["HOME": "/root"]).wgConfig?.path == "$HOME/wg.conf")
        // [Forward] and [OneTun] are onetun's: no expansion there either.
        #expect(try parse("[OneTun]\nlog = $LEVEL", ["LEVEL": "debug"]).options.first?.value == "$LEVEL")
        // PublicKey, AllowedIPs, DNS, Target expand.
        let peer = try parse(
            "[Peer]\nPublicKey = $PUB\nAllowedIPs = $NETS\n[Interface]\nDNS = $DNS",
            ["PUB": key2, "NETS": "10.0.0.0/8,fd00::/8", "DNS": "1.1.1.1 example.org"])
        #expect(peer.peers.first?.publicKey == key(key2))
        #expect(peer.peers.first?.allowedIPs == [net("10.0.0.0/8"), net("fd00::/8")])
        #expect(peer.interface?.dnsServers == [ip("1.1.1.1")])
        #expect(peer.interface?.dnsSearchDomains == ["example.org"])
    }

    /// wireproxy's proxies and stdio tunnel: `[Socks5]` and `[http]` with and without credentials
    /// (`$VAR` read from the environment), `[STDIOTunnel]`; none of them is a port forward.
    @Test func proxySections() throws {
        let config = try parse(
            "[Socks5]\nBindAddress = 127.0.0.1:25344\n\n[Socks5]\nBindAddress = :25346\nUsername = $USER\nPassword = $$secret\n"
                + "[http]\nBindAddress = [::1]:25345\nPassword = p\n[STDIOTunnel]\nTarget = ssh.example.net:22\n",
            ["USER": "alice"])
        #expect(config.tunnels.map(\.kind) == [
            .socks5(bindAddress: .init(.address(ip("127.0.0.1")), 25344), credentials: nil),
            .socks5(bindAddress: .init(.address(ip("0.0.0.0")), 25346), credentials: .init(username: "alice", password: "$secret")),
            .http(bindAddress: .init(.address(ip("::1")), 25345), credentials: .init(username: "", password: "p")),
            .stdio(target: .init(.name("ssh.example.net"), 22)),
        ])
        #expect(try config.portForwards(sourcePeerIP: ip("10.0.0.2")).isEmpty)
        // What prints parses back to the same file (a "$" that starts a value is written "$$").
        #expect(try parse(config.canonicalText) == config)
    }

    /// Every kind of malformed line, each with its exact message.
    @Test(arguments: [
        // Sections
        ("[Interface]\n[Foo]", #"f.conf:2: unknown section "[Foo]""#),
        ("[Interface", "f.conf:1: a section header is [Name] alone on its line"),
        ("[Peer] x = y", "f.conf:1: a section header is [Name] alone on its line"),
        ("[Socks5]\nUsername = u", "f.conf:1: [Socks5] has no BindAddress"),
        ("[http]\nBindAddress = 127.0.0.1:25345\nCertFile = /etc/ssl/proxy.pem", "f.conf:3: CertFile: onetun's HTTP proxy speaks plain HTTP only; TLS termination of the proxy (wireproxy's CertFile and KeyFile) is not supported"),
        ("[Socks5]\nBindAddress = 127.0.0.1:25344\nKeyFile = k", "f.conf:3: KeyFile: not a key of [Socks5]"),
        ("\n[stdiotunnel]\nBindAddress = 127.0.0.1:1", "f.conf:3: BindAddress: not a key of [STDIOTunnel]"),
        ("[STDIOTunnel]\n", "f.conf:1: [STDIOTunnel] has no Target"),
        ("[SNI]", "f.conf:1: [SNI] is not supported yet"),
        ("[Resolve]\nResolveStrategy = auto", "f.conf:1: [Resolve] is not supported yet"),
        ("[Interface]\nPrivateKey = \(key1)\n[Interface]", "f.conf:3: a second [Interface] section (the first is at line 1)"),
        ("WGConfig = wg0.conf\n[Interface]",
         "f.conf:2: [Interface] cannot be used with WGConfig (line 1), which names the file holding the WireGuard part"),
        ("WGConfig = wg0.conf\n\n[Peer]\nPublicKey = \(key2)",
         "f.conf:3: [Peer] cannot be used with WGConfig (line 1), which names the file holding the WireGuard part"),
        // Lines and keys
        ("PrivateKey = \(key1)\n[Interface]", "f.conf:1: PrivateKey: only WGConfig may come before the first section"),
        ("[Interface]\nPrivateKey \(key1)", "f.conf:2: expected Key = value, or a [Section] header"),
        ("[Interface]\n= \(key1)", "f.conf:2: no key before ="),
        ("[Interface]\nListenPort = 1\nFoo = bar", "f.conf:3: Foo: not a key of [Interface]"),
        ("[Peer]\nPublicKey = \(key2)\nPrivateKey = \(key1)", "f.conf:3: PrivateKey: not a key of [Peer]"),
        ("[Peer]\nWGConfig = wg0.conf", "f.conf:2: WGConfig: not a key of [Peer]"),
        ("[TCPServerTunnel]\nBindAddress = 127.0.0.1:1", "f.conf:2: BindAddress: not a key of [TCPServerTunnel]"),
        ("[Interface]\nJc = 4", "f.conf:2: Jc: not a key of [Interface]"),  // AmneziaWG changes the protocol
        ("[Interface]\nA\u{1B}B = 4", #"f.conf:2: "A\u{1B}B": not a key of [Interface]"#),
        ("[Interface]\nPrivateKey =", "f.conf:2: PrivateKey: no value"),
        ("[Interface]\nPrivateKey = # later", "f.conf:2: PrivateKey: no value"),
        ("[Interface]\nPrivateKey = \(key1)\nPrivateKey = \(key2)",
         "f.conf:3: PrivateKey: given twice in this section (first at line 2)"),
        ("[Peer]\nPublicKey = \(key2)\nendpoint = 1.2.3.4:5\nEndpoint = 1.2.3.4:6",
         "f.conf:4: Endpoint: given twice in this section (first at line 3)"),
        ("WGConfig = a.conf\nWGConfig = b.conf", "f.conf:2: WGConfig: given twice in this section (first at line 1)"),
        // Keys
        ("[Interface]\nPrivateKey = not-base64", "f.conf:2: PrivateKey: not a WireGuard key: 32 bytes in base64, 44 characters ending in ="),
        ("[Peer]\nPublicKey = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",
         "f.conf:2: PublicKey: not a WireGuard key: 32 bytes in base64, 44 characters ending in ="),
        ("[Peer]\nPublicKey = \(key2)=", "f.conf:2: PublicKey: not a WireGuard key: 32 bytes in base64, 44 characters ending in ="),
        ("[Peer]\nAllowedIPs = 10.0.0.0/8", "f.conf:1: [Peer] has no PublicKey"),
        ("[Peer]\nPublicKey = \(key2)\n[Peer]\nPublicKey = \(key3)\n\n[Peer]\nPublicKey = \(key2)",
         "f.conf:7: PublicKey: the same key as the peer at line 1"),
        // Addresses and networks
        ("[Interface]\nAddress = 10.0.0.300", #"f.conf:2: Address: "10.0.0.300" is not an IPv4 or IPv6 address"#),
        ("[Interface]\nAddress = vpn.example.com", #"f.conf:2: Address: "vpn.example.com" is not an IPv4 or IPv6 address"#),
        ("[Interface]\nAddress = 10.0.0.2/33", #"f.conf:2: Address: "10.0.0.2/33": the length after / is not 0 to 32"#),
        ("[Interface]\nAddress = fd00::2/", #"f.conf:2: Address: "fd00::2/": the length after / is not 0 to 128"#),
        ("[Interface]\nAddress = 10.0.0.2,,10.0.0.3", #"f.conf:2: Address: empty entry in the list "10.0.0.2,,10.0.0.3""#),
        ("[Peer]\nPublicKey = \(key2)\nAllowedIPs = 10.0.0.0/8,",
         #"f.conf:3: AllowedIPs: empty entry in the list "10.0.0.0/8,""#),
        ("[Peer]\nPublicKey = \(key2)\nAllowedIPs = 10.0.0.0/8, 10.0.0.0/33",
         #"f.conf:3: AllowedIPs: "10.0.0.0/33" is not an IP address or network (10.0.0.0/8, fd00::/64)"#),
        ("[Peer]\nPublicKey = \(key2)\nAllowedIPs = [fd00::]/64",
         #"f.conf:3: AllowedIPs: "[fd00::]/64" is not an IP address or network (10.0.0.0/8, fd00::/64)"#),
        ("[Interface]\nDNS = 1.1.1", #"f.conf:2: DNS: "1.1.1" is not an IP address"#),
        ("[Interface]\nDNS = fd00::1::2", #"f.conf:2: DNS: "fd00::1::2" is not an IP address"#),
        ("[Interface]\nDNS = 1.1.1.1, bad_domain!", #"f.conf:2: DNS: "bad_domain!" is neither an IP address nor a domain name"#),
        // Endpoints and targets
        ("[Peer]\nPublicKey = \(key2)\nEndpoint = 1.2.3.4", #"f.conf:3: Endpoint: "1.2.3.4" is not host:port"#),
        ("[Peer]\nPublicKey = \(key2)\nEndpoint = 1.2.3.4:70000",
         #"f.conf:3: Endpoint: "70000" is not a port number from 1 to 65535"#),
        ("[Peer]\nPublicKey = \(key2)\nEndpoint = 1.2.3.4:0", #"f.conf:3: Endpoint: "0" is not a port number from 1 to 65535"#),
        ("[Peer]\nPublicKey = \(key2)\nEndpoint = fd00::1:51820",
         #"f.conf:3: Endpoint: "fd00::1:51820": IPv6 addresses must be in brackets, as in [fd00::1]:51820"#),
        ("[Peer]\nPublicKey = \(key2)\nEndpoint = [fd00::1]51820", #"f.conf:3: Endpoint: "[fd00::1]51820" is not [IPv6 address]:port"#),
        ("[Peer]\nPublicKey = \(key2)\nEndpoint = [1.2.3.4]:51820",
         #"f.conf:3: Endpoint: "[1.2.3.4]" is not an IPv6 address in brackets"#),
        ("[Peer]\nPublicKey = \(key2)\nEndpoint = :51820", #"f.conf:3: Endpoint: ":51820" has no host"#),
        ("[Peer]\nPublicKey = \(key2)\nEndpoint = 999.1.1.1:51820",
         #"f.conf:3: Endpoint: "999.1.1.1" is neither an IPv4 address nor a host name"#),
        ("[TCPClientTunnel]\nBindAddress = 127.0.0.1:1\nTarget = host", #"f.conf:3: Target: "host" is not host:port"#),
        // Numbers
        ("[Interface]\nMTU = 1380.5", #"f.conf:2: MTU: "1380.5" is not an MTU between 576 and 65475"#),
        ("[Interface]\nMTU = 500", #"f.conf:2: MTU: "500" is not an MTU between 576 and 65475"#),
        ("[Interface]\nListenPort = 65536", #"f.conf:2: ListenPort: "65536" is not a port number from 0 to 65535"#),
        ("[Interface]\nListenPort = -1", #"f.conf:2: ListenPort: "-1" is not a port number from 0 to 65535"#),
        ("[Peer]\nPublicKey = \(key2)\nPersistentKeepalive = 65536",
         #"f.conf:3: PersistentKeepalive: "65536" is neither off nor a number of seconds from 0 to 65535"#),
        ("[Peer]\nPublicKey = \(key2)\nPersistentKeepalive = 25s",
         #"f.conf:3: PersistentKeepalive: "25s" is neither off nor a number of seconds from 0 to 65535"#),
        ("[TCPServerTunnel]\nListenPort = 0\nTarget = h:1", #"f.conf:2: ListenPort: "0" is not a port number from 1 to 65535"#),
        ("[UDPProxyTunnel]\nBindAddress = :53\nTarget = h:53\nInactivityTimeout = -1",
         #"f.conf:4: InactivityTimeout: "-1" is not a number of seconds (0 for never)"#),
        // Tunnels
        ("[TCPClientTunnel]\nBindAddress = 127.0.0.1:25565\n[Peer]", "f.conf:1: [TCPClientTunnel] has no Target"),
        ("[UDPProxyTunnel]\nTarget = 1.1.1.1:53", "f.conf:1: [UDPProxyTunnel] has no BindAddress"),
        ("[TCPServerTunnel]\nTarget = localhost:22", "f.conf:1: [TCPServerTunnel] has no ListenPort"),
        // Forwards and options
        ("[Forward]\nLocal = 8080:10.0.0.2",
         #"f.conf:2: Local: invalid port forward "8080:10.0.0.2": expected [src_host:]src_port:dst_host:dst_port[:TCP,UDP]"#),
        ("[Forward]\nRemote = 8080:[fd00::2]:80:SCTP",
         #"f.conf:2: Remote: unknown protocol "SCTP" in port forward "8080:[fd00::2]:80:SCTP" (expected TCP, UDP or TCP,UDP)"#),
        ("[Forward]\nRemote = myhost:8080:127.0.0.1:80",
         #"f.conf:2: Remote: src_host "myhost" must be the source peer IP, or be omitted"#),
        ("[OneTun]\n--log = debug", "f.conf:2: --log: write option names without their leading dashes"),
        ("[OneTun]\nlog_level = debug", "f.conf:2: log_level: not an option name (letters, digits and dashes)"),
        ("[OneTun]\nlog level = debug", "f.conf:2: expected Key = value, or a [Section] header"),
        // A missing "=" before a key's padding: the message must not quote the key.
        ("[Interface]\nPrivateKey: \(key1)", "f.conf:2: expected Key = value, or a [Section] header"),
        ("[Interface]\nPrivateKey:\(key1)", "f.conf:2: expected Key = value, or a [Section] header"),
    ])
    func badFiles(text: String, message: String) {
        #expect(refusal(text) == message)
    }

    /// What only the whole configuration shows, once the WGConfig file is merged: `FILE: why`.
    @Test func validation() throws {
        #expect(throws: ConfigError(file: "f.conf", line: nil, "[Interface] has no PrivateKey")) {
            try ConfigFile.parse("[Interface]\nAddress = 10.0.0.2\n[Peer]\nPublicKey = \(key2)", fileName: "f.conf")
                .validate()
        }
        #expect(throws: ConfigError(file: "f.conf", line: nil, "no [Interface] section")) {
            try ConfigFile.parse("[Peer]\nPublicKey = \(key2)", fileName: "f.conf").validate()
        }
        #expect(throws: ConfigError(file: "f.conf", line: nil, "no [Peer] section")) {
            try ConfigFile.parse("[Interface]\nPrivateKey = \(key1)", fileName: "f.conf").validate()
        }
        #expect(ConfigError(file: "f.conf", line: nil, "[Interface] has no PrivateKey").description
            == "f.conf: [Interface] has no PrivateKey")
        // After a merge, the WireGuard part's problems name its own file.
        var main = try ConfigFile.parse("WGConfig = wg.conf", fileName: "main.conf")
        try main.merge(wireGuard: ConfigFile.parse("[Interface]\n[Peer]\nPublicKey = \(key2)", fileName: "wg.conf"))
        #expect(throws: ConfigError(file: "wg.conf", line: nil, "[Interface] has no PrivateKey")) {
            try main.validate()
        }
    }

    @Test func mergeRefusals() throws {
        let main = try ConfigFile.parse("WGConfig = wg.conf\n[TCPServerTunnel]\nListenPort = 1\nTarget = h:1", fileName: "m.conf")
        func refusal(_ wireGuard: String, into config: ConfigFile = main) throws -> String? {
            var config = config
            do {
                try config.merge(wireGuard: ConfigFile.parse(wireGuard, fileName: "wg.conf"))
                return nil
            } catch {
                return error.description
            }
        }
        #expect(try refusal("WGConfig = other.conf") == "wg.conf:1: WGConfig: a WGConfig file cannot name another one")
        #expect(try refusal("[Interface]\n\n[Forward]\nLocal = 1:h:2\n[UDPProxyTunnel]\nBindAddress = :1\nTarget = h:1")
            == "wg.conf:4: [Forward] is not read from a WGConfig file, only [Interface] and [Peer] are")
        #expect(try refusal("[OneTun]\nlog = info") == "wg.conf:2: [OneTun] is not read from a WGConfig file, only [Interface] and [Peer] are")
        let withPeer = try ConfigFile.parse("\n[Peer]\nPublicKey = \(key3)", fileName: "m.conf")
        #expect(try refusal("[Interface]", into: withPeer)
            == #"m.conf:2: the WireGuard part cannot come from both this file and "wg.conf""#)
        #expect(try refusal("[Interface]\nPrivateKey = \(key1)") == nil)
    }

    /// As wg does with one network in two peers: the later peer takes it, the earlier one loses it, and
    /// one warning names both peers' lines. Nested networks of different lengths stay where they are.
    @Test func allowedIPsTakenByLaterPeer() throws {
        let config = try parse("""
            [Peer]
            PublicKey = \(key2)
            AllowedIPs = 10.0.0.0/24, 10.9.0.0/16, 0.0.0.0/0

            [Peer]
            PublicKey = \(key3)
            AllowedIPs = 10.0.0.0/8, fd00::/64
            AllowedIPs = 10.0.0.0/24, 10.0.0.0/24

            [Peer]
            PublicKey = \(key4)
            AllowedIPs = 10.0.0.128/25
            """)
        #expect(config.peers.map(\.allowedIPs) == [
            [net("10.9.0.0/16"), net("0.0.0.0/0")],
            [net("10.0.0.0/8"), net("fd00::/64"), net("10.0.0.0/24")],  // listed twice, kept once
            [net("10.0.0.128/25")],
        ])
        #expect(config.warnings == [
            ConfigWarning(
                file: "wg0.conf", line: 8,
                kind: .allowedIPTakenByLaterPeer(net("10.0.0.0/24"), earlierPeerLine: 1, laterPeerLine: 5))
        ])
        #expect(config.warnings.map(\.description) == [
            "wg0.conf:8: AllowedIPs: 10.0.0.0/24 is also an allowed IP of the peer at line 1; as in wg, the later "
                + "peer (line 5) takes it and the earlier one no longer has it"
        ])
        // Two spellings of one network are one network; the later peer takes it whatever the spelling, and
        // the spelling with host bits is warned about too.
        let spelled = try parse(
            "[Peer]\nPublicKey = \(key2)\nAllowedIPs = 192.168.1.0/24\n[Peer]\nPublicKey = \(key3)\nAllowedIPs = 192.168.1.77/24")
        #expect(spelled.peers.map(\.allowedIPs) == [[], [net("192.168.1.0/24")]])
        #expect(spelled.warnings.map(\.description) == [
            #"wg0.conf:6: AllowedIPs: "192.168.1.77/24" has bits set past its length; read as 192.168.1.0/24"#,
            "wg0.conf:6: AllowedIPs: 192.168.1.0/24 is also an allowed IP of the peer at line 1; as in wg, the "
                + "later peer (line 4) takes it and the earlier one no longer has it",
        ])
        try expectRoundTrip(config)
        try expectRoundTrip(spelled)
    }

    /// onetun's own sections: forwards in the positional notation, options for the CLI.
    @Test func forwardsAndOptions() throws {
        let config = try parse("""
            [OneTun]
            Connect-Timeout = 30
            log = onetun=debug # env_logger filter
            max-connections=100
            pcap =

            [Forward]
            Local = 8080:192.168.4.2:8080
            Local = [::1]:5353:[fd00::53]:53:UDP,TCP
            Remote = 2222:localhost:22

            [TCPClientTunnel]
            BindAddress = 127.0.0.1:3000
            Target = 10.0.0.3:3000

            [Forward]
            Remote = 192.168.4.3:8443:[::1]:443:TCP
            """)
        #expect(config.options == [
            ConfigFile.Option(name: "connect-timeout", value: "30", line: 2),
            ConfigFile.Option(name: "log", value: "onetun=debug", line: 3),
            ConfigFile.Option(name: "max-connections", value: "100", line: 4),
            ConfigFile.Option(name: "pcap", value: "", line: 5),
        ])
        #expect(config.options.map(\.line) == [2, 3, 4, 5])
        #expect(config.forwards == [
            ConfigFile.Forward(notation: "8080:192.168.4.2:8080", remote: false, line: 8),
            ConfigFile.Forward(notation: "[::1]:5353:[fd00::53]:53:UDP,TCP", remote: false, line: 9),
            ConfigFile.Forward(notation: "2222:localhost:22", remote: true, line: 10),
            ConfigFile.Forward(notation: "192.168.4.3:8443:[::1]:443:TCP", remote: true, line: 17),
        ])
        // The CLI reports what it makes of an option at the option's line.
        #expect(config.error(line: config.options[0].line, key: config.options[0].name, "not a number of seconds")
            .description == "wg0.conf:2: connect-timeout: not a number of seconds")

        let peer = ip("192.168.4.3")
        let forwards = try config.portForwards(sourcePeerIP: peer)
        #expect(forwards.map(\.spec.description) == [
            "127.0.0.1:8080:192.168.4.2:8080:TCP",
            "[::1]:5353:[fd00::53]:53:UDP",
            "[::1]:5353:[fd00::53]:53:TCP",
            "192.168.4.3:2222:localhost:22:TCP (remote)",
            "127.0.0.1:3000:10.0.0.3:3000:TCP",
            "192.168.4.3:8443:[::1]:443:TCP (remote)",
        ])
        #expect(forwards.map(\.line) == [8, 9, 9, 10, 12, 17])
        // A remote forward's src_host must be the source peer IP, known only now.
        #expect(throws: ConfigError(
            file: "wg0.conf", line: 17, key: "Remote",
            #"remote port forward "192.168.4.3:8443:[::1]:443:TCP": src_host 192.168.4.3 must be the source peer IP 10.0.0.9, or be omitted"#
        )) {
            try config.portForwards(sourcePeerIP: ip("10.0.0.9"))
        }
        try expectRoundTrip(config)
    }

    /// Every section at once prints and reads back to an equal model, and printing is idempotent.
    @Test func roundTrip() throws {
        try expectRoundTrip(parse(ConfigFileTests.providerFile))
        try expectRoundTrip(parse(ConfigFileTests.wireproxyFile, ConfigFileTests.wireproxyEnvironment))
        try expectRoundTrip(parse(ConfigFileTests.wireGuardPart, ConfigFileTests.wireproxyEnvironment))
        let everything = try parse("""
            [Interface]
            ListenPort = 0
            Address = 10.1.2.3/8, fd00::1
            DNS = search.example.
            [Peer]
            PublicKey = \(key5)
            AllowedIPs = 10.1.2.3/8, ::ffff:10.0.0.1/128
            Endpoint = peer.example:1
            PersistentKeepalive = 1
            [UDPProxyTunnel]
            BindAddress = localhost:53
            Target = [::ffff:1.1.1.1]:53
            InactivityTimeout = 4294967295
            [OneTun]
            remote = 1:h:2
            [Forward]
            Remote = [fd00::1]:1:h:2
            """)
        try expectRoundTrip(everything)
        #expect(everything.interface?.addresses.map(\.description) == ["10.1.2.3/8", "fd00::1"])  // ours: host bits kept
        #expect(everything.peers.first?.allowedIPs == [net("10.0.0.0/8"), net("::ffff:10.0.0.1/128")])
        // Equality is about content: lines, file names and warnings are not part of it.
        var moved = everything
        moved.peers[0].line = 99
        moved.fileName = "elsewhere.conf"
        moved.warnings = []
        #expect(moved == everything)
        moved.peers[0].persistentKeepalive = 2
        #expect(moved != everything)
    }

    @Test func wgConfigPath() throws {
        func path(_ wgConfig: String, in file: String) throws -> String? {
            try ConfigFile.parse("WGConfig = \(wgConfig)", fileName: file).wgConfigPath
        }
        #expect(try path("wg0.conf", in: "/etc/wireproxy/wireproxy.conf") == "/etc/wireproxy/wg0.conf")
        #expect(try path("wg0.conf", in: "conf/wireproxy.conf") == "conf/wg0.conf")
        #expect(try path("wg0.conf", in: "wireproxy.conf") == "wg0.conf")
        #expect(try path("wg0.conf", in: "/wireproxy.conf") == "/wg0.conf")
        // Anything with a slash is used as written, relative to the working directory.
        #expect(try path("./wg0.conf", in: "/etc/wireproxy/wireproxy.conf") == "./wg0.conf")
        #expect(try path("/etc/wireguard/wg0.conf", in: "/etc/wireproxy/wireproxy.conf") == "/etc/wireguard/wg0.conf")
        #expect(try ConfigFile.parse("", fileName: "x").wgConfigPath == nil)
    }

    @Test func errorDescriptions() {
        #expect(ConfigError(file: "a.conf", line: 3, key: "MTU", "too small").description == "a.conf:3: MTU: too small")
        #expect(ConfigError(file: "a.conf", line: 3, "no key before =").description == "a.conf:3: no key before =")
        #expect(ConfigError(file: "a.conf", line: nil, "no [Peer] section").description == "a.conf: no [Peer] section")
        // The ignored keys warning groups a key's lines.
        let warning = ConfigWarning(
            file: "a.conf", line: nil,
            kind: .ignoredKeys([.init(key: "PostUp", line: 3), .init(key: "Table", line: 4), .init(key: "PostUp", line: 5)]))
        #expect(warning.description
            == "a.conf: ignoring keys onetun has no use for (it creates no network interface, runs no scripts and "
                + "has no health check): PostUp (lines 3, 5), Table (line 4)")
    }

    /// wg-quick's kernel-interface keys, wg's FwMark and wireproxy's health check: accepted whatever their
    /// value, one warning for the file.
    @Test func ignoredKeys() throws {
        let config = try parse("""
            [Interface]
            Table = off
            PreUp = echo '# not a comment to wg-quick'
            PostDown =
            saveconfig = true
            FwMark = 0x1234
            CheckAlive = 1.1.1.1
            CheckAliveInterval = 3
            """)
        #expect(config.warnings == [
            ConfigWarning(
                file: "wg0.conf", line: nil,
                kind: .ignoredKeys([
                    .init(key: "Table", line: 2), .init(key: "PreUp", line: 3), .init(key: "PostDown", line: 4),
                    .init(key: "SaveConfig", line: 5), .init(key: "FwMark", line: 6), .init(key: "CheckAlive", line: 7),
                    .init(key: "CheckAliveInterval", line: 8),
                ]))
        ])
        // Only in [Interface], where wg-quick reads them.
        #expect(refusal("[Peer]\nPublicKey = \(key2)\nPostUp = true") == "f.conf:3: PostUp: not a key of [Peer]")
    }
}
