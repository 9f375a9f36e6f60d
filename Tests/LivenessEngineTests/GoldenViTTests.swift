import Foundation
import LivenessEngine
import TestSupport
import Testing

/// The forward pass against PyTorch (../shared/golden/vit, made by reference/make_golden.py).
@Suite struct GoldenViTTests {
    /// A model per test: LivenessViT owns scratch buffers and is not shared across threads.
    static func loadModel() throws -> LivenessViT { try LivenessViT(contentsOf: try TestAssets.modelURL) }

    static func cases() throws -> [String] {
        try TestAssets.files(in: "golden/vit", suffix: ".input.f32").map {
            String($0.lastPathComponent.dropLast(".input.f32".count))
        }
    }

    @Test func goldenCasesArePresent() throws {
        // zeros, ramp, random0 and the seven golden images.
        #expect(try Self.cases().count >= 10)
    }

    /// Logits within 1e-4 absolute of PyTorch, for every golden input, one image at a time.
    @Test(arguments: try GoldenViTTests.cases())
    func logitsMatchPyTorch(_ name: String) throws {
        let model = try Self.loadModel()
        let input = try TestAssets.float32(try TestAssets.file("golden/vit/\(name).input.f32"))
        let expected = try TestAssets.json(try TestAssets.file("golden/vit/\(name).json"))
        let expectedLogits = (expected["logits"] as? [Double] ?? []).map(Float.init)
        var logits = [Float](repeating: .nan, count: 2)
        input.withUnsafeBufferPointer { source in
            logits.withUnsafeMutableBufferPointer {
                model.logits(input: source.baseAddress!, batch: 1, into: $0.baseAddress!)
            }
        }
        #expect(TestAssets.maxAbsDifference(logits, expectedLogits) <= 1e-4, "\(name): \(logits) vs \(expectedLogits)")
        let probability = model.spoofProbabilities(input: input, batch: 1)[0]
        let expectedProbability = expected["spoof_probability"] as? Double ?? .nan
        #expect(abs(probability - expectedProbability) <= 1e-5)
        #expect((probability >= model.threshold ? "SPOOF" : "LIVE") == expected["decision"] as? String)
    }

    /// All cases in one batch give the same logits as one at a time (scratch reuse, strided CLS rows).
    @Test func batchedEqualsSingle() throws {
        let model = try Self.loadModel()
        let names = try Self.cases()
        var batch: [Float] = []
        var single: [Double] = []
        for name in names {
            let input = try TestAssets.float32(try TestAssets.file("golden/vit/\(name).input.f32"))
            batch += input
            single.append(model.spoofProbabilities(input: input, batch: 1)[0])
        }
        let batched = model.spoofProbabilities(input: batch, batch: names.count)
        for (index, name) in names.enumerated() {
            #expect(abs(batched[index] - single[index]) <= 1e-6, "\(name)")
        }
        // A smaller batch after a larger one reuses the scratch buffers.
        let again = model.spoofProbabilities(input: Array(batch.prefix(2 * model.inputLength)), batch: 2)
        #expect(abs(again[0] - single[0]) <= 1e-6 && abs(again[1] - single[1]) <= 1e-6)
    }

    /// Embedding and both encoder layers (all 197 tokens) within 1e-4 of PyTorch for `random0`.
    @Test func intermediatesMatchPyTorch() throws {
        let model = try Self.loadModel()
        let input = try TestAssets.float32(try TestAssets.file("golden/vit/random0.input.f32"))
        let trace = model.trace(input: input)
        let embed = try TestAssets.float32(try TestAssets.file("golden/vit/random0.embed.f32"))
        #expect(embed.count == 197 * 128)
        #expect(TestAssets.maxAbsDifference(trace.embedding, embed) <= 1e-4)
        for layer in 0..<2 {
            let expected = try TestAssets.float32(try TestAssets.file("golden/vit/random0.layer\(layer).f32"))
            let difference = TestAssets.maxAbsDifference(trace.layerOutputs[layer], expected)
            #expect(difference <= 1e-4, "layer \(layer): max abs difference \(difference)")
        }
        // The full-last-layer trace and the CLS-only fast path agree.
        let fast = model.spoofProbabilities(input: input, batch: 1)[0]
        let traced = trace.logits.withUnsafeBufferPointer { LivenessViT.spoofProbability(logits: $0.baseAddress!) }
        #expect(abs(fast - traced) <= 1e-6)
    }

    @Test func checkpointMetadata() throws {
        let model = try Self.loadModel()
        #expect(model.threshold == 0.11989118903875351)
        #expect(model.config == ViTConfig())
    }
}
