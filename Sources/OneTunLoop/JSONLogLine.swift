import Glibc

/// One log record as a line of JSON, for `--log-format json`: `time` (RFC 3339, UTC, microseconds),
/// `level`, `label`, `message`, then `metadata` (an object of strings) when there is any. Strings are
/// escaped as RFC 8259 requires: quotation mark, reverse solidus and every control character (U+0000 to
/// U+001F, and U+007F for good measure) escaped, everything else, non-ASCII included, as UTF-8.
@_spi(OneTunInternals) public enum JSONLogLine {
    /// The line, with its final newline.
    public static func format(
        seconds: Int, nanoseconds: Int, level: String, label: String, message: String, metadata: [(String, String)]
    ) -> String {
        var line = "{\"time\":\"\(rfc3339(seconds: seconds, nanoseconds: nanoseconds))\",\"level\":"
        appendString(level, to: &line)
        line += ",\"label\":"
        appendString(label, to: &line)
        line += ",\"message\":"
        appendString(message, to: &line)
        if !metadata.isEmpty {
            line += ",\"metadata\":{"
            for (i, (key, value)) in metadata.enumerated() {
                if i > 0 { line += "," }
                appendString(key, to: &line)
                line += ":"
                appendString(value, to: &line)
            }
            line += "}"
        }
        line += "}\n"
        return line
    }

    /// The current wall-clock time as `format` wants it.
    public static func now() -> (seconds: Int, nanoseconds: Int) {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return (Int(ts.tv_sec), Int(ts.tv_nsec))
    }

    /// "2026-12-03T14:41:46.123456Z".
    public static func rfc3339(seconds: Int, nanoseconds: Int) -> String {
        var t = time_t(seconds)
        var parts = tm()
        gmtime_r(&t, &parts)
        func pad(_ n: Int32, _ width: Int) -> String {
            let s = String(n)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        let micros = String(nanoseconds / 1000)
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2))."
            + String(repeating: "0", count: 6 - micros.count) + micros + "Z"
    }

    /// A JSON string literal of `value`.
    public static func quoted(_ value: String) -> String {
        var out = ""
        appendString(value, to: &out)
        return out
    }

    static func appendString(_ value: String, to out: inout String) {
        out += "\""
        let hex: [Character] = Array("0123456789abcdef")
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    out += "\\u00"
                    out.append(hex[Int(scalar.value >> 4)])
                    out.append(hex[Int(scalar.value & 0xF)])
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }
}
