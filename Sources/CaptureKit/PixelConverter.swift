import CFFmpeg
import CPixelKernels
import Foundation

/// A packed 8-bit picture whose rows have room for swscale's whole-vector stores past a row's end
/// (each row padded to a multiple of 64 bytes plus 64, one spare row at the bottom), so swscale can
/// write into it directly: no scratch picture and no row copy. Owned by one thread at a time; the
/// memory is kept (and grown, never shrunk) from one conversion to the next.
public final class PaddedPicture {
    public private(set) var pointer: UnsafeMutablePointer<UInt8>
    public private(set) var width = 0
    public private(set) var height = 0
    /// Bytes from one row to the next.
    public private(set) var rowStride = 0
    private var capacity = 0

    public init() {
        self.pointer = UnsafeMutablePointer<UInt8>.allocate(capacity: 64)
        self.capacity = 64
    }

    deinit { self.pointer.deallocate() }

    /// Sizes the picture for `width` × `height` pixels of `bytesPerPixel` (contents undefined after growth).
    func resize(width: Int, height: Int, bytesPerPixel: Int) {
        let rowStride = PixelConverter.paddedStride(rowBytes: width * bytesPerPixel)
        let bytes = rowStride * (height + 1)
        if bytes > self.capacity {
            self.pointer.deallocate()
            let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
            self.pointer = raw.bindMemory(to: UInt8.self, capacity: bytes)
            self.capacity = bytes
        }
        (self.width, self.height, self.rowStride) = (width, height, rowStride)
    }
}

/// Converts frames to the 8-bit layouts the engine reads, at a requested size, over libswscale.
///
/// GRAY8 is the luma PIL's `convert('L')` would give for the RGB picture (ITU-R 601-2 weights,
/// full range), because that is what the model was trained on:
/// * BT.601 YCbCr: L(RGB) equals the full-range Y (the 601 weights cancel the chroma terms), so
///   swscale only expands limited range to full (Y' = (Y − 16)·255/219).
/// * BT.709 YCbCr: L(RGB) = Y + 0.196·Cr + 0.102·Cb (skin tones: several grey levels off Y), so
///   the frame goes to RGB first and L is computed with Pillow's integer formula.
/// * RGB sources: Pillow's formula directly.
///
/// Not thread-safe (caches swscale contexts): one converter per thread.
public final class PixelConverter {
    public enum Target: Sendable, Equatable {
        case gray8, rgb24, bgr24

        public var bytesPerPixel: Int { self == .gray8 ? 1 : 3 }
    }

    private struct ContextKey: Hashable {
        var source: PixelFormat
        var sourceWidth: Int
        var sourceHeight: Int
        var target: PixelFormat
        var width: Int
        var height: Int
        var fullRange: Bool
        var bt709: Bool
    }

    private var contexts: [ContextKey: OpaquePointer] = [:]
    private var scratch: [UInt8] = []
    private var rgbScratch: [UInt8] = []
    /// The hand-written YUV 4:2:0 → RGB24 converter's tables for the last size and colour (`cpk_rgb_plan`).
    private var rgbPlan: OpaquePointer?
    private var rgbPlanKey: ContextKey?

    public init() {}

    deinit {
        for context in self.contexts.values { sws_freeContext(context) }
        cpk_rgb_plan_destroy(self.rgbPlan)
    }

    /// Same-size YUV 4:2:0 → RGB24 (the accurate path) goes through CPixelKernels, which gives swscale's
    /// bytes exactly, ≈ 4× faster (see YUV420ToRGB24.c). Only on x86-64, whose swscale it reproduces
    /// (elsewhere swscale picks other vertical output functions), and only with AVX2 (its portable
    /// scalar path is exact too, but slower than swscale: tests use it, production does not).
    /// `LIVENESSD_SWSCALE_RGB=1` in the environment keeps swscale for it: for comparison, and as an
    /// escape hatch.
    static let handWrittenRGB: Bool = {
        #if arch(x86_64)
            return ProcessInfo.processInfo.environment["LIVENESSD_SWSCALE_RGB"] != "1"
                && cpk_best_path() != CPK_PATH_SCALAR
        #else
            return false
        #endif
    }()

    /// Whether this converter uses the hand-written one (tests compare it with swscale by turning it off).
    var handWrittenRGBEnabled = PixelConverter.handWrittenRGB
    /// The code path the hand-written converter takes (tests pin the scalar one; a path the CPU lacks
    /// falls back to the best it has).
    var rgbPath: cpk_path = cpk_best_path()

    /// Whether `frame` → `format` at `width` × `height` is the hand-written converter's case.
    func isHandWrittenRGB(_ frame: Frame, to format: PixelFormat, width: Int, height: Int) -> Bool {
        self.handWrittenRGBEnabled && format == .rgb24 && width == frame.width && height == frame.height
            && (frame.pixelFormat == .yuv420p || frame.pixelFormat.rawValue == AV_PIX_FMT_YUVJ420P.rawValue)
            && frame.planes.count == 3
    }

    /// The hand-written YUV 4:2:0 → RGB24 conversion (same size), rows `rowStride` apart; it writes exactly
    /// `width` · 3 bytes a row, so the destination needs no padding. The range and matrix are those the
    /// swscale context would get (`context(for:)`), so the bytes are the same. False (nothing written) when
    /// it has no plan for that size (over 16384 pixels, or a filter it does not reproduce): swscale then.
    func handWrittenRGB(_ frame: Frame, into destination: UnsafeMutablePointer<UInt8>, rowStride: Int) -> Bool {
        let key = ContextKey(
            source: frame.pixelFormat, sourceWidth: frame.width, sourceHeight: frame.height, target: .rgb24,
            width: frame.width, height: frame.height, fullRange: frame.colour.range == .full,
            bt709: frame.colour.matrix == .bt709)
        if self.rgbPlanKey != key {
            cpk_rgb_plan_destroy(self.rgbPlan)
            self.rgbPlanKey = nil
            self.rgbPlan = cpk_rgb_plan_create(Int32(frame.width), Int32(frame.height), key.bt709, key.fullRange)
            guard self.rgbPlan != nil else { return false }
            self.rgbPlanKey = key
        }
        cpk_rgb_convert(
            self.rgbPlan!, frame.plane(0), frame.planes[0].rowStride, frame.plane(1), frame.planes[1].rowStride,
            frame.plane(2), frame.planes[2].rowStride, destination, rowStride, self.rgbPath)
        return true
    }

    /// Writes `frame` as `target` at `width` × `height` (default: the frame's size) into
    /// `destination`, rows `width · bytesPerPixel` apart.
    public func convert(
        _ frame: Frame, to target: Target, width: Int? = nil, height: Int? = nil,
        into destination: UnsafeMutablePointer<UInt8>
    ) throws {
        let (width, height) = try Self.outputSize(frame, width: width, height: height)
        if Self.greyGoesThroughRGB(frame, target) {
            // Through RGB, then Pillow's L.
            try self.throughRGBScratch(frame, width: width, height: height) { rgb in
                Self.pillowLuma(rgb: rgb, pixels: width * height, into: destination)
            }
            return
        }
        let rowBytes = width * target.bytesPerPixel
        try self.scale(
            frame, to: Self.pixelFormat(target), width: width, height: height, into: destination, rowStride: rowBytes,
            padded: false)
    }

    /// `frame` as packed RGB24 at `width` × `height` in the converter's scratch, for `body` to read.
    private func throughRGBScratch(
        _ frame: Frame, width: Int, height: Int, _ body: (UnsafeMutablePointer<UInt8>) -> Void
    ) throws {
        let count = width * height * 3
        if self.rgbScratch.count < count { self.rgbScratch = [UInt8](repeating: 0, count: count) }
        try self.rgbScratch.withUnsafeMutableBufferPointer { rgb in
            try self.scale(
                frame, to: .rgb24, width: width, height: height, into: rgb.baseAddress!, rowStride: width * 3,
                padded: false)
            body(rgb.baseAddress!)
        }
    }

    /// The output size (default: the frame's); an empty one is refused.
    static func outputSize(_ frame: Frame, width: Int?, height: Int?) throws -> (width: Int, height: Int) {
        let width = width ?? frame.width
        let height = height ?? frame.height
        guard width > 0, height > 0 else {
            throw CaptureError(
                code: .decodeFailed, source: frame.sourceID, message: "invalid output size \(width)x\(height)")
        }
        return (width, height)
    }

    /// Grey from RGB input or from BT.709 YUV goes through RGB and then Pillow's L, as the reference's.
    static func greyGoesThroughRGB(_ frame: Frame, _ target: Target) -> Bool {
        let isRGB = frame.pixelFormat == .rgb24 || frame.pixelFormat == .bgr24
        return target == .gray8 && frame.pixelFormat != .gray8 && (isRGB || frame.colour.matrix == .bt709)
    }

    static func pixelFormat(_ target: Target) -> PixelFormat {
        switch target {
        case .gray8: return .gray8
        case .rgb24: return .rgb24
        case .bgr24: return .bgr24
        }
    }

    /// A row of `rowBytes` padded for swscale's whole-vector stores.
    static func paddedStride(rowBytes: Int) -> Int { (rowBytes + 63) / 64 * 64 + 64 }

    /// Writes `frame` as `target` at `width` × `height` (default: the frame's size) into `picture`,
    /// straight from swscale (its rows are padded for swscale's stores, see `PaddedPicture`).
    public func convert(
        _ frame: Frame, to target: Target, width: Int? = nil, height: Int? = nil, into picture: PaddedPicture
    ) throws {
        let (width, height) = try Self.outputSize(frame, width: width, height: height)
        picture.resize(width: width, height: height, bytesPerPixel: target.bytesPerPixel)
        if Self.greyGoesThroughRGB(frame, target) {
            // Through RGB, then Pillow's L, row by row into the padded rows.
            try self.throughRGBScratch(frame, width: width, height: height) { rgb in
                for row in 0..<height {
                    Self.pillowLuma(
                        rgb: rgb + row * width * 3, pixels: width,
                        into: picture.pointer + row * picture.rowStride)
                }
            }
            return
        }
        try self.scale(
            frame, to: Self.pixelFormat(target), width: width, height: height, into: picture.pointer,
            rowStride: picture.rowStride, padded: true)
    }

    /// Convenience: a new array holding the converted picture.
    public func convert(_ frame: Frame, to target: Target, width: Int? = nil, height: Int? = nil) throws -> [UInt8] {
        var output = [UInt8](
            repeating: 0, count: (width ?? frame.width) * (height ?? frame.height) * target.bytesPerPixel)
        try output.withUnsafeMutableBufferPointer {
            try self.convert(frame, to: target, width: width, height: height, into: $0.baseAddress!)
        }
        return output
    }

    /// Pillow's RGB → L: (19595·R + 38470·G + 7471·B + 2¹⁵) >> 16.
    public static func pillowLuma(rgb: UnsafePointer<UInt8>, pixels: Int, into output: UnsafeMutablePointer<UInt8>) {
        for index in 0..<pixels {
            let r = UInt32(rgb[3 * index])
            let g = UInt32(rgb[3 * index + 1])
            let b = UInt32(rgb[3 * index + 2])
            output[index] = UInt8((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16)
        }
    }

    /// swscale (or a row copy when nothing changes) into `destination`, rows `rowStride` apart. An unpadded
    /// destination (`padded` false: exactly `rowStride` × `height` bytes) is written through the scratch
    /// picture, because swscale's SIMD output paths store whole vectors and may write past a row's end
    /// (writing straight into an exactly sized buffer corrupted the heap in tests).
    private func scale(
        _ frame: Frame, to format: PixelFormat, width: Int, height: Int, into destination: UnsafeMutablePointer<UInt8>,
        rowStride: Int, padded: Bool
    ) throws {
        let rowBytes = width * (format == .gray8 ? 1 : 3)
        if self.isHandWrittenRGB(frame, to: format, width: width, height: height),
            self.handWrittenRGB(frame, into: destination, rowStride: rowStride)
        {
            return
        }
        if format == frame.pixelFormat && width == frame.width && height == frame.height && frame.planes.count == 1 {
            let plane = frame.planes[0]
            for row in 0..<height {
                (destination + row * rowStride).update(from: frame.plane(0) + row * plane.rowStride, count: rowBytes)
            }
            return
        }
        let key = ContextKey(
            source: frame.pixelFormat, sourceWidth: frame.width, sourceHeight: frame.height, target: format,
            width: width,
            height: height, fullRange: frame.colour.range == .full || frame.pixelFormat == .gray8,
            bt709: frame.colour.matrix == .bt709)
        let context = try self.context(for: key, sourceID: frame.sourceID)
        // Plane pointers and strides on the stack: four small arrays per call were four heap allocations.
        func scale(into target: UnsafeMutablePointer<UInt8>, stride: Int) -> Int32 {
            withUnsafeTemporaryAllocation(of: UnsafePointer<UInt8>?.self, capacity: 4) { sources in
                withUnsafeTemporaryAllocation(of: UnsafeMutablePointer<UInt8>?.self, capacity: 4) { destinations in
                    withUnsafeTemporaryAllocation(of: Int32.self, capacity: 8) { strides in
                        for index in 0..<4 {
                            let present = index < frame.planes.count
                            sources[index] = present ? UnsafePointer(frame.plane(index)) : nil
                            strides[index] = present ? Int32(frame.planes[index].rowStride) : 0
                            destinations[index] = index == 0 ? target : nil
                            strides[4 + index] = index == 0 ? Int32(stride) : 0
                        }
                        return sws_scale(
                            context, sources.baseAddress!, strides.baseAddress!, 0, Int32(frame.height),
                            destinations.baseAddress!, strides.baseAddress! + 4)
                    }
                }
            }
        }
        let rows: Int32
        if padded {
            rows = scale(into: destination, stride: rowStride)
        } else {
            // Into the padded scratch picture first, then rows copied out (≈ 0.05 ms per 640×480 RGB frame).
            let paddedStride = Self.paddedStride(rowBytes: rowBytes)
            if self.scratch.count < paddedStride * (height + 1) {
                self.scratch = [UInt8](repeating: 0, count: paddedStride * (height + 1))
            }
            rows = self.scratch.withUnsafeMutableBufferPointer { scratch -> Int32 in
                let rows = scale(into: scratch.baseAddress!, stride: paddedStride)
                if rows > 0 {
                    for row in 0..<height {
                        (destination + row * rowStride).update(
                            from: scratch.baseAddress! + row * paddedStride, count: rowBytes)
                    }
                }
                return rows
            }
        }
        guard rows > 0 else {
            throw CaptureError(
                code: .decodeFailed, source: frame.sourceID,
                message: "swscale could not convert \(frame.pixelFormat) \(frame.width)x\(frame.height) to \(format)")
        }
    }

    private func context(for key: ContextKey, sourceID: String) throws -> OpaquePointer {
        if let context = self.contexts[key] { return context }
        // What the model sees (RGB24 for the crop, GRAY8) is converted accurately: exact rounding and
        // chroma interpolated to full resolution, so PIL's L of it equals the range-expanded Y within
        // 0.25 grey levels (the plain path: 1.34 on a BT.601 clip, errors up to 24 at colour edges).
        // FULL_CHR_H_INP is left out: it only concerns packed input, gave byte-identical RGB on four
        // clips (BT.601, BT.709, full range) and cost ≈ 1 ms more per 640×480 frame.
        // The detector's small BGR picture takes swscale's fast path (as OpenCV's decoder gives YuNet):
        // 0.12 instead of 0.62 ms per 640×480 frame, same faces on the golden images and clips.
        let flags = key.target == .bgr24 ? SWS_BILINEAR : SWS_BILINEAR | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT
        guard
            let context = sws_getContext(
                Int32(key.sourceWidth), Int32(key.sourceHeight), key.source.avFormat, Int32(key.width),
                Int32(key.height), key.target.avFormat, flags, nil, nil, nil)
        else {
            throw CaptureError(
                code: .unsupportedFormat, source: sourceID,
                message: "swscale cannot convert \(key.source) to \(key.target)")
        }
        let coefficients = sws_getCoefficients(key.bt709 ? SWS_CS_ITU709 : SWS_CS_ITU601)
        // Output is always full range: PIL's L and RGB are 0…255.
        _ = sws_setColorspaceDetails(context, coefficients, key.fullRange ? 1 : 0, coefficients, 1, 0, 1 << 16, 1 << 16)
        self.contexts[key] = context
        return context
    }
}
