import Foundation
import TestSupport
import Testing

@testable import LivenessEngine

/// `Opinions.score(…, concurrently: true)` runs the ViT and the MiniFASNet pair on two threads: the scores
/// must be the same bits as one after the other, for batches of one and several (gathered), and across
/// batch chunks; and each opinion's score must be that opinion's alone (no buffer shared by mistake).
@Suite struct OpinionsConcurrencyTests {
    @Test func bothOpinionsAtOnceGiveTheSameBitsAsOneAfterTheOther() throws {
        // As the pipeline runs OpenBLAS (LivenessPipeline.init): one thread per call. With more, a call's
        // split depends on whether another call is running, and the ViT's sums with it (≈ 1e-8).
        BLAS.setThreadCount(1)
        let vit = try LivenessViT(contentsOf: try TestAssets.modelURL)
        let pair = try MiniFASNetPair(directory: try TestAssets.file("models/silent-face"))
        let both = Opinions(vit: vit, pair: pair)
        var generator = DepthwiseKernelTests.SeededGenerator(state: 14)
        func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) } }
        let inputs = (0..<5).map { _ in
            Opinions.FaceInput(luma: bytes(224 * 224), pair: bytes(2 * MiniFASNet.inputLength))
        }
        for batch in [1, 2, 5] {
            let faces = Array(inputs.prefix(batch))
            var sequential: [OpinionScores] = []
            var concurrent: [OpinionScores] = []
            both.score(faces, maximumBatch: 3, concurrently: false, into: &sequential)
            both.score(faces, maximumBatch: 3, concurrently: true, into: &concurrent)
            #expect(sequential.count == batch && concurrent.count == batch)
            for (a, b) in zip(sequential, concurrent) {
                #expect(a.vit != nil && a.minifasnet != nil)
                #expect(a.vit?.bitPattern == b.vit?.bitPattern, "batch \(batch): ViT")
                #expect(a.minifasnet?.bitPattern == b.minifasnet?.bitPattern, "batch \(batch): pair")
            }
            // Each score is its own opinion's: the same as that opinion alone.
            var vitAlone: [OpinionScores] = []
            var pairAlone: [OpinionScores] = []
            Opinions(vit: vit, pair: nil).score(faces, maximumBatch: 3, into: &vitAlone)
            Opinions(vit: nil, pair: pair).score(
                faces.map { Opinions.FaceInput(pair: $0.pair) }, maximumBatch: 3, into: &pairAlone)
            for index in 0..<batch {
                #expect(vitAlone[index].vit?.bitPattern == concurrent[index].vit?.bitPattern)
                #expect(pairAlone[index].minifasnet?.bitPattern == concurrent[index].minifasnet?.bitPattern)
            }
        }
    }
}
