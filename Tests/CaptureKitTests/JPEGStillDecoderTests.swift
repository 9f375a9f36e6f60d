import CaptureKit
import Foundation
import Synchronization
import TestSupport
import Testing

/// Still JPEG files decoded with libjpeg-turbo, as the reference (PIL) decodes them.
@Suite struct JPEGStillDecoderTests {
    /// golden/exif/*.upright.png was written by PIL from its own decode of the JPEG, turned upright:
    /// libjpeg-turbo with PIL's settings must give exactly those pixels.
    @Test func exifJPEGMatchesPILPixelForPixel() throws {
        let jpeg = try TestAssets.file("golden/exif/spoof_print_exif6.jpg").path
        #expect(JPEGStillDecoder.isJPEGFile(jpeg))
        let (image, orientation) = try ImageDecoder.decode(path: jpeg)
        #expect(orientation == .right)
        let png = try TestAssets.file("golden/exif/spoof_print_exif6.upright.png").path
        let (upright, _) = try ImageDecoder.decode(path: png)
        #expect(image.width == 480 && image.height == 640)
        #expect(image == upright, "differs from PIL's decode")
    }

    /// MediaSource (eval's path) delivers the same upright pixels as one RGB24 frame, then ends.
    @Test func mediaSourceDeliversTheSamePixels() throws {
        let jpeg = try TestAssets.file("golden/exif/spoof_print_exif6.jpg").path
        let (expected, _) = try ImageDecoder.decode(path: jpeg)
        let pixels = Mutex<[UInt8]?>(nil)
        let format = Mutex<PixelFormat?>(nil)
        let ended = Mutex<[SourceEnd]>([])
        let done = DispatchSemaphore(value: 0)
        var options = MediaSource.Options()
        options.attachRGB24 = true
        let source = MediaSource(location: jpeg, options: options)
        try source.start { event in
            switch event {
            case .frame(let frame):
                let rgb = try? PixelConverter().convert(frame, to: .rgb24)
                format.withLock { $0 = frame.pixelFormat }
                pixels.withLock { $0 = rgb }
            case .ended(let end):
                ended.withLock { $0.append(end) }
                done.signal()
            default:
                break
            }
        }
        #expect(done.wait(timeout: .now() + 60) == .success)
        source.stop()
        #expect(format.withLock { $0 } == .rgb24)
        #expect(pixels.withLock { $0 } == expected.pixels)
        #expect(ended.withLock { $0 } == [.endOfFile])
    }

    func expectError(_ path: String, containing words: [String]) {
        for open in [{ _ = try ImageDecoder.decode(path: path) }, { try MediaSource(location: path).start { _ in } }] {
            do {
                try open()
                Issue.record("\(path) opened, expected an error")
            } catch let error as CaptureError {
                #expect(error.code == .decodeFailed, "\(error)")
                #expect(error.description.hasPrefix(path))
                for word in words { #expect(error.message.contains(word), "\(error)") }
            } catch {
                Issue.record("unexpected error \(error)")
            }
        }
    }

    /// A file that starts like a JPEG but is not one, and one cut in half (PIL: "image file is truncated").
    @Test func corruptAndTruncatedJPEGsGiveClearErrors() throws {
        let directory = try TestAssets.temporaryDirectory()
        let junk = directory.appendingPathComponent("junk.png")  // detected by content, not by name
        try Data([0xFF, 0xD8, 0xFF, 0xE0] + Array(repeating: 0x42, count: 200)).write(to: junk)
        self.expectError(junk.path, containing: ["JPEG", "damaged"])
        let jpeg = try Data(contentsOf: try TestAssets.file("golden/exif/spoof_print_exif6.jpg"))
        let half = directory.appendingPathComponent("half.jpg")
        try jpeg.prefix(jpeg.count / 2).write(to: half)
        self.expectError(half.path, containing: ["truncated"])
    }
}
