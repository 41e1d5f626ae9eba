import Glibc
import Logging
@_spi(OneTunInternals) import OneTunCore
@_spi(OneTunInternals) import OneTunLoop

/// `--ping`: ICMP echo through the tunnel, to check that a peer is reachable end to end. The network
/// interface underneath also answers the peer's own echo requests to our address while it runs.
final class PingPayload: TunnelPayload {
    let interface: NetworkInterface
    let source: IPAddress
    let target: IPAddress
    let count: Int
    let logger: Logger
    let identifier: UInt16
    var nextSequence: UInt16 = 1
    var sentAt: [UInt16: Instant] = [:]
    var nextSend: Instant?
    var finishAt: Instant?
    private(set) var replies = 0
    var onDone: (() -> Void)?

    init(source: IPAddress, target: IPAddress, count: Int, identifier: UInt16, mtu: Int, logger: Logger) {
        interface = NetworkInterface(addresses: [source], mtu: mtu)
        self.source = source
        self.target = target
        self.count = count
        self.identifier = identifier
        self.logger = logger
    }

    func start(now: Instant) { nextSend = now }

    func receive(packet: UnsafeRawBufferPointer, now: Instant) {
        switch interface.receive(packet: packet, now: now) {
        case .echoReply(let from, let id, let sequence, let size) where id == identifier && from == target:
            guard let sent = sentAt.removeValue(forKey: sequence) else { return }
            replies += 1
            let ms = Double(now.since(sent)) / 1e6
            print("\(size) bytes from \(target): icmp_seq=\(sequence) time=\(fixed(ms, digits: 2)) ms")
            fflush(nil)
            if replies == count { finish(now) }
        case .dropped(let reason):
            logger.debug("dropped an inbound packet: \(reason)")
        default:
            break
        }
    }

    func finish(_ now: Instant) {
        nextSend = nil
        finishAt = nil
        onDone?()
    }

    func pollPacket(into buffer: UnsafeMutableRawBufferPointer, now: Instant) -> Int? {
        if let n = interface.pollPacket(into: buffer, now: now) { return n }
        guard let due = nextSend, due <= now, Int(nextSequence) <= count else { return nil }
        let sequence = nextSequence
        nextSequence += 1
        sentAt[sequence] = now
        nextSend = Int(nextSequence) <= count ? now.adding(Nanos.second) : nil
        if nextSend == nil { finishAt = now.adding(3 * Nanos.second) }
        return EchoPacket.request(into: buffer, source: source, target: target, identifier: identifier, sequence: sequence)
    }

    func nextDeadline() -> Instant? {
        switch (nextSend, finishAt) {
        case (let a?, let b?): min(a, b)
        case (let a?, nil): a
        case (nil, let b?): b
        case (nil, nil): nil
        }
    }

    func handleTimeout(now: Instant) {
        if let end = finishAt, end <= now { finish(now) }
    }
}
