import Testing

@testable import CaptureKit

/// The pure parts of V4L2Camera: format choice over an enumerated list, frame rates, reconnect
/// backoff, packing driver rows. The device itself is tested in a VM (scripts/v4l2-vm-tests.sh).
@Suite struct V4L2FormatTests {
    /// What a typical USB 2 webcam enumerates: raw formats at small sizes, MJPEG up to 1080p.
    static let webcam: [V4L2FormatDescription] = [
        V4L2FormatDescription(
            fourCC: .yuyv, description: "YUYV 4:2:2",
            sizes: .discrete([
                V4L2FrameSize(
                    width: 640, height: 480,
                    intervals: [.init(numerator: 1, denominator: 30), .init(numerator: 1, denominator: 15)]),
                V4L2FrameSize(width: 1280, height: 720, intervals: [.init(numerator: 1, denominator: 10)]),
            ])),
        V4L2FormatDescription(
            fourCC: .mjpeg, description: "Motion-JPEG", isCompressed: true,
            sizes: .discrete([
                V4L2FrameSize(width: 640, height: 480), V4L2FrameSize(width: 1280, height: 720),
                V4L2FrameSize(width: 1920, height: 1080),
            ])),
        V4L2FormatDescription(
            fourCC: .grey, description: "8-bit Greyscale", sizes: .discrete([V4L2FrameSize(width: 320, height: 240)])),
        V4L2FormatDescription(
            fourCC: .nv12, description: "Y/UV 4:2:0", sizes: .discrete([V4L2FrameSize(width: 640, height: 480)])),
    ]

    static func candidates(
        offered: [V4L2FormatDescription] = Self.webcam,
        preference: [FourCC] = V4L2Camera.Configuration().preferredFormats,
        _ width: Int, _ height: Int, motionJPEG: Bool = true
    ) -> [FourCC] {
        V4L2FormatChoice.candidates(
            offered: offered, preference: preference, width: width, height: height, allowMotionJPEG: motionJPEG)
    }

    @Test func fourCCsMatchTheKernelHeader() {
        #expect(FourCC("YUYV") == .yuyv)
        #expect(FourCC("GREY") == .grey)
        #expect(FourCC("NV12") == .nv12)
        #expect(FourCC("MJPG") == .mjpeg)
        #expect(FourCC.yuyv.rawValue == 0x5659_5559)
        #expect(FourCC.mjpeg.description == "MJPG")
        #expect(FourCC("YUV") == nil)
        #expect(FourCC("YUYV2") == nil)
        #expect(
            FourCC.yuyv.pixelFormat == .yuyv422 && FourCC.grey.pixelFormat == .gray8 && FourCC.nv12.pixelFormat == .nv12
        )
        #expect(FourCC.mjpeg.pixelFormat == nil)
        #expect(FourCC.grey.colour == ColourDescription(range: .full, matrix: .bt601))
        #expect(FourCC.yuyv.colour == .video601 && FourCC.nv12.colour == .video601)
    }

    /// Default preference (GREY, YUYV, NV12): only formats that list the size, raw before MJPEG.
    @Test func defaultPreferenceAtTheRequestedSize() {
        #expect(Self.candidates(640, 480) == [.yuyv, .nv12, .mjpeg])
        #expect(Self.candidates(320, 240) == [.grey])
        #expect(Self.candidates(1280, 720) == [.yuyv, .mjpeg])
    }

    @Test func motionJPEGOnlyWhenNoRawFormatHasTheSize() {
        #expect(Self.candidates(1920, 1080) == [.mjpeg])
        #expect(Self.candidates(1920, 1080, motionJPEG: false) == [])
        #expect(Self.candidates(800, 600) == [])
        // MJPEG named in the raw preference list is still only a fallback.
        #expect(Self.candidates(preference: [.mjpeg, .yuyv], 640, 480) == [.yuyv, .mjpeg])
    }

    @Test func configuredPreferenceOrderWins() {
        #expect(Self.candidates(preference: [.nv12, .yuyv], 640, 480) == [.nv12, .yuyv, .mjpeg])
        #expect(Self.candidates(preference: [.yuyv, .yuyv], 640, 480, motionJPEG: false) == [.yuyv])
    }

    /// Formats without a size list (vivid's HDMI input) are tried after those that list the size;
    /// stepwise ranges count when the size is on a step.
    @Test func unlistedAndStepwiseSizes() {
        let offered = [
            V4L2FormatDescription(fourCC: .grey, description: "grey", sizes: .unlisted),
            V4L2FormatDescription(
                fourCC: .yuyv, description: "yuyv",
                sizes: .range(width: 16...1920, widthStep: 16, height: 16...1080, heightStep: 8)),
        ]
        #expect(Self.candidates(offered: offered, 640, 480) == [.yuyv, .grey])
        #expect(Self.candidates(offered: offered, 641, 480) == [.grey])
        #expect(offered[1].offers(width: 1920, height: 1088) == false)
        #expect(offered[0].offers(width: 640, height: 480) == nil)
    }

    @Test func frameIntervalNearestToTheRequestedRate() {
        let listed = Self.webcam[0].intervals(width: 640, height: 480)
        #expect(
            V4L2FormatChoice.interval(framesPerSecond: 30, offered: listed)
                == FrameInterval(numerator: 1, denominator: 30))
        #expect(
            V4L2FormatChoice.interval(framesPerSecond: 20, offered: listed)
                == FrameInterval(numerator: 1, denominator: 15))
        let unlisted = V4L2FormatChoice.interval(framesPerSecond: 29.97, offered: [])
        #expect(unlisted == FrameInterval(numerator: 1000, denominator: 29970))
        #expect(abs(unlisted.framesPerSecond - 29.97) < 1e-9)
    }

    @Test func backoffDoublesUpToTheCap() {
        let delays = (0..<8).map { Backoff().delaySeconds(attempt: $0) }
        let expected = [0.1, 0.2, 0.4, 0.8, 1.6, 2, 2, 2]
        #expect(zip(delays, expected).allSatisfy { abs($0 - $1) < 1e-12 }, "\(delays)")
        #expect(Backoff().delaySeconds(attempt: 10_000) == 2)
        #expect(Backoff(initialSeconds: 0.5, maximumSeconds: 3).delaySeconds(attempt: 2) == 2)
    }

    /// NV12 4×2 in a driver buffer with 8-byte rows: padding is dropped, the UV plane follows Y at
    /// the driver's pitch.
    @Test func packsPaddedDriverRows() throws {
        let format = V4L2StreamFormat(
            fourCC: .nv12, width: 4, height: 2, bytesPerLine: 8, imageBytes: 24, interval: nil)
        let layout = try #require(RawFrameLayout(format))
        #expect(
            layout.planes == [
                Frame.Plane(offset: 0, rowStride: 4, rows: 2), Frame.Plane(offset: 8, rowStride: 4, rows: 1),
            ])
        #expect(layout.requiredBytes == 20 && layout.packedBytes == 12)
        let driver: [UInt8] = [
            1, 2, 3, 4, 0, 0, 0, 0,
            5, 6, 7, 8, 0, 0, 0, 0,
            9, 10, 11, 12,
        ]
        var packed = [UInt8](repeating: 0xff, count: layout.packedBytes)
        driver.withUnsafeBytes { source in packed.withUnsafeMutableBytes { layout.pack(source, into: $0.baseAddress!) }
        }
        #expect(packed == Array(1...12))
        // A pitch narrower than a packed row is a broken driver, not a layout.
        #expect(
            RawFrameLayout(V4L2StreamFormat(fourCC: .yuyv, width: 4, height: 2, bytesPerLine: 4, imageBytes: 8)) == nil)
    }
}
