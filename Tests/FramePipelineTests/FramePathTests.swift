import CaptureKit
import FramePipeline
import Foundation
import LivenessEngine
import TestSupport
import Testing

/// The frame path's reused buffers give the same bytes as the allocating calls they replace.
@Suite struct FramePathTests {
    /// swscale straight into a padded picture equals the converter's scratch-and-copy path, row for row,
    /// for the model's RGB and the detector's small BGR (one picture reused for both sizes).
    @Test func paddedConversionMatchesTheCopiedOne() throws {
        let frames = try FrameAllocationTests.frames(count: 4)
        let converter = PixelConverter()
        let padded = PixelConverter()
        let picture = PaddedPicture()
        for frame in frames {
            let sizes: [(PixelConverter.Target, Int, Int)] = [
                (.rgb24, 640, 480), (.bgr24, 320, 240), (.gray8, 640, 480),
            ]
            for (target, width, height) in sizes {
                let copied = try converter.convert(frame, to: target, width: width, height: height)
                try padded.convert(frame, to: target, width: width, height: height, into: picture)
                #expect(picture.width == width && picture.height == height)
                #expect(picture.rowStride >= width * target.bytesPerPixel + 64)
                let rowBytes = width * target.bytesPerPixel
                let rows = (0..<height).map { row in
                    Array(UnsafeBufferPointer(start: picture.pointer + row * picture.rowStride, count: rowBytes))
                }
                #expect(Array(rows.joined()) == copied, "\(target) \(width)x\(height)")
            }
        }
    }

    /// One preprocessing scratch reused across crops of changing size gives what a fresh one gives.
    @Test func reusedPreprocessingScratchMatchesAFreshOne() throws {
        let frames = try FrameAllocationTests.frames(count: 1)
        let rgb = try PixelConverter().convert(frames[0], to: .rgb24)
        let preprocessor = Preprocessor()
        let scratch = Preprocessor.Scratch()
        let regions = [
            PixelRect(x: 100, y: 40, width: 300, height: 300), PixelRect(x: 0, y: 0, width: 640, height: 480),
            PixelRect(x: 180, y: 90, width: 181, height: 181), PixelRect(x: 100, y: 40, width: 300, height: 300),
            PixelRect(x: 10, y: 300, width: 120, height: 170),
        ]
        rgb.withUnsafeBufferPointer { pixels in
            let image = PixelSource(
                base: pixels.baseAddress!, width: 640, height: 480, rowStride: 640 * 3, layout: .rgb24)
            var output = [UInt8](repeating: 0, count: 224 * 224)
            for region in regions {
                let crop = image.cropped(to: region)
                output.withUnsafeMutableBufferPointer {
                    preprocessor.lumaCrop(crop, into: $0.baseAddress!, scratch: scratch)
                }
                #expect(output == preprocessor.lumaCrop(crop), "\(region)")
            }
        }
    }
}
