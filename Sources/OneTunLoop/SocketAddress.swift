import CUV
import Glibc
import OneTunCore

/// Conversions between socket addresses and the core's endpoints.
enum SocketAddressConversion {
    /// The IPv4 and IPv6 addresses of a getaddrinfo answer, in its order (nil: none).
    static func endpoints(_ list: UnsafeMutablePointer<addrinfo>?) -> [UDPEndpoint] {
        var endpoints: [UDPEndpoint] = []
        var info = list
        while let i = info {
            if let a = i.pointee.ai_addr, let e = endpoint(a) { endpoints.append(e) }
            info = i.pointee.ai_next
        }
        return endpoints
    }

    static func endpoint(_ addr: UnsafePointer<sockaddr>) -> UDPEndpoint? {
        switch Int32(addr.pointee.sa_family) {
        case AF_INET:
            return addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                let raw = withUnsafeBytes(of: sin.pointee.sin_addr) { IPv4Address(loading: $0, at: 0) }
                return UDPEndpoint(address: .v4(raw), port: UInt16(bigEndian: sin.pointee.sin_port))
            }
        case AF_INET6:
            return addr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                let raw = withUnsafeBytes(of: sin6.pointee.sin6_addr) { IPv6Address(loading: $0, at: 0) }
                return UDPEndpoint(address: .v6(raw), port: UInt16(bigEndian: sin6.pointee.sin6_port))
            }
        default:
            return nil
        }
    }

    static func storage(_ endpoint: UDPEndpoint) -> sockaddr_storage {
        var storage = sockaddr_storage()
        withUnsafeMutableBytes(of: &storage) { raw in
            switch endpoint.address {
            case .v4(let a):
                var sin = sockaddr_in()
                sin.sin_family = sa_family_t(AF_INET)
                sin.sin_port = endpoint.port.bigEndian
                withUnsafeMutableBytes(of: &sin.sin_addr) { a.store(into: $0, at: 0) }
                withUnsafeBytes(of: sin) { raw.copyMemory(from: $0) }
            case .v6(let a):
                var sin6 = sockaddr_in6()
                sin6.sin6_family = sa_family_t(AF_INET6)
                sin6.sin6_port = endpoint.port.bigEndian
                withUnsafeMutableBytes(of: &sin6.sin6_addr) { a.store(into: $0, at: 0) }
                withUnsafeBytes(of: sin6) { raw.copyMemory(from: $0) }
            }
        }
        return storage
    }
}
