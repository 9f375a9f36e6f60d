import ArgumentParser
import CaptureKit
import Dispatch
import FramePipeline
import Foundation
import LivenessEngine
import Synchronization
import LivenessEval

/// Scores the labelled samples at several crop scales: the measurement behind the default crop
/// (docs/CROP_POLICY.md).
struct BenchCrops: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crops",
        abstract: "Live/spoof separation (AUC, APCER, BPCER) of the labelled samples per crop scale.",
        discussion: """
            Reads MANIFEST.tsv in the samples folder (columns file, label live|spoof, attack type; unlabelled \
            rows are skipped). Images are scored once, clips every Nth frame. Each picture goes through \
            detection (YuNet at width 320, score ≥ 0.6), the largest face is cropped at every scale and the \
            whole frame is scored too. Frames without a face are counted, not scored; gate rejections are \
            counted per reason but still scored (the table is about the crop). Clip score = median of its \
            frame scores. --scores writes every frame's numbers as TSV.
            """)

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "YuNet model (default as for classify).")
    var detector: String?

    @Option(
        help: "Samples folder holding MANIFEST.tsv (default: $LIVENESSD_TEST_ASSETS/samples, else ../shared/samples).")
    var samples: String?

    @Option(parsing: .upToNextOption, help: "Crop scales (× the face box's longer side).")
    var scales: [Double] = [1.0, 1.25, 1.5, 2.0, 2.5]

    @Option(parsing: .upToNextOption, help: "Scales also scored with the clamp edge policy (to compare with shift).")
    var clampScales: [Double] = [1.5, 2.5]

    @Option(help: "Score every Nth frame of a clip.")
    var every = 5

    @Option(help: "Decision threshold (default: the checkpoint's).")
    var threshold: Double?

    @Option(help: "Write per-frame scores and gate measurements here (TSV).")
    var scores: String?

    func validate() throws {
        guard self.every > 0, !self.scales.isEmpty else {
            throw ValidationError("--every must be positive, give scales")
        }
    }

    struct Item {
        var file: String
        var label: String
        var attack: String
        var isClip: Bool
    }

    /// One scored picture: a still, or one frame of a clip.
    struct Scored {
        var item: Int
        var frame: Int
        var faces: Int
        var box: FaceBox?
        var measurements: QualityGates.Measurements?
        var gate: QualityGates.Reason?
        /// One per variant (`variants`), nil when no face was found (except the whole frame).
        var probabilities: [Double?]
    }

    var variants: [(name: String, policy: CropPolicy?)] {
        self.scales.map { ("\($0)", CropPolicy(scale: $0)) }
            + self.clampScales.map { ("\($0) clamp", CropPolicy(scale: $0, edges: .clamp)) } + [("full", nil)]
    }

    func run() throws {
        let environment = ProcessInfo.processInfo.environment
        let folder =
            self.samples
            ?? ((environment["LIVENESSD_TEST_ASSETS"].map { $0 + "/samples" }) ?? "../shared/samples")
        let loaded = try self.modelOptions.load()
        let vit = try loaded.requireViT("bench crops")
        let threshold = self.threshold ?? vit.threshold
        let configuration = loaded.configuration
        guard
            let detectorURL = try DetectorModelLocator.resolve(
                flag: self.detector
                    ?? environment["LIVENESSD_TEST_ASSETS"].map { $0 + "/models/yunet/face_detection_yunet.onnx" },
                configuration: configuration, environment: environment)
        else { throw CommandError("no face detector: pass --detector") }
        let locator = try DetectorLocator(modelURL: detectorURL)
        let items = try Self.manifest(folder: folder)
        let scorer = FrameScorer(model: vit, locator: locator, variants: self.variants.map(\.policy))
        var results: [Scored] = []
        for (index, item) in items.enumerated() {
            let path = folder + "/" + item.file
            if item.isClip {
                results += try scorer.scoreClip(path: path, item: index, every: self.every)
            } else {
                let image = try ImageDecoder.decode(path: path).image
                results.append(scorer.score(frame: image.frame(sourceID: path), item: index, frame: 0))
            }
            FileHandle.standardError.write(
                Data("\(item.file): \(results.filter { $0.item == index }.count) scored\n".utf8))
        }
        if let output = self.scores { try self.writeScores(results, items: items, to: output) }
        self.printTable(results, items: items, threshold: threshold)
    }

    static func manifest(folder: String) throws -> [Item] {
        let text = try String(contentsOfFile: folder + "/MANIFEST.tsv", encoding: .utf8)
        return text.split(separator: "\n").dropFirst().compactMap { line in
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard fields.count >= 3, ["live", "spoof"].contains(fields[1]) else { return nil }
            let lower = fields[0].lowercased()
            let isClip = [".mp4", ".mov", ".avi", ".mkv", ".webm"].contains { lower.hasSuffix($0) }
            return Item(file: fields[0], label: fields[1], attack: fields[2], isClip: isClip)
        }
    }

    func writeScores(_ results: [Scored], items: [Item], to path: String) throws {
        var lines = [
            ([
                "file", "label", "attack", "frame", "faces", "box_x", "box_y", "box_w", "box_h", "mean_luma",
                "sharpness", "gate",
            ]
                + self.variants.map { "p_\($0.name.replacingOccurrences(of: " ", with: "_"))" }).joined(separator: "\t")
        ]
        for result in results {
            let item = items[result.item]
            let box =
                result.box.map { [$0.x, $0.y, $0.width, $0.height].map { String(format: "%.1f", $0) } } ?? [
                    "", "", "", "",
                ]
            let fields: [String] =
                [item.file, item.label, item.attack, "\(result.frame)", "\(result.faces)"] + box + [
                    result.measurements.map { String(format: "%.2f", $0.meanLuma) } ?? "",
                    result.measurements.map { String(format: "%.2f", $0.sharpness) } ?? "",
                    result.gate?.rawValue ?? "",
                ] + result.probabilities.map { $0.map { String(format: "%.6f", $0) } ?? "" }
            lines.append(fields.joined(separator: "\t"))
        }
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }

    func printTable(_ results: [Scored], items: [Item], threshold: Double) {
        let faced = results.filter { $0.box != nil }
        let stills = faced.filter { !items[$0.item].isClip }
        let clipFrames = faced.filter { items[$0.item].isClip }
        let clipItems = items.indices.filter { items[$0].isClip }
        print("# livenessd bench crops: threshold \(threshold), clips every \(self.every)th frame")
        print(
            "# pictures scored: \(results.count) (\(results.filter { !items[$0.item].isClip }.count) stills); no face: "
                + "\(results.filter { $0.box == nil }.count) (stills \(results.filter { $0.box == nil && !items[$0.item].isClip }.count))"
        )
        var gateCounts: [String: Int] = [:]
        for result in faced { if let gate = result.gate { gateCounts[gate.rawValue, default: 0] += 1 } }
        print("# gate rejections among faces (still scored below): \(gateCounts.sorted { $0.key < $1.key })")
        print(
            "| crop | stills AUC | stills APCER | stills BPCER | clip frames AUC | frames APCER | frames BPCER | clips AUC | clips APCER | clips BPCER |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        func metrics(_ pictures: [Scored], _ variant: Int) -> PADMetrics {
            let live = pictures.filter { items[$0.item].label == "live" }.compactMap { $0.probabilities[variant] }
            let attacks = pictures.filter { items[$0.item].label == "spoof" }.compactMap { $0.probabilities[variant] }
            return PADMetrics(live: live, attacks: attacks, threshold: threshold)
        }
        func cells(_ m: PADMetrics) -> String {
            func f(_ v: Double?) -> String { v.map { String(format: "%.3f", $0) } ?? "–" }
            return "\(f(m.areaUnderCurve)) | \(f(m.attackErrorRate)) | \(f(m.bonaFideErrorRate))"
        }
        for (variant, (name, _)) in self.variants.enumerated() {
            var live: [Double] = []
            var attacks: [Double] = []
            for clip in clipItems {
                guard let score = median(clipFrames.filter { $0.item == clip }.compactMap { $0.probabilities[variant] })
                else {
                    continue
                }
                if items[clip].label == "live" { live.append(score) } else { attacks.append(score) }
            }
            let clips = PADMetrics(live: live, attacks: attacks, threshold: threshold)
            print(
                "| \(name) | \(cells(metrics(stills, variant))) | \(cells(metrics(clipFrames, variant))) | \(cells(clips)) |"
            )
        }
        let counts = metrics(stills, 0)
        let frameCounts = metrics(clipFrames, 0)
        print(
            "# stills with a face: \(counts.livenessCount) live, \(counts.attackCount) spoof; clip frames with a face: "
                + "\(frameCounts.livenessCount) live, \(frameCounts.attackCount) spoof; clips: \(clipItems.count)")
    }
}

/// Detects once per picture and scores every crop variant (nil policy = whole frame).
final class FrameScorer: @unchecked Sendable {
    // @unchecked: used from one thread at a time (a clip's source thread, while the caller waits).
    let model: LivenessViT
    let locator: DetectorLocator
    let variants: [CropPolicy?]
    let converter = PixelConverter()
    let preprocessor = Preprocessor()
    var rgb: [UInt8] = []

    init(model: LivenessViT, locator: DetectorLocator, variants: [CropPolicy?]) {
        self.model = model
        self.locator = locator
        self.variants = variants
    }

    func score(frame: Frame, item: Int, frame index: Int) -> BenchCrops.Scored {
        let count = frame.width * frame.height * 3
        if self.rgb.count < count { self.rgb = [UInt8](repeating: 0, count: count) }
        return self.rgb.withUnsafeMutableBufferPointer { buffer in
            var scored = BenchCrops.Scored(item: item, frame: index, faces: 0, probabilities: [])
            do {
                try self.converter.convert(frame, to: .rgb24, into: buffer.baseAddress!)
            } catch {
                scored.probabilities = self.variants.map { _ in nil }
                return scored
            }
            let image = PixelSource(
                base: UnsafePointer(buffer.baseAddress!), width: frame.width, height: frame.height,
                rowStride: frame.width * 3, layout: .rgb24)
            let analysis = self.locator.analyse(image: image, frame: frame)
            scored.faces = analysis.faces.count
            scored.box = analysis.face
            scored.measurements = analysis.measurements
            scored.gate = analysis.rejection
            scored.probabilities = self.variants.map { policy in
                let region: PixelRect
                if let policy {
                    guard let face = analysis.face else { return nil }
                    region = policy.crop(for: face, frameWidth: frame.width, frameHeight: frame.height)
                } else {
                    region = PixelRect(x: 0, y: 0, width: frame.width, height: frame.height)
                }
                return self.model.spoofProbability(lumaCrop: self.preprocessor.lumaCrop(image.cropped(to: region)))
            }
            return scored
        }
    }

    func scoreClip(path: String, item: Int, every: Int) throws -> [BenchCrops.Scored] {
        var options = MediaSource.Options()
        options.pacing = .asFastAsPossible
        let source = MediaSource(location: path, options: options)
        let done = DispatchSemaphore(value: 0)
        let collected = LockedValue<[BenchCrops.Scored]>([])
        try source.start { [self] event in
            switch event {
            case .frame(let frame):
                guard frame.sequence % UInt64(every) == 0 else { return }
                let scored = self.score(frame: frame, item: item, frame: Int(frame.sequence))
                collected.value.append(scored)
            case .ended:
                done.signal()
            default:
                break
            }
        }
        done.wait()
        return collected.value
    }
}

/// A value shared between threads behind a lock (a Mutex cannot be copied into closures).
final class LockedValue<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { self.mutex = Mutex(value) }
    var value: Value {
        get { self.mutex.withLock { $0 } }
        set { self.mutex.withLock { $0 = newValue } }
    }
}
