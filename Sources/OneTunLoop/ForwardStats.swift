/// What one forward did, for `/metrics` and the SIGUSR1 status report: plain counters, bumped where the
/// events happen (an accept, a read from a client, a write to one, a close), never recomputed per packet.
///
/// "Sent" is towards the tunnel (what a local client or a remote forward's local connection wrote, and
/// the forward passed on to the peer), "received" out of it. Connections: a TCP forward's clients
/// accepted on its listener (refused ones included: they are accepted, then reset) and closed; a remote
/// TCP forward's connections from the tunnel; a remote UDP forward's flows; a proxy's clients (refused: over
/// the limit, or told their destination could not be reached). A local UDP forward has no connections, only datagrams.
public final class ForwardStats {
    public enum Kind: String, Sendable {
        case tcp = "TCP", udp = "UDP", remoteTCP = "remote TCP", remoteUDP = "remote UDP", proxy = "proxy"
    }

    public let kind: Kind
    /// As the log's "forwarding …" line names it, e.g. "TCP 127.0.0.1:8080 -> 192.168.4.2:80".
    public let name: String
    public internal(set) var opened = 0
    public internal(set) var closed = 0
    public internal(set) var bytesSent = 0
    public internal(set) var bytesReceived = 0
    public internal(set) var datagramsSent = 0
    public internal(set) var datagramsReceived = 0
    /// Clients reset at once (over --max-connections, the tunnel down, no route) and datagrams dropped.
    public internal(set) var refused = 0

    public var open: Int { opened - closed }
    public var hasConnections: Bool { kind != .udp }

    init(kind: Kind, description: String) {
        self.kind = kind
        name = "\(kind.rawValue) \(description)"
    }
}
