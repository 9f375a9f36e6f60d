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

/// A live source the test drives by hand: `push` hands one event to the pipeline on the caller's thread.
final class PushedLiveSource: FrameSource, @unchecked Sendable {
    // @unchecked: the handler is set once by `start`, before any `push`.
    let id: String
    let kind = SourceKind.live
    private var handler: (@Sendable (SourceEvent) -> Void)?
    init(id: String) { self.id = id }
    func start(handler: @escaping @Sendable (SourceEvent) -> Void) throws { self.handler = handler }
    func stop() {}
    func push(_ event: SourceEvent) { self.handler!(event) }
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

    /// M10: a camera's news reaches clients while its frames outrun the pipeline. Frames come every 2 ms
    /// and take 20 ms each to prepare; `reconnected` used to wait until the frames stopped (the lane kept
    /// preparing the newest frame), so frames sent after it were published before it. The property is
    /// the order: every decision before the news is of a frame sent before it, every one after of a frame
    /// sent after it, and both sides have decisions.
    @Test func sourceNewsIsNotStarvedByFrames() throws {
        let log = EventLog()
        let pipeline = try self.pipeline(log)
        let source = PushedLiveSource(id: "camera")
        try pipeline.add(source, locator: SlowLocator(delay: 0.02))
        let frames = try FrameAllocationTests.frames(count: 150)
        for frame in frames[0..<50] {
            source.push(.frame(frame))
            Thread.sleep(forTimeInterval: 0.002)
        }
        source.push(.reconnected)
        for frame in frames[50..<100] {
            source.push(.frame(frame))
            Thread.sleep(forTimeInterval: 0.002)
        }
        source.push(.disconnected("unplugged"))
        for frame in frames[100..<150] {
            source.push(.frame(frame))
            Thread.sleep(forTimeInterval: 0.002)
        }
        source.push(.ended(.deviceGone("unplugged")))
        #expect(pipeline.waitUntilFinished(timeoutSeconds: 60))

        // What was published, in order: news by name, frames by sequence.
        let published: [String] = log.events.withLock { events in
            events.compactMap {
                switch $0 {
                case .decision(let decision): "\(decision.sequence)"
                case .source(_, .reconnected): "reconnected"
                case .source(_, .disconnected): "disconnected"
                case .source(_, .ended): "ended"
                default: nil
                }
            }
        }
        let reconnected = try #require(published.firstIndex(of: "reconnected"))
        let disconnected = try #require(published.firstIndex(of: "disconnected"))
        #expect(published.last == "ended")
        func sequences(_ range: Range<Int>) -> [Int] { published[range].compactMap { Int($0) } }
        let before = sequences(0..<reconnected)
        let between = sequences((reconnected + 1)..<disconnected)
        let after = sequences((disconnected + 1)..<published.count)
        #expect(!before.isEmpty && before.allSatisfy { $0 < 50 }, "\(published)")
        #expect(!between.isEmpty && between.allSatisfy { (50..<100).contains($0) }, "\(published)")
        #expect(!after.isEmpty && after.allSatisfy { $0 >= 100 }, "\(published)")
        let statistics = try #require(pipeline.statistics()["camera"])
        #expect(statistics.framesIn == 150)
        #expect(statistics.processed + statistics.droppedStale + statistics.droppedBusy == 150)
    }

    /// Issue 12: a transaction clears its source's window, is announced, sees only the frames after it, and
    /// ends exactly once — by its rules, by its timeout or with its source; one at a time per source.
    @Test func transactionsStartFreshAndEndOnce() throws {
        let log = EventLog()
        let pipeline = try self.pipeline(log)
        let source = PushedLiveSource(id: "camera")
        try pipeline.add(source)
        let frames = try FrameAllocationTests.frames(count: 60)
        var rules = VerificationRules()
        rules.minimumScoredFrames = 5
        rules.minimumSeconds = 0.2
        rules.stableFrames = 3

        #expect(throws: TransactionRefusal.self) {
            try pipeline.beginTransaction(id: "x", sourceID: "door", timeoutSeconds: 5, rules: rules)
        }
        // Every pushed frame decided or dropped: on a slow machine (TSan) frames are still in flight after
        // the pushes' pauses, and the transaction's boundaries are what this test is about, not speed.
        func settle(_ pushed: Int) {
            let deadline = Date().addingTimeInterval(60)
            while Date() < deadline {
                let lane = pipeline.statistics()["camera"] ?? LaneStatistics()
                if lane.processed + lane.droppedStale + lane.droppedBusy >= pushed { return }
                Thread.sleep(forTimeInterval: 0.02)
            }
        }
        // Frames before the transaction fill the window; the transaction must not count them.
        for frame in frames[0..<10] {
            source.push(.frame(frame))
            Thread.sleep(forTimeInterval: 0.03)
        }
        settle(10)
        let first = try pipeline.beginTransaction(id: "one", sourceID: "camera", timeoutSeconds: 20, rules: rules)
        let refusal = #expect(throws: TransactionRefusal.self) {
            try pipeline.beginTransaction(id: "two", sourceID: "camera", timeoutSeconds: 5, rules: rules)
        }
        #expect(refusal?.description.contains("already open on 'camera'") == true)
        for frame in frames[10..<40] {
            source.push(.frame(frame))
            Thread.sleep(forTimeInterval: 0.03)
        }
        func transactionEvents() -> [(index: Int, event: TransactionEvent)] {
            log.events.withLock { events in
                events.enumerated().compactMap { if case .transaction(let t) = $1 { ($0, t) } else { nil } }
            }
        }
        let deadline = Date().addingTimeInterval(30)
        while transactionEvents().count < 2 && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        let announced = transactionEvents()
        try #require(announced.count == 2, "\(announced.map(\.event.phase))")
        #expect(announced.allSatisfy { $0.event.token == first && $0.event.id == "one" })
        guard case .started = announced[0].event.phase, case .ended(let result, _, _) = announced[1].event.phase else {
            Issue.record("expected started then ended: \(announced.map(\.event.phase))")
            return
        }
        // The decisions between the two are the transaction's: the first says `reset` with a fresh window.
        let between: [FrameDecision] = log.events.withLock { events in
            events[(announced[0].index + 1)..<announced[1].index].compactMap {
                if case .decision(let d) = $0 { d } else { nil }
            }
        }
        #expect(between.count == result.frames && result.scoredFrames == result.frames)
        #expect(between.first?.decision.reason == "reset" && between.first?.decision.changed == true)
        #expect(between.first?.decision.windowCount == 1)
        #expect(between.first?.sequence == result.firstSequence && between.last?.sequence == result.lastSequence)
        #expect(between.allSatisfy { $0.sequence >= 10 })
        // Settled by the rules (these frames score steadily), with the verdict of the last decision's side.
        #expect(result.outcome == .live || result.outcome == .spoof, "\(result)")
        #expect(result.frames >= 5 && result.evidenceSeconds >= 0.2)
        let lastState = between.last?.decision.state.rawValue
        #expect(lastState == result.outcome.rawValue)

        // The source is free again; with no frames the timeout ends the next one.
        settle(40)
        try pipeline.beginTransaction(id: "idle", sourceID: "camera", timeoutSeconds: 0.3, rules: rules)
        Thread.sleep(forTimeInterval: 1)
        let idle = try #require(transactionEvents().last)
        guard case .ended(let timedOut, let elapsed, _) = idle.event.phase else {
            Issue.record("the idle transaction did not end: \(idle.event.phase)")
            return
        }
        #expect(idle.event.id == "idle" && timedOut.outcome == .timeout && elapsed >= 0.3)
        #expect(timedOut.reason == "no frame arrived from the source")

        // A source that ends ends its open transaction first, and takes no new one.
        try pipeline.beginTransaction(id: "last", sourceID: "camera", timeoutSeconds: 20, rules: rules)
        source.push(.ended(.deviceGone("unplugged")))
        #expect(pipeline.waitUntilFinished(timeoutSeconds: 30))
        let closing = try #require(transactionEvents().last)
        guard case .ended(let cut, _, _) = closing.event.phase else {
            Issue.record("the last transaction did not end: \(closing.event.phase)")
            return
        }
        #expect(closing.event.id == "last" && cut.outcome == .timeout)
        #expect(cut.reason?.hasPrefix("the source ended") == true, "\(cut)")
        #expect(log.sourceEvents("camera").last?.hasPrefix("ended") == true)
        let afterEnd = #expect(throws: TransactionRefusal.self) {
            try pipeline.beginTransaction(id: "late", sourceID: "camera", timeoutSeconds: 5, rules: rules)
        }
        #expect(afterEnd?.description.contains("has ended") == true)
    }
}
