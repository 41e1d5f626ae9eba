/// The header a SOCKS5 client puts in front of each datagram it sends to the UDP relay, and the relay in
/// front of each answer (RFC 1928 §7), as values:
///
///     | RSV (2) 0 | FRAG | ATYP | DST.ADDR | DST.PORT | DATA |
///
/// From the client, the address is where the datagram goes; towards the client, where the answer came
/// from (always an address). FRAG 0 is a whole datagram; we implement no reassembly (optional in §7), so
/// the relay drops, and counts, datagrams with FRAG ≠ 0.
public struct Socks5UDPHeader: Hashable, Sendable {
    public var fragment: UInt8
    public var target: ProxyTarget

    public init(fragment: UInt8 = 0, target: ProxyTarget) {
        self.fragment = fragment
        self.target = target
    }

    /// The header in front of an answer from `address`: 10 bytes for IPv4, 22 for IPv6. The relay keeps
    /// this much headroom before the payload it receives, and `emit(source:port:into:)` fills it.
    public static func length(for address: IPAddress) -> Int {
        address.isV4 ? 3 + 1 + 4 + 2 : 3 + 1 + 16 + 2
    }

    /// The headroom that fits the header of an answer from either family.
    public static let maxAddressHeaderLength = 3 + 1 + 16 + 2

    /// The bytes `emit` writes.
    public var length: Int { 3 + Socks5Address.encodedLength(of: target) }

    /// Writes the header at the start of `bytes` (at least `length` long) and returns its length.
    @discardableResult
    public func emit(into bytes: UnsafeMutableRawBufferPointer) -> Int {
        precondition(bytes.count >= length, "no room for the SOCKS5 UDP header")
        bytes.netStore(UInt16(0), at: 0)
        bytes.netStore(fragment, at: 2)
        return 3 + Socks5Address.emit(target, into: bytes.netSlice(3, bytes.count))
    }

    /// Writes the header of a whole answer from `source:port` at the start of `bytes` (at least
    /// `length(for: source)` long) and returns its length. No allocation: to send an answer already in a
    /// buffer at offset `p`, emit into `buffer[(p - length(for: source))..<p]` and send from there.
    @discardableResult
    public static func emit(source: IPAddress, port: UInt16, into bytes: UnsafeMutableRawBufferPointer) -> Int {
        Socks5UDPHeader(target: .address(source, port: port)).emit(into: bytes)
    }
}

/// A read-only view of a datagram a SOCKS5 client sent to the UDP relay (RFC 1928 §7): the header checked
/// once, the payload a slice of the same memory. Valid only inside the `withUnsafe…` scope that owns the
/// memory; never store one.
///
/// RSV is not checked (RFC 1928 gives the receiver no rule for it). Parsing allocates only for a domain
/// name (its `String`); an address target costs nothing.
public struct Socks5UDPDatagram {
    /// The whole datagram, header and payload.
    public let bytes: UnsafeRawBufferPointer
    /// FRAG, ATYP, DST.ADDR and DST.PORT as values.
    public let header: Socks5UDPHeader
    /// Where the payload starts: the header's length.
    public let payloadOffset: Int

    /// Throws `.truncated` when the buffer ends inside the header, `.addressTypeNotSupported` for an
    /// unknown ATYP, `.invalidName` for a name `Socks5Address` refuses. An empty payload is valid.
    public init(validating buffer: UnsafeRawBufferPointer) throws(Socks5WireError) {
        guard buffer.count >= 4 else { throw .truncated }
        let (target, length) = try Socks5Address.parse(buffer.netSlice(from: 3))
        bytes = buffer
        header = Socks5UDPHeader(fragment: buffer[2], target: target)
        payloadOffset = 3 + length
    }

    /// FRAG: 0 for a whole datagram, which is all the relay forwards.
    public var fragment: UInt8 { header.fragment }
    public var target: ProxyTarget { header.target }
    public var payload: UnsafeRawBufferPointer { bytes.netSlice(from: payloadOffset) }
}
