import ArgumentParser
import Glibc
import Logging
@_spi(OneTunInternals) import OneTunCore
@_spi(OneTunInternals) import OneTunLoop

/// The command line, compatible with onetun's: every option also comes from its ONETUN_* variable, and
/// the command line wins.
struct OneTunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "onetun",
        abstract: "Access a port behind a WireGuard peer, without root and without a kernel interface.",
        discussion: """
            Keys, as wg(8) makes them: 'onetun genkey' prints a new private key, 'onetun pubkey' reads a \
            private key on standard input and prints its public key, 'onetun genpsk' prints a new preshared key.

            Signals: SIGINT and SIGTERM reset the open connections and exit; SIGUSR1 logs a status report \
            shaped like 'wg show' (peers, handshakes, transfer, each forward's connections and bytes). Under \
            systemd (NOTIFY_SOCKET) onetun says READY=1 once its listeners are bound, its handshake state as \
            STATUS=, STOPPING=1 at the end, and pings WATCHDOG=1 every WATCHDOG_USEC/2.
            """,
        version: OneTunCommand.version
    )
    static let version = "0.1.0"


    @Argument(help: ArgumentHelp(
        "Port forwards: [src_host:]<src_port>:<dst_host>:<dst_port>[:TCP,UDP]; also ONETUN_PORT_FORWARD_1, _2, ….",
        valueName: "port-forward"))
    var portForwards: [String] = []

    @Option(name: [.customShort("c"), .customLong("config")], help: ArgumentHelp(
        "A configuration file (ONETUN_CONFIG): wg-quick's [Interface] and [Peer], wireproxy's tunnels, onetun's [Forward] and [OneTun] sections; the command line and the environment win over it.",
        valueName: "file"))
    var config: String?

    @Option(help: "Our private key, base64 or hex (ONETUN_PRIVATE_KEY). Prefer --private-key-file.")
    var privateKey: String?

    @Option(help: "A file holding our private key (ONETUN_PRIVATE_KEY_FILE).")
    var privateKeyFile: String?

    @Option(help: "The WireGuard peer's public key, base64 or hex (ONETUN_ENDPOINT_PUBLIC_KEY).")
    var endpointPublicKey: String?

    @Option(help: "The preshared key configured with the peer, base64 or hex (ONETUN_PRESHARED_KEY).")
    var presharedKey: String?

    @Option(help: "The peer's address, host:port (ONETUN_ENDPOINT_ADDR). Example: 1.2.3.4:51820.")
    var endpointAddr: String?

    @Option(help: "Local address for the tunnel's UDP socket (ONETUN_ENDPOINT_BIND_ADDR). Default 0.0.0.0:0 or [::]:0.")
    var endpointBindAddr: String?

    @Option(help: "The UDP port of the tunnel's socket, as wg's ListenPort (ONETUN_LISTEN_PORT); default a free one.")
    var listenPort: String?

    @Option(help: "Our address inside the tunnel (ONETUN_SOURCE_PEER_IP). Example: 192.168.4.3. Twice (or comma-separated), one IPv4 and one IPv6 address: each destination is reached from the address of its version.")
    var sourcePeerIp: [String] = []

    @Option(help: "Persistent keepalive interval in seconds (ONETUN_KEEP_ALIVE).")
    var keepAlive: String?

    @Option(help: "The tunnel MTU (ONETUN_MTU), default 1420.")
    var maxTransmissionUnit: String?

    @Option(help: "Log level: off, error, warn, info, debug or trace, or an env_logger filter such as 'onetun=debug' (ONETUN_LOG), default info.")
    var log: String?

    @Option(name: [.customShort("r"), .customLong("remote")], parsing: .upToNextOption, help: ArgumentHelp(
        "Remote port forwards, [src_host:]<src_port>:<dst_host>:<dst_port>[:TCP,UDP] (ONETUN_REMOTE_PORT_FORWARD_1, _2, …): listen on src_port of the source peer IP inside the tunnel, forward to dst_host:dst_port here. As with onetun, every value up to the next option belongs to -r.",
        valueName: "port-forward"))
    var remote: [String] = []

    @Option(help: "Write every inner IP packet to this pcap file (ONETUN_PCAP).")
    var pcap: String?

    @Option(help: "Seconds a TCP connection through the tunnel may take to open before its client is reset (ONETUN_CONNECT_TIMEOUT), default 20.")
    var connectTimeout: String?

    @Option(help: "Connections (TCP clients and remote UDP flows) open at once, at most (ONETUN_MAX_CONNECTIONS); default from the descriptor limit.")
    var maxConnections: String?

    @Option(help: "Memory all TCP buffers may take together before windows stop growing, bytes or with K, M, G (ONETUN_MAX_BUFFER_MEMORY), default 256M.")
    var maxBufferMemory: String?

    @Option(help: "Seconds a UDP flow (a local client's virtual port, a remote forward's flow) may be idle before it is let go (ONETUN_UDP_TIMEOUT), default 60.")
    var udpTimeout: String?

    @Option(help: ArgumentHelp(
        "DNS servers inside the tunnel (ONETUN_DNS; also the configuration file's DNS =): names for the proxies and --stdio are asked of them through the tunnel.",
        valueName: "ip[,ip...]"))
    var dns: String?

    @Option(help: ArgumentHelp(
        "A SOCKS5 proxy into the tunnel (ONETUN_SOCKS5, commas for several), default host 127.0.0.1: CONNECT to IPv4, IPv6 and names. May be repeated.",
        valueName: "[host:]port"))
    var socks5: [String] = []

    @Option(help: ArgumentHelp(
        "An HTTP proxy into the tunnel (ONETUN_HTTP_PROXY, commas for several), default host 127.0.0.1: CONNECT and absolute-form requests (GET http://host/…). May be repeated.",
        valueName: "[host:]port"))
    var httpProxy: [String] = []

    @Option(help: ArgumentHelp(
        "A SOCKS5 server (CONNECT and UDP ASSOCIATE) on this port of our tunnel address, for the peers: they reach whatever this machine reaches (ONETUN_REMOTE_SOCKS5). Off by default.",
        valueName: "port"))
    var remoteSocks5: String?

    @Option(help: ArgumentHelp(
        "The user name and password the proxies given on the command line ask for (ONETUN_PROXY_AUTH); without it they ask for none.",
        valueName: "user:password"))
    var proxyAuth: String?

    @Option(help: ArgumentHelp(
        "One connection through the tunnel over standard input and output, then exit (ssh's ProxyCommand: --stdio %h:%p). Logs go to standard error, at warn unless --log says otherwise.",
        valueName: "host:port"))
    var stdio: String?

    @Option(help: ArgumentHelp(
        "Serve /metrics (Prometheus text format), /readyz and /healthz over HTTP on this address (ONETUN_METRICS; [OneTun] metrics = in a file), default host 127.0.0.1.",
        valueName: "[host:]port"))
    var metrics: String?

    @Option(help: ArgumentHelp(
        "Log lines as text (the default) or as one JSON object per line: time, level, label, message, metadata (ONETUN_LOG_FORMAT).",
        valueName: "text|json"))
    var logFormat: String?

    @Option(help: "Check the tunnel: send ICMP echo requests to this address inside it and print the replies.")
    var ping: String?

    @Option(help: "How many echo requests --ping sends.")
    var pingCount: Int = 3

    func run() throws {}
}

/// A run-time failure: one line on stderr, exit status 1.
struct RunError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A usage failure (bad value, missing option): one line on stderr, exit status 2.
struct UsageError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

@main
enum OneTun {
    static func main() {
        // A closed pipe (a --pcap FIFO whose reader left, stderr piped into a pager) is a write error to
        // handle, not a reason to die; client sockets already report EPIPE through libuv.
        signal(SIGPIPE, SIG_IGN)
        Forwarder.mapLargeBlocksSeparately()
        if let status = KeyTools.run(Array(CommandLine.arguments.dropFirst())) { exit(status) }
        let command: OneTunCommand
        do {
            command = try OneTunCommand.parse()
        } catch {
            let code = OneTunCommand.exitCode(for: error)
            if code == .success {
                print(OneTunCommand.fullMessage(for: error))
                exit(0)
            }
            writeStandardError("onetun: \(OneTunCommand.message(for: error).split(separator: "\n").first ?? "")\n")
            exit(2)
        }
        do {
            let settings = try Settings.load(command, environment: processEnvironment(), arguments: CommandLine.arguments)
            exit(try Runner(settings).run())
        } catch let error as UsageError {
            writeStandardError("onetun: \(error)\n")
            exit(2)
        } catch {
            writeStandardError("onetun: \(error)\n")
            exit(1)
        }
    }
}
