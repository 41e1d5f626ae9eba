/// Settings of one TCP connection.
public struct TCPConfig: Sendable {
    /// Our MSS: MTU minus the IP and TCP headers (RFC 9293 §3.7.1).
    public var mss: Int
    /// Receive and send buffers grow with the data in flight up to these caps.
    public var receiveBufferLimit: Int
    public var sendBufferLimit: Int
    /// How long TIME-WAIT lasts; short, because a forwarder's ports are virtual and plentiful.
    public var timeWait: UInt64
    /// Delayed ACKs wait at most this long (RFC 9293 §3.8.6.3: under 0.5 s; Linux uses 40 ms).
    public var delayedAck: UInt64
    public var initialRTO: UInt64
    public var minimumRTO: UInt64
    public var maximumRTO: UInt64
    /// Retransmissions of one segment before the connection is given up.
    public var maximumRetransmissions: Int
    /// Retransmissions of a SYN before an opening connection is given up (Linux: 6, about 2 minutes).
    public var maximumSynRetransmissions: Int
    /// An active open not synchronized after this long fails with `.timedOut` (0: only the SYN
    /// retransmissions limit it). Long enough for a lost session's new handshake (15 s) and one SYN.
    public var connectTimeout: UInt64
    /// The bytes all of a stack's TCP buffers may hold together before windows stop growing.
    public var bufferMemoryLimit: Int
    public var congestionControl: CongestionAlgorithm
    /// The receive window a connection starts with; it grows towards `receiveBufferLimit` as the
    /// application reads faster (receive-buffer autotuning: twice what was read per round trip).
    public var initialReceiveWindow: Int

    public init(
        mss: Int = 1380, receiveBufferLimit: Int = 4 << 20, sendBufferLimit: Int = 4 << 20,
        timeWait: UInt64 = 2 * Nanos.second, delayedAck: UInt64 = 40 * Nanos.millisecond,
        initialRTO: UInt64 = Nanos.second, minimumRTO: UInt64 = 200 * Nanos.millisecond,
        maximumRTO: UInt64 = 60 * Nanos.second, maximumRetransmissions: Int = 12, maximumSynRetransmissions: Int = 6,
        connectTimeout: UInt64 = 20 * Nanos.second, bufferMemoryLimit: Int = 256 << 20, congestionControl: CongestionAlgorithm = .bbr, initialReceiveWindow: Int = 128 << 10
    ) {
        self.mss = mss
        self.receiveBufferLimit = receiveBufferLimit
        self.sendBufferLimit = sendBufferLimit
        self.timeWait = timeWait
        self.delayedAck = delayedAck
        self.initialRTO = initialRTO
        self.minimumRTO = minimumRTO
        self.maximumRTO = maximumRTO
        self.maximumRetransmissions = maximumRetransmissions
        self.maximumSynRetransmissions = maximumSynRetransmissions
        self.connectTimeout = connectTimeout
        self.bufferMemoryLimit = bufferMemoryLimit
        self.congestionControl = congestionControl
        self.initialReceiveWindow = initialReceiveWindow
    }
}

/// Counters of one connection, for logs and tests.
public struct TCPStats: Equatable, Sendable {
    public var segmentsSent = 0
    public var segmentsReceived = 0
    public var bytesSent = 0
    public var bytesReceived = 0
    public var timeouts = 0
    public var fastRetransmits = 0
    /// Segments sent again: fast retransmits, SACK recovery and go-back-N after a timeout.
    public var retransmittedSegments = 0
    /// Retransmissions found lost again (SACKs for data sent after them arrived first).
    public var lostRetransmissions = 0
    public var outOfOrderSegments = 0
    public init() {}
}

/// The connection states of RFC 9293 §3.3.2.
public enum TCPState: Equatable, Sendable {
    case closed, listen, synSent, synReceived, established, finWait1, finWait2, closeWait, closing, lastAck, timeWait
}

/// A connection's state with the data only that state has (as swift-nio's state machines carry theirs):
/// TIME-WAIT knows when it ends, and CLOSED why the connection ended (nil for an orderly close or the
/// application's own abort). `state` is the plain RFC name.
enum TCPPhase: Equatable, Sendable {
    case closed(TCPError?)
    case listen, synSent, synReceived, established, finWait1, finWait2, closeWait, closing, lastAck
    case timeWait(until: Instant)

    var state: TCPState {
        switch self {
        case .closed: .closed
        case .listen: .listen
        case .synSent: .synSent
        case .synReceived: .synReceived
        case .established: .established
        case .finWait1: .finWait1
        case .finWait2: .finWait2
        case .closeWait: .closeWait
        case .closing: .closing
        case .lastAck: .lastAck
        case .timeWait: .timeWait
        }
    }
}

/// Why a connection ended other than by an orderly close.
public enum TCPError: Error, Equatable, Sendable {
    /// The peer answered our SYN with RST.
    case refused
    /// The peer reset an established connection.
    case reset
    /// Retransmissions ran out.
    case timedOut
    /// An ICMP destination-unreachable error answered our SYN.
    case unreachable
}
