import Foundation
import Synchronization
import TestSupport
import Testing

@testable import CaptureKit

/// What a test keeps of a source's output: frame metadata (frames themselves go back to the pool
/// at once, as a well-behaved consumer does), the converted first frame, and how it ended.
final class Collector: Sendable {
    struct State {
        var sequences: [UInt64] = []
        var presentationTimes: [Double] = []
        var deliveryTimes: [UInt64] = []
        var sizes: Set<[Int]> = []
        var firstLuma: [UInt8]?
        var firstYPlane: [UInt8]?
        var skipped = 0
        var end: SourceEnd?
    }

    let state = Mutex(State())
    let done = DispatchSemaphore(value: 0)

    var handler: @Sendable (SourceEvent) -> Void {
        { event in
            switch event {
            case .frame(let frame):
                var luma: [UInt8]?
                var yPlane: [UInt8]?
                if self.state.withLock({ $0.firstLuma == nil }) {
                    luma = try? PixelConverter().convert(frame, to: .gray8)
                    if frame.pixelFormat == .yuv420p {
                        yPlane = (0..<frame.height).flatMap { row in
                            Array(
                                UnsafeBufferPointer(
                                    start: frame.plane(0) + row * frame.planes[0].rowStride, count: frame.width))
                        }
                    }
                }
                self.state.withLock {
                    $0.sequences.append(frame.sequence)
                    $0.presentationTimes.append(frame.presentationTimeSeconds)
                    $0.deliveryTimes.append(monotonicNanoseconds())
                    $0.sizes.insert([frame.width, frame.height])
                    if let luma { $0.firstLuma = luma }
                    if let yPlane { $0.firstYPlane = yPlane }
                }
            case .skipped(let count, _):
                self.state.withLock { $0.skipped = count }
            case .ended(let end):
                self.state.withLock { $0.end = end }
                self.done.signal()
            case .disconnected, .reconnected, .waiting:
                break
            }
        }
    }

    /// Runs `source` to its end, failing the test if that takes longer than `seconds`.
    static func run(_ source: MediaSource, timeout seconds: Double = 60) throws -> State {
        let collector = Collector()
        try source.start(handler: collector.handler)
        let finished = collector.done.wait(timeout: .now() + seconds) == .success
        if !finished { source.stop() }
        #expect(finished, "\(source.id) did not end within \(seconds) s")
        source.stop()
        return collector.state.withLock { $0 }
    }
}

@Suite struct MediaSourceTests {
    static let clips = [
        "samples/live/gen-facerec__short_hamilton_clip.mp4",  // MP4/H.264, BT.709, 29.97 fps
        "samples/live/pad-tdreal__621f74a8_live_video.MOV",  // MOV/H.264, rotation -90
        "samples/spoof/pad-tdreplay__630b6ba7_replay_video.mp4",  // variable frame rate, rotation -90
    ]

    @Test(arguments: MediaSourceTests.clips)
    func frameCountMatchesFFprobe(_ clip: String) throws {
        let path = try TestAssets.file(clip).path
        let state = try Collector.run(MediaSource(location: path))
        #expect(state.end == .endOfFile)
        #expect(state.sequences.count == (try FFmpegTool.countFrames(path)))
        #expect(state.sequences == Array(0..<UInt64(state.sequences.count)))
        #expect(state.skipped == 0)
        #expect(state.presentationTimes == state.presentationTimes.sorted())
    }

    @Test func webmVP8CountMatchesFFprobe() throws {
        let directory = try TestAssets.temporaryDirectory()
        let webm = directory.appendingPathComponent("clip.webm").path
        try FFmpegTool.run(
            "ffmpeg",
            [
                "-v", "error", "-i", try TestAssets.file(Self.clips[0]).path, "-t", "2", "-c:v", "libvpx", "-b:v",
                "400k",
                "-an", webm,
            ])
        let state = try Collector.run(MediaSource(location: webm))
        #expect(state.end == .endOfFile)
        #expect(state.sequences.count == (try FFmpegTool.countFrames(webm)))
        #expect(state.sequences.count > 20)  // libvpx drops some frames at this bit rate
    }

    /// A phone clip stored 480×360 with rotation -90 arrives 360×480, pixel for pixel as ffmpeg's
    /// own autorotated decode.
    @Test func rotatedClipArrivesUpright() throws {
        let path = try TestAssets.file(Self.clips[1]).path
        let state = try Collector.run(MediaSource(location: path))
        #expect(state.sizes == [[360, 480]])
        let reference = try FFmpegTool.run(
            "ffmpeg", ["-v", "error", "-i", path, "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"])
        let luma = try #require(state.firstYPlane)
        #expect(reference.count >= luma.count)
        let difference =
            zip(luma, reference.prefix(luma.count)).reduce(0.0) { $0 + abs(Double($1.0) - Double($1.1)) }
            / Double(luma.count)
        #expect(difference <= 2, "mean abs luma difference \(difference)")
    }

    /// Real-time pacing holds the clip's own rate within 2 % (a 3 s cut of a 25 fps clip).
    @Test func realTimePacingHoldsTheClipRate() throws {
        let directory = try TestAssets.temporaryDirectory()
        let cut = directory.appendingPathComponent("cut.mov").path
        try FFmpegTool.run(
            "ffmpeg", ["-v", "error", "-i", try TestAssets.file(Self.clips[1]).path, "-t", "3", "-c", "copy", cut])
        var options = MediaSource.Options()
        options.pacing = .realTime
        let source = MediaSource(location: cut, options: options)
        #expect(source.kind == .live)
        let state = try Collector.run(source)
        let span = try #require(state.presentationTimes.last) - state.presentationTimes[0]
        let wall = Double(state.deliveryTimes.last! - state.deliveryTimes[0]) / 1e9
        #expect(span > 2.5)
        #expect(abs(wall / span - 1) <= 0.02, "delivered \(span) s of video in \(wall) s")
    }

    /// H6: a timestamp jump of 1e5 s in a file made real-time pacing sleep 27 h (and ≥ 1.8e10 s trapped);
    /// now the pacing clock re-anchors at the jump and every frame arrives at the clip's own pace.
    @Test func realTimePacingSurvivesATimestampJump() throws {
        let directory = try TestAssets.temporaryDirectory()
        let jump = directory.appendingPathComponent("jump.mkv").path
        try FFmpegTool.run(
            "ffmpeg",
            [
                "-v", "error", "-t", "3", "-i", try TestAssets.file(Self.clips[0]).path, "-vf",
                "setpts='if(gte(N,10),PTS+100000/TB,PTS)'", "-c:v", "libx264", "-an", "-fps_mode", "passthrough", jump,
            ])
        var options = MediaSource.Options()
        options.pacing = .realTime
        let started = Date()
        // A generous bound: the clip lasts 3 s; the old clock slept for about 1e5 s.
        let state = try Collector.run(MediaSource(location: jump, options: options), timeout: 60)
        #expect(Date().timeIntervalSince(started) < 60)
        #expect(state.end == .endOfFile)
        #expect(state.sequences.count == (try FFmpegTool.countFrames(jump)))
        #expect((state.presentationTimes.last ?? 0) > 100_000)
    }

    /// H6 without a clip: huge, non-finite and backward timestamps never trap nor sleep past the gap.
    @Test func pacingClockReanchorsOnJumps() {
        var clock = PacingClock()
        #expect(clock.wait(forPresentationTime: 1, now: 1_000_000_000) == .deliver)
        #expect(clock.wait(forPresentationTime: 1.5, now: 1_000_000_000) == .sleep(nanoseconds: 500_000_000))
        #expect(clock.wait(forPresentationTime: .nan, now: 1_000_000_000) == .deliver)
        #expect(clock.wait(forPresentationTime: .infinity, now: 1_000_000_000) == .deliver)
        guard case .reanchored = clock.wait(forPresentationTime: 1.8e10, now: 1_000_000_000) else {
            Issue.record("a 1.8e10 s jump did not re-anchor")
            return
        }
        #expect(clock.wait(forPresentationTime: 1.8e10 + 1, now: 1_000_000_000) == .sleep(nanoseconds: 1_000_000_000))
        guard case .reanchored = clock.wait(forPresentationTime: -1e300, now: 2_000_000_000) else {
            Issue.record("a jump backwards did not re-anchor")
            return
        }
    }

    @Test func stillImageWithEXIFOrientation() throws {
        let state = try Collector.run(
            MediaSource(location: try TestAssets.file("golden/exif/spoof_print_exif6.jpg").path))
        #expect(state.sequences.count == 1)
        #expect(state.sizes == [[480, 640]])
        #expect(state.end == .endOfFile)
    }

    func expectOpenError(_ path: String) {
        do {
            try MediaSource(location: path).start { _ in }
            Issue.record("\(path) opened")
        } catch let error as CaptureError {
            #expect(error.description.contains(path) && !error.message.isEmpty, "\(error)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func badInputsFailClearlyOrEndCleanly() throws {
        let directory = try TestAssets.temporaryDirectory()
        self.expectOpenError(directory.appendingPathComponent("missing.mp4").path)
        let empty = directory.appendingPathComponent("empty.mp4")
        FileManager.default.createFile(atPath: empty.path, contents: Data())
        self.expectOpenError(empty.path)
        let text = directory.appendingPathComponent("notes.mp4")
        try "just some text, not a video\n".write(to: text, atomically: true, encoding: .utf8)
        self.expectOpenError(text.path)

        let original = try Data(contentsOf: try TestAssets.file(Self.clips[0]))
        // Truncated at half: either refused at open (index at the end) or frames then a reasoned end.
        let half = directory.appendingPathComponent("half.mp4")
        try original.prefix(original.count / 2).write(to: half)
        do {
            let state = try Collector.run(MediaSource(location: half.path), timeout: 30)
            if case .truncated = state.end {
            } else if state.end != .endOfFile {
                Issue.record("ended \(String(describing: state.end))")
            }
            #expect(state.sequences.count < (try FFmpegTool.countFrames(try TestAssets.file(Self.clips[0]).path)))
        } catch let error as CaptureError {
            #expect(!error.message.isEmpty)
        }
        // Bytes flipped in the middle: damaged packets are skipped, the rest still arrives.
        var damaged = original
        let middle = damaged.count / 2
        for offset in stride(from: middle, to: middle + 4096, by: 7) { damaged[offset] ^= 0xFF }
        let flipped = directory.appendingPathComponent("flipped.mp4")
        try damaged.write(to: flipped)
        let state = try Collector.run(MediaSource(location: flipped.path), timeout: 30)
        #expect(state.end != nil)
        #expect(state.sequences.count > 100)
    }

    /// stop() while a replay source waits for buffers the consumer holds returns promptly.
    @Test func stopWhileConsumerHoldsAllBuffers() throws {
        var options = MediaSource.Options()
        options.poolCapacity = 2
        let source = MediaSource(location: try TestAssets.file(Self.clips[0]).path, options: options)
        let held = Mutex<[Frame]>([])
        let ended = DispatchSemaphore(value: 0)
        try source.start { event in
            switch event {
            case .frame(let frame): held.withLock { $0.append(frame) }
            case .ended: ended.signal()
            default: break
            }
        }
        Thread.sleep(forTimeInterval: 0.3)
        #expect(held.withLock { $0.count } == 2)  // blocked: the reader waits, it does not drop
        let start = monotonicNanoseconds()
        source.stop()
        #expect(ended.wait(timeout: .now() + 2) == .success)
        #expect(Double(monotonicNanoseconds() - start) / 1e9 < 1)
        held.withLock { $0.removeAll() }
    }
}

@Suite struct PixelConverterTests {
    /// GRAY8 from the converter vs Pillow's L of the converter's own RGB24 of the same frame.
    func meanLumaDifference(_ location: String) throws -> Double {
        let source = MediaSource(location: location)
        let result = Mutex<Double?>(nil)
        let done = DispatchSemaphore(value: 0)
        try source.start { event in
            guard case .frame(let frame) = event, result.withLock({ $0 == nil }) else {
                if case .ended = event { done.signal() }
                return
            }
            let converter = PixelConverter()
            guard let gray = try? converter.convert(frame, to: .gray8),
                let rgb = try? converter.convert(frame, to: .rgb24)
            else { return }
            var pillow = [UInt8](repeating: 0, count: gray.count)
            rgb.withUnsafeBufferPointer {
                PixelConverter.pillowLuma(rgb: $0.baseAddress!, pixels: gray.count, into: &pillow)
            }
            let total = zip(gray, pillow).reduce(0.0) { $0 + abs(Double($1.0) - Double($1.1)) }
            result.withLock { $0 = total / Double(gray.count) }
        }
        _ = done.wait(timeout: .now() + 60)
        source.stop()
        return try #require(result.withLock { $0 })
    }

    @Test(arguments: [
        "golden/images/live_selfie.png", "golden/images/spoof_screen.png",
        "samples/live/gen-facerec__short_hamilton_clip.mp4",  // BT.709 limited
        "samples/live/pad-tdreal__621f74a8_live_video.MOV",  // BT.601 (smpte170m) limited
        "samples/live/pad-tdreal__622e5d6b_live_video.mp4",  // yuvj420p full range
    ])
    func grayMatchesPillowLuma(_ asset: String) throws {
        let difference = try self.meanLumaDifference(try TestAssets.file(asset).path)
        #expect(difference <= 1, "\(asset): mean abs difference \(difference) grey levels")
    }

    @Test func scalesToRequestedSize() throws {
        let source = MediaSource(location: try TestAssets.file("samples/live/pad-tdreal__621f74a8_live_video.MOV").path)
        let sizes = Mutex<[Int]>([])
        let done = DispatchSemaphore(value: 0)
        try source.start { event in
            if case .frame(let frame) = event, sizes.withLock({ $0.isEmpty }) {
                let converter = PixelConverter()
                let gray = (try? converter.convert(frame, to: .gray8, width: 255, height: 340)) ?? []
                let bgr = (try? converter.convert(frame, to: .bgr24, width: 320, height: 426)) ?? []
                sizes.withLock { $0 = [gray.count, bgr.count] }
            }
            if case .ended = event { done.signal() }
        }
        _ = done.wait(timeout: .now() + 30)
        source.stop()
        let expected: [Int] = [255 * 340, 320 * 426 * 3]
        let measured = sizes.withLock { $0 }
        #expect(measured == expected)
    }
}

/// Network sources against servers on loopback: FFmpeg itself serving a clip over HTTP.
@Suite(.serialized) struct NetworkSourceTests {
    static func port() -> Int { Int.random(in: 20_000..<40_000) }

    /// `ffmpeg -re … -listen 1 http://127.0.0.1:PORT/live.ts`: a live MPEG-TS stream for one client.
    /// `waitForListener` is off for a server a reconnecting source is already knocking on: it may
    /// accept (and so stop listening) before /proc/net/tcp is read.
    static func serve(_ clip: String, port: Int, seconds: Int, waitForListener: Bool = true) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/ffmpeg")
        process.arguments = [
            "-v", "error", "-re", "-i", clip, "-t", "\(seconds)", "-c:v", "copy", "-an", "-f", "mpegts", "-listen", "1",
            "http://127.0.0.1:\(port)/live.ts",
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        if waitForListener {
            #expect(Loopback.waitForListener(port: port), "ffmpeg did not start listening on port \(port)")
        }
        return process
    }

    @Test func liveHTTPStreamDeliversFrames() throws {
        let port = Self.port()
        let server = try Self.serve(try TestAssets.file(MediaSourceTests.clips[0]).path, port: port, seconds: 3)
        defer { server.terminate() }
        var options = MediaSource.Options()
        options.reconnect = false
        let source = MediaSource(location: "http://127.0.0.1:\(port)/live.ts", options: options)
        #expect(source.kind == .live)
        let state = try Collector.run(source, timeout: 20)
        // ffmpeg's -re clock starts before the client connects, so not all 3 s arrive (≈ 35–60 seen).
        #expect(state.sequences.count > 25)
        #expect(state.sizes == [[640, 360]])
        #expect(state.end == .endOfFile)
    }

    /// The server goes away mid-stream and comes back: disconnected, reconnected, frames again.
    @Test func reconnectsWhenTheStreamReturns() throws {
        let port = Self.port()
        let clip = try TestAssets.file(MediaSourceTests.clips[0]).path
        var server = try Self.serve(clip, port: port, seconds: 2)
        var options = MediaSource.Options()
        options.networkTimeoutSeconds = 1
        let source = MediaSource(location: "http://127.0.0.1:\(port)/live.ts", options: options)
        let log = Mutex<[String]>([])
        try source.start { event in
            switch event {
            case .frame: log.withLock { if $0.last != "frame" { $0.append("frame") } }
            case .disconnected: log.withLock { $0.append("disconnected") }
            case .reconnected: log.withLock { $0.append("reconnected") }
            case .ended(let end): log.withLock { $0.append("ended \(end)") }
            case .skipped, .waiting: break
            }
        }
        // The first server ends after 2 s of video; start a second one on the same port.
        server.waitUntilExit()
        server = try Self.serve(clip, port: port, seconds: 2, waitForListener: false)
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline && log.withLock({ $0.suffix(2) }) != ["reconnected", "frame"] {
            Thread.sleep(forTimeInterval: 0.1)
        }
        source.stop()
        server.terminate()
        let events = log.withLock { $0 }
        #expect(Array(events.prefix(2)) == ["frame", "disconnected"], "\(events)")
        #expect(events.contains("reconnected"), "\(events)")
        #expect(events.last == "ended stopped", "\(events)")
    }

    /// Issue 12: a stream that is not up when the source starts is waited for (`waiting`), then opened when
    /// its server comes (`reconnected`, frames); without `waitForStream`, start fails as before.
    @Test func waitsForAStreamThatIsNotUpYet() throws {
        let port = Self.port()
        let clip = try TestAssets.file(MediaSourceTests.clips[0]).path
        var options = MediaSource.Options()
        options.networkTimeoutSeconds = 1
        let url = "http://127.0.0.1:\(port)/live.ts"
        #expect(throws: (any Error).self) { try MediaSource(location: url, options: options).start { _ in } }
        options.waitForStream = true
        let source = MediaSource(location: url, options: options)
        let log = Mutex<[String]>([])
        try source.start { event in
            switch event {
            case .frame: log.withLock { if $0.last != "frame" { $0.append("frame") } }
            case .waiting: log.withLock { $0.append("waiting") }
            case .disconnected: log.withLock { $0.append("disconnected") }
            case .reconnected: log.withLock { $0.append("reconnected") }
            case .ended(let end): log.withLock { $0.append("ended \(end)") }
            case .skipped: break
            }
        }
        Thread.sleep(forTimeInterval: 1)
        #expect(log.withLock { $0 } == ["waiting"])
        let server = try Self.serve(clip, port: port, seconds: 2, waitForListener: false)
        defer { server.terminate() }
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline && !log.withLock({ $0.contains("frame") }) { Thread.sleep(forTimeInterval: 0.1) }
        source.stop()
        let events = log.withLock { $0 }
        #expect(Array(events.prefix(3)) == ["waiting", "reconnected", "frame"], "\(events)")
        #expect(events.last == "ended stopped", "\(events)")
    }

    /// A server that accepts the connection and never answers: a clear error after the timeout.
    @Test func silentServerTimesOut() throws {
        let port = Self.port()
        let listener = Process()
        listener.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        listener.arguments = [
            "-c",
            "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
                + "s.bind(('127.0.0.1', \(port))); s.listen(4); c=s.accept(); time.sleep(30)",
        ]
        try listener.run()
        defer { listener.terminate() }
        Thread.sleep(forTimeInterval: 0.5)
        var options = MediaSource.Options()
        options.networkTimeoutSeconds = 1
        let started = Date()
        #expect(throws: CaptureError.self) {
            try MediaSource(location: "http://127.0.0.1:\(port)/never.ts", options: options).start { _ in }
        }
        #expect(Date().timeIntervalSince(started) < 10)
    }
}
