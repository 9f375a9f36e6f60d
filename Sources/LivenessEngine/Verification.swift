/// What a verification transaction (one badge swipe: `{"op":"verify"}` on the socket) needs before it
/// answers. The defaults were chosen on the shared clips (docs/ARCHITECTURE.md, "Verification
/// transactions"): a verdict needs enough frames, enough time, and a smoothed score that stayed on one
/// side of the hysteresis band for a run of frames, so one transaction gives one answer that a
/// transaction started a moment later would repeat.
public struct VerificationRules: Sendable, Equatable {
    /// Frame time from the transaction's first frame before any verdict (seconds).
    public var minimumSeconds = 1.0
    /// Scored frames (a usable face, judged by the models) before any verdict.
    public var minimumScoredFrames = 15
    /// The smoothed fused score outside threshold ± hysteresis, on the verdict's side, for this many
    /// scored frames in a row (a frame without a usable face starts the run again).
    public var stableFrames = 10
    /// When a request names no `timeout_ms` (seconds).
    public var defaultTimeoutSeconds = 5.0
    /// The longest `timeout_ms` a request may ask for (seconds).
    public var maximumTimeoutSeconds = 60.0

    public init() {}
}

/// How a transaction ended.
public enum VerificationOutcome: String, Sendable, Equatable, Codable, CaseIterable {
    case live
    case spoof
    /// Time ran out without a usable face: nobody (or no face) in view.
    case noFace = "no_face"
    /// Time ran out with faces that could not be judged (too small, dark, blurred …): `reason` says why.
    case unusable
    /// Time ran out with faces judged but no settled verdict, or no frame arrived at all.
    case timeout
}

/// A transaction's answer.
public struct VerificationResult: Sendable, Equatable {
    public var outcome: VerificationOutcome
    public var reason: String?
    /// The smoothed fused spoof probability at the last scored frame.
    public var smoothed: Double?
    /// Each opinion's spoof probability, averaged over the transaction's scored frames.
    public var scores: OpinionScores
    /// Frames decided during the transaction, and how many of them were scored.
    public var frames: Int
    public var scoredFrames: Int
    /// Frame time from the first to the last frame of the transaction (seconds).
    public var evidenceSeconds: Double
    /// Sequence numbers of the first and last frame the transaction used.
    public var firstSequence: UInt64?
    public var lastSequence: UInt64?

    public init(
        outcome: VerificationOutcome, reason: String?, smoothed: Double?, scores: OpinionScores, frames: Int,
        scoredFrames: Int, evidenceSeconds: Double, firstSequence: UInt64?, lastSequence: UInt64?
    ) {
        self.outcome = outcome
        self.reason = reason
        self.smoothed = smoothed
        self.scores = scores
        self.frames = frames
        self.scoredFrames = scoredFrames
        self.evidenceSeconds = evidenceSeconds
        self.firstSequence = firstSequence
        self.lastSequence = lastSequence
    }
}

/// One transaction's bookkeeping, fed every decision of its source after a fresh window was started.
/// Pure and deterministic: time comes from the frames; the caller ends it with `expire()` when its
/// clock says the timeout has passed.
public struct Verification: Sendable {
    public let rules: VerificationRules
    /// The decision rules in force when the transaction started (a reload does not move its band).
    public let decisions: DecisionConfiguration
    private var frames = 0
    private var scored = 0
    private var noFaceFrames = 0
    private var unusableFrames = 0
    private var lastUnusableReason: String?
    private var firstTime: Double?
    private var lastTime: Double?
    private var firstSequence: UInt64?
    private var lastSequence: UInt64?
    private var lastSmoothed: Double?
    private var run = 0
    private var runSide: VerificationOutcome?
    private var vitSum = 0.0
    private var vitCount = 0
    private var pairSum = 0.0
    private var pairCount = 0

    public init(rules: VerificationRules, decisions: DecisionConfiguration) {
        self.rules = rules
        self.decisions = decisions
    }

    /// One decided frame of the transaction's source (what the frame was, and the source's decision after
    /// it); the result once the evidence suffices.
    public mutating func observe(
        _ observation: Observation, decision: Decision, scores: OpinionScores, sequence: UInt64
    ) -> VerificationResult? {
        let time = observation.timeSeconds
        self.frames += 1
        if self.firstTime == nil {
            self.firstTime = time
            self.firstSequence = sequence
        }
        self.lastTime = time
        self.lastSequence = sequence
        let smoothed: Double
        switch observation {
        case .scored(let probability, _):
            smoothed = decision.smoothedScore ?? probability
        case .noFace, .unusable:
            if case .unusable(let reason, _) = observation {
                self.unusableFrames += 1
                self.lastUnusableReason = reason
            } else {
                self.noFaceFrames += 1
            }
            // The face may not be the same one when it comes back: the run starts again.
            self.run = 0
            self.runSide = nil
            return nil
        }
        self.scored += 1
        self.lastSmoothed = smoothed
        if let vit = scores.vit, vit.isFinite {
            self.vitSum += vit
            self.vitCount += 1
        }
        if let pair = scores.minifasnet, pair.isFinite {
            self.pairSum += pair
            self.pairCount += 1
        }
        let side: VerificationOutcome?
        if smoothed >= self.decisions.threshold + self.decisions.hysteresis {
            side = .spoof
        } else if smoothed < self.decisions.threshold - self.decisions.hysteresis {
            side = .live
        } else {
            side = nil
        }
        if side != nil && side == self.runSide {
            self.run += 1
        } else {
            self.runSide = side
            self.run = side == nil ? 0 : 1
        }
        guard let verdict = self.runSide, self.run >= self.stableFrames,
            self.scored >= self.minimumScoredFrames, self.evidenceSeconds >= self.rules.minimumSeconds
        else { return nil }
        return self.result(verdict, reason: nil)
    }

    /// The answer when time runs out: what was seen, never a verdict.
    public func expire() -> VerificationResult {
        if self.frames == 0 {
            return self.result(.timeout, reason: "no frame arrived from the source")
        }
        if self.scored == 0 {
            if self.unusableFrames > self.noFaceFrames {
                return self.result(.unusable, reason: self.lastUnusableReason ?? "no usable face")
            }
            return self.result(.noFace, reason: "no face in \(self.frames) frame(s)")
        }
        let rules = self.rules
        var missing: [String] = []
        if self.scored < self.minimumScoredFrames {
            missing.append("\(self.scored) of \(self.minimumScoredFrames) frames scored")
        }
        if self.evidenceSeconds < rules.minimumSeconds {
            missing.append(
                "\(Self.format(self.evidenceSeconds)) of \(Self.format(rules.minimumSeconds)) s of frames")
        }
        if self.run < self.stableFrames {
            let band = (
                self.decisions.threshold - self.decisions.hysteresis,
                self.decisions.threshold + self.decisions.hysteresis
            )
            missing.append(
                "the smoothed score (\(self.lastSmoothed.map(Self.format) ?? "none")) did not stay outside "
                    + "\(Self.format(band.0))–\(Self.format(band.1)) for \(self.stableFrames) frames in a row")
        }
        return self.result(.timeout, reason: missing.joined(separator: "; "))
    }

    /// The rules' frame counts as analysed frames (they count the source's frames; see
    /// `DecisionConfiguration.analysedShare`).
    private var minimumScoredFrames: Int { self.decisions.analysedFrames(self.rules.minimumScoredFrames) }
    private var stableFrames: Int { self.decisions.analysedFrames(self.rules.stableFrames) }

    private var evidenceSeconds: Double {
        guard let first = self.firstTime, let last = self.lastTime else { return 0 }
        return max(0, last - first)
    }

    private func result(_ outcome: VerificationOutcome, reason: String?) -> VerificationResult {
        VerificationResult(
            outcome: outcome, reason: reason, smoothed: self.lastSmoothed,
            scores: OpinionScores(
                vit: self.vitCount > 0 ? self.vitSum / Double(self.vitCount) : nil,
                minifasnet: self.pairCount > 0 ? self.pairSum / Double(self.pairCount) : nil),
            frames: self.frames, scoredFrames: self.scored, evidenceSeconds: self.evidenceSeconds,
            firstSequence: self.firstSequence, lastSequence: self.lastSequence)
    }

    private static func format(_ value: Double) -> String {
        let rounded = (value * 1000).rounded() / 1000
        return "\(rounded)"
    }
}
