import LivenessEval
import Testing

@Suite struct PADMetricsTests {
    /// Worked by hand: live {0.1, 0.4, 0.35, 0.8}, attacks {0.9, 0.35, 0.6}. Pairs (attack > live):
    /// 0.9 beats all 4; 0.35 beats 0.1, ties 0.35 (½), loses to 0.4 and 0.8; 0.6 beats 0.1, 0.4, 0.35.
    /// U = 4 + 1.5 + 3 = 8.5 of 12 → AUC 0.70833. Threshold 0.4: attacks below it 1/3 (APCER);
    /// live at or above it 2/4 (BPCER: 0.4 and 0.8).
    @Test func handWorkedExample() {
        let metrics = PADMetrics(live: [0.1, 0.4, 0.35, 0.8], attacks: [0.9, 0.35, 0.6], threshold: 0.4)
        #expect(abs(metrics.areaUnderCurve! - 8.5 / 12) < 1e-12)
        #expect(metrics.attackErrorRate == 1.0 / 3)
        #expect(metrics.bonaFideErrorRate == 0.5)
        #expect(metrics.livenessCount == 4 && metrics.attackCount == 3)
    }

    @Test func perfectSeparationAndMissingClasses() {
        #expect(PADMetrics(live: [0.1, 0.2], attacks: [0.8, 0.9], threshold: 0.5).areaUnderCurve == 1)
        #expect(PADMetrics(live: [0.9], attacks: [0.1], threshold: 0.5).areaUnderCurve == 0)
        #expect(PADMetrics(live: [], attacks: [0.1], threshold: 0.5).areaUnderCurve == nil)
        #expect(median([3, 1, 2]) == 2 && median([4, 1, 2, 3]) == 2.5 && median([]) == nil)
    }
}
