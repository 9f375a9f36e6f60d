import CaptureKit
import FramePipeline
import Foundation
import LivenessEngine
import TestSupport
import Testing

/// Issue 14: the analysis rate (`analysis_fps`) — which frames are analysed, and what it does to the
/// decision rules' frame counts.
@Suite struct AnalysisRateTests {
    /// Offers `count` frames at `fps` (times `start + i/fps + jitter(i)`), returning the analysed indices.
    func analysed(
        rate: Double?, fps: Double, count: Int, start: Double = 0, jitter: (Int) -> Double = { _ in 0 }
    ) -> (indices: [Int], share: Double) {
        var gate = AnalysisRateGate(framesPerSecond: rate)
        var taken: [Int] = []
        for index in 0..<count where gate.admits(timeSeconds: start + Double(index) / fps + jitter(index)) {
            taken.append(index)
        }
        return (taken, gate.analysedShare)
    }

    @Test func everyFrameWithoutARate() {
        for rate in [nil, 0, -1, .nan, .infinity] as [Double?] {
            let result = self.analysed(rate: rate, fps: 30, count: 90)
            #expect(result.indices == Array(0..<90))
            #expect(result.share == 1)
        }
    }

    /// 30 fps at 10 or 5: exactly every 3rd or 6th frame, and the share says so.
    @Test func evenDivisorsTakeEveryNthFrame() {
        let ten = self.analysed(rate: 10, fps: 30, count: 300, start: 12.345)
        #expect(ten.indices == Array(stride(from: 0, to: 300, by: 3)))
        #expect(abs(ten.share - 1.0 / 3) < 1e-9)
        let five = self.analysed(rate: 5, fps: 30, count: 300)
        #expect(five.indices == Array(stride(from: 0, to: 300, by: 6)))
        #expect(abs(five.share - 1.0 / 6) < 1e-9)
    }

    /// A camera's timestamps jitter by a few milliseconds: 30 fps at 10 stays at 10 a second (a gate that
    /// insisted on a full 100 ms would take every 4th frame whenever a frame came 1 ms early: 7.5 fps).
    @Test func captureJitterDoesNotLowerTheRate() {
        var random = SeededRandom(seed: 14)
        let offsets = (0..<300).map { _ in Double(random.next() % 9) / 1000 - 0.004 }  // ±4 ms
        let result = self.analysed(rate: 10, fps: 30, count: 300, jitter: { offsets[$0] })
        #expect((99...101).contains(result.indices.count), "\(result.indices.count) of 300")
        let gaps = zip(result.indices.dropFirst(), result.indices).map { $0 - $1 }
        #expect(gaps.allSatisfy { $0 == 3 }, "\(gaps)")
    }

    /// 25 fps at 10: the schedule keeps 10 a second on average (every 2nd or 3rd frame), not 25/3 = 8.3.
    @Test func unevenRatesKeepTheScheduleOnAverage() {
        let result = self.analysed(rate: 10, fps: 25, count: 250)  // 10 s
        #expect(result.indices.count == 100)
        #expect(Set(zip(result.indices.dropFirst(), result.indices).map { $0 - $1 }) == [2, 3])
        #expect(abs(result.share - 0.4) < 1e-9)
        // A source no faster than the rate: every frame, share 1.
        let slow = self.analysed(rate: 10, fps: 5, count: 50)
        #expect(slow.indices == Array(0..<50) && slow.share == 1)
    }

    /// A stream that starts again (time goes back) or stalls (a gap of seconds) restarts the schedule at
    /// once instead of skipping until the old schedule comes round.
    @Test func restartsAndStallsRestartTheSchedule() {
        var gate = AnalysisRateGate(framesPerSecond: 5)
        let first = (0..<30).filter { gate.admits(timeSeconds: 100 + Double($0) / 30) }
        #expect(first == [0, 6, 12, 18, 24])
        let looped = gate.admits(timeSeconds: 0)  // time went back
        let next = gate.admits(timeSeconds: 1.0 / 30)
        let stalled = gate.admits(timeSeconds: 7)  // a 7 s stall
        let after = gate.admits(timeSeconds: 7 + 1.0 / 30)
        #expect(looped && !next && stalled && !after)
    }

    /// Every frame: the rules are exactly the configured ones. At a sixth of the frames: a sixth of the
    /// counts (rounded, at least one), so the window spans the same seconds.
    @Test func decisionCountsScaleWithTheAnalysedShare() {
        var rules = DecisionConfiguration(threshold: 0.5)
        #expect(rules.effectiveWindowFrames == 15 && rules.effectiveMinimumScoredFrames == 5)
        rules.analysedShare = 1.0 / 3
        #expect(rules.effectiveWindowFrames == 5 && rules.effectiveMinimumScoredFrames == 2)
        rules.analysedShare = 1.0 / 6
        #expect(rules.effectiveWindowFrames == 3 && rules.effectiveMinimumScoredFrames == 1)
        rules.analysedShare = 0.001
        #expect(rules.effectiveWindowFrames == 1 && rules.effectiveMinimumScoredFrames == 1)

        // The machine follows: 3 analysed frames (0.5 s at 6 fps of 30 → 5 fps) make a verdict that
        // every frame would have needed 5 for.
        var machine = DecisionMachine(configuration: rules)
        rules.analysedShare = 1.0 / 6
        machine.configuration = rules
        let first = machine.observe(.scored(spoofProbability: 0.1, timeSeconds: 0))
        #expect(first.state == .live && first.windowCount == 1)
        for step in 1...5 { _ = machine.observe(.scored(spoofProbability: 0.1, timeSeconds: Double(step) / 5)) }
        #expect(machine.observe(.scored(spoofProbability: 0.1, timeSeconds: 1.2)).windowCount == 3)

        // A transaction's counts scale the same way: 15 scored / 10 stable at 30 fps are 3 / 2 at 5 fps
        // (its 1 s of frame time does not change).
        var verification = Verification(rules: VerificationRules(), decisions: rules)
        var decider = DecisionMachine(configuration: rules)
        var ended: VerificationResult?
        var frames = 0
        while ended == nil && frames < 100 {
            let observation = Observation.scored(spoofProbability: 0.1, timeSeconds: Double(frames) / 5)
            ended = verification.observe(
                observation, decision: decider.observe(observation), scores: OpinionScores(vit: 0.1),
                sequence: UInt64(frames))
            frames += 1
        }
        #expect(ended?.outcome == .live)
        #expect(ended?.scoredFrames == 6)  // 1.0 s of frame time at 5 fps (0.0 … 1.0) is the longest rule
    }

    /// A real clip replayed at 5 fps: only the scheduled frames reach the models, the rest are counted as
    /// `rate` (not stale, not busy), every decision carries the share, and none are lost.
    @Test func replayAtAnAnalysisRateSkipsAndCounts() throws {
        let model = try LivenessViT(contentsOf: try TestAssets.modelURL)
        let log = EventLog()
        let pipeline = LivenessPipeline(
            opinions: Opinions(vit: model, pair: nil),
            configuration: .init(decisions: DecisionConfiguration(threshold: model.threshold)), sink: log.sink)
        let clip = LivenessPipelineTests.live
        let location = try TestAssets.file(clip).path
        try pipeline.add(MediaSource(location: location, id: "five"), analysisFramesPerSecond: 5)
        try pipeline.add(MediaSource(location: location, id: "all"), analysisFramesPerSecond: 0)
        #expect(pipeline.waitUntilFinished(timeoutSeconds: 300))
        let total = try FFmpegTool.countFrames(location)
        let all = log.decisions("all")
        let five = log.decisions("five")
        #expect(all.count == total && all.allSatisfy { $0.analysedShare == 1 })
        let duration = all.last!.presentationTimeSeconds - all.first!.presentationTimeSeconds
        // One frame per 0.2 s of frame time, from the first.
        #expect(abs(Double(five.count) - (duration * 5 + 1)) <= 1.5, "\(five.count) decisions over \(duration) s")
        let gaps = zip(five.dropFirst(), five).map { $0.presentationTimeSeconds - $1.presentationTimeSeconds }
        #expect(gaps.allSatisfy { $0 > 0.15 && $0 < 0.25 }, "\(gaps)")
        // The analysed frames are the same frames, scored the same, as at every frame (within the 4e-8
        // measured between batch sizes: the other lane's frames share its batches).
        let bySequence = Dictionary(uniqueKeysWithValues: all.map { ($0.sequence, $0) })
        for decision in five {
            let other = try #require(bySequence[decision.sequence]?.scores.vit)
            #expect(abs(try #require(decision.scores.vit) - other) < 1e-6)
        }
        #expect(five.dropFirst(3).allSatisfy { $0.analysedShare > 0.1 && $0.analysedShare < 0.25 })
        let statistics = try #require(pipeline.statistics()["five"])
        #expect(statistics.framesIn == total)
        #expect(statistics.processed == five.count)
        #expect(statistics.droppedRate == total - five.count)
        #expect(statistics.droppedStale == 0 && statistics.droppedBusy == 0)
        #expect(log.sourceEvents("five").last == "ended end of file")
    }
}
