import ArgumentParser
import CaptureKit
import FramePipeline
import Foundation
import LivenessEngine
import LivenessServer

/// Options every model-using command shares.
struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: "Path to the liveness ViT (torch.save checkpoint, model.pt).")
    var model: String?

    @Option(
        name: .long,
        help:
            "Folder holding the MiniFASNet pair (2.7_80x80_MiniFASNetV2.pth, 4_0_0_80x80_MiniFASNetV1SE.pth). Default: $LIVENESSD_MINIFASNET, the config's minifasnet:, models/silent-face, /usr/local/share/livenessd/silent-face, /usr/share/livenessd/silent-face."
    )
    var minifasnet: String?

    @Option(
        name: .long,
        help:
            "Opinions that judge a face, comma-separated: vit, minifasnet, or both (default: the config's models:, else both)."
    )
    var models: String?

    @Option(name: .long, help: "Config file (YAML). Default: /etc/livenessd/livenessd.yaml when present.")
    var config: String?

    /// The kinds asked for: --models, then the config's `models:`, then both.
    func kinds(configuration: Configuration) throws -> [OpinionKind] {
        guard let flag = self.models else { return configuration.models?.kinds ?? OpinionKind.allCases }
        if flag == "both" { return OpinionKind.allCases }
        var kinds: [OpinionKind] = []
        for name in flag.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            guard let kind = OpinionKind(rawValue: name) else {
                throw CommandError("--models: unknown model '\(name)'; use vit, minifasnet or both")
            }
            if !kinds.contains(kind) { kinds.append(kind) }
        }
        guard !kinds.isEmpty else { throw CommandError("--models names no model; use vit, minifasnet or both") }
        return kinds
    }

    /// `pinDigests` (the daemon): refuse model files that are neither published nor trusted by the config.
    func load(pinDigests: Bool = false) throws -> LoadedModels {
        let configuration = try Configuration.load(path: self.config)
        let kinds = try self.kinds(configuration: configuration)
        let environment = ProcessInfo.processInfo.environment
        var vit: LivenessViT?
        var vitURL: URL?
        var pair: MiniFASNetPair?
        var pairURL: URL?
        if kinds.contains(.vit) {
            let url = try ModelLocator.resolve(flag: self.model, configuration: configuration, environment: environment)
            if pinDigests {
                try ModelDigestPin.check(url, published: LivenessViT.publishedSHA256, configuration: configuration)
            }
            do {
                vit = try LivenessViT(contentsOf: url)
            } catch let error as CheckpointError {
                throw CommandError("cannot load the model: \(error)")
            }
            vitURL = url
        }
        if kinds.contains(.minifasnet) {
            let url = try PairModelLocator.resolve(
                flag: self.minifasnet, configuration: configuration, environment: environment)
            if pinDigests {
                for name in MiniFASNetPair.fileNames {
                    try ModelDigestPin.check(
                        url.appendingPathComponent(name), published: MiniFASNetPair.publishedSHA256[name],
                        configuration: configuration)
                }
            }
            do {
                pair = try MiniFASNetPair(directory: url)
            } catch let error as CheckpointError {
                throw CommandError("cannot load the MiniFASNet pair: \(error)")
            }
            pairURL = url
        }
        return LoadedModels(
            opinions: Opinions(vit: vit, pair: pair, fusion: configuration.scoreFusion), vitURL: vitURL,
            pairURL: pairURL,
            configuration: configuration)
    }
}

/// The opinions a command loaded, where from, and the threshold they come with.
struct LoadedModels {
    var opinions: Opinions
    var vitURL: URL?
    /// The MiniFASNet pair's folder.
    var pairURL: URL?
    var configuration: Configuration

    var kinds: [OpinionKind] { self.opinions.kinds }

    /// The ViT, for the commands that only measure it (bench engine, bench crops).
    func requireViT(_ command: String) throws -> LivenessViT {
        guard let vit = self.opinions.vit else {
            throw CommandError("\(command) measures the ViT: run it without --models minifasnet")
        }
        return vit
    }

    /// The threshold that comes with the models: the ViT's checkpoint threshold when it judges alone,
    /// 0.5 for the pair alone (upstream calls a face real when its mean real probability wins), and
    /// `Opinions.fusedThreshold` (calibrated on the shared material) for both.
    var defaultThreshold: Double {
        switch (self.opinions.vit, self.opinions.pair) {
        case (let vit?, nil): return vit.threshold
        case (nil, _?): return 0.5
        default: return Opinions.fusedThreshold
        }
    }

    /// Where the default threshold comes from, in words for reports.
    var defaultThresholdSource: String {
        switch (self.opinions.vit, self.opinions.pair) {
        case (_?, nil): return "checkpoint"
        case (nil, _?): return "minifasnet default"
        default: return "fused default"
        }
    }

    /// Model files with their SHA-256, in a stable order (ViT, then the pair's files).
    func files() throws -> [(kind: String, path: String, sha256: String)] {
        var files: [(String, String, String)] = []
        if let url = self.vitURL { files.append(("vit", url.path, try FileDigest.sha256(of: url))) }
        if let folder = self.pairURL {
            for name in MiniFASNetPair.fileNames {
                let url = folder.appendingPathComponent(name)
                files.append(("minifasnet", url.path, try FileDigest.sha256(of: url)))
            }
        }
        return files
    }
}

/// Face detection and crop options, shared by `classify` and `run`.
struct CropOptions: ParsableArguments {
    @Option(
        help:
            "What the model judges: detect (the largest face, cropped by the crop policy) or full (the whole picture, as the reference does). Default: the config's crop.mode, else detect when the detector is found."
    )
    var crop: String?

    @Option(
        help:
            "Crop side as a multiple of the face box's longer side (default: the config's crop.scale, else \(CropPolicy.defaultScale))."
    )
    var cropScale: Double?

    @Option(
        help:
            "Path to the YuNet face detector (ONNX). Default: $LIVENESSD_DETECTOR, the config's detector:, models/yunet/face_detection_yunet.onnx, /usr/local/share/livenessd/yunet/face_detection_yunet.onnx, /usr/share/livenessd/yunet/face_detection_yunet.onnx."
    )
    var detector: String?

    @Option(
        help: """
            Seconds of frame time a detected face box is reused for while the face stays still, instead of \
            running the detector again (0: detect every analysed frame). Default: the config's \
            crop.track_seconds, else \(DetectorLocator.Configuration.defaultTrackingSeconds).
            """)
    var trackSeconds: Double?

    func validate() throws {
        if let crop, !["detect", "full"].contains(crop) { throw ValidationError("--crop must be detect or full") }
        if let trackSeconds, !(trackSeconds >= 0 && trackSeconds <= 1) {
            throw ValidationError("--track-seconds must be from 0 to 1, got \(trackSeconds)")
        }
        if let cropScale, !(cropScale >= 0.5 && cropScale <= 5) {
            throw ValidationError("--crop-scale must be between 0.5 and 5, got \(cropScale)")
        }
    }

    /// What to judge: a face locator factory, or nil for the whole frame. `warn` hears why detection is off
    /// when it was not asked for explicitly and no detector file was found.
    func resolve(configuration: Configuration, warn: (String) -> Void) throws -> FaceLocatorFactory? {
        let mode = self.crop ?? configuration.crop?.mode
        if mode == "full" { return nil }
        let url = try DetectorModelLocator.resolve(
            flag: self.detector, configuration: configuration, environment: ProcessInfo.processInfo.environment)
        guard let url else {
            let looked = ([DetectorModelLocator.relativeDefault] + DetectorModelLocator.installedDefaults).joined(
                separator: ", ")
            if mode == "detect" {
                throw CommandError(
                    "no face detector found for --crop detect: pass --detector PATH, set LIVENESSD_DETECTOR, or run "
                        + "scripts/setup.sh (looked in \(looked))")
            }
            warn("no face detector found (looked in \(looked)): judging the whole frame; run scripts/setup.sh")
            return nil
        }
        let model: ONNXModel
        do {
            model = try ONNXModel(contentsOf: url)
        } catch {
            throw CommandError("cannot load the face detector \(url.path): \(error)")
        }
        let scale = self.cropScale ?? configuration.crop?.scale ?? CropPolicy.defaultScale
        var locator = DetectorLocator.Configuration(crop: CropPolicy(scale: scale))
        locator.trackingSeconds =
            self.trackSeconds ?? configuration.crop?.trackSeconds
            ?? DetectorLocator.Configuration.defaultTrackingSeconds
        return FaceLocatorFactory(url: url, model: model, configuration: locator)
    }
}

struct Classify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the spoof probability and LIVE/SPOOF verdict of still images.",
        discussion: """
            Each image (JPEG decoded by libjpeg-turbo as PIL does; PNG, WebP, BMP, … by FFmpeg; EXIF \
            orientation applied) is searched for faces (YuNet); the largest is checked by the quality gates and cropped by the crop policy \
            (docs/CROP_POLICY.md), then goes through the model's training-time preprocessing: short side to \
            255, centre crop 224, grayscale. --crop full judges the whole picture instead, as the reference \
            does. An image with no face or an unusable face (too small, dark, bright, blurred, cut by the \
            edge) is reported with the reason and no verdict. Exit status: 0 when every image was judged; \
            1 when any image could not be read; else 3 when any image had no face or an unusable one.
            """)

    @OptionGroup var modelOptions: ModelOptions

    @OptionGroup var cropOptions: CropOptions

    @Option(
        help:
            "Decision threshold: SPOOF iff probability ≥ threshold (default: the config file's, else the checkpoint's)."
    )
    var threshold: Double?

    @Flag(help: "Print one JSON object per image (JSON Lines) instead of text.")
    var json = false

    @Argument(help: "Image files to classify.")
    var images: [String]

    func validate() throws {
        if let threshold, !(0...1).contains(threshold) {
            throw ValidationError("--threshold must be between 0 and 1, got \(threshold)")
        }
        if self.images.isEmpty { throw ValidationError("give at least one image") }
    }

    func run() throws {
        let loaded: LoadedModels
        do {
            loaded = try self.modelOptions.load()
        } catch let error as CommandError {
            FileHandle.standardError.write(Data("livenessd: \(error)\n".utf8))
            throw ExitCode(2)
        }
        let threshold = self.threshold ?? loaded.configuration.threshold ?? loaded.defaultThreshold
        let locator: DetectorLocator?
        do {
            var factory = try self.cropOptions.resolve(configuration: loaded.configuration) {
                FileHandle.standardError.write(Data("livenessd: warning: \($0)\n".utf8))
            }
            // Separate pictures: one's face box says nothing about the next's.
            factory?.configuration.trackingSeconds = 0
            locator = try factory?.makeLocator()
        } catch let error as CommandError {
            FileHandle.standardError.write(Data("livenessd: \(error)\n".utf8))
            throw ExitCode(2)
        }
        let classifier = ImageClassifier(opinions: loaded.opinions, threshold: threshold, locator: locator)
        var unreadable = 0
        var notJudged = 0
        for path in self.images {
            let result = classifier.classify(path: path)
            if result.error != nil { unreadable += 1 } else if result.gate != nil { notJudged += 1 }
            print(self.json ? result.jsonLine() : result.textLine())
        }
        if unreadable > 0 { throw ExitCode(1) }
        if notJudged > 0 { throw ExitCode(3) }
    }
}

/// How `classify` prints a result: one JSON object per line, or one tab-separated text line.
extension ClassificationResult {
    func jsonLine() -> String {
        SafeJSON.encode(self, fallback: #"{"error":"cannot encode the result","error_code":"unknown"}"#)
    }

    func textLine() -> String {
        if let error { return "\(self.path)\terror: \(error)" }
        let face =
            self.box.map { "\tface \($0.text)" + (self.faces.map { $0 > 1 ? " (largest of \($0))" : "" } ?? "") } ?? ""
        if let gate { return "\(self.path)\tnot judged: \(gate)\(face)" }
        // The opinions only when there are several (with one, the fused score is that opinion's).
        var opinions = ""
        if let scores, scores.vit != nil && scores.minifasnet != nil {
            opinions =
                "\t"
                + OpinionKind.allCases.compactMap { kind in
                    scores[kind].map { "\(kind.rawValue) " + String(format: "%.6f", $0) }
                }.joined(separator: " ")
        }
        return
            "\(self.path)\t\(String(format: "%.6f", self.spoofProbability ?? 0))\t\(self.decision ?? "")\(opinions)\(face)"
    }
}
