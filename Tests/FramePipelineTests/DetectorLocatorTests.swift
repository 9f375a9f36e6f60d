import CaptureKit
import FramePipeline
import Foundation
import LivenessEngine
import TestSupport
import Testing

/// DetectorLocator on the golden images: the face it judges is OpenCV FaceDetectorYN's (from
/// ../shared/golden/yunet, found at width 320) mapped back to frame pixels.
@Suite struct DetectorLocatorTests {
    struct Golden: Decodable {
        var faces: [[Double]]
    }

    @Test(arguments: ["live_astronaut.png", "live_selfie.png", "spoof_print.png", "spoof_screen.png"])
    func judgesTheGoldenFaceInFramePixels(name: String) throws {
        let locator = try DetectorLocator(modelURL: try TestAssets.file("models/yunet/face_detection_yunet.onnx"))
        let image = try ImageDecoder.decode(path: try TestAssets.file("golden/images/\(name)").path).image
        let golden = try JSONDecoder().decode(
            Golden.self, from: Data(contentsOf: try TestAssets.file("golden/yunet/\(name).json")))
        let frame = image.frame(sourceID: name)
        let (analysis, location) = image.pixels.withUnsafeBufferPointer { pixels in
            let source = PixelSource(
                base: pixels.baseAddress!, width: image.width, height: image.height, rowStride: image.rowStride,
                layout: .rgb24)
            return (locator.analyse(image: source, frame: frame), locator.locate(image: source, frame: frame))
        }
        let face = try #require(analysis.face)
        let expected = golden.faces.max { $0[2] * $0[3] < $1[2] * $1[3] }!
        let scale = Double(image.width) / 320
        // Our 320-wide picture is swscale's, the golden one OpenCV's resize: a few frame pixels apart.
        let tolerance = 3 * scale
        #expect(abs(face.x - expected[0] * scale) <= tolerance && abs(face.y - expected[1] * scale) <= tolerance)
        #expect(
            abs(face.width - expected[2] * scale) <= tolerance && abs(face.height - expected[3] * scale) <= tolerance)
        #expect(analysis.rejection == nil, "\(String(describing: analysis.measurements))")
        let crop = CropPolicy().crop(for: face, frameWidth: image.width, frameHeight: image.height)
        // The pair's box is the reference's for the detector's own float box (x, y truncated, w, h + 1).
        let box = try MiniFASNetCrop.referenceBox(
            x: face.x, y: face.y, width: face.width, height: face.height)
        guard case .face(let rect, let count, let pairBox?) = location else {
            Issue.record("\(name): \(location)")
            return
        }
        #expect(rect == crop && count == golden.faces.count)
        // Within one pixel: the pipeline keeps the box in Double, the reference divides in float32.
        #expect(abs(pairBox.x - box.x) <= 1 && abs(pairBox.y - box.y) <= 1, "\(pairBox) vs \(box)")
        #expect(abs(pairBox.width - box.width) <= 1 && abs(pairBox.height - box.height) <= 1, "\(pairBox) vs \(box)")
    }
}

/// Issue 14, "detect less, track between": a face box is reused for `trackingSeconds` of frame time while
/// the face stays where it was, and detected again as soon as it moves, time goes back, or the time is up.
@Suite struct DetectorTrackingTests {
    /// The golden selfie as frame `sequence` at `time`, its pixels shifted right by `shift` (wrapping).
    func frame(_ image: RGBImage, time: Double, shift: Int = 0, sequence: UInt64) -> (Frame, [UInt8]) {
        var pixels = image.pixels
        if shift != 0 {
            for row in 0..<image.height {
                let start = row * image.rowStride
                let line = Array(image.pixels[start..<(start + 3 * image.width)])
                for x in 0..<image.width {
                    let from = 3 * ((x - shift + image.width) % image.width)
                    pixels[start + 3 * x..<start + 3 * x + 3] = line[from..<from + 3]
                }
            }
        }
        let pool = FramePool(bufferSize: pixels.count, capacity: 1)
        let buffer = pool.acquire(waiting: false)!
        pixels.withUnsafeBytes { buffer.pointer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        let frame = Frame(
            buffer: buffer, pixelFormat: .rgb24, width: image.width, height: image.height,
            planes: [Frame.Plane(offset: 0, rowStride: image.rowStride, rows: image.height)],
            colour: ColourDescription(range: .full, matrix: .bt601), presentationTimeSeconds: time,
            captureTimeNanoseconds: 0, sequence: sequence, sourceID: "tracking")
        return (frame, pixels)
    }

    func analyse(
        _ locator: DetectorLocator, _ image: RGBImage, time: Double, shift: Int = 0
    )
        -> DetectorLocator.Analysis
    {
        let (frame, pixels) = self.frame(image, time: time, shift: shift, sequence: UInt64(time * 1000))
        return pixels.withUnsafeBufferPointer {
            locator.analyse(
                image: PixelSource(
                    base: $0.baseAddress!, width: image.width, height: image.height, rowStride: image.rowStride,
                    layout: .rgb24),
                frame: frame)
        }
    }

    @Test func stillFaceIsTrackedMovedFaceIsDetected() throws {
        var configuration = DetectorLocator.Configuration()
        configuration.trackingSeconds = 0.1
        let locator = try DetectorLocator(
            modelURL: try TestAssets.file("models/yunet/face_detection_yunet.onnx"), configuration: configuration)
        let image = try ImageDecoder.decode(path: try TestAssets.file("golden/images/live_selfie.png").path).image
        let first = self.analyse(locator, image, time: 10)
        #expect(first.face != nil && first.rejection == nil)
        // 30 fps, the face still: the next two frames reuse the box, the one 0.1 s later is detected.
        let second = self.analyse(locator, image, time: 10 + 1.0 / 30)
        let third = self.analyse(locator, image, time: 10 + 2.0 / 30)
        #expect((locator.detectedFrames, locator.trackedFrames) == (1, 2))
        #expect(second == first && third == first)
        _ = self.analyse(locator, image, time: 10.1)
        #expect((locator.detectedFrames, locator.trackedFrames) == (2, 2))
        // The face moved 40 pixels: detected at once, and the new box is where the face went.
        let moved = self.analyse(locator, image, time: 10.1 + 1.0 / 30, shift: 40)
        #expect((locator.detectedFrames, locator.trackedFrames) == (3, 2))
        let before = try #require(first.face)
        let after = try #require(moved.face)
        #expect(abs(after.x - before.x - 40) < 4, "\(before) → \(after)")
        // Time went back (a looped file): detected.
        _ = self.analyse(locator, image, time: 1, shift: 40)
        #expect((locator.detectedFrames, locator.trackedFrames) == (4, 2))
    }

    @Test func noTrackingDetectsEveryFrame() throws {
        let locator = try DetectorLocator(modelURL: try TestAssets.file("models/yunet/face_detection_yunet.onnx"))
        let image = try ImageDecoder.decode(path: try TestAssets.file("golden/images/live_selfie.png").path).image
        for index in 0..<3 { _ = self.analyse(locator, image, time: Double(index) / 30) }
        #expect((locator.detectedFrames, locator.trackedFrames) == (3, 0))
        #expect(DetectorLocator.Configuration().trackingSeconds == 0)
    }
}
