/// What a source's stream of frames amounts to right now.
public enum LivenessState: String, Sendable, Equatable, Codable, CaseIterable {
    /// Not enough scored frames yet, or the smoothed score sits inside the hysteresis band.
    case deciding
    case live
    case spoof
    /// No face to judge.
    case noFace = "no_face"
    /// A face, but one that cannot be judged (too small, dark, blurred …): a reason, never a verdict.
    case unusable
}

/// How per-frame spoof probabilities are smoothed over the window.
public enum Smoothing: Sendable, Equatable, Codable {
    case mean
    case median
    /// Exponential moving average over the window in time order; `alpha` weights the newest frame.
    case exponential(alpha: Double)
}

/// The decision rules. Defaults suit a door terminal at 15–30 fps: about half a second of frames
/// before a first verdict, a ±0.05 band so a score hovering at the threshold does not flicker.
public struct DecisionConfiguration: Sendable, Equatable {
    /// Spoof iff the smoothed probability ≥ threshold (the checkpoint's 0.1199 by default).
    public var threshold: Double
    /// Half-width of the band around the threshold inside which a verdict does not change.
    public var hysteresis = 0.05
    /// Most recent scored frames kept.
    public var windowFrames = 15
    /// Scored frames older than this (seconds, by frame time) leave the window.
    public var windowSeconds = 2.0
    /// Scored frames needed in the window before any verdict.
    public var minimumScoredFrames = 5
    public var smoothing = Smoothing.mean
    /// Without a usable face for longer than this (seconds), the window is cleared.
    public var faceLostResetSeconds = 1.0
    /// The share of the source's frames that is analysed (`analysis_fps`; 1: every frame). The frame
    /// counts above (and a transaction's) count the source's frames: with a third of them analysed the
    /// window keeps a third as many, so it covers the same seconds and a verdict needs the same time of
    /// evidence at any analysis rate. Set by the pipeline from the frames it admits.
    public var analysedShare = 1.0

    public init(threshold: Double) { self.threshold = threshold }

    /// `frames` of the source, as analysed frames at `analysedShare` (at least 1; exact at share 1).
    public func analysedFrames(_ frames: Int) -> Int {
        guard self.analysedShare < 1, self.analysedShare > 0 else { return frames }
        return max(1, Int((Double(frames) * self.analysedShare).rounded()))
    }

    /// The most analysed frames the window keeps.
    public var effectiveWindowFrames: Int { self.analysedFrames(self.windowFrames) }
    /// Analysed frames the window needs before any verdict.
    public var effectiveMinimumScoredFrames: Int {
        min(self.effectiveWindowFrames, self.analysedFrames(self.minimumScoredFrames))
    }
}

/// One frame's outcome, as the pipeline's stages found it.
public enum Observation: Sendable, Equatable {
    case scored(spoofProbability: Double, timeSeconds: Double)
    case noFace(timeSeconds: Double)
    case unusable(reason: String, timeSeconds: Double)

    public var timeSeconds: Double {
        switch self {
        case .scored(_, let time), .noFace(let time), .unusable(_, let time): return time
        }
    }
}

/// The decision after an observation.
public struct Decision: Sendable, Equatable {
    public var state: LivenessState
    /// Smoothed spoof probability over the window (nil when the window is empty).
    public var smoothedScore: Double?
    /// This frame's spoof probability, when it was scored.
    public var rawScore: Double?
    /// Scored frames in the window.
    public var windowCount: Int
    /// Why the state is `unusable` / `no_face` / `deciding`, in words.
    public var reason: String?
    /// The state differs from the previous decision's.
    public var changed: Bool

    public init(
        state: LivenessState, smoothedScore: Double?, rawScore: Double?, windowCount: Int, reason: String?,
        changed: Bool
    ) {
        self.state = state
        self.smoothedScore = smoothedScore
        self.rawScore = rawScore
        self.windowCount = windowCount
        self.reason = reason
        self.changed = changed
    }
}

/// Sliding-window smoothing and the state machine of docs/ARCHITECTURE.md ("Decisions and states").
/// Pure and deterministic: time comes from the observations (frame times), never from a clock.
public struct DecisionMachine: Sendable {
    public var configuration: DecisionConfiguration
    private var window: [(probability: Double, time: Double)] = []
    private var state = LivenessState.deciding
    private var lastUsableFaceTime: Double?
    /// Set by `reset`: the next decision says so (`changed`, reason `reset`), so subscribers see the restart.
    private var resetPending = false

    public init(configuration: DecisionConfiguration) {
        self.configuration = configuration
        self.window.reserveCapacity(configuration.windowFrames)
    }

    public var currentState: LivenessState { self.state }

    /// Starts a fresh window (e.g. when a door transaction begins). The next decision is `changed` with
    /// reason `reset`, whatever its state: a client watching changes sees the restart even when the
    /// state was `deciding` before and after.
    public mutating func reset() {
        self.window.removeAll(keepingCapacity: true)
        self.state = .deciding
        self.lastUsableFaceTime = nil
        self.resetPending = true
    }

    public mutating func observe(_ observation: Observation) -> Decision {
        let previous = self.state
        let time = observation.timeSeconds
        var raw: Double?
        var reason: String?
        switch observation {
        case .scored(let probability, _):
            raw = probability
            self.lastUsableFaceTime = time
            self.window.append((probability, time))
            self.trim(now: time)
            self.state = self.verdict(from: self.state)
            if self.state == .deciding { reason = self.decidingReason() }
        case .noFace, .unusable:
            let lost = self.lastUsableFaceTime.map { time - $0 > self.configuration.faceLostResetSeconds } ?? true
            if case .unusable(let why, _) = observation { reason = why } else { reason = "no face in view" }
            if lost {
                // Nothing judgeable for long enough: forget the old face.
                self.window.removeAll(keepingCapacity: true)
                if case .noFace = observation { self.state = .noFace } else { self.state = .unusable }
            } else {
                // A brief gap (a blink of the detector): keep the verdict, say why this frame had no score.
                self.trim(now: time)
            }
        }
        let announceReset = self.resetPending
        self.resetPending = false
        return Decision(
            state: self.state, smoothedScore: self.smoothed(), rawScore: raw, windowCount: self.window.count,
            reason: announceReset ? "reset" : reason, changed: announceReset || self.state != previous)
    }

    private mutating func trim(now: Double) {
        let oldest = now - self.configuration.windowSeconds
        self.window.removeAll { $0.time < oldest }
        let most = self.configuration.effectiveWindowFrames
        if self.window.count > most {
            self.window.removeFirst(self.window.count - most)
        }
    }

    private func decidingReason() -> String {
        let needed = self.configuration.effectiveMinimumScoredFrames
        if self.window.count < needed {
            return "\(self.window.count) of \(needed) frames scored"
        }
        return "score inside the hysteresis band"
    }

    /// Live or spoof only outside the band around the threshold; inside it a verdict stands and
    /// anything else stays `deciding`.
    private func verdict(from current: LivenessState) -> LivenessState {
        guard self.window.count >= self.configuration.effectiveMinimumScoredFrames, let score = self.smoothed() else {
            return .deciding
        }
        let upper = self.configuration.threshold + self.configuration.hysteresis
        let lower = self.configuration.threshold - self.configuration.hysteresis
        if score >= upper { return .spoof }
        if score < lower { return .live }
        return current == .live || current == .spoof ? current : .deciding
    }

    /// The smoothed spoof probability of the window.
    public func smoothed() -> Double? {
        guard !self.window.isEmpty else { return nil }
        switch self.configuration.smoothing {
        case .mean:
            return self.window.reduce(0) { $0 + $1.probability } / Double(self.window.count)
        case .median:
            let sorted = self.window.map(\.probability).sorted()
            let middle = sorted.count / 2
            return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
        case .exponential(let alpha):
            var value = self.window[0].probability
            for entry in self.window.dropFirst() { value = alpha * entry.probability + (1 - alpha) * value }
            return value
        }
    }
}
