import FuzzDriver
import Glibc
@_spi(OneTunInternals) import OneTunCore

/// Hands over to libFuzzer however the target was built (see fuzz/Package.swift).
@main enum Entry {
    static func main() { exit(fuzzDriverMain(CommandLine.argc, CommandLine.unsafeArgv)) }
}

/// The IPv4/IPv6 text parsers: never crash, and what parses prints in a form that parses to the same
/// address (RFC 5952 canonical text for IPv6).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzAddressParser(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let text = String(decoding: UnsafeRawBufferPointer(start: data, count: size), as: UTF8.self)
    guard let address = IPAddress(text) else { return 0 }
    let printed = "\(address)"
    guard let again = IPAddress(printed) else { fatalError("\(printed) does not parse") }
    precondition(again == address && "\(again)" == printed, "printing is not canonical")
    return 0
}
