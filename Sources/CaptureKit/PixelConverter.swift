import CFFmpeg

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

    public init() {}

    deinit {
        for context in self.contexts.values { sws_freeContext(context) }
    }

    /// Writes `frame` as `target` at `width` × `height` (default: the frame's size) into
    /// `destination`, rows `width · bytesPerPixel` apart.
    public func convert(
        _ frame: Frame, to target: Target, width: Int? = nil, height: Int? = nil,
        into destination: UnsafeMutablePointer<UInt8>
    ) throws {
        let width = width ?? frame.width
        let height = height ?? frame.height
        guard width > 0, height > 0 else {
            throw CaptureError(code: .decodeFailed, source: frame.sourceID, message: "invalid output size \(width)x\(height)")
        }
        let isRGB = frame.pixelFormat == .rgb24 || frame.pixelFormat == .bgr24
        if target == .gray8 && frame.pixelFormat != .gray8 && (isRGB || frame.colour.matrix == .bt709) {
            // Through RGB, then Pillow's L.
            let count = width * height * 3
            if self.rgbScratch.count < count { self.rgbScratch = [UInt8](repeating: 0, count: count) }
            try self.rgbScratch.withUnsafeMutableBufferPointer { rgb in
                try self.scale(frame, to: .rgb24, width: width, height: height, into: rgb.baseAddress!)
                Self.pillowLuma(rgb: rgb.baseAddress!, pixels: width * height, into: destination)
            }
            return
        }
        let format: PixelFormat
        switch target {
        case .gray8: format = .gray8
        case .rgb24: format = .rgb24
        case .bgr24: format = .bgr24
        }
        try self.scale(frame, to: format, width: width, height: height, into: destination)
    }

    /// Convenience: a new array holding the converted picture.
    public func convert(_ frame: Frame, to target: Target, width: Int? = nil, height: Int? = nil) throws -> [UInt8] {
        var output = [UInt8](repeating: 0, count: (width ?? frame.width) * (height ?? frame.height) * target.bytesPerPixel)
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

    private func scale(
        _ frame: Frame, to format: PixelFormat, width: Int, height: Int, into destination: UnsafeMutablePointer<UInt8>
    ) throws {
        if format == frame.pixelFormat && width == frame.width && height == frame.height && frame.planes.count == 1 {
            let rowBytes = width * (format == .gray8 ? 1 : 3)
            let plane = frame.planes[0]
            for row in 0..<height {
                (destination + row * rowBytes).update(from: frame.plane(0) + row * plane.rowStride, count: rowBytes)
            }
            return
        }
        let key = ContextKey(
            source: frame.pixelFormat, sourceWidth: frame.width, sourceHeight: frame.height, target: format, width: width,
            height: height, fullRange: frame.colour.range == .full || frame.pixelFormat == .gray8,
            bt709: frame.colour.matrix == .bt709)
        let context = try self.context(for: key, sourceID: frame.sourceID)
        var sources: [UnsafePointer<UInt8>?] = (0..<4).map { $0 < frame.planes.count ? UnsafePointer(frame.plane($0)) : nil }
        var sourceStrides: [Int32] = (0..<4).map { $0 < frame.planes.count ? Int32(frame.planes[$0].rowStride) : 0 }
        // swscale's SIMD output paths store whole vectors and may write past the end of a row: into a
        // padded scratch picture first, then rows copied out (≈ 0.05 ms per 640×480 RGB frame).
        let rowBytes = width * (format == .gray8 ? 1 : 3)
        let paddedStride = (rowBytes + 63) / 64 * 64 + 64
        if self.scratch.count < paddedStride * (height + 1) { self.scratch = [UInt8](repeating: 0, count: paddedStride * (height + 1)) }
        let rows = self.scratch.withUnsafeMutableBufferPointer { scratch -> Int32 in
            var destinations: [UnsafeMutablePointer<UInt8>?] = [scratch.baseAddress!, nil, nil, nil]
            var destinationStrides: [Int32] = [Int32(paddedStride), 0, 0, 0]
            let rows = sws_scale(context, &sources, &sourceStrides, 0, Int32(frame.height), &destinations, &destinationStrides)
            if rows > 0 {
                for row in 0..<height {
                    (destination + row * rowBytes).update(from: scratch.baseAddress! + row * paddedStride, count: rowBytes)
                }
            }
            return rows
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
                code: .unsupportedFormat, source: sourceID, message: "swscale cannot convert \(key.source) to \(key.target)")
        }
        let coefficients = sws_getCoefficients(key.bt709 ? SWS_CS_ITU709 : SWS_CS_ITU601)
        // Output is always full range: PIL's L and RGB are 0…255.
        _ = sws_setColorspaceDetails(context, coefficients, key.fullRange ? 1 : 0, coefficients, 1, 0, 1 << 16, 1 << 16)
        self.contexts[key] = context
        return context
    }
}
