/// An IPv4 or IPv6 network: an address and how many of its leading bits are fixed, as in an `AllowedIPs`
/// entry.
///
/// The address is always normalised: the bits past `length` are zero, so `10.1.2.3/8` is `10.0.0.0/8`.
/// That is what the kernel and wireguard-go store for an allowed IP (wg(8) warns "AllowedIP has nonzero
/// host part" and goes on), and it makes two spellings of one network compare equal.
///
/// ``contains(_:)`` is a handful of integer operations with no allocation: routing by allowed IPs is built
/// on it.
public struct IPPrefix: Hashable, Sendable, BitwiseCopyable, CustomStringConvertible, LosslessStringConvertible {
    /// The network's first address; every bit past ``length`` is zero.
    public let address: IPAddress
    /// Fixed leading bits: 0–32 for IPv4, 0–128 for IPv6.
    public let length: UInt8

    /// The network of `length` bits holding `address`; the bits past `length` are cleared. `length` must
    /// be at most 32 for IPv4 and 128 for IPv6.
    public init(address: IPAddress, length: Int) {
        switch address {
        case .v4(let a):
            precondition(length >= 0 && length <= 32, "an IPv4 prefix is 0 to 32 bits")
            self.address = .v4(IPv4Address(rawValue: a.rawValue & IPPrefix.mask32(length)))
        case .v6(let a):
            precondition(length >= 0 && length <= 128, "an IPv6 prefix is 0 to 128 bits")
            let (high, low) = IPPrefix.mask128(length)
            self.address = .v6(IPv6Address(high: a.high & high, low: a.low & low))
        }
        self.length = UInt8(length)
    }

    /// The network holding only `address`: /32 or /128, as wg reads an allowed IP written without a length.
    public init(host address: IPAddress) {
        self.init(address: address, length: address.isV4 ? 32 : 128)
    }

    /// Parses `10.0.0.0/8`, `fd00::/64`, or a bare address (a single host). Host bits are cleared, as in
    /// ``init(address:length:)``. The length is decimal without a sign or leading zeros; no brackets, no
    /// surrounding spaces.
    public init?(_ description: String) {
        guard let parsed = IPPrefix.parse(description) else { return nil }
        self = parsed.prefix
    }

    /// Whether `address` is inside this network. An IPv4 address is never inside an IPv6 network, nor the
    /// other way round (an IPv4-mapped IPv6 address included), as in WireGuard's routing tables.
    @inlinable public func contains(_ address: IPAddress) -> Bool {
        switch (self.address, address) {
        case let (.v4(network), .v4(a)):
            return (network.rawValue ^ a.rawValue) & IPPrefix.mask32(Int(length)) == 0
        case let (.v6(network), .v6(a)):
            let (high, low) = IPPrefix.mask128(Int(length))
            return (network.high ^ a.high) & high == 0 && (network.low ^ a.low) & low == 0
        default:
            return false
        }
    }

    /// Whether every address of `other` is inside this network too.
    public func contains(_ other: IPPrefix) -> Bool {
        other.length >= length && contains(other.address)
    }

    /// `10.0.0.0/8`, `fd00::/64`: the normalised address and the length, always both.
    public var description: String { "\(address)/\(length)" }

    /// The leading `length` bits set, of 32.
    @inlinable static func mask32(_ length: Int) -> UInt32 {
        length == 0 ? 0 : UInt32.max << UInt32(32 - length)
    }

    /// The leading `length` bits set, of 128, as the high and low halves.
    @inlinable static func mask128(_ length: Int) -> (high: UInt64, low: UInt64) {
        if length <= 64 {
            return (length == 0 ? 0 : UInt64.max << UInt64(64 - length), 0)
        }
        return (UInt64.max, UInt64.max << UInt64(128 - length))
    }

    /// Splits `address[/length]` and checks both parts; nil for anything else. `hostBitsCleared` says whether
    /// the written address had bits past the length (the config parser warns about it, as wg does).
    static func parse(_ text: String) -> (prefix: IPPrefix, hostBitsCleared: Bool)? {
        let bytes = Array(text.utf8)
        let slash = bytes.firstIndex(of: UInt8(ascii: "/"))
        guard let address = IPAddress(String(decoding: bytes[..<(slash ?? bytes.count)], as: UTF8.self)) else {
            return nil
        }
        let maximum = address.isV4 ? 32 : 128
        var length = maximum
        if let slash {
            let digits = bytes[(slash + 1)...]
            guard let value = decimal(digits), value <= maximum else { return nil }
            length = value
        }
        let prefix = IPPrefix(address: address, length: length)
        return (prefix, prefix.address != address)
    }

    /// One to three decimal digits without a leading zero (other than "0" itself).
    private static func decimal(_ digits: ArraySlice<UInt8>) -> Int? {
        guard (1...3).contains(digits.count), digits.count == 1 || digits.first != UInt8(ascii: "0") else {
            return nil
        }
        var value = 0
        for d in digits {
            guard d >= UInt8(ascii: "0") && d <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int(d - UInt8(ascii: "0"))
        }
        return value
    }
}
