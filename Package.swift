// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "onetun",
    products: [
        .library(name: "OneTunCore", targets: ["OneTunCore"]),
        .library(name: "OneTunLoop", targets: ["OneTunLoop"]),
        .executable(name: "onetun", targets: ["onetun"]),
        .executable(name: "netem-relay", targets: ["NetemRelay"]),
        .executable(name: "core-transfer", targets: ["CoreTransfer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        // `swift package generate-documentation --target OneTunCore` (DocC).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(name: "CUV", pkgConfig: "libuv", providers: [.apt(["libuv1-dev"])]),
        .systemLibrary(name: "CSodium", pkgConfig: "libsodium", providers: [.apt(["libsodium-dev"])]),
        // The sans-I/O core: no sockets, no threads, no libuv, no clock reads.
        .target(name: "OneTunCore", dependencies: ["CSodium"]),
        // The libuv driver: owns every socket and the one timer.
        .target(
            name: "OneTunLoop",
            dependencies: ["OneTunCore", "CUV", .product(name: "Logging", package: "swift-log")]
        ),
        .executableTarget(
            name: "onetun",
            dependencies: [
                "OneTunCore", "OneTunLoop",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Drives the core with poll(2) and plain sockets: proof that it needs no libuv.
        .executableTarget(name: "PollForwarder", dependencies: ["OneTunCore"], path: "Examples/PollForwarder", exclude: ["README.md"]),
        // A UDP relay adding delay, loss, reordering, duplication and a bottleneck: the WAN of benchmarks and tests.
        .executableTarget(name: "NetemRelay", dependencies: ["CUV"], path: "Tools/NetemRelay"),
        // A fixed transfer through two TunnelCores in memory: the program `make bench-instr` counts.
        .executableTarget(name: "CoreTransfer", dependencies: ["OneTunCore"], path: "Tools/CoreTransfer"),
        .testTarget(name: "OneTunCoreTests", dependencies: ["OneTunCore"]),
        .testTarget(name: "OneTunTests", dependencies: ["OneTunCore", "OneTunLoop"]),
    ]
)
