// swift-tools-version:6.0
import Foundation
import PackageDescription

let package = Package(
    name: "livenessd",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "livenessd", targets: ["livenessd"]),
        .library(name: "LivenessEngine", targets: ["LivenessEngine"]),
        .library(name: "CaptureKit", targets: ["CaptureKit"]),
        .library(name: "LivenessServer", targets: ["LivenessServer"]),
        .library(name: "LivenessEval", targets: ["LivenessEval"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/weichsel/ZIPFoundation", from: "0.9.20"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // C interop shims live inside the module that owns them (docs/ARCHITECTURE.md).
        .systemLibrary(
            name: "COpenBLAS",
            path: "Sources/LivenessEngine/COpenBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        .systemLibrary(
            name: "CFFmpeg",
            path: "Sources/CaptureKit/CFFmpeg",
            // Linked: libavutil and libswscale. libavcodec and libavformat are opened at run time (CFFmpegLoader).
            pkgConfig: "libavutil libswscale",
            providers: [.apt(["libavformat-dev", "libavcodec-dev", "libavutil-dev", "libswscale-dev"])]
        ),
        // Still JPEG files are decoded as the reference (PIL → libjpeg-turbo) decodes them.
        .systemLibrary(
            name: "CTurboJPEG",
            path: "Sources/CaptureKit/CTurboJPEG",
            pkgConfig: "libturbojpeg",
            providers: [.apt(["libturbojpeg0-dev"])]
        ),
        // Linux only: the V4L2 kernel headers (linux-libc-dev); raw ioctls, no library to link.
        .systemLibrary(
            name: "CV4L2",
            path: "Sources/CaptureKit/CV4L2"
        ),
        // The C compute kernels (depthwise 3×3 stride 1 and 2 in AVX2 + FMA; pointwise 1×1, convolutions
        // read in place through it, and the softmax's exponentials in AVX-512 and AVX2 + FMA; the ViT
        // crop's Pillow resample and RGB → L in AVX2 / AVX-512; each chosen at run time); why they are C
        // and not Swift: docs/ARCHITECTURE.md. No -march flags: only the kernels carry target attributes.
        .target(
            name: "CLivenessKernels",
            path: "Sources/LivenessEngine/CKernels"
        ),
        .target(
            name: "LivenessEngine",
            dependencies: [
                "COpenBLAS",
                "CLivenessKernels",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ZIPFoundation", package: "ZIPFoundation"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            exclude: ["COpenBLAS", "CKernels"]
        ),
        // 4:2:0 YUV → RGB24 byte for byte as swscale's accurate full-chroma path, in AVX2 / AVX-512 C
        // (chosen at run time) with a scalar fallback; why C: Sources/CaptureKit/CPixelKernels/YUV420ToRGB24.c.
        .target(
            name: "CPixelKernels",
            path: "Sources/CaptureKit/CPixelKernels"
        ),
        // libavcodec and libavformat through dlopen, the first time a source needs them: their 109 libraries
        // cost 20.6 MB of memory at start-up (why by hand: Sources/CaptureKit/CFFmpegLoader/include).
        .target(
            name: "CFFmpegLoader",
            path: "Sources/CaptureKit/CFFmpegLoader"
        ),
        .target(
            name: "CaptureKit",
            dependencies: [
                "CFFmpeg",
                "CFFmpegLoader",
                "CTurboJPEG",
                "CV4L2",
                "CPixelKernels",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            exclude: ["CFFmpeg", "CFFmpegLoader", "CTurboJPEG", "CV4L2", "CPixelKernels"]
        ),
        .target(
            name: "FramePipeline",
            dependencies: [
                "CaptureKit",
                "LivenessEngine",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // `struct ucred` with its layout checked by the C compiler (it needs _GNU_SOURCE; see the header).
        .target(
            name: "CPeerCredentials",
            path: "Sources/LivenessServer/CPeerCredentials"
        ),
        // Eclipse Mosquitto's MQTT client library: the daemon forwards events to the site's broker.
        .systemLibrary(
            name: "CMosquitto",
            path: "Sources/LivenessServer/CMosquitto",
            pkgConfig: "libmosquitto",
            providers: [.apt(["libmosquitto-dev"])]
        ),
        // The daemon: its config file, the event socket (SwiftNIO), its protocol, systemd, the MQTT forwarder and
        // the Prometheus endpoint, and the services that run them.
        .target(
            name: "LivenessServer",
            dependencies: [
                "CaptureKit",
                "FramePipeline",
                "LivenessEngine",
                "CPeerCredentials",
                "CMosquitto",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
            ],
            exclude: ["CPeerCredentials", "CMosquitto"]
        ),
        // Evaluation: datasets, the replay runner, ISO/IEC 30107-3 metrics, reports, calibration.
        .target(
            name: "LivenessEval",
            dependencies: [
                "CaptureKit", "FramePipeline", "LivenessEngine",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "livenessd",
            dependencies: [
                "CaptureKit",
                "FramePipeline",
                "LivenessEngine",
                "LivenessServer",
                "LivenessEval",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            exclude: ["link-order.txt"],
            linkerSettings: [
                // Linked by the toolchain's lld (gold, swiftc's default here, can do neither): the functions a
                // run executes placed together (link-order.txt, from scripts/link-order.sh: the binary's
                // resident code 13 → 6.4 MB), and packed relative relocations (DT_RELR; glibc 2.36 = Debian 12
                // reads them: 2.7 MB of relocations read at every start become 21 kB). docs/ARCHITECTURE.md,
                // "Memory".
                .unsafeFlags(
                    [
                        "-use-ld=lld", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs",
                        "-Xlinker",
                        "--symbol-ordering-file=\(Context.packageDirectory)/Sources/livenessd/link-order.txt",
                        "-Xlinker", "--no-warn-symbol-ordering",
                    ], .when(platforms: [.linux]))
            ]
        ),
        // Locates ../shared (or $LIVENESSD_TEST_ASSETS) and reads golden files; tests only.
        .target(
            name: "TestSupport",
            path: "Tests/TestSupport"
        ),
        .testTarget(
            name: "LivenessEngineTests",
            dependencies: ["LivenessEngine", "TestSupport", .product(name: "ZIPFoundation", package: "ZIPFoundation")]
        ),
        .testTarget(
            name: "CaptureKitTests",
            dependencies: ["CaptureKit", "TestSupport"]
        ),
        // Counts heap allocations on chosen threads (the test binary's malloc wraps glibc's); tests only.
        .target(
            name: "AllocationCounter",
            path: "Tests/AllocationCounter"
        ),
        .testTarget(
            name: "FramePipelineTests",
            dependencies: ["FramePipeline", "CaptureKit", "LivenessEngine", "TestSupport", "AllocationCounter"]
        ),
        .testTarget(
            name: "LivenessServerTests",
            dependencies: [
                "LivenessServer", "CaptureKit", "FramePipeline", "LivenessEngine", "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "LivenessEvalTests",
            dependencies: ["LivenessEval", "FramePipeline", "LivenessEngine", "TestSupport"]
        ),
        .testTarget(
            name: "livenessdTests",
            dependencies: [
                "livenessd", "CaptureKit", "FramePipeline", "LivenessEngine", "LivenessServer", "TestSupport",
                .product(name: "ZIPFoundation", package: "ZIPFoundation"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)

// scripts/fuzz.sh only (LIVENESSD_FUZZ=1): the libFuzzer entry points in Tests/Fuzz, built with
// -sanitize=fuzzer,address. Left out of every other build: without libFuzzer it has no `main`.
if ProcessInfo.processInfo.environment["LIVENESSD_FUZZ"] == "1" {
    package.targets.append(
        .executableTarget(
            name: "livenessd-fuzz",
            dependencies: [
                "LivenessEngine", "LivenessServer",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            path: "Tests/Fuzz"
        ))
}
