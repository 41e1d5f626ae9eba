import Glibc
@_spi(OneTunInternals) import OneTunCore

/// `onetun genkey`, `onetun pubkey` and `onetun genpsk`: what wg(8)'s commands of the same names print, so
/// that a user without wireguard-tools can make keys. They come before the forwarder's own command line
/// (a port forward is never one of these words).
enum KeyTools {
    static let commands = ["genkey", "pubkey", "genpsk"]

    /// The exit status of the key command `arguments[0]` names, or nil when it names none.
    static func run(_ arguments: [String]) -> Int32? {
        guard let command = arguments.first, commands.contains(command) else { return nil }
        guard arguments.count == 1 else {
            writeStandardError("Usage: onetun \(command)\n")
            return 1
        }
        switch command {
        case "genkey", "genpsk":
            warnIfWorldAccessible()
            let key = command == "genkey"
                ? WGCrypto.generatePrivateKey(using: SystemRandom())
                : randomKey()
            print(key.base64)
            return 0
        default:
            // As wg's pubkey: exactly 44 characters of base64, then only whitespace (or NUL) to the end.
            var input: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 256)
            while input.count <= 1 << 16 {
                let n = chunk.withUnsafeMutableBytes { read(STDIN_FILENO, $0.baseAddress, $0.count) }
                if n > 0 { input += chunk[0..<n]; continue }
                if n < 0 && errno == EINTR { continue }
                break
            }
            guard input.count >= 44 else {
                writeStandardError("onetun: Key is not the correct length or format\n")
                return 1
            }
            guard input[44...].allSatisfy({ $0 == 0 || $0 == 0x20 || (0x09...0x0D).contains($0) }) else {
                writeStandardError("onetun: Trailing characters found after key\n")
                return 1
            }
            guard let key = canonicalKey(input[0..<44]) else {
                writeStandardError("onetun: Key is not the correct length or format\n")
                return 1
            }
            print(WGCrypto.x25519PublicKey(privateKey: key).base64)
            return 0
        }
    }

    /// wg's key_from_base64: 43 base64 digits and '=', the last digit's two low bits zero (the only
    /// spelling of those 32 bytes).
    static func canonicalKey(_ text: ArraySlice<UInt8>) -> Key32? {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        guard text.count == 44, text.last == UInt8(ascii: "="),
              let last = alphabet.firstIndex(of: text[text.startIndex + 42]), last & 3 == 0,
              let key = Key32(base64: String(decoding: text, as: UTF8.self))
        else { return nil }
        return key
    }

    static func randomKey() -> Key32 {
        var key = Key32.zero
        key.withUnsafeMutableBytes { SystemRandom().fill($0) }
        return key
    }

    /// wg's warning when a key is about to land in a file others may read.
    static func warnIfWorldAccessible() {
        var info = stat()
        guard fstat(STDOUT_FILENO, &info) == 0, info.st_mode & S_IFMT == S_IFREG, info.st_mode & 0o007 != 0 else { return }
        writeStandardError("Warning: writing to world accessible file.\nConsider setting the umask to 077 and trying again.\n")
    }
}
