import FuzzDriver
import Glibc
@_spi(OneTunInternals) import OneTunCore

/// Hands over to libFuzzer however the target was built (see fuzz/Package.swift).
@main enum Entry {
    static func main() { exit(fuzzDriverMain(CommandLine.argc, CommandLine.unsafeArgv)) }
}

/// Every WireGuard message parser: validation never crashes, and whatever validates has readable fields.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWireGuardMessage(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    guard let message = try? WireGuardMessage(validating: bytes) else { return 0 }
    var sink: UInt64 = UInt64(message.type.rawValue)
    switch message.type {
    case .initiation: sink &+= UInt64(message.senderIndex)
    case .response: sink &+= UInt64(message.senderIndex) &+ UInt64(message.receiverIndex)
    case .cookieReply: sink &+= UInt64(message.receiverIndex)
    case .transport: sink &+= message.counter &+ UInt64(message.receiverIndex)
    default: fatalError("validated an unknown message type")
    }
    precondition(sink != 0 || message.type.rawValue != 0)
    return 0
}
