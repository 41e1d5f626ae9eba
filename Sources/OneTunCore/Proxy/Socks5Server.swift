import CSodium

/// The server side of a SOCKS5 handshake (RFC 1928, with RFC 1929 username/password authentication), one
/// per client connection, as a sans-I/O state machine: it reads bytes and says what to do; it opens
/// nothing, reads no clock and has no timer (the driver bounds how long a handshake may take).
///
/// The contract:
/// - Feed every chunk of bytes the client sends to `receive(_:)`, once, in order, until it returns a final
///   event. Each call takes what it can, keeping a partial message internally, and returns a `Step`:
///   `consumed` bytes of this chunk were taken, `output` is to be sent to the client now (it may be
///   non-empty with any event), then `event`:
///   - `.needMoreInput`: every byte of the chunk was taken; wait for the next one.
///   - `.connect(target)` / `.udpAssociate(target)`: the handshake is done. Bytes past `consumed` are not
///     the handshake's: after a CONNECT they are the first payload for the target (a client may pipeline
///     its greeting, authentication, request and data in one write) and must be kept. Answer with a
///     `Socks5Reply` (`.succeeded` with the bound address, or a failure code, then close).
///   - `.refuse(refusal)`: send `output` (which may be empty), then close; `refusal` describes why, for
///     the log. Close after the client's input is read or shut down: on Linux, closing a socket with
///     unread input sends a reset, which may destroy the reply in flight.
/// - After a final event the machine is spent; calling `receive` again is a caller bug.
///
/// It never holds more than the largest legal message, 513 bytes (RFC 1929: VER, ULEN, 255 bytes, PLEN,
/// 255 bytes; a request is at most 262), and never takes a byte past the message it is reading.
///
/// Choices where the RFCs leave room:
/// - A first byte other than 5 is refused at once. A SOCKS4 client (4) gets a SOCKS4 "request rejected"
///   reply (00 5B, port and address zero) so it can report something; anything else gets no reply.
/// - With credentials configured only method 02 (username/password) is accepted, without them only 00 (no
///   authentication); otherwise the reply is 05 FF and the connection closes (RFC 1928 §3).
/// - Credentials are compared in constant time, user name and password together, whatever their lengths
///   (see `Credentials`). A sub-negotiation whose VER is not 1 fails like wrong credentials (01 01).
/// - A request's RSV byte is not checked (lenient: RFC 1928 §4 gives the server no rule for it).
/// - A request whose VER is not 5 is refused with REP 01; BIND and unknown commands with 07, after the
///   whole request is read; an unknown ATYP with 08 as soon as it arrives (its length is unknown); a
///   domain name `Socks5Address` refuses (empty, or not an IP literal and holding a byte other than
///   letters, digits, "-", "_", ".") with 04. A name that is an IP literal is reported as `.address`.
public struct Socks5Server: Sendable {
    /// The result of one `receive(_:)`.
    public struct Step: Hashable, Sendable {
        /// The bytes of the chunk that were taken; those after them are not the handshake's.
        public var consumed: Int
        /// Bytes to send to the client before acting on `event`: the method selection, the authentication
        /// status, a refusal's reply, or several of them in order.
        public var output: [UInt8]
        public var event: Event
    }

    public enum Event: Hashable, Sendable {
        /// The chunk was all taken; the handshake goes on with the next one.
        case needMoreInput
        /// CMD 1 (RFC 1928 §4): open a TCP connection to the target, then reply.
        case connect(ProxyTarget)
        /// CMD 3 (RFC 1928 §7): the address and port the client says it will send datagrams from, often
        /// 0.0.0.0:0 or [::]:0 (not known yet). Open a UDP relay, then reply with its address and port.
        case udpAssociate(ProxyTarget)
        /// Send the step's output, then close.
        case refuse(Refusal)
    }

    /// Why a handshake was refused, for the log.
    public enum Refusal: Hashable, Sendable, CustomStringConvertible {
        /// The greeting's first byte (VER) is not 5.
        case notSocks5(version: UInt8)
        /// The client offers no method we accept: username/password when credentials are configured, "no
        /// authentication" when not.
        case noAcceptableMethod(credentialsRequired: Bool)
        /// The RFC 1929 sub-negotiation's VER is not 1.
        case badAuthenticationVersion(UInt8)
        case authenticationFailed
        /// The request's VER is not 5.
        case badRequestVersion(UInt8)
        /// BIND (2), or a command RFC 1928 does not define.
        case commandNotSupported(UInt8)
        case addressTypeNotSupported(UInt8)
        /// A DST.ADDR domain name that is empty or holds a byte a host name may not.
        case invalidName

        public var description: String {
            switch self {
            case .notSocks5(let version):
                version == 4 ? "SOCKS4 is not supported" : "not a SOCKS5 client (first byte \(version))"
            case .noAcceptableMethod(let required):
                required
                    ? "the client does not offer username/password authentication, which is required"
                    : "the client offers no method without authentication, and no credentials are configured"
            case .badAuthenticationVersion(let version): "username/password sub-negotiation version \(version) is not 1"
            case .authenticationFailed: "wrong username or password"
            case .badRequestVersion(let version): "request version \(version) is not 5"
            case .commandNotSupported(let command): command == 2 ? "BIND is not supported" : "unknown command \(command)"
            case .addressTypeNotSupported(let type): "unknown address type \(type)"
            case .invalidName: "invalid host name in the request"
            }
        }
    }

    /// An RFC 1929 user name and password, each 0–255 bytes.
    ///
    /// Held as the two fields as they appear on the wire, each padded to 256 bytes (length byte, bytes,
    /// zeros): a received pair is laid out the same way and all 512 bytes compared with `sodium_memcmp`, so
    /// the time taken depends neither on where the first difference is nor on the configured lengths, and a
    /// length mismatch is a difference like any other.
    public struct Credentials: Sendable, CustomStringConvertible {
        let padded: [UInt8]

        /// Nil when the user name or the password is longer than 255 bytes: RFC 1929 cannot carry it.
        public init?(username: [UInt8], password: [UInt8]) {
            guard username.count <= 255, password.count <= 255 else { return nil }
            padded = Credentials.pad(username[...], password[...])
        }

        static func pad(_ username: ArraySlice<UInt8>, _ password: ArraySlice<UInt8>) -> [UInt8] {
            var padded = [UInt8](repeating: 0, count: 512)
            padded[0] = UInt8(username.count)
            padded.replaceSubrange(1..<(1 + username.count), with: username)
            padded[256] = UInt8(password.count)
            padded.replaceSubrange(257..<(257 + password.count), with: password)
            return padded
        }

        /// Constant time in the configured user name and password, contents and lengths (see the type's
        /// comment); both are always compared, neither decides alone.
        func matches(username: ArraySlice<UInt8>, password: ArraySlice<UInt8>) -> Bool {
            let received = Credentials.pad(username, password)
            return padded.withUnsafeBytes { a in
                received.withUnsafeBytes { b in sodium_memcmp(a.baseAddress, b.baseAddress, 512) == 0 }
            }
        }

        /// Does not show the password.
        public var description: String { "Socks5Server.Credentials(\(padded[0])-byte user name, password hidden)" }
    }

    /// The message being read. Each has its framing (`frame`) and its handling (`handle`).
    enum State: Hashable {
        /// RFC 1928 §3: VER, NMETHODS, METHODS.
        case greeting
        /// RFC 1929 §2: VER 1, ULEN, UNAME, PLEN, PASSWD.
        case authentication
        /// RFC 1928 §4: VER, CMD, RSV, ATYP, DST.ADDR, DST.PORT.
        case request
        /// A final event was returned.
        case finished
    }

    static let version: UInt8 = 5
    /// RFC 1928 §3 method numbers.
    static let methodNoAuthentication: UInt8 = 0x00
    static let methodUsernamePassword: UInt8 = 0x02
    static let methodNoAcceptable: UInt8 = 0xFF
    /// RFC 1929 §2
    static let authenticationVersion: UInt8 = 0x01
    /// SOCKS4's "request rejected or failed" reply: VN 0, CD 91, DSTPORT 0, DSTIP 0.
    static let socks4Rejection: [UInt8] = [0x00, 0x5B, 0, 0, 0, 0, 0, 0]

    let credentials: Credentials?
    private(set) var state = State.greeting
    /// The bytes of the current message received so far; never longer than the message.
    private(set) var message: [UInt8] = []

    /// `credentials` nil: clients must offer "no authentication"; otherwise they must authenticate.
    public init(credentials: Credentials?) {
        self.credentials = credentials
    }

    /// True once a final event (connect, UDP associate, refuse) was returned.
    public var isFinished: Bool { state == .finished }

    /// Takes bytes of the handshake from the start of `input`, the next chunk the client sent (it may be
    /// empty), and says what to do: see the type's comment. Never takes more than the handshake's bytes.
    public mutating func receive(_ input: UnsafeRawBufferPointer) -> Step {
        precondition(state != .finished, "Socks5Server.receive after the handshake ended")
        var consumed = 0
        var output: [UInt8] = []
        while true {
            let length: Int
            switch frame() {
            case .length(let n):
                length = n
            case .refuse(let refusal, let reply):
                state = .finished
                return Step(consumed: consumed, output: output + reply, event: .refuse(refusal))
            }
            if message.count < length {
                let take = min(length - message.count, input.count - consumed)
                message.append(contentsOf: input[consumed..<(consumed + take)])
                consumed += take
                if message.count < length {
                    return Step(consumed: consumed, output: output, event: .needMoreInput)
                }
                // Frame again: a longer prefix may tell a longer length.
                continue
            }
            let event = handle(&output)
            message.removeAll(keepingCapacity: true)
            if let event { return Step(consumed: consumed, output: output, event: event) }
        }
    }

    enum Framing {
        /// The message's length if `message` holds at least that many bytes, else the bytes to have before
        /// framing again.
        case length(Int)
        /// The prefix is enough to refuse: send `reply`, close.
        case refuse(Refusal, reply: [UInt8])
    }

    /// How long the current message is, as far as its bytes so far tell.
    func frame() -> Framing {
        let m = message
        // The first byte alone, so that a wrong version is refused before anything past it is taken.
        guard m.count >= 1 else { return .length(1) }
        switch state {
        case .greeting:
            // RFC 1928 §3
            if m[0] != Socks5Server.version {
                return .refuse(.notSocks5(version: m[0]), reply: m[0] == 4 ? Socks5Server.socks4Rejection : [])
            }
            return .length(m.count >= 2 ? 2 + Int(m[1]) : 2)
        case .authentication:
            // RFC 1929 §2
            if m[0] != Socks5Server.authenticationVersion {
                return .refuse(.badAuthenticationVersion(m[0]), reply: [Socks5Server.authenticationVersion, 0x01])
            }
            guard m.count >= 2 else { return .length(2) }
            let passwordLengthAt = 2 + Int(m[1])
            guard m.count > passwordLengthAt else { return .length(passwordLengthAt + 1) }
            return .length(passwordLengthAt + 1 + Int(m[passwordLengthAt]))
        case .request:
            // RFC 1928 §4
            if m[0] != Socks5Server.version {
                return .refuse(.badRequestVersion(m[0]), reply: Socks5Reply(.generalFailure).bytes)
            }
            guard m.count >= 4 else { return .length(4) }
            do {
                let addressLength = try m.withUnsafeBytes { bytes throws(Socks5WireError) in
                    try Socks5Address.length(known: bytes.netSlice(from: 3))
                }
                return .length(3 + addressLength)
            } catch {
                return .refuse(.addressTypeNotSupported(m[3]), reply: Socks5Reply(.addressTypeNotSupported).bytes)
            }
        case .finished:
            preconditionFailure("no message after the handshake")
        }
    }

    /// Acts on the complete message: appends to `output` what to send, moves on, and returns the final
    /// event if there is one.
    mutating func handle(_ output: inout [UInt8]) -> Event? {
        let m = message
        switch state {
        case .greeting:
            // RFC 1928 §3: the server selects one of the methods offered, or X'FF' and the client closes.
            let offered = m[2...]
            let wanted = credentials == nil ? Socks5Server.methodNoAuthentication : Socks5Server.methodUsernamePassword
            guard offered.contains(wanted) else {
                output += [Socks5Server.version, Socks5Server.methodNoAcceptable]
                state = .finished
                return .refuse(.noAcceptableMethod(credentialsRequired: credentials != nil))
            }
            output += [Socks5Server.version, wanted]
            state = credentials == nil ? .request : .authentication
            return nil
        case .authentication:
            // RFC 1929 §2: STATUS 0 is success; anything else and the server must close.
            let usernameEnd = 2 + Int(m[1])
            let username = m[2..<usernameEnd]
            let password = m[(usernameEnd + 1)...]
            guard let credentials, credentials.matches(username: username, password: password) else {
                output += [Socks5Server.authenticationVersion, 0x01]
                state = .finished
                return .refuse(.authenticationFailed)
            }
            output += [Socks5Server.authenticationVersion, 0x00]
            state = .request
            return nil
        case .request:
            // RFC 1928 §4, §6
            state = .finished
            let command = m[1]
            guard command == 1 || command == 3 else {
                output += Socks5Reply(.commandNotSupported).bytes
                return .refuse(.commandNotSupported(command))
            }
            let target: ProxyTarget
            do {
                target = try m.withUnsafeBytes { bytes throws(Socks5WireError) in
                    try Socks5Address.parse(bytes.netSlice(from: 3)).0
                }
            } catch {
                // Framing checked the ATYP and the length, so only the name can be wrong.
                output += Socks5Reply(.hostUnreachable).bytes
                return .refuse(.invalidName)
            }
            return command == 1 ? .connect(target) : .udpAssociate(target)
        case .finished:
            preconditionFailure("no message after the handshake")
        }
    }
}
