// swift-tools-version: 6.1
// libFuzzer targets over every parser. Build and run from the repository root with `make fuzz`
// (or see README.md, "Fuzzing"). Each target is one file defining LLVMFuzzerTestOneInput.
import PackageDescription

let fuzzers = [
    "FuzzWireGuardMessage",
    "FuzzResponder",
    "FuzzPacketParser",
    "FuzzAddressParser",
    "FuzzInterface",
    "FuzzPortForwardSpec",
    "FuzzUDPPath",
]

let package = Package(
    name: "onetun-fuzz",
    dependencies: [.package(name: "onetun", path: "..")],
    targets: fuzzers.map {
        .executableTarget(name: $0, dependencies: [.product(name: "OneTunCore", package: "onetun")])
    }
)
