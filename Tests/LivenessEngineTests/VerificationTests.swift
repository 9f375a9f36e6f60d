import LivenessEngine
import Testing

/// The rules of a verification transaction (issue 12): a verdict needs the minimum frames, the minimum
/// time and a run of smoothed scores outside the band; time running out gives what was seen instead.
@Suite struct VerificationTests {
    /// Threshold 0.5, band ±0.1, a 5-frame mean window; transactions need 6 scored frames, 0.5 s and 3
    /// stable frames (small numbers that make each rule the binding one in some test below).
    func setUp() -> (DecisionMachine, Verification) {
        var decisions = DecisionConfiguration(threshold: 0.5)
        decisions.hysteresis = 0.1
        decisions.windowFrames = 5
        decisions.minimumScoredFrames = 2
        decisions.windowSeconds = 10
        var rules = VerificationRules()
        rules.minimumScoredFrames = 6
        rules.minimumSeconds = 0.5
        rules.stableFrames = 3
        return (DecisionMachine(configuration: decisions), Verification(rules: rules, decisions: decisions))
    }

    /// Feeds observations (nil = no face) at `fps` from `start`; returns the index of the frame that
    /// ended the transaction and its result.
    func run(
        _ machine: inout DecisionMachine, _ verification: inout Verification, _ scores: [Double?], fps: Double = 10,
        start: Double = 0
    ) -> (index: Int, result: VerificationResult)? {
        for (index, score) in scores.enumerated() {
            let time = start + Double(index) / fps
            let observation: Observation =
                score.map { .scored(spoofProbability: $0, timeSeconds: time) } ?? .noFace(timeSeconds: time)
            let decision = machine.observe(observation)
            let opinions = OpinionScores(vit: score, minifasnet: score.map { $0 / 2 })
            if let result = verification.observe(
                observation, decision: decision, scores: opinions, sequence: UInt64(index))
            {
                return (index, result)
            }
        }
        return nil
    }

    @Test func liveNeedsFramesTimeAndARun() throws {
        var (machine, verification) = self.setUp()
        // 6 scored frames arrive by index 5 (0.5 s): every rule holds there, not before.
        let (index, result) = try #require(self.run(&machine, &verification, Array(repeating: 0.1, count: 20)))
        #expect(index == 5)
        #expect(result.outcome == .live && result.reason == nil)
        #expect(result.frames == 6 && result.scoredFrames == 6 && result.firstSequence == 0 && result.lastSequence == 5)
        #expect(abs(result.evidenceSeconds - 0.5) < 1e-9)
        #expect(abs((result.smoothed ?? 1) - 0.1) < 1e-12)
        #expect(abs((result.scores.vit ?? 0) - 0.1) < 1e-12 && abs((result.scores.minifasnet ?? 0) - 0.05) < 1e-12)
    }

    /// At 100 fps the frames come quickly: time (0.5 s) is the binding rule, not the frame count.
    @Test func minimumTimeHoldsAtHighFrameRates() throws {
        var (machine, verification) = self.setUp()
        let (index, result) = try #require(
            self.run(&machine, &verification, Array(repeating: 0.9, count: 200), fps: 100))
        #expect(index == 50 && result.outcome == .spoof && result.scoredFrames == 51)
    }

    /// A score that swings across the band never settles: no verdict, and the expiry says why.
    @Test func aScoreInsideTheBandTimesOut() {
        var (machine, verification) = self.setUp()
        #expect(self.run(&machine, &verification, Array(repeating: 0.55, count: 30)) == nil)
        let result = verification.expire()
        #expect(result.outcome == .timeout)
        #expect(result.reason?.contains("did not stay outside 0.4–0.6 for 3 frames in a row") == true, "\(result)")
        #expect(result.scoredFrames == 30)
    }

    /// The run must be unbroken: a frame without a face starts it again, and a switch of side too.
    @Test func theRunRestartsAfterAGapOrASwitch() throws {
        var (machine, verification) = self.setUp()
        // Live from frame 0 (the mean stays below 0.4).
        let scores: [Double?] = [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, nil, 0.1, 0.1, 0.1, 0.1]
        let (index, result) = try #require(self.run(&machine, &verification, scores))
        // Frame 5 already has 6 scored frames and 0.5 s: live there (the gap comes later).
        #expect(index == 5 && result.outcome == .live)
        // A gap at frame 4 breaks the run: 3 more live frames (5, 6, 7) are needed, so the verdict waits
        // until 7 although frame 6 has 6 scored frames and 0.6 s.
        var (machine2, verification2) = self.setUp()
        let gapped: [Double?] = [0.1, 0.1, 0.1, 0.1, nil, 0.1, 0.1, 0.1, 0.1]
        let (index2, result2) = try #require(self.run(&machine2, &verification2, gapped))
        #expect(index2 == 7 && result2.outcome == .live && result2.scoredFrames == 7 && result2.frames == 8)
    }

    @Test func expiryWithoutAJudgedFaceSaysWhatWasSeen() {
        var (machine, verification) = self.setUp()
        #expect(verification.expire().outcome == .timeout)
        #expect(verification.expire().reason == "no frame arrived from the source")
        _ = self.run(&machine, &verification, [nil, nil, nil])
        #expect(verification.expire().outcome == .noFace)
        var (machine2, verification2) = self.setUp()
        for index in 0..<4 {
            let observation = Observation.unusable(reason: "face too dark", timeSeconds: Double(index) / 10)
            let decision = machine2.observe(observation)
            #expect(
                verification2.observe(observation, decision: decision, scores: OpinionScores(), sequence: UInt64(index))
                    == nil)
        }
        let unusable = verification2.expire()
        #expect(unusable.outcome == .unusable && unusable.reason == "face too dark" && unusable.frames == 4)
    }

    /// A verdict is only ever the side the run was on: spoof frames, then live ones, give live only after a
    /// full live run, and never spoof once the live run started.
    @Test func aLateSwitchNeedsItsOwnRun() throws {
        var (machine, verification) = self.setUp()
        // Spoof for 3 frames (not enough frames yet for a verdict), then live: the mean takes a few frames to
        // fall below 0.4, and the live run of 3 follows.
        let scores: [Double?] = [0.9, 0.9, 0.9] + Array(repeating: 0.05, count: 12)
        let (index, result) = try #require(self.run(&machine, &verification, scores))
        #expect(result.outcome == .live)
        // Window means (5 frames): frame 4 = (0.9·3 + 0.05·2)/5 = 0.56 (in the band: the spoof run ends),
        // 5 = 0.39, 6 = 0.22, 7 = 0.05 → the live run of 3 ends at 7.
        #expect(index == 7)
    }
}
