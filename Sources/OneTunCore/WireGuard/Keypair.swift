/// One direction pair of transport keys from a completed handshake (paper §5.4.5), with its own
/// sending counter and replay window. A class so the current/previous/next slots can move it without
/// copying the 256-byte window; the keys are wiped when it goes away.
final class Keypair {
    @exclusivity(unchecked) var sendKey: Key32
    @exclusivity(unchecked) var receiveKey: Key32
    @exclusivity(unchecked) var sendCounter: UInt64 = 0
    @exclusivity(unchecked) var replay = ReplayWindow()
    let created: Instant
    /// Whether we sent the initiation that made this keypair; only the initiator rekeys on age.
    let isInitiator: Bool
    let localIndex: UInt32
    let remoteIndex: UInt32

    init(sendKey: Key32, receiveKey: Key32, created: Instant, isInitiator: Bool, localIndex: UInt32, remoteIndex: UInt32) {
        self.sendKey = sendKey
        self.receiveKey = receiveKey
        self.created = created
        self.isInitiator = isInitiator
        self.localIndex = localIndex
        self.remoteIndex = remoteIndex
    }

    deinit {
        sendKey.wipe()
        receiveKey.wipe()
    }

    /// Paper §6.1: no packet is sent or accepted with keys older than REJECT_AFTER_TIME, and none is
    /// sent once the counter reaches REJECT_AFTER_MESSAGES.
    @inline(__always) func canSend(now: Instant) -> Bool {
        sendCounter < WireGuardConstants.rejectAfterMessages
            && now.since(created) < WireGuardConstants.rejectAfterTime
    }

    @inline(__always) func canReceive(now: Instant) -> Bool {
        now.since(created) < WireGuardConstants.rejectAfterTime
    }
}
