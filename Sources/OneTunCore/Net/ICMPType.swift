/// An ICMPv4 message type (RFC 792).
@_spi(OneTunInternals) public struct ICMPv4Type: RawRepresentable, Hashable, Sendable, BitwiseCopyable, CustomStringConvertible {
    public var rawValue: UInt8

    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }

    @inlinable public static var echoReply: ICMPv4Type { ICMPv4Type(rawValue: 0) }
    @inlinable public static var destinationUnreachable: ICMPv4Type { ICMPv4Type(rawValue: 3) }
    @inlinable public static var redirect: ICMPv4Type { ICMPv4Type(rawValue: 5) }
    @inlinable public static var echoRequest: ICMPv4Type { ICMPv4Type(rawValue: 8) }
    @inlinable public static var timeExceeded: ICMPv4Type { ICMPv4Type(rawValue: 11) }
    @inlinable public static var parameterProblem: ICMPv4Type { ICMPv4Type(rawValue: 12) }

    /// Error messages carry the invoking packet's IP header and at least 8 bytes of its data (RFC 792).
    public var isError: Bool { rawValue == 3 || rawValue == 5 || rawValue == 11 || rawValue == 12 }

    public var description: String {
        switch rawValue {
        case 0: "echo-reply"
        case 3: "destination-unreachable"
        case 5: "redirect"
        case 8: "echo-request"
        case 11: "time-exceeded"
        case 12: "parameter-problem"
        default: "icmp type \(rawValue)"
        }
    }
}

/// ICMPv4 Destination Unreachable codes (RFC 792, RFC 1191, RFC 1812 §5.2.7.1).
@_spi(OneTunInternals) public struct ICMPv4UnreachableCode: RawRepresentable, Hashable, Sendable, BitwiseCopyable {
    public var rawValue: UInt8

    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }

    @inlinable public static var network: Self { Self(rawValue: 0) }
    @inlinable public static var host: Self { Self(rawValue: 1) }
    @inlinable public static var `protocol`: Self { Self(rawValue: 2) }
    @inlinable public static var port: Self { Self(rawValue: 3) }
    /// "Fragmentation needed and DF set": bytes 6–7 carry the next-hop MTU (RFC 1191 §4).
    @inlinable public static var fragmentationNeeded: Self { Self(rawValue: 4) }
    @inlinable public static var administrativelyProhibited: Self { Self(rawValue: 13) }
}

/// An ICMPv6 message type (RFC 4443 §2.1, RFC 4861 §4).
@_spi(OneTunInternals) public struct ICMPv6Type: RawRepresentable, Hashable, Sendable, BitwiseCopyable, CustomStringConvertible {
    public var rawValue: UInt8

    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }

    @inlinable public static var destinationUnreachable: ICMPv6Type { ICMPv6Type(rawValue: 1) }
    @inlinable public static var packetTooBig: ICMPv6Type { ICMPv6Type(rawValue: 2) }
    @inlinable public static var timeExceeded: ICMPv6Type { ICMPv6Type(rawValue: 3) }
    @inlinable public static var parameterProblem: ICMPv6Type { ICMPv6Type(rawValue: 4) }
    @inlinable public static var echoRequest: ICMPv6Type { ICMPv6Type(rawValue: 128) }
    @inlinable public static var echoReply: ICMPv6Type { ICMPv6Type(rawValue: 129) }
    @inlinable public static var routerSolicitation: ICMPv6Type { ICMPv6Type(rawValue: 133) }
    @inlinable public static var routerAdvertisement: ICMPv6Type { ICMPv6Type(rawValue: 134) }
    @inlinable public static var neighborSolicitation: ICMPv6Type { ICMPv6Type(rawValue: 135) }
    @inlinable public static var neighborAdvertisement: ICMPv6Type { ICMPv6Type(rawValue: 136) }

    /// Error messages have types 0–127 (RFC 4443 §2.1) and carry as much of the invoking packet as fits.
    public var isError: Bool { rawValue < 128 }

    public var description: String {
        switch rawValue {
        case 1: "destination-unreachable"
        case 2: "packet-too-big"
        case 3: "time-exceeded"
        case 4: "parameter-problem"
        case 128: "echo-request"
        case 129: "echo-reply"
        case 133: "router-solicitation"
        case 134: "router-advertisement"
        case 135: "neighbor-solicitation"
        case 136: "neighbor-advertisement"
        default: "icmpv6 type \(rawValue)"
        }
    }
}

/// ICMPv6 Destination Unreachable codes (RFC 4443 §3.1).
@_spi(OneTunInternals) public struct ICMPv6UnreachableCode: RawRepresentable, Hashable, Sendable, BitwiseCopyable {
    public var rawValue: UInt8

    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }

    @inlinable public static var noRoute: Self { Self(rawValue: 0) }
    @inlinable public static var administrativelyProhibited: Self { Self(rawValue: 1) }
    @inlinable public static var beyondScope: Self { Self(rawValue: 2) }
    @inlinable public static var address: Self { Self(rawValue: 3) }
    @inlinable public static var port: Self { Self(rawValue: 4) }
}
