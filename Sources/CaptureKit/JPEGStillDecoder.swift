import CTurboJPEG
import Foundation

/// Still JPEG files, decoded with libjpeg-turbo as the reference decodes them.
///
/// PIL (the reference's `Image.open(...).convert('RGB')`) decodes JPEG with libjpeg(-turbo): ISLOW
/// inverse DCT and fancy (triangle-filter) chroma upsampling. FFmpeg's own JPEG decoder plus swscale
/// differs by a few levels per pixel, which moved the spoof probability by up to 0.028. So still JPEG
/// files go through TurboJPEG with the same settings (no TJFLAG_FASTDCT, no TJFLAG_FASTUPSAMPLE);
/// camera MJPEG and video keep FFmpeg.
public enum JPEGStillDecoder {
    /// Whether `path` is a local file that starts with a JPEG SOI marker (FF D8 FF): detected by
    /// content, not by extension.
    public static func isJPEGFile(_ path: String) -> Bool {
        guard !path.contains("://"), let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        guard let head = try? handle.read(upToCount: 3) else { return false }
        return head.count == 3 && head[head.startIndex] == 0xFF && head[head.startIndex + 1] == 0xD8
            && head[head.startIndex + 2] == 0xFF
    }

    /// The picture as stored (not yet turned upright) and its EXIF orientation.
    public static func decode(path: String) throws -> (image: RGBImage, orientation: Orientation) {
        let bytes = try Self.read(path)
        let markers = JPEGMarkers(bytes)
        let image = try TurboJPEGDecompressor(path: path).decode(bytes)
        return (image, markers.orientation)
    }

    static func read(_ path: String) throws -> [UInt8] {
        guard FileManager.default.fileExists(atPath: path) else {
            throw CaptureError(code: .notFound, source: path, message: "no such file")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CaptureError(code: .unreadable, source: path, message: "cannot read the file (permission denied?)")
        }
        guard !data.isEmpty else {
            throw CaptureError(code: .unsupportedFormat, source: path, message: "the file is empty")
        }
        return [UInt8](data)
    }
}

/// One TurboJPEG decompressor handle; freed (tjDestroy) when the value goes away.
final class TurboJPEGDecompressor {
    private let handle: tjhandle
    private let path: String

    init(path: String) throws {
        guard let handle = tjInitDecompress() else {
            throw CaptureError(
                code: .decodeFailed, source: path, message: "cannot set up the JPEG decoder (out of memory?)")
        }
        self.handle = handle
        self.path = path
    }

    deinit {
        tjDestroy(self.handle)
    }

    private var errorText: String {
        guard let text = tjGetErrorStr2(self.handle) else { return "unknown error" }
        return String(cString: text)
    }

    /// Decodes to packed RGB24. Greyscale is replicated (R = G = B = Y, as PIL's 'L' → 'RGB'); CMYK is
    /// converted with PIL's rule (see `cmykToRGB`).
    func decode(_ bytes: [UInt8]) throws -> RGBImage {
        try bytes.withUnsafeBufferPointer { jpeg -> RGBImage in
            guard let base = jpeg.baseAddress else {
                throw CaptureError(code: .unsupportedFormat, source: self.path, message: "the file is empty")
            }
            var width: Int32 = 0
            var height: Int32 = 0
            var subsampling: Int32 = 0
            var colourspace: Int32 = 0
            guard
                tjDecompressHeader3(
                    self.handle, base, UInt(jpeg.count), &width, &height, &subsampling, &colourspace) == 0
            else {
                throw CaptureError(
                    code: .decodeFailed, source: self.path,
                    message: "not a JPEG libjpeg-turbo can read: the header is damaged (\(self.errorText))")
            }
            let columns = Int(width)
            let rows = Int(height)
            // libjpeg-turbo 2.1 can report success with a 0x0 size when the data ends before a frame header.
            guard columns != 0 || rows != 0 else {
                throw CaptureError(
                    code: .decodeFailed, source: self.path,
                    message: "not a JPEG libjpeg-turbo can read: the header is damaged or cut off before the frame "
                        + "header (SOF)")
            }
            if let problem = FrameLimits.problem(width: columns, height: rows) {
                throw CaptureError(code: .decodeFailed, source: self.path, message: problem)
            }
            let isCMYK =
                colourspace == Int32(TJCS_CMYK.rawValue) || colourspace == Int32(TJCS_YCCK.rawValue)
            let channels = isCMYK ? 4 : 3
            let format = isCMYK ? TJPF_CMYK : TJPF_RGB
            var pixels = [UInt8](repeating: 0, count: columns * rows * channels)
            // ACCURATEDCT = ISLOW (also TurboJPEG's default); no FASTUPSAMPLE: fancy upsampling, as PIL.
            let flags = TJFLAG_ACCURATEDCT
            let status = pixels.withUnsafeMutableBufferPointer { output in
                tjDecompress2(
                    self.handle, base, UInt(jpeg.count), output.baseAddress, width, Int32(columns * channels), height,
                    Int32(format.rawValue), flags)
            }
            if status != 0 {
                let text = self.errorText
                let isWarning = tjGetErrorCode(self.handle) == Int32(TJERR_WARNING.rawValue)
                // PIL refuses a JPEG whose data ends early ("image file is truncated", unless
                // LOAD_TRUNCATED_IMAGES); libjpeg-turbo only warns and pads it. Other warnings (extraneous
                // bytes, …) PIL ignores, so they are accepted here too.
                if !isWarning {
                    throw CaptureError(
                        code: .decodeFailed, source: self.path,
                        message: "the JPEG data is damaged and cannot be decoded (libjpeg-turbo: \(text))")
                }
                if text.localizedCaseInsensitiveContains("premature end") {
                    throw CaptureError(
                        code: .decodeFailed, source: self.path,
                        message: "the JPEG file is truncated: its data ends before the picture does (libjpeg-turbo: "
                            + "\(text)); the reference (PIL) refuses it too")
                }
            }
            if isCMYK {
                return RGBImage(width: columns, height: rows, pixels: Self.cmykToRGB(pixels))
            }
            return RGBImage(width: columns, height: rows, pixels: pixels)
        }
    }

    /// PIL's CMYK → RGB: its JPEG plugin reads 4-component JPEGs as inverted ('CMYK;I', Adobe convention),
    /// then `convert('RGB')` computes channel = (255 - K) - (C · (255 - K)) / 255 with its MULDIV255 rounding.
    static func cmykToRGB(_ cmyk: [UInt8]) -> [UInt8] {
        let count = cmyk.count / 4
        var rgb = [UInt8](repeating: 0, count: count * 3)
        func muldiv255(_ a: Int, _ b: Int) -> Int {
            let product = a * b + 128
            return ((product >> 8) + product) >> 8
        }
        for pixel in 0..<count {
            let values = (0..<4).map { 255 - Int(cmyk[pixel * 4 + $0]) }
            let notK = 255 - values[3]
            for channel in 0..<3 {
                rgb[pixel * 3 + channel] = UInt8(clamping: notK - muldiv255(values[channel], notK))
            }
        }
        return rgb
    }
}

/// The EXIF orientation of a JPEG, read by walking the marker segments up to SOS.
///
/// Orientation comes from the EXIF APP1 segment (IFD0 tag 0x0112), as PIL's `exif_transpose` reads it.
/// FFmpeg used to supply it (frame metadata); TurboJPEG 2.x does not parse EXIF, so this is a small
/// parser with a bounds check on every read: damaged EXIF means "upright", never a crash.
struct JPEGMarkers {
    var orientation: Orientation = .up

    init(_ bytes: [UInt8]) {
        var exif: ArraySlice<UInt8>?
        var index = 2  // after SOI
        while index + 4 <= bytes.count {
            guard bytes[index] == 0xFF else { break }
            let marker = bytes[index + 1]
            if marker == 0xFF {  // fill byte
                index += 1
                continue
            }
            if marker == 0x01 || (0xD0...0xD8).contains(marker) {  // markers without a length
                index += 2
                continue
            }
            if marker == 0xDA || marker == 0xD9 { break }  // start of scan / end of image
            let length = Int(bytes[index + 2]) << 8 | Int(bytes[index + 3])
            guard length >= 2, index + 2 + length <= bytes.count else { break }
            let segment = bytes[(index + 4)..<(index + 2 + length)]
            if marker == 0xE1, exif == nil, segment.starts(with: Array("Exif\0\0".utf8)) {
                exif = segment.dropFirst(6)
            }
            index += 2 + length
        }
        if let exif { self.orientation = Self.orientation(tiff: exif) }
    }

    /// IFD0's Orientation (0x0112) in a TIFF header + IFD; `.up` when absent, damaged or out of range.
    static func orientation(tiff: ArraySlice<UInt8>) -> Orientation {
        let data = Array(tiff)
        guard data.count >= 8 else { return .up }
        let littleEndian: Bool
        switch (data[0], data[1]) {
        case (0x49, 0x49): littleEndian = true  // "II"
        case (0x4D, 0x4D): littleEndian = false  // "MM"
        default: return .up
        }
        func read16(_ at: Int) -> Int? {
            guard at >= 0, at + 2 <= data.count else { return nil }
            let (a, b) = (Int(data[at]), Int(data[at + 1]))
            return littleEndian ? a | b << 8 : a << 8 | b
        }
        func read32(_ at: Int) -> Int? {
            guard let low = read16(littleEndian ? at : at + 2), let high = read16(littleEndian ? at + 2 : at) else {
                return nil
            }
            return high << 16 | low
        }
        guard read16(2) == 42, let ifd = read32(4), let count = read16(ifd) else { return .up }
        for entry in 0..<count {
            let at = ifd + 2 + entry * 12
            guard let tag = read16(at), let type = read16(at + 2) else { return .up }
            guard tag == 0x0112 else { continue }
            let value: Int?
            switch type {
            case 3: value = read16(at + 8)  // SHORT
            case 4: value = read32(at + 8)  // LONG
            default: value = nil
            }
            return value.flatMap { Orientation(rawValue: $0) } ?? .up
        }
        return .up
    }
}
