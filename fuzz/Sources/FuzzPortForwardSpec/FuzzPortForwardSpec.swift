import FuzzDriver
import Glibc
@_spi(OneTunInternals) import OneTunCore

/// Hands over to libFuzzer however the target was built (see fuzz/Package.swift).
@main enum Entry {
    static func main() { exit(fuzzDriverMain(CommandLine.argc, CommandLine.unsafeArgv)) }
}

/// The port-forward notation parser: never crashes, every error describes itself on one line, and every
/// spec it returns prints (canonical notation) to text that parses back to that spec, locally and remotely.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPortForwardSpec(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let text = String(decoding: UnsafeRawBufferPointer(start: data, count: size), as: UTF8.self)
    check(text) { (s) throws(PortForwardSpecError) in try PortForwardSpec.parse(s) }
    let peer = IPAddress.v4(IPv4Address(192, 168, 4, 3))
    check(text) { (s) throws(PortForwardSpecError) in try PortForwardSpec.parseRemote(s, sourcePeerIP: peer) }
    return 0
}

private func check(_ text: String, _ parse: (String) throws(PortForwardSpecError) -> [PortForwardSpec]) {
    let specs: [PortForwardSpec]
    do {
        specs = try parse(text)
    } catch {
        precondition(!error.description.contains("\n"), "multi-line error: \(error.description)")
        return
    }
    precondition(!specs.isEmpty && specs.count <= 2, "\(specs.count) specs from one notation")
    precondition(specs.allSatisfy { $0.sourcePort != 0 && $0.destinationPort != 0 }, "port 0 accepted")
    for spec in specs {
        do {
            let again = try parse(spec.notation)
            precondition(again == [spec], "\(spec.notation) reparses as \(again)")
        } catch {
            fatalError("\(spec.notation) does not parse: \(error)")
        }
    }
}
