import Foundation
import LivenessEngine

/// report.json: everything an eval run measured, schema-versioned. Field names are snake_case;
/// rates are fractions (0–1) with 95 % intervals; see docs/EVAL.md.
public struct EvalReport: Codable {
    public var schema = "livenessd-eval-report"
    public var schemaVersion = 1
    /// Every presentation ran to its end (false after an interrupt: only finished ones count).
    public var complete: Bool
    public var run: RunInfo
    public var dataset: DatasetSummary
    public var throughput: Throughput
    public var metrics: Metrics
    public var calibration: Calibration?
    public var failuresToAcquire: [Failure]
    public var presentations: [PresentationResult]

    enum CodingKeys: String, CodingKey {
        case schema, complete, run, dataset, throughput, metrics, calibration, presentations
        case schemaVersion = "schema_version"
        case failuresToAcquire = "failures_to_acquire"
    }

    public struct RunInfo: Codable {
        public var livenessdVersion: String
        public var commit: String
        public var command: [String]
        /// The ViT checkpoint when it judged, else the first model file (see `models`).
        public var model: String
        public var modelSHA256: String
        /// The opinions that judged (`vit`, `minifasnet`); the decision ran on their fused score.
        public var opinions: [String]?
        /// Every model file, with its kind and SHA-256.
        public var models: [ModelFile]?
        /// Fusion weights of the opinions' logits.
        public var fusionWeights: [String: Double]?
        public var detector: String?
        public var detectorSHA256: String?
        public var threshold: Double
        public var thresholdSource: String
        public var crop: Crop
        public var decisions: Decisions
        public var every: Int
        /// Frames analysed per second of each clip (`--analysis-fps`, as the daemon's `analysis_fps`); 0: every
        /// frame.
        public var analysisFPS: Double = 0
        public var jobs: Int
        public var machine: Machine
        public var startedUTC: String
        public var finishedUTC: String

        public init(
            livenessdVersion: String, commit: String, command: [String], model: String, modelSHA256: String,
            opinions: [String]?, models: [ModelFile]?, fusionWeights: [String: Double]?, detector: String?,
            detectorSHA256: String?, threshold: Double, thresholdSource: String, crop: Crop, decisions: Decisions,
            every: Int, jobs: Int, machine: Machine, startedUTC: String, finishedUTC: String
        ) {
            self.livenessdVersion = livenessdVersion
            self.commit = commit
            self.command = command
            self.model = model
            self.modelSHA256 = modelSHA256
            self.opinions = opinions
            self.models = models
            self.fusionWeights = fusionWeights
            self.detector = detector
            self.detectorSHA256 = detectorSHA256
            self.threshold = threshold
            self.thresholdSource = thresholdSource
            self.crop = crop
            self.decisions = decisions
            self.every = every
            self.jobs = jobs
            self.machine = machine
            self.startedUTC = startedUTC
            self.finishedUTC = finishedUTC
        }

        public struct Crop: Codable {
            public var mode: String
            public var scale: Double?

            public init(mode: String, scale: Double?) {
                self.mode = mode
                self.scale = scale
            }
        }

        public struct Decisions: Codable {
            public var hysteresis: Double
            public var windowFrames: Int
            public var windowSeconds: Double
            public var minimumScoredFrames: Int
            public var smoothing: String
            public var faceLostResetSeconds: Double

            public init(_ decisions: DecisionConfiguration) {
                switch decisions.smoothing {
                case .mean: self.smoothing = "mean"
                case .median: self.smoothing = "median"
                case .exponential(let alpha): self.smoothing = "ema(alpha \(alpha))"
                }
                self.hysteresis = decisions.hysteresis
                self.windowFrames = decisions.windowFrames
                self.windowSeconds = decisions.windowSeconds
                self.minimumScoredFrames = decisions.minimumScoredFrames
                self.faceLostResetSeconds = decisions.faceLostResetSeconds
            }

            enum CodingKeys: String, CodingKey {
                case hysteresis, smoothing
                case windowFrames = "window_frames"
                case windowSeconds = "window_seconds"
                case minimumScoredFrames = "minimum_scored_frames"
                case faceLostResetSeconds = "face_lost_reset_seconds"
            }
        }

        public struct Machine: Codable {
            public var cpu: String
            public var logicalCPUs: Int
            public var os: String
            public var kernel: String
            public var openBLASCore: String

            enum CodingKeys: String, CodingKey {
                case cpu, os, kernel
                case logicalCPUs = "logical_cpus"
                case openBLASCore = "openblas_core"
            }
        }

        enum CodingKeys: String, CodingKey {
            case commit, command, model, detector, threshold, crop, decisions, every, jobs, machine, opinions, models
            case analysisFPS = "analysis_fps"
            case fusionWeights = "fusion_weights"
            case livenessdVersion = "livenessd_version"
            case modelSHA256 = "model_sha256"
            case detectorSHA256 = "detector_sha256"
            case thresholdSource = "threshold_source"
            case startedUTC = "started_utc"
            case finishedUTC = "finished_utc"
        }
    }

    public struct DatasetSummary: Codable {
        public var origin: String
        public var presentations: Int
        public var bonaFide: Int
        public var attacks: Int
        public var attacksBySpecies: [String: Int]
        public var splits: [String: Int]
        public var excluded: [Failure]

        /// What the dataset holds: presentations by label, attacks by species, rows by split.
        public init(_ dataset: EvalDataset) {
            var species: [String: Int] = [:]
            var splits: [String: Int] = [:]
            for item in dataset.presentations {
                if item.label == .attack { species[item.species ?? "unknown", default: 0] += 1 }
                if let split = item.split { splits[split, default: 0] += 1 }
            }
            self.origin = dataset.origin
            self.presentations = dataset.presentations.count
            self.bonaFide = dataset.presentations.filter { $0.label == .bonaFide }.count
            self.attacks = dataset.presentations.filter { $0.label == .attack }.count
            self.attacksBySpecies = species
            self.splits = splits
            self.excluded = dataset.excluded.map { Failure(path: $0.path, label: nil, reason: $0.reason) }
        }

        enum CodingKeys: String, CodingKey {
            case origin, presentations, attacks, splits, excluded
            case bonaFide = "bona_fide"
            case attacksBySpecies = "attacks_by_species"
        }
    }

    public struct Failure: Codable, Equatable {
        public var path: String
        public var label: String?
        public var reason: String
    }

    public struct Throughput: Codable {
        public var presentationsFinished: Int
        public var clips: Int
        public var stills: Int
        public var frames: Int
        public var wallSeconds: Double
        public var framesPerSecond: Double
        public var clipsPerMinute: Double
        public var presentationsPerMinute: Double

        /// What the finished presentations amount to in `wallSeconds`.
        public init(finished: [EvalRunner.Finished], wallSeconds wall: Double) {
            let frames = finished.reduce(0) { $0 + $1.result.frames.decoded }
            let clips = finished.filter { $0.result.kind == "clip" }.count
            self.presentationsFinished = finished.count
            self.clips = clips
            self.stills = finished.count - clips
            self.frames = frames
            self.wallSeconds = wall
            self.framesPerSecond = Double(frames) / max(wall, 1e-9)
            self.clipsPerMinute = Double(clips) / max(wall, 1e-9) * 60
            self.presentationsPerMinute = Double(finished.count) / max(wall, 1e-9) * 60
        }

        enum CodingKeys: String, CodingKey {
            case clips, stills, frames
            case presentationsFinished = "presentations_finished"
            case wallSeconds = "wall_seconds"
            case framesPerSecond = "frames_per_second"
            case clipsPerMinute = "clips_per_minute"
            case presentationsPerMinute = "presentations_per_minute"
        }
    }

    public struct ModelFile: Codable, Equatable {
        public var kind: String
        public var path: String
        public var sha256: String

        public init(kind: String, path: String, sha256: String) {
            self.kind = kind
            self.path = path
            self.sha256 = sha256
        }
    }

    public struct Metrics: Codable {
        /// Which presentations the figures are over: `all`, or `eval` when the manifest had splits.
        public var subset: String
        /// The decision's score: the fused one when several opinions judged.
        public var presentation: LevelMetrics
        public var frame: LevelMetrics
        /// Each opinion judged on its own (present when several judged), on the same presentations.
        public var opinions: [String: OpinionMetrics]?
    }

    /// One opinion's figures: threshold-free curves, and the operating point at its own threshold
    /// calibrated by the same rule and target as the fused one (so the opinions compare at equal APCER).
    public struct OpinionMetrics: Codable {
        public var presentation: CurveMetrics
        public var frame: CurveMetrics
        public var calibratedThreshold: Double?
        /// Presentation level, at `calibratedThreshold`.
        public var atCalibratedThreshold: OperatingPoint?

        enum CodingKeys: String, CodingKey {
            case presentation, frame
            case calibratedThreshold = "calibrated_threshold"
            case atCalibratedThreshold = "at_calibrated_threshold"
        }
    }

    public struct LevelMetrics: Codable {
        public var bonaFide: Int
        public var attacks: Int
        /// Failures to acquire (presentation level: files; frame level: frames without a usable face,
        /// within acquired presentations) over all attempted.
        public var nonResponse: Proportion
        public var curve: CurveMetrics
        public var atConfiguredThreshold: OperatingPoint
        public var atCalibratedThreshold: OperatingPoint?

        enum CodingKeys: String, CodingKey {
            case attacks, curve
            case bonaFide = "bona_fide"
            case nonResponse = "non_response"
            case atConfiguredThreshold = "at_configured_threshold"
            case atCalibratedThreshold = "at_calibrated_threshold"
        }
    }

    public struct Calibration: Codable {
        /// The split the threshold was chosen on (`dev`, or `all` when there is none: optimistic).
        public var split: String
        public var level: String
        public var targetAPCER: Double
        /// Which APCER the threshold keeps ≤ target: each species' (`worst-species`) or the pooled one.
        public var rule: CalibrationRule
        /// Largest 6-decimal threshold with presentation-level APCER ≤ target (under `rule`) on that
        /// split, at least 5·10⁻⁷ below the attack score that bounds it; nil: no attacks there.
        public var threshold: Double?
        /// Pooled APCER at the threshold on the calibration split.
        public var apcer: Proportion?
        /// Worst species' APCER there, and which species.
        public var apcerWorst: Proportion?
        public var apcerWorstSpecies: String?
        public var bpcer: Proportion?
        public var note: String

        enum CodingKeys: String, CodingKey {
            case split, level, rule, threshold, apcer, bpcer, note
            case targetAPCER = "target_apcer"
            case apcerWorst = "apcer_worst"
            case apcerWorstSpecies = "apcer_worst_species"
        }

        init(
            split: String, level: String, targetAPCER: Double, rule: CalibrationRule, threshold: Double?,
            point: OperatingPoint?, note: String
        ) {
            self.split = split
            self.level = level
            self.targetAPCER = targetAPCER
            self.rule = rule
            self.threshold = threshold
            self.apcer = point?.apcerPooled
            self.apcerWorst = point?.apcerWorst
            self.apcerWorstSpecies = point?.apcerWorstSpecies
            self.bpcer = point?.bpcer
            self.note = note
        }

        public init(from decoder: Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            self.split = try container.decode(String.self, forKey: .split)
            self.level = try container.decode(String.self, forKey: .level)
            self.targetAPCER = try container.decode(Double.self, forKey: .targetAPCER)
            // Reports written before the rule existed calibrated on pooled attacks.
            self.rule = try container.decodeIfPresent(CalibrationRule.self, forKey: .rule) ?? .pooled
            self.threshold = try container.decodeIfPresent(Double.self, forKey: .threshold)
            self.apcer = try container.decodeIfPresent(Proportion.self, forKey: .apcer)
            self.apcerWorst = try container.decodeIfPresent(Proportion.self, forKey: .apcerWorst)
            self.apcerWorstSpecies = try container.decodeIfPresent(String.self, forKey: .apcerWorstSpecies)
            self.bpcer = try container.decodeIfPresent(Proportion.self, forKey: .bpcer)
            self.note = try container.decode(String.self, forKey: .note)
        }
    }

    // MARK: - Building

    /// The report of a run: failures to acquire and presentations come from `finished` (dataset order).
    public init(
        complete: Bool, run: RunInfo, dataset: DatasetSummary, throughput: Throughput, metrics: Metrics,
        calibration: Calibration?, finished: [EvalRunner.Finished]
    ) {
        self.complete = complete
        self.run = run
        self.dataset = dataset
        self.throughput = throughput
        self.metrics = metrics
        self.calibration = calibration
        self.failuresToAcquire = finished.compactMap { item in
            item.result.failure.map { Failure(path: item.result.path, label: item.result.label.rawValue, reason: $0) }
        }
        self.presentations = finished.map(\.result)
    }

    /// The calibration `livenessd calibrate` proposes from a written report's presentation scores.
    public func recalibrated(targetAPCER: Double, rule: CalibrationRule) -> Calibration? {
        let finished = self.presentations.enumerated().map {
            EvalRunner.Finished(
                index: $0.offset, result: $0.element, series: FrameSeries(), frameScores: [], telltaleCrop: nil)
        }
        return Self.analyse(finished, threshold: self.run.threshold, targetAPCER: targetAPCER, rule: rule).calibration
    }

    static let devSplits: Set<String> = ["dev", "devel", "development", "val", "validation", "calibration"]
    static let evalSplits: Set<String> = ["eval", "test", "evaluation"]

    /// Metrics and calibration from the finished presentations.
    public static func analyse(
        _ finished: [EvalRunner.Finished], threshold: Double, targetAPCER: Double, rule: CalibrationRule = .worstSpecies
    ) -> (metrics: Metrics, calibration: Calibration?) {
        let counted = finished.filter { !$0.result.interrupted }
        let hasSplits = counted.contains { $0.result.split != nil }
        let dev = counted.filter { $0.result.split.map(Self.devSplits.contains) ?? false }
        let evaluation = counted.filter { $0.result.split.map(Self.evalSplits.contains) ?? false }
        let calibrationSet = dev.isEmpty ? counted : dev
        let subset = hasSplits && !evaluation.isEmpty && !dev.isEmpty ? evaluation : counted
        let subsetName = subset.count == counted.count ? "all" : "eval"

        let calibrationAttacks = calibrationSet.compactMap(\.result.labelledScore).filter { $0.label == .attack }
        var calibration: Calibration?
        if !calibrationAttacks.isEmpty {
            let calibrated = PADErrorRates.calibratedThreshold(
                forAPCER: targetAPCER, attacks: calibrationAttacks, rule: rule)
            let point = calibrated.map {
                OperatingPoint(scores: calibrationSet.compactMap(\.result.labelledScore), threshold: $0)
            }
            calibration = Calibration(
                split: dev.isEmpty ? "all" : "dev", level: "presentation", targetAPCER: targetAPCER, rule: rule,
                threshold: calibrated, point: point,
                note: dev.isEmpty
                    ? "chosen on the same presentations it is reported on: optimistic; give a manifest split column with dev and eval rows"
                    : "chosen on the dev split, reported on the eval split")
        }
        let calibratedThreshold = calibration?.threshold

        func level(scores: [LabelledScore], attempted: Int, failures: Int) -> LevelMetrics {
            LevelMetrics(
                bonaFide: scores.filter { $0.label == .bonaFide }.count,
                attacks: scores.filter { $0.label == .attack }.count,
                nonResponse: Proportion(errors: failures, total: attempted), curve: PADErrorRates.curve(scores),
                atConfiguredThreshold: OperatingPoint(scores: scores, threshold: threshold),
                atCalibratedThreshold: calibratedThreshold.map { OperatingPoint(scores: scores, threshold: $0) })
        }
        let presentationScores = subset.compactMap(\.result.labelledScore)
        let presentationLevel = level(
            scores: presentationScores, attempted: subset.count, failures: subset.count - presentationScores.count)
        let acquired = subset.filter { $0.result.labelledScore != nil }
        let frameScores = acquired.flatMap(\.frameScores)
        let framesAttempted = acquired.reduce(0) { $0 + $1.result.frames.decoded }
        let frameLevel = level(
            scores: frameScores, attempted: framesAttempted, failures: framesAttempted - frameScores.count)
        var opinions: [String: OpinionMetrics]?
        let kinds = OpinionKind.allCases.filter { kind in counted.contains { $0.result.opinions?[kind] != nil } }
        if kinds.count > 1 {
            opinions = [:]
            for kind in kinds {
                let calibrationScores = calibrationSet.compactMap { $0.result.labelledScore(kind) }
                let threshold = PADErrorRates.calibratedThreshold(
                    forAPCER: targetAPCER, attacks: calibrationScores.filter { $0.label == .attack }, rule: rule)
                let scores = subset.compactMap { $0.result.labelledScore(kind) }
                opinions?[kind.rawValue] = OpinionMetrics(
                    presentation: PADErrorRates.curve(scores),
                    frame: PADErrorRates.curve(acquired.flatMap { $0.opinionFrameScores[kind] ?? [] }),
                    calibratedThreshold: threshold,
                    atCalibratedThreshold: threshold.map { OperatingPoint(scores: scores, threshold: $0) })
            }
        }
        return (
            Metrics(subset: subsetName, presentation: presentationLevel, frame: frameLevel, opinions: opinions),
            calibration
        )
    }

    /// The threshold snippet for livenessd.yaml.
    public static func thresholdSnippet(_ calibration: Calibration, origin: String, date: String) -> String? {
        guard let threshold = calibration.threshold else { return nil }
        let apcer = calibration.apcer?.value.map { String(format: "%.4f", $0) } ?? "n/a"
        let worst = calibration.apcerWorst?.value.map { String(format: "%.4f", $0) } ?? "n/a"
        let bpcer = calibration.bpcer?.value.map { String(format: "%.4f", $0) } ?? "n/a"
        let kept = calibration.rule == .worstSpecies ? "every attack species' APCER" : "the pooled APCER"
        return """
            # Proposed by `livenessd eval` on \(date) from \(origin)
            # (split \(calibration.split), presentation level): the largest threshold that keeps \(kept) ≤ \(calibration.targetAPCER);
            # there APCER pooled = \(apcer), worst species (\(calibration.apcerWorstSpecies ?? "-")) = \(worst), BPCER = \(bpcer). \(calibration.note).
            threshold: \(String(format: "%.6f", threshold))

            """
    }
}

/// Writes `data` to `path` through a temporary file in the same folder and a rename, so a reader
/// (or an interrupted run) never sees half a report.
public func writeAtomically(_ data: Data, to path: String) throws {
    do {
        try data.write(to: URL(fileURLWithPath: path), options: .atomic)
    } catch {
        throw EvalError("cannot write \(path): \(error.localizedDescription)")
    }
}
