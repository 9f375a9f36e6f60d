import Foundation
import LivenessEngine

/// report.json: everything an eval run measured, schema-versioned. Field names are snake_case;
/// rates are fractions (0–1) with 95 % intervals; see docs/EVAL.md.
struct EvalReport: Codable {
    var schema = "livenessd-eval-report"
    var schemaVersion = 1
    /// Every presentation ran to its end (false after an interrupt: only finished ones count).
    var complete: Bool
    var run: RunInfo
    var dataset: DatasetSummary
    var throughput: Throughput
    var metrics: Metrics
    var calibration: Calibration?
    var failuresToAcquire: [Failure]
    var presentations: [PresentationResult]

    enum CodingKeys: String, CodingKey {
        case schema, complete, run, dataset, throughput, metrics, calibration, presentations
        case schemaVersion = "schema_version"
        case failuresToAcquire = "failures_to_acquire"
    }

    struct RunInfo: Codable {
        var livenessdVersion: String
        var commit: String
        var command: [String]
        /// The ViT checkpoint when it judged, else the first model file (see `models`).
        var model: String
        var modelSHA256: String
        /// The opinions that judged (`vit`, `minifasnet`); the decision ran on their fused score.
        var opinions: [String]?
        /// Every model file, with its kind and SHA-256.
        var models: [ModelFile]?
        /// Fusion weights of the opinions' logits.
        var fusionWeights: [String: Double]?
        var detector: String?
        var detectorSHA256: String?
        var threshold: Double
        var thresholdSource: String
        var crop: Crop
        var decisions: Decisions
        var every: Int
        var jobs: Int
        var machine: Machine
        var startedUTC: String
        var finishedUTC: String

        struct Crop: Codable {
            var mode: String
            var scale: Double?
        }

        struct Decisions: Codable {
            var hysteresis: Double
            var windowFrames: Int
            var windowSeconds: Double
            var minimumScoredFrames: Int
            var smoothing: String
            var faceLostResetSeconds: Double

            enum CodingKeys: String, CodingKey {
                case hysteresis, smoothing
                case windowFrames = "window_frames"
                case windowSeconds = "window_seconds"
                case minimumScoredFrames = "minimum_scored_frames"
                case faceLostResetSeconds = "face_lost_reset_seconds"
            }
        }

        struct Machine: Codable {
            var cpu: String
            var logicalCPUs: Int
            var os: String
            var kernel: String
            var openBLASCore: String

            enum CodingKeys: String, CodingKey {
                case cpu, os, kernel
                case logicalCPUs = "logical_cpus"
                case openBLASCore = "openblas_core"
            }
        }

        enum CodingKeys: String, CodingKey {
            case commit, command, model, detector, threshold, crop, decisions, every, jobs, machine, opinions, models
            case fusionWeights = "fusion_weights"
            case livenessdVersion = "livenessd_version"
            case modelSHA256 = "model_sha256"
            case detectorSHA256 = "detector_sha256"
            case thresholdSource = "threshold_source"
            case startedUTC = "started_utc"
            case finishedUTC = "finished_utc"
        }
    }

    struct DatasetSummary: Codable {
        var origin: String
        var presentations: Int
        var bonaFide: Int
        var attacks: Int
        var attacksBySpecies: [String: Int]
        var splits: [String: Int]
        var excluded: [Failure]

        enum CodingKeys: String, CodingKey {
            case origin, presentations, attacks, splits, excluded
            case bonaFide = "bona_fide"
            case attacksBySpecies = "attacks_by_species"
        }
    }

    struct Failure: Codable, Equatable {
        var path: String
        var label: String?
        var reason: String
    }

    struct Throughput: Codable {
        var presentationsFinished: Int
        var clips: Int
        var stills: Int
        var frames: Int
        var wallSeconds: Double
        var framesPerSecond: Double
        var clipsPerMinute: Double
        var presentationsPerMinute: Double

        enum CodingKeys: String, CodingKey {
            case clips, stills, frames
            case presentationsFinished = "presentations_finished"
            case wallSeconds = "wall_seconds"
            case framesPerSecond = "frames_per_second"
            case clipsPerMinute = "clips_per_minute"
            case presentationsPerMinute = "presentations_per_minute"
        }
    }

    struct ModelFile: Codable, Equatable {
        var kind: String
        var path: String
        var sha256: String
    }

    struct Metrics: Codable {
        /// Which presentations the figures are over: `all`, or `eval` when the manifest had splits.
        var subset: String
        /// The decision's score: the fused one when several opinions judged.
        var presentation: LevelMetrics
        var frame: LevelMetrics
        /// Each opinion judged on its own (present when several judged), on the same presentations.
        var opinions: [String: OpinionMetrics]?
    }

    /// One opinion's figures: threshold-free curves, and the operating point at its own threshold
    /// calibrated by the same rule and target as the fused one (so the opinions compare at equal APCER).
    struct OpinionMetrics: Codable {
        var presentation: CurveMetrics
        var frame: CurveMetrics
        var calibratedThreshold: Double?
        /// Presentation level, at `calibratedThreshold`.
        var atCalibratedThreshold: OperatingPoint?

        enum CodingKeys: String, CodingKey {
            case presentation, frame
            case calibratedThreshold = "calibrated_threshold"
            case atCalibratedThreshold = "at_calibrated_threshold"
        }
    }

    struct LevelMetrics: Codable {
        var bonaFide: Int
        var attacks: Int
        /// Failures to acquire (presentation level: files; frame level: frames without a usable face,
        /// within acquired presentations) over all attempted.
        var nonResponse: Proportion
        var curve: CurveMetrics
        var atConfiguredThreshold: OperatingPoint
        var atCalibratedThreshold: OperatingPoint?

        enum CodingKeys: String, CodingKey {
            case attacks, curve
            case bonaFide = "bona_fide"
            case nonResponse = "non_response"
            case atConfiguredThreshold = "at_configured_threshold"
            case atCalibratedThreshold = "at_calibrated_threshold"
        }
    }

    struct Calibration: Codable {
        /// The split the threshold was chosen on (`dev`, or `all` when there is none: optimistic).
        var split: String
        var level: String
        var targetAPCER: Double
        /// Which APCER the threshold keeps ≤ target: each species' (`worst-species`) or the pooled one.
        var rule: CalibrationRule
        /// Largest 6-decimal threshold with presentation-level APCER ≤ target (under `rule`) on that
        /// split, at least 5·10⁻⁷ below the attack score that bounds it; nil: no attacks there.
        var threshold: Double?
        /// Pooled APCER at the threshold on the calibration split.
        var apcer: Proportion?
        /// Worst species' APCER there, and which species.
        var apcerWorst: Proportion?
        var apcerWorstSpecies: String?
        var bpcer: Proportion?
        var note: String

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

        init(from decoder: Decoder) throws {
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

    static let devSplits: Set<String> = ["dev", "devel", "development", "val", "validation", "calibration"]
    static let evalSplits: Set<String> = ["eval", "test", "evaluation"]

    /// Metrics and calibration from the finished presentations.
    static func analyse(
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
            let calibrated = PADErrorRates.calibratedThreshold(forAPCER: targetAPCER, attacks: calibrationAttacks, rule: rule)
            let point = calibrated.map { OperatingPoint(scores: calibrationSet.compactMap(\.result.labelledScore), threshold: $0) }
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
                bonaFide: scores.filter { $0.label == .bonaFide }.count, attacks: scores.filter { $0.label == .attack }.count,
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
        let frameLevel = level(scores: frameScores, attempted: framesAttempted, failures: framesAttempted - frameScores.count)
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
                    calibratedThreshold: threshold, atCalibratedThreshold: threshold.map { OperatingPoint(scores: scores, threshold: $0) })
            }
        }
        return (
            Metrics(subset: subsetName, presentation: presentationLevel, frame: frameLevel, opinions: opinions), calibration
        )
    }

    /// The threshold snippet for livenessd.yaml.
    static func thresholdSnippet(_ calibration: Calibration, origin: String, date: String) -> String? {
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
func writeAtomically(_ data: Data, to path: String) throws {
    do {
        try data.write(to: URL(fileURLWithPath: path), options: .atomic)
    } catch {
        throw CommandError("cannot write \(path): \(error.localizedDescription)")
    }
}
