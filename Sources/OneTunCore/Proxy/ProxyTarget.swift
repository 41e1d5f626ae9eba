/// Where a proxy client asked to go: an IP address, or a host name for the driver to resolve (the core
/// does no I/O, DNS included), and a TCP port.
public enum ProxyTarget: Hashable, Sendable {
    case address(IPAddress, port: UInt16)
    case name(String, port: UInt16)
}

extension ProxyTarget: CustomStringConvertible {
    /// `host:port`, an IPv6 address in brackets (`[fd00::2]:80`), as in a URI authority (RFC 3986 §3.2.2).
    public var description: String {
        switch self {
        case .address(.v4(let address), let port): "\(address):\(port)"
        case .address(.v6(let address), let port): "[\(address)]:\(port)"
        case .name(let name, let port): "\(name):\(port)"
        }
    }
}
