import CaptureKit
import Foundation
import LivenessEngine
import TestSupport
import Testing

/// MiniFASNetCrop on the decoded sample images against the reference's crops
/// (`../shared/golden/silentface/<case>.<model>.crop.bgr`, cv2.resize of the PIL-decoded frame). Here because
/// it needs both CaptureKit's decoder and LivenessEngine.
@Suite struct MiniFASNetCropGoldenTests {
    struct Case: Decodable, CustomStringConvertible {
        struct Model: Decodable {
            var name: String
            var scale: Double
            var rect: [Int]
        }

        var source: String
        var frame_size: [Int]
        var box: [Int]
        var models: [Model]
        var description: String { self.source }
    }

    static func cases() throws -> [(name: String, golden: Case)] {
        try TestAssets.files(in: "golden/silentface", suffix: ".json")
            .filter { !$0.lastPathComponent.hasPrefix("random") }
            .map { url -> (name: String, golden: Case) in
                let golden = try JSONDecoder().decode(Case.self, from: Data(contentsOf: url))
                return (url.deletingPathExtension().lastPathComponent, golden)
            }
    }

    @Test func cropsMatchTheReference() throws {
        let cases = try Self.cases()
        #expect(cases.count == 8)
        for (name, golden) in cases {
            let image = try ImageDecoder.decode(path: try TestAssets.file(golden.source).path).image
            #expect([image.width, image.height] == golden.frame_size, "\(name)")
            guard [image.width, image.height] == golden.frame_size else { continue }
            let box = MiniFASNetCrop.Box(
                x: golden.box[0], y: golden.box[1], width: golden.box[2], height: golden.box[3])
            for model in golden.models {
                let crop = try image.pixels.withUnsafeBufferPointer { pixels in
                    let source = PixelSource(
                        base: pixels.baseAddress!, width: image.width, height: image.height, rowStride: image.rowStride,
                        layout: .rgb24)
                    return try MiniFASNetCrop(image: source, box: box, scale: model.scale)
                }
                let rect = crop.rect
                #expect([rect.left, rect.top, rect.right, rect.bottom] == model.rect, "\(name) \(model.name)")
                let expected = [UInt8](
                    try Data(contentsOf: try TestAssets.file("golden/silentface/\(name).\(model.name).crop.bgr")))
                #expect(expected.count == crop.bgr.count)
                let differences = zip(crop.bgr, expected).map { abs(Int($0) - Int($1)) }
                let largest = differences.max() ?? 0
                let count = differences.filter { $0 != 0 }.count
                let mean = Double(differences.reduce(0, +)) / Double(max(1, differences.count))
                // Stills decode as PIL decodes them (PNG: FFmpeg; JPEG: libjpeg-turbo, ISLOW + fancy
                // upsampling), so every crop is byte for byte the reference's. With FFmpeg's own JPEG decoder
                // they differed by up to 30 levels (its 4:2:0 chroma upsampling is not libjpeg's).
                #expect(
                    crop.bgr == expected,
                    "\(name) \(model.name): \(count) bytes differ, by up to \(largest), mean \(mean)")
                print(
                    "MiniFASNetCrop \(name) \(model.name): rect \(rect), \(count) of \(expected.count) bytes differ,"
                        + " max \(largest), mean \(mean)")
            }
        }
    }
}
