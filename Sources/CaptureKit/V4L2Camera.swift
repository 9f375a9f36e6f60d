import CFFmpeg
import CV4L2
import Foundation
import Logging
import NIOConcurrencyHelpers
import Synchronization

/// A V4L2 webcam (UVC, or any single-planar capture node) as a live `FrameSource`.
///
/// Streams memory-mapped buffers, copies each frame into a pooled buffer and hands the driver's
/// buffer straight back. When the camera goes away (unplugged: ENODEV, EIO, POLLERR, or no frame
/// for `frameTimeoutSeconds`) it delivers `.disconnected`, closes the node (so the kernel can let
/// it go), reopens `id` with backoff and the same format, then delivers `.reconnected`. All device
/// I/O happens on one thread the camera owns.
public final class V4L2Camera: FrameSource {
    public struct Configuration: Sendable {
        public var width = 640
        public var height = 480
        /// Requested rate; the driver picks the nearest it supports. Nil keeps the driver's rate.
        public var framesPerSecond: Double? = 30
        /// Raw formats, best first, delivered as the driver gives them. Grey is what the model uses.
        public var preferredFormats: [FourCC] = [.grey, .yuyv, .nv12]
        /// Decode MJPEG on the CPU when no preferred raw format offers the size (USB 2 webcams
        /// often offer 720p and up only as MJPEG).
        public var allowMotionJPEG = true
        /// Driver buffers; at least 4 so the driver keeps filling while a frame is copied out.
        public var driverBufferCount = 4
        /// Frames that may be held downstream at once; when all are out, new frames are dropped and counted.
        public var poolCapacity = 8
        /// No frame for this long counts as a disconnect (a stalled USB camera usually recovers on reopen).
        public var frameTimeoutSeconds = 3.0
        /// Reopen after a disconnect; false ends the source with `.deviceGone` instead.
        public var reconnect = true
        /// A camera that is missing at start (no such node, or one that does not answer) is waited for:
        /// `start` succeeds, `.waiting` is delivered and the node is tried with `backoff` until it opens
        /// (then `.reconnected`). False (`probe`): `start` throws at once.
        public var waitForDevice = false
        public var backoff = Backoff()

        public init() {}
    }

    /// Running counts, for metrics and `probe`.
    public struct Statistics: Sendable, Equatable {
        public var delivered = 0
        /// Frames dropped because every pool buffer was still held downstream.
        public var droppedPoolExhausted = 0
        /// Frames the driver marked damaged, or MJPEG frames that did not decode.
        public var skippedDamaged = 0
        /// Frames the driver's sequence numbers skipped: it had no free buffer (the consumer was too slow).
        public var lostByDriver = 0
        public var reconnects = 0
    }

    /// What a device offers, for `probe` and error messages.
    public struct DeviceInfo: Sendable {
        public var path: String
        public var node: String
        public var capability: V4L2Capability
        public var formats: [V4L2FormatDescription]
    }

    /// The source's name in events and status: the path, or the name a config's `cameras:` gives it.
    public let id: String
    /// The device node or /dev/v4l/by-id/… link that is opened (and reopened after an unplug).
    public let path: String
    public let kind = SourceKind.live
    public let configuration: Configuration
    private let logger: Logger

    private struct State {
        var started = false
        var stopRequested = false
        var wake: WakePipe?
        var captureThread: pthread_t?
        var format: V4L2StreamFormat?
        var statistics = Statistics()
    }

    private let state = NIOLockedValueBox(State())
    private let finished = DispatchGroup()

    /// `path` is kept as the source id and reopened after an unplug, so a /dev/v4l/by-id/… link
    /// finds the same camera again even when it comes back as another /dev/videoN.
    public init(path: String, id: String? = nil, configuration: Configuration = Configuration(), logger: Logger? = nil)
    {
        precondition(configuration.width > 0 && configuration.height > 0 && configuration.poolCapacity > 0)
        self.id = id ?? path
        self.path = path
        self.configuration = configuration
        var logger = logger ?? Logger(label: "livenessd.capture")
        logger[metadataKey: "capture.device"] = "\(path)"
        self.logger = logger
    }

    /// The negotiated format, once `start` returned.
    public var streamFormat: V4L2StreamFormat? { self.state.withLockedValue { $0.format } }

    public var statistics: Statistics { self.state.withLockedValue { $0.statistics } }

    /// Opens `path` briefly and lists its capabilities and formats.
    public static func describe(path: String) throws(V4L2Error) -> DeviceInfo {
        let device = try V4L2Device(opening: path)
        return DeviceInfo(
            path: path, node: device.node, capability: try device.capability(), formats: try device.formats())
    }

    public func start(handler: @escaping @Sendable (SourceEvent) -> Void) throws {
        let wake = try WakePipe(device: self.path)
        self.state.withLockedValue { state in
            precondition(!state.started, "V4L2Camera.start() called twice")
            state.started = true
            state.wake = wake
        }
        let opening = OpeningOutcome()
        self.finished.enter()
        let thread = Thread { [self] in
            defer { self.finished.leave() }
            self.state.withLockedValue { $0.captureThread = pthread_self() }
            self.run(wake: wake, handler: handler, opened: opening.report)
        }
        thread.name = "livenessd.v4l2"
        thread.start()
        do {
            try opening.wait()
        } catch {
            // The thread ends without delivering anything; a later start() may try again (a busy camera).
            self.finished.wait()
            self.state.withLockedValue { $0 = State() }
            throw error
        }
    }

    public func stop() {
        let (wake, onCaptureThread) = self.state.withLockedValue { state in
            state.stopRequested = true
            return (state.wake, state.captureThread.map { pthread_equal($0, pthread_self()) != 0 } ?? false)
        }
        wake?.signal()
        // From the handler (the capture thread itself) the loop ends after the handler returns.
        if !onCaptureThread { self.finished.wait() }
    }

    // MARK: - Capture thread

    private enum StreamEnd {
        case stopped
        case failed(V4L2Error)
    }

    /// A camera not there (yet): no node, or a node whose driver does not answer.
    private static func isAbsent(_ error: V4L2Error) -> Bool { error.code == .notFound || error.code == .disconnected }

    private func run(wake: WakePipe, handler: @Sendable (SourceEvent) -> Void, opened: (V4L2Error?) -> Void) {
        var session: CaptureSession
        var appeared = false
        do {
            session = try self.openSession(required: nil)
        } catch {
            guard self.configuration.waitForDevice, Self.isAbsent(error) else {
                opened(error)
                return
            }
            // A door terminal whose camera enumerates after the daemon starts (or is plugged in later) must
            // not fail: the source waits, and says so.
            opened(nil)
            self.logger.warning(
                "camera not there: waiting for it",
                metadata: ["capture.device": "\(self.path)", "capture.error": "\(error)"])
            handler(.waiting(error.description))
            var attempt = 0
            var lastProblem = error.code
            while true {
                if wake.wait(seconds: self.configuration.backoff.delaySeconds(attempt: attempt)) {
                    handler(.ended(.stopped))
                    return
                }
                do {
                    session = try self.openSession(required: nil)
                    break
                } catch {
                    attempt += 1
                    // Still absent is expected; a node that now exists but cannot be used (busy, no format)
                    // is worth a warning, once per kind of problem, and is tried again too.
                    if !Self.isAbsent(error) && error.code != lastProblem {
                        self.logger.warning(
                            "camera present but not usable yet", metadata: ["capture.error": "\(error)"])
                    }
                    lastProblem = error.code
                }
            }
            appeared = true
            self.logger.notice(
                "camera appeared", metadata: ["capture.device": "\(self.path)", "capture.attempts": "\(attempt + 1)"])
        }
        let format = session.format
        self.state.withLockedValue { $0.format = format }
        self.logger.info(
            "capturing", metadata: ["capture.format": "\(format)", "capture.node": "\(session.device.node)"])
        if appeared {
            handler(.reconnected)
        } else {
            opened(nil)
        }
        var assembler = FrameAssembler(sourceID: self.id, poolCapacity: self.configuration.poolCapacity)
        let end: SourceEnd
        capturing: while true {
            let outcome = self.stream(session, assembler: &assembler, wake: wake, handler: handler)
            session.close()
            guard case .failed(let error) = outcome, !self.stopRequested else {
                end = .stopped
                break
            }
            self.logger.info("camera disconnected", metadata: ["capture.error": "\(error)"])
            handler(.disconnected(error.description))
            guard self.configuration.reconnect else {
                end = .deviceGone(error.description)
                break
            }
            var attempt = 0
            while true {
                if wake.wait(seconds: self.configuration.backoff.delaySeconds(attempt: attempt)) {
                    end = .stopped
                    break capturing
                }
                do {
                    session = try self.openSession(required: format)
                    break
                } catch {
                    attempt += 1
                    self.logger.log(
                        level: attempt == 1 ? .info : .debug, "camera not back yet",
                        metadata: ["capture.error": "\(error)", "capture.attempt": "\(attempt)"])
                }
            }
            assembler.restart()
            self.state.withLockedValue { $0.statistics.reconnects += 1 }
            self.logger.info("camera reconnected", metadata: ["capture.attempts": "\(attempt + 1)"])
            handler(.reconnected)
        }
        assembler.close()
        handler(.ended(end))
    }

    private var stopRequested: Bool { self.state.withLockedValue { $0.stopRequested } }

    /// Dequeues, copies, requeues and delivers frames until stopped or the stream fails.
    private func stream(
        _ session: borrowing CaptureSession, assembler: inout FrameAssembler, wake: WakePipe,
        handler: @Sendable (SourceEvent) -> Void
    ) -> StreamEnd {
        let device = session.device.node
        let timeoutMilliseconds = Int32(clamping: Int((self.configuration.frameTimeoutSeconds * 1000).rounded()))
        do {
            while true {
                switch try session.device.wait(timeoutMilliseconds: timeoutMilliseconds, wake: wake.readEnd) {
                case .woken:
                    return .stopped
                case .timedOut:
                    return .failed(
                        V4L2Error(
                            code: .timedOut, device: device, operation: "poll",
                            message: "no frame from \(device) for \(self.configuration.frameTimeoutSeconds) s"))
                case .failed, .frame:
                    guard let buffer = try session.device.dequeue() else {
                        // Ready with nothing to dequeue: POLLERR without an errno to tell why.
                        return .failed(
                            V4L2Error(
                                code: .disconnected, device: device, operation: "poll",
                                message: "\(device) reported an error (POLLERR): unplugged, or the stream broke"))
                    }
                    let outcome = session.device.withBytes(of: buffer) {
                        assembler.assemble(buffer, bytes: $0, format: session.format)
                    }
                    try session.device.requeue(buffer.index)
                    self.deliver(outcome, lostByDriver: assembler.lostByDriver, handler: handler)
                }
            }
        } catch {
            return .failed(error)
        }
    }

    private func deliver(
        _ outcome: FrameAssembler.Outcome, lostByDriver: Int, handler: @Sendable (SourceEvent) -> Void
    ) {
        switch outcome {
        case .frame(let frame):
            self.state.withLockedValue {
                $0.statistics.delivered += 1
                $0.statistics.lostByDriver = lostByDriver
            }
            handler(.frame(frame))
        case .poolExhausted:
            self.state.withLockedValue { $0.statistics.droppedPoolExhausted += 1 }
        case .damaged(let reason):
            let count = self.state.withLockedValue {
                $0.statistics.skippedDamaged += 1
                return $0.statistics.skippedDamaged
            }
            handler(.skipped(count: count, reason: reason))
        }
    }

    /// Opens the node and negotiates: the configured preference the first time, exactly the
    /// `required` format after a reconnect (the pipeline must not see the format change).
    private func openSession(required: V4L2StreamFormat?) throws(V4L2Error) -> CaptureSession {
        var device = try V4L2Device(opening: self.path)
        let node = device.node
        let capability = try device.capability()
        guard capability.canCapture, capability.canStream else {
            let multiplanar = capability.deviceCapabilities & UInt32(V4L2_CAP_VIDEO_CAPTURE_MPLANE) != 0
            if multiplanar {
                throw V4L2Error(
                    code: .notACaptureDevice, device: node, operation: "VIDIOC_QUERYCAP",
                    message: "\(self.path) (driver \(capability.driver)) uses the multi-planar capture API, which "
                        + "livenessd does not support; use a UVC (USB) camera")
            }
            throw V4L2Error(
                code: .notACaptureDevice, device: node, operation: "VIDIOC_QUERYCAP",
                message:
                    "\(self.path) is not a video capture device (driver \(capability.driver), \"\(capability.card)\"): "
                    + "webcams also create metadata nodes; `v4l2-ctl --list-devices` shows which node captures")
        }
        let offered = try device.formats()
        let width = required?.width ?? self.configuration.width
        let height = required?.height ?? self.configuration.height
        let candidates = V4L2FormatChoice.candidates(
            offered: offered, preference: required.map { [$0.fourCC] } ?? self.configuration.preferredFormats,
            width: width, height: height,
            allowMotionJPEG: required.map { $0.fourCC.isMotionJPEG } ?? self.configuration.allowMotionJPEG)
        var chosen: V4L2StreamFormat?
        for fourCC in candidates {
            let negotiated = try device.setFormat(fourCC, width: width, height: height)
            if negotiated.fourCC == fourCC, negotiated.width == width, negotiated.height == height {
                chosen = negotiated
                break
            }
        }
        guard var format = chosen, format.fourCC.isMotionJPEG || RawFrameLayout(format) != nil else {
            var wanted = required.map { [$0.fourCC] } ?? self.configuration.preferredFormats
            if required == nil && self.configuration.allowMotionJPEG { wanted += [.mjpeg, .jpeg] }
            let usable = offered.filter { wanted.contains($0.fourCC) }
            let offers =
                usable.isEmpty
                ? "its formats are \(offered.map(\.fourCC.description).joined(separator: ", "))"
                : "it offers \(usable.map(\.summary).joined(separator: "; "))"
            throw V4L2Error(
                code: .noSuitableFormat, device: node, operation: "VIDIOC_S_FMT",
                message: "\(self.path) offers none of \(wanted.map(\.description).joined(separator: ", ")) "
                    + "at \(width)x\(height); \(offers). Choose a listed size "
                    + "(`livenessd probe --device \(self.path)` shows them all)")
        }
        let listed = offered.first { $0.fourCC == format.fourCC }?.intervals(width: width, height: height) ?? []
        let requested = self.configuration.framesPerSecond.map {
            V4L2FormatChoice.interval(framesPerSecond: $0, offered: listed)
        }
        format.interval = try device.setInterval(requested)
        try device.startStreaming(bufferCount: max(4, self.configuration.driverBufferCount))
        return CaptureSession(device: device, format: format)
    }
}

/// One open, streaming device and the format it was given.
private struct CaptureSession: ~Copyable {
    var device: V4L2Device
    let format: V4L2StreamFormat

    consuming func close() { self.device.close() }
}

/// Turns dequeued driver buffers into `Frame`s: pooled copies of raw formats, decoded MJPEG.
/// Sequence numbers and the presentation-time origin survive reconnects.
private struct FrameAssembler {
    enum Outcome {
        case frame(Frame)
        case poolExhausted
        case damaged(String)
    }

    let sourceID: String
    let poolCapacity: Int
    let startNanoseconds = monotonicNanoseconds()
    private var pool: FramePool?
    private var sequence: UInt64 = 0
    private var lastDriverSequence: UInt32?
    private(set) var lostByDriver = 0
    private var decoder: MotionJPEGDecoder?

    init(sourceID: String, poolCapacity: Int) {
        self.sourceID = sourceID
        self.poolCapacity = poolCapacity
    }

    /// A new stream after a reconnect: the driver counts from 0 again.
    mutating func restart() { self.lastDriverSequence = nil }

    /// No more frames: wakes anyone waiting on the pool.
    func close() { self.pool?.close() }

    mutating func assemble(_ buffer: DequeuedBuffer, bytes: UnsafeRawBufferPointer, format: V4L2StreamFormat) -> Outcome
    {
        // Only forward steps count: a driver that restarts or reorders its count has not lost frames.
        if let last = self.lastDriverSequence, case let step = buffer.sequence &- last, step > 1, step < 1 << 31 {
            self.lostByDriver += Int(step - 1)
        }
        self.lastDriverSequence = buffer.sequence
        if buffer.isDamaged { return .damaged("the driver marked frame \(buffer.sequence) damaged") }
        let captured = monotonicNanoseconds()
        let timestamp = buffer.monotonicNanoseconds ?? captured
        let presentationTime = (Double(timestamp) - Double(self.startNanoseconds)) / 1e9
        if format.fourCC.isMotionJPEG {
            return self.decode(bytes, presentationTime: presentationTime, captured: captured)
        }

        guard let pixelFormat = format.fourCC.pixelFormat, let layout = RawFrameLayout(format) else {
            return .damaged("\(format.fourCC) is not a format CaptureKit can deliver")
        }
        guard bytes.count >= layout.requiredBytes else {
            return .damaged("short frame: \(bytes.count) of \(layout.requiredBytes) bytes")
        }
        guard let pooled = self.buffer(bytes: layout.packedBytes) else { return .poolExhausted }
        layout.pack(bytes, into: pooled.pointer)
        return .frame(
            self.frame(
                pooled, pixelFormat, format.width, format.height, layout.planes, format.fourCC.colour, presentationTime,
                captured))
    }

    private mutating func decode(_ bytes: UnsafeRawBufferPointer, presentationTime: Double, captured: UInt64) -> Outcome
    {
        do throws(MotionJPEGDecoder.Failure) {
            let decoder: MotionJPEGDecoder
            if let existing = self.decoder {
                decoder = existing
            } else {
                decoder = try MotionJPEGDecoder()
                self.decoder = decoder
            }
            return try decoder.decode(bytes) { picture -> Outcome in
                let pixelFormat = PixelFormat(rawValue: picture.pointee.format)
                let width = Int(picture.pointee.width)
                let height = Int(picture.pointee.height)
                guard let planes = pixelFormat.planeLayout(width: width, height: height), let last = planes.last else {
                    return .damaged("MJPEG decoded to an unusable picture (\(pixelFormat) \(width)x\(height))")
                }
                let size = last.offset + last.rowStride * last.rows
                guard let pooled = self.buffer(bytes: size) else { return .poolExhausted }
                // Packed planes, rows unpadded: the same layout as PixelFormat.planeLayout.
                let written = withUnsafePointer(to: &picture.pointee.data) { data in
                    withUnsafePointer(to: &picture.pointee.linesize) { linesize in
                        data.withMemoryRebound(to: UnsafePointer<UInt8>?.self, capacity: 8) { planesPointer in
                            linesize.withMemoryRebound(to: Int32.self, capacity: 8) { strides in
                                av_image_copy_to_buffer(
                                    pooled.pointer.assumingMemoryBound(to: UInt8.self), Int32(size), planesPointer,
                                    strides,
                                    pixelFormat.avFormat, Int32(width), Int32(height), 1)
                            }
                        }
                    }
                }
                guard written == size else {
                    return .damaged("MJPEG frame could not be copied (\(FFmpegError.text(written)))")
                }
                return .frame(self.frame(pooled, pixelFormat, width, height, planes, .jpeg, presentationTime, captured))
            }
        } catch {
            return .damaged(error.reason)
        }
    }

    /// A pool buffer of at least `bytes`; a new pool when the frame size grew (MJPEG learns its size
    /// from the first decoded frame). Nil when the pool is exhausted: a live source drops the frame.
    private mutating func buffer(bytes: Int) -> PooledBuffer? {
        if self.pool.map({ $0.bufferSize < bytes }) ?? true {
            self.pool?.close()
            self.pool = FramePool(bufferSize: bytes, capacity: self.poolCapacity)
        }
        return self.pool?.acquire(waiting: false)
    }

    private mutating func frame(
        _ buffer: PooledBuffer, _ pixelFormat: PixelFormat, _ width: Int, _ height: Int, _ planes: [Frame.Plane],
        _ colour: ColourDescription, _ presentationTime: Double, _ captured: UInt64
    ) -> Frame {
        defer { self.sequence += 1 }
        return Frame(
            buffer: buffer, pixelFormat: pixelFormat, width: width, height: height, planes: planes, colour: colour,
            presentationTimeSeconds: presentationTime, captureTimeNanoseconds: captured, sequence: self.sequence,
            sourceID: self.sourceID)
    }
}

extension RawFrameLayout {
    /// The layout of a raw stream format; nil when the format is not raw or the driver's row pitch
    /// is smaller than a packed row (a broken driver).
    init?(_ format: V4L2StreamFormat) {
        guard let pixelFormat = format.fourCC.pixelFormat,
            let planes = pixelFormat.planeLayout(width: format.width, height: format.height),
            planes.allSatisfy({ $0.rowStride <= format.bytesPerLine })
        else { return nil }
        self.init(planes: planes, bytesPerLine: format.bytesPerLine)
    }
}

extension V4L2FormatDescription {
    /// "YUYV 640x480, 1280x720" for messages.
    var summary: String {
        switch self.sizes {
        case .discrete(let sizes):
            return "\(self.fourCC) " + sizes.map { "\($0.width)x\($0.height)" }.joined(separator: ", ")
        case .range(let widths, _, let heights, _):
            return
                "\(self.fourCC) \(widths.lowerBound)x\(heights.lowerBound) to "
                + "\(widths.upperBound)x\(heights.upperBound)"
        case .unlisted: return "\(self.fourCC) (sizes not listed)"
        }
    }
}

/// A pipe the capture thread polls beside the camera, so `stop()` interrupts a wait at once.
/// Once signalled it stays readable: stopping is final.
private final class WakePipe: Sendable {
    let readEnd: Int32
    let writeEnd: Int32

    init(device: String) throws(V4L2Error) {
        var ends: [Int32] = [-1, -1]
        try systemCall("pipe", device: device) { pipe(&ends) }
        self.readEnd = ends[0]
        self.writeEnd = ends[1]
    }

    deinit {
        close(self.readEnd)
        close(self.writeEnd)
    }

    func signal() {
        var byte: UInt8 = 1
        _ = write(self.writeEnd, &byte, 1)
    }

    /// Sleeps up to `seconds`; true when signalled.
    func wait(seconds: Double) -> Bool {
        var descriptor = pollfd(fd: self.readEnd, events: Int16(POLLIN), revents: 0)
        let deadline = monotonicNanoseconds() + UInt64(max(seconds, 0) * 1e9)
        while true {
            let now = monotonicNanoseconds()
            let remaining = now < deadline ? Int32(clamping: (deadline - now + 999_999) / 1_000_000) : 0
            let ready = poll(&descriptor, 1, remaining)
            if ready > 0 { return true }
            if ready == 0 || (ready < 0 && errno != EINTR) { return false }
        }
    }
}

/// The first open's result, handed from the capture thread to `start()`.
private final class OpeningOutcome: Sendable {
    private let result = NIOLockedValueBox<V4L2Error??>(nil)
    private let done = DispatchSemaphore(value: 0)

    func report(_ error: V4L2Error?) {
        self.result.withLockedValue { $0 = .some(error) }
        self.done.signal()
    }

    func wait() throws(V4L2Error) {
        self.done.wait()
        if let error = self.result.withLockedValue({ $0 }) ?? nil { throw error }
    }
}
