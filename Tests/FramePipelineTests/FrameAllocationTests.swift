import AllocationCounter
import CaptureKit
import Dispatch
import FramePipeline
import Foundation
import LivenessEngine
import Synchronization
import TestSupport
import Testing

/// A replay source the test drives by hand: `push` hands one frame to the pipeline on the caller's thread.
final class HandDrivenSource: FrameSource, @unchecked Sendable {
    // @unchecked: the handler is set once by `start`, before any `push`.
    let id: String
    let kind = SourceKind.replay
    private var handler: (@Sendable (SourceEvent) -> Void)?

    init(id: String) { self.id = id }

    func start(handler: @escaping @Sendable (SourceEvent) -> Void) throws { self.handler = handler }
    func stop() {}
    func push(_ event: SourceEvent) { self.handler!(event) }
}

/// Registers the prepare lane's queue with the allocation counter whenever it locates a face.
final class QueueRegisteringLocator: FaceLocator {
    let inner: FaceLocator
    init(_ inner: FaceLocator) { self.inner = inner }
    func locate(image: PixelSource, frame: Frame) -> FaceLocation {
        _ = allocation_counter_register_current_queue()
        return self.inner.locate(image: image, frame: frame)
    }
}

/// Decisions the sink saw (counted without allocating).
final class DecisionCounter: Sendable {
    let decided = Atomic<Int>(0)
    let scored = Atomic<Int>(0)
}

/// Heap allocations per steady-state frame through the pipeline: admit, prepare (RGB, YuNet, gates, both
/// opinions' crops), inference (ViT and the MiniFASNet pair) and decision, one frame at a time as a
/// 30 fps camera gives them. Counted on the pipeline's own queues and the thread that hands frames in,
/// so tests running beside this one do not count. The figure is pinned: a change that allocates more
/// per frame fails here (lower the pin when the path allocates less).
@Suite(.serialized) struct FrameAllocationTests {
    /// Measured 2026-11-30 (Swift 6.3.1, `-c release -Xswiftc -enable-testing`): 171 on main at decf5c9; 79,
    /// 79.5, 80 and 80.9 in four runs once the lanes reuse their pictures, crops and model inputs (Dispatch
    /// and the event path allocate a little unevenly). The pin leaves 5 % above the highest: far below the
    /// old 171, so a path that goes back to copying per frame fails here.
    static let pinnedAllocationsPerFrame = 84

    /// The first frames of the hamilton sample at 640×480 (yuv420p, as H.264 decodes), with both opinions.
    static func frames(count: Int) throws -> [Frame] {
        let directory = try TestAssets.temporaryDirectory()
        let clip = directory.appendingPathComponent("hamilton_640x480.mp4").path
        try FFmpegTool.run(
            "ffmpeg",
            [
                "-v", "error", "-y", "-i",
                try TestAssets.file("samples/live/gen-facerec__short_hamilton_clip.mp4").path,
                "-frames:v", "4", "-vf", "scale=640:480", "-pix_fmt", "yuv420p", "-c:v", "libx264", clip,
            ])
        let decoded = Mutex<[Frame]>([])
        let source = MediaSource(location: clip, id: "decode")
        let done = DispatchSemaphore(value: 0)
        try source.start { event in
            switch event {
            case .frame(let frame): decoded.withLock { $0.append(frame) }
            case .ended: done.signal()
            default: break
            }
        }
        done.wait()
        source.stop()
        let pictures = decoded.withLock { $0 }
        try #require(pictures.count == 4)
        // New frames over the decoded pixels, in order, made before anything is counted.
        return (0..<count).map { index in
            let picture = pictures[index % pictures.count]
            return Frame(
                buffer: picture.buffer, pixelFormat: picture.pixelFormat, width: picture.width, height: picture.height,
                planes: picture.planes, colour: picture.colour, presentationTimeSeconds: Double(index) / 30,
                captureTimeNanoseconds: monotonicNanoseconds(), sequence: UInt64(index), sourceID: "counted")
        }
    }

    @Test(.enabled(if: allocation_counter_available() != 0, "a sanitizer owns malloc"))
    func steadyStateFrameAllocationsArePinned() throws {
        let model = try LivenessViT(contentsOf: try TestAssets.modelURL)
        let pair = try MiniFASNetPair(directory: try TestAssets.file("models/silent-face"))
        let opinions = Opinions(vit: model, pair: pair)
        let counter = DecisionCounter()
        let published = DispatchSemaphore(value: 0)
        let pipeline = LivenessPipeline(
            opinions: opinions,
            configuration: .init(decisions: DecisionConfiguration(threshold: Opinions.fusedThreshold))
        ) { event in
            _ = allocation_counter_register_current_queue()
            if case .decision(let decision) = event {
                counter.decided.add(1, ordering: .relaxed)
                if decision.scores.vit != nil && decision.scores.minifasnet != nil {
                    counter.scored.add(1, ordering: .relaxed)
                }
                published.signal()
            }
        }
        let warmUp = 40
        let counted = 96
        let window = 32
        let frames = try Self.frames(count: warmUp + counted)
        let source = HandDrivenSource(id: "counted")
        let locator = try DetectorLocator(modelURL: try TestAssets.file("models/yunet/face_detection_yunet.onnx"))
        try pipeline.add(source, locator: QueueRegisteringLocator(locator))
        defer { allocation_counter_clear_queues() }
        // One frame at a time: batches of one, as a camera at 30 fps gives them.
        for frame in frames.prefix(warmUp) {
            source.push(.frame(frame))
            published.wait()
        }
        // Counted in windows, the quietest one taken: once in a while a run spends ~90 allocations at once
        // outside the frame path proper (seen in one window of a run, never in all), which is not per frame.
        var windows: [UInt64] = []
        windows.reserveCapacity(counted / window)
        for start in stride(from: warmUp, to: warmUp + counted, by: window) {
            allocation_counter_enable(1)
            for frame in frames[start..<(start + window)] {
                allocation_counter_count_this_thread(1)
                source.push(.frame(frame))
                allocation_counter_count_this_thread(0)
                published.wait()
            }
            allocation_counter_enable(0)
            windows.append(allocation_counter_count())
        }
        source.push(.ended(.endOfFile))
        #expect(pipeline.waitUntilFinished(timeoutSeconds: 60))
        #expect(counter.decided.load(ordering: .relaxed) == warmUp + counted)
        // Every frame had a face scored by both opinions: the whole path was taken.
        #expect(counter.scored.load(ordering: .relaxed) == warmUp + counted)
        let perFrame = Double(windows.min()!) / Double(window)
        print("FrameAllocationTests: \(windows) allocations in windows of \(window) frames = \(perFrame) per frame")
        #expect(perFrame <= Double(Self.pinnedAllocationsPerFrame), "\(perFrame) allocations per frame")
    }
}
