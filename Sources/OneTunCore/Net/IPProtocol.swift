/// An IP protocol number / IPv6 Next Header value (IANA "Assigned Internet Protocol Numbers").
///
/// A struct, not an enum, so every received value is representable (swift-system's `Errno` style).
@_spi(OneTunInternals) public struct IPProtocol: RawRepresentable, Hashable, Sendable, BitwiseCopyable, CustomStringConvertible {
    public var rawValue: UInt8

    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// IPv6 Hop-by-Hop Options header (RFC 8200 §4.3).
    @inlinable public static var hopByHop: IPProtocol { IPProtocol(rawValue: 0) }
    @inlinable public static var icmp: IPProtocol { IPProtocol(rawValue: 1) }
    @inlinable public static var tcp: IPProtocol { IPProtocol(rawValue: 6) }
    @inlinable public static var udp: IPProtocol { IPProtocol(rawValue: 17) }
    /// IPv6 Routing header (RFC 8200 §4.4).
    @inlinable public static var routing: IPProtocol { IPProtocol(rawValue: 43) }
    /// IPv6 Fragment header (RFC 8200 §4.5).
    @inlinable public static var fragment: IPProtocol { IPProtocol(rawValue: 44) }
    @inlinable public static var icmpv6: IPProtocol { IPProtocol(rawValue: 58) }
    /// IPv6 No Next Header (RFC 8200 §4.7).
    @inlinable public static var noNextHeader: IPProtocol { IPProtocol(rawValue: 59) }
    /// IPv6 Destination Options header (RFC 8200 §4.6).
    @inlinable public static var destinationOptions: IPProtocol { IPProtocol(rawValue: 60) }

    public var description: String {
        switch rawValue {
        case 0: "hop-by-hop"
        case 1: "icmp"
        case 6: "tcp"
        case 17: "udp"
        case 43: "routing"
        case 44: "fragment"
        case 58: "icmpv6"
        case 59: "no-next-header"
        case 60: "destination-options"
        default: "protocol \(rawValue)"
        }
    }
}
