import ArgumentParser
import CaptureKit
import Foundation
import Synchronization

struct Probe: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List what a V4L2 camera offers, then capture frames and print their size and timing.",
        discussion: """
            The listing matches `v4l2-ctl --list-formats-ext`. Capture uses the daemon's V4L2Camera: the \
            same format choice, buffers and unplug recovery (disconnects and reconnects are printed). \
            Exit status: 0 when all frames arrived, 1 when capture failed, 2 when the camera cannot be used.
            """)

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case grey, yuyv, nv12, mjpeg

        var fourCC: FourCC {
            switch self {
            case .grey: return .grey
            case .yuyv: return .yuyv
            case .nv12: return .nv12
            case .mjpeg: return .mjpeg
            }
        }
    }

    @Option(help: "Camera device: /dev/videoN or a /dev/v4l/by-id/… or by-path/… link.")
    var device: String

    @Option(help: "Frames to capture (0: only list the formats).")
    var frames = 30

    @Option(help: "Frame width.")
    var width = 640

    @Option(help: "Frame height.")
    var height = 480

    @Option(help: "Pixel format (default: the daemon's preference, grey, yuyv, nv12, then MJPEG).")
    var format: Format?

    @Option(help: "Requested frame rate (the driver picks the nearest it offers).")
    var fps: Double = 30

    @Option(help: "Write the last frame's raw bytes (planes packed, rows unpadded) to this file.")
    var output: String?

    @Option(help: "Give up after this many seconds.")
    var timeout: Double = 30

    @Flag(help: "Fail unless the camera disconnected, reconnected and delivered frames again (unplug tests).")
    var expectReconnect = false

    func validate() throws {
        guard self.frames >= 0, self.width > 0, self.height > 0, self.fps > 0, self.timeout > 0 else {
            throw ValidationError("--frames must be ≥ 0; --width, --height, --fps and --timeout positive")
        }
    }

    func run() throws {
        do {
            Self.printFormats(try V4L2Camera.describe(path: self.device))
        } catch {
            throw Self.fail("\(error)", status: 2)
        }
        guard self.frames > 0 else { return }

        var configuration = V4L2Camera.Configuration()
        configuration.width = self.width
        configuration.height = self.height
        configuration.framesPerSecond = self.fps
        if let format = self.format {
            configuration.preferredFormats = [format.fourCC]
            configuration.allowMotionJPEG = format == .mjpeg
        }
        let camera = V4L2Camera(path: self.device, configuration: configuration)
        let recorder = Recorder(wanted: self.frames)
        do {
            try camera.start { recorder.handle($0) }
        } catch {
            throw Self.fail("\(error)", status: 2)
        }
        say("capturing \(self.frames) frames: \(camera.streamFormat.map(\.description) ?? "?")")
        let arrived = recorder.done.wait(timeout: .now() + self.timeout) == .success
        camera.stop()

        let result = recorder.result
        let statistics = camera.statistics
        let intervals = result.intervalsSeconds.map { $0 * 1000 }
        let mean = intervals.isEmpty ? 0 : intervals.reduce(0, +) / Double(intervals.count)
        say(
            String(
                format: "captured %d frames: %.2f fps measured (interval min %.1f / mean %.1f / max %.1f ms)",
                result.frames, mean > 0 ? 1000 / mean : 0, intervals.min() ?? 0, mean, intervals.max() ?? 0)
                + "; dropped \(statistics.droppedPoolExhausted), skipped \(statistics.skippedDamaged), "
                + "lost by driver \(statistics.lostByDriver), reconnects \(statistics.reconnects)")
        if let output = self.output, let frame = result.last {
            let bytes = frame.planes.last.map { $0.offset + $0.rowStride * $0.rows } ?? 0
            do {
                try Data(bytes: frame.buffer.pointer, count: bytes).write(to: URL(fileURLWithPath: output))
            } catch {
                throw Self.fail("cannot write \(output): \(error.localizedDescription)", status: 1)
            }
            let picture = "\(frame.pixelFormat) \(frame.width)x\(frame.height)"
            say("wrote the last frame (\(picture), \(bytes) bytes) to \(output)")
        }
        if let end = result.end, end != .stopped { throw Self.fail("capture ended: \(end)", status: 1) }
        guard arrived else {
            throw Self.fail("only \(result.frames) of \(self.frames) frames in \(self.timeout) s", status: 1)
        }
        if self.expectReconnect && !result.framesAfterReconnect {
            throw Self.fail("expected a disconnect, a reconnect and frames after it; got none", status: 1)
        }
    }

    static func fail(_ message: String, status: Int32) -> ExitCode {
        FileHandle.standardError.write(Data("livenessd: \(message)\n".utf8))
        return ExitCode(status)
    }

    /// Like `v4l2-ctl --list-formats-ext`.
    static func printFormats(_ info: V4L2Camera.DeviceInfo) {
        let node = info.node == info.path ? "" : " (\(info.node))"
        let capability = info.capability
        say(
            "device \(info.path)\(node): driver \(capability.driver), card \"\(capability.card)\", "
                + "bus \(capability.busInfo)")
        say("ioctl: VIDIOC_ENUM_FMT")
        for (index, format) in info.formats.enumerated() {
            say(
                "    [\(index)]: '\(format.fourCC)' (\(format.description)\(format.isCompressed ? ", compressed" : ""))"
            )
            switch format.sizes {
            case .discrete(let sizes):
                for size in sizes {
                    say("        Size: Discrete \(size.width)x\(size.height)")
                    for interval in size.intervals {
                        say(
                            String(
                                format: "            Interval: Discrete %.3fs (%.3f fps)", interval.seconds,
                                interval.framesPerSecond))
                    }
                }
            case .range(let widths, let widthStep, let heights, let heightStep):
                say(
                    "        Size: Stepwise \(widths.lowerBound)x\(heights.lowerBound) - "
                        + "\(widths.upperBound)x\(heights.upperBound) with step \(widthStep)/\(heightStep)")
            case .unlisted:
                say("        Size: not listed by the driver")
            }
        }
    }
}

/// Collects events from the camera's thread and prints one line per event.
private final class Recorder: Sendable {
    struct Result {
        var frames = 0
        var last: Frame?
        var previousCaptureNanoseconds: UInt64?
        /// Intervals between consecutive frames of one stream (a reconnect gap is not a frame interval).
        var intervalsSeconds: [Double] = []
        var reconnected = false
        var framesAfterReconnect = false
        var end: SourceEnd?
    }

    let wanted: Int
    let done = DispatchSemaphore(value: 0)
    private let state = Mutex(Result())

    init(wanted: Int) { self.wanted = wanted }

    var result: Result { self.state.withLock { $0 } }

    func handle(_ event: SourceEvent) {
        switch event {
        case .frame(let frame):
            // Frames that arrive while the camera is being stopped are not counted.
            guard
                let (count, interval) = self.state.withLock({ state -> (Int, Double?)? in
                    guard state.frames < self.wanted else { return nil }
                    let interval = state.previousCaptureNanoseconds.map {
                        Double(frame.captureTimeNanoseconds &- $0) / 1e9
                    }
                    if let interval { state.intervalsSeconds.append(interval) }
                    state.previousCaptureNanoseconds = frame.captureTimeNanoseconds
                    state.frames += 1
                    state.last = frame
                    state.framesAfterReconnect = state.framesAfterReconnect || state.reconnected
                    return (state.frames, interval)
                })
            else { return }
            let bytes = frame.planes.last.map { $0.offset + $0.rowStride * $0.rows } ?? 0
            let gap = interval.map { String(format: "%.1fms", $0 * 1000) } ?? "-"
            let pts = String(format: "%.6f", frame.presentationTimeSeconds)
            let size = "\(frame.width)x\(frame.height) \(frame.pixelFormat)"
            say("frame seq=\(frame.sequence) \(size) bytes=\(bytes) pts=\(pts) dt=\(gap)")
            if count == self.wanted { self.done.signal() }
        case .disconnected(let reason):
            self.state.withLock { $0.previousCaptureNanoseconds = nil }
            say("disconnected: \(reason)")
        case .reconnected:
            self.state.withLock { $0.reconnected = true }
            say("reconnected")
        case .skipped(let count, let reason):
            say("skipped (\(count) so far): \(reason)")
        case .waiting(let reason):
            say("waiting: \(reason)")
        case .ended(let end):
            self.state.withLock { $0.end = end }
            say("ended: \(end)")
            self.done.signal()
        }
    }
}

/// One line to stdout, written at once (not block-buffered): tests follow probe's progress live.
private func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
