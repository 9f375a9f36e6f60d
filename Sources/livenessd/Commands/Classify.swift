import ArgumentParser
import CaptureKit
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

struct Classify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the spoof probability and LIVE/SPOOF verdict of still images.",
        discussion: """
            Each image (JPEG, PNG, WebP, BMP, … decoded by FFmpeg, EXIF orientation applied) goes through \
            the model's training-time preprocessing on the whole picture: short side to 255, centre crop \
            224, grayscale. Unreadable images are reported and the others still classified; the exit \
            status is 1 when any image failed.
            """)

    @OptionGroup var modelOptions: ModelOptions

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
        let classifier = ImageClassifier(model: loaded.model, threshold: threshold)
        var failures = 0
        for path in self.images {
            let result = classifier.classify(path: path)
            if result.error != nil { failures += 1 }
            print(self.json ? result.jsonLine() : result.textLine())
        }
        if failures > 0 { throw ExitCode(1) }
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
    var error: String?
    var errorCode: String?

    enum CodingKeys: String, CodingKey {
        case path, decision, threshold, width, height, error
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
        return "\(self.path)\t\(String(format: "%.6f", self.spoofProbability ?? 0))\t\(self.decision ?? "")"
    }
}

/// Decode → preprocess → infer for still images (the whole picture, as the reference does).
struct ImageClassifier {
    let model: LivenessViT
    let threshold: Double
    let preprocessor = Preprocessor()

    func classify(path: String) -> ClassificationResult {
        var result = ClassificationResult(path: path, threshold: self.threshold)
        do {
            let (image, orientation) = try ImageDecoder.decode(path: path)
            let probability = self.spoofProbability(image)
            result.spoofProbability = probability
            result.decision = probability >= self.threshold ? "SPOOF" : "LIVE"
            result.width = image.width
            result.height = image.height
            result.exifOrientation = orientation.rawValue
        } catch let error as CaptureError {
            result.error = error.message
            result.errorCode = "\(error.code)"
        } catch {
            result.error = "\(error)"
            result.errorCode = "unknown"
        }
        return result
    }

    func spoofProbability(_ image: RGBImage) -> Double {
        image.pixels.withUnsafeBufferPointer { pixels in
            let source = PixelSource(
                base: pixels.baseAddress!, width: image.width, height: image.height, rowStride: image.rowStride,
                layout: .rgb24)
            return self.model.spoofProbability(lumaCrop: self.preprocessor.lumaCrop(source))
        }
    }
}
