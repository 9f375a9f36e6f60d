import CaptureKit
import FramePipeline
import Foundation
import LivenessEngine
import Synchronization
import TestSupport
import Testing

/// Collects what the pipeline publishes.
final class EventLog: Sendable {
    let events = Mutex<[PipelineEvent]>([])
    var sink: @Sendable (PipelineEvent) -> Void { { event in self.events.withLock { $0.append(event) } } }

    func decisions(_ source: String) -> [FrameDecision] {
        self.events.withLock { events in
            events.compactMap { if case .decision(let d) = $0, d.sourceID == source { d } else { nil } }
        }
    }

    func sourceEvents(_ source: String) -> [String] {
        self.events.withLock { events in
            events.compactMap {
                guard case .source(let id, let event) = $0, id == source else { return nil }
                if case .ended(let end) = event { return "ended \(end)" }
                return "\(event)"
            }
        }
    }
}

/// Wraps a source and notes when each frame left it (before the pipeline saw it).
final class TimedSource: FrameSource, @unchecked Sendable {
    let inner: MediaSource
    let deliveries = Mutex<[(wall: UInt64, pts: Double)]>([])
    init(_ inner: MediaSource) { self.inner = inner }
    var id: String { self.inner.id }
    var kind: SourceKind { self.inner.kind }
    func stop() { self.inner.stop() }
    func start(handler: @escaping @Sendable (SourceEvent) -> Void) throws {
        try self.inner.start { event in
            if case .frame(let frame) = event {
                self.deliveries.withLock { $0.append((monotonicNanoseconds(), frame.presentationTimeSeconds)) }
            }
            handler(event)
        }
    }
}

/// A locator that takes its time, to make the pipeline fall behind a live source.
final class SlowLocator: FaceLocator {
    let delay: Double
    init(delay: Double) { self.delay = delay }
    func locate(image: PixelSource, frame: Frame) -> FaceLocation {
        Thread.sleep(forTimeInterval: self.delay)
        return .face(PixelRect(x: 0, y: 0, width: image.width, height: image.height), faceCount: 1)
    }
}

@Suite struct LivenessPipelineTests {
    static let live = "samples/live/pad-tdreal__621f74a8_live_video.MOV"
    static let replay = "samples/spoof/pad-tdreplay__630b6ba7_replay_video.mp4"

    func pipeline(_ log: EventLog) throws -> LivenessPipeline {
        let model = try LivenessViT(contentsOf: try TestAssets.modelURL)
        return LivenessPipeline(
            opinions: Opinions(vit: model, pair: nil),
            configuration: .init(decisions: DecisionConfiguration(threshold: model.threshold)), sink: log.sink)
    }

    /// Two replayed clips at once: every frame decided, in order, nothing dropped, then the end.
    @Test func replayScoresEveryFrameInOrder() throws {
        let log = EventLog()
        let pipeline = try self.pipeline(log)
        let sources = [Self.live, Self.replay].map { MediaSource(location: try! TestAssets.file($0).path, id: $0) }
        for source in sources { try pipeline.add(source) }
        #expect(pipeline.waitUntilFinished(timeoutSeconds: 300))
        for (clip, source) in zip([Self.live, Self.replay], sources) {
            let decisions = log.decisions(clip)
            let expected = try FFmpegTool.countFrames(source.location)
            #expect(decisions.count == expected)
            #expect(decisions.map(\.sequence) == Array(0..<UInt64(expected)))
            #expect(decisions.first?.decision.state == .deciding)
            #expect(decisions.contains { $0.decision.state == .live || $0.decision.state == .spoof })
            #expect(log.sourceEvents(clip).last == "ended end of file")
            let statistics = try #require(pipeline.statistics()[clip])
            #expect(statistics.framesIn == expected && statistics.processed == expected)
            #expect(statistics.droppedStale == 0 && statistics.droppedBusy == 0)
        }
    }

    /// A live source faster than the pipeline: stale frames are dropped and counted, the source is
    /// never slowed (it still delivers in real time), and what is processed stays in order.
    @Test func liveSourceDropsStaleFramesWithoutBlocking() throws {
        let log = EventLog()
        let pipeline = try self.pipeline(log)
        let directory = try TestAssets.temporaryDirectory()
        let cut = directory.appendingPathComponent("cut.mov").path
        try FFmpegTool.run(
            "ffmpeg", ["-v", "error", "-i", try TestAssets.file(Self.live).path, "-t", "2", "-c", "copy", cut])
        var options = MediaSource.Options()
        options.pacing = .realTime
        let source = TimedSource(MediaSource(location: cut, id: "camera", options: options))
        try pipeline.add(source, locator: SlowLocator(delay: 0.2))
        #expect(pipeline.waitUntilFinished(timeoutSeconds: 30))
        let statistics = try #require(pipeline.statistics()["camera"])
        let total = try FFmpegTool.countFrames(cut)
        #expect(statistics.framesIn == total)
        #expect(statistics.droppedStale > total / 2)
        #expect(statistics.processed + statistics.droppedStale + statistics.droppedBusy == total)
        // The source kept its real-time pace although the pipeline took 0.2 s a frame.
        let deliveries = source.deliveries.withLock { $0 }
        let wall = Double(deliveries.last!.wall - deliveries[0].wall) / 1e9
        let video = deliveries.last!.pts - deliveries[0].pts
        #expect(abs(wall / video - 1) < 0.05, "\(video) s of video took \(wall) s to deliver")
        let sequences = log.decisions("camera").map(\.sequence)
        #expect(sequences == sequences.sorted())
    }
}
