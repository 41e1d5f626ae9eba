import FuzzDriver
import Glibc
import OneTunCore

/// Hands over to libFuzzer however the target was built (see fuzz/Package.swift).
@main enum Entry {
    static func main() { exit(fuzzDriverMain(CommandLine.argc, CommandLine.unsafeArgv)) }
}

/// `$VAR`s the inputs may name: a key, lists, host:port, an empty value, one holding a "$".
private let environment = [
    "KEY": "EREREREREREREREREREREREREREREREREREREREREQE=\n", "ADDRS": "10.0.0.2/32, fd00::2/128",
    "NETS": "10.0.0.0/8,fd00::/8", "BIND": "127.0.0.1:53", "EMPTY": "", "DOLLAR": "$KEY",
]
private let sourcePeerIP = IPAddress.v4(IPv4Address(10, 0, 0, 2))

/// The configuration file parser: never crashes, every error and warning describes itself on one line, and
/// every file it accepts prints (canonical text) to a file that parses back, with no environment, to an
/// equal model printing the same text. The same holds once the file is merged as a WGConfig file.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfigFile(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let text = String(decoding: UnsafeRawBufferPointer(start: data, count: size), as: UTF8.self)
    let config: ConfigFile
    do {
        config = try ConfigFile.parse(text, fileName: "fuzz.conf", environment: environment)
    } catch {
        checkOneLine(error.description)
        return 0
    }
    config.warnings.forEach { checkOneLine($0.description) }
    checkRoundTrip(config)
    do {
        _ = try config.portForwards(sourcePeerIP: sourcePeerIP)
    } catch {
        checkOneLine(error.description)
    }
    // As the WireGuard part of a wireproxy file.
    do {
        var main = try ConfigFile.parse("WGConfig = fuzz.conf", fileName: "main.conf")
        try main.merge(wireGuard: config)
        checkRoundTrip(main)
        try main.validate()
    } catch {
        checkOneLine(error.description)
    }
    return 0
}

private func checkOneLine(_ message: String) {
    precondition(!message.contains("\n") && !message.contains("\r"), "multi-line message: \(message.debugDescription)")
}

private func checkRoundTrip(_ config: ConfigFile) {
    let printed = config.canonicalText
    do {
        let again = try ConfigFile.parse(printed, fileName: "canonical.conf")
        precondition(again == config, "canonical text parses to another model:\n\(printed)")
        precondition(again.canonicalText == printed, "printing is not canonical:\n\(printed)")
    } catch {
        fatalError("canonical text does not parse: \(error)\n\(printed)")
    }
}
