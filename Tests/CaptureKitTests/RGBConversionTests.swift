import CPixelKernels
import Foundation
import Synchronization
import TestSupport
import Testing

@testable import CaptureKit

/// The hand-written YUV 4:2:0 → RGB24 converter (CPixelKernels) against swscale, which it replaces on the
/// accurate path: the same bytes on every frame of real clips and on random planes, on every code path.
@Suite struct RGBConversionTests {
    /// PixelConverters for one comparison: swscale, the hand-written one on this CPU's best path, and on
    /// the portable scalar path. Used by one thread at a time (a source's decode thread), as PixelConverter
    /// requires.
    final class Converters: @unchecked Sendable {
        let swscale = PixelConverter()
        let best = PixelConverter()
        let scalar = PixelConverter()

        init() {
            self.swscale.handWrittenRGBEnabled = false
            self.best.handWrittenRGBEnabled = true
            self.scalar.handWrittenRGBEnabled = true
            self.scalar.rgbPath = CPK_PATH_SCALAR
        }

        /// Differences (0 or 1 each) of the best and scalar paths from swscale on `frame`.
        func mismatches(_ frame: Frame) throws -> (best: Int, scalar: Int) {
            let reference = try self.swscale.convert(frame, to: .rgb24)
            let best = try self.best.convert(frame, to: .rgb24)
            let scalar = try self.scalar.convert(frame, to: .rgb24)
            return (best == reference ? 0 : 1, scalar == reference ? 0 : 1)
        }
    }

    struct Tally {
        var frames = 0
        var bestMismatches = 0
        var scalarMismatches = 0
        var formats: Set<String> = []
        var conversionErrors: [String] = []
    }

    static let clips = [
        "samples/spoof/pad-tdreplay__630b6ba7_replay_video.mp4",  // BT.601 (bt470bg), limited range, rotated
        "samples/live/gen-facerec__short_hamilton_clip.mp4",  // BT.709, limited range
        "samples/live/pad-tdreal__622e5d6b_live_video.mp4",  // yuvj420p: BT.601, full range
    ]

    @Test(arguments: RGBConversionTests.clips)
    func everyFrameOfAClipMatchesSwscale(_ clip: String) throws {
        let path = try TestAssets.file(clip).path
        let converters = Converters()
        let tally = Mutex(Tally())
        let done = DispatchSemaphore(value: 0)
        let source = MediaSource(location: path)
        try source.start { event in
            switch event {
            case .frame(let frame):
                do {
                    let (best, scalar) = try converters.mismatches(frame)
                    tally.withLock {
                        $0.frames += 1
                        $0.bestMismatches += best
                        $0.scalarMismatches += scalar
                        $0.formats.insert(
                            "\(frame.pixelFormat) \(frame.width)x\(frame.height) \(frame.colour.range) \(frame.colour.matrix)"
                        )
                    }
                } catch {
                    tally.withLock { $0.conversionErrors.append("\(error)") }
                }
            case .ended:
                done.signal()
            default:
                break
            }
        }
        let finished = done.wait(timeout: .now() + 120) == .success
        source.stop()
        #expect(finished, "\(clip) did not end within 120 s")
        let result = tally.withLock { $0 }
        #expect(result.conversionErrors.isEmpty, "\(result.conversionErrors.prefix(3))")
        #expect(result.frames > 100, "only \(result.frames) frames from \(clip)")
        #expect(result.formats.allSatisfy { $0.hasPrefix("yuv420p ") }, "\(result.formats)")
        #expect(result.bestMismatches == 0, "\(result.bestMismatches) of \(result.frames) frames differ (best path)")
        #expect(result.scalarMismatches == 0, "\(result.scalarMismatches) of \(result.frames) frames differ (scalar)")
    }

    /// A yuv420p frame of random planes (rows padded past the width, as decoders give them); `extremes`
    /// draws only 0 and 255, which drives the clipping (and swscale's 32-bit wrap-around) hard.
    static func randomFrame(
        width: Int, height: Int, range: ColourDescription.Range, matrix: ColourDescription.Matrix, extremes: Bool,
        generator: inout some RandomNumberGenerator
    ) -> Frame {
        let chromaWidth = (width + 1) / 2
        let chromaHeight = (height + 1) / 2
        let lumaStride = width + 37
        let chromaStride = chromaWidth + 19
        let planes = [
            Frame.Plane(offset: 0, rowStride: lumaStride, rows: height),
            Frame.Plane(offset: lumaStride * height, rowStride: chromaStride, rows: chromaHeight),
            Frame.Plane(
                offset: lumaStride * height + chromaStride * chromaHeight, rowStride: chromaStride, rows: chromaHeight),
        ]
        let size = lumaStride * height + 2 * chromaStride * chromaHeight
        let pool = FramePool(bufferSize: size, capacity: 1)
        let buffer = pool.acquire(waiting: false)!
        let bytes = buffer.pointer.assumingMemoryBound(to: UInt8.self)
        for index in 0..<size {
            bytes[index] =
                extremes ? (Bool.random(using: &generator) ? 255 : 0) : UInt8.random(in: 0...255, using: &generator)
        }
        return Frame(
            buffer: buffer, pixelFormat: .yuv420p, width: width, height: height, planes: planes,
            colour: ColourDescription(range: range, matrix: matrix), presentationTimeSeconds: 0,
            captureTimeNanoseconds: 0, sequence: 0, sourceID: "random")
    }

    static let sizes: [(Int, Int)] = [
        (1, 1), (2, 2), (3, 3), (1, 7), (7, 1), (5, 3), (9, 9), (15, 17), (16, 16), (17, 15), (33, 31), (63, 65),
        (101, 77), (161, 121), (321, 241), (639, 481), (640, 480), (641, 479),
    ]

    @Test func randomPlanesOfOddAndEvenSizesMatchSwscale() throws {
        var generator = SeededRandom(seed: 20_261_201)
        let converters = Converters()
        var failures: [String] = []
        for (width, height) in Self.sizes {
            for range in [ColourDescription.Range.limited, .full] {
                for matrix in [ColourDescription.Matrix.bt601, .bt709] {
                    for extremes in [false, true] {
                        let frame = Self.randomFrame(
                            width: width, height: height, range: range, matrix: matrix, extremes: extremes,
                            generator: &generator)
                        let (best, scalar) = try converters.mismatches(frame)
                        if best + scalar > 0 {
                            failures.append(
                                "\(width)x\(height) \(range) \(matrix) extremes \(extremes): \(best) \(scalar)")
                        }
                    }
                }
            }
        }
        #expect(failures.isEmpty, "\(failures)")
    }

    /// Every path this CPU has gives the same bytes as the scalar one (also where swscale is not compared).
    @Test func simdPathsEqualTheScalarPath() throws {
        var generator = SeededRandom(seed: 7)
        let paths = [CPK_PATH_AVX2, CPK_PATH_AVX512].filter { $0.rawValue <= cpk_best_path().rawValue }
        let scalar = PixelConverter()
        scalar.rgbPath = CPK_PATH_SCALAR
        scalar.handWrittenRGBEnabled = true
        for (width, height) in Self.sizes + [(1920, 1080), (1281, 721)] {
            let frame = Self.randomFrame(
                width: width, height: height, range: .limited, matrix: .bt709, extremes: false, generator: &generator)
            let expected = try scalar.convert(frame, to: .rgb24)
            for path in paths {
                let converter = PixelConverter()
                converter.handWrittenRGBEnabled = true
                converter.rgbPath = path
                #expect(
                    try converter.convert(frame, to: .rgb24) == expected, "\(width)x\(height) path \(path.rawValue)")
            }
        }
    }

    /// The hand-written converter writes exactly width · 3 bytes a row: the bytes between rows stay as they were.
    @Test func writesNothingPastEachRow() throws {
        var generator = SeededRandom(seed: 11)
        let frame = Self.randomFrame(
            width: 37, height: 5, range: .full, matrix: .bt601, extremes: false, generator: &generator)
        let converter = PixelConverter()
        converter.handWrittenRGBEnabled = true
        let rowStride = 37 * 3 + 5
        var output = [UInt8](repeating: 0xA5, count: rowStride * 5)
        #expect(converter.handWrittenRGB(frame, into: &output, rowStride: rowStride))
        for row in 0..<5 {
            #expect(output[(row * rowStride + 111)..<(row * rowStride + rowStride)].allSatisfy { $0 == 0xA5 })
        }
        let reference = try converter.convert(frame, to: .rgb24)
        for row in 0..<5 {
            #expect(
                Array(output[(row * rowStride)..<(row * rowStride + 111)])
                    == Array(reference[(row * 111)..<(row * 111 + 111)]))
        }
    }
}
