/// An IPv4 or an IPv6 address.
public enum IPAddress: Hashable, Comparable, Sendable, BitwiseCopyable, CustomStringConvertible,
    LosslessStringConvertible
{
    case v4(IPv4Address)
    case v6(IPv6Address)

    /// Parses plain address text (dotted quad or RFC 4291 text). Brackets and ports are the caller's job.
    public init?(_ description: String) {
        if let a = IPv4Address(description) {
            self = .v4(a)
        } else if let a = IPv6Address(description) {
            self = .v6(a)
        } else {
            return nil
        }
    }

    public var isV4: Bool {
        if case .v4 = self { true } else { false }
    }

    public var isV6: Bool { !isV4 }

    public var isUnspecified: Bool {
        switch self {
        case .v4(let a): a.isUnspecified
        case .v6(let a): a.isUnspecified
        }
    }

    public var isLoopback: Bool {
        switch self {
        case .v4(let a): a.isLoopback
        case .v6(let a): a.isLoopback
        }
    }

    public var isMulticast: Bool {
        switch self {
        case .v4(let a): a.isMulticast
        case .v6(let a): a.isMulticast
        }
    }

    /// Every IPv4 address sorts before every IPv6 address.
    public static func < (a: IPAddress, b: IPAddress) -> Bool {
        switch (a, b) {
        case let (.v4(x), .v4(y)): x < y
        case let (.v6(x), .v6(y)): x < y
        case (.v4, .v6): true
        case (.v6, .v4): false
        }
    }

    public var description: String {
        switch self {
        case .v4(let a): a.description
        case .v6(let a): a.description
        }
    }
}
