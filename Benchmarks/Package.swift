// swift-tools-version: 6.1
// Micro-benchmarks of the core (ordo-one/benchmark). Kept out of the main package so `make test` does
// not build the benchmark framework. Run with `make bench` from the repository root.
import PackageDescription

let package = Package(
    name: "onetun-benchmarks",
    dependencies: [
        .package(name: "onetun", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "CoreBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "OneTunCore", package: "onetun"),
            ],
            path: "Benchmarks/CoreBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        )
    ]
)
