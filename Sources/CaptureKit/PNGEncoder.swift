import CFFmpeg
import CFFmpegLoader

/// Grey pictures to PNG bytes with libavcodec's PNG encoder (the eval report's face thumbnails).
/// It lives here because CaptureKit is the one room that links FFmpeg (docs/ARCHITECTURE.md).
public enum PNGEncoder {
    /// `pixels`: `width × height` bytes, row-major, 0 = black.
    public static func encodeGrey(_ pixels: [UInt8], width: Int, height: Int) throws -> [UInt8] {
        precondition(pixels.count == width * height && width > 0 && height > 0)
        func failure(_ what: String, _ code: Int32 = 0) -> CaptureError {
            CaptureError(
                code: .unsupportedFormat, source: "PNG encoder",
                message: code == 0 ? what : "\(what): \(FFmpegError.text(code))")
        }
        if let reason = FFmpegLibraries.loadCodecs() { throw failure(reason) }
        guard let codec = lv_avcodec_find_encoder(AV_CODEC_ID_PNG) else {
            throw failure("this FFmpeg has no PNG encoder (install libavcodec59 from Debian)")
        }
        var context = lv_avcodec_alloc_context3(codec)
        guard context != nil else { throw failure("out of memory") }
        defer { lv_avcodec_free_context(&context) }
        context!.pointee.width = Int32(width)
        context!.pointee.height = Int32(height)
        context!.pointee.pix_fmt = AV_PIX_FMT_GRAY8
        context!.pointee.time_base = AVRational(num: 1, den: 1)
        var status = lv_avcodec_open2(context, codec, nil)
        guard status >= 0 else { throw failure("cannot open the PNG encoder", status) }

        var frame = av_frame_alloc()
        guard frame != nil else { throw failure("out of memory") }
        defer { av_frame_free(&frame) }
        frame!.pointee.width = Int32(width)
        frame!.pointee.height = Int32(height)
        frame!.pointee.format = AV_PIX_FMT_GRAY8.rawValue
        status = av_frame_get_buffer(frame, 0)
        guard status >= 0 else { throw failure("cannot allocate a frame", status) }
        let stride = Int(frame!.pointee.linesize.0)
        pixels.withUnsafeBufferPointer { source in
            for row in 0..<height {
                (frame!.pointee.data.0! + row * stride).update(from: source.baseAddress! + row * width, count: width)
            }
        }
        status = lv_avcodec_send_frame(context, frame)
        guard status >= 0 else { throw failure("cannot encode", status) }
        status = lv_avcodec_send_frame(context, nil)  // flush: one picture in, one packet out
        var packet = lv_av_packet_alloc()
        guard packet != nil else { throw failure("out of memory") }
        defer { lv_av_packet_free(&packet) }
        status = lv_avcodec_receive_packet(context, packet)
        guard status >= 0 else { throw failure("no PNG came out", status) }
        return Array(UnsafeBufferPointer(start: packet!.pointee.data, count: Int(packet!.pointee.size)))
    }
}
