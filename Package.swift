// swift-tools-version:6.0
import PackageDescription

// Module map: see README.md ("Architecture") and DESIGN.md. Imports point down only:
// CBLAS <- SiloTensor <- SiloModels <- SiloData/SiloPrivacy/SiloCompression <- SiloFederation <- SiloTransport <- silo
let package = Package(
    name: "Silo",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "silo", targets: ["silo"]),
        .library(name: "SiloTensor", targets: ["SiloTensor"]),
        .library(name: "SiloModels", targets: ["SiloModels"]),
        .library(name: "SiloData", targets: ["SiloData"]),
        .library(name: "SiloPrivacy", targets: ["SiloPrivacy"]),
        .library(name: "SiloCompression", targets: ["SiloCompression"]),
        .library(name: "SiloFederation", targets: ["SiloFederation"]),
        .library(name: "SiloTransport", targets: ["SiloTransport"]),
        .library(name: "SiloReport", targets: ["SiloReport"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.96.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        // Hand-vectorised kernels (quantised GEMV) compiled per function for AVX2/AVX-512, dispatched at run time.
        .target(name: "CSiloKernels", cSettings: [.unsafeFlags(["-O3"])]),
        .target(
            name: "SiloTensor",
            dependencies: ["CBLAS", "CSiloKernels"],
            swiftSettings: [.unsafeFlags(["-Ounchecked", "-Xcc", "-fno-math-errno"], .when(configuration: .release))]
        ),
        .target(name: "SiloModels", dependencies: ["SiloTensor"]),
        .target(name: "SiloData", dependencies: ["SiloTensor", "SiloModels"]),
        // Privacy accounting (RDP), DP mechanisms and secure aggregation (X25519 + ChaCha20 masks, Shamir shares).
        .target(
            name: "SiloPrivacy",
            dependencies: [
                "SiloTensor",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ]
        ),
        // k-means (GEMM distances) and the codecs applied to traffic: k-means codebooks, blockwise 8/4-bit.
        .target(
            name: "SiloCompression",
            dependencies: ["SiloTensor", "CBLAS"],
            swiftSettings: [.unsafeFlags(["-Ounchecked", "-Xcc", "-fno-math-errno"], .when(configuration: .release))]
        ),
        .target(
            name: "SiloFederation",
            dependencies: [
                "SiloTensor", "SiloModels", "SiloData", "SiloPrivacy", "SiloCompression",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ]
        ),
        // gRPC over HTTP/2 with mutual TLS 1.3: the split protocol's sealed payloads between machines, and the PKI for it.
        .target(
            name: "SiloTransport",
            dependencies: [
                "SiloFederation",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // Self-contained HTML reports with inline SVG charts, terminal tables and progress lines (Foundation only).
        .target(name: "SiloReport"),
        .executableTarget(
            name: "silo",
            dependencies: [
                "CBLAS", "SiloTensor", "SiloModels", "SiloData", "SiloPrivacy", "SiloCompression", "SiloFederation", "SiloTransport", "SiloReport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .target(name: "SiloTestSupport", path: "Tests/SiloTestSupport"),
        .target(name: "SiloSplitTestSupport", dependencies: ["SiloFederation", "SiloModels", "SiloTensor"], path: "Tests/SiloSplitTestSupport"),
        .testTarget(name: "SiloTensorTests", dependencies: ["SiloTensor", "SiloTestSupport"], resources: [.copy("Fixtures")]),
        .testTarget(name: "SiloModelsTests", dependencies: ["SiloModels", "SiloTestSupport"], resources: [.copy("Fixtures")]),
        .testTarget(name: "SiloDataTests", dependencies: ["SiloData", "SiloTestSupport"], resources: [.copy("Fixtures")]),
        .testTarget(name: "SiloPrivacyTests", dependencies: ["SiloPrivacy", "SiloTestSupport"], resources: [.copy("Fixtures")]),
        .testTarget(name: "SiloCompressionTests", dependencies: ["SiloCompression", "SiloTestSupport"], resources: [.copy("Fixtures")]),
        .testTarget(name: "SiloFederationTests", dependencies: ["SiloFederation", "SiloPrivacy", "SiloData", "SiloCompression", "SiloTestSupport", "SiloSplitTestSupport"], resources: [.copy("Fixtures")]),
        .testTarget(name: "SiloReportTests", dependencies: ["SiloReport"]),
        .testTarget(
            name: "SiloTransportTests",
            dependencies: [
                "SiloTransport", "SiloFederation", "SiloModels", "SiloTensor", "SiloTestSupport", "SiloSplitTestSupport",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "X509", package: "swift-certificates"),
            ]
        ),
        // Runs the built `silo` binary (same products folder); `swift build --build-tests` builds it.
        .testTarget(name: "SiloCLITests", resources: [.copy("Fixtures")]),
    ],
    swiftLanguageModes: [.v6]
)
