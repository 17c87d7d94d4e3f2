// swift-tools-version:6.1
import PackageDescription

// Release builds target AVX2 + FMA on x86-64 so Swift SIMD loops vectorise with fused
// multiply-add (baseline x86-64 lowers them to per-lane `fmaf` calls; see docs/benchmarks.md).
#if arch(x86_64)
let cpuSettings: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell"])]
#else
let cpuSettings: [SwiftSetting] = []
#endif

let package = Package(
    name: "Amber",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "amber", targets: ["amber"]),
        .library(name: "AmberCatalog", targets: ["AmberCatalog"]),
        .library(name: "AmberTensor", targets: ["AmberTensor"]),
        .library(name: "AmberTrain", targets: ["AmberTrain"]),
        .library(name: "AmberStore", targets: ["AmberStore"]),
        .library(name: "AmberIngest", targets: ["AmberIngest"]),
        .library(name: "AmberText", targets: ["AmberText"]),
        .library(name: "AmberImage", targets: ["AmberImage"]),
        .library(name: "AmberModel", targets: ["AmberModel"]),
        .library(name: "AmberSearch", targets: ["AmberSearch"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        .target(
            name: "AmberCatalog",
            swiftSettings: cpuSettings
        ),
        // Reading catalogues in (photo folders with captions, feature-file layouts), encoding
        // them, and writing them through the CatalogWriter port.
        .target(
            name: "AmberIngest",
            dependencies: ["AmberCatalog", "AmberTensor", "AmberImage", "AmberText"],
            swiftSettings: cpuSettings
        ),
        // The PostgreSQL adapter: the libpq driver, the migrator, the embedded cluster, the
        // repositories, ingest, and the stores behind the trainer's and the server's ports.
        .target(
            name: "AmberStore",
            dependencies: [
                "CLibPQ",
                "AmberCatalog",
                "AmberIngest",
                "AmberTensor",
                "AmberModel",
                "AmberSearch",
                "AmberTrain",
                "AmberServer",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: cpuSettings
        ),
        .target(
            name: "AmberSearch",
            dependencies: ["AmberCatalog", "AmberModel", "AmberTensor"],
            swiftSettings: cpuSettings
        ),
        .target(
            name: "AmberServer",
            dependencies: [
                "AmberImage",
                "AmberIngest",
                "AmberCatalog",
                "AmberSearch",
                "AmberModel",
                "AmberTensor",
                "AmberText",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: cpuSettings
        ),
        .target(
            name: "AmberTensor",
            dependencies: ["CBLAS"],
            swiftSettings: cpuSettings
        ),
        .target(
            name: "AmberModel",
            dependencies: ["AmberCatalog", "AmberTensor"],
            swiftSettings: cpuSettings
        ),
        .target(
            name: "AmberText",
            dependencies: ["AmberTensor"],
            swiftSettings: cpuSettings
        ),
        // JPEG and PNG through Debian's libjpeg-turbo and libpng (libjpeg62-turbo-dev, libpng-dev).
        .target(
            name: "CImageCodecs",
            cSettings: [.unsafeFlags(["-O2"])],
            linkerSettings: [.linkedLibrary("jpeg"), .linkedLibrary("png16")]
        ),
        .target(
            name: "AmberImage",
            dependencies: ["AmberTensor", "CBLAS", "CImageCodecs"],
            swiftSettings: cpuSettings
        ),
        .target(
            name: "AmberTrain",
            dependencies: ["AmberCatalog", "AmberTensor", "AmberModel"],
            swiftSettings: cpuSettings
        ),
        .executableTarget(
            name: "amber",
            dependencies: [
                "AmberCatalog",
                "AmberIngest",
                "AmberTensor",
                "AmberTrain",
                "AmberStore",
                "AmberText",
                "AmberImage",
                "AmberModel",
                "AmberSearch",
                "AmberServer",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: cpuSettings
        ),
        .target(
            name: "AmberTestSupport",
            dependencies: ["AmberCatalog", "AmberTensor", "AmberTrain", "AmberModel", "AmberSearch"],
            swiftSettings: cpuSettings
        ),
        .testTarget(
            name: "AmberTensorTests",
            dependencies: ["AmberTensor", "AmberTestSupport"],
            swiftSettings: cpuSettings
        ),
        .testTarget(
            name: "AmberStoreTests",
            dependencies: ["AmberCatalog", "AmberIngest", "AmberStore", "AmberTensor", "AmberModel", "AmberTrain", "AmberTestSupport", "AmberImage", "AmberServer", "AmberSearch", "amber"],
            swiftSettings: cpuSettings
        ),
        .testTarget(
            name: "AmberModelTests",
            dependencies: ["AmberCatalog", "AmberModel", "AmberTensor", "AmberTestSupport"],
            swiftSettings: cpuSettings
        ),
        .testTarget(
            name: "AmberImageTests",
            dependencies: ["AmberImage", "AmberTensor"],
            resources: [.copy("Fixtures")],
            swiftSettings: cpuSettings
        ),
        .testTarget(
            name: "AmberTextTests",
            dependencies: ["AmberText", "AmberTensor"],
            resources: [.copy("Fixtures")],
            swiftSettings: cpuSettings
        ),
        .testTarget(
            name: "AmberSearchTests",
            dependencies: ["AmberCatalog", "AmberSearch", "AmberModel", "AmberTensor", "AmberTestSupport"],
            swiftSettings: cpuSettings
        ),
        .testTarget(
            name: "AmberServerTests",
            dependencies: [
                "AmberServer", "AmberCatalog", "AmberTrain", "AmberSearch", "AmberModel", "AmberStore", "AmberTensor", "AmberTestSupport", "AmberImage",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: cpuSettings
        ),
        .testTarget(
            name: "AmberTrainTests",
            dependencies: ["AmberCatalog", "AmberTrain", "AmberTensor", "AmberModel", "AmberTestSupport"],
            swiftSettings: cpuSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
