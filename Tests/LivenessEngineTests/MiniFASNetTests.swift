import Foundation
import TestSupport
import Testing

@testable import LivenessEngine

/// MiniFASNetV2 / V1SE built from the published .pth against ONNX Runtime on the shipped conversions
/// (../shared/golden/silentface, made by reference/make_golden_silentface.py).
@Suite(.serialized) struct MiniFASNetTests {
    static let modelNames = ["2.7_80x80_MiniFASNetV2", "4_0_0_80x80_MiniFASNetV1SE"]

    static func stateDict(_ name: String) throws -> [String: Tensor] {
        try TorchCheckpoint(contentsOf: try TestAssets.file("models/silent-face/\(name).pth")).stateDict
    }

    static func model(_ name: String) throws -> MiniFASNet {
        try MiniFASNet(stateDict: try Self.stateDict(name), path: name + ".pth")
    }

    static func cases() throws -> [String] {
        try TestAssets.files(in: "golden/silentface", suffix: ".json").map { $0.lastPathComponent }
            .filter { !$0.hasPrefix("random0.") }.map { String($0.dropLast(".json".count)) }
    }

    static func crop(_ caseName: String, _ model: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: try TestAssets.file("golden/silentface/\(caseName).\(model).crop.bgr")))
    }

    @Test func variantsAndChannelsComeFromTheStateDict() throws {
        let v2 = try Self.model(Self.modelNames[0])
        let v1se = try Self.model(Self.modelNames[1])
        #expect(v2.variant == .v2)
        #expect(v1se.variant == .v1se)
        #expect(v2.blocks.allSatisfy { $0.squeeze == nil })
        #expect(
            v1se.blocks.filter { $0.squeeze != nil }.map(\.name) == [
                "conv_3.model.3", "conv_4.model.5", "conv_5.model.1",
            ])
        #expect(v2.featureCount == 512 && v2.hiddenCount == 128)
    }

    @Test(arguments: modelNames) func randomInputMatchesEveryBlockAndTheLogits(name: String) throws {
        let net = try Self.model(name)
        let input = try TestAssets.float32(try TestAssets.file("golden/silentface/random0.\(name).input.f32"))
        let metadata = try TestAssets.json(try TestAssets.file("golden/silentface/random0.\(name).json"))
        let trace = net.trace(input: input)
        let expectedLogits = (metadata["logits"] as? [Double] ?? []).map(Float.init)
        let logitError = TestAssets.maxAbsDifference(trace.logits, expectedLogits)
        #expect(logitError <= 1e-4, "\(name) logits \(trace.logits) vs \(expectedLogits)")
        let shapes = metadata["blocks"] as? [String: [Int]] ?? [:]
        for block in MiniFASNet.traceBlocks {
            let expected = try TestAssets.float32(try TestAssets.file("golden/silentface/random0.\(name).\(block).f32"))
            #expect(shapes[block]?.reduce(1, *) == expected.count)
            guard let actual = trace.blocks[block], actual.count == expected.count else {
                Issue.record("\(name) \(block): \(trace.blocks[block]?.count ?? 0) values, expected \(expected.count)")
                continue
            }
            let largest = expected.reduce(0) { max($0, abs($1)) }
            let error = TestAssets.maxAbsDifference(actual, expected)
            #expect(error <= 1e-4 * largest, "\(name) \(block): max error \(error), largest \(largest)")
        }
        // The same image through the batch entry point gives the traced logits.
        var logits = [Float](repeating: 0, count: 3)
        net.logits(input: input, batch: 1, into: &logits)
        #expect(TestAssets.maxAbsDifference(logits, trace.logits) <= 1e-6)
    }

    @Test func imageCasesMatchLogitsAndSpoofProbability() throws {
        let pair = try MiniFASNetPair(v2: try Self.model(Self.modelNames[0]), v1se: try Self.model(Self.modelNames[1]))
        let cases = try Self.cases()
        #expect(cases.count >= 8)
        var worst: Float = 0
        for caseName in cases {
            let metadata = try TestAssets.json(try TestAssets.file("golden/silentface/\(caseName).json"))
            let models = metadata["models"] as? [[String: Any]] ?? []
            #expect(models.count == 2)
            var logits: [[Float]] = []
            for (index, net) in [pair.v2, pair.v1se].enumerated() {
                let name = Self.modelNames[index]
                let entry = models.first { $0["name"] as? String == name } ?? [:]
                #expect(entry["scale"] as? Double == MiniFASNetPair.scales[index])
                let expected = (entry["logits"] as? [Double] ?? []).map(Float.init)
                let actual = net.logits(bgrCrop: try Self.crop(caseName, name))
                let error = TestAssets.maxAbsDifference(actual, expected)
                worst = max(worst, error)
                #expect(error <= 1e-3, "\(caseName) \(name): \(actual) vs \(expected)")
                logits.append(actual)
            }
            let probability = MiniFASNetPair.spoofProbability(v2Logits: logits[0], v1seLogits: logits[1])
            let expected = metadata["spoof_probability"] as? Double ?? .nan
            #expect(abs(probability - expected) <= 0.002, "\(caseName): spoof \(probability) vs \(expected)")
            let direct = pair.spoofProbability(
                v2Crop: try Self.crop(caseName, Self.modelNames[0]),
                v1seCrop: try Self.crop(caseName, Self.modelNames[1]))
            #expect(abs(direct - probability) <= 1e-12)
        }
        print("MiniFASNet image cases: worst logit error \(worst)")
    }

    @Test(arguments: modelNames) func batchEqualsOneAtATime(name: String) throws {
        let net = try Self.model(name)
        let cases = try Self.cases()
        var crops: [UInt8] = []
        for caseName in cases { crops += try Self.crop(caseName, name) }
        var batched = [Float](repeating: .nan, count: 3 * cases.count)
        net.logits(bgrCrops: crops, batch: cases.count, into: &batched)
        for (index, caseName) in cases.enumerated() {
            let single = net.logits(bgrCrop: try Self.crop(caseName, name))
            #expect(TestAssets.maxAbsDifference(Array(batched[3 * index..<3 * index + 3]), single) <= 1e-5)
        }
        // The float entry point on the same crops agrees with the byte one.
        var planar = [Float](repeating: 0, count: MiniFASNet.inputLength * cases.count)
        crops.withUnsafeBufferPointer { bytes in
            planar.withUnsafeMutableBufferPointer { floats in
                for index in 0..<cases.count {
                    MiniFASNet.planar(
                        bgr: bytes.baseAddress! + index * MiniFASNet.inputLength,
                        into: floats.baseAddress! + index * MiniFASNet.inputLength)
                }
            }
        }
        var fromFloats = [Float](repeating: .nan, count: 3 * cases.count)
        net.logits(input: planar, batch: cases.count, into: &fromFloats)
        #expect(TestAssets.maxAbsDifference(fromFloats, batched) <= 1e-6)
    }

    @Test func pairSharesOneScratchSizedToTheLargerNeeds() throws {
        let v2 = try Self.model(Self.modelNames[0])
        let v1se = try Self.model(Self.modelNames[1])
        let alone = v2.scratch.floatCount + v1se.scratch.floatCount
        let pair = try MiniFASNetPair(v2: v2, v1se: v1se)
        #expect(pair.v2.scratch === pair.v1se.scratch)
        let shared = pair.v2.scratch.floatCount
        print(
            "MiniFASNet scratch: \(alone) floats as two, \(shared) shared; needs \(v2.scratchNeeds), "
                + "\(v1se.scratchNeeds)")
        #expect(shared < alone)
        // The expansion runs in channel groups: no buffer holds conv_23's whole 103 × 40 × 40 expansion.
        #expect(v2.scratchNeeds.expanded <= max(v2.scratchNeeds.activation, 27 * 40 * 40))
    }

    @Test func wrongShapesAreRefusedNamingTheKey() throws {
        let original = try Self.stateDict(Self.modelNames[1])
        func refusal(_ stateDict: [String: Tensor]) -> CheckpointError? {
            do {
                _ = try MiniFASNet(stateDict: stateDict, path: "edited.pth")
                return nil
            } catch let error as CheckpointError {
                return error
            } catch {
                return nil
            }
        }
        var dropped = original
        dropped["module.conv_4.model.2.conv_dw.bn.running_var"] = nil
        let missing = refusal(dropped)
        #expect(missing?.code == .architectureMismatch)
        #expect(
            missing?.message.contains("module.conv_4.model.2.conv_dw.bn.running_var") == true,
            "\(String(describing: missing))")

        var resized = original
        resized["module.conv_34.project.conv.weight"] = Tensor(
            shape: [128, 230, 1, 1], values: .init(repeating: 0, count: 128 * 230))
        let misshapen = refusal(resized)
        #expect(misshapen?.code == .architectureMismatch)
        #expect(
            misshapen?.message.contains("module.conv_34.project.conv.weight") == true,
            "\(String(describing: misshapen))")

        // A residual block whose project does not give back its input channels cannot add them.
        var narrowed = original
        narrowed["module.conv_5.model.0.project.conv.weight"] = Tensor(
            shape: [127, 26, 1, 1], values: .init(repeating: 0, count: 127 * 26))
        #expect(refusal(narrowed)?.message.contains("module.conv_5.model.0.project.conv.weight") == true)

        var extra = original
        extra["module.conv_3.model.1.se_module.fc1.weight"] = Tensor(
            shape: [16, 64, 1, 1], values: .init(repeating: 0, count: 16 * 64))
        #expect(refusal(extra)?.message.contains("module.conv_3.model.1.se_module.fc1.weight") == true)

        let prob = refusal(original.filter { !$0.key.hasPrefix("module.prob") })
        #expect(prob?.message.contains("module.prob.weight") == true)
    }

    @Test func pairHelpers() {
        #expect(MiniFASNetPair.scales == [2.7, 4.0])
        #expect(MiniFASNetPair.publishedSHA256.count == 2)
        #expect(MiniFASNetPair.logit(0.5) == 0)
        #expect(MiniFASNetPair.logit(0).isFinite && MiniFASNetPair.logit(1).isFinite)
        #expect(MiniFASNetPair.logit(1) > 13 && MiniFASNetPair.logit(0) < -13)
        let certain: [Float] = [0, 100, 0]
        let unsure: [Float] = [0, 0, 0]
        #expect(abs(MiniFASNet.realProbability(logits: certain) - 1) < 1e-12)
        #expect(
            abs(MiniFASNetPair.spoofProbability(v2Logits: certain, v1seLogits: unsure) - (1 - (1 + 1.0 / 3) / 2))
                < 1e-12)
    }
}
