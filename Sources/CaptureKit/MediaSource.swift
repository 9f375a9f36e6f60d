import CFFmpeg
import CFFmpegLoader
import Foundation
import Logging
import NIOConcurrencyHelpers
import Synchronization

/// Frames from anything FFmpeg opens: files of any container/codec it reads, still images,
/// image sequences and network URLs (rtsp://, http://). Frames arrive upright (display-matrix
/// rotation and EXIF orientation applied), in a pooled buffer, on a thread the source owns.
public final class MediaSource: FrameSource, Sendable {
    // Sendable as checked by the compiler: what the decode thread changes lives in its
    // `MediaDecoder` (made by `start`, moved into the thread, never shared); what `stop` and the
    // thread share is in `control`.

    public enum Pacing: Sendable, Equatable {
        /// As a camera would deliver: each frame at its presentation time (daemon demos).
        case realTime
        /// As fast as the consumer takes them, never dropping (evaluation).
        case asFastAsPossible
    }

    public struct Options: Sendable {
        public var pacing: Pacing = .asFastAsPossible
        /// Frames that may be in flight at once (pool size). A replay source waits when all are out.
        public var poolCapacity = 8
        /// Connect/read timeout for network URLs.
        public var networkTimeoutSeconds = 5.0
        /// Reopen a network stream that fails, with backoff, until stopped.
        public var reconnect = true
        /// A network stream that cannot be opened at start (camera not up yet, server refusing) is waited
        /// for: `start` succeeds, `.waiting` is delivered and the stream is tried with backoff until it
        /// opens (then `.reconnected`). False: `start` throws. Files are never waited for.
        public var waitForStream = false
        /// Decoder threads (1 keeps one core per source).
        public var decoderThreads = 1
        /// Also convert each frame to RGB24 on the decode thread (`Frame.rgb`), with the same
        /// conversion `PixelConverter` does: moves that work off the consumer's thread when replaying
        /// as fast as possible (costs a second pool of RGB buffers).
        public var attachRGB24 = false

        public init() {}
    }

    public let id: String
    public let location: String
    public let options: Options
    public var kind: SourceKind {
        self.options.pacing == .realTime || self.isNetwork ? .live : .replay
    }

    var isNetwork: Bool {
        guard let scheme = self.location.split(separator: ":", maxSplits: 1).first, self.location.contains("://") else {
            return false
        }
        return scheme != "file"
    }

    fileprivate struct Control {
        var stopping = false
        var running = false
        /// The pools the decode thread acquires from, kept here so that `stop` can close them (a
        /// replay reader waiting for a buffer wakes up); see `install`.
        var pool: FramePool?
        var rgbPool: FramePool?
    }

    private let control = NIOLockedValueBox(Control())
    fileprivate let interruptFlag = InterruptFlag()
    /// Entered by `start`, left by the decode thread after `ended`: every `stop` waits on it.
    private let finished = DispatchGroup()

    public init(location: String, id: String? = nil, options: Options = Options()) {
        self.location = location
        self.id = id ?? location
        self.options = options
    }

    /// Opens the input (throwing a clear error when it cannot be read at all), then decodes on a
    /// thread of its own, delivering events to `handler`.
    public func start(handler: @escaping @Sendable (SourceEvent) -> Void) throws {
        let alreadyRunning = self.control.withLockedValue { state -> Bool in
            if state.running { return true }
            state.running = true
            // Entered with `running` set, so a `stop` that sees it running waits for the thread.
            self.finished.enter()
            return false
        }
        precondition(!alreadyRunning, "MediaSource.start called twice")
        let decoder: MediaDecoder
        do {
            if !self.isNetwork && JPEGStillDecoder.isJPEGFile(self.location) {
                // A still JPEG file is decoded as the reference (PIL → libjpeg-turbo) decodes it, not by
                // FFmpeg, so eval's stills get the pixels `classify` gets. A damaged one fails here, clearly.
                let (rgb, orientation) = try JPEGStillDecoder.decode(path: self.location)
                decoder = MediaDecoder(source: self, still: orientation.apply(to: rgb))
            } else {
                do {
                    let input = try MediaInput(
                        location: self.location,
                        timeoutSeconds: self.isNetwork ? self.options.networkTimeoutSeconds : nil,
                        decoderThreads: self.options.decoderThreads, interrupt: self.interruptFlag)
                    decoder = MediaDecoder(source: self, input: input)
                } catch  where self.isNetwork && self.options.waitForStream {
                    // A stream that is not up yet is waited for on the decode thread (below).
                    MediaSource.logger.warning(
                        "stream not there: waiting for it", metadata: ["source": "\(self.id)", "error": "\(error)"])
                    decoder = MediaDecoder(source: self, waitingBecause: "\(error)")
                }
            }
        } catch {
            self.control.withLockedValue { $0.running = false }
            self.finished.leave()
            throw error
        }
        // The decoder is not Sendable: the box moves it (a disconnected value) into the thread, which
        // takes it out once; from then on it is that thread's alone. (A Synchronization Mutex, for its
        // `sending` value; never contended, and the thread's start orders it for TSan.)
        let handoff = Mutex<MediaDecoder?>(decoder)
        let thread = Thread { [self] in
            guard let decoder = handoff.withLock({ $0.take() }) else { preconditionFailure("decoder taken twice") }
            let end: SourceEnd
            if let reason = decoder.waitingBecause, !decoder.waitForStream(reason, handler: handler) {
                end = .stopped
            } else {
                end =
                    decoder.still.map { decoder.deliver(still: $0, handler: handler) } ?? decoder.run(handler: handler)
            }
            decoder.input = nil
            decoder.still = nil
            handler(.ended(end))
            self.finished.leave()
        }
        thread.name = "livenessd.media"
        thread.start()
    }

    public func stop() {
        let wasRunning = self.control.withLockedValue { state -> Bool in
            state.stopping = true
            // Closed under the lock that `install` takes: a pool is either here now (closed) or
            // installed later (and then closed by `install`), so whichever pool the decode thread
            // waits on is closed.
            state.pool?.close()
            state.rgbPool?.close()
            return state.running
        }
        guard wasRunning else { return }
        self.interruptFlag.set()
        self.finished.wait()
        self.control.withLockedValue { $0.running = false }
    }

    var stopping: Bool { self.control.withLockedValue { $0.stopping } }

    /// The pools the decode thread acquires from at present (tests: all closed once `stop` returns).
    var currentPools: [FramePool] { self.control.withLockedValue { [$0.pool, $0.rgbPool].compactMap { $0 } } }

    /// Called by the decode thread with each pool it is about to acquire from (`slot`: which one):
    /// closes the pool it replaces, and closes this one at once when `stop` has begun.
    fileprivate func install(_ pool: FramePool, as slot: WritableKeyPath<Control, FramePool?>) {
        self.control.withLockedValue { state in
            state[keyPath: slot]?.close()
            state[keyPath: slot] = pool
            if state.stopping { pool.close() }
        }
    }

    /// Formats delivered as decoded; the first four can also be turned upright in place.
    static let rotatableFormats: Set<PixelFormat> = [.yuv420p, .gray8, .rgb24, .bgr24]
    static let deliverableFormats: Set<PixelFormat> = rotatableFormats.union([.nv12, .yuyv422])

    /// Pixel width, rows and bytes per pixel of each plane of the formats MediaSource delivers.
    static func planeGeometry(
        _ format: PixelFormat, width: Int, height: Int
    ) -> [(width: Int, height: Int, bytesPerPixel: Int)] {
        let chromaWidth = (width + 1) / 2
        let chromaHeight = (height + 1) / 2
        switch format {
        case .yuv420p: return [(width, height, 1), (chromaWidth, chromaHeight, 1), (chromaWidth, chromaHeight, 1)]
        case .nv12: return [(width, height, 1), (chromaWidth, chromaHeight, 2)]
        case .yuyv422: return [(chromaWidth * 2, height, 2)]
        case .rgb24, .bgr24: return [(width, height, 3)]
        default: return [(width, height, 1)]  // gray8
        }
    }

    static func isRGBLike(_ format: PixelFormat) -> Bool {
        guard let descriptor = av_pix_fmt_desc_get(format.avFormat) else { return false }
        let flags = descriptor.pointee.flags
        return flags & UInt64(AV_PIX_FMT_FLAG_RGB) != 0 || flags & UInt64(AV_PIX_FMT_FLAG_PAL) != 0
    }

    static let logger = Logger(label: "livenessd.media")

    /// Sleeps in short steps so that `stop()` is honoured promptly.
    static func sleep(nanoseconds: UInt64, unless stop: () -> Bool) {
        var remaining = nanoseconds
        while remaining > 0 && !stop() {
            let step = min(remaining, 20_000_000)
            var request = timespec(tv_sec: Int(step / 1_000_000_000), tv_nsec: Int(step % 1_000_000_000))
            nanosleep(&request, nil)
            remaining -= step
        }
    }
}

/// The decode thread's side of a `MediaSource`: the input, the pools it fills and the conversion
/// state. Not Sendable: `start` makes it and moves it into the decode thread, which alone uses it.
final class MediaDecoder {
    let source: MediaSource
    var input: MediaInput?
    /// A still JPEG file, already decoded (upright) by `start`: delivered as one RGB24 frame.
    var still: RGBImage?
    private var pool: FramePool?
    private var poolLayout: (format: PixelFormat, width: Int, height: Int)?
    private var planeLayout: [Frame.Plane] = []
    private var sequence: UInt64 = 0
    private var skipped = 0
    private var scaler: OpaquePointer?
    private var scalerKey: (PixelFormat, Int, Int)?
    private var scratch: [UInt8] = []
    private var rgbPool: FramePool?
    private var rgbPoolSize: (width: Int, height: Int)?
    private let rgbConverter = PixelConverter()

    /// Set when the stream could not be opened at start and is to be waited for.
    var waitingBecause: String?

    convenience init(source: MediaSource, waitingBecause reason: String) {
        self.init(source: source)
        self.waitingBecause = reason
    }

    /// Reports `.waiting`, then opens the stream with backoff until it works (`.reconnected`, true) or the
    /// source is stopped (false).
    func waitForStream(_ reason: String, handler: @Sendable (SourceEvent) -> Void) -> Bool {
        handler(.waiting(reason))
        var backoff = 0.1
        guard self.reopen(backoff: &backoff) else { return false }
        MediaSource.logger.notice("stream appeared", metadata: ["source": "\(self.id)"])
        handler(.reconnected)
        return true
    }

    init(source: MediaSource, input: MediaInput? = nil, still: RGBImage? = nil) {
        self.source = source
        self.input = input
        self.still = still
    }

    deinit {
        if let scaler = self.scaler { sws_freeContext(scaler) }
    }

    private var id: String { self.source.id }
    private var location: String { self.source.location }
    private var options: MediaSource.Options { self.source.options }
    private var kind: SourceKind { self.source.kind }
    private var isNetwork: Bool { self.source.isNetwork }
    private var stopping: Bool { self.source.stopping }

    // MARK: - Decode loop

    func run(handler: @Sendable (SourceEvent) -> Void) -> SourceEnd {
        var clock = PacingClock()
        var backoff = 0.1
        while true {
            guard let input = self.input else { return .error("input closed") }
            let outcome = input.decodeNext { frame in
                if self.options.pacing == .realTime {
                    let pts = input.presentationTimeSeconds(of: frame)
                    switch clock.wait(forPresentationTime: pts, now: monotonicNanoseconds()) {
                    case .deliver: break
                    case .sleep(let nanoseconds): MediaSource.sleep(nanoseconds: nanoseconds, unless: { self.stopping })
                    case .reanchored(let jump):
                        if !clock.reportedJump {
                            clock.reportedJump = true
                            MediaSource.logger.warning(
                                "timestamps jumped; real-time pacing restarts at the new time (reported once per source)",
                                metadata: ["source": "\(self.id)", "jump_seconds": "\(jump)"])
                        }
                    }
                }
                if let event = self.deliver(frame, input: input) { handler(event) }
            }
            if self.stopping { return .stopped }
            switch outcome {
            case .frames:
                backoff = 0.1
                continue
            case .corrupt(let reason):
                self.skipped += 1
                handler(.skipped(count: self.skipped, reason: reason))
            case .endOfFile where self.isNetwork && self.options.reconnect:
                // A live stream has no end: the server went away. Reopen it.
                guard self.reconnect(after: "the stream ended", handler: handler, backoff: &backoff) else {
                    return .stopped
                }
                clock.reset()
            case .endOfFile:
                if let expected = input.expectedFrameCount, expected > 0, input.decodedFrames < expected * 9 / 10 {
                    return .truncated("the data ends after \(input.decodedFrames) of \(expected) frames")
                }
                return .endOfFile
            case .readError(let reason):
                guard self.isNetwork, self.options.reconnect else {
                    return input.decodedFrames > 0 ? .truncated(reason) : .error(reason)
                }
                guard self.reconnect(after: reason, handler: handler, backoff: &backoff) else { return .stopped }
                clock.reset()
            }
        }
    }

    /// Delivers a decoded still as one upright RGB24 frame, then ends as a one-frame file does.
    func deliver(still image: RGBImage, handler: @Sendable (SourceEvent) -> Void) -> SourceEnd {
        guard let layout = PixelFormat.rgb24.planeLayout(width: image.width, height: image.height),
            let plane = layout.first
        else { return .error("cannot lay out a \(image.width)x\(image.height) RGB frame") }
        self.planeLayout = layout
        let byteCount = plane.offset + plane.rowStride * plane.rows
        let pool = FramePool(bufferSize: byteCount, capacity: self.options.poolCapacity)
        self.source.install(pool, as: \.pool)  // closed at once when stopping
        self.pool = pool
        self.poolLayout = (.rgb24, image.width, image.height)
        guard let buffer = pool.acquire(waiting: self.kind == .replay) else {
            if self.stopping { return .stopped }
            return .error("no frame buffer free for the picture")
        }
        let destination = buffer.pointer.assumingMemoryBound(to: UInt8.self) + plane.offset
        image.pixels.withUnsafeBufferPointer { source in
            guard let base = source.baseAddress else { return }
            for row in 0..<image.height {
                (destination + row * plane.rowStride).update(from: base + row * image.rowStride, count: image.rowStride)
            }
        }
        let frame = Frame(
            buffer: buffer, pixelFormat: .rgb24, width: image.width, height: image.height, planes: layout,
            colour: ColourDescription(range: .full, matrix: .bt601), presentationTimeSeconds: 0,
            captureTimeNanoseconds: monotonicNanoseconds(), sequence: self.sequence, sourceID: self.id)
        self.sequence += 1
        handler(.frame(frame))
        return self.stopping ? .stopped : .endOfFile
    }

    /// Opens the stream again and again, waiting `backoff` (doubling to 5 s) before each try, until it opens
    /// (true) or the source is stopped (false).
    private func reopen(backoff: inout Double) -> Bool {
        while self.input == nil {
            MediaSource.sleep(nanoseconds: UInt64(backoff * 1e9), unless: { self.stopping })
            if self.stopping { return false }
            backoff = min(backoff * 2, 5)
            self.input = try? MediaInput(
                location: self.location, timeoutSeconds: self.options.networkTimeoutSeconds,
                decoderThreads: self.options.decoderThreads, interrupt: self.source.interruptFlag)
        }
        return true
    }

    /// Reports `.disconnected`, reopens the input with backoff until it succeeds (then reports
    /// `.reconnected`, true) or the source is stopped (false).
    private func reconnect(
        after reason: String, handler: @Sendable (SourceEvent) -> Void, backoff: inout Double
    ) -> Bool {
        handler(.disconnected(reason))
        self.input = nil
        guard self.reopen(backoff: &backoff) else { return false }
        handler(.reconnected)
        return true
    }

    /// Copies (and rotates, converting first when the format cannot be rotated in place) a decoded
    /// frame into a pooled buffer.
    private func deliver(_ frame: UnsafeMutablePointer<AVFrame>, input: MediaInput) -> SourceEvent? {
        if frame.pointee.flags & AV_FRAME_FLAG_CORRUPT != 0 {
            self.skipped += 1
            return .skipped(count: self.skipped, reason: "corrupt frame (decoder concealed damage)")
        }
        let width = Int(frame.pointee.width)
        let height = Int(frame.pointee.height)
        // Refused before any buffer is sized for it: a crafted stream can claim any size.
        if let problem = FrameLimits.problem(width: width, height: height) {
            self.skipped += 1
            return .skipped(count: self.skipped, reason: problem)
        }
        var format = PixelFormat(rawValue: frame.pointee.format)
        var colour = input.colour(of: frame)
        if format.rawValue == AV_PIX_FMT_YUVJ420P.rawValue {
            format = .yuv420p
            colour.range = .full
        }
        let orientation = input.orientation(of: frame)
        let rotatable = MediaSource.rotatableFormats
        let deliverable = MediaSource.deliverableFormats
        var planes: [(UnsafePointer<UInt8>, Int)] = []
        if deliverable.contains(format) && (orientation == .up || rotatable.contains(format)) {
            let data = frame.pointee.data
            let strides = frame.pointee.linesize
            for (pointer, stride) in [
                (data.0, strides.0), (data.1, strides.1), (data.2, strides.2), (data.3, strides.3),
            ] {
                guard let pointer else { break }
                planes.append((UnsafePointer(pointer), Int(stride)))
            }
        } else {
            // Anything else (10-bit, 4:2:2, 4:4:4, RGBA, palettes …) becomes 8-bit 4:2:0, or RGB24
            // for RGB-like sources, keeping the range as it is.
            let target: PixelFormat = MediaSource.isRGBLike(format) ? .rgb24 : .yuv420p
            guard let converted = self.convert(frame, to: target, width: width, height: height, colour: colour) else {
                self.skipped += 1
                return .skipped(count: self.skipped, reason: "cannot convert pixel format \(format)")
            }
            planes = converted
            format = target
        }
        let size = PlaneRotation.size(width: width, height: height, orientation: orientation)
        if self.pool == nil || self.poolLayout?.format != format || self.poolLayout?.width != size.width
            || self.poolLayout?.height != size.height
        {
            guard let layout = format.planeLayout(width: size.width, height: size.height) else { return nil }
            let byteCount = layout.last.map { $0.offset + $0.rowStride * $0.rows } ?? 0
            self.planeLayout = layout
            let pool = FramePool(bufferSize: byteCount, capacity: self.options.poolCapacity)
            self.source.install(pool, as: \.pool)  // closes the old one; this one too when stopping
            self.pool = pool
            self.poolLayout = (format, size.width, size.height)
        }
        guard let pool = self.pool, let buffer = pool.acquire(waiting: self.kind == .replay) else {
            if self.stopping { return nil }
            self.skipped += 1
            return .skipped(count: self.skipped, reason: "all frame buffers busy (consumer too slow)")
        }
        let destination = buffer.pointer.assumingMemoryBound(to: UInt8.self)
        let layout = self.planeLayout
        for (index, geometry) in MediaSource.planeGeometry(format, width: width, height: height).enumerated() {
            PlaneRotation.apply(
                orientation, source: planes[index].0, sourceStride: planes[index].1, width: geometry.width,
                height: geometry.height, bytesPerPixel: geometry.bytesPerPixel,
                destination: destination + layout[index].offset, destinationStride: layout[index].rowStride)
        }
        let delivered = Frame(
            buffer: buffer, pixelFormat: format, width: size.width, height: size.height, planes: layout,
            colour: colour, presentationTimeSeconds: input.presentationTimeSeconds(of: frame),
            captureTimeNanoseconds: monotonicNanoseconds(), sequence: self.sequence, sourceID: self.id)
        self.sequence += 1
        guard self.options.attachRGB24, format != .rgb24 else { return .frame(delivered) }
        return self.attachingRGB(to: delivered).map { .frame($0) }
    }

    /// `frame` with its RGB24 twin (`Options.attachRGB24`); nil when stopping.
    private func attachingRGB(to frame: Frame) -> Frame? {
        if self.rgbPool == nil || self.rgbPoolSize?.width != frame.width || self.rgbPoolSize?.height != frame.height {
            let rgbPool = FramePool(bufferSize: frame.width * frame.height * 3, capacity: self.options.poolCapacity)
            self.source.install(rgbPool, as: \.rgbPool)  // closes the old one; this one too when stopping
            self.rgbPool = rgbPool
            self.rgbPoolSize = (frame.width, frame.height)
        }
        guard let rgbPool = self.rgbPool, let buffer = rgbPool.acquire(waiting: self.kind == .replay) else {
            return self.stopping ? nil : frame  // no RGB buffer free (live): the consumer converts itself
        }
        do {
            try self.rgbConverter.convert(frame, to: .rgb24, into: buffer.pointer.assumingMemoryBound(to: UInt8.self))
        } catch {
            return frame
        }
        return Frame(
            buffer: frame.buffer, pixelFormat: frame.pixelFormat, width: frame.width, height: frame.height,
            planes: frame.planes, colour: frame.colour, presentationTimeSeconds: frame.presentationTimeSeconds,
            captureTimeNanoseconds: frame.captureTimeNanoseconds, sequence: frame.sequence, sourceID: frame.sourceID,
            rgb: buffer)
    }

    /// swscale into the source's scratch buffer (same size, no range change).
    private func convert(
        _ frame: UnsafeMutablePointer<AVFrame>, to target: PixelFormat, width: Int, height: Int,
        colour: ColourDescription
    ) -> [(UnsafePointer<UInt8>, Int)]? {
        let source = PixelFormat(rawValue: frame.pointee.format)
        guard let layout = target.planeLayout(width: width, height: height) else { return nil }
        if self.scalerKey.map({ $0 != (source, width, height) }) ?? true {
            if let scaler = self.scaler { sws_freeContext(scaler) }
            self.scaler = sws_getContext(
                Int32(width), Int32(height), source.avFormat, Int32(width), Int32(height), target.avFormat,
                SWS_BILINEAR | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT, nil, nil, nil)
            self.scalerKey = (source, width, height)
            self.scratch = [UInt8](
                repeating: 0, count: layout.last!.offset + layout.last!.rowStride * layout.last!.rows)
            if let scaler = self.scaler {
                let coefficients = sws_getCoefficients(colour.matrix == .bt709 ? SWS_CS_ITU709 : SWS_CS_ITU601)
                let full: Int32 = colour.range == .full ? 1 : 0
                _ = sws_setColorspaceDetails(scaler, coefficients, full, coefficients, full, 0, 1 << 16, 1 << 16)
            }
        }
        guard let scaler = self.scaler else { return nil }
        return self.scratch.withUnsafeMutableBufferPointer { buffer -> [(UnsafePointer<UInt8>, Int)] in
            let base = buffer.baseAddress!
            var destinations: [UnsafeMutablePointer<UInt8>?] = layout.map { base + $0.offset } + [nil]
            var strides: [Int32] = layout.map { Int32($0.rowStride) } + [0]
            withUnsafePointer(to: &frame.pointee.data) { dataTuple in
                withUnsafePointer(to: &frame.pointee.linesize) { strideTuple in
                    dataTuple.withMemoryRebound(to: UnsafePointer<UInt8>?.self, capacity: 8) { sourcePlanes in
                        strideTuple.withMemoryRebound(to: Int32.self, capacity: 8) { sourceStrides in
                            _ = sws_scale(
                                scaler, sourcePlanes, sourceStrides, 0, Int32(height), &destinations, &strides)
                        }
                    }
                }
            }
            // The scratch buffer belongs to this source and is read by `deliver` right after.
            return layout.map { (UnsafePointer(base + $0.offset), $0.rowStride) }
        }
    }
}

/// A flag FFmpeg's interrupt callback polls, so a blocked network read returns when stopping.
final class InterruptFlag: Sendable {
    private let value = Synchronization.Atomic<Bool>(false)
    func set() { self.value.store(true, ordering: .relaxed) }
    var isSet: Bool { self.value.load(ordering: .relaxed) }
}

/// An opened demuxer + decoder for the best video stream. Owned by one MediaSource thread.
final class MediaInput {
    enum Outcome {
        /// One or more frames were handed to the callback (or a packet was consumed).
        case frames
        case corrupt(String)
        case endOfFile
        case readError(String)
    }

    let location: String
    private var format: UnsafeMutablePointer<AVFormatContext>?
    private var codec: UnsafeMutablePointer<AVCodecContext>?
    private var packet: UnsafeMutablePointer<AVPacket>?
    private var frame: UnsafeMutablePointer<AVFrame>?
    private let stream: UnsafeMutablePointer<AVStream>
    private let streamIndex: Int32
    private var flushing = false
    private var cachedOrientation: Orientation?
    private let interrupt: InterruptFlag
    private(set) var decodedFrames = 0
    /// The container's frame count, when it states one (used to tell a truncated file).
    let expectedFrameCount: Int?

    init(location: String, timeoutSeconds: Double?, decoderThreads: Int, interrupt: InterruptFlag) throws {
        if let reason = FFmpegLibraries.loadFormats() {
            throw CaptureError(code: .decodeFailed, source: location, message: reason)
        }
        av_log_set_level(AV_LOG_QUIET)
        lv_avformat_network_init()
        self.location = location
        self.interrupt = interrupt
        if !location.contains("://") {
            var status = stat()
            if stat(location, &status) != 0 {
                throw CaptureError(code: .notFound, source: location, message: "no such file")
            }
            if status.st_size == 0 {
                throw CaptureError(code: .unsupportedFormat, source: location, message: "the file is empty")
            }
        }
        var context = lv_avformat_alloc_context()
        guard context != nil else { throw CaptureError(code: .unreadable, source: location, message: "out of memory") }
        context!.pointee.interrupt_callback.callback = { opaque in
            guard let opaque else { return 0 }
            return Unmanaged<InterruptFlag>.fromOpaque(opaque).takeUnretainedValue().isSet ? 1 : 0
        }
        context!.pointee.interrupt_callback.opaque = Unmanaged.passUnretained(interrupt).toOpaque()
        var dictionary: OpaquePointer? = nil
        if let timeoutSeconds {
            let microseconds = String(Int(timeoutSeconds * 1e6))
            av_dict_set(&dictionary, "rw_timeout", microseconds, 0)
            av_dict_set(&dictionary, "timeout", microseconds, 0)
            if location.hasPrefix("rtsp") { av_dict_set(&dictionary, "rtsp_transport", "tcp", 0) }
        }
        let status = lv_avformat_open_input(&context, location, nil, &dictionary)
        av_dict_free(&dictionary)
        guard status >= 0, let opened = context else {
            throw ImageDecoder.openError(status, path: location)
        }
        self.format = opened
        if lv_avformat_find_stream_info(opened, nil) < 0 {
            lv_avformat_close_input(&self.format)
            throw CaptureError(code: .unsupportedFormat, source: location, message: "cannot read the stream layout")
        }
        var decoder: UnsafePointer<AVCodec>? = nil
        let index = lv_av_find_best_stream(opened, AVMEDIA_TYPE_VIDEO, -1, -1, &decoder, 0)
        guard index >= 0, let decoder else {
            lv_avformat_close_input(&self.format)
            throw CaptureError(
                code: .noVideo, source: location,
                message: "no video stream FFmpeg can decode (\(FFmpegError.text(index)))")
        }
        self.streamIndex = index
        self.stream = opened.pointee.streams[Int(index)]!
        let frames = Int(self.stream.pointee.nb_frames)
        self.expectedFrameCount = frames > 0 ? frames : nil
        self.codec = lv_avcodec_alloc_context3(decoder)
        guard let codec = self.codec, lv_avcodec_parameters_to_context(codec, self.stream.pointee.codecpar) >= 0 else {
            lv_avformat_close_input(&self.format)
            throw CaptureError(code: .decodeFailed, source: location, message: "cannot set up the decoder")
        }
        codec.pointee.thread_count = Int32(decoderThreads)
        guard lv_avcodec_open2(codec, decoder, nil) >= 0 else {
            lv_avcodec_free_context(&self.codec)
            lv_avformat_close_input(&self.format)
            throw CaptureError(
                code: .unsupportedFormat, source: location,
                message: "FFmpeg cannot decode \(String(cString: decoder.pointee.name)) in this build")
        }
        self.packet = lv_av_packet_alloc()
        self.frame = av_frame_alloc()
    }

    deinit {
        av_frame_free(&self.frame)
        lv_av_packet_free(&self.packet)
        lv_avcodec_free_context(&self.codec)
        lv_avformat_close_input(&self.format)
    }

    func presentationTimeSeconds(of frame: UnsafeMutablePointer<AVFrame>) -> Double {
        let timestamp = frame.pointee.best_effort_timestamp
        guard timestamp != Int64.min else { return 0 }
        let base = self.stream.pointee.time_base
        let start = self.stream.pointee.start_time == Int64.min ? 0 : self.stream.pointee.start_time
        return Double(timestamp - start) * Double(base.num) / Double(base.den)
    }

    func colour(of frame: UnsafeMutablePointer<AVFrame>) -> ColourDescription {
        ColourDescription(
            range: frame.pointee.color_range == AVCOL_RANGE_JPEG ? .full : .limited,
            matrix: frame.pointee.colorspace == AVCOL_SPC_BT709 ? .bt709 : .bt601)
    }

    /// Fixed per input: EXIF (stills) or the stream's display matrix, read from the first frame.
    func orientation(of frame: UnsafeMutablePointer<AVFrame>) -> Orientation {
        if let cached = self.cachedOrientation { return cached }
        let orientation = ImageDecoder.orientation(of: frame, stream: self.stream)
        self.cachedOrientation = orientation
        return orientation
    }

    /// Reads and decodes until at least one frame was passed to `body` (or an outcome to report).
    func decodeNext(_ body: (UnsafeMutablePointer<AVFrame>) -> Void) -> Outcome {
        guard let format = self.format, let codec = self.codec, let packet = self.packet, let frame = self.frame else {
            return .endOfFile
        }
        while true {
            let received = lv_avcodec_receive_frame(codec, frame)
            if received >= 0 {
                self.decodedFrames += 1
                body(frame)
                av_frame_unref(frame)
                return .frames
            }
            if received == cffmpeg_averror_eof() { return .endOfFile }
            if received != cffmpeg_averror_eagain() {
                return .corrupt("decoder error: \(FFmpegError.text(received))")
            }
            if self.flushing { return .endOfFile }
            if self.interrupt.isSet { return .endOfFile }
            let read = lv_av_read_frame(format, packet)
            if read == cffmpeg_averror_eof()
                || (read < 0 && format.pointee.pb != nil && lv_avio_feof(format.pointee.pb) != 0)
            {
                self.flushing = true
                _ = lv_avcodec_send_packet(codec, nil)
                continue
            }
            if read < 0 {
                // Flush what the decoder holds before reporting, so no decoded frame is lost.
                self.flushing = true
                _ = lv_avcodec_send_packet(codec, nil)
                var flushed = false
                while lv_avcodec_receive_frame(codec, frame) >= 0 {
                    self.decodedFrames += 1
                    body(frame)
                    av_frame_unref(frame)
                    flushed = true
                }
                _ = flushed
                return .readError("read error after \(self.decodedFrames) frames: \(FFmpegError.text(read))")
            }
            defer { lv_av_packet_unref(packet) }
            guard packet.pointee.stream_index == self.streamIndex else { continue }
            let sent = lv_avcodec_send_packet(codec, packet)
            if sent < 0 && sent != cffmpeg_averror_eagain() {
                return .corrupt("damaged packet skipped (\(FFmpegError.text(sent)))")
            }
        }
    }
}

/// Real-time pacing: each frame is due at its presentation time, measured from the first frame's.
/// Timestamps come from the file or stream and may be anything: a jump forward of more than
/// `maximumGap` or any jump backwards re-anchors the clock at that frame instead of sleeping for
/// hours, and a non-finite time is delivered at once; the arithmetic stays in Double until the sleep
/// is bounded, so no timestamp can overflow a conversion.
struct PacingClock {
    enum Step: Equatable {
        case deliver
        case sleep(nanoseconds: UInt64)
        /// The clock restarted at this frame; the jump in seconds (presentation time minus the expected).
        case reanchored(jump: Double)
    }

    /// The longest wait between two frames that is taken as the clip's own pace.
    static let maximumGap = 5.0

    private var anchor: (wall: UInt64, pts: Double)?
    var reportedJump = false

    mutating func reset() { self.anchor = nil }

    mutating func wait(forPresentationTime pts: Double, now: UInt64) -> Step {
        guard pts.isFinite else { return .deliver }
        guard let anchor = self.anchor else {
            self.anchor = (now, pts)
            return .deliver
        }
        let elapsed = Double(now >= anchor.wall ? now - anchor.wall : 0) / 1e9
        let ahead = (pts - anchor.pts) - elapsed
        if pts < anchor.pts || ahead > Self.maximumGap {
            self.anchor = (now, pts)
            return .reanchored(jump: pts - anchor.pts - elapsed)
        }
        return ahead > 0 ? .sleep(nanoseconds: UInt64(ahead * 1e9)) : .deliver
    }
}
