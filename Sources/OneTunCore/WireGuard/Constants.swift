/// Protocol constants, named as in the WireGuard paper §6.1 ("Timers & Stateless UX") and wireguard-go's
/// device/constants.go, so the code can be checked against them line by line.
@_spi(OneTunInternals) public enum WireGuardConstants {
    public static let rekeyAfterMessages: UInt64 = 1 << 60
    public static let rejectAfterMessages: UInt64 = .max - (1 << 13)
    public static let rekeyAfterTime: UInt64 = 120 * Nanos.second
    public static let rejectAfterTime: UInt64 = 180 * Nanos.second
    public static let rekeyAttemptTime: UInt64 = 90 * Nanos.second
    public static let rekeyTimeout: UInt64 = 5 * Nanos.second
    public static let keepaliveTimeout: UInt64 = 10 * Nanos.second
    /// Up to this much random extra delay on handshake retransmissions (wireguard-go `RekeyTimeoutJitterMaxMs`).
    public static let rekeyTimeoutJitterMax: UInt64 = 334 * Nanos.millisecond
    /// REKEY_ATTEMPT_TIME / REKEY_TIMEOUT retries before giving up.
    public static let maxTimerHandshakes: Int = Int(rekeyAttemptTime / rekeyTimeout)
    /// The responder's cookie secret changes this often, and a received cookie is used for at most this long.
    public static let cookieRefreshTime: UInt64 = 120 * Nanos.second
    /// A responder accepts at most one initiation from a peer per this interval (wireguard-go `HandshakeInitationRate`).
    public static let handshakeInitiationRate: UInt64 = Nanos.second / 50
    /// Packets queued while a handshake is pending (wireguard-go `QueueStagedSize`).
    public static let maxStagedPackets = 128
}

/// Bytes that go into the handshake and cookie derivations (paper §5.4).
enum WireGuardLabels {
    static let construction = Array("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s".utf8)
    static let identifier = Array("WireGuard v1 zx2c4 Jason@zx2c4.com".utf8)
    static let mac1 = Array("mac1----".utf8)
    static let cookie = Array("cookie--".utf8)
}
