import Foundation
import FramePipeline
import LivenessEngine
import TestSupport
import Testing

@testable import LivenessEval

/// The eval report's arithmetic, checked against independent references: SciPy's beta quantiles for
/// the intervals, and a brute-force reimplementation (every threshold, every pair) for the curves.
@Suite struct EvalMetricsTests {
    /// (errors, total, lower, upper) from scipy.stats.beta.ppf (SciPy 1.16), the textbook definition.
    static let scipyClopperPearson: [(Int, Int, Double, Double)] = [
        (0, 1, 0.000000000000, 0.975000000000),
        (1, 2, 0.012579117093, 0.987420882907),
        (1, 3, 0.008403758660, 0.905700675950),
        (1, 18, 0.001405556167, 0.272943599673),
        (36, 59, 0.474378508776, 0.734508533405),
        (5, 5, 0.478176249895, 1.000000000000),
        (0, 33, 0.000000000000, 0.105762810075),
        (1328, 2483, 0.514985330591, 0.554606183561),
        (3, 1000, 0.000619099932, 0.008742023238),
    ]

    @Test func clopperPearsonMatchesSciPy() {
        for (k, n, lower, upper) in Self.scipyClopperPearson {
            let interval = BinomialInterval.clopperPearson(errors: k, total: n)
            #expect(abs(interval.lower - lower) < 1e-9, "\(k)/\(n) lower \(interval.lower) vs \(lower)")
            #expect(abs(interval.upper - upper) < 1e-9, "\(k)/\(n) upper \(interval.upper) vs \(upper)")
        }
    }

    /// A set whose rates are known by construction: 4 bona fide (1 scored above the threshold),
    /// print attacks 1 of 3 below it, replay 0 of 2.
    @Test func ratesKnownByConstruction() {
        let t = 0.5
        let scores: [LabelledScore] = [
            .init(score: 0.1, label: .bonaFide), .init(score: 0.2, label: .bonaFide),
            .init(score: 0.3, label: .bonaFide),
            .init(score: 0.9, label: .bonaFide),
            .init(score: 0.8, label: .attack, species: "print"), .init(score: 0.7, label: .attack, species: "print"),
            .init(score: 0.4, label: .attack, species: "print"),
            .init(score: 0.6, label: .attack, species: "replay"), .init(score: 0.95, label: .attack, species: "replay"),
        ]
        let point = OperatingPoint(scores: scores, threshold: t)
        #expect(point.bpcer.errors == 1 && point.bpcer.total == 4)
        #expect(point.apcerBySpecies["print"] == Proportion(errors: 1, total: 3))
        #expect(point.apcerBySpecies["replay"] == Proportion(errors: 0, total: 2))
        #expect(point.apcerPooled == Proportion(errors: 1, total: 5))
        #expect(point.apcerWorstSpecies == "print")
        #expect(abs(point.acer.value! - (1.0 / 3 + 1.0 / 4) / 2) < 1e-12)
        // A score exactly at the threshold is an attack (the daemon's `≥`).
        #expect(
            OperatingPoint(scores: [.init(score: 0.5, label: .attack, species: "x")], threshold: 0.5).apcerPooled.errors
                == 0)

        let curve = PADErrorRates.curve(scores)
        // Pairs (attack > bona fide): 0.8→3, 0.7→3, 0.4→3, 0.6→3, 0.95→4 = 16 of 20.
        #expect(abs(curve.auc.value! - 16.0 / 20) < 1e-12)
        // BPCER at APCER ≤ 20 % (1 of 5 attacks may pass): threshold = 2nd smallest attack (0.6): 1 of 4 bona fide ≥ 0.6.
        let at20 = PADErrorRates.threshold(forAPCER: 0.2, attacks: scores.filter { $0.label == .attack }.map(\.score))
        #expect(at20 == 0.6)
        // 1 % of 5 attacks: none may pass: the smallest attack score.
        #expect(curve.bpcerAtAPCER.first { $0.targetAPCER == 0.01 }?.threshold == 0.4)
        #expect(curve.bpcerAtAPCER.first { $0.targetAPCER == 0.01 }?.bpcer.errors == 1)
    }

    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8])
    func curvesAgreeWithBruteForce(seed: UInt64) {
        var random = SeededRandom(seed: seed)
        // Scores on a coarse grid so ties between and within classes happen.
        let liveCount = Int.random(in: 3...60, using: &random)
        let attackCount = Int.random(in: 3...60, using: &random)
        let grid = seed % 2 == 0 ? 20.0 : 1000.0
        let live = (0..<liveCount).map { _ in (Double.random(in: 0...0.7, using: &random) * grid).rounded() / grid }
        let attacks = (0..<attackCount).map { _ in (Double.random(in: 0.3...1, using: &random) * grid).rounded() / grid
        }
        let scores =
            live.map { LabelledScore(score: $0, label: .bonaFide) }
            + attacks.map { LabelledScore(score: $0, label: .attack, species: "x") }
        let curve = PADErrorRates.curve(scores)
        let brute = PADBruteForce(live: live, attacks: attacks)
        #expect(abs(curve.eer.value! - brute.eer) < 1e-12)
        #expect(abs(curve.auc.value! - brute.auc) < 1e-12)
        for entry in curve.bpcerAtAPCER {
            #expect(
                abs(entry.bpcer.value! - brute.bpcer(atAPCER: entry.targetAPCER)) < 1e-12, "target \(entry.targetAPCER)"
            )
            #expect(entry.apcer.value! <= entry.targetAPCER + 1e-12)
        }
    }

    /// The presentation score's promise: the daemon said `live` at some frame iff score < threshold,
    /// for any threshold — checked by replaying the real DecisionMachine over random clips.
    @Test(arguments: [11, 12, 13, 14, 15, 16])
    func presentationScoreMatchesTheDaemonAtEveryThreshold(seed: UInt64) {
        var random = SeededRandom(seed: seed)
        for _ in 0..<40 {
            // A clip: drifting scores with gaps (no face) long enough to reset the window sometimes.
            var observations: [Observation] = []
            var level = Double.random(in: 0...1, using: &random)
            var time = 0.0
            for _ in 0..<Int.random(in: 1...80, using: &random) {
                time += Double.random(in: 0.02...0.3, using: &random)
                if Double.random(in: 0...1, using: &random) < 0.15 {
                    observations.append(.noFace(timeSeconds: time))
                } else {
                    level = min(1, max(0, level + Double.random(in: -0.15...0.15, using: &random)))
                    observations.append(.scored(spoofProbability: level, timeSeconds: time))
                }
            }
            let presentation = Presentation(path: "clip", label: .attack, species: "x", split: nil, location: "clip")
            for threshold in stride(from: 0.05, through: 0.95, by: 0.05) {
                var rules = DecisionConfiguration(threshold: threshold)
                rules.smoothing = [Smoothing.mean, .median, .exponential(alpha: 0.3)][Int(seed) % 3]
                var machine = DecisionMachine(configuration: rules)
                var accumulator = PresentationAccumulator(presentation: presentation, decisions: rules)
                var reachedLive = false
                for (index, observation) in observations.enumerated() {
                    let decision = machine.observe(observation)
                    if decision.state == .live { reachedLive = true }
                    accumulator.add(
                        FrameDecision(
                            sourceID: "clip", sequence: UInt64(index), presentationTimeSeconds: observation.timeSeconds,
                            decision: decision))
                }
                let result = accumulator.finish(end: .endOfFile)
                guard let score = result.score else { continue }  // nothing scored: a failure to acquire
                if result.rule == "window" {
                    #expect(reachedLive == (score < threshold), "threshold \(threshold) score \(score)")
                } else {
                    #expect(!reachedLive)  // too short for any verdict
                }
                #expect(result.decision == (score >= threshold ? .attack : .bonaFide))
            }
        }
    }

    /// Issue 12's stability measure: verdict changes are counted, and transactions started every 0.5 s of a
    /// clip replay the daemon's `Verification` over the recorded frames with a fresh window.
    @Test func simulatedTransactionsAndVerdictChanges() throws {
        let presentation = Presentation(path: "a.mp4", label: .bonaFide, species: nil, split: nil, location: "a.mp4")
        let rules = DecisionConfiguration(threshold: 0.5)
        var machine = DecisionMachine(configuration: rules)
        var accumulator = PresentationAccumulator(presentation: presentation, decisions: rules)
        // 30 fps: 2 s live (0.1), 2 s spoof (0.9), 2 s live again.
        let scores =
            Array(repeating: 0.1, count: 60) + Array(repeating: 0.9, count: 60) + Array(repeating: 0.1, count: 60)
        for (index, score) in scores.enumerated() {
            let time = Double(index) / 30
            accumulator.add(
                FrameDecision(
                    sourceID: "a", sequence: UInt64(index), presentationTimeSeconds: time,
                    decision: machine.observe(.scored(spoofProbability: score, timeSeconds: time))))
        }
        let result = accumulator.finish(end: .endOfFile)
        #expect(result.daemon.verdictChanges == 2 && result.daemon.firstVerdict == "live")
        let transactions = try #require(result.transactions)
        // Starts at 0, 0.5 … 5.5 s (12); each needs 1 s of frames and a settled run of 10, so the clip's end
        // cuts short those that start after about 4.8 s.
        #expect(transactions.started == 12)
        #expect(transactions.outcomes.values.reduce(0, +) == 12)
        // Started at 0 and 0.5: live before the spoof stretch begins at 2 s. Started at 1.0 or 1.5, the live
        // window has not settled when spoof frames come: those see the spoof stretch.
        #expect(transactions.outcomes["live"] ?? 0 >= 3)
        #expect(transactions.outcomes["spoof"] ?? 0 >= 2)
        #expect(transactions.oppositeToLabel == transactions.outcomes["spoof"])
        #expect(transactions.oppositeToFirstVerdict == transactions.outcomes["spoof"])
        #expect(transactions.outcomes["ended"] ?? 0 >= 1)
        #expect(transactions.oppositeStarts.allSatisfy { (1.0...4.0).contains($0) }, "\(transactions.oppositeStarts)")
        // Stills get none.
        let still = Presentation(path: "a.jpg", label: .bonaFide, species: nil, split: nil, location: "a.jpg")
        var stillAccumulator = PresentationAccumulator(presentation: still, decisions: rules)
        var stillMachine = DecisionMachine(configuration: rules)
        stillAccumulator.add(
            FrameDecision(
                sourceID: "s", sequence: 0, presentationTimeSeconds: 0,
                decision: stillMachine.observe(.scored(spoofProbability: 0.1, timeSeconds: 0))))
        #expect(stillAccumulator.finish(end: .endOfFile).transactions == nil)
    }

    @Test func failureReasonsOfFacelessAndBrokenPresentations() {
        let presentation = Presentation(path: "a.mp4", label: .bonaFide, species: nil, split: nil, location: "a.mp4")
        let rules = DecisionConfiguration(threshold: 0.5)
        var machine = DecisionMachine(configuration: rules)
        var accumulator = PresentationAccumulator(presentation: presentation, decisions: rules)
        for index in 0..<3 {
            let observation: Observation =
                index == 0 ? .noFace(timeSeconds: 0) : .unusable(reason: "too_dark", timeSeconds: Double(index))
            accumulator.add(
                FrameDecision(
                    sourceID: "a", sequence: UInt64(index), presentationTimeSeconds: Double(index),
                    decision: machine.observe(observation)))
        }
        let faceless = accumulator.finish(end: .endOfFile)
        #expect(faceless.failure == "no usable face in 3 frame(s): too_dark in 2, no face in 1")
        #expect(faceless.score == nil && faceless.decision == nil && faceless.labelledScore == nil)
        #expect(accumulator.finish(end: .truncated("cut at 40 %")).failure == "truncated: cut at 40 %")
        let unopened = PresentationAccumulator(presentation: presentation, decisions: rules)
            .finish(end: nil, openError: "cannot open: no such file")
        #expect(unopened.failure == "cannot open: no such file" && unopened.end == "not opened")
        let stopped = PresentationAccumulator(presentation: presentation, decisions: rules).finish(
            end: .stopped, interrupted: true)
        #expect(stopped.interrupted && stopped.failure == nil && stopped.labelledScore == nil)
    }

    @Test func datasetFromFolderLayoutAndManifests() throws {
        let root = try TestAssets.temporaryDirectory("eval-dataset")
        let manager = FileManager.default
        for path in [
            "live/a.jpg", "live/sub/b.mp4", "spoof/print/c.png", "spoof/d.jpg", "spoof/replay/e.mov",
            "spoof/replay/notes.txt", "other/f.jpg",
        ] {
            let url = root.appendingPathComponent(path)
            try manager.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            manager.createFile(atPath: url.path, contents: Data([0]))
        }
        let layout = try EvalDataset.load(path: root.path)
        #expect(
            layout.presentations.map(\.path) == [
                "live/a.jpg", "live/sub/b.mp4", "spoof/d.jpg", "spoof/print/c.png", "spoof/replay/e.mov",
            ])
        #expect(layout.presentations.map(\.species) == [nil, nil, "unknown", "print", "replay"])
        #expect(layout.excluded.map(\.path).sorted() == ["other/", "spoof/replay/notes.txt"])

        let tsv = root.appendingPathComponent("list.tsv")
        try
            "file\tlabel\tattack_type\tsplit\nlive/a.jpg\tlive\tnone\tdev\nspoof/print/c.png\tspoof\tprint\teval\nx.mp4\tunknown\tunknown\teval\n"
            .write(to: tsv, atomically: true, encoding: .utf8)
        let manifest = try EvalDataset.load(path: tsv.path)
        #expect(manifest.presentations.count == 2)
        #expect(
            manifest.presentations[0]
                == Presentation(
                    path: "live/a.jpg", label: .bonaFide, species: nil, split: "dev",
                    location: root.path + "/live/a.jpg"))
        #expect(manifest.presentations[1].species == "print" && manifest.presentations[1].split == "eval")
        #expect(manifest.excluded.count == 1 && manifest.excluded[0].reason.contains("unknown"))

        // CSV without a header, quoted fields with commas and quotes.
        let csv = root.appendingPathComponent("list.csv")
        try "\"live/a, \"\"quoted\"\".jpg\",bona_fide\n/abs/e.mov,attack,replay,test\n".write(
            to: csv, atomically: true, encoding: .utf8)
        let plain = try EvalDataset.load(path: csv.path)
        #expect(plain.presentations.map(\.path) == ["live/a, \"quoted\".jpg", "/abs/e.mov"])
        #expect(plain.presentations[1].location == "/abs/e.mov" && plain.presentations[1].split == "test")

        #expect(throws: EvalError.self) { try EvalDataset.load(path: root.appendingPathComponent("missing").path) }
    }
}
