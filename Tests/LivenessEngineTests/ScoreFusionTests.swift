import Foundation
import LivenessEngine
import Testing

/// The fused score: weighted mean of the opinions' logits, through the logistic function.
@Suite struct ScoreFusionTests {
    @Test func oneOpinionIsItsOwnProbability() throws {
        let fusion = ScoreFusion()
        for p in [1e-6, 0.01, 0.1199, 0.5, 0.73, 0.999] {
            #expect(abs(try #require(fusion.fuse(OpinionScores(vit: p))) - p) < 1e-12)
            #expect(abs(try #require(fusion.fuse(OpinionScores(minifasnet: p))) - p) < 1e-12)
        }
        #expect(fusion.fuse(OpinionScores()) == nil)
    }

    /// Equal weights: logit(0.9) = 2.197, logit(0.2) = −1.386 → mean 0.405 → 0.6.
    @Test func equalWeightsAverageTheLogits() throws {
        let fused = try #require(ScoreFusion().fuse(OpinionScores(vit: 0.9, minifasnet: 0.2)))
        let expected = 1 / (1 + exp(-((log(0.9 / 0.1) + log(0.2 / 0.8)) / 2)))
        #expect(abs(fused - expected) < 1e-12)
        #expect(abs(fused - 0.6) < 1e-12)  // (log 9 − log 4) / 2 = log 1.5 → 1.5 / 2.5
        // Symmetric: opposite opinions of equal strength cancel.
        #expect(abs(try #require(ScoreFusion().fuse(OpinionScores(vit: 0.8, minifasnet: 0.2))) - 0.5) < 1e-12)
    }

    @Test func weightsShiftTheBalance() throws {
        let heavy = ScoreFusion(weights: [.minifasnet: 3])
        let fused = try #require(heavy.fuse(OpinionScores(vit: 0.9, minifasnet: 0.2)))
        let expected = 1 / (1 + exp(-((log(9.0) + 3 * log(0.25)) / 4)))
        #expect(abs(fused - expected) < 1e-12)
        // Weight 0 silences an opinion.
        let vitOnly = ScoreFusion(weights: [.minifasnet: 0])
        #expect(abs(try #require(vitOnly.fuse(OpinionScores(vit: 0.3, minifasnet: 0.99))) - 0.3) < 1e-12)
    }

    /// A saturated model (float32 softmax gives exactly 0 or 1) is clamped to |logit| 16, so it cannot
    /// silence the other opinion completely; a non-finite score never fuses into a verdict.
    @Test func saturationAndNonFiniteScores() throws {
        let saturated = try #require(ScoreFusion().fuse(OpinionScores(vit: 1.0, minifasnet: 0.0)))
        #expect(abs(saturated - 0.5) < 1e-12)
        let certain = try #require(ScoreFusion().fuse(OpinionScores(vit: 1.0, minifasnet: 0.5)))
        #expect(abs(certain - 1 / (1 + exp(-8.0))) < 1e-12)
        #expect(ScoreFusion().fuse(OpinionScores(vit: .nan, minifasnet: 0.5)) == nil)
        #expect(ScoreFusion().fuse(OpinionScores(vit: 0.5, minifasnet: .infinity)) == nil)
        #expect(OpinionScores(vit: .nan, minifasnet: 0.25).finite == OpinionScores(vit: nil, minifasnet: 0.25))
    }
}
