import ArgumentParser
import CaptureKit
import Dispatch
import FramePipeline
import Foundation
import LivenessEngine
import LivenessEval
import LivenessServer
import Synchronization

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replay labelled clips and pictures through the daemon's pipeline; write an ISO/IEC 30107-3 report.",
        discussion: """
            DATASET is a folder laid out by label — live/… for bona fide presentations, spoof/<species>/… for \
            attacks (files directly in spoof/: species `unknown`) — or a manifest (TSV/CSV; columns path, label, \
            species, optional split, by header name or in that order; paths relative to the manifest). A folder \
            holding MANIFEST.tsv uses it. Every frame goes through the same decoding, face detection, crop, \
            model and smoothing/state machine as `livenessd run`, losslessly (--every N scores every Nth frame).

            Writes, in --output: frames.jsonl (every frame's score and state, appended as it is decided), \
            report.json (schema-versioned figures: APCER per species and worst, BPCER, ACER, BPCER100/20/10, \
            EER, AUC, non-response rate, each with a 95 % interval, frame and presentation level), report.html \
            (DET curve, histograms, timelines, worst misses) and threshold.yaml (a threshold proposed for \
            --target-apcer, from the manifest's dev split when there is one, the figures then reported on its \
            eval split). Unreadable, truncated or face-less files are failures to acquire: listed with the \
            reason, counted as non-responses, and the run goes on. Ctrl-C stops early and still writes the \
            report for what finished (exit status 130). Definitions: docs/EVAL.md.
            """)

    @OptionGroup var modelOptions: ModelOptions

    @OptionGroup var cropOptions: CropOptions

    @Argument(help: "A folder (live/, spoof/<species>/) or a manifest (.tsv/.csv).")
    var dataset: String

    @Option(name: .shortAndLong, help: "Folder for the report (created if needed).")
    var output = "eval-report"

    @Option(help: "Files played at once (default: one per CPU).")
    var jobs: Int?

    @Option(help: "Score every Nth frame of a clip.")
    var every = 1

    @Option(
        help: """
            Frames analysed per second of each clip, as the daemon's analysis_fps (default 0: every frame; \
            \(Int(Configuration.defaultAnalysisFramesPerSecond)) is what run does by default).
            """)
    var analysisFps: Double = 0

    @Option(help: "Decision threshold (default: the config file's, else the checkpoint's).")
    var threshold: Double?

    @Option(help: "APCER the proposed threshold must keep (presentation level).")
    var targetAPCER = 0.05

    @Option(help: "Which APCER the proposed threshold keeps: worst-species (each species on its own) or pooled.")
    var calibrateOn = CalibrationRule.worstSpecies

    @Flag(help: "No progress line on standard error.")
    var quiet = false

    func validate() throws {
        if let jobs, jobs < 1 { throw ValidationError("--jobs must be at least 1") }
        if self.every < 1 { throw ValidationError("--every must be at least 1") }
        guard self.analysisFps.isFinite, self.analysisFps >= 0, self.analysisFps <= 240 else {
            throw ValidationError("--analysis-fps must be 0 (every frame) or frames per second up to 240")
        }
        if let threshold, !(0...1).contains(threshold) { throw ValidationError("--threshold must be between 0 and 1") }
        if !(0..<1).contains(self.targetAPCER) { throw ValidationError("--target-apcer must be in [0, 1)") }
    }

    func run() throws {
        do {
            try self.evaluate()
        } catch let error as CommandError {
            FileHandle.standardError.write(Data("livenessd eval: \(error)\n".utf8))
            throw ExitCode(2)
        } catch let error as EvalError {
            FileHandle.standardError.write(Data("livenessd eval: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }

    private func evaluate() throws {
        let started = Date()
        let loaded = try self.modelOptions.load()
        let threshold = self.threshold ?? loaded.configuration.threshold ?? loaded.defaultThreshold
        let thresholdSource =
            self.threshold != nil
            ? "--threshold" : (loaded.configuration.threshold != nil ? "config file" : loaded.defaultThresholdSource)
        let detector = try self.cropOptions.resolve(configuration: loaded.configuration) {
            FileHandle.standardError.write(Data("livenessd eval: warning: \($0)\n".utf8))
        }
        let dataset = try EvalDataset.load(path: self.dataset)
        try Self.makeFolder(self.output)
        let frameLog = try FrameLog(path: self.output + "/frames.jsonl")
        let decisions = loaded.configuration.decisionConfiguration(threshold: threshold)

        let progress = ProgressLine(enabled: !self.quiet && isatty(STDERR_FILENO) == 1, started: started)
        var options = EvalRunner.Options()
        if let jobs = self.jobs { options.jobs = jobs }
        options.every = self.every
        options.analysisFramesPerSecond = self.analysisFps
        let runner = EvalRunner(
            dataset: dataset, opinions: loaded.opinions, detector: detector, decisions: decisions,
            verification: loaded.configuration.verificationRules, options: options, frameLog: frameLog
        ) { completed, total, frames in progress.update(completed: completed, total: total, frames: frames) }

        // Ctrl-C / SIGTERM: finish what is decided, write the report, exit 130. A second one kills.
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let signals = [SIGINT, SIGTERM].map { number -> DispatchSourceSignal in
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                FileHandle.standardError.write(
                    Data(
                        "\nlivenessd eval: interrupted; writing the report for what finished (again to quit now)\n".utf8
                    ))
                signal(SIGINT, SIG_DFL)
                signal(SIGTERM, SIG_DFL)
                runner.interrupt()
            }
            source.resume()
            return source
        }
        let finished = runner.run()
        signals.forEach { $0.cancel() }
        progress.finish()
        let interrupted = finished.count < dataset.presentations.count || finished.contains { $0.result.interrupted }

        let (metrics, calibration) = EvalReport.analyse(
            finished, threshold: threshold, targetAPCER: self.targetAPCER, rule: self.calibrateOn)
        let ended = Date()
        let report = EvalReport(
            complete: !interrupted,
            run: try self.runInfo(
                loaded: loaded, detector: detector, threshold: threshold, thresholdSource: thresholdSource,
                decisions: decisions, jobs: options.jobs, started: started, ended: ended),
            dataset: EvalReport.DatasetSummary(dataset),
            throughput: EvalReport.Throughput(finished: finished, wallSeconds: ended.timeIntervalSince(started)),
            metrics: metrics, calibration: calibration, finished: finished)
        try self.write(report, finished: finished, hysteresis: decisions.hysteresis, calibration: calibration)
        Self.printSummary(report, output: self.output)
        if interrupted { throw ExitCode(130) }
    }

    private func write(
        _ report: EvalReport, finished: [EvalRunner.Finished], hysteresis: Double, calibration: EvalReport.Calibration?
    ) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let json: Data
        do {
            json = try encoder.encode(report)
        } catch {
            throw CommandError("cannot encode the report: \(error)")
        }
        try writeAtomically(json, to: self.output + "/report.json")
        let html = ReportHTML(report: report, finished: finished, hysteresis: hysteresis).render()
        try writeAtomically(Data(html.utf8), to: self.output + "/report.html")
        if let calibration,
            let snippet = EvalReport.thresholdSnippet(
                calibration, origin: report.dataset.origin, date: report.run.finishedUTC)
        {
            try writeAtomically(Data(snippet.utf8), to: self.output + "/threshold.yaml")
        }
    }

    static func makeFolder(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw CommandError("cannot create the output folder \(path): \(error.localizedDescription)")
        }
    }

    private func runInfo(
        loaded: LoadedModels, detector: FaceLocatorFactory?, threshold: Double,
        thresholdSource: String, decisions: DecisionConfiguration, jobs: Int, started: Date, ended: Date
    ) throws -> EvalReport.RunInfo {
        let iso = ISO8601DateFormatter()
        let files = try loaded.files()
        var info = EvalReport.RunInfo(
            livenessdVersion: LivenessdVersion.string, commit: BuildInfo.commit, command: CommandLine.arguments,
            model: files.first?.path ?? "", modelSHA256: files.first?.sha256 ?? "",
            opinions: loaded.kinds.map(\.rawValue),
            models: files.map { EvalReport.ModelFile(kind: $0.kind, path: $0.path, sha256: $0.sha256) },
            fusionWeights: Dictionary(
                uniqueKeysWithValues: loaded.kinds.map { ($0.rawValue, loaded.opinions.fusion.weight($0)) }),
            detector: detector?.url.path,
            detectorSHA256: try detector.map { try FileDigest.sha256(of: $0.url) }, threshold: threshold,
            thresholdSource: thresholdSource,
            crop: .init(mode: detector == nil ? "full" : "detect", scale: detector?.configuration.crop.scale),
            decisions: .init(decisions),
            every: self.every, jobs: jobs, machine: MachineInfo.current(), startedUTC: iso.string(from: started),
            finishedUTC: iso.string(from: ended))
        info.analysisFPS = self.analysisFps
        return info
    }

    static func printSummary(_ report: EvalReport, output: String) {
        func show(_ proportion: Proportion?) -> String {
            guard let proportion, let value = proportion.value else { return "n/a" }
            return String(format: "%.2f %% (%d/%d)", value * 100, proportion.errors, proportion.total)
        }
        let p = report.metrics.presentation
        let f = report.metrics.frame
        var lines = [
            "livenessd eval: \(report.throughput.presentationsFinished) of \(report.dataset.presentations) presentations"
                + String(
                    format: ", %d frames in %.1f s (%.1f frames/s, %.1f clips/min)", report.throughput.frames,
                    report.throughput.wallSeconds, report.throughput.framesPerSecond, report.throughput.clipsPerMinute)
                + (report.complete ? "" : " — INTERRUPTED"),
            String(
                format: "threshold %.6f (%@), subset %@", report.run.threshold, report.run.thresholdSource,
                report.metrics.subset),
            "presentation level: APCER worst \(show(p.atConfiguredThreshold.apcerWorst)) [\(p.atConfiguredThreshold.apcerWorstSpecies ?? "-")], "
                + "BPCER \(show(p.atConfiguredThreshold.bpcer)), EER \(p.curve.eer.value.map { String(format: "%.2f %%", $0 * 100) } ?? "n/a"), "
                + "AUC \(p.curve.auc.value.map { String(format: "%.4f", $0) } ?? "n/a"), non-response \(show(p.nonResponse))",
            "frame level:        APCER worst \(show(f.atConfiguredThreshold.apcerWorst)), BPCER \(show(f.atConfiguredThreshold.bpcer)), "
                + "EER \(f.curve.eer.value.map { String(format: "%.2f %%", $0 * 100) } ?? "n/a"), AUC \(f.curve.auc.value.map { String(format: "%.4f", $0) } ?? "n/a")",
        ]
        for (name, figures) in (report.metrics.opinions ?? [:]).sorted(by: { $0.key < $1.key }) {
            let point = figures.atCalibratedThreshold
            lines.append(
                "\(name) alone: presentation AUC \(figures.presentation.auc.value.map { String(format: "%.4f", $0) } ?? "n/a"), "
                    + "EER \(figures.presentation.eer.value.map { String(format: "%.2f %%", $0 * 100) } ?? "n/a"); "
                    + "at its threshold \(figures.calibratedThreshold.map { String(format: "%.6f", $0) } ?? "n/a") for the same "
                    + "APCER target: APCER worst \(show(point?.apcerWorst)), BPCER \(show(point?.bpcer)); "
                    + "frame AUC \(figures.frame.auc.value.map { String(format: "%.4f", $0) } ?? "n/a")")
        }
        if let calibration = report.calibration {
            lines.append(
                "proposed threshold for APCER ≤ \(calibration.targetAPCER) (\(calibration.rule.rawValue)) on \(calibration.split): "
                    + (calibration.threshold.map { String(format: "%.6f", $0) } ?? "none"))
        }
        let simulated = report.presentations.compactMap { presentation in
            presentation.transactions.map { (presentation, $0) }
        }
        if !simulated.isEmpty {
            var outcomes: [String: Int] = [:]
            for (_, transactions) in simulated { outcomes.merge(transactions.outcomes, uniquingKeysWith: +) }
            let against = simulated.filter { $0.1.oppositeToLabel > 0 }
            lines.append(
                "verify transactions every \(simulated[0].1.everySeconds) s of \(simulated.count) clips: "
                    + "\(simulated.reduce(0) { $0 + $1.1.started }) started, "
                    + outcomes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
                    + "; against the label: \(against.reduce(0) { $0 + $1.1.oppositeToLabel })"
                    + (against.isEmpty
                        ? ""
                        : " ("
                            + against.map { "\(($0.0.path as NSString).lastPathComponent) \($0.1.oppositeToLabel)" }
                            .joined(separator: ", ") + ")"))
        }
        if !report.failuresToAcquire.isEmpty {
            lines.append("failures to acquire: \(report.failuresToAcquire.count) (listed in the report)")
        }
        lines.append("report: \(output)/report.html, \(output)/report.json, \(output)/frames.jsonl")
        print(lines.joined(separator: "\n"))
    }
}

/// `livenessd calibrate`: a threshold for a target APCER from an eval report's presentation scores.
struct Calibrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Propose a threshold for a target APCER from a report.json written by `livenessd eval`.",
        discussion: """
            Uses the presentations of the report's dev split (manifest split dev/val), else all of them, \
            and picks the largest threshold whose presentation-level APCER (attacks called bona fide) stays at \
            or below --target-apcer for every attack species (--calibrate-on pooled: all species pooled), \
            written with 6 decimals and rounded down so that every attack it was fitted to reject stays \
            rejected by the daemon. Prints the APCER and BPCER there and writes a \
            livenessd.yaml snippet (`threshold: …`) to --output, or to standard output.
            """)

    @Argument(help: "report.json from `livenessd eval`.")
    var report: String

    @Option(help: "APCER to keep (0.01 = BPCER100's operating point).")
    var targetAPCER = 0.05

    @Option(help: "Which APCER the threshold keeps: worst-species (each species on its own) or pooled.")
    var calibrateOn = CalibrationRule.worstSpecies

    @Option(name: .shortAndLong, help: "Write the config snippet here (atomically) instead of standard output.")
    var output: String?

    func validate() throws {
        if !(0..<1).contains(self.targetAPCER) { throw ValidationError("--target-apcer must be in [0, 1)") }
    }

    func run() throws {
        let report: EvalReport
        do {
            report = try JSONDecoder().decode(
                EvalReport.self, from: Data(contentsOf: URL(fileURLWithPath: self.report)))
        } catch {
            FileHandle.standardError.write(
                Data(
                    "livenessd calibrate: \(self.report) is not a readable eval report (\(error)); run `livenessd eval` first\n"
                        .utf8))
            throw ExitCode(2)
        }
        guard let calibration = report.recalibrated(targetAPCER: self.targetAPCER, rule: self.calibrateOn),
            let snippet = EvalReport.thresholdSnippet(
                calibration, origin: report.dataset.origin, date: ISO8601DateFormatter().string(from: Date()))
        else {
            FileHandle.standardError.write(
                Data(
                    "livenessd calibrate: no threshold can be proposed: the report has no scored attack presentations\n"
                        .utf8))
            throw ExitCode(1)
        }
        if let output = self.output {
            do {
                try writeAtomically(Data(snippet.utf8), to: output)
            } catch let error as EvalError {
                FileHandle.standardError.write(Data("livenessd calibrate: \(error)\n".utf8))
                throw ExitCode(2)
            }
            print(snippet.split(separator: "\n").filter { !$0.hasPrefix("#") }.joined(separator: "\n"))
        } else {
            print(snippet, terminator: "")
        }
    }
}

/// One progress line on standard error, redrawn in place (terminals only).
final class ProgressLine: Sendable {
    private let enabled: Bool
    private let started: Date
    private let lastDraw = Mutex(0.0)

    init(enabled: Bool, started: Date) {
        self.enabled = enabled
        self.started = started
    }

    func update(completed: Int, total: Int, frames: Int) {
        guard self.enabled else { return }
        let elapsed = Date().timeIntervalSince(self.started)
        let draw = self.lastDraw.withLock { last -> Bool in
            guard elapsed - last >= 0.2 || completed == total else { return false }
            last = elapsed
            return true
        }
        guard draw else { return }
        let width = 30
        let filled = total == 0 ? width : completed * width / total
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let line = String(
            format: "\r[%@] %d/%d files, %d frames, %.0f frames/s, %.0f s ", bar, completed, total, frames,
            Double(frames) / max(elapsed, 1e-9), elapsed)
        FileHandle.standardError.write(Data(line.utf8))
    }

    func finish() {
        if self.enabled { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}

extension CalibrationRule: ExpressibleByArgument {}
