import CFFmpeg
import Foundation
import NIOConcurrencyHelpers
import Synchronization

/// A pixel layout, named by its FFmpeg `AVPixelFormat` (the V4L2 formats map onto these too).
public struct PixelFormat: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int32

    public init(rawValue: Int32) { self.rawValue = rawValue }
    init(_ format: AVPixelFormat) { self.rawValue = format.rawValue }

    public static let gray8 = PixelFormat(AV_PIX_FMT_GRAY8)
    public static let yuyv422 = PixelFormat(AV_PIX_FMT_YUYV422)
    public static let nv12 = PixelFormat(AV_PIX_FMT_NV12)
    public static let yuv420p = PixelFormat(AV_PIX_FMT_YUV420P)
    public static let rgb24 = PixelFormat(AV_PIX_FMT_RGB24)
    public static let bgr24 = PixelFormat(AV_PIX_FMT_BGR24)

    var avFormat: AVPixelFormat { AVPixelFormat(rawValue: self.rawValue) }

    public var description: String {
        av_get_pix_fmt_name(self.avFormat).map { String(cString: $0) } ?? "pixfmt(\(self.rawValue))"
    }

    /// Bytes and plane layout of a `width` × `height` picture, rows packed without padding.
    public func planeLayout(width: Int, height: Int) -> [Frame.Plane]? {
        var linesizes: (Int32, Int32, Int32, Int32) = (0, 0, 0, 0)
        let status = withUnsafeMutablePointer(to: &linesizes) {
            $0.withMemoryRebound(to: Int32.self, capacity: 4) {
                av_image_fill_linesizes($0, self.avFormat, Int32(width))
            }
        }
        guard status >= 0, let descriptor = av_pix_fmt_desc_get(self.avFormat) else { return nil }
        let strides = [linesizes.0, linesizes.1, linesizes.2, linesizes.3].map(Int.init)
        let chromaShift = Int(descriptor.pointee.log2_chroma_h)
        var planes: [Frame.Plane] = []
        var offset = 0
        for (index, stride) in strides.enumerated() where stride > 0 {
            let isChroma = index == 1 || index == 2
            let rows = isChroma ? (height + (1 << chromaShift) - 1) >> chromaShift : height
            planes.append(Frame.Plane(offset: offset, rowStride: stride, rows: rows))
            offset += stride * rows
        }
        return planes
    }
}

/// Luma range and YCbCr matrix of a frame: what the converter needs to produce PIL-like grey.
public struct ColourDescription: Sendable, Equatable {
    public enum Range: Sendable { case limited, full }
    public enum Matrix: Sendable { case bt601, bt709 }

    public var range: Range
    public var matrix: Matrix

    public init(range: Range, matrix: Matrix) {
        self.range = range
        self.matrix = matrix
    }

    /// Webcams (YUYV, NV12) and SD video: BT.601, limited range.
    public static let video601 = ColourDescription(range: .limited, matrix: .bt601)
    /// JPEG / MJPEG: BT.601, full range.
    public static let jpeg = ColourDescription(range: .full, matrix: .bt601)
}

/// Fixed-size byte buffers recycled between frames, so steady-state capture allocates nothing.
///
/// A frame holds its buffer until the last reference to it is dropped; then the buffer goes back.
/// `acquire(waiting:)` returns nil when all buffers are out and the caller does not want to wait
/// (a live camera then drops the frame and counts it); a replay source waits instead.
public final class FramePool: Sendable {
    // Checked Sendable: the free list and counters are behind the Mutex; the buffers themselves are
    // kept as addresses, since the pool never touches their bytes (it lends each to one PooledBuffer
    // at a time and frees them in deinit, when no PooledBuffer is left).
    public let bufferSize: Int
    public let capacity: Int
    /// Zeroed bytes after each buffer's `bufferSize`: swscale's SIMD readers load whole vectors and may
    /// read past the last pixel of the last row (FFmpeg's AV_INPUT_BUFFER_PADDING_SIZE is 64 for the
    /// same reason). Without it a frame whose buffer ended just before an unmapped page crashed in
    /// libswscale (seen under ThreadSanitizer, whose allocator puts buffers there).
    public static let overreadPadding = 64
    private struct State {
        /// Free buffers as address bit patterns (raw pointers are not Sendable).
        var free: [UInt]
        var outstanding = 0
        var closed = false
    }

    private let state: NIOLockedValueBox<State>
    private let returned = NSCondition()
    /// Every buffer's address, to free them.
    private let storage: [UInt]

    public init(bufferSize: Int, capacity: Int) {
        precondition(bufferSize > 0 && capacity > 0)
        self.bufferSize = bufferSize
        self.capacity = capacity
        let buffers = (0..<capacity).map { _ in
            let buffer = UnsafeMutableRawPointer.allocate(
                byteCount: bufferSize + Self.overreadPadding, alignment: 64)
            (buffer + bufferSize).initializeMemory(as: UInt8.self, repeating: 0, count: Self.overreadPadding)
            return buffer
        }
        self.storage = buffers.map { UInt(bitPattern: $0) }
        self.state = NIOLockedValueBox(State(free: self.storage))
    }

    deinit {
        for address in self.storage { UnsafeMutableRawPointer(bitPattern: address)!.deallocate() }
    }

    /// Buffers currently held by frames.
    public var outstanding: Int { self.state.withLockedValue { $0.outstanding } }

    /// Whether `close` was called (tests: a stopped source leaves no pool open).
    var isClosed: Bool { self.state.withLockedValue { $0.closed } }

    /// A free buffer, or nil when none is free and `waiting` is false (or the pool was closed).
    public func acquire(waiting: Bool) -> PooledBuffer? {
        while true {
            let buffer: UInt?? = self.state.withLockedValue { state in
                if state.closed { return .some(nil) }
                guard let buffer = state.free.popLast() else { return nil }
                state.outstanding += 1
                return .some(buffer)
            }
            switch buffer {
            case .some(.some(let address)):
                return PooledBuffer(
                    pointer: UnsafeMutableRawPointer(bitPattern: address)!, size: self.bufferSize, pool: self)
            case .some(.none): return nil
            case .none:
                guard waiting else { return nil }
                self.returned.lock()
                self.returned.wait(until: Date().addingTimeInterval(0.05))
                self.returned.unlock()
            }
        }
    }

    /// Wakes waiters and refuses further acquisitions (a stopping source).
    public func close() {
        self.state.withLockedValue { $0.closed = true }
        self.returned.broadcast()
    }

    fileprivate func release(_ pointer: UnsafeMutableRawPointer) {
        let address = UInt(bitPattern: pointer)
        self.state.withLockedValue {
            $0.free.append(address)
            $0.outstanding -= 1
        }
        self.returned.broadcast()
    }
}

/// One buffer on loan from a `FramePool`; returned when this value is freed.
public final class PooledBuffer: @unchecked Sendable {
    // @unchecked because of `pointer` (raw pointers are not Sendable), which is safe to share: the
    // pool lends the buffer to this object alone until deinit hands it back, its bytes are written
    // only by the producer before the Frame holding it is published (handing the frame to another
    // thread orders those writes before every read), and consumers only read them.
    public let pointer: UnsafeMutableRawPointer
    public let size: Int
    /// Where the buffer goes back to (tests see which pool a frame's pixels came from).
    let pool: FramePool

    init(pointer: UnsafeMutableRawPointer, size: Int, pool: FramePool) {
        self.pointer = pointer
        self.size = size
        self.pool = pool
    }

    deinit { self.pool.release(self.pointer) }
}

/// A captured or decoded picture: pixels (in a pooled buffer), format, size, timing and origin.
/// Immutable once delivered; safe to pass between queues.
public final class Frame: Sendable {
    public struct Plane: Sendable, Equatable {
        public var offset: Int
        public var rowStride: Int
        public var rows: Int

        public init(offset: Int, rowStride: Int, rows: Int) {
            self.offset = offset
            self.rowStride = rowStride
            self.rows = rows
        }
    }

    public let buffer: PooledBuffer
    public let pixelFormat: PixelFormat
    public let width: Int
    public let height: Int
    public let planes: [Plane]
    public let colour: ColourDescription
    /// Presentation time in seconds from the start of the source (stream time for files,
    /// driver timestamp for cameras).
    public let presentationTimeSeconds: Double
    /// Monotonic clock (CLOCK_MONOTONIC, nanoseconds) when the frame was captured or decoded.
    public let captureTimeNanoseconds: UInt64
    /// 0, 1, 2 … per source, never reused, counting delivered frames only.
    public let sequence: UInt64
    public let sourceID: String
    /// The same picture as packed RGB24 (rows `width · 3` apart, full range), converted on the
    /// source's own thread when it was asked to (`MediaSource.Options.attachRGB24`); nil otherwise.
    public let rgb: PooledBuffer?

    public init(
        buffer: PooledBuffer, pixelFormat: PixelFormat, width: Int, height: Int, planes: [Plane],
        colour: ColourDescription, presentationTimeSeconds: Double, captureTimeNanoseconds: UInt64,
        sequence: UInt64, sourceID: String, rgb: PooledBuffer? = nil
    ) {
        self.rgb = rgb
        self.buffer = buffer
        self.pixelFormat = pixelFormat
        self.width = width
        self.height = height
        self.planes = planes
        self.colour = colour
        self.presentationTimeSeconds = presentationTimeSeconds
        self.captureTimeNanoseconds = captureTimeNanoseconds
        self.sequence = sequence
        self.sourceID = sourceID
    }

    /// Start of plane `index`.
    public func plane(_ index: Int) -> UnsafeMutablePointer<UInt8> {
        (self.buffer.pointer + self.planes[index].offset).assumingMemoryBound(to: UInt8.self)
    }
}

/// Why a source stopped delivering frames.
public enum SourceEnd: Sendable, Equatable, CustomStringConvertible {
    /// The whole file or stream was delivered.
    case endOfFile
    /// The data ended early or was damaged beyond recovery; frames before it were delivered.
    case truncated(String)
    /// A camera went away and did not come back (or reconnection is off).
    case deviceGone(String)
    case error(String)
    /// `stop()` was called.
    case stopped

    public var description: String {
        switch self {
        case .endOfFile: return "end of file"
        case .truncated(let reason): return "truncated: \(reason)"
        case .deviceGone(let reason): return "device gone: \(reason)"
        case .error(let reason): return "error: \(reason)"
        case .stopped: return "stopped"
        }
    }
}

/// What a source tells its consumer, in order, on the source's own thread.
public enum SourceEvent: Sendable {
    case frame(Frame)
    /// A camera disappeared (unplugged, ENODEV); the source keeps trying to reopen it.
    case disconnected(String)
    /// The camera is back with the same settings (or, after `waiting`, there for the first time); frames follow.
    case reconnected
    /// The camera was not there when the source started (not plugged in yet, driver not loaded); the
    /// source keeps trying to open it, and says `reconnected` when it does.
    case waiting(String)
    /// A damaged packet or MJPEG frame was skipped (running count).
    case skipped(count: Int, reason: String)
    /// Nothing more will come.
    case ended(SourceEnd)
}

/// Live sources (cameras, network streams) may drop frames under load; replay sources (files
/// under evaluation) never drop: the consumer may block the handler to slow the reader.
public enum SourceKind: Sendable, Equatable {
    case live
    case replay
}

/// The one abstraction the pipeline sees.
public protocol FrameSource: AnyObject, Sendable {
    /// Stable name for events and metrics (device path, file name or URL).
    var id: String { get }
    var kind: SourceKind { get }
    /// Starts delivering events to `handler`, on a thread the source owns. Throws when the
    /// source cannot be opened at all (missing file, busy camera): nothing is delivered then.
    func start(handler: @escaping @Sendable (SourceEvent) -> Void) throws
    /// Stops delivery; `ended(.stopped)` (or the real end, if it came first) is the last event.
    /// Returns once the source's thread has finished.
    func stop()
}

/// CLOCK_MONOTONIC in nanoseconds.
public func monotonicNanoseconds() -> UInt64 {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
}
