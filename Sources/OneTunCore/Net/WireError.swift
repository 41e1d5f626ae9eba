/// Why a packet view refused a buffer.
///
/// Every view checks all of its lengths once, in `init(validating:)`; a buffer that passes is safe to read
/// with the view's accessors. On the data path these are counted drops, never fatal.
@_spi(OneTunInternals) public enum WireError: Error, Equatable, Hashable, Sendable {
    /// The buffer ends before a header does, or before a length field says the packet ends.
    case truncated
    /// An IP header whose version nibble is not the one expected.
    case badVersion
    /// A field holds an impossible value: IHL < 5, a TCP data offset < 5, an option with a bad length.
    case malformed
    /// The IPv4 header checksum does not verify.
    case badChecksum
    /// An IPv4 fragment (MF set or a non-zero offset) or an IPv6 packet with a Fragment header.
    /// We do not reassemble; callers count these separately from malformed packets.
    case fragment
    /// Well formed, but something an end host may not ignore and we do not implement: an IPv6 option whose
    /// action bits demand processing, a Routing header with segments left.
    case unsupported
}
