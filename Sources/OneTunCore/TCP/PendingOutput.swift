/// Control output a connection owes, sent at the next `pollSegment`: one set instead of a flag each.
struct PendingOutput: OptionSet {
    let rawValue: UInt8

    /// Our SYN (or SYN,ACK): at the open, again after a timeout, or for a retransmitted SYN of the peer.
    static let syn = PendingOutput(rawValue: 1 << 0)
    /// An ACK now: out-of-order data, a second full segment, a window update, a challenge ACK, an
    /// unacceptable segment (RFC 9293 §3.10.7.4). Any segment we send carries it.
    static let ack = PendingOutput(rawValue: 1 << 1)
    /// A RST: our abort, or the answer to an unacceptable ACK (numbered `pendingResetSeq`).
    static let reset = PendingOutput(rawValue: 1 << 2)
    /// A zero-window probe (RFC 9293 §3.8.6.1), owed by the persist timer.
    static let probe = PendingOutput(rawValue: 1 << 3)
    /// The segment at SND.UNA again: fast retransmit, a NewReno partial ACK, or its retransmission found lost.
    static let retransmitFirst = PendingOutput(rawValue: 1 << 4)
}
