/// A validated IPv4 or IPv6 packet, chosen by the version nibble: what comes out of the tunnel.
/// Like the views it wraps, valid only inside the scope that owns the memory.
@_spi(OneTunInternals) public enum IPPacket {
    case v4(IPv4Packet)
    case v6(IPv6Packet)

    /// Validates by the first nibble: 4 or 6, anything else (or nothing) is refused.
    public init(validating buffer: UnsafeRawBufferPointer) throws(WireError) {
        guard let first = buffer.first else { throw .truncated }
        switch first >> 4 {
        case 4: self = .v4(try IPv4Packet(validating: buffer))
        case 6: self = .v6(try IPv6Packet(validating: buffer))
        default: throw .badVersion
        }
    }

    public var source: IPAddress {
        switch self {
        case .v4(let p): .v4(p.source)
        case .v6(let p): .v6(p.source)
        }
    }

    public var destination: IPAddress {
        switch self {
        case .v4(let p): .v4(p.destination)
        case .v6(let p): .v6(p.destination)
        }
    }

    /// The protocol of the upper-layer payload (after IPv6 extension headers).
    public var upperLayerProtocol: IPProtocol {
        switch self {
        case .v4(let p): p.ipProtocol
        case .v6(let p): p.upperLayerProtocol
        }
    }

    /// The TCP segment, UDP datagram or ICMP message.
    public var upperLayerPayload: UnsafeRawBufferPointer {
        switch self {
        case .v4(let p): p.payload
        case .v6(let p): p.upperLayerPayload
        }
    }

    /// TTL or Hop Limit.
    public var hopLimit: UInt8 {
        switch self {
        case .v4(let p): p.timeToLive
        case .v6(let p): p.hopLimit
        }
    }

    /// The whole packet, up to its length field.
    public var bytes: UnsafeRawBufferPointer {
        switch self {
        case .v4(let p): p.bytes
        case .v6(let p): p.bytes
        }
    }
}
