import Foundation
import Testing
import TestSupport

@testable import LivenessEngine

/// One `golden/silentface/<case>.json` (the reference's `crop_box` inputs and outputs).
struct SilentFaceCase: Sendable, CustomStringConvertible {
    struct Model: Sendable {
        var name: String
        var scale: Double
        var rect: MiniFASNetCrop.Rect
    }

    var name: String
    var source: String
    var frameWidth: Int
    var frameHeight: Int
    var box: MiniFASNetCrop.Box
    var models: [Model]

    var description: String { self.name }

    /// The image cases (the `random*` files are model goldens, not crops).
    static func all() throws -> [SilentFaceCase] {
        try TestAssets.files(in: "golden/silentface", suffix: ".json")
            .filter { !$0.lastPathComponent.hasPrefix("random") }
            .map { try SilentFaceCase(url: $0) }
    }

    init(url: URL) throws {
        struct Bad: Error { var file: String }
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: url))
        guard let json = object as? [String: Any], let source = json["source"] as? String,
            let size = json["frame_size"] as? [Int], size.count == 2, let box = json["box"] as? [Int], box.count == 4,
            let models = json["models"] as? [[String: Any]]
        else { throw Bad(file: url.path) }
        self.name = url.deletingPathExtension().lastPathComponent
        self.source = source
        self.frameWidth = size[0]
        self.frameHeight = size[1]
        self.box = MiniFASNetCrop.Box(x: box[0], y: box[1], width: box[2], height: box[3])
        self.models = try models.map { model in
            guard let name = model["name"] as? String, let scale = (model["scale"] as? NSNumber)?.doubleValue,
                let rect = model["rect"] as? [Int], rect.count == 4
            else { throw Bad(file: url.path) }
            return Model(
                name: name, scale: scale,
                rect: MiniFASNetCrop.Rect(left: rect[0], top: rect[1], right: rect[2], bottom: rect[3]))
        }
    }
}

@Suite struct MiniFASNetCropTests {
    // MARK: The crop rectangle

    @Test func goldenRectsForBothScales() throws {
        let cases = try SilentFaceCase.all()
        #expect(cases.count == 8)
        for golden in cases {
            #expect(golden.models.map(\.scale) == [2.7, 4.0], "\(golden)")
            for model in golden.models {
                let rect = try MiniFASNetCrop.cropRect(
                    frameWidth: golden.frameWidth, frameHeight: golden.frameHeight, box: golden.box, scale: model.scale)
                #expect(rect == model.rect, "\(golden) \(model.name)")
            }
        }
    }

    /// Expected values from the reference's `crop_box` (Python).
    @Test(arguments: [
        ((5, 200), 2.7, MiniFASNetCrop.Rect(left: 0, top: 98, right: 270, bottom: 422)),  // left edge
        ((300, 3), 2.7, MiniFASNetCrop.Rect(left: 215, top: 0, right: 485, bottom: 324)),  // top edge
        ((590, 200), 2.7, MiniFASNetCrop.Rect(left: 369, top: 98, right: 639, bottom: 422)),  // right edge
        ((300, 400), 2.7, MiniFASNetCrop.Rect(left: 215, top: 155, right: 485, bottom: 479)),  // bottom edge
        ((-30, -20), 2.7, MiniFASNetCrop.Rect(left: 0, top: 0, right: 270, bottom: 324)),  // box starts outside
        ((600, 450), 2.7, MiniFASNetCrop.Rect(left: 369, top: 155, right: 639, bottom: 479)),  // box ends outside
        // 4 × 120 rows do not fit 480: the scale is capped at 479 / 120 and the crop spans the whole height.
        ((300, 200), 4.0, MiniFASNetCrop.Rect(left: 150, top: 0, right: 549, bottom: 479)),
    ])
    func boxNearTheBorders(origin: (Int, Int), scale: Double, expected: MiniFASNetCrop.Rect) throws {
        let box = MiniFASNetCrop.Box(x: origin.0, y: origin.1, width: 100, height: 120)
        let rect = try MiniFASNetCrop.cropRect(frameWidth: 640, frameHeight: 480, box: box, scale: scale)
        #expect(rect == expected)
    }

    @Test func scaleCappedByTheFrameAndTinyBoxes() throws {
        let whole = try MiniFASNetCrop.cropRect(
            frameWidth: 100, frameHeight: 100, box: .init(x: 10, y: 10, width: 80, height: 80), scale: 4)
        #expect(whole == MiniFASNetCrop.Rect(left: 0, top: 0, right: 99, bottom: 99))
        // A box larger than the frame (as the golden live_manikantha) still gives a crop inside it.
        let larger = try MiniFASNetCrop.cropRect(
            frameWidth: 194, frameHeight: 267, box: .init(x: 0, y: 7, width: 201, height: 270), scale: 2.7)
        #expect(larger == MiniFASNetCrop.Rect(left: 0, top: 6, right: 193, bottom: 266))
        let tiny = try MiniFASNetCrop.cropRect(
            frameWidth: 640, frameHeight: 480, box: .init(x: 300, y: 200, width: 1, height: 1), scale: 2.7)
        #expect(tiny == MiniFASNetCrop.Rect(left: 299, top: 199, right: 301, bottom: 201))
        let single = try MiniFASNetCrop.cropRect(
            frameWidth: 1, frameHeight: 1, box: .init(x: 0, y: 0, width: 1, height: 1), scale: 2.7)
        #expect(single == MiniFASNetCrop.Rect(left: 0, top: 0, right: 0, bottom: 0))
    }

    @Test func oddInputThrowsInsteadOfTrapping() {
        let box = MiniFASNetCrop.Box(x: 10, y: 10, width: 50, height: 50)
        #expect(throws: MiniFASNetCrop.Failure.self) {
            try MiniFASNetCrop.cropRect(frameWidth: 0, frameHeight: 480, box: box, scale: 2.7)
        }
        #expect(throws: MiniFASNetCrop.Failure.self) {
            let empty = MiniFASNetCrop.Box(x: 1, y: 1, width: 0, height: 9)
            return try MiniFASNetCrop.cropRect(frameWidth: 640, frameHeight: 480, box: empty, scale: 2.7)
        }
        for scale: Double in [0, -1, .nan, .infinity] {
            #expect(throws: MiniFASNetCrop.Failure.self) {
                try MiniFASNetCrop.cropRect(frameWidth: 640, frameHeight: 480, box: box, scale: scale)
            }
        }
        #expect(throws: MiniFASNetCrop.Failure.self) {
            try MiniFASNetCrop.referenceBox(x: .nan, y: 0, width: 1, height: 1)
        }
        var pixels = [UInt8](repeating: 0, count: 4 * 4 * 3)
        var output = [UInt8](repeating: 0, count: 80 * 80 * 3)
        pixels.withUnsafeBufferPointer { pixels in
            let source = PixelSource(base: pixels.baseAddress!, width: 4, height: 4, rowStride: 12, layout: .rgb24)
            for rect in [
                MiniFASNetCrop.Rect(left: 2, top: 0, right: 1, bottom: 3),  // empty
                MiniFASNetCrop.Rect(left: 0, top: 0, right: 4, bottom: 3),  // past the right edge
                MiniFASNetCrop.Rect(left: -1, top: 0, right: 3, bottom: 3),
            ] {
                var failure: MiniFASNetCrop.Failure?
                do {
                    try MiniFASNetCrop.resizeLinear(source: source, rect: rect, swapRB: true, into: &output)
                } catch {
                    failure = error as? MiniFASNetCrop.Failure
                }
                #expect(failure != nil, "\(rect)")
            }
            let luma = PixelSource(base: pixels.baseAddress!, width: 4, height: 4, rowStride: 4, layout: .luma8)
            #expect(throws: MiniFASNetCrop.Failure.self) {
                _ = try MiniFASNetCrop(image: luma, box: .init(x: 0, y: 0, width: 2, height: 2), scale: 2.7)
            }
        }
    }

    // MARK: The detector's box

    @Test func referenceBoxTruncatesAndAddsOne() throws {
        #expect(
            try MiniFASNetCrop.referenceBox(x: 12.9, y: 7.2, width: 99.99, height: 50)
                == MiniFASNetCrop.Box(x: 12, y: 7, width: 100, height: 51))
        // int() truncates toward zero, so a box starting just outside the frame starts at 0.
        #expect(
            try MiniFASNetCrop.referenceBox(x: -0.7, y: -3.5, width: 10.5, height: 10.5)
                == MiniFASNetCrop.Box(x: 0, y: -3, width: 11, height: 11))
        #expect(
            try MiniFASNetCrop.referenceBox(FaceBox(x: 1.5, y: 2.5, width: 3.5, height: 4.5))
                == MiniFASNetCrop.Box(x: 1, y: 2, width: 4, height: 5))
        // 512-wide frame, detection at 320: s = float32(0.625); float32 quotients, as NumPy 2 computes them.
        let face = DetectedFace(x: 111.875, y: 38.75, width: 56.25, height: 70, landmarks: [], score: 0.9)
        #expect(
            try MiniFASNetCrop.referenceBox(detected: face, frameWidth: 512, detectionWidth: 320)
                == MiniFASNetCrop.Box(x: 179, y: 62, width: 91, height: 113))
    }

    // MARK: OpenCV's INTER_LINEAR

    /// 2 × 2 → 4 × 4, values from `cv2.resize` (OpenCV 5.0.0), matching the fixed-point arithmetic by hand:
    /// e.g. row 1, column 1: horizontal 0·1536 + 100·512 and 200·1536 + 40·512, vertical
    /// ((51200 >> 4)·1536 >> 16) + ((327680 >> 4)·512 >> 16) = 75 + 160, (235 + 2) >> 2 = 59.
    @Test func twoByTwoToFourByFour() throws {
        let red: [UInt8] = [0, 100, 200, 40]
        let pixels: [UInt8] = [0, 1, 2, 3].flatMap { (i: Int) -> [UInt8] in [red[i], 7, 255 - red[i]] }
        let expectedRed: [UInt8] = [0, 25, 75, 100, 50, 59, 76, 85, 150, 126, 79, 55, 200, 160, 80, 40]
        let expectedBlue: [UInt8] = [255, 230, 180, 155, 205, 196, 179, 170, 105, 129, 176, 200, 55, 95, 175, 215]
        for swap in [false, true] {
            let output = try Self.resize(pixels, width: 2, height: 2, side: 4, swapRB: swap)
            let first = (0..<16).map { output[3 * $0] }
            let second = (0..<16).map { output[3 * $0 + 1] }
            let third = (0..<16).map { output[3 * $0 + 2] }
            #expect(first == (swap ? expectedBlue : expectedRed))
            #expect(second == [UInt8](repeating: 7, count: 16))
            #expect(third == (swap ? expectedRed : expectedBlue))
        }
    }

    @Test func constantImageStaysConstant() throws {
        for (width, height) in [(5, 3), (1, 1), (1, 80), (300, 7), (161, 160)] {
            let pixels = Self.repeated([10, 173, 255], count: width * height)
            let output = try Self.resize(pixels, width: width, height: height, side: 80, swapRB: true)
            #expect(output == Self.repeated([255, 173, 10], count: 6400), "\(width)×\(height)")
        }
    }

    @Test func sameSizeIsACopy() throws {
        var generator = DepthwiseKernelTests.SeededGenerator(state: 7)
        let pixels: [UInt8] = (0..<(80 * 80 * 3)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        #expect(try Self.resize(pixels, width: 80, height: 80, side: 80, swapRB: false) == pixels)
        let swapped = try Self.resize(pixels, width: 80, height: 80, side: 80, swapRB: true)
        var expected = pixels
        for i in 0..<6400 {
            expected.swapAt(3 * i, 3 * i + 2)
        }
        #expect(swapped == expected)
    }

    /// Exactly 2× down: OpenCV takes INTER_AREA's fast path, the rounded mean of each 2 × 2 block.
    @Test func twiceTheSizeIsTheRoundedMeanOfEachBlock() throws {
        var generator = DepthwiseKernelTests.SeededGenerator(state: 11)
        let pixels: [UInt8] = (0..<(160 * 160 * 3)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        let output = try Self.resize(pixels, width: 160, height: 160, side: 80, swapRB: false)
        for (y, x, c) in [(0, 0, 0), (5, 79, 2), (79, 40, 1)] {
            let i = (2 * y * 160 + 2 * x) * 3 + c
            let sum = Int(pixels[i]) + Int(pixels[i + 3]) + Int(pixels[i + 480]) + Int(pixels[i + 483])
            #expect(Int(output[(y * 80 + x) * 3 + c]) == (sum + 2) >> 2)
        }
    }

    /// A crop inside a larger frame with padded rows reads only the crop.
    @Test func cropOfAFrameWithRowPadding() throws {
        let (width, height, stride) = (7, 5, 7 * 3 + 5)
        var frame = [UInt8](repeating: 0, count: stride * height)
        for y in 0..<height {
            for x in 0..<width {
                let inside = (2...4).contains(x) && (1...3).contains(y)
                frame[y * stride + 3 * x] = inside ? 90 : 255
                frame[y * stride + 3 * x + 1] = inside ? 60 : 255
                frame[y * stride + 3 * x + 2] = inside ? 30 : 255
            }
        }
        var output = [UInt8](repeating: 0, count: 80 * 80 * 3)
        try frame.withUnsafeBufferPointer { frame in
            let source = PixelSource(
                base: frame.baseAddress!, width: width, height: height, rowStride: stride, layout: .rgb24)
            let rect = MiniFASNetCrop.Rect(left: 2, top: 1, right: 4, bottom: 3)
            try MiniFASNetCrop.resizeLinear(source: source, rect: rect, swapRB: true, into: &output)
        }
        #expect(output == Self.repeated([30, 60, 90], count: 6400))
    }

    static func repeated(_ pixel: [UInt8], count: Int) -> [UInt8] {
        [[UInt8]](repeating: pixel, count: count).flatMap { $0 }
    }

    static func resize(_ pixels: [UInt8], width: Int, height: Int, side: Int, swapRB: Bool) throws -> [UInt8] {
        var output = [UInt8](repeating: 0, count: side * side * 3)
        try pixels.withUnsafeBufferPointer { pixels in
            let source = PixelSource(
                base: pixels.baseAddress!, width: width, height: height, rowStride: width * 3, layout: .rgb24)
            let rect = MiniFASNetCrop.Rect(left: 0, top: 0, right: width - 1, bottom: height - 1)
            try MiniFASNetCrop.resizeLinear(source: source, rect: rect, outputSide: side, swapRB: swapRB, into: &output)
        }
        return output
    }
}
