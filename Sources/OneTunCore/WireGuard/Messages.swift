/// Why a WireGuard message was not accepted as well-formed.
@_spi(OneTunInternals) public enum WireGuardWireError: Error, Equatable, Sendable {
    case tooShort
    case wrongLength(expected: Int, actual: Int)
    case unknownType(UInt32)
}

/// The message type field, read as a little-endian 32-bit word so the three reserved bytes must be zero
/// (as wireguard-go does).
@_spi(OneTunInternals) public struct WireGuardMessageType: RawRepresentable, Equatable, Sendable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let initiation = WireGuardMessageType(rawValue: 1)
    public static let response = WireGuardMessageType(rawValue: 2)
    public static let cookieReply = WireGuardMessageType(rawValue: 3)
    public static let transport = WireGuardMessageType(rawValue: 4)
}

/// Byte ranges of the four message formats (paper §5.4.2–§5.4.7).
enum InitiationField {
    static let sender = 4
    static let ephemeral = 8
    static let encryptedStatic = 40  // 32 + 16 tag
    static let encryptedTimestamp = 88  // 12 + 16 tag
    static let mac1 = 116
    static let mac2 = 132
    static let size = 148
}

enum ResponseField {
    static let sender = 4
    static let receiver = 8
    static let ephemeral = 12
    static let encryptedNothing = 44  // 0 + 16 tag
    static let mac1 = 60
    static let mac2 = 76
    static let size = 92
}

enum CookieReplyField {
    static let receiver = 4
    static let nonce = 8  // 24
    static let encryptedCookie = 32  // 16 + 16 tag
    static let size = 64
}

enum TransportField {
    static let receiver = 4
    static let counter = 8
    static let content = 16
    /// Header plus the tag of an empty (keepalive) payload.
    static let minimumSize = 32
}

/// A validated view of one WireGuard message. Lengths are checked once in `init(validating:)`; the
/// accessors then read fixed offsets. Used inside a `withUnsafe…` scope and never stored.
@_spi(OneTunInternals) public struct WireGuardMessage {
    public let bytes: UnsafeRawBufferPointer
    public let type: WireGuardMessageType

    public init(validating bytes: UnsafeRawBufferPointer) throws(WireGuardWireError) {
        guard bytes.count >= 4 else { throw .tooShort }
        let type = WireGuardMessageType(rawValue: UInt32(littleEndian: bytes.loadUnaligned(as: UInt32.self)))
        let expected: Int
        switch type {
        case .initiation: expected = InitiationField.size
        case .response: expected = ResponseField.size
        case .cookieReply: expected = CookieReplyField.size
        case .transport:
            guard bytes.count >= TransportField.minimumSize else { throw .tooShort }
            expected = bytes.count
        default: throw .unknownType(type.rawValue)
        }
        guard bytes.count == expected else { throw .wrongLength(expected: expected, actual: bytes.count) }
        self.bytes = bytes
        self.type = type
    }

    @inlinable func u32(_ offset: Int) -> UInt32 {
        UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    /// The sender index of an initiation or response.
    public var senderIndex: UInt32 { u32(4) }

    /// The receiver index of a response, cookie reply or transport message.
    public var receiverIndex: UInt32 { type == .response ? u32(ResponseField.receiver) : u32(4) }

    /// The nonce counter of a transport message.
    public var counter: UInt64 {
        UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: TransportField.counter, as: UInt64.self))
    }

    func slice(_ offset: Int, _ count: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + count)])
    }

    /// Offset of mac1 in handshake messages (initiation, response); nil for the others.
    var mac1Offset: Int? {
        switch type {
        case .initiation: InitiationField.mac1
        case .response: ResponseField.mac1
        default: nil
        }
    }
}

@inline(__always) func storeLE32(_ value: UInt32, _ buffer: UnsafeMutableRawBufferPointer, at offset: Int) {
    buffer.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt32.self)
}

@inline(__always) func storeLE64(_ value: UInt64, _ buffer: UnsafeMutableRawBufferPointer, at offset: Int) {
    buffer.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt64.self)
}
