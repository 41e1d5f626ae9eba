// swift-tools-version: 6.1
// libFuzzer targets over every parser and the TCP stack. Build and run from the repository root with `make fuzz`
// (or see README.md, "Fuzzing"). Each target is one file defining LLVMFuzzerTestOneInput and an
// `@main` that hands over to libFuzzer's driver.
import PackageDescription

let fuzzers = [
    "FuzzWireGuardMessage",
    "FuzzResponder",
    "FuzzPacketParser",
    "FuzzAddressParser",
    "FuzzInterface",
    "FuzzPortForwardSpec",
    "FuzzUDPPath",
    "FuzzConfigFile",
    "FuzzSocks5",
    "FuzzDNSMessage",
    "FuzzHTTPHead",
]

let package = Package(
    name: "onetun-fuzz",
    dependencies: [.package(name: "onetun", path: "..")],
    targets: [.target(name: "FuzzDriver")]
        + fuzzers.map {
            .executableTarget(
                name: $0,
                dependencies: ["FuzzDriver", .product(name: "OneTunCore", package: "onetun")],
                // Both ways of building must reach libFuzzer. `--sanitize=fuzzer` links libFuzzer's
                // `main` whole and leaves the Swift entry point alone: it gets SwiftPM's testable name,
                // so the two do not collide. A plain `-Xswiftc -sanitize=fuzzer` build renames it the
                // same way and aliases `main` to it, so the `@main` must start libFuzzer's driver.
                swiftSettings: [.unsafeFlags(["-Xfrontend", "-entry-point-function-name", "-Xfrontend", "\($0)_main"])]
            )
        }
)
