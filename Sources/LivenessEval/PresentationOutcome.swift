import CaptureKit
import FramePipeline
import Foundation
import LivenessEngine

/// What one presentation amounted to (report.json's `presentations`).
public struct PresentationResult: Codable, Sendable {
    public var path: String
    public var label: PresentationLabel
    public var species: String?
    public var split: String?
    /// `still` (one picture) or `clip`.
    public var kind: String
    public var frames: FrameCounts
    /// The presentation's score: called an attack iff score ≥ threshold, exactly as the daemon
    /// behaves (see `rule`); nil for a failure to acquire.
    public var score: Double?
    /// `window`: the daemon's window reached its minimum of scored frames; score = lowest smoothed
    /// score + hysteresis, i.e. the daemon said `live` at some frame iff score < threshold (the door
    /// would have opened). `short`: too few scored frames for a verdict (stills): score = mean frame
    /// score, judged like `livenessd classify`.
    public var rule: String?
    /// At the configured threshold: `attack` or `bona_fide`; nil for a failure to acquire.
    public var decision: PresentationLabel?
    /// The daemon's own states over the clip.
    public var daemon: DaemonOutcome
    public var medianFrameScore: Double?
    /// Each opinion's presentation score, by the same rule as `score`, as if that opinion judged
    /// alone (its own window over its own frame scores); present when several opinions judged.
    public var opinions: OpinionScores?
    /// Clips only: simulated verification transactions (nil for stills and failures to acquire).
    public var transactions: Transactions?
    /// Why this presentation could not be acquired (unreadable, truncated, no face …); it then
    /// counts as a non-response, not in APCER/BPCER.
    public var failure: String?
    /// The run was interrupted before this presentation finished.
    public var interrupted: Bool
    /// How the source ended (`end of file`, `truncated: …`).
    public var end: String
    public var damagedPacketsSkipped: Int

    public struct FrameCounts: Codable, Sendable, Equatable {
        public var decoded = 0
        public var scored = 0
        public var noFace = 0
        public var unusable = 0
        /// Unusable frames by gate reason.
        public var unusableReasons: [String: Int] = [:]

        enum CodingKeys: String, CodingKey {
            case decoded, scored
            case noFace = "no_face"
            case unusable
            case unusableReasons = "unusable_reasons"
        }
    }

    public struct DaemonOutcome: Codable, Sendable, Equatable {
        /// First `live` or `spoof` the daemon published, and when (frame time, seconds).
        public var firstVerdict: String?
        public var firstVerdictSeconds: Double?
        /// The daemon said `live` at some frame.
        public var reachedLive = false
        public var finalState: String?
        /// Changes between `live` and `spoof` after the first verdict (a state that leaves a verdict for
        /// `deciding`, `no_face` … and comes back to the same verdict is not a change).
        public var verdictChanges = 0

        enum CodingKeys: String, CodingKey {
            case firstVerdict = "first_verdict"
            case firstVerdictSeconds = "first_verdict_seconds"
            case reachedLive = "reached_live"
            case finalState = "final_state"
            case verdictChanges = "verdict_changes"
        }
    }

    /// Verification transactions (`{"op":"verify"}`) started every `everySeconds` of a clip's frame time,
    /// each run over the recorded frames with a fresh window and the daemon's own `Verification` rules:
    /// what a door would have answered had the badge been swiped then (issue 12's stability measure).
    public struct Transactions: Codable, Sendable, Equatable {
        public var everySeconds: Double
        public var started = 0
        /// Outcome → count; `ended` counts transactions the clip's end cut short.
        public var outcomes: [String: Int] = [:]
        /// Verdicts opposite to the presentation's label (`spoof` on bona fide, `live` on an attack).
        public var oppositeToLabel = 0
        /// Verdicts opposite to the daemon's first verdict on the clip.
        public var oppositeToFirstVerdict = 0
        /// Start times (frame time, seconds) of the transactions that answered against the label.
        public var oppositeStarts: [Double] = []

        enum CodingKeys: String, CodingKey {
            case started, outcomes
            case everySeconds = "every_seconds"
            case oppositeToLabel = "opposite_to_label"
            case oppositeToFirstVerdict = "opposite_to_first_verdict"
            case oppositeStarts = "opposite_starts"
        }
    }

    enum CodingKeys: String, CodingKey {
        case path, label, species, split, kind, frames, score, rule, decision, daemon, failure, interrupted, end,
            opinions, transactions
        case medianFrameScore = "median_frame_score"
        case damagedPacketsSkipped = "damaged_packets_skipped"
    }

    /// Labelled presentation score, when acquired.
    var labelledScore: LabelledScore? {
        guard self.failure == nil, !self.interrupted, let score else { return nil }
        return LabelledScore(score: score, label: self.label, species: self.species)
    }

    /// One opinion's labelled presentation score, when acquired and that opinion judged.
    func labelledScore(_ kind: OpinionKind) -> LabelledScore? {
        guard self.labelledScore != nil, let score = self.opinions?[kind] else { return nil }
        return LabelledScore(score: score, label: self.label, species: self.species)
    }
}

/// Per-frame series of one presentation, kept for the report's timelines and frame-level metrics.
struct FrameSeries: Sendable {
    var times: [Double] = []
    /// NaN where the frame had no score (no face, unusable).
    var raw: [Double] = []
    var smoothed: [Double] = []
    var states: [LivenessState] = []
    /// What each frame was, as the decision machine saw it (for replaying transactions).
    var observations: [Observation] = []
}

/// Collects one presentation's decisions as the pipeline publishes them (in frame order) and
/// turns them into a `PresentationResult`. Pure: no clocks, no I/O.
struct PresentationAccumulator {
    let presentation: Presentation
    /// The run's rules, with the analysed share of the latest frame (`analysis_fps`).
    private(set) var decisions: DecisionConfiguration
    private(set) var series = FrameSeries()
    private var counts = PresentationResult.FrameCounts()
    private var lowestSmoothed: Double?
    private var daemon = PresentationResult.DaemonOutcome()
    private var skipped = 0
    private var lastVerdict: LivenessState?
    /// The crop of the frame most against the label (lowest score of an attack, highest of a bona
    /// fide presentation): the report's thumbnail of a miss.
    private(set) var telltaleCrop: [UInt8]?
    private var telltaleScore: Double?
    /// Per opinion: the daemon's decision machine run on that opinion's scores alone, the lowest
    /// smoothed score with a full window, and the frame scores.
    private var opinionMachines: [OpinionKind: DecisionMachine]
    private var opinionLowest: [OpinionKind: Double] = [:]
    private(set) var opinionFrames: [OpinionKind: [Double]] = [:]

    /// The rules simulated transactions follow.
    let verification: VerificationRules

    init(
        presentation: Presentation, decisions: DecisionConfiguration, opinions: [OpinionKind] = [],
        verification: VerificationRules = VerificationRules()
    ) {
        self.presentation = presentation
        self.decisions = decisions
        self.verification = verification
        self.opinionMachines =
            opinions.count > 1
            ? Dictionary(uniqueKeysWithValues: opinions.map { ($0, DecisionMachine(configuration: decisions)) }) : [:]
    }

    mutating func add(_ frame: FrameDecision) {
        let decision = frame.decision
        self.decisions.analysedShare = frame.analysedShare
        for kind in Array(self.opinionMachines.keys) {
            self.opinionMachines[kind]!.configuration.analysedShare = frame.analysedShare
            let time = frame.presentationTimeSeconds
            let observation: Observation
            if decision.rawScore != nil, let score = frame.scores[kind] {
                observation = .scored(spoofProbability: score, timeSeconds: time)
                self.opinionFrames[kind, default: []].append(score)
            } else {
                observation = Self.unscored(decision, time: time, unusableReason: decision.reason ?? "")
            }
            let opinion = self.opinionMachines[kind]!.observe(observation)
            if opinion.rawScore != nil, opinion.windowCount >= self.decisions.effectiveMinimumScoredFrames,
                let smoothed = opinion.smoothedScore
            {
                self.opinionLowest[kind] = min(self.opinionLowest[kind] ?? smoothed, smoothed)
            }
        }
        self.counts.decoded += 1
        self.series.times.append(frame.presentationTimeSeconds)
        self.series.raw.append(decision.rawScore ?? .nan)
        self.series.smoothed.append(decision.smoothedScore ?? .nan)
        self.series.states.append(decision.state)
        let time = frame.presentationTimeSeconds
        self.series.observations.append(
            decision.rawScore.map { .scored(spoofProbability: $0, timeSeconds: time) }
                ?? Self.unscored(decision, time: time, unusableReason: decision.reason ?? "unusable"))
        if decision.state == .live || decision.state == .spoof {
            if let last = self.lastVerdict, last != decision.state { self.daemon.verdictChanges += 1 }
            self.lastVerdict = decision.state
        }
        if let raw = decision.rawScore {
            self.counts.scored += 1
            if decision.windowCount >= self.decisions.effectiveMinimumScoredFrames,
                let smoothed = decision.smoothedScore
            {
                self.lowestSmoothed = min(self.lowestSmoothed ?? smoothed, smoothed)
            }
            let against = self.presentation.label == .attack ? -raw : raw
            if let crop = frame.crop, self.telltaleScore.map({ against > $0 }) ?? true {
                self.telltaleScore = against
                self.telltaleCrop = crop
            }
        } else if Self.isNoFace(decision) {
            self.counts.noFace += 1
        } else {
            self.counts.unusable += 1
            self.counts.unusableReasons[decision.reason ?? "unknown", default: 0] += 1
        }
        if decision.state == .live || decision.state == .spoof {
            if self.daemon.firstVerdict == nil {
                self.daemon.firstVerdict = decision.state.rawValue
                self.daemon.firstVerdictSeconds = frame.presentationTimeSeconds
            }
            if decision.state == .live { self.daemon.reachedLive = true }
        }
        self.daemon.finalState = decision.state.rawValue
    }

    /// What a frame without a score was, as the decision machine saw it: no face, or an unusable one.
    static func unscored(_ decision: Decision, time: Double, unusableReason: String) -> Observation {
        Self.isNoFace(decision)
            ? .noFace(timeSeconds: time) : .unusable(reason: unusableReason, timeSeconds: time)
    }

    static func isNoFace(_ decision: Decision) -> Bool {
        decision.state == .noFace || decision.reason == "no face in view"
    }

    mutating func skippedPackets(_ count: Int) { self.skipped = count }

    /// The result once the source ended (`end`), or was never opened (`openError`).
    func finish(end: SourceEnd?, openError: String? = nil, interrupted: Bool = false) -> PresentationResult {
        let scores = self.series.raw.filter { !$0.isNaN }
        var score: Double?
        var rule: String?
        if let lowest = self.lowestSmoothed {
            score = lowest + self.decisions.hysteresis
            rule = "window"
        } else if !scores.isEmpty {
            score = scores.reduce(0, +) / Double(scores.count)
            rule = "short"
        }
        var failure: String?
        if let openError {
            failure = openError
        } else if case .truncated(let reason) = end {
            failure = "truncated: \(reason)"
        } else if case .error(let reason) = end {
            failure = "unreadable: \(reason)"
        } else if case .deviceGone(let reason) = end {
            failure = "source gone: \(reason)"
        } else if self.counts.decoded == 0 && !interrupted {
            failure = "no frames decoded"
        } else if scores.isEmpty && !interrupted {
            if self.counts.unusable > 0, let top = self.counts.unusableReasons.max(by: { $0.value < $1.value }) {
                failure =
                    "no usable face in \(self.counts.decoded) frame(s): \(top.key) in \(top.value)"
                    + (self.counts.noFace > 0 ? ", no face in \(self.counts.noFace)" : "")
            } else {
                failure = "no face in \(self.counts.decoded) frame(s)"
            }
        }
        let acquired = failure == nil && !interrupted
        var opinions: OpinionScores?
        if acquired && !self.opinionMachines.isEmpty {
            var values = OpinionScores()
            for kind in self.opinionMachines.keys {
                let frames = self.opinionFrames[kind] ?? []
                if let lowest = self.opinionLowest[kind] {
                    values[kind] = lowest + self.decisions.hysteresis
                } else if !frames.isEmpty {
                    values[kind] = frames.reduce(0, +) / Double(frames.count)
                }
            }
            opinions = values
        }
        let isClip = !EvalDataset.isStill(self.presentation.path)
        return PresentationResult(
            path: self.presentation.path, label: self.presentation.label, species: self.presentation.species,
            split: self.presentation.split, kind: EvalDataset.isStill(self.presentation.path) ? "still" : "clip",
            frames: self.counts, score: acquired ? score : nil, rule: acquired ? rule : nil,
            decision: acquired ? score.map { $0 >= self.decisions.threshold ? .attack : .bonaFide } : nil,
            daemon: self.daemon, medianFrameScore: median(scores), opinions: opinions,
            transactions: acquired && isClip ? self.simulatedTransactions() : nil, failure: failure,
            interrupted: interrupted,
            end: end.map { "\($0)" } ?? "not opened", damagedPacketsSkipped: self.skipped)
    }

    /// Seconds of frame time between two simulated transaction starts.
    static let transactionSpacingSeconds = 0.5

    /// A transaction started at every `transactionSpacingSeconds` of the clip, each over the frames from its
    /// start with a fresh `DecisionMachine` (as `verify` resets the source's window) and `Verification`; one
    /// still open when its timeout passes (in frame time) ends as the daemon's expiry would, one the clip's
    /// end cuts short counts as `ended`.
    func simulatedTransactions() -> PresentationResult.Transactions {
        var summary = PresentationResult.Transactions(everySeconds: Self.transactionSpacingSeconds)
        let observations = self.series.observations
        guard let first = observations.first?.timeSeconds else { return summary }
        let opposite: LivenessState = self.presentation.label == .attack ? .live : .spoof
        var nextStart = first
        for (startIndex, startObservation) in observations.enumerated() where startObservation.timeSeconds >= nextStart
        {
            nextStart = startObservation.timeSeconds + Self.transactionSpacingSeconds
            var machine = DecisionMachine(configuration: self.decisions)
            machine.reset()
            var verification = Verification(rules: self.verification, decisions: self.decisions)
            let deadline = startObservation.timeSeconds + self.verification.defaultTimeoutSeconds
            var outcome = "ended"
            for index in startIndex..<observations.count {
                let observation = observations[index]
                if observation.timeSeconds > deadline {
                    outcome = verification.expire().outcome.rawValue
                    break
                }
                let decision = machine.observe(observation)
                var opinions = OpinionScores()
                if case .scored(let probability, _) = observation { opinions.vit = probability }
                if let result = verification.observe(
                    observation, decision: decision, scores: opinions, sequence: UInt64(index))
                {
                    outcome = result.outcome.rawValue
                    break
                }
            }
            summary.started += 1
            summary.outcomes[outcome, default: 0] += 1
            if outcome == opposite.rawValue {
                summary.oppositeToLabel += 1
                summary.oppositeStarts.append((startObservation.timeSeconds * 1000).rounded() / 1000)
            }
            if let firstVerdict = self.daemon.firstVerdict, outcome == "live" || outcome == "spoof",
                outcome != firstVerdict
            {
                summary.oppositeToFirstVerdict += 1
            }
        }
        return summary
    }

    /// Frame-level labelled scores (scored frames only) of an acquired presentation.
    func frameScores() -> [LabelledScore] {
        self.series.raw.filter { !$0.isNaN }.map {
            LabelledScore(score: $0, label: self.presentation.label, species: self.presentation.species)
        }
    }

    /// One opinion's frame-level labelled scores.
    func frameScores(_ kind: OpinionKind) -> [LabelledScore] {
        (self.opinionFrames[kind] ?? []).map {
            LabelledScore(score: $0, label: self.presentation.label, species: self.presentation.species)
        }
    }
}
