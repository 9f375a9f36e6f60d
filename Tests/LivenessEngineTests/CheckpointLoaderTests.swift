import Foundation
import LivenessEngine
import TestSupport
import Testing

/// The checkpoint reader: it loads what torch.save writes and refuses everything else with a
/// message that names the problem, without crashing and without executing anything.
@Suite struct CheckpointLoaderTests {
    func load(_ url: URL) throws -> LivenessViT {
        // The tiny checkpoints here are 32 × 32 and fed through spoofProbabilities(input:).
        try LivenessViT(checkpoint: try TorchCheckpoint(contentsOf: url), path: url.path, requiredImageSize: nil)
    }

    /// A checkpoint for another input size used to load and trap at the first frame (issue 15, M7).
    @Test func imageSizeOtherThan224IsRefusedAtLoad() throws {
        let url = try TestAssets.temporaryDirectory().appendingPathComponent("tiny.pt")
        try TinyCheckpoint.write(to: url)
        expectCheckpointRefusal(.badConfig, ["tiny.pt", "image_size is 32", "224 × 224", "only image_size 224"]) {
            _ = try LivenessViT(contentsOf: url)
        }
        // The same file loads for a caller that feeds 32 × 32 inputs itself.
        _ = try self.load(url)
        #expect(try ViTConfig(checkpointConfig: nil, path: "x.pt") == ViTConfig())
    }

    @Test func realCheckpointExposesStateDictConfigAndThreshold() throws {
        let checkpoint = try TorchCheckpoint(contentsOf: try TestAssets.modelURL)
        #expect(checkpoint.stateDictKeys.count == 30)
        #expect(checkpoint.stateDictKeys.first == "pos_embed")
        #expect(checkpoint.stateDict["patch_embed.proj.weight"]?.shape == [128, 3, 16, 16])
        #expect(checkpoint.threshold == 0.11989118903875351)
        #expect(checkpoint.config?["model"]?["d_model"] == .int(128))
        #expect(checkpoint.config?["project_name"] == .string("face-liveness-transformer"))
    }

    @Test func craftedValidCheckpointLoadsAndRuns() throws {
        let directory = try TestAssets.temporaryDirectory()
        let url = directory.appendingPathComponent("tiny.pt")
        try TinyCheckpoint.write(to: url)
        let model = try self.load(url)
        #expect(model.config.imageSize == 32 && model.config.modelWidth == 8 && model.config.layerCount == 1)
        #expect(model.threshold == 0.25)
        let probability = model.spoofProbabilities(input: [Float](repeating: 0.5, count: model.inputLength), batch: 1)[
            0]
        #expect(probability.isFinite && probability > 0 && probability < 1)
    }

    /// `byteorder` = big: storages are read big-endian and give the same model.
    @Test func bigEndianStoragesAreHonoured() throws {
        let directory = try TestAssets.temporaryDirectory()
        let little = directory.appendingPathComponent("little.pt")
        let big = directory.appendingPathComponent("big.pt")
        try TinyCheckpoint.write(to: little)
        try TinyCheckpoint.write(to: big, bigEndian: true)
        let a = try TorchCheckpoint(contentsOf: little)
        let b = try TorchCheckpoint(contentsOf: big)
        #expect(a.stateDict == b.stateDict)
        #expect(a.stateDict["head.bias"]?.values == [Float(sin(17.0)), Float(sin(18.0))])
    }

    @Test func truncatedFileIsRefused() throws {
        let data = try Data(contentsOf: try TestAssets.modelURL)
        for fraction in [0.5, 0.9, 0.999] {
            let cut = data.prefix(Int(Double(data.count) * fraction))
            expectCheckpointRefusal(.notZip, ["not a complete zip", "truncated"]) {
                _ = try TorchCheckpoint(data: cut, path: "model.pt")
            }
        }
    }

    @Test func truncatedPickleIsRefused() throws {
        let url = try TestAssets.temporaryDirectory().appendingPathComponent("cut.pt")
        let pickle = TinyCheckpoint.pickle(TinyCheckpoint.tensors.map { ($0.0, $0.1, "FloatStorage") })
        try TinyCheckpoint.write(to: url, pickle: Array(pickle.prefix(pickle.count / 2)))
        expectCheckpointRefusal(.pickle, ["data.pkl", "truncated"]) { _ = try self.load(url) }
    }

    @Test func nonZipIsRefused() throws {
        expectCheckpointRefusal(.notZip, ["not a torch.save checkpoint", "zip"]) {
            _ = try TorchCheckpoint(data: Data("model: this is a text file\n".utf8), path: "model.pt")
        }
        expectCheckpointRefusal(.notZip, ["zip"]) { _ = try TorchCheckpoint(data: Data(), path: "empty.pt") }
    }

    @Test func missingFileIsRefused() {
        expectCheckpointRefusal(.unreadable, ["/nonexistent/model.pt", "cannot read"]) {
            _ = try TorchCheckpoint(contentsOf: URL(fileURLWithPath: "/nonexistent/model.pt"))
        }
    }

    @Test func wrongShapeNamesKeyAndBothShapes() throws {
        let url = try TestAssets.temporaryDirectory().appendingPathComponent("shape.pt")
        let tensors = TinyCheckpoint.tensors.map { ($0.0, $0.0 == "head.weight" ? [3, 8] : $0.1, "FloatStorage") }
        try TinyCheckpoint.write(to: url, tensors: tensors)
        expectCheckpointRefusal(.architectureMismatch, ["'head.weight'", "(3, 8)", "(2, 8)"]) { _ = try self.load(url) }
    }

    @Test func missingKeyIsNamed() throws {
        let url = try TestAssets.temporaryDirectory().appendingPathComponent("missing.pt")
        let key = "encoder.transformer_encoder.layers.0.norm2.bias"
        try TinyCheckpoint.write(
            to: url, tensors: TinyCheckpoint.tensors.filter { $0.0 != key }.map { ($0.0, $0.1, "FloatStorage") })
        expectCheckpointRefusal(.architectureMismatch, ["missing tensor '\(key)'", "(8)"]) { _ = try self.load(url) }
    }

    @Test func extraKeyIsNamed() throws {
        let url = try TestAssets.temporaryDirectory().appendingPathComponent("extra.pt")
        let tensors =
            TinyCheckpoint.tensors.map { ($0.0, $0.1, "FloatStorage") } + [("decoder.weight", [4, 4], "FloatStorage")]
        try TinyCheckpoint.write(to: url, tensors: tensors)
        expectCheckpointRefusal(.architectureMismatch, ["unexpected tensor 'decoder.weight'", "(4, 4)"]) {
            _ = try self.load(url)
        }
    }

    @Test func unsupportedDTypeIsNamed() throws {
        let url = try TestAssets.temporaryDirectory().appendingPathComponent("long.pt")
        let tensors = TinyCheckpoint.tensors.map { ($0.0, $0.1, $0.0 == "head.bias" ? "LongStorage" : "FloatStorage") }
        try TinyCheckpoint.write(to: url, tensors: tensors)
        expectCheckpointRefusal(.unsupportedDType, ["'head.bias'", "int64", "float32"]) { _ = try self.load(url) }
    }

    /// A pickle that would run a shell command when loaded by Python's pickle.
    @Test func osSystemPickleIsRefusedAndNothingRuns() throws {
        let directory = try TestAssets.temporaryDirectory()
        let marker = directory.appendingPathComponent("pwned")
        var writer = PickleWriter()
        writer.global("os", "system")
        writer.string("touch \(marker.path)")
        writer.op(0x85)  // TUPLE1
        writer.reduce()
        writer.stop()
        let url = directory.appendingPathComponent("evil.pt")
        try TinyCheckpoint.write(to: url, pickle: writer.bytes)
        expectCheckpointRefusal(.forbiddenGlobal, ["os.system", "refusing to load", "nothing was executed"]) {
            _ = try self.load(url)
        }
        #expect(!FileManager.default.fileExists(atPath: marker.path))
    }

    /// builtins.eval, reached through STACK_GLOBAL (protocol 4) and hidden inside a valid-looking dict.
    @Test func builtinsEvalPickleIsRefused() throws {
        var writer = PickleWriter()
        writer.emptyDict()
        writer.mark()
        writer.string("model")
        writer.string("builtins")
        writer.string("eval")
        writer.op(0x93)  // STACK_GLOBAL
        writer.string("__import__('os').system('id')")
        writer.op(0x85)
        writer.reduce()
        writer.setItems()
        writer.stop()
        let url = try TestAssets.temporaryDirectory().appendingPathComponent("eval.pt")
        try TinyCheckpoint.write(to: url, pickle: writer.bytes)
        expectCheckpointRefusal(.forbiddenGlobal, ["builtins.eval"]) { _ = try self.load(url) }
    }

    @Test func unknownOpcodeIsNamed() throws {
        let url = try TestAssets.temporaryDirectory().appendingPathComponent("opcode.pt")
        try TinyCheckpoint.write(to: url, pickle: [0x80, 0x02, 0x7D, 0xFF, 0x2E])
        expectCheckpointRefusal(.pickle, ["unsupported pickle opcode 0xff", "byte 3"]) { _ = try self.load(url) }
    }

    /// Random corruption of the real data.pkl never crashes the reader: it loads or throws.
    @Test func corruptedPicklesNeverCrash() throws {
        let real = try TorchCheckpoint(contentsOf: try TestAssets.modelURL)
        #expect(!real.stateDictKeys.isEmpty)
        let directory = try TestAssets.temporaryDirectory()
        let pickle = TinyCheckpoint.pickle(TinyCheckpoint.tensors.map { ($0.0, $0.1, "FloatStorage") })
        var generator = SystemRandomNumberGenerator()
        var refused = 0
        for trial in 0..<60 {
            var mutated = pickle
            for _ in 0..<3 {
                mutated[Int.random(in: 2..<mutated.count, using: &generator)] = UInt8.random(
                    in: 0...255, using: &generator)
            }
            let url = directory.appendingPathComponent("fuzz\(trial).pt")
            try TinyCheckpoint.write(to: url, pickle: mutated)
            do { _ = try self.load(url) } catch is CheckpointError { refused += 1 }
        }
        #expect(refused > 0)
    }

    /// M5: the checkpoint's own threshold must be a probability strictly between 0 and 1 (7 made every
    /// face LIVE, −1 every face SPOOF); a checkpoint without one is refused, not given 0.5.
    @Test(arguments: [7.0, -1.0, 0.0, 1.0, Double.nan, Double.infinity])
    func thresholdOutsideTheOpenUnitIntervalIsRefused(_ threshold: Double) throws {
        let url = try TestAssets.temporaryDirectory().appendingPathComponent("threshold.pt")
        let tensors = TinyCheckpoint.tensors.map { ($0.0, $0.1, "FloatStorage") }
        try TinyCheckpoint.write(
            to: url, tensors: tensors, pickle: TinyCheckpoint.pickle(tensors, threshold: threshold))
        expectCheckpointRefusal(.badConfig, ["threshold", "\(threshold)", "between 0 and 1"]) { _ = try self.load(url) }
    }

    @Test func missingThresholdIsRefused() throws {
        let url = try TestAssets.temporaryDirectory().appendingPathComponent("nothreshold.pt")
        let tensors = TinyCheckpoint.tensors.map { ($0.0, $0.1, "FloatStorage") }
        try TinyCheckpoint.write(to: url, tensors: tensors, pickle: TinyCheckpoint.pickle(tensors, threshold: nil))
        expectCheckpointRefusal(.badConfig, ["no threshold"]) { _ = try self.load(url) }
        let valid = url.deletingLastPathComponent().appendingPathComponent("threshold075.pt")
        try TinyCheckpoint.write(to: valid, tensors: tensors, pickle: TinyCheckpoint.pickle(tensors, threshold: 0.75))
        #expect(try self.load(valid).threshold == 0.75)
    }
}
