/// The virtual interface behind the tunnel: it owns our addresses (the source peer IPs), checks every
/// inbound IP packet once, answers what the stack answers by itself — ICMP echo to our addresses, RST to
/// segments for connections that do not exist — and counts every packet it drops.
///
/// Sans-I/O like the rest of the core: `receive(packet:now:)` takes an inner packet from the tunnel;
/// `pollPacket(into:now:)` hands out the next packet to send, written at the start of the caller's buffer.
@_spi(OneTunInternals) public final class NetworkInterface {
    /// What became of an inbound packet.
    public enum Delivery: Equatable, Sendable {
        /// Handled here (an echo request answered, a RST queued) or nothing to do.
        case consumed
        /// An ICMP or ICMPv6 echo reply addressed to us, for a ping client above.
        case echoReply(source: IPAddress, identifier: UInt16, sequence: UInt16, size: Int)
        /// A TCP segment for us, with no stack set here (`hasTCP`): the layer above takes it.
        case tcp
        /// A UDP datagram for us, checked (lengths, and the checksum unless `trustsTransportChecksums`);
        /// the layer above takes its payload from the packet without parsing it again.
        case udp(UDPArrival)
        case dropped(DropReason)
    }

    /// Who sent a UDP datagram, to which of our ports, and where its payload lies in the packet.
    public struct UDPArrival: Equatable, Sendable {
        public var source: UDPEndpoint
        public var destination: UDPEndpoint
        public var payloadOffset: Int
        public var payloadLength: Int
    }

    public enum DropReason: Equatable, Sendable {
        case malformed(WireError)
        case fragment
        case notForUs
        case badChecksum
        case unsupportedProtocol
        /// Too many answers already waiting for `pollPacket`; this one is dropped rather than queued without bound.
        case replyQueueFull
    }

    public struct Stats: Equatable, Sendable {
        public var received = 0
        public var sent = 0
        public var echoRequestsAnswered = 0
        public var resetsSent = 0
        public var droppedMalformed = 0
        public var droppedFragments = 0
        public var droppedNotForUs = 0
        public var droppedBadChecksum = 0
        public var droppedUnsupported = 0
        public var droppedReplyQueueFull = 0
        public init() {}
    }

    /// Answers waiting to be sent; echo replies carry the request's data.
    enum Reply {
        case echo(builder: PacketBuilder, payload: [UInt8])
        case reset(builder: PacketBuilder)
    }

    public let addresses: [IPAddress]
    public let mtu: Int
    @exclusivity(unchecked) public private(set) var stats = Stats()
    /// When set, TCP segments go to this stack; those it does not take are answered with RST.
    @exclusivity(unchecked) public var tcp: TCPStack?
    /// When true (and no `tcp` stack is set), TCP segments are passed up (`.tcp`) instead of
    /// being answered with RST.
    public var hasTCP = false
    /// When true, UDP datagrams are passed up instead of being dropped.
    public var hasUDP = false
    /// When true, TCP and UDP checksums of inbound packets are taken as correct, not recomputed: for
    /// packets that a WireGuard session authenticated (its Poly1305 tag already proved them unaltered
    /// since the peer sealed them), as Linux's WireGuard marks what it decrypts CHECKSUM_UNNECESSARY
    /// (drivers/net/wireguard/receive.c). Lengths, addresses and the IPv4 header checksum are still
    /// checked, and an IPv6 UDP datagram with a zero checksum is still refused (RFC 8200 §8.1); outbound
    /// checksums are always computed.
    public var trustsTransportChecksums = false
    static let maxQueuedReplies = 64
    @exclusivity(unchecked) var replies: [Reply] = []
    @exclusivity(unchecked) var replyHead = 0

    public init(addresses: [IPAddress], mtu: Int = 1420) {
        precondition(!addresses.isEmpty, "an interface needs an address")
        self.addresses = addresses
        self.mtu = mtu
    }

    @inline(__always) func isOurs(_ address: IPAddress) -> Bool {
        for a in addresses where a == address { return true }
        return false
    }

    /// Takes one inbound IP packet (valid only during the call).
    public func receive(packet: UnsafeRawBufferPointer, now: Instant) -> Delivery {
        stats.received += 1
        let ip: IPPacket
        do {
            ip = try IPPacket(validating: packet)
        } catch .fragment {
            // Fragments are not reassembled: WireGuard peers send whole packets within the MTU.
            stats.droppedFragments += 1
            return .dropped(.fragment)
        } catch {
            stats.droppedMalformed += 1
            return .dropped(.malformed(error))
        }
        guard isOurs(ip.destination) else {
            stats.droppedNotForUs += 1
            return .dropped(.notForUs)
        }
        let upper = ip.upperLayerPayload
        switch (ip, ip.upperLayerProtocol) {
        case (.v4, .icmp):
            guard let message = try? ICMPv4Message(validating: upper) else { return malformed() }
            guard message.verifyChecksum() else { return badChecksum() }
            if message.type == .destinationUnreachable { return unreachable(message.originalPacket, now) }
            return echo(ICMPRepr.parse(message), ip, message.payload, size: upper.count)
        case (.v6(let v6), .icmpv6):
            guard let message = try? ICMPv6Message(validating: upper) else { return malformed() }
            guard message.verifyChecksum(src: v6.source, dst: v6.destination) else { return badChecksum() }
            if message.type == .destinationUnreachable { return unreachable(message.originalPacket, now) }
            return echo(ICMPRepr.parse(message), ip, message.payload, size: upper.count)
        case (_, .tcp):
            guard let segment = try? TCPSegment(validating: upper) else { return malformed() }
            guard trustsTransportChecksums || segment.verifyChecksum(src: ip.source, dst: ip.destination) else {
                return badChecksum()
            }
            if let tcp {
                if tcp.receive(ip, segment, now: now) { return .consumed }
            } else if hasTCP {
                return .tcp
            }
            return reset(segment, ip)
        case (_, .udp):
            guard let datagram = try? UDPDatagram(validating: upper) else { return malformed() }
            // Over IPv6 a zero UDP checksum is refused even when trusted (RFC 8200 §8.1; Linux too).
            let trusted = trustsTransportChecksums && (ip.source.isV4 || datagram.checksum != 0)
            guard trusted || datagram.verifyChecksum(src: ip.source, dst: ip.destination) else {
                return badChecksum()
            }
            if hasUDP {
                let payload = datagram.payload
                return .udp(UDPArrival(
                    source: UDPEndpoint(address: ip.source, port: datagram.sourcePort),
                    destination: UDPEndpoint(address: ip.destination, port: datagram.destinationPort),
                    payloadOffset: payload.baseAddress.map { $0 - packet.baseAddress! } ?? 0, payloadLength: payload.count))
            }
            stats.droppedUnsupported += 1
            return .dropped(.unsupportedProtocol)
        default:
            stats.droppedUnsupported += 1
            return .dropped(.unsupportedProtocol)
        }
    }

    /// RFC 1122 §4.2.3.9 / RFC 5461: a destination-unreachable error quoting one of our TCP segments. A
    /// connection still opening gives up at once (as Linux does), so its client hears about it promptly;
    /// an established one treats it as soft and carries on.
    func unreachable(_ original: ICMPOriginalPacket?, _ now: Instant) -> Delivery {
        guard let original, original.ipProtocol == .tcp, isOurs(original.source),
            let localPort = original.sourcePort, let remotePort = original.destinationPort,
            let sequence = original.sequenceNumber
        else { return .consumed }
        tcp?.unreachable(
            local: original.source, localPort: localPort, remote: original.destination, remotePort: remotePort,
            sequence: sequence)
        return .consumed
    }

    func malformed() -> Delivery {
        stats.droppedMalformed += 1
        return .dropped(.malformed(.malformed))
    }

    func badChecksum() -> Delivery {
        stats.droppedBadChecksum += 1
        return .dropped(.badChecksum)
    }

    func enqueue(_ reply: Reply) -> Bool {
        guard replies.count - replyHead < Self.maxQueuedReplies else {
            stats.droppedReplyQueueFull += 1
            return false
        }
        replies.append(reply)
        return true
    }

    /// RFC 792 / RFC 4443 §4.2: an echo request to one of our addresses is answered with the same
    /// identifier, sequence number and data.
    func echo(_ repr: ICMPRepr?, _ ip: IPPacket, _ data: UnsafeRawBufferPointer, size: Int) -> Delivery {
        switch repr {
        case .echoRequest(let identifier, let sequence)?:
            let builder = PacketBuilder(
                source: ip.destination, destination: ip.source,
                transport: .icmp(.echoReply(identifier: identifier, sequence: sequence)))
            // A reply larger than the MTU could not leave; the request could not have been that large either.
            guard builder.headerLength + data.count <= mtu else { return malformed() }
            guard enqueue(.echo(builder: builder, payload: Array(data))) else { return .dropped(.replyQueueFull) }
            stats.echoRequestsAnswered += 1
            return .consumed
        case .echoReply(let identifier, let sequence)?:
            return .echoReply(source: ip.source, identifier: identifier, sequence: sequence, size: size)
        case nil:
            // Other ICMP messages (errors for connections we do not have, router advertisements, …).
            return .consumed
        }
    }

    /// RFC 9293 §3.10.7.1: a segment for a connection that does not exist (state CLOSED) gets a reset,
    /// unless it is itself a reset. Without ACK: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>; with ACK:
    /// <SEQ=SEG.ACK><CTL=RST>.
    func reset(_ segment: TCPSegment, _ ip: IPPacket) -> Delivery {
        let flags = segment.flags
        guard !flags.contains(.rst) else { return .consumed }
        let repr: TCPRepr
        if flags.contains(.ack) {
            repr = TCPRepr(
                sourcePort: segment.destinationPort, destinationPort: segment.sourcePort,
                sequenceNumber: segment.acknowledgmentNumber, flags: .rst, window: 0)
        } else {
            repr = TCPRepr(
                sourcePort: segment.destinationPort, destinationPort: segment.sourcePort, sequenceNumber: 0,
                acknowledgmentNumber: segment.sequenceNumber &+ UInt32(truncatingIfNeeded: segment.sequenceLength),
                flags: [.rst, .ack], window: 0)
        }
        let builder = PacketBuilder(source: ip.destination, destination: ip.source, transport: .tcp(repr))
        guard enqueue(.reset(builder: builder)) else { return .dropped(.replyQueueFull) }
        stats.resetsSent += 1
        return .consumed
    }

    /// Writes the next packet to send at the start of `buffer` (at least `mtu` bytes); nil when none.
    public func pollPacket(into buffer: UnsafeMutableRawBufferPointer, now: Instant) -> Int? {
        guard replyHead < replies.count else { return tcp?.pollPacket(into: buffer, now: now) }
        let reply = replies[replyHead]
        replyHead += 1
        if replyHead == replies.count {
            replies.removeAll(keepingCapacity: true)
            replyHead = 0
        }
        stats.sent += 1
        switch reply {
        case .echo(let builder, let payload):
            return payload.withUnsafeBytes { builder.emit(into: buffer, at: 0, copying: $0) }
        case .reset(let builder):
            return builder.emit(into: buffer, at: 0, payloadLength: 0)
        }
    }

    public func nextDeadline() -> Instant? { tcp?.nextDeadline() }

    public func handleTimeout(now: Instant) { tcp?.handleTimeout(now: now) }
}
