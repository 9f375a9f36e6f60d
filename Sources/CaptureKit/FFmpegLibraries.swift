import CFFmpegLoader

/// libavcodec and libavformat, opened the first time a source needs them: a YUYV camera never does
/// (why they are not linked: Sources/CaptureKit/CFFmpegLoader/include/ffmpeg_loader.h).
enum FFmpegLibraries {
    /// Opens libavcodec (MJPEG cameras, the PNG encoder); nil, or why it cannot be, in words a user can act on.
    static func loadCodecs() -> String? {
        Self.load(lv_ffmpeg_load_codecs)
    }

    /// Opens libavformat and libavcodec (clips, stills, streams); nil, or why they cannot be.
    static func loadFormats() -> String? {
        Self.load(lv_ffmpeg_load_formats)
    }

    private static func load(_ loader: (UnsafeMutablePointer<CChar>?, Int) -> Int32) -> String? {
        var message = [CChar](repeating: 0, count: 512)
        let status = message.withUnsafeMutableBufferPointer { loader($0.baseAddress, $0.count) }
        return status == 0 ? nil : String(cString: message)
    }
}
