import CaptureKit
import Foundation
import LivenessEngine
import TestSupport
import Testing

/// `livenessd eval` and `calibrate` as a test lab runs them: real files, real decoding, the real
/// model and detector, the binary's own output files.
@Suite(.serialized) struct EvalCommandTests {
    /// The ViT alone: the constructed sets below were chosen by its scores.
    static func modelArguments() throws -> [String] {
        ["--models", "vit"] + (try Self.bothModelArguments())
    }

    /// Both opinions (the default), from the shared files.
    static func bothModelArguments() throws -> [String] {
        [
            "--model", try TestAssets.modelURL.path, "--minifasnet", try TestAssets.file("models/silent-face").path,
            "--detector", try TestAssets.file("models/yunet/face_detection_yunet.onnx").path,
        ]
    }

    static func json(_ url: URL) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
    }

    static func frameLines(_ url: URL) throws -> [[String: Any]] {
        try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }

    /// Links shared samples into a folder laid out by label, as a lab would arrange its own files.
    static func layout(_ files: [(String, String)]) throws -> URL {
        let root = try TestAssets.temporaryDirectory("eval-set")
        for (sample, destination) in files {
            let target = root.appendingPathComponent(destination)
            try FileManager.default.createDirectory(
                at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(
                at: target, withDestinationURL: try TestAssets.file("samples/" + sample))
        }
        return root
    }

    /// Labels chosen so the rates are known by construction: the model scores these pictures at
    /// ≤ 0.005 or ≥ 0.99 (measured; the threshold is 0.12), and two are deliberately filed under the
    /// wrong label. Bona fide: 1 of 3 rejected; print: 1 of 2 accepted; replay: 0 of 1.
    @Test func tinyHandLabelledSetHasTheRatesItWasBuiltWith() throws {
        let root = try Self.layout([
            ("live/gen-facerec__two_people.jpg", "live/two_people.jpg"),
            ("live/gen-skimage__astronaut.png", "live/astronaut.png"),
            ("spoof/pad-lestari__fake_47.png", "live/filed_as_live_but_a_replay.png"),
            ("spoof/pad-nuaa__ImposterFace_0009_01_01_02_134.jpg", "spoof/print/imposter.jpg"),
            ("live/gen-facerec__alex-lacamoire.png", "spoof/print/filed_as_print_but_live.png"),
            ("spoof/pad-khanh__spoof.jpg", "spoof/replay/screen.jpg"),
        ])
        let output = root.appendingPathComponent("report")
        let result = try Binary.run(["eval", root.path, "-o", output.path, "--quiet"] + Self.modelArguments())
        #expect(result.status == 0, "stderr: \(result.standardError)")
        let report = try Self.json(output.appendingPathComponent("report.json"))
        #expect(report["schema_version"] as? Int == 1 && report["complete"] as? Bool == true)
        let metrics = try #require(report["metrics"] as? [String: Any])
        for level in ["presentation", "frame"] {  // stills: one frame per presentation, both levels agree
            let figures = try #require(metrics[level] as? [String: Any])
            let point = try #require(figures["at_configured_threshold"] as? [String: Any])
            let bpcer = try #require(point["bpcer"] as? [String: Any])
            #expect(bpcer["errors"] as? Int == 1 && bpcer["total"] as? Int == 3, "\(level) \(bpcer)")
            let species = try #require(point["apcer_by_species"] as? [String: [String: Any]])
            #expect(species["print"]?["errors"] as? Int == 1 && species["print"]?["total"] as? Int == 2)
            #expect(species["replay"]?["errors"] as? Int == 0 && species["replay"]?["total"] as? Int == 1)
            #expect(point["apcer_worst_species"] as? String == "print")
            let acer = try #require((point["acer"] as? [String: Any])?["value"] as? Double)
            #expect(abs(acer - (1.0 / 2 + 1.0 / 3) / 2) < 1e-12)
            // 1 of 2: Clopper–Pearson [0.0126, 0.9874] (SciPy).
            let interval = try #require((species["print"]?["ci95"]) as? [Double])
            #expect(abs(interval[0] - 0.012579117093) < 1e-9 && abs(interval[1] - 0.987420882907) < 1e-9)
        }
        let presentations = try #require(report["presentations"] as? [[String: Any]])
        #expect(presentations.count == 6)
        #expect(presentations.allSatisfy { $0["rule"] as? String == "short" && $0["kind"] as? String == "still" })

        // calibrate --calibrate-on pooled: APCER ≤ 40 % of 3 pooled attacks lets ⌊0.4·3⌋ = 1 pass: the
        // threshold is the 2nd lowest attack score (written rounded down, see `publishable`).
        let snippet = root.appendingPathComponent("threshold.yaml")
        let calibrated = try Binary.run([
            "calibrate", output.appendingPathComponent("report.json").path, "--target-apcer", "0.4", "-o", snippet.path,
            "--calibrate-on", "pooled",
        ])
        #expect(calibrated.status == 0, "stderr: \(calibrated.standardError)")
        let attackScores = presentations.filter { $0["label"] as? String == "attack" }.compactMap {
            $0["score"] as? Double
        }.sorted()
        let written = try String(contentsOf: snippet, encoding: .utf8)
        #expect(written.contains(String(format: "threshold: %.6f", Self.roundedDown(attackScores[1]))), "\(written)")
        #expect(written.contains("optimistic"))  // no dev split: it says the threshold was fitted on the same data
        // By default every species keeps APCER ≤ 40 % on its own: 2 prints and 1 replay may each let
        // none pass, so the threshold is the lowest attack score.
        let worst = try Binary.run([
            "calibrate", output.appendingPathComponent("report.json").path, "--target-apcer", "0.4",
        ])
        #expect(worst.status == 0, "stderr: \(worst.standardError)")
        #expect(
            worst.standardOutput.contains(String(format: "threshold: %.6f", Self.roundedDown(attackScores[0]))),
            "\(worst.standardOutput)")
        #expect(worst.standardOutput.contains("every attack species"))
    }

    /// A manifest with a dev and an eval split: the threshold is calibrated on dev only and every
    /// figure is reported on eval only.
    @Test func devSplitCalibratesAndEvalSplitIsReported() throws {
        let root = try TestAssets.temporaryDirectory("eval-split")
        let samples = try TestAssets.file("samples").path
        // dev: three attacks and two bona fide; eval: two attacks and two bona fide (stills, far from the threshold).
        let rows = [
            ("spoof/pad-nuaa__ImposterFace_0009_01_01_02_134.jpg", "spoof", "print", "dev"),
            ("spoof/pad-khanh__spoof.jpg", "spoof", "replay", "dev"),
            ("live/gen-facerec__alex-lacamoire.png", "spoof", "print", "dev"),  // an "attack" the model calls live
            ("live/gen-skimage__astronaut.png", "live", "none", "dev"),
            ("live/gen-facerec__two_people.jpg", "live", "none", "dev"),
            ("spoof/pad-nuaa__ImposterFace_0015_01_03_03_212.jpg", "spoof", "print", "eval"),
            ("spoof/pad-krzysiek__fake_117.png", "spoof", "unknown", "eval"),
            ("live/gen-facenet__shea_whigham_1.jpg", "live", "none", "eval"),
            ("live/gen-facerec__knn_test_kit_with_rose.jpg", "live", "none", "eval"),
        ]
        let manifest = root.appendingPathComponent("split.csv")
        try (["path,label,species,split"] + rows.map { "\(samples)/\($0.0),\($0.1),\($0.2),\($0.3)" })
            .joined(separator: "\n").write(to: manifest, atomically: true, encoding: .utf8)
        let output = root.appendingPathComponent("report")
        let result = try Binary.run(
            ["eval", manifest.path, "-o", output.path, "--quiet", "--target-apcer", "0.34", "--calibrate-on", "pooled"]
                + Self.modelArguments())
        #expect(result.status == 0, "stderr: \(result.standardError)")
        let report = try Self.json(output.appendingPathComponent("report.json"))
        let calibration = try #require(report["calibration"] as? [String: Any])
        #expect(calibration["split"] as? String == "dev")
        // ⌊0.34 · 3⌋ = 1 dev attack may pass: the threshold is the 2nd lowest dev attack score.
        let presentations = try #require(report["presentations"] as? [[String: Any]])
        let devAttacks = presentations.filter { $0["split"] as? String == "dev" && $0["label"] as? String == "attack" }
            .compactMap { $0["score"] as? Double }.sorted()
        #expect(devAttacks.count == 3)
        #expect(calibration["threshold"] as? Double == Self.roundedDown(devAttacks[1]))
        #expect(calibration["rule"] as? String == "pooled")
        let metrics = try #require(report["metrics"] as? [String: Any])
        #expect(metrics["subset"] as? String == "eval")
        let level = try #require(metrics["presentation"] as? [String: Any])
        #expect(level["attacks"] as? Int == 2 && level["bona_fide"] as? Int == 2)
        #expect(level["at_calibrated_threshold"] != nil)
        let snippet = try String(contentsOf: output.appendingPathComponent("threshold.yaml"), encoding: .utf8)
        #expect(snippet.contains(String(format: "threshold: %.6f", Self.roundedDown(devAttacks[1]))))
        // report.html shows the eval rows only, as report.json's figures are eval only.
        let html = try String(contentsOf: output.appendingPathComponent("report.html"), encoding: .utf8)
        for row in rows {
            let name = (row.0 as NSString).lastPathComponent
            #expect(html.contains(name) == (row.3 == "eval"), "\(name) (\(row.3)) in report.html")
        }
    }

    /// The calibration's own rounding, recomputed independently: 6 decimals, at least 5·10⁻⁷ below.
    static func roundedDown(_ score: Double) -> Double {
        var value = (score * 1e6).rounded(.down) / 1e6
        if score - value < 5e-7 { value -= 1e-6 }
        return max(0, Double(String(format: "%.6f", value))!)
    }

    @Test func brokenAndFacelessFilesAreFailuresToAcquireAndTheRunContinues() throws {
        let root = try TestAssets.temporaryDirectory("eval-broken")
        let live = root.appendingPathComponent("live")
        let spoof = root.appendingPathComponent("spoof/replay")
        try FileManager.default.createDirectory(at: live, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: spoof, withIntermediateDirectories: true)
        // A good still, and four that cannot be judged.
        try FileManager.default.createSymbolicLink(
            at: live.appendingPathComponent("good.png"),
            withDestinationURL: try TestAssets.file("samples/live/gen-skimage__astronaut.png"))
        var garbage = SeededRandom(seed: 7)
        try Data((0..<4096).map { _ in UInt8.random(in: 0...255, using: &garbage) })
            .write(to: live.appendingPathComponent("corrupt.jpg"))
        let clip = try Data(contentsOf: try TestAssets.file("samples/spoof/pad-lestari__fake.mp4"))
        try clip.prefix(clip.count * 2 / 5).write(to: spoof.appendingPathComponent("truncated.mp4"))
        try FileManager.default.createSymbolicLink(
            at: spoof.appendingPathComponent("unreadable.mp4"),
            withDestinationURL: root.appendingPathComponent("gone.mp4"))
        try FFmpegTool.run(
            "ffmpeg",
            [
                "-v", "error", "-f", "lavfi", "-i", "color=c=gray:s=320x240", "-frames:v", "1",
                live.appendingPathComponent("no_face.png").path,
            ])

        let output = root.appendingPathComponent("report")
        let result = try Binary.run(["eval", root.path, "-o", output.path, "--quiet"] + Self.modelArguments())
        #expect(result.status == 0, "stderr: \(result.standardError)")
        let report = try Self.json(output.appendingPathComponent("report.json"))
        let failures = try #require(report["failures_to_acquire"] as? [[String: Any]])
        let reasons = Dictionary(
            uniqueKeysWithValues: failures.map { ($0["path"] as? String ?? "", $0["reason"] as? String ?? "") })
        #expect(reasons.count == 4, "\(reasons)")
        #expect(reasons["live/corrupt.jpg"]?.isEmpty == false)
        #expect(reasons["spoof/replay/truncated.mp4"]?.hasPrefix("truncated") == true, "\(reasons)")
        #expect(reasons["spoof/replay/unreadable.mp4"]?.contains("cannot open") == true, "\(reasons)")
        #expect(reasons["live/no_face.png"] == "no face in 1 frame(s)", "\(reasons)")
        let presentations = try #require(report["presentations"] as? [[String: Any]])
        let good = try #require(presentations.first { $0["path"] as? String == "live/good.png" })
        #expect((good["score"] as? Double).map { $0 < 0.05 } == true)
        let metrics = try #require((report["metrics"] as? [String: Any])?["presentation"] as? [String: Any])
        let nonResponse = try #require(metrics["non_response"] as? [String: Any])
        #expect(nonResponse["errors"] as? Int == 4 && nonResponse["total"] as? Int == 5)
        // The truncated clip's decoded frames were scored and logged before its end: they stay in frames.jsonl.
        let lines = try Self.frameLines(output.appendingPathComponent("frames.jsonl"))
        #expect(lines.contains { $0["path"] as? String == "spoof/replay/truncated.mp4" })
    }

    /// The whole shared sample set with its manifest; every figure recomputed here by a separate,
    /// brute-force implementation from the report's presentation scores and frames.jsonl.
    @Test func sharedSamplesReportAgreesWithAnIndependentRecomputation() throws {
        let output = try TestAssets.temporaryDirectory("eval-samples")
        let result = try Binary.run(
            ["eval", try TestAssets.file("samples/MANIFEST.tsv").path, "-o", output.path, "--quiet"]
                + Self.bothModelArguments())
        #expect(result.status == 0, "stderr: \(result.standardError)")
        let report = try Self.json(output.appendingPathComponent("report.json"))
        let run = try #require(report["run"] as? [String: Any])
        let threshold = try #require(run["threshold"] as? Double)
        let decisions = try #require(run["decisions"] as? [String: Any])
        let hysteresis = try #require(decisions["hysteresis"] as? Double)
        let minimum = try #require(decisions["minimum_scored_frames"] as? Int)
        let presentations = try #require(report["presentations"] as? [[String: Any]])
        let manifestRows = try String(contentsOf: try TestAssets.file("samples/MANIFEST.tsv"), encoding: .utf8)
            .split(separator: "\n").dropFirst().filter { $0.split(separator: "\t")[1] != "unknown" }
        #expect(presentations.count == manifestRows.count)

        let frameRecords = try Self.frameLines(output.appendingPathComponent("frames.jsonl"))
        // The face box has the socket's shape (issue 12): {"x","y","w","h"}.
        let boxes = frameRecords.compactMap { $0["box"] }
        #expect(
            !boxes.isEmpty && boxes.allSatisfy { ($0 as? [String: Int]).map { Set($0.keys) } == ["x", "y", "w", "h"] })
        let frames = Dictionary(grouping: frameRecords) { $0["path"] as? String ?? "" }
        var presentationScores: [(score: Double, attack: Bool, species: String)] = []
        var frameScores: [(score: Double, attack: Bool, species: String)] = []
        for presentation in presentations {
            let path = presentation["path"] as? String ?? ""
            let attack = presentation["label"] as? String == "attack"
            let species = presentation["species"] as? String ?? ""
            let records = frames[path] ?? []
            #expect(records.count == presentation["frames"].flatMap { ($0 as? [String: Any])?["decoded"] as? Int })
            guard let score = presentation["score"] as? Double else { continue }
            // The presentation score from the frames: lowest smoothed score once the window is full, + hysteresis.
            let windowed = records.filter { $0["raw"] != nil && ($0["window"] as? Int ?? 0) >= minimum }.compactMap {
                $0["smoothed"] as? Double
            }
            let raws = records.compactMap { $0["raw"] as? Double }
            let expected = windowed.min().map { $0 + hysteresis } ?? raws.reduce(0, +) / Double(raws.count)
            #expect(abs(score - expected) < 1e-12, "\(path)")
            if !windowed.isEmpty {
                #expect(
                    records.contains { $0["state"] as? String == "live" } == (score < threshold),
                    "door decision of \(path)")
            }
            presentationScores.append((score, attack, species))
            frameScores += raws.map { ($0, attack, species) }
        }
        #expect(presentationScores.count > 80 && frameScores.count > 3000)

        let metrics = try #require(report["metrics"] as? [String: Any])
        for (level, scores) in [("presentation", presentationScores), ("frame", frameScores)] {
            let figures = try #require(metrics[level] as? [String: Any])
            let point = try #require(figures["at_configured_threshold"] as? [String: Any])
            let brute = PADBruteForce(
                live: scores.filter { !$0.attack }.map(\.score), attacks: scores.filter(\.attack).map(\.score))
            let bpcer = try #require((point["bpcer"] as? [String: Any])?["value"] as? Double)
            #expect(abs(bpcer - brute.rates(threshold).bpcer) < 1e-12, "\(level)")
            var worst = 0.0
            let species = try #require(point["apcer_by_species"] as? [String: [String: Any]])
            for name in Set(scores.filter(\.attack).map(\.species)) {
                let members = scores.filter { $0.attack && $0.species == name }
                let rate = Double(members.filter { $0.score < threshold }.count) / Double(members.count)
                worst = max(worst, rate)
                #expect(abs((species[name]?["value"] as? Double ?? -1) - rate) < 1e-12, "\(level) \(name)")
            }
            #expect(abs(((point["apcer_worst"] as? [String: Any])?["value"] as? Double ?? -1) - worst) < 1e-12)
            let curve = try #require(figures["curve"] as? [String: Any])
            #expect(
                abs(((curve["eer"] as? [String: Any])?["value"] as? Double ?? -1) - brute.eer) < 1e-12, "\(level) EER")
            #expect(
                abs(((curve["auc"] as? [String: Any])?["value"] as? Double ?? -1) - brute.auc) < 1e-12, "\(level) AUC")
            for entry in try #require(curve["bpcer_at_apcer"] as? [[String: Any]]) {
                let target = try #require(entry["target_apcer"] as? Double)
                let value = try #require((entry["bpcer"] as? [String: Any])?["value"] as? Double)
                #expect(abs(value - brute.bpcer(atAPCER: target)) < 1e-12, "\(level) BPCER at APCER \(target)")
            }
        }
        let throughput = try #require(report["throughput"] as? [String: Any])
        #expect((throughput["frames"] as? Int ?? 0) == frames.values.reduce(0) { $0 + $1.count })

        // The calibration's promise, kept by the daemon's own decision machine: at the threshold
        // written to threshold.yaml (as text, as a user copies it), every attack species lets at most
        // ⌊target · N⌋ of its presentations reach `live`.
        let snippet = try String(contentsOf: output.appendingPathComponent("threshold.yaml"), encoding: .utf8)
        let line = try #require(snippet.split(separator: "\n").first { $0.hasPrefix("threshold: ") })
        let proposed = try #require(Double(line.dropFirst("threshold: ".count)))
        let calibration = try #require(report["calibration"] as? [String: Any])
        #expect(calibration["rule"] as? String == "worst-species")
        let target = try #require(calibration["target_apcer"] as? Double)
        let smoothing = try #require(decisions["smoothing"] as? String)
        #expect(smoothing == "mean")
        var rules = DecisionConfiguration(threshold: proposed)
        rules.hysteresis = hysteresis
        rules.minimumScoredFrames = minimum
        rules.windowFrames = try #require(decisions["window_frames"] as? Int)
        rules.windowSeconds = try #require(decisions["window_seconds"] as? Double)
        rules.faceLostResetSeconds = try #require(decisions["face_lost_reset_seconds"] as? Double)
        var admitted: [String: (passed: Int, total: Int)] = [:]
        for presentation in presentations
        where presentation["label"] as? String == "attack" && presentation["score"] != nil {
            let path = presentation["path"] as? String ?? ""
            let records = (frames[path] ?? []).sorted { ($0["sequence"] as? Int ?? 0) < ($1["sequence"] as? Int ?? 0) }
            let raws = records.compactMap { $0["raw"] as? Double }
            var machine = DecisionMachine(configuration: rules)
            var reachedLive = false
            var windowFilled = false
            for record in records {
                let time = record["time"] as? Double ?? 0
                let observation: Observation
                if let raw = record["raw"] as? Double {
                    observation = .scored(spoofProbability: raw, timeSeconds: time)
                } else if record["state"] as? String == "no_face" {
                    observation = .noFace(timeSeconds: time)
                } else {
                    observation = .unusable(reason: record["reason"] as? String ?? "", timeSeconds: time)
                }
                let decision = machine.observe(observation)
                reachedLive = reachedLive || decision.state == .live
                windowFilled = windowFilled || (decision.rawScore != nil && decision.windowCount >= minimum)
            }
            // Too short for a window: judged like `classify`, on the mean frame score.
            let passed = windowFilled ? reachedLive : raws.reduce(0, +) / Double(max(1, raws.count)) < proposed
            let species = presentation["species"] as? String ?? "unknown"
            admitted[species, default: (0, 0)].total += 1
            if passed { admitted[species, default: (0, 0)].passed += 1 }
        }
        #expect(!admitted.isEmpty)
        for (species, count) in admitted {
            let allowed = Int((target * Double(count.total) + 1e-9).rounded(.down))
            #expect(
                count.passed <= allowed,
                "\(species): \(count.passed) of \(count.total) attacks reach live at \(proposed)")
        }
    }

    @Test func interruptedRunStillWritesTheReportOfWhatFinished() throws {
        let output = try TestAssets.temporaryDirectory("eval-interrupt")
        let process = Process()
        process.executableURL = try #require(Binary.url)
        process.arguments =
            ["eval", try TestAssets.file("samples/MANIFEST.tsv").path, "-o", output.path, "--jobs", "1"]
            + (try Self.modelArguments())
        process.standardOutput = Pipe()
        process.standardError = FileHandle.nullDevice
        try process.run()
        let log = output.appendingPathComponent("frames.jsonl")
        let deadline = Date().addingTimeInterval(120)
        // Some frames decided (the log is flushed in 64 KiB blocks), then Ctrl-C.
        while Date() < deadline,
            ((try? FileManager.default.attributesOfItem(atPath: log.path)[.size] as? Int) ?? 0) < 100_000
        {
            Thread.sleep(forTimeInterval: 0.05)
        }
        kill(process.processIdentifier, SIGINT)
        process.waitUntilExit()
        #expect(process.terminationStatus == 130)
        let report = try Self.json(output.appendingPathComponent("report.json"))
        #expect(report["complete"] as? Bool == false)
        let presentations = try #require(report["presentations"] as? [[String: Any]])
        let dataset = try #require(report["dataset"] as? [String: Any])
        #expect(presentations.count < dataset["presentations"] as? Int ?? 0)
        #expect(presentations.contains { $0["score"] != nil })
        // Every frame the report counts is in frames.jsonl.
        let lines = try Self.frameLines(log)
        let counted = presentations.reduce(0) { $0 + ((($1["frames"] as? [String: Any])?["decoded"] as? Int) ?? 0) }
        #expect(lines.count >= counted && counted > 0)
        #expect(FileManager.default.fileExists(atPath: output.appendingPathComponent("report.html").path))
    }

    /// The HTML report in headless Chromium (Debian's `chromium`): it loads, and the plots and
    /// thumbnails are on the screenshot. The PNG is kept for the closing note.
    @Test func htmlReportRendersInHeadlessChromium() throws {
        let chromium = "/usr/bin/chromium"
        try #require(
            FileManager.default.isExecutableFile(atPath: chromium), "install Debian's chromium (scripts/setup.sh does)")
        let root = try Self.layout([
            ("live/gen-skimage__astronaut.png", "live/astronaut.png"),
            ("live/pad-lestari__real.mp4", "live/real.mp4"),
            ("spoof/pad-lestari__fake.mp4", "spoof/replay/fake.mp4"),
            ("live/gen-facerec__alex-lacamoire.png", "spoof/print/filed_as_print_but_live.png"),
            ("spoof/pad-khanh__spoof.jpg", "spoof/replay/screen.jpg"),
        ])
        let output = root.appendingPathComponent("report")
        let result = try Binary.run(["eval", root.path, "-o", output.path, "--quiet"] + Self.modelArguments())
        #expect(result.status == 0, "stderr: \(result.standardError)")
        let page = output.appendingPathComponent("report.html")
        let html = try String(contentsOf: page, encoding: .utf8)
        #expect(!html.contains("<script") && !html.contains("http://") && !html.contains("https://"))

        let keep = URL(
            fileURLWithPath: ProcessInfo.processInfo.environment["LIVENESSD_TEST_OUTPUT"]
                ?? "/tmp/livenessd-test-output")
        try FileManager.default.createDirectory(at: keep, withIntermediateDirectories: true)
        let screenshot = keep.appendingPathComponent("eval-report-screenshot.png")
        try? FileManager.default.removeItem(at: screenshot)
        let flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,2200"]
        let shot = try Self.runWithTimeout(
            chromium, flags + ["--screenshot=\(screenshot.path)", page.absoluteString], seconds: 90)
        #expect(shot.status == 0, "chromium: \(shot.errors.suffix(600))")
        // Chromium reports page problems (failed loads, console errors) on stderr with these tags.
        for line in shot.errors.split(separator: "\n") where line.contains("CONSOLE") || line.contains("net::ERR") {
            Issue.record("chromium reported a page problem: \(line)")
        }
        let dom = try Self.runWithTimeout(chromium, flags + ["--dump-dom", page.absoluteString], seconds: 90)
        #expect(dom.output.components(separatedBy: "<svg").count - 1 >= 5)  // DET, 2 histograms, 2 timelines
        #expect(dom.output.contains("<img"))  // the missed print attack's face crop

        let (image, _) = try ImageDecoder.decode(path: screenshot.path)
        #expect(image.width == 1280)
        // The DET curve (#1f77b4) and the attack histogram bars (#d62728 at 45 % on white) are drawn.
        var blue = 0
        var red = 0
        for index in stride(from: 0, to: image.pixels.count, by: 3) {
            let (r, g, b) = (Int(image.pixels[index]), Int(image.pixels[index + 1]), Int(image.pixels[index + 2]))
            if abs(r - 31) < 20 && abs(g - 119) < 20 && abs(b - 180) < 20 { blue += 1 }
            if r > 200 && g < 190 && b < 190 && r - g > 60 { red += 1 }
        }
        #expect(blue > 200 && red > 200, "blue \(blue) red \(red) pixels in \(screenshot.path)")
        // Every thumbnail is a PNG FFmpeg can read.
        for match in html.matches(of: /data:image\/png;base64,([A-Za-z0-9+\/=]+)/) {
            let data = try #require(Data(base64Encoded: String(match.1)))
            let file = root.appendingPathComponent("thumb.png")
            try data.write(to: file)
            let thumb = try ImageDecoder.decode(path: file.path).image
            #expect(thumb.width == 224 && thumb.height == 224)
        }
    }

    static func runWithTimeout(
        _ path: String, _ arguments: [String], seconds: Double
    ) throws -> (status: Int32, output: String, errors: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let timer = DispatchWorkItem { if process.isRunning { process.terminate() } }
        DispatchQueue.global().asyncAfter(deadline: .now() + seconds, execute: timer)
        let output = out.fileHandleForReading.readDataToEndOfFile()
        let errors = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        timer.cancel()
        return (
            process.terminationStatus, String(decoding: output, as: UTF8.self), String(decoding: errors, as: UTF8.self)
        )
    }
}
