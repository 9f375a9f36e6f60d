import CaptureKit
import Foundation
import TestSupport
import Testing

@Suite struct ImageDecoderTests {
    @Test func decodesPNGAtFullSize() throws {
        let (image, orientation) = try ImageDecoder.decode(
            path: try TestAssets.file("golden/images/live_selfie.png").path)
        #expect(image.width == 1944 && image.height == 2592)
        #expect(orientation == .up)
        #expect(image.pixels.count == 1944 * 2592 * 3)
    }

    /// A JPEG stored sideways with EXIF orientation 6 comes out upright, like PIL's exif_transpose.
    @Test func appliesEXIFOrientation() throws {
        let (image, orientation) = try ImageDecoder.decode(
            path: try TestAssets.file("golden/exif/spoof_print_exif6.jpg").path)
        #expect(orientation == .right)
        #expect(image.width == 480 && image.height == 640)
        let (upright, _) = try ImageDecoder.decode(
            path: try TestAssets.file("golden/exif/spoof_print_exif6.upright.png").path)
        #expect(upright.width == image.width && upright.height == image.height)
        // JPEG is decoded as PIL decodes it (libjpeg-turbo), so the pixels are PIL's exactly.
        #expect(image.pixels == upright.pixels)
    }

    /// The eight EXIF orientations on a 3×2 picture whose pixels are numbered 0…5.
    @Test func orientationTransforms() {
        let stored = RGBImage(width: 3, height: 2, pixels: (0..<6).flatMap { [UInt8($0), 0, 0] })
        func red(_ image: RGBImage) -> [UInt8] {
            stride(from: 0, to: image.pixels.count, by: 3).map { image.pixels[$0] }
        }
        // stored:  0 1 2
        //          3 4 5
        #expect(red(Orientation.up.apply(to: stored)) == [0, 1, 2, 3, 4, 5])
        #expect(red(Orientation.upMirrored.apply(to: stored)) == [2, 1, 0, 5, 4, 3])
        #expect(red(Orientation.down.apply(to: stored)) == [5, 4, 3, 2, 1, 0])
        #expect(red(Orientation.downMirrored.apply(to: stored)) == [3, 4, 5, 0, 1, 2])
        // Orientation 6: rotate 90° clockwise → 2 wide, 3 tall.
        let right = Orientation.right.apply(to: stored)
        #expect(right.width == 2 && right.height == 3)
        #expect(red(right) == [3, 0, 4, 1, 5, 2])
        #expect(red(Orientation.left.apply(to: stored)) == [2, 5, 1, 4, 0, 3])
        #expect(red(Orientation.leftMirrored.apply(to: stored)) == [0, 3, 1, 4, 2, 5])
        #expect(red(Orientation.rightMirrored.apply(to: stored)) == [5, 2, 4, 1, 3, 0])
    }

    func expectFailure(_ path: String, _ codes: [CaptureError.Code]) {
        do {
            _ = try ImageDecoder.decode(path: path)
            Issue.record("\(path) decoded, expected an error")
        } catch let error as CaptureError {
            #expect(codes.contains(error.code), "\(error)")
            #expect(error.description.hasPrefix(path))
            #expect(!error.message.isEmpty)
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test func badInputsGiveClearErrors() throws {
        let directory = try TestAssets.temporaryDirectory()
        self.expectFailure(directory.appendingPathComponent("missing.png").path, [.notFound])
        let empty = directory.appendingPathComponent("empty.jpg")
        FileManager.default.createFile(atPath: empty.path, contents: Data())
        self.expectFailure(empty.path, [.unsupportedFormat, .noVideo, .decodeFailed])
        let text = directory.appendingPathComponent("notes.png")
        try "this is not a picture\n".write(to: text, atomically: true, encoding: .utf8)
        self.expectFailure(text.path, [.unsupportedFormat, .noVideo, .decodeFailed])
        // Half a PNG: the decoder sees damaged data and must say so, not crash.
        let png = try Data(contentsOf: try TestAssets.file("golden/images/live_astronaut.png"))
        let truncated = directory.appendingPathComponent("half.png")
        try png.prefix(png.count / 2).write(to: truncated)
        do {
            let (image, _) = try ImageDecoder.decode(path: truncated.path)
            // FFmpeg may conceal the missing rows; then the size must still be right.
            #expect(image.width == 512 && image.height == 512)
        } catch let error as CaptureError {
            #expect(error.code == .decodeFailed || error.code == .unsupportedFormat, "\(error)")
        }
    }
}
