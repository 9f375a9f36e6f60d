import ArgumentParser
import CaptureKit
import FramePipeline
import Foundation
import LivenessEngine

/// Options every model-using command shares.
struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: "Path to the liveness model (torch.save checkpoint, model.pt).")
    var model: String?

    @Option(name: .long, help: "Config file (YAML). Default: /etc/livenessd/livenessd.yaml when present.")
    var config: String?

    func load() throws -> (model: LivenessViT, url: URL, configuration: Configuration) {
        let configuration = try Configuration.load(path: self.config)
        let url = try ModelLocator.resolve(
            flag: self.model, configuration: configuration, environment: ProcessInfo.processInfo.environment)
        do {
            return (try LivenessViT(contentsOf: url), url, configuration)
        } catch let error as CheckpointError {
            throw CommandError("cannot load the model: \(error)")
        }
    }
}

/// Face detection and crop options, shared by `classify` and `run`.
struct CropOptions: ParsableArguments {
    @Option(help: "What the model judges: detect (the largest face, cropped by the crop policy) or full (the whole picture, as the reference does). Default: the config's crop.mode, else detect when the detector is found.")
    var crop: String?

    @Option(help: "Crop side as a multiple of the face box's longer side (default: the config's crop.scale, else \(CropPolicy.defaultScale)).")
    var cropScale: Double?

    @Option(help: "Path to the YuNet face detector (ONNX). Default: $LIVENESSD_DETECTOR, the config's detector:, models/yunet/face_detection_yunet.onnx, /usr/local/share/livenessd/yunet/face_detection_yunet.onnx.")
    var detector: String?

    func validate() throws {
        if let crop, !["detect", "full"].contains(crop) { throw ValidationError("--crop must be detect or full") }
        if let cropScale, !(cropScale >= 0.5 && cropScale <= 5) {
            throw ValidationError("--crop-scale must be between 0.5 and 5, got \(cropScale)")
        }
    }

    /// What to judge: a detector setup, or nil for the whole frame. `warn` hears why detection is off
    /// when it was not asked for explicitly and no detector file was found.
    func resolve(configuration: Configuration, warn: (String) -> Void) throws -> DetectorSetup? {
        let mode = self.crop ?? configuration.crop?.mode
        if mode == "full" { return nil }
        let url = try DetectorModelLocator.resolve(
            flag: self.detector, configuration: configuration, environment: ProcessInfo.processInfo.environment)
        guard let url else {
            let looked = ([DetectorModelLocator.relativeDefault] + DetectorModelLocator.installedDefaults).joined(separator: ", ")
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
        return DetectorSetup(url: url, model: model, configuration: .init(crop: CropPolicy(scale: scale)))
    }
}

/// A loaded detector model and the locator settings; makes one locator per lane.
struct DetectorSetup: @unchecked Sendable {
    // @unchecked: the ONNX model is read-only after loading.
    var url: URL
    var model: ONNXModel
    var configuration: DetectorLocator.Configuration

    func makeLocator() throws -> DetectorLocator {
        DetectorLocator(detector: try FaceDetector(model: self.model), configuration: self.configuration)
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

    @Option(help: "Decision threshold: SPOOF iff probability ≥ threshold (default: the config file's, else the checkpoint's).")
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
        let loaded: (model: LivenessViT, url: URL, configuration: Configuration)
        do {
            loaded = try self.modelOptions.load()
        } catch let error as CommandError {
            FileHandle.standardError.write(Data("livenessd: \(error)\n".utf8))
            throw ExitCode(2)
        }
        let threshold = self.threshold ?? loaded.configuration.threshold ?? loaded.model.threshold
        let locator: DetectorLocator?
        do {
            locator = try self.cropOptions.resolve(configuration: loaded.configuration) {
                FileHandle.standardError.write(Data("livenessd: warning: \($0)\n".utf8))
            }?.makeLocator()
        } catch let error as CommandError {
            FileHandle.standardError.write(Data("livenessd: \(error)\n".utf8))
            throw ExitCode(2)
        }
        let classifier = ImageClassifier(model: loaded.model, threshold: threshold, locator: locator)
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

/// One image's outcome, as printed by `classify`.
struct ClassificationResult: Codable, Equatable {
    var path: String
    var spoofProbability: Double?
    var decision: String?
    var threshold: Double
    var width: Int?
    var height: Int?
    var exifOrientation: Int?
    /// The face judged (frame pixels, clipped to the picture), when detection ran and found one.
    var box: Box?
    /// Faces found (the largest is judged); nil for --crop full.
    var faces: Int?
    /// Why the picture was not judged: a `QualityGates.Reason` raw value (no_face, too_dark …).
    var gate: String?
    /// The region the model judged.
    var crop: Box?
    var error: String?
    var errorCode: String?

    struct Box: Codable, Equatable {
        var x, y, width, height: Int

        init(_ rect: PixelRect) {
            self.x = rect.x
            self.y = rect.y
            self.width = rect.width
            self.height = rect.height
        }

        var text: String { "\(self.width)x\(self.height)+\(self.x)+\(self.y)" }
    }

    enum CodingKeys: String, CodingKey {
        case path, decision, threshold, width, height, error, box, faces, gate, crop
        case spoofProbability = "spoof_probability"
        case exifOrientation = "exif_orientation"
        case errorCode = "error_code"
    }

    func jsonLine() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try! encoder.encode(self), as: UTF8.self)
    }

    func textLine() -> String {
        if let error { return "\(self.path)\terror: \(error)" }
        let face = self.box.map { "\tface \($0.text)" + (self.faces.map { $0 > 1 ? " (largest of \($0))" : "" } ?? "") } ?? ""
        if let gate { return "\(self.path)\tnot judged: \(gate)\(face)" }
        return "\(self.path)\t\(String(format: "%.6f", self.spoofProbability ?? 0))\t\(self.decision ?? "")\(face)"
    }
}

/// Decode → (detect, gate, crop) → preprocess → infer for still images. Without a locator the whole
/// picture is judged, as the reference does.
struct ImageClassifier {
    let model: LivenessViT
    let threshold: Double
    var locator: DetectorLocator? = nil
    let preprocessor = Preprocessor()

    func classify(path: String) -> ClassificationResult {
        var result = ClassificationResult(path: path, threshold: self.threshold)
        do {
            let (image, orientation) = try ImageDecoder.decode(path: path)
            result.width = image.width
            result.height = image.height
            result.exifOrientation = orientation.rawValue
            var region = PixelRect(x: 0, y: 0, width: image.width, height: image.height)
            if let locator = self.locator {
                let frame = image.frame(sourceID: path)
                let analysis = image.pixels.withUnsafeBufferPointer { pixels in
                    locator.analyse(
                        image: PixelSource(
                            base: pixels.baseAddress!, width: image.width, height: image.height,
                            rowStride: image.rowStride, layout: .rgb24),
                        frame: frame)
                }
                if let error = analysis.error { throw CommandError(error) }
                result.faces = analysis.faces.count
                result.box = analysis.face?.pixels(inFrameWidth: image.width, height: image.height).map(ClassificationResult.Box.init)
                let location = locator.location(
                    for: analysis, frameWidth: image.width, frameHeight: image.height, crop: locator.configuration.crop)
                switch location {
                case .face(let rect, _): region = rect
                case .noFace: result.gate = QualityGates.Reason.noFace.rawValue
                case .unusable(let reason, _): result.gate = reason
                }
                if result.gate != nil { return result }
                result.crop = ClassificationResult.Box(region)
            }
            let probability = self.spoofProbability(image, region: region)
            result.spoofProbability = probability
            result.decision = probability >= self.threshold ? "SPOOF" : "LIVE"
        } catch let error as CaptureError {
            result.error = error.message
            result.errorCode = "\(error.code)"
        } catch {
            result.error = "\(error)"
            result.errorCode = "unknown"
        }
        return result
    }

    func spoofProbability(_ image: RGBImage, region: PixelRect? = nil) -> Double {
        image.pixels.withUnsafeBufferPointer { pixels in
            var source = PixelSource(
                base: pixels.baseAddress!, width: image.width, height: image.height, rowStride: image.rowStride,
                layout: .rgb24)
            if let region { source = source.cropped(to: region) }
            return self.model.spoofProbability(lumaCrop: self.preprocessor.lumaCrop(source))
        }
    }
}
