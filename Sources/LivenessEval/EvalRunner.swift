import CaptureKit
import Dispatch
import FramePipeline
import Foundation
import LivenessEngine
import NIOConcurrencyHelpers
import Synchronization

/// Plays every presentation of a dataset through the daemon's own `LivenessPipeline` in replay
/// (lossless) mode, `jobs` files at a time, and collects what the daemon decided.
public final class EvalRunner: Sendable {

    public struct Options: Sendable {
        public var jobs = max(1, ProcessInfo.processInfo.activeProcessorCount)
        /// Score every Nth decoded frame of a clip (1: all).
        public var every = 1
        /// Frames analysed per second of each clip's frame time, as the daemon's `analysis_fps` (0: every frame).
        public var analysisFramesPerSecond = 0.0
        /// Keep each presentation's telltale crop (for the report's thumbnails).
        public var keepCrops = true

        public init() {}
    }

    public struct Finished: Sendable {
        public var index: Int
        public var result: PresentationResult
        var series: FrameSeries
        var frameScores: [LabelledScore]
        var telltaleCrop: [UInt8]?
        /// Each opinion's frame-level scores (when several opinions judged).
        var opinionFrameScores: [OpinionKind: [LabelledScore]] = [:]
    }

    private struct State {
        var next = 0
        var active: [String: (index: Int, accumulator: PresentationAccumulator)] = [:]
        var finished: [Finished] = []
        var interrupted = false
        var frames = 0
        var completed = 0
    }

    let dataset: EvalDataset
    let decisions: DecisionConfiguration
    /// The rules of the transactions simulated on every clip.
    let verification: VerificationRules
    let opinionKinds: [OpinionKind]
    let options: Options
    private let pipeline: LivenessPipeline
    private let detector: FaceLocatorFactory?
    private let state = NIOLockedValueBox(State())
    private let control = DispatchQueue(label: "livenessd.eval.control")
    private let done = DispatchSemaphore(value: 0)
    private let frameLog: FrameLog?
    private let progress: @Sendable (_ completed: Int, _ total: Int, _ frames: Int) -> Void

    public init(
        dataset: EvalDataset, opinions: Opinions, detector: FaceLocatorFactory?, decisions: DecisionConfiguration,
        verification: VerificationRules = VerificationRules(), options: Options, frameLog: FrameLog?,
        progress: @escaping @Sendable (_ completed: Int, _ total: Int, _ frames: Int) -> Void = { _, _, _ in }
    ) {
        self.dataset = dataset
        self.decisions = decisions
        self.verification = verification
        self.options = options
        self.detector = detector
        self.frameLog = frameLog
        self.progress = progress
        var configuration = LivenessPipeline.Configuration(decisions: decisions)
        configuration.publishCrops = options.keepCrops
        configuration.forgetEndedSources = true
        let box = RunnerBox()
        self.opinionKinds = opinions.kinds
        self.pipeline = LivenessPipeline(opinions: opinions, configuration: configuration) { event in
            box.runner?.handle(event)
        }
        box.runner = self
    }

    /// Runs every presentation (or until `interrupt()`), returning the finished ones in dataset order.
    public func run() -> [Finished] {
        if self.dataset.presentations.isEmpty { return [] }
        self.control.async {
            for _ in 0..<min(self.options.jobs, self.dataset.presentations.count) { self.startNext() }
        }
        self.done.wait()
        self.frameLog?.flush()
        return self.state.withLockedValue { $0.finished }.sorted { $0.index < $1.index }
    }

    /// Stops starting new files and stops the ones playing; `run()` then returns what finished
    /// (the stopped ones marked interrupted).
    public func interrupt() {
        let alreadyInterrupted = self.state.withLockedValue { state -> Bool in
            defer { state.interrupted = true }
            return state.interrupted
        }
        if alreadyInterrupted { return }
        self.control.async {
            _ = self.pipeline.stop(timeoutSeconds: 30)
            self.finishIfIdle()
        }
    }

    private static func sourceID(_ index: Int, _ presentation: Presentation) -> String {
        "\(index):\(presentation.path)"
    }

    /// Control queue: opens the next file; one that cannot be opened is a failure to acquire.
    private func startNext() {
        let claimed = self.state.withLockedValue { state -> Int? in
            guard !state.interrupted, state.next < self.dataset.presentations.count else { return nil }
            defer { state.next += 1 }
            let index = state.next
            let presentation = self.dataset.presentations[index]
            state.active[Self.sourceID(index, presentation)] = (
                index,
                PresentationAccumulator(
                    presentation: presentation, decisions: self.decisions, opinions: self.opinionKinds,
                    verification: self.verification)
            )
            return index
        }
        guard let index = claimed else {
            self.finishIfIdle()
            return
        }
        let presentation = self.dataset.presentations[index]
        let id = Self.sourceID(index, presentation)
        var mediaOptions = MediaSource.Options()
        // The decode thread converts to RGB, off the prepare lane; not with --every N, where it would
        // convert frames that are then skipped.
        mediaOptions.attachRGB24 = self.options.every == 1 && self.options.analysisFramesPerSecond == 0
        var source: FrameSource = MediaSource(location: presentation.location, id: id, options: mediaOptions)
        if self.options.every > 1 { source = EveryNthFrame(source, every: self.options.every) }
        do {
            if let detector = self.detector {
                try self.pipeline.add(
                    source, locator: try detector.makeLocator(),
                    analysisFramesPerSecond: self.options.analysisFramesPerSecond)
            } else {
                try self.pipeline.add(source, analysisFramesPerSecond: self.options.analysisFramesPerSecond)
            }
        } catch {
            let reason = (error as? CaptureError)?.message ?? "\(error)"
            self.complete(id: id, end: nil, openError: "cannot open: \(reason)")
            self.startNext()
        }
    }

    private func finishIfIdle() {
        let finished = self.state.withLockedValue { state in
            state.active.isEmpty && (state.interrupted || state.next >= self.dataset.presentations.count)
        }
        if finished { self.done.signal() }
    }

    /// Inference queue (the pipeline's sink), in order per source.
    private func handle(_ event: PipelineEvent) {
        switch event {
        case .decision(let frame):
            let (presentation, completed, frames) = self.state.withLockedValue { state -> (Presentation?, Int, Int) in
                guard state.active[frame.sourceID] != nil else { return (nil, state.completed, state.frames) }
                state.active[frame.sourceID]!.accumulator.add(frame)
                state.frames += 1
                return (state.active[frame.sourceID]!.accumulator.presentation, state.completed, state.frames)
            }
            if let presentation { self.frameLog?.append(frame, presentation: presentation) }
            self.progress(completed, self.dataset.presentations.count, frames)  // redrawn at most 5 times a second
        case .source(let id, .skipped(let count, _)):
            self.state.withLockedValue { $0.active[id]?.accumulator.skippedPackets(count) }
        case .source(let id, .ended(let end)):
            self.complete(id: id, end: end, openError: nil)
            self.control.async { self.startNext() }
        case .source, .transaction:
            break
        }
    }

    private func complete(id: String, end: SourceEnd?, openError: String?) {
        let (completed, frames) = self.state.withLockedValue { state -> (Int, Int) in
            guard let entry = state.active.removeValue(forKey: id) else { return (state.completed, state.frames) }
            let interrupted = end == .stopped
            let result = entry.accumulator.finish(end: end, openError: openError, interrupted: interrupted)
            state.finished.append(
                Finished(
                    index: entry.index, result: result, series: entry.accumulator.series,
                    frameScores: result.labelledScore == nil ? [] : entry.accumulator.frameScores(),
                    telltaleCrop: entry.accumulator.telltaleCrop,
                    opinionFrameScores: result.labelledScore == nil || self.opinionKinds.count < 2
                        ? [:]
                        : Dictionary(
                            uniqueKeysWithValues: self.opinionKinds.map { ($0, entry.accumulator.frameScores($0)) })))
            state.completed += 1
            return (state.completed, state.frames)
        }
        self.progress(completed, self.dataset.presentations.count, frames)
    }
}

/// Lets the pipeline's sink reach the runner that owns the pipeline (set once, before any source).
private final class RunnerBox: Sendable {
    private struct Reference { weak var runner: EvalRunner? }
    private let reference = NIOLockedValueBox(Reference())
    var runner: EvalRunner? {
        get { self.reference.withLockedValue { $0.runner } }
        set { self.reference.withLockedValue { $0.runner = newValue } }
    }
}

/// frames.jsonl: one JSON object per decided frame, appended as the pipeline publishes them (so an
/// interrupted run keeps every line it produced).
public final class FrameLog: Sendable {
    private let handle: FileHandle
    private let buffer = NIOLockedValueBox(Data())
    /// One encoder for every line (behind its own lock, which only the inference queue takes).
    private let encoder: NIOLockedValueBox<JSONEncoder> = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return NIOLockedValueBox(encoder)
    }()

    public init(path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil) else {
            throw EvalError("cannot create \(path): check the output folder is writable")
        }
        self.handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
    }

    struct Line: Encodable {
        var path: String
        var label: PresentationLabel
        var species: String?
        var sequence: UInt64
        var time: Double
        var state: String
        var raw: Double?
        var smoothed: Double?
        /// Each opinion's spoof probability (raw and smoothed are the fused score's).
        var scores: OpinionScores?
        var window: Int
        var reason: String?
        /// `{"x","y","w","h"}`, as on the socket and in `classify --json`.
        var box: FrameBox?
        var faces: Int
    }

    func append(_ frame: FrameDecision, presentation: Presentation) {
        let line = Line(
            path: presentation.path, label: presentation.label, species: presentation.species, sequence: frame.sequence,
            time: frame.presentationTimeSeconds, state: frame.decision.state.rawValue, raw: frame.decision.rawScore,
            smoothed: frame.decision.smoothedScore,
            scores: frame.decision.rawScore == nil ? nil : frame.scores.finite, window: frame.decision.windowCount,
            reason: frame.decision.reason,
            box: frame.box.map(FrameBox.init), faces: frame.faceCount)
        guard var data = self.encoder.withLockedValue({ try? $0.encode(line) }) else { return }
        data.append(0x0A)
        let full = self.buffer.withLockedValue { buffer -> Data? in
            buffer.append(data)
            guard buffer.count >= 1 << 16 else { return nil }
            defer { buffer.removeAll(keepingCapacity: true) }
            return buffer
        }
        if let full { self.handle.write(full) }
    }

    func flush() {
        let rest = self.buffer.withLockedValue { buffer -> Data in
            defer { buffer.removeAll() }
            return buffer
        }
        if !rest.isEmpty { self.handle.write(rest) }
        try? self.handle.synchronize()
    }
}
