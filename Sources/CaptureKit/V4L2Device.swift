import CV4L2
import Foundation

/// A V4L2 camera failure: what failed, the OS error, and what an installer can do about it.
public struct V4L2Error: Error, Sendable, CustomStringConvertible {
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { self.rawValue }

        public static let notFound = Code(rawValue: "not-found")
        public static let permissionDenied = Code(rawValue: "permission-denied")
        public static let busy = Code(rawValue: "busy")
        public static let notACaptureDevice = Code(rawValue: "not-a-capture-device")
        public static let noSuitableFormat = Code(rawValue: "no-suitable-format")
        /// Unplugged, or the driver gave up on the stream (ENODEV, EIO, POLLERR).
        public static let disconnected = Code(rawValue: "disconnected")
        /// No frame within the configured time.
        public static let timedOut = Code(rawValue: "timed-out")
        public static let systemCallFailed = Code(rawValue: "system-call-failed")
    }

    public var code: Code
    /// The device node (or path) it happened on.
    public var device: String
    /// The failing system call or ioctl ("open", "VIDIOC_S_FMT").
    public var operation: String
    /// errno, when a system call failed.
    public var osError: Int32?
    public var message: String

    public init(code: Code, device: String, operation: String, osError: Int32? = nil, message: String) {
        self.code = code
        self.device = device
        self.operation = operation
        self.osError = osError
        self.message = message
    }

    /// Classifies a failed system call by its errno.
    public init(osError: Int32, operation: String, device: String) {
        let code: Code
        let message: String
        switch osError {
        case ENOENT:
            code = .notFound
            message = "\(device) does not exist: is the camera plugged in? (`v4l2-ctl --list-devices` lists cameras)"
        case EACCES, EPERM:
            code = .permissionDenied
            message = "no permission to use \(device): run livenessd as a member of the `video` group"
        case EBUSY:
            code = .busy
            message = "\(device) is busy: another process holds it (see `fuser \(device)`)"
        case ENODEV, ENXIO, EIO:
            code = .disconnected
            message = "\(device) stopped answering: unplugged, or the driver gave up (check `dmesg`)"
        default:
            code = .systemCallFailed
            message = "\(operation) failed on \(device)"
        }
        self.init(code: code, device: device, operation: operation, osError: osError, message: message)
    }

    public var description: String {
        guard let osError else { return self.message }
        return "\(self.message) [\(self.operation): \(String(cString: strerror(osError)))]"
    }
}

/// Runs a system call, retrying while it fails with EINTR; any other failure throws a `V4L2Error`.
@discardableResult
func systemCall(
    _ operation: @autoclosure () -> String, device: String, _ call: () -> Int32
) throws(V4L2Error) -> Int32 {
    while true {
        let result = call()
        if result >= 0 { return result }
        let error = errno
        if error != EINTR { throw V4L2Error(osError: error, operation: operation(), device: device) }
    }
}

/// What VIDIOC_QUERYCAP says about a device node.
public struct V4L2Capability: Sendable, Equatable {
    public var driver: String
    public var card: String
    public var busInfo: String
    /// The node's own capabilities (device_caps), V4L2_CAP_* bits.
    public var deviceCapabilities: UInt32

    public var canCapture: Bool { self.deviceCapabilities & UInt32(V4L2_CAP_VIDEO_CAPTURE) != 0 }
    public var canStream: Bool { self.deviceCapabilities & UInt32(V4L2_CAP_STREAMING) != 0 }
}

/// The format the driver accepted (VIDIOC_S_FMT / S_PARM), which every frame of a session has.
public struct V4L2StreamFormat: Sendable, Equatable, CustomStringConvertible {
    public var fourCC: FourCC
    public var width: Int
    public var height: Int
    public var bytesPerLine: Int
    public var imageBytes: Int
    /// Nil when the driver does not report one.
    public var interval: FrameInterval?

    public var description: String {
        let rate = self.interval.map { String(format: " @ %.3f fps", $0.framesPerSecond) } ?? ""
        let sizes =
            self.bytesPerLine > 0
            ? "\(self.bytesPerLine) bytes per line, \(self.imageBytes) per image"
            : "up to \(self.imageBytes) bytes per image"
        return "\(self.fourCC) \(self.width)x\(self.height)\(rate) (\(sizes))"
    }
}

/// One buffer the driver filled (VIDIOC_DQBUF): still the driver's until `requeue`.
struct DequeuedBuffer {
    var index: Int
    var bytesUsed: Int
    var sequence: UInt32
    var flags: UInt32
    var timestamp: timeval

    var isDamaged: Bool { self.flags & UInt32(V4L2_BUF_FLAG_ERROR) != 0 }

    /// The driver's timestamp on CLOCK_MONOTONIC in nanoseconds, when it uses that clock (UVC, vivid do).
    var monotonicNanoseconds: UInt64? {
        guard self.flags & UInt32(V4L2_BUF_FLAG_TIMESTAMP_MASK) == UInt32(V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC),
            self.timestamp.tv_sec >= 0
        else { return nil }
        return UInt64(self.timestamp.tv_sec) * 1_000_000_000 + UInt64(self.timestamp.tv_usec) * 1_000
    }
}

/// An open V4L2 device node and, once streaming, its memory-mapped buffers. Owns the descriptor and
/// the mappings: dropping the value stops streaming, unmaps and closes (so an unplugged node can go).
struct V4L2Device: ~Copyable {
    /// The path as given (a /dev/v4l/by-id/… link stays as it is) and the node it resolved to.
    let path: String
    let node: String
    private let descriptor: Int32
    private var mappings: [(address: UnsafeMutableRawPointer, length: Int)] = []
    private var streaming = false

    /// Opens `path`, following symbolic links (udev's by-id / by-path names) to the device node.
    init(opening path: String) throws(V4L2Error) {
        guard let resolved = realpath(path, nil) else {
            throw V4L2Error(osError: errno, operation: "realpath", device: path)
        }
        let node = String(cString: resolved)
        free(resolved)
        // Non-blocking: DQBUF is only called after poll says a frame is ready, and an unplug then
        // surfaces as an error instead of a hang.
        self.descriptor = try systemCall("open", device: node) { open(node, O_RDWR | O_NONBLOCK | O_CLOEXEC) }
        self.path = path
        self.node = node
    }

    deinit {
        if self.streaming {
            var type = Int32(V4L2_BUF_TYPE_VIDEO_CAPTURE.rawValue)
            _ = cv4l2_ioctl(self.descriptor, cv4l2_vidioc_streamoff(), &type)
        }
        for mapping in self.mappings { munmap(mapping.address, mapping.length) }
        Glibc.close(self.descriptor)
    }

    /// Ends this session now (stop streaming, unmap, close): an explicit name for the end of ownership.
    consuming func close() {}

    // MARK: ioctls

    /// VIDIOC_* with EINTR retried; failures throw with the request's name.
    func control<Argument>(_ request: UInt, _ name: String, _ argument: inout Argument) throws(V4L2Error) {
        let descriptor = self.descriptor
        try systemCall(name, device: self.node) {
            withUnsafeMutablePointer(to: &argument) { cv4l2_ioctl(descriptor, request, $0) }
        }
    }

    /// Like `control`, but an `expected` errno (an enumeration's end, an unsupported ioctl) returns false.
    func enumerate<Argument>(
        _ request: UInt, _ name: String, _ argument: inout Argument, endingWith expected: Set<Int32> = [EINVAL, ENOTTY]
    ) throws(V4L2Error) -> Bool {
        do {
            try self.control(request, name, &argument)
            return true
        } catch {
            if let osError = error.osError, expected.contains(osError) { return false }
            throw error
        }
    }

    func capability() throws(V4L2Error) -> V4L2Capability {
        var capability = v4l2_capability()
        guard try self.enumerate(cv4l2_vidioc_querycap(), "VIDIOC_QUERYCAP", &capability, endingWith: [ENOTTY]) else {
            throw V4L2Error(
                code: .notACaptureDevice, device: self.node, operation: "VIDIOC_QUERYCAP", osError: ENOTTY,
                message: "\(self.path) is not a V4L2 device: `v4l2-ctl --list-devices` lists the cameras")
        }
        let hasDeviceCaps = capability.capabilities & UInt32(V4L2_CAP_DEVICE_CAPS) != 0
        return V4L2Capability(
            driver: cString(tuple: capability.driver), card: cString(tuple: capability.card),
            busInfo: cString(tuple: capability.bus_info),
            deviceCapabilities: hasDeviceCaps ? capability.device_caps : capability.capabilities)
    }

    /// Every capture format with its sizes and, for listed sizes, its frame intervals.
    func formats() throws(V4L2Error) -> [V4L2FormatDescription] {
        var formats: [V4L2FormatDescription] = []
        var format = v4l2_fmtdesc()
        format.type = V4L2_BUF_TYPE_VIDEO_CAPTURE.rawValue
        while try self.enumerate(cv4l2_vidioc_enum_fmt(), "VIDIOC_ENUM_FMT", &format) {
            let fourCC = FourCC(rawValue: format.pixelformat)
            formats.append(
                V4L2FormatDescription(
                    fourCC: fourCC, description: cString(tuple: format.description),
                    isCompressed: format.flags & UInt32(V4L2_FMT_FLAG_COMPRESSED) != 0,
                    sizes: try self.sizes(of: fourCC)))
            format.index += 1
        }
        return formats
    }

    private func sizes(of fourCC: FourCC) throws(V4L2Error) -> V4L2FormatDescription.Sizes {
        var sizes: [V4L2FrameSize] = []
        var size = v4l2_frmsizeenum()
        size.pixel_format = fourCC.rawValue
        while try self.enumerate(cv4l2_vidioc_enum_framesizes(), "VIDIOC_ENUM_FRAMESIZES", &size) {
            if size.type != V4L2_FRMSIZE_TYPE_DISCRETE.rawValue {
                let range = size.stepwise
                return .range(
                    width: Int(range.min_width)...Int(max(range.min_width, range.max_width)),
                    widthStep: Int(range.step_width),
                    height: Int(range.min_height)...Int(max(range.min_height, range.max_height)),
                    heightStep: Int(range.step_height))
            }
            let width = Int(size.discrete.width)
            let height = Int(size.discrete.height)
            sizes.append(
                V4L2FrameSize(width: width, height: height, intervals: try self.intervals(fourCC, width, height)))
            size.index += 1
        }
        return sizes.isEmpty ? .unlisted : .discrete(sizes)
    }

    private func intervals(_ fourCC: FourCC, _ width: Int, _ height: Int) throws(V4L2Error) -> [FrameInterval] {
        var intervals: [FrameInterval] = []
        var interval = v4l2_frmivalenum()
        interval.pixel_format = fourCC.rawValue
        interval.width = UInt32(width)
        interval.height = UInt32(height)
        while try self.enumerate(cv4l2_vidioc_enum_frameintervals(), "VIDIOC_ENUM_FRAMEINTERVALS", &interval) {
            // Stepwise/continuous ranges: S_PARM picks the nearest, so only the fastest end is kept.
            guard interval.type == V4L2_FRMIVAL_TYPE_DISCRETE.rawValue else {
                let fastest = interval.stepwise.min
                return [FrameInterval(numerator: fastest.numerator, denominator: fastest.denominator)]
            }
            intervals.append(
                FrameInterval(numerator: interval.discrete.numerator, denominator: interval.discrete.denominator))
            interval.index += 1
        }
        return intervals
    }

    /// VIDIOC_S_FMT; returns what the driver made of the request (it may change size or format).
    func setFormat(_ fourCC: FourCC, width: Int, height: Int) throws(V4L2Error) -> V4L2StreamFormat {
        var format = v4l2_format()
        format.type = V4L2_BUF_TYPE_VIDEO_CAPTURE.rawValue
        format.fmt.pix.width = UInt32(width)
        format.fmt.pix.height = UInt32(height)
        format.fmt.pix.pixelformat = fourCC.rawValue
        format.fmt.pix.field = V4L2_FIELD_NONE.rawValue
        try self.control(cv4l2_vidioc_s_fmt(), "VIDIOC_S_FMT", &format)
        let pix = format.fmt.pix
        return V4L2StreamFormat(
            fourCC: FourCC(rawValue: pix.pixelformat), width: Int(pix.width), height: Int(pix.height),
            bytesPerLine: Int(pix.bytesperline), imageBytes: Int(pix.sizeimage), interval: nil)
    }

    /// VIDIOC_S_PARM with `interval` (nil: only read it); returns the driver's interval, or nil when
    /// the driver has no frame-rate control (it then runs at its own rate).
    func setInterval(_ interval: FrameInterval?) throws(V4L2Error) -> FrameInterval? {
        var parameters = v4l2_streamparm()
        parameters.type = V4L2_BUF_TYPE_VIDEO_CAPTURE.rawValue
        let supported: Bool
        if let interval {
            parameters.parm.capture.timeperframe = v4l2_fract(
                numerator: interval.numerator, denominator: interval.denominator)
            supported = try self.enumerate(cv4l2_vidioc_s_parm(), "VIDIOC_S_PARM", &parameters)
        } else {
            supported = try self.enumerate(cv4l2_vidioc_g_parm(), "VIDIOC_G_PARM", &parameters)
        }
        let result = parameters.parm.capture.timeperframe
        guard supported, result.numerator > 0, result.denominator > 0 else { return nil }
        return FrameInterval(numerator: result.numerator, denominator: result.denominator)
    }

    /// REQBUFS (memory-mapped, at least `count`), QUERYBUF + mmap each, QBUF all, STREAMON.
    mutating func startStreaming(bufferCount count: Int) throws(V4L2Error) {
        var request = v4l2_requestbuffers()
        request.count = UInt32(count)
        request.type = V4L2_BUF_TYPE_VIDEO_CAPTURE.rawValue
        request.memory = V4L2_MEMORY_MMAP.rawValue
        try self.control(cv4l2_vidioc_reqbufs(), "VIDIOC_REQBUFS", &request)
        guard request.count >= 2 else {
            throw V4L2Error(
                code: .systemCallFailed, device: self.node, operation: "VIDIOC_REQBUFS",
                message: "\(self.node) granted \(request.count) capture buffers; streaming needs at least 2")
        }
        for index in 0..<request.count {
            var buffer = self.buffer(index: Int(index))
            try self.control(cv4l2_vidioc_querybuf(), "VIDIOC_QUERYBUF", &buffer)
            let address = mmap(nil, Int(buffer.length), PROT_READ, MAP_SHARED, self.descriptor, off_t(buffer.m.offset))
            guard let address, address != MAP_FAILED else {
                throw V4L2Error(osError: errno, operation: "mmap", device: self.node)
            }
            self.mappings.append((address, Int(buffer.length)))
            try self.control(cv4l2_vidioc_qbuf(), "VIDIOC_QBUF", &buffer)
        }
        var type = Int32(V4L2_BUF_TYPE_VIDEO_CAPTURE.rawValue)
        try self.control(cv4l2_vidioc_streamon(), "VIDIOC_STREAMON", &type)
        self.streaming = true
    }

    var bufferCount: Int { self.mappings.count }

    private func buffer(index: Int) -> v4l2_buffer {
        var buffer = v4l2_buffer()
        buffer.index = UInt32(index)
        buffer.type = V4L2_BUF_TYPE_VIDEO_CAPTURE.rawValue
        buffer.memory = V4L2_MEMORY_MMAP.rawValue
        return buffer
    }

    enum Readiness {
        case frame, woken, timedOut
        /// POLLERR / POLLHUP: an unplugged node or a failed stream; DQBUF then says which.
        case failed
    }

    /// Waits until a frame is ready, `wake` becomes readable (stop) or `timeoutMilliseconds` pass.
    func wait(timeoutMilliseconds: Int32, wake: Int32) throws(V4L2Error) -> Readiness {
        var descriptors = [
            pollfd(fd: self.descriptor, events: Int16(POLLIN), revents: 0),
            pollfd(fd: wake, events: Int16(POLLIN), revents: 0),
        ]
        let ready = try systemCall("poll", device: self.node) { poll(&descriptors, 2, timeoutMilliseconds) }
        if descriptors[1].revents != 0 { return .woken }
        if ready == 0 { return .timedOut }
        return descriptors[0].revents & Int16(POLLERR | POLLHUP | POLLNVAL) != 0 ? .failed : .frame
    }

    /// VIDIOC_DQBUF; nil when no buffer is ready after all (EAGAIN).
    func dequeue() throws(V4L2Error) -> DequeuedBuffer? {
        var buffer = self.buffer(index: 0)
        guard try self.enumerate(cv4l2_vidioc_dqbuf(), "VIDIOC_DQBUF", &buffer, endingWith: [EAGAIN]) else {
            return nil
        }
        guard Int(buffer.index) < self.mappings.count else {
            throw V4L2Error(
                code: .systemCallFailed, device: self.node, operation: "VIDIOC_DQBUF",
                message: "\(self.node) returned buffer \(buffer.index) of \(self.mappings.count): a driver bug")
        }
        return DequeuedBuffer(
            index: Int(buffer.index), bytesUsed: Int(buffer.bytesused), sequence: buffer.sequence,
            flags: buffer.flags, timestamp: buffer.timestamp)
    }

    /// Hands buffer `index` back to the driver.
    func requeue(_ index: Int) throws(V4L2Error) {
        var buffer = self.buffer(index: index)
        try self.control(cv4l2_vidioc_qbuf(), "VIDIOC_QBUF", &buffer)
    }

    /// The bytes of a dequeued buffer, valid only inside `body` (the driver reuses them after requeue).
    func withBytes<Result>(of buffer: DequeuedBuffer, _ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        let mapping = self.mappings[buffer.index]
        return body(UnsafeRawBufferPointer(start: mapping.address, count: min(buffer.bytesUsed, mapping.length)))
    }
}

/// A fixed-size C char array (imported as a tuple) as a String.
func cString<Tuple>(tuple: Tuple) -> String {
    withUnsafeBytes(of: tuple) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
}
