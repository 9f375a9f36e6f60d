import CaptureKit
import Foundation
import LivenessEngine

/// One still image's outcome (what `classify` prints).
/// A face box (or crop) in frame pixels, written the same way by every output — the socket's
/// `decision`/`heartbeat`, `classify --json` and eval's `frames.jsonl`: `{"x": …, "y": …, "w": …, "h": …}`
/// (docs/PROTOCOL.md).
public struct FrameBox: Codable, Equatable, Sendable {
    public var x: Int
    public var y: Int
    public var w: Int
    public var h: Int

    public init(x: Int, y: Int, w: Int, h: Int) {
        self.x = x
        self.y = y
        self.w = w
        self.h = h
    }

    public init(_ rect: PixelRect) { self.init(x: rect.x, y: rect.y, w: rect.width, h: rect.height) }

    /// `WxH+X+Y`, as X11 geometry and ImageMagick write it (the text outputs).
    public var text: String { "\(self.w)x\(self.h)+\(self.x)+\(self.y)" }
}

public struct ClassificationResult: Codable, Equatable, Sendable {
    public var path: String
    /// The fused spoof probability (with one opinion: that opinion's).
    public var spoofProbability: Double?
    /// Each opinion's spoof probability.
    public var scores: OpinionScores?
    public var decision: String?
    public var threshold: Double
    public var width: Int?
    public var height: Int?
    public var exifOrientation: Int?
    /// The face judged (frame pixels, clipped to the picture), when detection ran and found one.
    public var box: Box?
    /// Faces found (the largest is judged); nil for --crop full.
    public var faces: Int?
    /// Why the picture was not judged: a `QualityGates.Reason` raw value (no_face, too_dark …).
    public var gate: String?
    /// The region the model judged.
    public var crop: Box?
    public var error: String?
    public var errorCode: String?

    /// The shape every output gives a face box (issue 12): `{"x","y","w","h"}` in frame pixels.
    public typealias Box = FrameBox

    public init(path: String, threshold: Double) {
        self.path = path
        self.threshold = threshold
    }

    enum CodingKeys: String, CodingKey {
        case path, decision, threshold, width, height, error, box, faces, gate, crop, scores
        case spoofProbability = "spoof_probability"
        case exifOrientation = "exif_orientation"
        case errorCode = "error_code"
    }
}

/// Decode → (detect, gate, crop) → preprocess → infer for still images. Without a locator the whole
/// picture is judged, as the reference does.
public struct ImageClassifier {
    public let opinions: Opinions
    public let threshold: Double
    public var locator: DetectorLocator?

    public init(opinions: Opinions, threshold: Double, locator: DetectorLocator? = nil) {
        self.opinions = opinions
        self.threshold = threshold
        self.locator = locator
    }

    public func classify(path: String) -> ClassificationResult {
        var result = ClassificationResult(path: path, threshold: self.threshold)
        do {
            let (image, orientation) = try ImageDecoder.decode(path: path)
            result.width = image.width
            result.height = image.height
            result.exifOrientation = orientation.rawValue
            var region = PixelRect(x: 0, y: 0, width: image.width, height: image.height)
            var pairBox: MiniFASNetCrop.Box?
            if let locator = self.locator {
                let frame = image.frame(sourceID: path)
                let analysis = image.pixels.withUnsafeBufferPointer { pixels in
                    locator.analyse(
                        image: PixelSource(
                            base: pixels.baseAddress!, width: image.width, height: image.height,
                            rowStride: image.rowStride, layout: .rgb24),
                        frame: frame)
                }
                if let error = analysis.error { throw ClassificationError(description: error) }
                result.faces = analysis.faces.count
                result.box = analysis.face?.pixels(inFrameWidth: image.width, height: image.height).map(
                    ClassificationResult.Box.init)
                let location = locator.location(
                    for: analysis, frameWidth: image.width, frameHeight: image.height, crop: locator.configuration.crop)
                switch location {
                case .face(let rect, _, let box):
                    region = rect
                    pairBox = box
                case .noFace: result.gate = QualityGates.Reason.noFace.rawValue
                case .unusable(let reason, _): result.gate = reason
                }
                if result.gate != nil { return result }
                result.crop = ClassificationResult.Box(region)
            }
            let scores = try self.scores(image, region: region, box: pairBox)
            result.scores = scores
            guard let probability = self.opinions.fused(scores) else {
                throw ClassificationError(
                    description: "the models gave no finite score for this picture (damaged model files?)")
            }
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

    /// Every opinion's spoof probability for `region` (the ViT) and `box` (the pair; nil: the whole picture).
    public func scores(_ image: RGBImage, region: PixelRect, box: MiniFASNetCrop.Box?) throws -> OpinionScores {
        let input = try image.pixels.withUnsafeBufferPointer { pixels in
            let source = PixelSource(
                base: pixels.baseAddress!, width: image.width, height: image.height, rowStride: image.rowStride,
                layout: .rgb24)
            return try self.opinions.prepare(image: source, region: region, box: box)
        }
        return self.opinions.score(input)
    }
}

/// Why a picture could not be judged, in words (becomes the result's `error`).
struct ClassificationError: Error, CustomStringConvertible {
    let description: String
}
