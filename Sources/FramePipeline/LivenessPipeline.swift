import CaptureKit
import Dispatch
import Histogram
import LivenessEngine
import NIOConcurrencyHelpers
import Synchronization

/// Where the face is in a frame, as the detect stage found it.
public enum FaceLocation: Sendable, Equatable {
    /// Judge this region (frame pixels); `faceCount` faces were seen, the largest was chosen. `box`
    /// is that face as the MiniFASNet pair's crop takes it (nil: the whole frame is judged).
    case face(PixelRect, faceCount: Int, box: MiniFASNetCrop.Box? = nil)
    case noFace
    /// A face that cannot be judged, with the reason (too small, too dark …).
    case unusable(reason: String, box: PixelRect?)
}

/// Finds the face to judge in a frame (given as RGB24). One instance per source lane (it may keep
/// scratch buffers).
public protocol FaceLocator: AnyObject {
    func locate(image: PixelSource, frame: Frame) -> FaceLocation
}

/// Judges the whole picture, as the reference `liveness_reference.py` does on still images.
public final class WholeFrameLocator: FaceLocator {
    public init() {}
    public func locate(image: PixelSource, frame: Frame) -> FaceLocation {
        .face(PixelRect(x: 0, y: 0, width: image.width, height: image.height), faceCount: 1)
    }
}

/// One decided frame, or a source's own news, as the pipeline publishes it (in order per source).
public enum PipelineEvent: Sendable {
    case decision(FrameDecision)
    case source(id: String, SourceEvent)
    /// A verification transaction started (the source's window was just cleared) or ended.
    case transaction(TransactionEvent)
}

/// A verification transaction's start or end, published in order with its source's decisions: every
/// decision between the two is one the transaction saw.
public struct TransactionEvent: Sendable {
    public enum Phase: Sendable {
        case started(timeoutSeconds: Double)
        /// `elapsedSeconds`: monotonic time from the request to the answer; `crop`: the 224² grey face crop
        /// of the transaction's last scored frame, when `Configuration.keepTransactionCrops` is set.
        case ended(VerificationResult, elapsedSeconds: Double, crop: [UInt8]? = nil)
    }

    public var sourceID: String
    /// The pipeline's own number for the transaction (unique for the pipeline's lifetime).
    public var token: UInt64
    /// The requester's name for it.
    public var id: String
    public var phase: Phase
    /// The decision threshold in force when the transaction started.
    public var threshold: Double

    public init(sourceID: String, token: UInt64, id: String, phase: Phase, threshold: Double) {
        self.sourceID = sourceID
        self.token = token
        self.id = id
        self.phase = phase
        self.threshold = threshold
    }
}

/// Why a transaction could not start.
public struct TransactionRefusal: Error, CustomStringConvertible, Sendable {
    public var description: String
}

public struct FrameDecision: Sendable {
    public var sourceID: String
    public var sequence: UInt64
    public var presentationTimeSeconds: Double
    public var captureTimeNanoseconds: UInt64
    public var decidedTimeNanoseconds: UInt64
    /// When the prepare stage (detection, gates, crops) began and ended, on the same clock: the stages
    /// are queued (capture → prepare), prepare, and inference (prepared → decided, batching included).
    public var prepareStartedNanoseconds: UInt64 = 0
    public var preparedNanoseconds: UInt64 = 0
    /// How long the models ran on the batch that scored this frame (0 when it was not scored).
    public var modelNanoseconds: UInt64 = 0
    /// The decision on the fused score (`rawScore`, `smoothedScore` are fused).
    public var decision: Decision
    /// Each opinion's spoof probability for this frame (all nil when it was not scored).
    public var scores: OpinionScores
    public var box: PixelRect?
    public var faceCount: Int
    /// The 224² grey crop the ViT judged (row-major, 0–255), when `Configuration.publishCrops` is
    /// set (eval reports show the worst frames); nil otherwise.
    public var crop: [UInt8]?
    /// The share of the source's frames analysed when this frame was (`DecisionConfiguration.analysedShare`:
    /// 1 at every frame): what the decision's frame counts were scaled by.
    public var analysedShare = 1.0

    public init(
        sourceID: String, sequence: UInt64, presentationTimeSeconds: Double, captureTimeNanoseconds: UInt64 = 0,
        decidedTimeNanoseconds: UInt64 = 0, decision: Decision, scores: OpinionScores = OpinionScores(),
        box: PixelRect? = nil, faceCount: Int = 0, crop: [UInt8]? = nil, prepareStartedNanoseconds: UInt64 = 0,
        preparedNanoseconds: UInt64 = 0, modelNanoseconds: UInt64 = 0, analysedShare: Double = 1
    ) {
        self.analysedShare = analysedShare
        self.modelNanoseconds = modelNanoseconds
        self.prepareStartedNanoseconds = prepareStartedNanoseconds
        self.preparedNanoseconds = preparedNanoseconds
        self.sourceID = sourceID
        self.sequence = sequence
        self.presentationTimeSeconds = presentationTimeSeconds
        self.captureTimeNanoseconds = captureTimeNanoseconds
        self.decidedTimeNanoseconds = decidedTimeNanoseconds
        self.decision = decision
        self.scores = scores
        self.box = box
        self.faceCount = faceCount
        self.crop = crop
    }
}

/// Counters of one source lane (a snapshot).
public struct LaneStatistics: Sendable {
    public var framesIn = 0
    public var droppedStale = 0
    public var droppedBusy = 0
    /// Frames skipped at admission because they were beyond the source's analysis rate (`analysis_fps`).
    public var droppedRate = 0
    public var processed = 0
    /// Capture → decision, nanoseconds.
    public var latency = Histogram<UInt64>(
        highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
    /// Per stage, nanoseconds: capture → prepare started (waiting for the lane), prepare (convert,
    /// detect, gates, crop), prepared → decided (waiting for and running the batched ViT, deciding).
    public var queued = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
    public var prepare = Histogram<UInt64>(
        highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
    public var inference = Histogram<UInt64>(
        highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)

    public enum Stage: String, Sendable, CaseIterable {
        case queued, prepare, inference, total
    }

    public init() {}

    /// Capture → decision latency percentile, milliseconds.
    public func latencyMilliseconds(percentile: Double) -> Double {
        self.milliseconds(.total, percentile: percentile)
    }

    /// A stage's latency percentile, milliseconds (0 before any frame).
    public func milliseconds(_ stage: Stage, percentile: Double) -> Double {
        let histogram: Histogram<UInt64>
        switch stage {
        case .queued: histogram = self.queued
        case .prepare: histogram = self.prepare
        case .inference: histogram = self.inference
        case .total: histogram = self.latency
        }
        return histogram.totalCount == 0 ? 0 : Double(histogram.valueAtPercentile(percentile)) / 1e6
    }
}

/// The frame pipeline: per-source admit → detect/crop/preprocess (one serial queue per source)
/// → ViT inference batched across sources (one queue) → smoothing and decision → `sink`.
///
/// Backpressure (docs/ARCHITECTURE.md): a live source keeps only the newest frame waiting for its
/// lane (older ones are dropped as `stale`; a frame that finds the inference queue full is dropped
/// as `busy`); nothing ever blocks a live source's thread. A replay source never drops: its
/// thread waits for a free slot (`replayInFlight` frames per source), which slows the reader.
public final class LivenessPipeline: @unchecked Sendable {
    // @unchecked because of `opinions` (not Sendable: its models keep scratch): `score` and `fused` run
    // on `inferenceQueue` only (`drain` → `process`); `prepare`, pure, runs on any lane's prepare queue.
    // Every other stored property is a `let` of a Sendable type (`inbox`, `lanes`: Mutexes).

    public struct Configuration: Sendable {
        public var decisions: DecisionConfiguration
        /// Most frames one ViT call takes.
        public var maximumBatch = 8
        /// Prepared frames that may wait for inference (live frames beyond it are dropped as busy).
        public var inferenceCapacity = 16
        /// Frames a replay source may have inside the pipeline at once.
        public var replayInFlight = 4
        /// Attach each scored frame's grey crop to its decision (costs no copy; off for the daemon).
        public var publishCrops = false
        /// Keep the face crop of each transaction's last scored frame, for its `ended` event (`save_failed:`).
        public var keepTransactionCrops = false
        /// Forget a source once its end is published (its statistics go with it): for runs that
        /// add thousands of short sources one after another (eval), so their scratch memory is freed.
        public var forgetEndedSources = false
        /// Frames analysed per second of each source's frame time, unless `add` names another rate; the
        /// others are skipped at admission (counted as `rate`). nil: every frame.
        public var analysisFramesPerSecond: Double?

        public init(decisions: DecisionConfiguration) { self.decisions = decisions }
    }

    /// A prepared frame (or a source event) on its way to inference, in per-source order.
    struct Item {
        var lane: Lane
        /// What the decision needs of the frame; its pixels go back to the source's pool after prepare.
        var frame: (sequence: UInt64, presentationTimeSeconds: Double, captureTimeNanoseconds: UInt64)?
        /// Monotonic times the prepare stage started and finished (frames only).
        var prepareStarted: UInt64 = 0
        var prepared: UInt64 = 0
        var location: FaceLocation
        /// What the models need of the face (nil: nothing to score).
        var input: Opinions.FaceInput?
        var event: SourceEvent?
        /// The source's analysed share when the frame was admitted (`DecisionConfiguration.analysedShare`).
        var analysedShare = 1.0
    }

    final class Lane: @unchecked Sendable {
        // @unchecked because of the fields one queue owns: `machine` is used on `inferenceQueue` only
        // (`process`; `reset` and `updateDecisions` dispatch there); `rgb`, `converter` and `locator`
        // (both keep scratch) on `prepareQueue` only (`prepare`). `admission` and `statistics` are
        // Mutexes; the rest are `let`s of Sendable types.
        let id: String
        let kind: SourceKind
        let source: FrameSource
        let prepareQueue: DispatchQueue
        let replaySlots: DispatchSemaphore
        let converter = PixelConverter()
        let locator: FaceLocator
        var machine: DecisionMachine  // inference queue only
        /// What waits for a live lane's prepare queue, oldest first: source news in arrival order, and at
        /// most one frame between two pieces of news (a newer frame replaces a waiting frame that no news
        /// follows: dropped as stale). News waits behind one frame at most, never behind a stream of
        /// them (M10: `reconnected` used to wait until the camera stopped sending).
        struct Admission {
            var preparing = false
            /// With the analysed share at admission (frames).
            var waiting: [(event: SourceEvent, analysedShare: Double)]

            init() {
                self.waiting = []
                self.waiting.reserveCapacity(4)
            }
        }
        let admission = NIOLockedValueBox(Admission())
        /// Which frames are analysed (the source's thread only, the one that calls `admit`).
        let rate: NIOLockedValueBox<AnalysisRateGate>
        /// The open transaction's token (one at a time per source), and whether the source has ended.
        let transactionSlot = NIOLockedValueBox<(open: UInt64?, ended: Bool)>((nil, false))
        /// The open transaction's state (inference queue only).
        var verification: OpenVerification?
        let statistics = NIOLockedValueBox(LaneStatistics())
        let rgb = PaddedPicture()  // prepare queue only
        let preprocessing = Preprocessor.Scratch()  // prepare queue only
        /// Inputs the inference queue has scored, handed back so the next frames are prepared into their
        /// memory (as many as this lane ever had in flight at once).
        let spareInputs = NIOLockedValueBox([Opinions.FaceInput]())

        init(
            source: FrameSource, locator: FaceLocator, decisions: DecisionConfiguration, replayInFlight: Int,
            analysisFramesPerSecond: Double?
        ) {
            self.rate = NIOLockedValueBox(AnalysisRateGate(framesPerSecond: analysisFramesPerSecond))
            self.id = source.id
            self.kind = source.kind
            self.source = source
            self.locator = locator
            self.prepareQueue = DispatchQueue(label: "livenessd.prepare.\(source.id)")
            self.replaySlots = DispatchSemaphore(value: replayInFlight)
            self.machine = DecisionMachine(configuration: decisions)
        }
    }

    /// A transaction in progress on a lane.
    struct OpenVerification {
        var token: UInt64
        var id: String
        var state: Verification
        var started: UInt64
        /// The last scored frame's grey crop (`keepTransactionCrops`), its memory reused frame after frame.
        var crop: [UInt8] = []
    }

    public let configuration: Configuration
    /// The models and their fusion; scoring happens on `inferenceQueue` only, `prepare` on any lane.
    private let opinions: Opinions
    private let sink: @Sendable (PipelineEvent) -> Void
    private let inferenceQueue = DispatchQueue(label: "livenessd.infer")
    private struct Inbox {
        var items: [Item] = []
        var draining = false
    }

    private let inbox = NIOLockedValueBox(Inbox())
    private let lanes = NIOLockedValueBox([String: Lane]())
    private let idle = DispatchGroup()
    /// The inference queue's working arrays, kept between batches so that deciding allocates nothing.
    private var processing: [Item] = []  // inference queue only
    private var batchInputs: [Opinions.FaceInput] = []  // inference queue only
    private var batchScores: [OpinionScores] = []  // inference queue only

    public init(opinions: Opinions, configuration: Configuration, sink: @escaping @Sendable (PipelineEvent) -> Void) {
        self.opinions = opinions
        self.configuration = configuration
        self.sink = sink
        // The model's scratch grows to the largest batch actually seen (once), instead of being
        // reserved for `maximumBatch` up front: a camera at 30 fps runs batches of one, and the
        // batch-8 scratch is 11 MB of resident memory it would never use.
        // One BLAS thread: the pipeline already runs inference beside the decode/prepare lanes, and
        // OpenBLAS's extra worker spins between calls (measured: 97 % of a core at 30 fps with 2
        // threads).
        BLAS.setThreadCount(1)
    }

    /// Starts `source` and runs its frames through the pipeline. Throws when it cannot start.
    /// `analysisFramesPerSecond`: this source's analysis rate (0: every frame; nil: the configuration's).
    public func add(
        _ source: FrameSource, locator: FaceLocator = WholeFrameLocator(), analysisFramesPerSecond: Double? = nil
    ) throws {
        let lane = Lane(
            source: source, locator: locator, decisions: self.configuration.decisions,
            replayInFlight: self.configuration.replayInFlight,
            analysisFramesPerSecond: analysisFramesPerSecond ?? self.configuration.analysisFramesPerSecond)
        self.lanes.withLockedValue { $0[lane.id] = lane }
        self.idle.enter()  // left when the source's `ended` event has been published
        do {
            try source.start { [weak self] event in self?.admit(event, lane: lane) }
        } catch {
            self.lanes.withLockedValue { $0[lane.id] = nil }
            self.idle.leave()
            throw error
        }
    }

    /// Statistics of every source, by id.
    public func statistics() -> [String: LaneStatistics] {
        self.lanes.withLockedValue { lanes in lanes.mapValues { lane in lane.statistics.withLockedValue { $0 } } }
    }

    /// Starts a fresh decision window for one source (or all when nil).
    public func reset(sourceID: String? = nil) {
        self.inferenceQueue.async {
            for lane in self.lanes.withLockedValue({ Array($0.values) }) where sourceID == nil || lane.id == sourceID {
                lane.machine.reset()
            }
        }
    }

    private let transactionCounter = Synchronization.Atomic<UInt64>(0)

    /// Starts a verification transaction on `sourceID`: its decision window is cleared, a `started` event
    /// is published, and exactly one `ended` event follows — when the evidence suffices for a verdict
    /// (`rules`), when `timeoutSeconds` (monotonic clock) have passed, or when the source ends. Throws
    /// (and changes nothing) for an unknown or ended source, or one with a transaction already open.
    /// Returns the transaction's token.
    @discardableResult
    public func beginTransaction(
        id: String, sourceID: String, timeoutSeconds: Double, rules: VerificationRules
    ) throws -> UInt64 {
        guard let lane = self.lanes.withLockedValue({ $0[sourceID] }) else {
            let known = self.lanes.withLockedValue { $0.keys.sorted() }.joined(separator: ", ")
            throw TransactionRefusal(description: "no source '\(sourceID)' (sources: \(known))")
        }
        let token = self.transactionCounter.add(1, ordering: .relaxed).newValue
        let refusal = lane.transactionSlot.withLockedValue { slot -> String? in
            if slot.ended { return "source '\(sourceID)' has ended" }
            if slot.open != nil { return "a transaction is already open on '\(sourceID)'; wait for its answer" }
            slot.open = token
            return nil
        }
        if let refusal { throw TransactionRefusal(description: refusal) }
        let requested = monotonicNanoseconds()
        self.inferenceQueue.async {
            lane.machine.reset()
            let decisions = lane.machine.configuration
            lane.verification = OpenVerification(
                token: token, id: id, state: Verification(rules: rules, decisions: decisions), started: requested)
            self.sink(
                .transaction(
                    TransactionEvent(
                        sourceID: lane.id, token: token, id: id, phase: .started(timeoutSeconds: timeoutSeconds),
                        threshold: decisions.threshold)))
        }
        self.inferenceQueue.asyncAfter(deadline: .now() + timeoutSeconds) {
            guard let open = lane.verification, open.token == token else { return }
            self.endTransaction(on: lane, open.state.expire())
        }
        return token
    }

    /// Inference queue only: publishes the open transaction's end and frees the source for the next.
    private func endTransaction(on lane: Lane, _ result: VerificationResult) {
        guard let open = lane.verification else { return }
        lane.verification = nil
        lane.transactionSlot.withLockedValue { $0.open = nil }
        let elapsed = Double(monotonicNanoseconds() &- open.started) / 1e9
        self.sink(
            .transaction(
                TransactionEvent(
                    sourceID: lane.id, token: open.token, id: open.id,
                    phase: .ended(result, elapsedSeconds: elapsed, crop: open.crop.isEmpty ? nil : open.crop),
                    threshold: open.state.decisions.threshold)))
    }

    /// Changes the decision rules of every source (SIGHUP reload); windows are kept.
    public func updateDecisions(_ decisions: DecisionConfiguration) {
        self.inferenceQueue.async {
            for lane in self.lanes.withLockedValue({ Array($0.values) }) { lane.machine.configuration = decisions }
        }
    }

    /// Stops every source, lets what is in flight finish, and returns when every source's end has
    /// been published (or `timeoutSeconds` passed: false).
    public func stop(timeoutSeconds: Double) -> Bool {
        for lane in self.lanes.withLockedValue({ Array($0.values) }) { lane.source.stop() }
        return self.idle.wait(timeout: .now() + timeoutSeconds) == .success
    }

    /// Runs `body` on `queue` once every source has ended (files played out, or stopped).
    public func whenFinished(on queue: DispatchQueue, _ body: @escaping @Sendable () -> Void) {
        self.idle.notify(queue: queue, execute: body)
    }

    /// Waits until every source has ended by itself (files played out).
    public func waitUntilFinished(timeoutSeconds: Double) -> Bool {
        self.idle.wait(timeout: .now() + timeoutSeconds) == .success
    }

    // MARK: - Admit (source thread)

    private func admit(_ event: SourceEvent, lane: Lane) {
        var share = 1.0
        if case .frame(let frame) = event {
            // Beyond the analysis rate: skipped before anything is done with it (its buffer goes back to the
            // pool when `frame` is released), whether live or replay.
            let analysed = lane.rate.withLockedValue { gate -> Bool in
                let admitted = gate.admits(timeSeconds: frame.presentationTimeSeconds)
                share = gate.analysedShare
                return admitted
            }
            if !analysed {
                lane.statistics.withLockedValue {
                    $0.framesIn += 1
                    $0.droppedRate += 1
                }
                return
            }
        }
        if lane.kind == .replay {
            // Replay never drops: the reader waits for a slot, and news takes the frames' path, in order.
            lane.replaySlots.wait()
            if case .frame(let frame) = event {
                lane.statistics.withLockedValue { $0.framesIn += 1 }
                let admittedShare = share
                lane.prepareQueue.async { self.prepare(frame, lane: lane, analysedShare: admittedShare) }
            } else {
                lane.prepareQueue.async { self.enqueue(self.newsItem(event, lane: lane)) }
            }
            return
        }
        let isFrame: Bool
        if case .frame = event { isFrame = true } else { isFrame = false }
        if isFrame { lane.statistics.withLockedValue { $0.framesIn += 1 } }
        let start = lane.admission.withLockedValue { admission -> Bool in
            if isFrame, let last = admission.waiting.last, case .frame = last.event {
                lane.statistics.withLockedValue { $0.droppedStale += 1 }
                admission.waiting[admission.waiting.count - 1] = (event, share)
            } else {
                admission.waiting.append((event, share))
            }
            if admission.preparing { return false }
            admission.preparing = true
            return true
        }
        if start {
            lane.prepareQueue.async { self.prepareLive(lane: lane) }
        }
    }

    private func newsItem(_ event: SourceEvent, lane: Lane) -> Item {
        Item(lane: lane, frame: nil, location: .noFace, input: nil, event: event)
    }

    // MARK: - Prepare (lane queue)

    /// Takes what waits for a live lane, oldest first, until nothing does.
    private func prepareLive(lane: Lane) {
        while let next = lane.admission.withLockedValue({ admission -> (event: SourceEvent, analysedShare: Double)? in
            if admission.waiting.isEmpty {
                admission.preparing = false
                return nil
            }
            return admission.waiting.removeFirst()
        }) {
            if case .frame(let frame) = next.event {
                self.prepare(frame, lane: lane, analysedShare: next.analysedShare)
            } else {
                self.enqueue(self.newsItem(next.event, lane: lane))
            }
        }
    }

    /// Frame → RGB24 → face location → each opinion's crop, all from the one RGB picture: the ViT's
    /// 224² grey crop is resized on RGB and turned grey afterwards, exactly as the reference transform
    /// does (resizing luma instead was measured to move spoof probabilities by up to 0.021,
    /// docs/ARCHITECTURE.md); the pair's BGR 80² crops are read from the same RGB with the channels
    /// swapped while resizing (OpenCV's bilinear treats each channel alone).
    private func prepare(_ frame: Frame, lane: Lane, analysedShare: Double) {
        let started = monotonicNanoseconds()
        var location = FaceLocation.noFace
        var input: Opinions.FaceInput?
        func judge(_ pixels: UnsafePointer<UInt8>, rowStride: Int) {
            let image = PixelSource(
                base: pixels, width: frame.width, height: frame.height, rowStride: rowStride, layout: .rgb24)
            location = lane.locator.locate(image: image, frame: frame)
            if case .face(let rect, _, let box) = location {
                // Into the memory of an input this lane had scored before (a new one only while the lane has
                // more frames in flight than ever before).
                var prepared = lane.spareInputs.withLockedValue { $0.popLast() } ?? Opinions.FaceInput()
                do {
                    try self.opinions.prepare(
                        image: image, region: rect, box: box, into: &prepared, scratch: lane.preprocessing)
                    input = prepared
                } catch {
                    location = .unusable(reason: "cannot crop the face: \(error)", box: rect)
                }
            }
        }
        if let rgb = frame.rgb {
            // Converted by the source's thread.
            judge(UnsafePointer(rgb.pointer.assumingMemoryBound(to: UInt8.self)), rowStride: frame.width * 3)
        } else {
            do {
                // Straight from swscale into the lane's padded picture: no scratch picture, no row copy.
                try lane.converter.convert(frame, to: .rgb24, into: lane.rgb)
                judge(UnsafePointer(lane.rgb.pointer), rowStride: lane.rgb.rowStride)
            } catch {
                location = .unusable(reason: "cannot convert the frame: \(error)", box: nil)
            }
        }
        let metadata = (frame.sequence, frame.presentationTimeSeconds, frame.captureTimeNanoseconds)
        self.enqueue(
            Item(
                lane: lane, frame: metadata, prepareStarted: started, prepared: monotonicNanoseconds(),
                location: location,
                input: input, event: nil, analysedShare: analysedShare))
    }

    private func enqueue(_ item: Item) {
        let accepted = self.inbox.withLockedValue { inbox -> (accepted: Bool, startDrain: Bool) in
            let isLiveFrame = item.lane.kind == .live && item.event == nil
            if isLiveFrame && inbox.items.count >= self.configuration.inferenceCapacity { return (false, false) }
            inbox.items.append(item)
            let start = !inbox.draining
            inbox.draining = true
            return (true, start)
        }
        if !accepted.accepted {
            item.lane.statistics.withLockedValue { $0.droppedBusy += 1 }
            return
        }
        if accepted.startDrain { self.inferenceQueue.async { self.drain() } }
    }

    // MARK: - Infer and decide (inference queue)

    private func drain() {
        // The taken items go into `processing`'s kept memory (swapped out while in use).
        var batch: [Item] = []
        swap(&batch, &self.processing)
        defer { swap(&batch, &self.processing) }
        while true {
            let empty = self.inbox.withLockedValue { inbox -> Bool in
                batch.append(contentsOf: inbox.items.prefix(self.configuration.maximumBatch * 2))
                if batch.isEmpty { inbox.draining = false }
                return batch.isEmpty
            }
            if empty { return }
            self.process(batch)
            self.inbox.withLockedValue { $0.items.removeFirst(batch.count) }
            // Scored inputs go back to their lanes once nothing else holds them, so the next prepare writes
            // into their memory instead of copying it (a published crop is the event's: not reused).
            for index in batch.indices {
                guard let input = batch[index].input else { continue }
                batch[index].input = nil
                if !self.configuration.publishCrops {
                    batch[index].lane.spareInputs.withLockedValue { $0.append(input) }
                }
            }
            batch.removeAll(keepingCapacity: true)
        }
    }

    /// Scores the faces of `items` in batches of at most `maximumBatch` (every opinion), fuses, then
    /// decides in order.
    private func process(_ items: [Item]) {
        var rateLimited = true  // every face comes from a source that skips frames (analysis_fps)
        for item in items where item.event == nil {
            if let input = item.input {
                self.batchInputs.append(input)
                rateLimited = rateLimited && item.analysedShare < 1
            }
        }
        let modelStarted = monotonicNanoseconds()
        // Both opinions at once, on two threads (Opinions.run), when faces waited for each other (a backlog),
        // or when a lone face comes from a source analysed below its frame rate: there the second thread's
        // wake-up (≈ 1 ms of CPU) is paid a few times a second, and the decision comes sooner by the shorter
        // opinion's time. A lone face of a source analysed at every frame stays on one thread.
        self.opinions.score(
            self.batchInputs, maximumBatch: self.configuration.maximumBatch,
            concurrently: self.batchInputs.count > 1 || rateLimited, into: &self.batchScores)
        let modelNanoseconds = self.batchInputs.isEmpty ? 0 : monotonicNanoseconds() &- modelStarted
        self.batchInputs.removeAll(keepingCapacity: true)
        var scored = 0  // faces scored so far, in item order: the next item with an input has batchScores[scored]
        for item in items {
            let lane = item.lane
            var opinionScores = OpinionScores()
            if item.event == nil && item.input != nil {
                opinionScores = self.batchScores[scored]
                scored += 1
            }
            if let event = item.event {
                if case .ended(let end) = event {
                    lane.transactionSlot.withLockedValue { $0.ended = true }
                    if let open = lane.verification {
                        // No more frames will come: the answer is what was seen, never a verdict.
                        var result = open.state.expire()
                        result.reason = "the source ended (\(end))" + (result.reason.map { ": " + $0 } ?? "")
                        self.endTransaction(on: lane, result)
                    }
                }
                self.sink(.source(id: lane.id, event))
                if lane.kind == .replay { lane.replaySlots.signal() }
                if case .ended = event {
                    if self.configuration.forgetEndedSources {
                        self.lanes.withLockedValue { lanes in
                            if lanes[lane.id] === lane { lanes[lane.id] = nil }
                        }
                    }
                    self.idle.leave()
                }
                continue
            }
            guard let frame = item.frame else { continue }
            let time = frame.presentationTimeSeconds
            let observation: Observation
            var box: PixelRect?
            var faceCount = 0
            switch item.location {
            case .face(let rect, let count, _):
                box = rect
                faceCount = count
                if let fused = self.opinions.fused(opinionScores) {
                    observation = .scored(spoofProbability: fused, timeSeconds: time)
                } else {
                    // A model gave a non-finite score (damaged weights): never a verdict from it.
                    observation = .unusable(reason: "the models gave no finite score", timeSeconds: time)
                }
            case .noFace:
                observation = .noFace(timeSeconds: time)
            case .unusable(let reason, let rect):
                observation = .unusable(reason: reason, timeSeconds: time)
                box = rect
                faceCount = rect == nil ? 0 : 1
            }
            if lane.machine.configuration.analysedShare != item.analysedShare {
                lane.machine.configuration.analysedShare = item.analysedShare
            }
            let decision = lane.machine.observe(observation)
            let decided = monotonicNanoseconds()
            lane.statistics.withLockedValue {
                $0.processed += 1
                _ = $0.latency.record(decided &- frame.captureTimeNanoseconds)
                _ = $0.queued.record(item.prepareStarted &- frame.captureTimeNanoseconds)
                _ = $0.prepare.record(item.prepared &- item.prepareStarted)
                _ = $0.inference.record(decided &- item.prepared)
            }
            self.sink(
                .decision(
                    FrameDecision(
                        sourceID: lane.id, sequence: frame.sequence, presentationTimeSeconds: time,
                        captureTimeNanoseconds: frame.captureTimeNanoseconds, decidedTimeNanoseconds: decided,
                        decision: decision, scores: opinionScores, box: box, faceCount: faceCount,
                        crop: self.configuration.publishCrops && item.input?.luma.isEmpty == false
                            ? item.input?.luma : nil, prepareStartedNanoseconds: item.prepareStarted,
                        preparedNanoseconds: item.prepared,
                        modelNanoseconds: item.input == nil ? 0 : modelNanoseconds, analysedShare: item.analysedShare)))
            if var open = lane.verification {
                lane.verification = nil  // `open` is the only holder while it changes (no copy of `crop`)
                let result = open.state.observe(
                    observation, decision: decision, scores: opinionScores, sequence: frame.sequence)
                if self.configuration.keepTransactionCrops, case .scored = observation, let luma = item.input?.luma,
                    !luma.isEmpty
                {
                    if open.crop.count != luma.count {
                        open.crop = luma
                    } else {
                        open.crop.withUnsafeMutableBufferPointer { target in
                            luma.withUnsafeBufferPointer {
                                target.baseAddress!.update(from: $0.baseAddress!, count: $0.count)
                            }
                        }
                    }
                }
                lane.verification = open
                if let result { self.endTransaction(on: lane, result) }
            }
            if lane.kind == .replay { lane.replaySlots.signal() }
        }
    }
}
