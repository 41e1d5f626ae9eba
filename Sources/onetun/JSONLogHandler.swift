import Glibc
import Logging
@_spi(OneTunInternals) import OneTunLoop

/// `--log-format json`: each record one line of JSON on standard error (`JSONLogLine` formats and
/// escapes it), written with one write(2) so lines never interleave.
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(label: String) { self.label = label }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        let (seconds, nanoseconds) = JSONLogLine.now()
        let line = JSONLogLine.format(
            seconds: seconds, nanoseconds: nanoseconds, level: event.level.rawValue, label: label,
            message: event.message.description,
            metadata: merged.sorted { $0.key < $1.key }.map { ($0.key, "\($0.value)") })
        writeStandardError(line)
    }
}
