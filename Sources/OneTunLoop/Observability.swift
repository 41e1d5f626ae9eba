import CUV
import Glibc
import Logging
@_spi(OneTunInternals) import OneTunCore

/// What an operator sees of a running forwarder: the `/metrics`, `/readyz` and `/healthz` answers
/// (served by `MetricsServer`), the SIGUSR1 status report in the shape of `wg show`, and the handshake
/// state said to systemd (`SystemdNotifier`). Everything is read from counters kept where the events
/// happen; building an answer costs O(peers + forwards + connections), once per request, never per packet.
///
/// Readiness: ready unless some peer is failing, which is
/// - its session is lost (nothing authenticated came back for Keepalive-Timeout + Rekey-Timeout, 15 s,
///   after data went out: the log's "session … lost") or expired with traffic waiting (no new handshake
///   within Reject-After-Time, 180 s);
/// - handshakes with it are failing (no reply, a reply that does not decrypt, an ICMP error, …);
/// - it has traffic (we sent it something, a handshake initiation included) and no handshake ever
///   completed.
/// A working session rekeys before it is 180 s old, so "ready" means every peer with traffic has a
/// handshake newer than Reject-After-Time. A peer whose session expired for want of traffic stays ready
/// (its next packet starts a handshake), and so does a peer without an Endpoint that has not called yet.
@_spi(OneTunInternals) public final class Observability {
    let core: TunnelCore
    let forwarder: Forwarder
    let loop: TunnelLoop
    let logger: Logger
    let publicKey: Key32
    /// Wall-clock seconds since the epoch when the process started.
    let startTime: Double
    let usr1 = UnsafeMutablePointer<uv_signal_t>.allocate(capacity: 1)
    var started = false
    public private(set) var metricsServer: MetricsServer?
    public private(set) var notifier: SystemdNotifier?
    /// The last STATUS= line sent to systemd.
    var lastStatus = ""

    public init(core: TunnelCore, forwarder: Forwarder, loop: TunnelLoop, logger: Logger, startTime: Double) {
        self.core = core
        self.forwarder = forwarder
        self.loop = loop
        self.logger = logger
        self.startTime = startTime
        publicKey = WGCrypto.x25519PublicKey(privateKey: core.config.privateKey)
    }

    /// SIGUSR1 writes the status report; the loop's stop closes every handle of ours (and says STOPPING=1
    /// to systemd); peer events update systemd's STATUS=.
    public func start() {
        guard !started else { return }
        started = true
        uv_signal_init(loop.loop, usr1)
        usr1.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        uv_signal_start(usr1, { handle, _ in
            let me = Unmanaged<Observability>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
            me.logger.info("\(me.statusReport())")
        }, SIGUSR1)
        let previous = loop.onStop
        loop.onStop = { [unowned self] in
            previous?()
            self.stop()
        }
        loop.onPeerEvent = { [unowned self] _ in self.updateStatus() }
    }

    func stop() {
        notifier?.stopping()
        metricsServer?.close()
        uv_signal_stop(usr1)
        uv_close(UnsafeMutableRawPointer(usr1).assumingMemoryBound(to: uv_handle_t.self), nil)
    }

    /// Serves `/metrics`, `/readyz` and `/healthz` on `address`.
    public func serveMetrics(on address: sockaddr_storage, description: String) throws(LoopError) {
        let server = MetricsServer(loop: loop.loop, logger: logger) { [unowned self] path in
            switch path {
            case "/metrics":
                return (200, PrometheusText.contentType, self.metricsText())
            case "/readyz":
                let (ready, reason) = self.readiness()
                return ready ? (200, "text/plain; charset=utf-8", "ready\n") : (503, "text/plain; charset=utf-8", "not ready: \(reason)\n")
            case "/healthz":
                return (200, "text/plain; charset=utf-8", "ok\n")
            default:
                return nil
            }
        }
        try server.listen(on: address, description: description)
        metricsServer = server
    }

    /// Talks to systemd when NOTIFY_SOCKET is set: READY=1 now (the listeners are bound), STATUS= as the
    /// handshakes change, WATCHDOG=1 pings, STOPPING=1 at the end.
    public func notifySystemd() {
        guard let notifier = SystemdNotifier.fromEnvironment(loop: loop.loop, logger: logger) else { return }
        self.notifier = notifier
        lastStatus = statusLine()
        notifier.send("READY=1\nSTATUS=\(lastStatus)")
        notifier.startWatchdog()
    }

    func updateStatus() {
        guard let notifier else { return }
        let status = statusLine()
        guard status != lastStatus else { return }
        lastStatus = status
        notifier.send("STATUS=\(status)")
    }

    // MARK: Peers

    func hasTraffic(_ peer: PeerStatus) -> Bool {
        let s = peer.stats
        return s.handshakeInitiationsSent > 0 || s.packetsSent > 0 || s.packetsReceived > 0 || s.handshakesCompleted > 0
    }

    /// Whether a peer's session works (or is not needed), and why not.
    func failure(of peer: PeerStatus, now: Instant) -> String? {
        let name = core.peerCount == 1 ? "the peer" : "peer \(peer.publicKey.base64)"
        if let since = peer.outageSince {
            let problem = peer.handshakeProblem.map { "; handshakes failing: \($0)" } ?? ""
            return "session with \(name) lost: nothing from it for \(now.since(since) / Nanos.second) s\(problem)"
        }
        if let problem = peer.handshakeProblem { return "handshakes with \(name) failing: \(problem)" }
        if hasTraffic(peer) && peer.lastHandshake == nil { return "waiting for the first handshake with \(name)" }
        return nil
    }

    /// Ready, or the first failing peer's reason (and how many more fail).
    public func readiness() -> (ready: Bool, reason: String) {
        let now = TunnelLoop.now()
        let failures = core.peers.compactMap { failure(of: $0, now: now) }
        guard let first = failures.first else { return (true, "") }
        return (false, failures.count > 1 ? "\(first); and \(failures.count - 1) more peers" : first)
    }

    /// systemd's STATUS= line: "handshake done with N/M peers", or what is awaited.
    func statusLine() -> String {
        let now = TunnelLoop.now()
        let peers = core.peers
        let done = peers.filter { $0.lastHandshake != nil && failure(of: $0, now: now) == nil }.count
        let summary = "handshake done with \(done)/\(peers.count) peer\(peers.count == 1 ? "" : "s")"
        guard let waiting = peers.first(where: { failure(of: $0, now: now) != nil || $0.lastHandshake == nil }) else { return summary }
        if let problem = waiting.handshakeProblem {
            return "\(summary); handshake with \(waiting.publicKey.base64) failing: \(problem)"
        }
        return "\(summary); waiting for handshake with \(waiting.publicKey.base64)"
    }

    func describe(endpoint: EndpointAddress?) -> String {
        guard let endpoint else { return "" }
        return endpoint.isEmpty ? loop.endpointDescription : TunnelLoop.describe(endpoint)
    }

    static func wallSeconds(_ instant: Instant) -> Int64 {
        (Int64(instant.nanoseconds) + TunnelLoop.wallClockOffset()) / 1_000_000_000
    }

    /// The endpoint socket's port, as `wg show` says "listening port".
    var listeningPort: Int {
        var storage = sockaddr_storage()
        var length = Int32(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_udp_getsockname(loop.udp, $0, &length) }
        }
        guard rc == 0 else { return 0 }
        return withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Int(UInt16(bigEndian: TunnelLoop.port($0))) }
        }
    }

    // MARK: /metrics

    /// The whole `/metrics` body, generated into one string.
    public func metricsText() -> String {
        var out = PrometheusText()
        let peers = core.peers
        let key = { (peer: PeerStatus) in [("public_key", peer.publicKey.base64)] }
        out.family("onetun_peer_info", .gauge, help: "Always 1; the peer's current endpoint as a label (empty while unknown).", peers) {
            ([("public_key", $0.publicKey.base64), ("endpoint", self.describe(endpoint: $0.endpoint))], 1)
        }
        out.family(
            "onetun_peer_latest_handshake_seconds", .gauge,
            help: "Wall-clock time of the peer's latest completed handshake, seconds since the epoch; 0 if none.", peers
        ) { (key($0), $0.lastHandshake.map { Int(Self.wallSeconds($0)) } ?? 0) }
        out.family("onetun_peer_session_up", .gauge, help: "1 while the peer's session works (established, not lost), else 0.", peers) {
            (key($0), $0.isEstablished && $0.outageSince == nil && $0.handshakeProblem == nil ? 1 : 0)
        }
        out.family("onetun_peer_received_bytes_total", .counter, help: "Inner IP bytes received from the peer (decrypted, before padding).", peers) {
            (key($0), $0.stats.bytesReceived)
        }
        out.family("onetun_peer_sent_bytes_total", .counter, help: "Inner IP bytes sent to the peer (before encryption and padding).", peers) {
            (key($0), $0.stats.bytesSent)
        }
        out.family("onetun_peer_received_packets_total", .counter, help: "Transport messages received from the peer, keepalives included.", peers) {
            (key($0), $0.stats.packetsReceived)
        }
        out.family("onetun_peer_sent_packets_total", .counter, help: "Transport messages sent to the peer, keepalives included.", peers) {
            (key($0), $0.stats.packetsSent)
        }
        out.family("onetun_peer_handshakes_total", .counter, help: "Handshakes completed with the peer (either side initiating).", peers) {
            (key($0), $0.stats.handshakesCompleted)
        }

        let forwards = forwarder.forwardStats
        let name = { (f: ForwardStats) in [("forward", f.name)] }
        let connected = forwards.filter(\.hasConnections)
        out.family(
            "onetun_forward_open_connections", .gauge,
            help: "Connections open: a TCP forward's or a proxy's clients, a remote TCP forward's connections, a remote UDP forward's flows.", connected
        ) { (name($0), $0.open) }
        out.family("onetun_forward_connections_total", .counter, help: "Connections (or remote UDP flows) since start, refused ones included.", connected) {
            (name($0), $0.opened)
        }
        out.family("onetun_forward_sent_bytes_total", .counter, help: "Payload bytes the forward passed into the tunnel.", forwards) {
            (name($0), $0.bytesSent)
        }
        out.family("onetun_forward_received_bytes_total", .counter, help: "Payload bytes the forward passed out of the tunnel.", forwards) {
            (name($0), $0.bytesReceived)
        }
        let udp = forwards.filter { $0.kind == .udp || $0.kind == .remoteUDP }
        out.family("onetun_forward_sent_datagrams_total", .counter, help: "UDP datagrams the forward passed into the tunnel.", udp) {
            (name($0), $0.datagramsSent)
        }
        out.family("onetun_forward_received_datagrams_total", .counter, help: "UDP datagrams the forward passed out of the tunnel.", udp) {
            (name($0), $0.datagramsReceived)
        }
        out.family(
            "onetun_forward_refused_total", .counter,
            help: "Clients reset at once (over --max-connections, the tunnel down, no route) and datagrams dropped.", forwards
        ) { (name($0), $0.refused) }

        // TCP inside the tunnel: released connections' counters plus the open ones'.
        var retransmissions = forwarder.departedRetransmissions
        var timeouts = forwarder.departedTimeouts
        var rttSum: UInt64 = 0
        var rttCount: UInt64 = 0
        for case let client? in forwarder.clients where !client.closing && client.id >= 0 {
            let connection = core.connection(client.id)
            retransmissions += connection.stats.retransmittedSegments
            timeouts += connection.stats.timeouts
            if let srtt = connection.smoothedRTT {
                rttSum &+= srtt
                rttCount += 1
            }
        }
        out.single("onetun_tcp_connections", .gauge, help: "TCP connections in the tunnel's stack (TIME-WAIT included).", core.tcp.count)
        out.single("onetun_tcp_retransmitted_segments_total", .counter, help: "TCP segments sent again (fast retransmit, SACK recovery, after a time-out).", retransmissions)
        out.single("onetun_tcp_rto_expirations_total", .counter, help: "TCP retransmission time-outs (RTO expiries).", timeouts)
        out.single("onetun_tcp_smoothed_rtt_seconds", .gauge, help: "Mean smoothed RTT (RFC 6298 SRTT) of the open forwarded connections with a measurement; 0 without one.", rttCount == 0 ? 0 : Double(rttSum / rttCount) / 1e9)

        // Drops, by reason: the WireGuard layer's (each datagram or packet counted once), then the interface's.
        let wg = core.stats.wireGuard
        let known = wg.droppedReplayed + wg.droppedDecryption + wg.droppedMalformed + wg.droppedHandshake + wg.droppedUnknownSource
            + wg.droppedSourceNotAllowed
        out.family("onetun_wireguard_dropped_total", .counter, help: "Datagrams and packets the WireGuard layer dropped, by reason.")
        for (reason, count) in [
            ("replayed", wg.droppedReplayed), ("decryption_failed", wg.droppedDecryption), ("malformed", wg.droppedMalformed),
            ("handshake_invalid", wg.droppedHandshake), ("unknown_source", wg.droppedUnknownSource),
            ("source_not_allowed", wg.droppedSourceNotAllowed), ("other", max(0, wg.dropped - known)),
            ("no_route", wg.droppedNoRoute), ("staged_expired", wg.stagedDropped),
        ] {
            out.sample("onetun_wireguard_dropped_total", [("reason", reason)], count)
        }
        let i = core.interface.stats
        out.family("onetun_interface_dropped_total", .counter, help: "Inner packets the user-space interface dropped, by reason.")
        for (reason, count) in [
            ("malformed", i.droppedMalformed), ("bad_checksum", i.droppedBadChecksum), ("fragment", i.droppedFragments),
            ("not_for_us", i.droppedNotForUs), ("unsupported_protocol", i.droppedUnsupported), ("reply_queue_full", i.droppedReplyQueueFull),
            ("outgoing_unsent", core.packetsDropped), ("udp_datagram", core.datagramsDropped),
        ] {
            out.sample("onetun_interface_dropped_total", [("reason", reason)], count)
        }
        out.single("onetun_wireguard_handshake_initiations_sent_total", .counter, help: "Handshake initiations sent to every peer.", wg.handshakeInitiationsSent)
        out.family("onetun_endpoint_datagrams_total", .counter, help: "Datagrams on the endpoint socket, by direction.")
        out.sample("onetun_endpoint_datagrams_total", [("direction", "received")], loop.datagramsReceived)
        out.sample("onetun_endpoint_datagrams_total", [("direction", "sent")], loop.datagramsSent)
        out.single("onetun_endpoint_send_failures_total", .counter, help: "Datagrams to the endpoints the socket did not take (full buffer, unreachable).", loop.sendFailures)

        out.single("onetun_udp_ports_in_use", .gauge, help: "Virtual UDP ports of the port pool held by local UDP clients.", core.udpPorts.count)
        out.single("onetun_udp_ports_capacity", .gauge, help: "Virtual UDP ports the pool can hand out.", core.udpPorts.capacity)

        if let dns = core.dnsStats {
            out.single("onetun_dns_queries_total", .counter, help: "DNS queries sent through the tunnel.", dns.queriesSent)
            out.single("onetun_dns_cache_hits_total", .counter, help: "Names answered from the resolver's cache.", dns.cacheHits)
            out.single("onetun_dns_timeouts_total", .counter, help: "DNS queries that got no answer in time.", dns.timeouts)
        }

        let process = ProcessStats.read()
        out.single("process_open_fds", .gauge, help: "Number of open file descriptors.", process.openDescriptors)
        out.single("process_max_fds", .gauge, help: "Maximum number of open file descriptors.", process.maxDescriptors)
        out.single("process_resident_memory_bytes", .gauge, help: "Resident memory size in bytes.", process.residentBytes)
        out.single("process_virtual_memory_bytes", .gauge, help: "Virtual memory size in bytes.", process.virtualBytes)
        out.single("process_cpu_seconds_total", .counter, help: "Total user and system CPU time spent in seconds.", process.cpuSeconds)
        out.single("process_start_time_seconds", .gauge, help: "Start time of the process since unix epoch in seconds.", startTime)
        return out.text
    }

    // MARK: SIGUSR1

    /// `wg show`'s shape: the interface, each peer, then each forward.
    public func statusReport() -> String {
        let now = TunnelLoop.now()
        var lines = ["status (SIGUSR1):", "interface: onetun", "  public key: \(publicKey.base64)", "  listening port: \(listeningPort)"]
        for peer in core.peers {
            lines.append("")
            lines.append("peer: \(peer.publicKey.base64)")
            let endpoint = describe(endpoint: peer.endpoint)
            lines.append("  endpoint: \(endpoint.isEmpty ? "(none)" : endpoint)")
            lines.append("  allowed ips: \(peer.allowedIPs.isEmpty ? "(none)" : peer.allowedIPs.map { "\($0)" }.joined(separator: ", "))")
            if let handshake = peer.lastHandshake {
                let seconds = now.since(handshake) / Nanos.second
                lines.append("  latest handshake: \(seconds) second\(seconds == 1 ? "" : "s") ago")
            } else {
                lines.append("  latest handshake: (none)")
            }
            lines.append("  transfer: \(Self.bytes(peer.stats.bytesReceived)) received, \(Self.bytes(peer.stats.bytesSent)) sent")
            if let failure = failure(of: peer, now: now) { lines.append("  problem: \(failure)") }
            if peer.persistentKeepaliveSeconds > 0 { lines.append("  persistent keepalive: every \(peer.persistentKeepaliveSeconds) seconds") }
        }
        for forward in forwarder.forwardStats {
            lines.append("")
            lines.append("forward: \(forward.name)")
            if forward.hasConnections {
                lines.append("  connections: \(forward.open) open, \(forward.opened) total, \(forward.refused) refused")
            } else {
                lines.append("  datagrams: \(forward.datagramsReceived) received, \(forward.datagramsSent) sent, \(forward.refused) dropped")
            }
            lines.append("  transfer: \(Self.bytes(forward.bytesReceived)) received, \(Self.bytes(forward.bytesSent)) sent")
        }
        return lines.joined(separator: "\n")
    }

    /// As wg(8) prints transfer amounts: "N B", else two decimals of KiB, MiB, GiB or TiB.
    static func bytes(_ n: Int) -> String {
        guard n >= 1024 else { return "\(n) B" }
        var value = Double(n)
        for unit in ["KiB", "MiB", "GiB", "TiB"] {
            value /= 1024
            if value < 1024 || unit == "TiB" {
                let hundredths = Int((value * 100).rounded())
                let fraction = hundredths % 100
                return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction) \(unit)"
            }
        }
        return "\(n) B"
    }
}

/// The process metrics every Prometheus client library exports, from /proc.
struct ProcessStats {
    var openDescriptors = 0
    var maxDescriptors = 0
    var residentBytes = 0
    var virtualBytes = 0
    var cpuSeconds = 0.0

    static func read() -> ProcessStats {
        var s = ProcessStats()
        if let dir = opendir("/proc/self/fd") {
            var n = 0
            while let entry = readdir(dir) {
                let first = entry.pointee.d_name.0
                if first != UInt8(ascii: ".") { n += 1 }
            }
            closedir(dir)
            // Less the descriptor that read the directory.
            s.openDescriptors = max(0, n - 1)
        }
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 { s.maxDescriptors = Int(clamping: limit.rlim_cur) }
        // /proc/self/statm: size resident shared text lib data dt, in pages.
        let fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC)
        if fd >= 0 {
            var buffer = [UInt8](repeating: 0, count: 256)
            let n = Glibc.read(fd, &buffer, buffer.count)
            close(fd)
            if n > 0 {
                let fields = buffer[0..<n].split(separator: UInt8(ascii: " ")).map { Int(String(decoding: $0, as: UTF8.self)) ?? 0 }
                let page = Int(sysconf(Int32(_SC_PAGESIZE)))
                if fields.count >= 2 {
                    s.virtualBytes = fields[0] * page
                    s.residentBytes = fields[1] * page
                }
            }
        }
        var usage = rusage()
        if getrusage(RUSAGE_SELF.rawValue, &usage) == 0 {
            let user = Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
            let system = Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
            s.cpuSeconds = user + system
        }
        return s
    }
}
