import LivenessEngine
import Testing

@Suite struct DecisionMachineTests {
    func machine(_ change: (inout DecisionConfiguration) -> Void = { _ in }) -> DecisionMachine {
        var configuration = DecisionConfiguration(threshold: 0.5)
        configuration.hysteresis = 0.1
        configuration.windowFrames = 5
        configuration.minimumScoredFrames = 3
        configuration.windowSeconds = 10
        configuration.faceLostResetSeconds = 1
        change(&configuration)
        return DecisionMachine(configuration: configuration)
    }

    /// Feeds scores at 10 fps from `start`; returns the states.
    func feed(_ machine: inout DecisionMachine, _ scores: [Double], start: Double = 0) -> [LivenessState] {
        scores.enumerated().map {
            machine.observe(.scored(spoofProbability: $1, timeSeconds: start + Double($0) * 0.1)).state
        }
    }

    @Test func decidingUntilEnoughFramesThenVerdict() {
        var machine = self.machine()
        #expect(self.feed(&machine, [0.9, 0.9, 0.9, 0.9]) == [.deciding, .deciding, .spoof, .spoof])
        var live = self.machine()
        let decision = live.observe(.scored(spoofProbability: 0.1, timeSeconds: 0))
        #expect(decision.state == .deciding && decision.reason == "1 of 3 frames scored" && decision.windowCount == 1)
        #expect(self.feed(&live, [0.1, 0.1], start: 0.1) == [.deciding, .live])
    }

    /// A smoothed score inside [threshold − h, threshold + h) keeps the verdict; crossing it flips.
    @Test func hysteresisKeepsTheVerdictInsideTheBand() {
        var machine = self.machine()
        _ = self.feed(&machine, [0.2, 0.2, 0.2])
        #expect(machine.currentState == .live)
        // Mean creeps up into the band (0.4…0.6): still live.
        let inBand = self.feed(&machine, [0.55, 0.55, 0.55], start: 1)
        #expect(inBand == [.live, .live, .live])  // window means 0.29, 0.34, 0.41: the last inside the band
        // Well above the band: spoof, and `changed` says so once.
        var changes = 0
        for (index, score) in [0.95, 0.95, 0.95, 0.95].enumerated() {
            let decision = machine.observe(.scored(spoofProbability: score, timeSeconds: 2 + Double(index) * 0.1))
            if decision.changed { changes += 1 }
        }
        #expect(machine.currentState == .spoof && changes == 1)
    }

    @Test func firstVerdictNeedsToLeaveTheBand() {
        var machine = self.machine()
        #expect(self.feed(&machine, [0.5, 0.52, 0.48, 0.5]) == [.deciding, .deciding, .deciding, .deciding])
        let decision = machine.observe(.scored(spoofProbability: 0.5, timeSeconds: 1))
        #expect(decision.reason == "score inside the hysteresis band")
    }

    @Test func windowIsBoundedInFramesAndSeconds() {
        var frames = self.machine()
        _ = self.feed(&frames, [1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
        #expect(frames.smoothed() == 0)  // only the last 5 remain
        var seconds = self.machine { $0.windowSeconds = 0.25 }
        _ = self.feed(&seconds, [1, 1, 1, 0])  // t = 0, 0.1, 0.2, 0.3: t = 0 has left
        #expect(seconds.smoothed() == 2.0 / 3.0)
    }

    @Test func smoothingModes() {
        var median = self.machine { $0.smoothing = .median }
        _ = self.feed(&median, [0.1, 0.9, 0.2, 0.8, 0.3])
        #expect(median.smoothed() == 0.3)
        var ema = self.machine { $0.smoothing = .exponential(alpha: 0.5) }
        _ = self.feed(&ema, [0.0, 1.0, 1.0])
        #expect(ema.smoothed() == 0.75)
        var mean = self.machine()
        _ = self.feed(&mean, [0.0, 1.0, 0.5])
        #expect(mean.smoothed() == 0.5)
    }

    /// A short detector gap keeps the verdict; a longer absence clears the window → no_face.
    @Test func faceLostResetsAfterTheSetTime() {
        var machine = self.machine()
        _ = self.feed(&machine, [0.9, 0.9, 0.9])
        let gap = machine.observe(.noFace(timeSeconds: 0.8))
        #expect(gap.state == .spoof && gap.windowCount == 3 && gap.reason == "no face in view" && !gap.changed)
        let gone = machine.observe(.noFace(timeSeconds: 1.5))
        #expect(gone.state == .noFace && gone.windowCount == 0 && gone.changed && gone.smoothedScore == nil)
        // The next person starts from scratch.
        #expect(self.feed(&machine, [0.1, 0.1, 0.1], start: 2) == [.deciding, .deciding, .live])
    }

    @Test func unusableIsAReasonNeverAVerdict() {
        var machine = self.machine()
        let first = machine.observe(.unusable(reason: "face too dark", timeSeconds: 0))
        #expect(first.state == .unusable && first.reason == "face too dark" && first.rawScore == nil)
        _ = self.feed(&machine, [0.1, 0.1, 0.1], start: 0.1)
        #expect(machine.currentState == .live)
        // One blurred frame in a live session does not change the verdict.
        #expect(machine.observe(.unusable(reason: "face too blurred", timeSeconds: 0.5)).state == .live)
        #expect(machine.observe(.unusable(reason: "face too blurred", timeSeconds: 2)).state == .unusable)
    }

    @Test func resetStartsAFreshWindow() {
        var machine = self.machine()
        _ = self.feed(&machine, [0.9, 0.9, 0.9])
        machine.reset()
        #expect(machine.currentState == .deciding && machine.smoothed() == nil)
        #expect(self.feed(&machine, [0.1, 0.1, 0.1], start: 1) == [.deciding, .deciding, .live])
    }

    /// Issue 12: after a reset the next decision says so — `changed` with reason `reset` — even when the
    /// state was `deciding` before and stays `deciding` (a subscriber to changes saw nothing before).
    @Test func resetIsVisibleInTheNextDecision() {
        var machine = self.machine()
        _ = self.feed(&machine, [0.9])
        #expect(machine.currentState == .deciding)
        machine.reset()
        let first = machine.observe(.scored(spoofProbability: 0.9, timeSeconds: 1))
        #expect(first.state == .deciding && first.changed && first.reason == "reset" && first.windowCount == 1)
        let second = machine.observe(.scored(spoofProbability: 0.9, timeSeconds: 1.1))
        #expect(second.state == .deciding && !second.changed && second.reason == "2 of 3 frames scored")
        // Without a reset, nothing is announced.
        var plain = self.machine()
        #expect(!plain.observe(.scored(spoofProbability: 0.9, timeSeconds: 0)).changed)
    }
}
