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
