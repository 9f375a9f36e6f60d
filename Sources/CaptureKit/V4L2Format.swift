import CV4L2
import Foundation

/// A V4L2 pixel format code: four ASCII characters packed little-endian (`v4l2_fourcc`).
public struct FourCC: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32

    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// From its four characters ("YUYV", "GREY"); nil unless exactly four printable ASCII characters.
    public init?(_ text: String) {
        let bytes = Array(text.utf8)
        guard bytes.count == 4, bytes.allSatisfy({ (0x20..<0x7f).contains($0) }) else { return nil }
        self.rawValue = bytes.enumerated().reduce(0) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
    }

    public static let grey = FourCC(rawValue: cv4l2_pix_fmt_grey())
    public static let yuyv = FourCC(rawValue: cv4l2_pix_fmt_yuyv())
    public static let nv12 = FourCC(rawValue: cv4l2_pix_fmt_nv12())
    public static let mjpeg = FourCC(rawValue: cv4l2_pix_fmt_mjpeg())
    /// Some older UVC cameras call their MJPEG stream "JPEG".
    public static let jpeg = FourCC(rawValue: cv4l2_pix_fmt_jpeg())

    /// The raw formats CaptureKit delivers as they come from the driver, and their frame layout.
    public var pixelFormat: PixelFormat? {
        switch self {
        case .grey: return .gray8
        case .yuyv: return .yuyv422
        case .nv12: return .nv12
        default: return nil
        }
    }

    /// GREY is full-range luma; YUYV and NV12 from webcams are BT.601 limited range (UVC's default).
    public var colour: ColourDescription {
        switch self {
        case .grey: return ColourDescription(range: .full, matrix: .bt601)
        case .mjpeg, .jpeg: return .jpeg
        default: return .video601
        }
    }

    public var isMotionJPEG: Bool { self == .mjpeg || self == .jpeg }

    public var description: String {
        let characters = (0..<4).map { UInt8(truncatingIfNeeded: (self.rawValue & 0x7fff_ffff) >> (8 * $0)) }
        let text = String(decoding: characters, as: UTF8.self)
        return self.rawValue & (1 << 31) != 0 ? text + "-BE" : text
    }
}

/// Seconds per frame as V4L2 gives it (a fraction: 1/25 for 25 fps).
public struct FrameInterval: Sendable, Hashable, CustomStringConvertible {
    public var numerator: UInt32
    public var denominator: UInt32

    public init(numerator: UInt32, denominator: UInt32) {
        self.numerator = numerator
        self.denominator = denominator
    }

    /// `framesPerSecond` as a fraction with a thousandth-of-a-frame resolution (29.97 → 1000/29970).
    public init(framesPerSecond: Double) {
        self.init(numerator: 1000, denominator: UInt32((framesPerSecond * 1000).rounded()))
    }

    public var framesPerSecond: Double { self.numerator == 0 ? 0 : Double(self.denominator) / Double(self.numerator) }
    public var seconds: Double { self.denominator == 0 ? 0 : Double(self.numerator) / Double(self.denominator) }

    public var description: String {
        "\(self.numerator)/\(self.denominator) s (\(String(format: "%.3f", self.framesPerSecond)) fps)"
    }
}

/// One frame size a format offers, with the frame intervals the driver lists for it (empty when it
/// lists none or gives a range).
public struct V4L2FrameSize: Sendable, Equatable {
    public var width: Int
    public var height: Int
    public var intervals: [FrameInterval]

    public init(width: Int, height: Int, intervals: [FrameInterval] = []) {
        self.width = width
        self.height = height
        self.intervals = intervals
    }
}

/// What a camera offers for one pixel format (VIDIOC_ENUM_FMT, ENUM_FRAMESIZES, ENUM_FRAMEINTERVALS).
public struct V4L2FormatDescription: Sendable, Equatable {
    public enum Sizes: Sendable, Equatable {
        /// A list of sizes (what UVC webcams report).
        case discrete([V4L2FrameSize])
        /// Any size within the ranges, in steps (stepwise; continuous has steps of 1).
        case range(width: ClosedRange<Int>, widthStep: Int, height: ClosedRange<Int>, heightStep: Int)
        /// The driver does not enumerate sizes (vivid's HDMI input: the DV timings decide).
        case unlisted
    }

    public var fourCC: FourCC
    public var description: String
    public var isCompressed: Bool
    public var sizes: Sizes

    public init(fourCC: FourCC, description: String, isCompressed: Bool = false, sizes: Sizes) {
        self.fourCC = fourCC
        self.description = description
        self.isCompressed = isCompressed
        self.sizes = sizes
    }

    /// True when the format lists `width`×`height`, false when it lists other sizes only, nil when it lists none.
    public func offers(width: Int, height: Int) -> Bool? {
        switch self.sizes {
        case .discrete(let sizes):
            return sizes.contains { $0.width == width && $0.height == height }
        case .range(let widths, let widthStep, let heights, let heightStep):
            return widths.contains(width) && heights.contains(height)
                && (width - widths.lowerBound) % max(widthStep, 1) == 0
                && (height - heights.lowerBound) % max(heightStep, 1) == 0
        case .unlisted:
            return nil
        }
    }

    /// The intervals listed for `width`×`height` (empty when none are listed).
    public func intervals(width: Int, height: Int) -> [FrameInterval] {
        guard case .discrete(let sizes) = self.sizes else { return [] }
        return sizes.first { $0.width == width && $0.height == height }?.intervals ?? []
    }
}

/// Which format to ask the driver for: pure functions over what the camera enumerated.
public enum V4L2FormatChoice {
    /// The formats to try with VIDIOC_S_FMT, best first: the preferred raw formats that list
    /// `width`×`height` (in preference order), then preferred raw formats whose sizes the driver does
    /// not list (S_FMT tells), then MJPEG the same way when `allowMotionJPEG` (decoded on the CPU,
    /// so only when no raw format fits). Formats listing only other sizes are never tried.
    public static func candidates(
        offered: [V4L2FormatDescription], preference: [FourCC], width: Int, height: Int, allowMotionJPEG: Bool
    ) -> [FourCC] {
        func matching(_ fourCCs: [FourCC], listed: Bool?) -> [FourCC] {
            fourCCs.filter { fourCC in
                offered.contains { $0.fourCC == fourCC && $0.offers(width: width, height: height) == listed }
            }
        }
        var order = preference.filter { !$0.isMotionJPEG }
        var seen = Set<FourCC>()
        order = order.filter { seen.insert($0).inserted }
        var result = matching(order, listed: true) + matching(order, listed: nil)
        if allowMotionJPEG {
            let motionJPEG = offered.map(\.fourCC).filter(\.isMotionJPEG)
            result += matching(motionJPEG, listed: true) + matching(motionJPEG, listed: nil)
        }
        return result
    }

    /// The listed interval nearest to `framesPerSecond`, or the plain fraction when none are listed.
    public static func interval(framesPerSecond: Double, offered: [FrameInterval]) -> FrameInterval {
        let valid = offered.filter { $0.numerator > 0 && $0.denominator > 0 }
        return valid.min { abs($0.framesPerSecond - framesPerSecond) < abs($1.framesPerSecond - framesPerSecond) }
            ?? FrameInterval(framesPerSecond: framesPerSecond)
    }
}

/// Delays between reopening attempts after a camera went away: `initialSeconds`, doubling each
/// attempt, never more than `maximumSeconds` (0.1, 0.2, 0.4, 0.8, 1.6, 2, 2, … by default). A USB
/// camera re-enumerates in about a second after replugging; 2 s bounds how long a door waits after that.
public struct Backoff: Sendable, Equatable {
    public var initialSeconds: Double
    public var maximumSeconds: Double

    public init(initialSeconds: Double = 0.1, maximumSeconds: Double = 2) {
        precondition(initialSeconds > 0 && maximumSeconds >= initialSeconds)
        self.initialSeconds = initialSeconds
        self.maximumSeconds = maximumSeconds
    }

    /// The wait before attempt `attempt` (0 = the first reopening).
    public func delaySeconds(attempt: Int) -> Double {
        let doublings = min(max(attempt, 0), 62)
        return min(self.initialSeconds * Double(UInt64(1) << UInt64(doublings)), self.maximumSeconds)
    }
}

/// Where each plane of a single-planar V4L2 buffer lies, and how to pack it into a frame buffer.
struct RawFrameLayout: Equatable {
    /// The packed planes of the delivered frame (PixelFormat.planeLayout).
    var planes: [Frame.Plane]
    /// The driver's row pitch; every plane of a single-planar buffer uses it (NV12's UV rows too).
    var bytesPerLine: Int

    /// Bytes a driver buffer must hold: every row at the driver's pitch, the last one unpadded.
    var requiredBytes: Int {
        let rows = self.planes.reduce(0) { $0 + $1.rows }
        guard let last = self.planes.last, rows > 0 else { return 0 }
        return self.bytesPerLine * (rows - 1) + last.rowStride
    }

    var packedBytes: Int { self.planes.last.map { $0.offset + $0.rowStride * $0.rows } ?? 0 }

    /// Copies the driver's rows into `destination`, dropping row padding.
    func pack(_ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawPointer) {
        precondition(source.count >= self.requiredBytes)
        guard let base = source.baseAddress else { return }
        var sourceOffset = 0
        for plane in self.planes {
            if plane.rowStride == self.bytesPerLine {
                (destination + plane.offset).copyMemory(
                    from: base + sourceOffset, byteCount: plane.rowStride * plane.rows)
            } else {
                for row in 0..<plane.rows {
                    (destination + plane.offset + row * plane.rowStride)
                        .copyMemory(from: base + sourceOffset + row * self.bytesPerLine, byteCount: plane.rowStride)
                }
            }
            sourceOffset += self.bytesPerLine * plane.rows
        }
    }
}
