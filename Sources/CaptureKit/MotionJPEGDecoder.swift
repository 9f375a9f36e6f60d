import CFFmpeg
import CFFmpegLoader

/// Decodes MJPEG camera frames one at a time with libavcodec. UVC MJPEG frames are baseline JPEGs,
/// often without Huffman tables (FFmpeg's decoder supplies the standard ones). Owns the codec state.
final class MotionJPEGDecoder {
    struct Failure: Error {
        var reason: String
    }

    private var context: UnsafeMutablePointer<AVCodecContext>?
    private var picture: UnsafeMutablePointer<AVFrame>?
    private var packet: UnsafeMutablePointer<AVPacket>?

    init() throws(Failure) {
        if let reason = FFmpegLibraries.loadCodecs() { throw Failure(reason: reason) }
        av_log_set_level(AV_LOG_QUIET)
        guard let codec = lv_avcodec_find_decoder(AV_CODEC_ID_MJPEG) else {
            throw Failure(reason: "this FFmpeg build has no MJPEG decoder")
        }
        self.context = lv_avcodec_alloc_context3(codec)
        self.picture = av_frame_alloc()
        self.packet = lv_av_packet_alloc()
        guard let context = self.context, self.picture != nil, self.packet != nil else {
            throw Failure(reason: "out of memory creating the MJPEG decoder")
        }
        // One thread: frame threading would delay each picture by a frame per thread.
        context.pointee.thread_count = 1
        guard lv_avcodec_open2(context, codec, nil) >= 0 else {
            throw Failure(reason: "cannot open FFmpeg's MJPEG decoder")
        }
    }

    deinit {
        lv_av_packet_free(&self.packet)
        av_frame_free(&self.picture)
        lv_avcodec_free_context(&self.context)
    }

    /// Decodes one JPEG and gives the picture to `body` (valid only inside it).
    func decode<Result>(
        _ bytes: UnsafeRawBufferPointer, _ body: (UnsafeMutablePointer<AVFrame>) -> Result
    ) throws(Failure) -> Result {
        guard let context = self.context, let picture = self.picture, let packet = self.packet,
            let base = bytes.baseAddress, bytes.count > 0
        else { throw Failure(reason: "empty MJPEG frame") }
        // Not reference-counted: avcodec_send_packet copies the bytes before the driver reuses them.
        packet.pointee.data = UnsafeMutablePointer(mutating: base.assumingMemoryBound(to: UInt8.self))
        packet.pointee.size = Int32(bytes.count)
        defer { lv_av_packet_unref(packet) }
        let sent = lv_avcodec_send_packet(context, packet)
        guard sent >= 0 else { throw Failure(reason: "damaged MJPEG frame (\(FFmpegError.text(sent)))") }
        let received = lv_avcodec_receive_frame(context, picture)
        guard received >= 0 else { throw Failure(reason: "damaged MJPEG frame (\(FFmpegError.text(received)))") }
        defer { av_frame_unref(picture) }
        return body(picture)
    }
}
