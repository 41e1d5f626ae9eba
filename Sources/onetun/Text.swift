import Glibc

// The little the command line needs from outside the standard library, without Foundation: Foundation
// (with ICU) costs a forwarder about 8 MiB of resident memory for a few string helpers.

/// Writes `text` to standard error, unbuffered.
func writeStandardError(_ text: String) {
    var text = text
    text.withUTF8 { bytes in
        var offset = 0
        while offset < bytes.count {
            let n = write(STDERR_FILENO, bytes.baseAddress! + offset, bytes.count - offset)
            if n > 0 {
                offset += n
            } else if n < 0 && errno == EINTR {
                continue
            } else {
                return
            }
        }
    }
}

/// The process environment, as `NAME=value` pairs (the first `=` splits).
func processEnvironment() -> [String: String] {
    var result: [String: String] = [:]
    var entry = environ
    while let pointer = entry.pointee {
        let pair = String(cString: pointer)
        if let eq = pair.firstIndex(of: "=") {
            result[String(pair[..<eq])] = String(pair[pair.index(after: eq)...])
        }
        entry += 1
    }
    return result
}

/// The contents of a UTF-8 file, without a leading byte-order mark; nil when it cannot be read, is over
/// `limit` bytes, or is not valid UTF-8.
func readTextFile(_ path: String, limit: Int = 1 << 20) -> String? {
    guard let file = fopen(path, "rb") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
        if n > 0 { bytes.append(contentsOf: chunk[0..<n]) }
        if bytes.count > limit { return nil }
        if n < chunk.count { break }
    }
    guard ferror(file) == 0 else { return nil }
    if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }
    return String(validating: bytes, as: UTF8.self)
}

extension StringProtocol {
    /// Without leading and trailing characters for which `drop` holds.
    func trimmed(where drop: (Character) -> Bool = { $0.isWhitespace }) -> String {
        guard let first = firstIndex(where: { !drop($0) }), let last = lastIndex(where: { !drop($0) }) else { return "" }
        return String(self[first...last])
    }
}

/// `value` with `digits` digits after the point, as printf's "%.*f" gives it.
func fixed(_ value: Double, digits: Int) -> String {
    var buffer = [CChar](repeating: 0, count: 64)
    let n = buffer.withUnsafeMutableBufferPointer { b in
        withVaList([Int32(digits), value]) { vsnprintf(b.baseAddress, b.count, "%.*f", $0) }
    }
    guard n > 0 else { return "\(value)" }
    return String(decoding: buffer[0..<min(Int(n), 63)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
