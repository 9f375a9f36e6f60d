/// Which frames of a source are analysed at a per-source analysis rate (`analysis_fps`): the rest are
/// skipped at admission, before any conversion, and counted as `rate`.
///
/// Pure and deterministic: it decides from frame times only (never a clock), so a replayed clip
/// analyses the same frames on every run and on every machine. Frames are taken on a fixed schedule
/// (one every `1 / framesPerSecond` seconds of frame time, so a 25 fps source at 10 fps gives 10, not
/// 8.3, frames a second); a frame up to half a source interval early still counts as on time, so
/// capture jitter does not push a 30 fps camera at 10 fps down to 7.5.
public struct AnalysisRateGate: Sendable, Equatable {
    /// Frames analysed per second of frame time; nil: every frame.
    public let framesPerSecond: Double?
    private var nextDue: Double?
    private var lastOffered: Double?
    /// The source's mean frame interval (seconds), an exponential average over the offered frames.
    private var sourceInterval: Double?

    public init(framesPerSecond: Double?) {
        self.framesPerSecond = framesPerSecond.flatMap { $0.isFinite && $0 > 0 ? $0 : nil }
    }

    /// Whether the frame at `timeSeconds` is analysed. Call once per offered frame, in order.
    public mutating func admits(timeSeconds time: Double) -> Bool {
        defer { self.lastOffered = time }
        if let last = self.lastOffered {
            let interval = time - last
            if interval > 0 && interval < 2 {
                // α = 1/8: steady within a few frames, deaf to one late frame.
                self.sourceInterval = self.sourceInterval.map { $0 + (interval - $0) / 8 } ?? interval
            } else if interval <= 0 {
                // Time went back (a looped or restarted stream): start the schedule again.
                self.nextDue = nil
            }
        }
        guard let rate = self.framesPerSecond else { return true }
        let period = 1 / rate
        guard let due = self.nextDue else {
            self.nextDue = time + period
            return true
        }
        let early = min(period, self.sourceInterval ?? 0) / 2
        guard time >= due - early else { return false }
        // On schedule; after a gap longer than a period (a stall, a pause), the schedule restarts here.
        self.nextDue = time >= due + period ? time + period : due + period
        return true
    }

    /// The share of the source's frames that is analysed (1 with no rate, or when the source is no faster
    /// than the rate): frame counts of the decision rules are scaled by it, so the decision window covers
    /// the same seconds at any analysis rate.
    public var analysedShare: Double {
        guard let rate = self.framesPerSecond, let interval = self.sourceInterval else { return 1 }
        return min(1, rate * interval)
    }
}
