import CaptureKit
import Foundation
import LivenessEngine
import TestSupport
import Testing

import FramePipeline

/// Decode → preprocess → model against the PyTorch reference (../shared/golden/preprocess, exif).
@Suite struct GoldenPipelineTests {
    /// A model per test: LivenessViT owns scratch buffers and is not shared across threads.
    static func loadModel() throws -> LivenessViT { try LivenessViT(contentsOf: try TestAssets.modelURL) }

    static func images() throws -> [String] {
        try TestAssets.files(in: "golden/images", suffix: ".png").map(\.lastPathComponent)
    }

    func source(_ image: RGBImage, _ body: (PixelSource) -> Void) {
        image.pixels.withUnsafeBufferPointer {
            body(
                PixelSource(
                    base: $0.baseAddress!, width: image.width, height: image.height, rowStride: image.rowStride,
                    layout: .rgb24))
        }
    }

    /// The preprocessed tensor equals torchvision's to float rounding (the resize is PIL's own
    /// fixed-point arithmetic); the bound is 0.02 in normalised units.
    @Test(arguments: try GoldenPipelineTests.images())
    func preprocessingMatchesTorchvision(_ name: String) throws {
        let (image, _) = try ImageDecoder.decode(path: try TestAssets.file("golden/images/\(name)").path)
        let expected = try TestAssets.float32(try TestAssets.file("golden/preprocess/\(name).f32"))
        var tensor: [Float] = []
        self.source(image) { tensor = Preprocessor().tensor($0) }
        let difference = TestAssets.maxAbsDifference(tensor, expected)
        #expect(difference <= 0.02)
        #expect(difference <= 1e-5, "\(name): not bit-exact with PIL, max abs difference \(difference)")
    }

    @Test(arguments: try GoldenPipelineTests.images())
    func probabilityMatchesReference(_ name: String) throws {
        let model = try Self.loadModel()
        let classifier = ImageClassifier(opinions: Opinions(vit: model, pair: nil), threshold: model.threshold)
        let result = classifier.classify(path: try TestAssets.file("golden/images/\(name)").path)
        let expected = try TestAssets.json(try TestAssets.file("golden/preprocess/\(name).json"))
        let reference = expected["spoof_probability"] as? Double ?? .nan
        let probability = try #require(result.spoofProbability, "\(result)")
        #expect(abs(probability - reference) <= 0.005, "\(name): \(probability) vs \(reference)")
        #expect(result.decision == expected["decision"] as? String)
    }

    /// Feeding a luma plane (as camera frames will) instead of RGB moves the resize before the
    /// grey conversion, so the 8-bit intermediates round differently. Measured on the golden
    /// images: at most 2 grey levels (0.035 normalised) and 0.0214 in spoof probability
    /// (live_silentface: 0.8563 vs 0.8350), decisions unchanged. These bounds hold that measurement;
    /// the RGB path above is the exact one.
    @Test(arguments: try GoldenPipelineTests.images())
    func lumaInputStaysWithinTolerance(_ name: String) throws {
        let model = try Self.loadModel()
        let (image, _) = try ImageDecoder.decode(path: try TestAssets.file("golden/images/\(name)").path)
        let luma = stride(from: 0, to: image.pixels.count, by: 3).map { index -> UInt8 in
            let r = UInt32(image.pixels[index])
            let g = UInt32(image.pixels[index + 1])
            let b = UInt32(image.pixels[index + 2])
            return UInt8((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16)
        }
        let tensor = luma.withUnsafeBufferPointer {
            Preprocessor().tensor(
                PixelSource(
                    base: $0.baseAddress!, width: image.width, height: image.height, rowStride: image.width,
                    layout: .luma8))
        }
        let expected = try TestAssets.float32(try TestAssets.file("golden/preprocess/\(name).f32"))
        #expect(TestAssets.maxAbsDifference(tensor, expected) <= 2.05 / 255 / 0.224)
        let golden = try TestAssets.json(try TestAssets.file("golden/preprocess/\(name).json"))
        let reference = golden["spoof_probability"] as? Double ?? .nan
        let probability = model.spoofProbabilities(input: tensor, batch: 1)[0]
        #expect(abs(probability - reference) <= 0.025, "\(name): \(probability) vs \(reference)")
        #expect((probability >= model.threshold ? "SPOOF" : "LIVE") == golden["decision"] as? String)
    }

    /// The product path (8-bit grey crop, normalisation folded into the patch embedding) gives the
    /// logits of the reference path (normalised 3-channel tensor) to float rounding, batched too.
    @Test func foldedLumaPathMatchesTensorPath() throws {
        let model = try Self.loadModel()
        let preprocessor = Preprocessor()
        var crops: [UInt8] = []
        var tensors: [Float] = []
        let names = try Self.images()
        for name in names {
            let (image, _) = try ImageDecoder.decode(path: try TestAssets.file("golden/images/\(name)").path)
            self.source(image) { source in
                crops += preprocessor.lumaCrop(source)
                tensors += preprocessor.tensor(source)
            }
        }
        var viaTensor = [Float](repeating: 0, count: 2 * names.count)
        var viaLuma = [Float](repeating: 0, count: 2 * names.count)
        tensors.withUnsafeBufferPointer { input in
            viaTensor.withUnsafeMutableBufferPointer {
                model.logits(input: input.baseAddress!, batch: names.count, into: $0.baseAddress!)
            }
        }
        crops.withUnsafeBufferPointer { input in
            viaLuma.withUnsafeMutableBufferPointer {
                model.logits(lumaCrops: input.baseAddress!, batch: names.count, into: $0.baseAddress!)
            }
        }
        #expect(TestAssets.maxAbsDifference(viaTensor, viaLuma) <= 1e-4)
    }

    /// The EXIF-rotated JPEG gets the probability of its upright picture.
    @Test func exifOrientedJPEG() throws {
        let model = try Self.loadModel()
        let result = ImageClassifier(opinions: Opinions(vit: model, pair: nil), threshold: model.threshold)
            .classify(path: try TestAssets.file("golden/exif/spoof_print_exif6.jpg").path)
        let expected = try TestAssets.json(try TestAssets.file("golden/exif/spoof_print_exif6.jpg.json"))
        #expect(result.exifOrientation == 6)
        #expect(result.width == 480 && result.height == 640)
        let probability = try #require(result.spoofProbability)
        #expect(abs(probability - (expected["spoof_probability"] as? Double ?? .nan)) <= 0.005)
        #expect(result.decision == expected["decision"] as? String)
    }
}
