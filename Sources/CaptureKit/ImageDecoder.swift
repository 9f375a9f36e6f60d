import Foundation
import CFFmpeg
import CFFmpegLoader

/// Why a picture or stream could not be read, in words a user can act on.
public struct CaptureError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        case notFound
        case unreadable
        case unsupportedFormat
        case noVideo
        case decodeFailed
    }

    public var code: Code
    public var source: String
    public var message: String

    public init(code: Code, source: String, message: String) {
        self.code = code
        self.source = source
        self.message = message
    }

    public var description: String { "\(self.source): \(self.message)" }
}

/// A packed 8-bit RGB picture (3 bytes per pixel, rows `width * 3` apart), upright.
public struct RGBImage: Sendable, Equatable {
    public var width: Int
    public var height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * 3)
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    public var rowStride: Int { self.width * 3 }
}

/// How a picture must be turned to be upright: the eight EXIF orientation values.
public enum Orientation: Int, Sendable, Equatable {
    case up = 1
    case upMirrored = 2
    case down = 3
    case downMirrored = 4
    case leftMirrored = 5
    case right = 6
    case rightMirrored = 7
    case left = 8

    /// From a display matrix's rotation (degrees counter-clockwise, as `av_display_rotation_get`).
    init(displayRotationDegrees degrees: Double) {
        switch (Int(degrees.rounded()) % 360 + 360) % 360 {
        case 90: self = .left  // shown rotated 90° counter-clockwise
        case 180: self = .down
        case 270: self = .right  // e.g. rotation=-90 on portrait phone clips and EXIF 6
        default: self = .up
        }
    }

    /// Applies the transform that makes a stored picture upright (same as PIL's `exif_transpose`).
    public func apply(to image: RGBImage) -> RGBImage {
        guard self != .up else { return image }
        let size = PlaneRotation.size(width: image.width, height: image.height, orientation: self)
        var output = [UInt8](repeating: 0, count: image.pixels.count)
        image.pixels.withUnsafeBufferPointer { source in
            output.withUnsafeMutableBufferPointer { destination in
                PlaneRotation.apply(
                    self, source: source.baseAddress!, sourceStride: image.rowStride, width: image.width,
                    height: image.height, bytesPerPixel: 3, destination: destination.baseAddress!,
                    destinationStride: size.width * 3)
            }
        }
        return RGBImage(width: size.width, height: size.height, pixels: output)
    }
}

/// Decodes still pictures (JPEG with libjpeg-turbo; PNG, WebP, BMP, and anything else FFmpeg reads) to upright RGB.
public enum ImageDecoder {
    /// The first picture of `path`, converted to RGB24 and turned upright by its EXIF orientation
    /// (or display-matrix rotation). Returns the orientation that was applied.
    public static func decode(path: String) throws -> (image: RGBImage, orientation: Orientation) {
        // JPEG files go through libjpeg-turbo, as the reference (PIL) decodes them (JPEGStillDecoder).
        if JPEGStillDecoder.isJPEGFile(path) {
            let (rgb, orientation) = try JPEGStillDecoder.decode(path: path)
            return (orientation.apply(to: rgb), orientation)
        }
        let input = try MediaInput(location: path, timeoutSeconds: nil, decoderThreads: 1, interrupt: InterruptFlag())
        var decoded: Result<(RGBImage, Orientation), Error>?
        var lastProblem = "no picture data"
        var attempts = 0
        decoding: while decoded == nil && attempts < 64 {
            attempts += 1
            switch input.decodeNext({ frame in
                decoded = Result { (try Self.convertToRGB(frame, path: path), input.orientation(of: frame)) }
            }) {
            case .frames: continue
            case .corrupt(let reason): lastProblem = reason
            case .readError(let reason):
                lastProblem = reason
                break decoding
            case .endOfFile: break decoding
            }
        }
        guard let decoded else {
            throw CaptureError(
                code: .decodeFailed, source: path, message: "the picture data is damaged or truncated (\(lastProblem))")
        }
        let (rgb, orientation) = try decoded.get()
        return (orientation.apply(to: rgb), orientation)
    }

    static func openError(_ status: Int32, path: String) -> CaptureError {
        if status == -ENOENT {
            return CaptureError(code: .notFound, source: path, message: "no such file")
        }
        if status == -EACCES {
            return CaptureError(code: .unreadable, source: path, message: "permission denied")
        }
        return CaptureError(
            code: .unsupportedFormat, source: path,
            message: "not a picture, video or stream FFmpeg can read (\(FFmpegError.text(status))); "
                + "pictures: JPEG, PNG, WebP, BMP …; a cut-off MP4/MOV has no index (moov) and cannot be opened")
    }

    /// EXIF orientation from the decoder's metadata, else the display matrix (frame or stream).
    static func orientation(
        of frame: UnsafeMutablePointer<AVFrame>, stream: UnsafeMutablePointer<AVStream>
    ) -> Orientation {
        if let entry = av_dict_get(frame.pointee.metadata, "Orientation", nil, 0), let value = entry.pointee.value {
            let text = String(cString: value).trimmingCharacters(in: .whitespaces)
            if let code = Int(text), let orientation = Orientation(rawValue: code) { return orientation }
        }
        if let side = av_frame_get_side_data(frame, AV_FRAME_DATA_DISPLAYMATRIX) {
            let matrix = UnsafeRawPointer(side.pointee.data!).assumingMemoryBound(to: Int32.self)
            return Orientation(displayRotationDegrees: av_display_rotation_get(matrix))
        }
        var size: Int = 0
        if let data = lv_av_stream_get_side_data(stream, AV_PKT_DATA_DISPLAYMATRIX, &size), size >= 36 {
            let matrix = UnsafeRawPointer(data).assumingMemoryBound(to: Int32.self)
            return Orientation(displayRotationDegrees: av_display_rotation_get(matrix))
        }
        return .up
    }

    /// Converts a decoded frame to packed RGB24 with libswscale (grey pictures are replicated directly:
    /// swscale would treat GRAY8 as limited-range video luma).
    static func convertToRGB(_ frame: UnsafeMutablePointer<AVFrame>, path: String) throws -> RGBImage {
        let width = Int(frame.pointee.width)
        let height = Int(frame.pointee.height)
        let format = AVPixelFormat(rawValue: frame.pointee.format)
        if let problem = FrameLimits.problem(width: width, height: height) {
            throw CaptureError(code: .decodeFailed, source: path, message: problem)
        }
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        if format == AV_PIX_FMT_GRAY8 {
            let stride = Int(frame.pointee.linesize.0)
            let plane = frame.pointee.data.0!
            for y in 0..<height {
                for x in 0..<width {
                    let value = plane[y * stride + x]
                    let to = (y * width + x) * 3
                    pixels[to] = value
                    pixels[to + 1] = value
                    pixels[to + 2] = value
                }
            }
            return RGBImage(width: width, height: height, pixels: pixels)
        }
        let flags = SWS_BILINEAR | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT | SWS_BITEXACT
        guard
            let scaler = sws_getContext(
                Int32(width), Int32(height), format, Int32(width), Int32(height), AV_PIX_FMT_RGB24, Int32(flags),
                nil, nil, nil)
        else {
            let name = av_get_pix_fmt_name(format).map { String(cString: $0) } ?? "unknown"
            throw CaptureError(
                code: .unsupportedFormat, source: path, message: "cannot convert pixel format \(name) to RGB")
        }
        defer { sws_freeContext(scaler) }
        Self.applyColourDetails(scaler, frame: frame)
        pixels.withUnsafeMutableBufferPointer { buffer in
            var destination: [UnsafeMutablePointer<UInt8>?] = [buffer.baseAddress, nil, nil, nil]
            var destinationStride: [Int32] = [Int32(width * 3), 0, 0, 0]
            withUnsafePointer(to: &frame.pointee.data) { dataTuple in
                withUnsafePointer(to: &frame.pointee.linesize) { strideTuple in
                    dataTuple.withMemoryRebound(to: UnsafePointer<UInt8>?.self, capacity: 8) { planes in
                        strideTuple.withMemoryRebound(to: Int32.self, capacity: 8) { strides in
                            _ = sws_scale(scaler, planes, strides, 0, Int32(height), &destination, &destinationStride)
                        }
                    }
                }
            }
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }

    /// Source range and matrix from the frame (JPEG is full-range BT.601; video is usually limited).
    static func applyColourDetails(_ scaler: OpaquePointer, frame: UnsafeMutablePointer<AVFrame>) {
        var inverseTable: UnsafeMutablePointer<Int32>? = nil
        var sourceRange: Int32 = 0
        var table: UnsafeMutablePointer<Int32>? = nil
        var destinationRange: Int32 = 0
        var brightness: Int32 = 0
        var contrast: Int32 = 0
        var saturation: Int32 = 0
        guard
            sws_getColorspaceDetails(
                scaler, &inverseTable, &sourceRange, &table, &destinationRange, &brightness, &contrast, &saturation)
                >= 0
        else { return }
        let colourspace = frame.pointee.colorspace
        let coefficients =
            colourspace == AVCOL_SPC_BT709
            ? sws_getCoefficients(SWS_CS_ITU709) : sws_getCoefficients(SWS_CS_ITU601)
        let format = AVPixelFormat(rawValue: frame.pointee.format)
        let fullRange =
            frame.pointee.color_range == AVCOL_RANGE_JPEG || format == AV_PIX_FMT_YUVJ420P
            || format == AV_PIX_FMT_YUVJ422P || format == AV_PIX_FMT_YUVJ444P || format == AV_PIX_FMT_YUVJ440P
        _ = sws_setColorspaceDetails(
            scaler, coefficients, fullRange ? 1 : sourceRange, coefficients, 1, brightness, contrast, saturation)
    }
}

/// FFmpeg error codes as text.
enum FFmpegError {
    static func text(_ code: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        av_strerror(code, &buffer, buffer.count)
        let bytes = buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension RGBImage {
    /// The picture as an RGB24 `Frame` (in a one-buffer pool of its own), so a still goes through the
    /// same frame-based stages as video (face detection in `classify`).
    public func frame(sourceID: String) -> Frame {
        let pool = FramePool(bufferSize: max(1, self.pixels.count), capacity: 1)
        let buffer = pool.acquire(waiting: false)!  // a fresh pool always has its one buffer
        self.pixels.withUnsafeBytes { buffer.pointer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        return Frame(
            buffer: buffer, pixelFormat: .rgb24, width: self.width, height: self.height,
            planes: [Frame.Plane(offset: 0, rowStride: self.rowStride, rows: self.height)],
            colour: ColourDescription(range: .full, matrix: .bt601), presentationTimeSeconds: 0,
            captureTimeNanoseconds: 0, sequence: 0, sourceID: sourceID)
    }
}
