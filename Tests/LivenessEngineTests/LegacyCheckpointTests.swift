import Foundation
import LivenessEngine
import TestSupport
import Testing

/// Legacy (pre-zip) torch.save files: the published MiniFASNet weights load, and crafted damaged or
/// malicious files are refused with a specific error, without crashing and without executing anything.
@Suite struct LegacyCheckpointTests {
    static let v2 = "models/silent-face/2.7_80x80_MiniFASNetV2.pth"
    static let v1se = "models/silent-face/4_0_0_80x80_MiniFASNetV1SE.pth"

    func sha256(_ url: URL) throws -> String {
        String(try Program.run("/usr/bin/sha256sum", [url.path]).prefix(64))
    }

    @Test(arguments: [
        (v2, "a5eb02e1843f19b5386b953cc4c9f011c3f985d0ee2bb9819eea9a142099bec0", 284, 50),
        (v1se, "84ee1d37d96894d5e82de5a57df044ef80a58be2b218b5ed7cdfd875ec2f5990", 314, 56),
    ])
    func publishedFileLoads(file: String, sha256: String, floatCount: Int, integerCount: Int) throws {
        let url = try TestAssets.file(file)
        let digest = try self.sha256(url)
        #expect(digest == sha256)
        let checkpoint = try TorchCheckpoint(contentsOf: url)
        #expect(checkpoint.stateDict.count == floatCount)
        #expect(checkpoint.stateDictKeys.count == floatCount)
        #expect(checkpoint.integerTensors.count == integerCount)
        #expect(checkpoint.stateDictKeys.first == "module.conv1.conv.weight")
        #expect(checkpoint.stateDict["module.conv1.conv.weight"]?.shape == [32, 3, 3, 3])
        #expect(checkpoint.stateDict["module.prob.weight"]?.shape == [3, 128])
        #expect(checkpoint.stateDict["module.linear.weight"]?.shape == [128, 512])
        #expect(checkpoint.stateDict["module.conv_6_dw.conv.weight"]?.shape == [512, 1, 5, 5])
        #expect(checkpoint.integerTensors["module.conv1.bn.num_batches_tracked"]?.count == 1)
        #expect(checkpoint.integerTensors.keys.allSatisfy { $0.hasSuffix(".num_batches_tracked") })
        let values = checkpoint.stateDict.values.flatMap(\.values)
        #expect(values.allSatisfy { $0.isFinite })
        // Batch-norm variances are positive: a sign that bytes were read at the right offsets.
        let variances = checkpoint.stateDict.filter { $0.key.hasSuffix("running_var") }
        #expect(!variances.isEmpty && variances.values.allSatisfy { $0.values.allSatisfy { $0 > 0 } })
    }
}
