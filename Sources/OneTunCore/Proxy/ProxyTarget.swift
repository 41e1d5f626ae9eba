/// Where a proxy client asked to go: an address, or a host name for the caller to resolve (the core does no
/// I/O, DNS included).
public enum ProxyTarget: Hashable, Sendable {
    case address(IPAddress, port: UInt16)
    case name(String, port: UInt16)
}

extension ProxyTarget: CustomStringConvertible {
    /// "host:port", "192.0.2.1:port", or "[2001:db8::1]:port": IPv6 in brackets, so its colons cannot be
    /// mistaken for the port's.
    public var description: String {
        switch self {
        case .address(.v4(let a), let port): "\(a):\(port)"
        case .address(.v6(let a), let port): "[\(a)]:\(port)"
        case .name(let name, let port): "\(name):\(port)"
        }
    }
}
