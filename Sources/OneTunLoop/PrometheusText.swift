/// The Prometheus text exposition format, version 0.0.4: per family a `# HELP` and a `# TYPE` line, then
/// its samples, `name{label="value",…} value`, one a line. Label values escape backslash, double quote
/// and line feed; HELP text escapes backslash and line feed (the format's only escapes). A family's
/// samples must follow its header without another family in between, which `family` then `sample`
/// calls in order give.
@_spi(OneTunInternals) public struct PrometheusText {
    public enum Kind: String, Sendable {
        case counter, gauge
    }

    /// What `/metrics` answers with.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    public private(set) var text = ""

    public init() {
        text.reserveCapacity(8192)
    }

    /// Starts a family. A counter's name ends in `_total` (the convention the format's linter checks).
    public mutating func family(_ name: String, _ kind: Kind, help: String) {
        text += "# HELP \(name) \(Self.escapeHelp(help))\n# TYPE \(name) \(kind.rawValue)\n"
    }

    /// A family of one unlabelled sample.
    public mutating func single(_ name: String, _ kind: Kind, help: String, _ value: Int) {
        family(name, kind, help: help)
        sample(name, [], value)
    }

    public mutating func single(_ name: String, _ kind: Kind, help: String, _ value: Double) {
        family(name, kind, help: help)
        sample(name, [], value)
    }

    /// One sample of the current family.
    public mutating func sample(_ name: String, _ labels: [(String, String)] = [], _ value: Int) {
        sample(name, labels, valueText: String(value))
    }

    /// One sample of the current family: NaN and the infinities as the format spells them, other values
    /// as Swift prints a Double (shortest round-trip form, which Go's ParseFloat reads).
    public mutating func sample(_ name: String, _ labels: [(String, String)] = [], _ value: Double) {
        let valueText: String
        if value.isNaN {
            valueText = "NaN"
        } else if value.isInfinite {
            valueText = value > 0 ? "+Inf" : "-Inf"
        } else {
            valueText = "\(value)"
        }
        sample(name, labels, valueText: valueText)
    }

    mutating func sample(_ name: String, _ labels: [(String, String)], valueText: String) {
        text += name
        if !labels.isEmpty {
            text += "{"
            for (i, (key, value)) in labels.enumerated() {
                if i > 0 { text += "," }
                text += "\(key)=\"\(Self.escapeLabelValue(value))\""
            }
            text += "}"
        }
        text += " \(valueText)\n"
    }

    /// A family with one sample per element of `items`.
    public mutating func family<T>(
        _ name: String, _ kind: Kind, help: String, _ items: [T], _ sample: (T) -> (labels: [(String, String)], value: Int)
    ) {
        guard !items.isEmpty else { return }
        family(name, kind, help: help)
        for item in items {
            let (labels, value) = sample(item)
            self.sample(name, labels, value)
        }
    }

    public static func escapeLabelValue(_ value: String) -> String {
        guard value.utf8.contains(where: { $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\n") }) else {
            return value
        }
        var out = ""
        for c in value.unicodeScalars {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    public static func escapeHelp(_ help: String) -> String {
        var out = ""
        for c in help.unicodeScalars {
            switch c {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }
}
