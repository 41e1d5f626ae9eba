extension TCPConnection {
    /// The smoothed round-trip time (RFC 6298 SRTT) in nanoseconds; nil before the first measurement.
    public var smoothedRTT: UInt64? { rtt.hasSample ? rtt.srtt : nil }
}
