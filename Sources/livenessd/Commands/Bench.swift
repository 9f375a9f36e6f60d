import ArgumentParser
import CaptureKit
import FramePipeline
import Foundation
import LivenessEngine
import LivenessServer
import Synchronization

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks: the engine (default), face detection, capture decoding and the whole pipeline.",
        subcommands: [
            BenchEngine.self, BenchMiniFASNet.self, BenchDetect.self, BenchDecode.self, BenchPipeline.self,
            BenchCrops.self,
        ],
        defaultSubcommand: BenchEngine.self)
}

struct BenchEngine: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engine",
        abstract: "Time the engine: forward pass alone and preprocess + forward, batch 1 and 8, one thread.",
        discussion: """
            Prints the OpenBLAS core it ran on. Compare with PyTorch and ONNX Runtime on the same machine in \
            the same session: scripts/bench_reference.py (see README). Build with -c release.
            """)

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Image to preprocess in the preprocess+forward case (default: samples/astronaut.png).")
    var image = "samples/astronaut.png"

    @Option(help: "Timed iterations per case.")
    var iterations = 200

    @Option(help: "Warm-up iterations per case (not timed).")
    var warmup = 20

    @Option(help: "OpenBLAS threads.")
    var threads = 1

    @Option(parsing: .upToNextOption, help: "Batch sizes to time.")
    var batch: [Int] = [1, 8]

    @Flag(help: "Print one JSON object per case instead of a table.")
    var json = false

    func validate() throws {
        guard self.iterations > 0, self.warmup >= 0, self.threads > 0, self.batch.allSatisfy({ $0 > 0 }) else {
            throw ValidationError("iterations, threads and batch sizes must be positive")
        }
    }

    func run() throws {
        let model: LivenessViT
        do {
            model = try self.modelOptions.load().requireViT("bench engine")
        } catch let error as CommandError {
            FileHandle.standardError.write(Data("livenessd: \(error)\n".utf8))
            throw ExitCode(2)
        }
        BLAS.setThreadCount(self.threads)
        let picture: RGBImage
        do {
            picture = try ImageDecoder.decode(path: self.image).image
        } catch {
            FileHandle.standardError.write(Data("livenessd: \(error)\n".utf8))
            throw ExitCode(2)
        }
        let preprocessor = Preprocessor()
        let single = picture.pixels.withUnsafeBufferPointer {
            preprocessor.tensor(
                PixelSource(
                    base: $0.baseAddress!, width: picture.width, height: picture.height, rowStride: picture.rowStride,
                    layout: .rgb24))
        }

        if !self.json {
            print("# livenessd \(LivenessdVersion.string) bench")
            print("# cpu:      \(Self.cpuModel()) (\(ProcessInfo.processInfo.activeProcessorCount) logical CPUs)")
            print("# openblas: core \(BLAS.coreName), threads \(BLAS.threadCount); \(BLAS.configuration)")
            print(
                "# image:    \(self.image) \(picture.width)x\(picture.height); \(self.warmup) warm-up + \(self.iterations) timed iterations"
            )
            print("case                   batch   ms/frame median      p10      p90")
        }
        for batch in self.batch {
            model.reserve(batch: batch)
            let input = [Float]((0..<batch).flatMap { _ in single })
            var logits = [Float](repeating: 0, count: 2 * batch)
            let forward = self.time(batch: batch) {
                input.withUnsafeBufferPointer { source in
                    logits.withUnsafeMutableBufferPointer {
                        model.logits(input: source.baseAddress!, batch: batch, into: $0.baseAddress!)
                    }
                }
            }
            self.report("forward", batch: batch, forward)
            // The product path: PIL-exact resize/crop/grey to 8-bit, normalisation folded into the model.
            let cropLength = preprocessor.outputSide * preprocessor.outputSide
            var crops = [UInt8](repeating: 0, count: batch * cropLength)
            let full = self.time(batch: batch) {
                picture.pixels.withUnsafeBufferPointer { pixels in
                    let source = PixelSource(
                        base: pixels.baseAddress!, width: picture.width, height: picture.height,
                        rowStride: picture.rowStride, layout: .rgb24)
                    crops.withUnsafeMutableBufferPointer { buffer in
                        for index in 0..<batch {
                            let crop = preprocessor.lumaCrop(source)
                            (buffer.baseAddress! + index * cropLength).update(from: crop, count: cropLength)
                        }
                        logits.withUnsafeMutableBufferPointer {
                            model.logits(lumaCrops: buffer.baseAddress!, batch: batch, into: $0.baseAddress!)
                        }
                    }
                }
            }
            self.report("preprocess+forward", batch: batch, full)
        }
    }

    /// Milliseconds per frame of each timed iteration, sorted.
    func time(batch: Int, _ body: () -> Void) -> BenchTiming {
        BenchTiming.measure(warmup: self.warmup, iterations: self.iterations, framesPerIteration: batch, body)
    }

    func report(_ name: String, batch: Int, _ timing: BenchTiming) {
        let quantile = timing.quantile
        let median = quantile(0.5)
        if self.json {
            let fields: [String: Any] = [
                "engine": "livenessd", "case": name, "batch": batch, "ms_per_frame_median": median,
                "ms_per_frame_p10": quantile(0.1), "ms_per_frame_p90": quantile(0.9), "blas_core": BLAS.coreName,
                "threads": BLAS.threadCount,
            ]
            let data = try! JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(
                name.padding(toLength: 22, withPad: " ", startingAt: 0)
                    + String(format: " %5d %17.3f %8.3f %8.3f", batch, median, quantile(0.1), quantile(0.9)))
        }
    }

    static func cpuModel() -> String {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("model name") })
        else { return "unknown CPU" }
        return line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) }
            ?? "unknown CPU"
    }
}

struct BenchDetect: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "detect",
        abstract: "Time face detection (YuNet: padding, network, decode, NMS) per frame size, one thread.",
        discussion: """
            The picture is scaled to each size first (nearest neighbour, not timed): resizing is the \
            caller's business. Compare with ONNX Runtime on the same machine: \
            scripts/bench_detect_reference.py. Build with -c release.
            """)

    @Option(
        help: """
            YuNet model (default: $LIVENESSD_TEST_ASSETS/models/yunet/face_detection_yunet.onnx, \
            else models/yunet/face_detection_yunet.onnx).
            """)
    var detector: String?

    @Option(help: "Picture to detect in, scaled to each size.")
    var image = "samples/astronaut.png"

    @Option(parsing: .upToNextOption, help: "Frame sizes, WIDTHxHEIGHT.")
    var size: [String] = ["320x240", "640x480"]

    @Option(help: "Timed iterations per size.")
    var iterations = 200

    @Option(help: "Warm-up iterations per size (not timed).")
    var warmup = 20

    @Option(help: "OpenBLAS threads.")
    var threads = 1

    @Flag(help: "Print one JSON object per size instead of a table.")
    var json = false

    static let relativeModel = "models/yunet/face_detection_yunet.onnx"

    var sizes: [(width: Int, height: Int)] {
        self.size.compactMap { text in
            let parts = text.lowercased().split(separator: "x").compactMap { Int($0) }
            return parts.count == 2 && parts[0] > 0 && parts[1] > 0 ? (parts[0], parts[1]) : nil
        }
    }

    func validate() throws {
        guard self.iterations > 0, self.warmup >= 0, self.threads > 0 else {
            throw ValidationError("iterations and threads must be positive")
        }
        guard self.sizes.count == self.size.count else { throw ValidationError("sizes are WIDTHxHEIGHT, e.g. 320x240") }
    }

    var modelPath: String {
        if let detector = self.detector { return detector }
        if let assets = ProcessInfo.processInfo.environment["LIVENESSD_TEST_ASSETS"], !assets.isEmpty {
            let path = URL(fileURLWithPath: assets).appendingPathComponent(Self.relativeModel).path
            if FileManager.default.fileExists(atPath: path) { return path }
        }
        return Self.relativeModel
    }

    func run() throws {
        let detector: FaceDetector
        let picture: RGBImage
        do {
            detector = try FaceDetector(contentsOf: URL(fileURLWithPath: self.modelPath))
            picture = try ImageDecoder.decode(path: self.image).image
        } catch {
            FileHandle.standardError.write(Data("livenessd: \(error)\n".utf8))
            throw ExitCode(2)
        }
        BLAS.setThreadCount(self.threads)
        if !self.json {
            let cpus = ProcessInfo.processInfo.activeProcessorCount
            print("# livenessd \(LivenessdVersion.string) bench detect")
            print("# cpu:      \(BenchEngine.cpuModel()) (\(cpus) logical CPUs)")
            print("# openblas: core \(BLAS.coreName), threads \(BLAS.threadCount); \(BLAS.configuration)")
            print("# model:    \(self.modelPath); image \(self.image)")
            print("# \(self.warmup) warm-up + \(self.iterations) timed iterations per size")
            print("size        network   faces   ms/frame median      p10      p90")
        }
        for (width, height) in self.sizes {
            let bgr = Self.scaledBGR(picture, width: width, height: height)
            var faces = 0
            let detect = {
                faces = try bgr.withUnsafeBufferPointer {
                    try detector.detect(bgr: $0.baseAddress!, width: width, height: height, rowStride: 3 * width).count
                }
            }
            let timing = try BenchTiming.measure(
                warmup: self.warmup, iterations: self.iterations, framesPerIteration: 1, detect)
            let quantile = timing.quantile
            let padded = FaceDetector.paddedSize(width: width, height: height)
            if self.json {
                let fields: [String: Any] = [
                    "engine": "livenessd", "case": "detect", "width": width, "height": height, "faces": faces,
                    "ms_per_frame_median": quantile(0.5), "ms_per_frame_p10": quantile(0.1),
                    "ms_per_frame_p90": quantile(0.9), "blas_core": BLAS.coreName, "threads": BLAS.threadCount,
                ]
                let data = try JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])
                print(String(decoding: data, as: UTF8.self))
            } else {
                print(
                    "\(width)x\(height)".padding(toLength: 11, withPad: " ", startingAt: 0)
                        + "\(padded.width)x\(padded.height)".padding(toLength: 10, withPad: " ", startingAt: 0)
                        + String(format: "%5d %18.3f %8.3f %8.3f", faces, quantile(0.5), quantile(0.1), quantile(0.9)))
            }
        }
    }

    /// The picture at `width` × `height`, nearest neighbour, in YuNet's channel order (BGR).
    static func scaledBGR(_ picture: RGBImage, width: Int, height: Int) -> [UInt8] {
        var bgr = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0..<height {
            let sourceRow = y * picture.height / height * picture.rowStride
            for x in 0..<width {
                let source = sourceRow + x * picture.width / width * 3
                let destination = (y * width + x) * 3
                bgr[destination] = picture.pixels[source + 2]
                bgr[destination + 1] = picture.pixels[source + 1]
                bgr[destination + 2] = picture.pixels[source]
            }
        }
        return bgr
    }
}

struct BenchDecode: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "decode",
        abstract: "Time decoding + conversion to model-ready luma (short side 255) of clips, one decoder thread.",
        discussion: "Make test clips with scripts/make_bench_clips.sh (640x480 and 1080p H.264).")

    @Argument(help: "Clips to decode (any format FFmpeg reads).")
    var clips: [String]

    @Option(help: "Passes over each clip (the best is reported).")
    var passes = 3

    func run() throws {
        print(
            "# livenessd \(LivenessdVersion.string) bench decode: MediaSource (1 decoder thread, as fast as possible)")
        print("# + PixelConverter to GRAY8 with the short side at 255, on \(BenchEngine.cpuModel())")
        print("clip                                       size        frames   frames/s")
        for clip in self.clips {
            var best = 0.0
            var frames = 0
            var size = ""
            for _ in 0..<max(1, self.passes) {
                let source = MediaSource(location: clip)
                let preprocessor = Preprocessor()
                // Touched only on the source's thread; the Mutex makes that checkable, uncontended.
                let converter = Mutex((PixelConverter(), [UInt8](repeating: 0, count: 4096 * 4096)))
                let counted = Mutex((frames: 0, size: "", failure: String?.none))
                let done = DispatchSemaphore(value: 0)
                let start = DispatchTime.now().uptimeNanoseconds
                try source.start { event in
                    switch event {
                    case .frame(let frame):
                        let target = preprocessor.resizedSize(width: frame.width, height: frame.height)
                        converter.withLock { state in
                            state.1.withUnsafeMutableBufferPointer {
                                try? state.0.convert(
                                    frame, to: .gray8, width: target.width, height: target.height, into: $0.baseAddress!
                                )
                            }
                        }
                        counted.withLock {
                            $0.frames += 1
                            $0.size = "\(frame.width)x\(frame.height)"
                        }
                    case .ended(let end):
                        if end != .endOfFile { counted.withLock { $0.failure = "\(end)" } }
                        done.signal()
                    default: break
                    }
                }
                done.wait()
                let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                let result = counted.withLock { $0 }
                if let failure = result.failure { throw CommandError("\(clip): \(failure)") }
                frames = result.frames
                size = result.size
                best = max(best, Double(frames) / seconds)
            }
            print(
                clip.suffix(42).padding(toLength: 42, withPad: " ", startingAt: 0) + " "
                    + size.padding(toLength: 11, withPad: " ", startingAt: 0)
                    + String(format: " %6d %10.1f", frames, best))
        }
    }
}

struct BenchMiniFASNet: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "minifasnet",
        abstract: "Time the MiniFASNet pair's forward pass (each model, and both), batch 1 and 8, one thread.",
        discussion: """
            Input: 80×80 BGR crops (the crop itself is not timed). Prints the OpenBLAS core it ran on. \
            Compare with ONNX Runtime on the shipped .onnx conversions in the same session: \
            scripts/bench_minifasnet_reference.py. Build with -c release.
            """)

    @Option(name: .long, help: "Folder holding the pair (default as for classify).")
    var minifasnet: String?

    @Option(help: "Timed iterations per case.")
    var iterations = 200

    @Option(help: "Warm-up iterations per case (not timed).")
    var warmup = 20

    @Option(parsing: .upToNextOption, help: "Batch sizes to time.")
    var batch: [Int] = [1, 8]

    func run() throws {
        let pair: MiniFASNetPair
        do {
            let url = try PairModelLocator.resolve(
                flag: self.minifasnet, configuration: Configuration(), environment: ProcessInfo.processInfo.environment)
            pair = try MiniFASNetPair(directory: url)
        } catch {
            FileHandle.standardError.write(Data("livenessd: \(error)\n".utf8))
            throw ExitCode(2)
        }
        BLAS.setThreadCount(1)
        print("# livenessd \(LivenessdVersion.string) bench minifasnet")
        print("# cpu:      \(BenchEngine.cpuModel()) (\(ProcessInfo.processInfo.activeProcessorCount) logical CPUs)")
        print("# openblas: core \(BLAS.coreName), threads \(BLAS.threadCount)")
        print("# \(self.warmup) warm-up + \(self.iterations) timed iterations; random 80×80 BGR crops")
        print("case                   batch   ms/frame median      p10      p90")
        var generator = SystemRandomNumberGenerator()
        for batch in self.batch {
            let length = batch * MiniFASNet.inputSide * MiniFASNet.inputSide * 3
            let crops = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            var logits = [Float](repeating: 0, count: 3 * batch)
            for (name, models) in [
                ("MiniFASNetV2", [pair.v2]), ("MiniFASNetV1SE", [pair.v1se]), ("pair", [pair.v2, pair.v1se]),
            ] {
                let timing = BenchTiming.measure(
                    warmup: self.warmup, iterations: self.iterations, framesPerIteration: batch
                ) {
                    for model in models { model.logits(bgrCrops: crops, batch: batch, into: &logits) }
                }
                print(
                    name.padding(toLength: 22, withPad: " ", startingAt: 0)
                        + String(
                            format: " %5d %17.3f %8.3f %8.3f", batch, timing.quantile(0.5), timing.quantile(0.1),
                            timing.quantile(0.9)))
            }
        }
    }
}

struct BenchPipeline: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pipeline",
        abstract: "Run clips through the whole pipeline (decode → crop → ViT → decision): throughput or latency.",
        discussion: """
            --pacing fast: every frame, as fast as possible (frames/s). --pacing realtime: at the clip's own \
            rate, as a camera (capture → decision latency p50/p99, CPU % of one core, peak RSS). \
            Make a 640x480 clip with scripts/make_bench_clips.sh.
            """)

    @OptionGroup var modelOptions: ModelOptions

    @OptionGroup var cropOptions: CropOptions

    @Option(help: "fast or realtime.")
    var pacing = "fast"

    @Option(
        help: """
            Frames analysed per second of each clip, 0 for every frame (default: what run does, \
            \(Int(Configuration.defaultAnalysisFramesPerSecond))).
            """)
    var analysisFps = Configuration.defaultAnalysisFramesPerSecond

    @Argument(help: "Clips (each is one source; several run side by side).")
    var clips: [String]

    func run() throws {
        let loaded: LoadedModels
        let detector: FaceLocatorFactory?
        do {
            loaded = try self.modelOptions.load()
            detector = try self.cropOptions.resolve(configuration: loaded.configuration) {
                FileHandle.standardError.write(Data("livenessd: \($0)\n".utf8))
            }
        } catch let error as CommandError {
            FileHandle.standardError.write(Data("livenessd: \(error)\n".utf8))
            throw ExitCode(2)
        }
        let decided = Mutex(0)
        let pipeline = LivenessPipeline(
            opinions: loaded.opinions,
            configuration: .init(decisions: DecisionConfiguration(threshold: loaded.defaultThreshold))
        ) { event in
            if case .decision = event { decided.withLock { $0 += 1 } }
        }
        var options = MediaSource.Options()
        options.pacing = self.pacing == "realtime" ? .realTime : .asFastAsPossible
        // As `run --pacing fast` and `eval` do (at every frame; otherwise most conversions would be for nothing).
        options.attachRGB24 = options.pacing == .asFastAsPossible && self.analysisFps == 0
        var usageBefore = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usageBefore)
        let start = DispatchTime.now().uptimeNanoseconds
        var locators: [DetectorLocator] = []
        for (index, clip) in self.clips.enumerated() {
            let detecting = try detector?.makeLocator()
            if let detecting { locators.append(detecting) }
            let locator: FaceLocator = detecting ?? WholeFrameLocator()
            // A clip given twice runs as two sources (each with its own lane and statistics).
            let id = self.clips.filter { $0 == clip }.count > 1 ? "\(clip)#\(index + 1)" : nil
            try pipeline.add(
                MediaSource(location: clip, id: id, options: options), locator: locator,
                analysisFramesPerSecond: self.analysisFps)
        }
        guard pipeline.waitUntilFinished(timeoutSeconds: 3600) else { throw CommandError("the clips did not finish") }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func cpuSeconds(_ value: rusage) -> Double {
            Double(value.ru_utime.tv_sec + value.ru_stime.tv_sec) + Double(
                value.ru_utime.tv_usec + value.ru_stime.tv_usec) / 1e6
        }
        let cpu = cpuSeconds(usage) - cpuSeconds(usageBefore)
        let statistics = pipeline.statistics()
        let frames = decided.withLock { $0 }
        let framesRead = statistics.values.reduce(0) { $0 + $1.framesIn }
        print(
            "# livenessd \(LivenessdVersion.string) bench pipeline, pacing \(self.pacing), analysis \(self.analysisFps == 0 ? "every frame" : "\(self.analysisFps) fps"), OpenBLAS core \(BLAS.coreName), \(ProcessInfo.processInfo.activeProcessorCount) CPUs"
        )
        let models = loaded.kinds.map { $0 == .vit ? "ViT" : "MiniFASNet pair" }.joined(separator: " + ")
        print(
            detector == nil
                ? "# whole-frame crop; decode + RGB + crops + \(models) (batched) + fusion + decision"
                : "# YuNet at width 320 + gates + crop \(detector!.configuration.crop.scale)x; decode + RGB + crops + \(models) (batched) + fusion + decision"
        )
        if let detector {
            // Read after every source ended: the lanes are done with their locators.
            let tracked = locators.reduce(0) { $0 + $1.trackedFrames }
            let detected = locators.reduce(0) { $0 + $1.detectedFrames }
            print(
                "# face boxes: \(detected) detected, \(tracked) tracked (track_seconds \(detector.configuration.trackingSeconds))"
            )
        }
        for (id, lane) in statistics.sorted(by: { $0.key < $1.key }) {
            print(
                "source \((id as NSString).lastPathComponent): in \(lane.framesIn), decided \(lane.processed), dropped stale \(lane.droppedStale) busy \(lane.droppedBusy) rate \(lane.droppedRate), "
                    + String(
                        format: "latency p50 %.1f ms p99 %.1f ms", lane.latencyMilliseconds(percentile: 50),
                        lane.latencyMilliseconds(percentile: 99)))
            print(
                "  stages p50/p99 ms: "
                    + [LaneStatistics.Stage.queued, .prepare, .inference].map {
                        String(
                            format: "%@ %.2f/%.2f", $0.rawValue, lane.milliseconds($0, percentile: 50),
                            lane.milliseconds($0, percentile: 99))
                    }.joined(separator: ", "))
        }
        print(
            String(
                format:
                    "total: %d frames decided in %.2f s = %.1f frames/s (%d read = %.1f frames/s); CPU %.0f %% of one core; peak RSS %.1f MB",
                frames, seconds, Double(frames) / seconds, framesRead, Double(framesRead) / seconds,
                100 * cpu / seconds,
                Double(usage.ru_maxrss) / 1024))
    }
}

/// Per-iteration wall times of a benchmark body, in milliseconds per frame, sorted.
struct BenchTiming {
    var sorted: [Double]

    static func measure(
        warmup: Int, iterations: Int, framesPerIteration: Int, _ body: () throws -> Void
    ) rethrows -> BenchTiming {
        for _ in 0..<warmup { try body() }
        var samples: [Double] = []
        samples.reserveCapacity(iterations)
        for _ in 0..<iterations {
            let start = DispatchTime.now().uptimeNanoseconds
            try body()
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6 / Double(framesPerIteration))
        }
        return BenchTiming(sorted: samples.sorted())
    }

    /// The q-quantile (0…1) of the samples.
    func quantile(_ q: Double) -> Double {
        self.sorted[min(self.sorted.count - 1, Int(q * Double(self.sorted.count)))]
    }
}
