import Glibc
import Logging
@_spi(OneTunInternals) import OneTunCore
@_spi(OneTunInternals) import OneTunLoop

/// Wires the settings to the core and the libuv loop and runs until done or signalled.
struct Runner {
    let settings: Settings

    init(_ settings: Settings) { self.settings = settings }

    func run() throws -> Int32 {
        let level = settings.logLevel
        switch settings.logFormat {
        case .text:
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
        case .json:
            LoggingSystem.bootstrap { label in
                var handler = JSONLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
        }
        let logger = Logger(label: "onetun")
        for warning in settings.warnings { logger.warning("\(warning)") }
        // Whatever the level (this one says logging is off).
        if let warning = settings.logFilterWarning { writeStandardError("onetun: warning: \(warning)\n") }
        let config = WireGuardConfig(
            privateKey: settings.privateKey, peerPublicKey: settings.endpointPublicKey,
            presharedKey: settings.presharedKey, persistentKeepaliveSeconds: settings.keepAlive, mtu: settings.mtu)
        guard let target = settings.ping else { return try forward(config: config, logger: logger) }
        try settings.checkRoute(to: target, what: "--ping \(target)")
        let tunnel = WireGuardDevice(config: config, random: SystemRandom())
        let payload = PingPayload(
            source: settings.sourcePeerIP(for: target)!, target: target, count: settings.pingCount,
            identifier: UInt16(truncatingIfNeeded: getpid()), mtu: settings.mtu, logger: logger)
        let loop = TunnelLoop(core: PayloadCore(tunnel: tunnel, payload: payload, logger: logger), logger: logger)
        payload.onDone = { loop.stop() }
        try loop.start(endpoint: settings.endpoint, name: settings.endpointName, bind: settings.bind)
        logger.info("tunnel to \(settings.endpointDescription) as \(settings.sourcePeerIP(for: target)!); pinging \(target)")
        payload.start(now: TunnelLoop.now())
        loop.run()
        print("\(settings.pingCount) packets transmitted, \(payload.replies) received")
        return payload.replies > 0 ? 0 : 1
    }

    /// Port forwarding until SIGINT or SIGTERM.
    func forward(config: WireGuardConfig, logger: Logger) throws -> Int32 {
        guard !settings.forwards.isEmpty || !settings.remoteForwards.isEmpty || settings.stdio != nil || !settings.proxies.isEmpty || settings.remoteSocks5 != nil else {
            throw UsageError("no port forward given: pass [src_host:]<src_port>:<dst_host>:<dst_port>[:TCP,UDP] or set ONETUN_PORT_FORWARD_1 (or use --ping to check a tunnel, --stdio HOST:PORT for one connection over standard input and output)")
        }
        var forwards: [TCPForward] = []
        var udpForwards: [UDPForward] = []
        // With DNS servers inside the tunnel, a TCP forward's name is asked of them for each client.
        let tunnelDNS = settings.dnsServers.contains { settings.sourcePeerIP(for: $0) != nil }
        for spec in settings.forwards {
            let listen = try SocketAddress.resolve(host: "\(spec.source)".trimmed(where: { $0 == "[" || $0 == "]" }), port: spec.sourcePort, what: spec.notation)
            if tunnelDNS, spec.proto == .tcp, case .name(let name) = spec.destination {
                forwards.append(TCPForward(
                    listen: listen, destination: .v4(.unspecified), destinationPort: spec.destinationPort, destinationName: name,
                    description: "\(spec.source):\(spec.sourcePort) -> \(name):\(spec.destinationPort) (resolved through the tunnel)"))
                continue
            }
            let destination = try SocketAddress.address(spec.destination, port: spec.destinationPort, what: spec.notation)
            try settings.checkRoute(to: destination, what: settings.place(of: spec) + spec.notation)
            guard settings.sourcePeerIP(for: destination) != nil else {
                throw UsageError("\(settings.place(of: spec))\(spec.notation): the destination \(destination) and --source-peer-ip \(settings.sourcePeerIPs[0]) must be the same IP version")
            }
            let description = "\(spec.source):\(spec.sourcePort) -> \(destination.isV4 ? "\(destination)" : "[\(destination)]"):\(spec.destinationPort)"
            switch spec.proto {
            case .tcp:
                forwards.append(TCPForward(
                    listen: listen, destination: destination, destinationPort: spec.destinationPort, description: description))
            case .udp:
                udpForwards.append(UDPForward(
                    listen: listen, destination: UDPEndpoint(address: destination, port: spec.destinationPort), description: description))
            }
        }
        var remotes: [RemoteForward] = []
        for spec in settings.remoteForwards {
            let host: String
            switch spec.destination {
            case .address(let a): host = "\(a)"
            case .name(let n): host = n
            }
            let address = try SocketAddress.resolve(host: host, port: spec.destinationPort, what: spec.notation)
            remotes.append(RemoteForward(
                port: spec.sourcePort, destination: address, isUDP: spec.proto == .udp,
                description: "\(spec.source):\(spec.sourcePort) -> \(spec.destination):\(spec.destinationPort)"))
        }
        var tcp = TCPConfig()
        tcp.connectTimeout = settings.connectTimeout
        tcp.bufferMemoryLimit = settings.maxBufferMemory
        let coreConfig: TunnelCoreConfig
        if settings.peers.isEmpty {
            var oneConfig = TunnelCoreConfig(wireGuard: config, addresses: settings.sourcePeerIPs, tcp: tcp, udpIdleTimeout: settings.udpTimeout)
            // The file's AllowedIPs for its one peer route as they would in wg (a proxy's destination
            // outside them is refused at once, a packet from a source outside them dropped).
            if let allowed = settings.peerAllowedIPs { oneConfig.peers[0].allowedIPs = allowed }
            coreConfig = oneConfig
        } else {
            let peers = settings.peers.map { peer in
                PeerConfig(
                    publicKey: peer.publicKey, presharedKey: peer.presharedKey, allowedIPs: peer.allowedIPs,
                    endpoint: peer.endpoint.map { address in
                        withUnsafePointer(to: address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { TunnelLoop.endpointAddress($0) } }
                    },
                    persistentKeepaliveSeconds: peer.keepAlive)
            }
            coreConfig = TunnelCoreConfig(
                privateKey: settings.privateKey, peers: peers, addresses: settings.sourcePeerIPs, mtu: settings.mtu, tcp: tcp,
                udpIdleTimeout: settings.udpTimeout)
        }
        var withDNS = coreConfig
        withDNS.dnsServers = settings.dnsServers
        let core = TunnelCore(config: withDNS, random: SystemRandom())
        if !settings.dnsServers.isEmpty {
            logger.info("names go to \(settings.dnsServers.map { "\($0)" }.joined(separator: ", ")) through the tunnel")
        }
        let loop = TunnelLoop(core: core, logger: logger)
        let forwarder = Forwarder(core: core, driver: loop, logger: logger)
        let observability = Observability(core: core, forwarder: forwarder, loop: loop, logger: logger, startTime: Self.startTime)
        let descriptors = Self.raiseDescriptorLimit(logger)
        // Each connection or flow holds one descriptor; keep room for the listeners, the endpoint socket,
        // the capture file, the resolver and libuv's own.
        let room = descriptors - forwards.count - udpForwards.count - 64
        if let limit = settings.maxConnections {
            if limit > room { logger.warning("--max-connections \(limit) is more than the descriptor limit (\(descriptors)) leaves room for (\(max(room, 0))); accepting may fail with EMFILE") }
            forwarder.maxConnections = limit
        } else {
            forwarder.maxConnections = max(room, 16)
        }
        logger.debug("at most \(forwarder.maxConnections) connections at once (descriptor limit \(descriptors))")
        var pcap: PcapWriter?
        if let path = settings.pcap {
            let writer = try PcapWriter(path: path)
            core.packetTap = { packet, _ in writer.record(packet) }
            var reported = false
            var lossReported = false
            loop.afterFlush = {
                writer.flush()
                if writer.failed && !reported {
                    reported = true
                    logger.error("capture to \(path) stopped: \(writer.failure ?? "write failed"); forwarding goes on")
                }
                if writer.lost > 0 && !lossReported {
                    lossReported = true
                    logger.warning("capture to \(path): its reader is behind by 1 MiB; packets that do not fit are not captured (counted; forwarding does not wait)")
                }
            }
            pcap = writer
            logger.info("capturing inner packets to \(path)")
        }
        defer {
            if let pcap {
                pcap.finish(waitingAtMost: 2 * Nanos.second)
                let lost = pcap.lost > 0 ? ", \(pcap.lost) not captured (the reader was too slow)" : ""
                logger.info("\(pcap.packets) packets captured to \(settings.pcap ?? "")\(lost)")
            }
        }
        try forwarder.listen(forwards)
        try forwarder.listenProxies(settings.proxies.map { proxy in
            ProxyListen(
                kind: proxy.kind == .socks5 ? .socks5 : .http, listen: proxy.listen,
                username: proxy.credentials.map { Array($0.username.utf8) }, password: proxy.credentials.map { Array($0.password.utf8) },
                description: SocketAddress.describe(proxy.listen))
        })
        try forwarder.listenUDP(udpForwards)
        forwarder.listenRemote(remotes)
        if let port = settings.remoteSocks5 {
            try forwarder.listenRemoteSocks5(
                port: port, username: settings.remoteSocks5Credentials.map { Array($0.username.utf8) },
                password: settings.remoteSocks5Credentials.map { Array($0.password.utf8) })
        }
        if settings.peers.isEmpty {
            try loop.start(endpoint: settings.endpoint, name: settings.endpointName, bind: settings.bind)
        } else {
            // Each peer has its own endpoint in the core; the socket binds the ListenPort, or any port.
            var any = sockaddr_storage()
            any.ss_family = settings.endpoint.ss_family
            try loop.start(endpoint: nil, name: nil, bind: settings.bind ?? any)
            for peer in settings.peers {
                if let name = peer.endpointName { loop.resolveAgain(peer: peer.publicKey, name: name, port: peer.endpointPort) }
                logger.info("peer \(peer.publicKey.base64): \(peer.endpoint.map { SocketAddress.describe($0) } ?? "no endpoint, waits for it to call"), allowed IPs \(peer.allowedIPs.map { "\($0)" }.joined(separator: ", "))")
            }
        }
        logger.info("tunnel to \(settings.endpointDescription) as \(settings.sourcePeerIPs.map { "\($0)" }.joined(separator: " and "))")
        var stdio: StdioTunnel?
        if let target = settings.stdio {
            let tunnel: StdioTunnel
            if case .name(let name) = target.host, core.dnsStats != nil {
                // Asked of the tunnel's DNS servers once the loop runs.
                tunnel = StdioTunnel(forwarder: forwarder, destination: .v4(.unspecified), name: name, port: target.port, logger: logger)
            } else {
                // A name is resolved here, before the loop runs.
                let destination = try SocketAddress.address(target.host, port: target.port, what: "--stdio \(target)")
                try settings.checkRoute(to: destination, what: "--stdio \(target)")
                tunnel = StdioTunnel(forwarder: forwarder, destination: destination, port: target.port, logger: logger)
            }
            try tunnel.start()
            stdio = tunnel
        }
        if let metrics = settings.metrics {
            try observability.serveMetrics(on: metrics.address, description: SocketAddress.describe(metrics.address))
        }
        observability.start()
        // Every listener is bound: a client that connects now is accepted.
        observability.notifySystemd()
        loop.run()
        if let failure = stdio?.failure {
            writeStandardError("onetun: --stdio: \(failure)\n")
            return 1
        }
        return 0
    }

    /// Wall-clock seconds since the epoch when the process started (`process_start_time_seconds`):
    /// /proc/self/stat's start time in clock ticks after boot, plus the boot time from /proc/stat; now, if
    /// those cannot be read.
    static let startTime: Double = {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let now = Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
        guard let stat = readTextFile("/proc/self/stat"), let close = stat.lastIndex(of: ")"),
              let procStat = readTextFile("/proc/stat"),
              let btimeLine = procStat.split(separator: "\n").first(where: { $0.hasPrefix("btime ") }),
              let boot = Double(btimeLine.dropFirst(6).trimmed())
        else { return now }
        // Fields after the command's closing parenthesis start at field 3 (state); starttime is field 22.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 19, let ticks = Double(fields[19]) else { return now }
        return boot + ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
    }()

    /// Raises the soft limit on open descriptors to the hard one (a service's connections each hold one)
    /// and returns the limit now in force.
    static func raiseDescriptorLimit(_ logger: Logger) -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        let before = limit.rlim_cur
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) != 0 { limit.rlim_cur = before }
        }
        logger.debug("descriptor limit \(before) raised to \(limit.rlim_cur)")
        return Int(clamping: limit.rlim_cur)
    }
}
