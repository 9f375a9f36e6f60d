/// The architecture of the face-liveness ViT, as the checkpoint's `cfg["model"]` describes it.
///
/// Encoder layers are PyTorch `nn.TransformerEncoderLayer` defaults: post-norm, ReLU,
/// feed-forward width 4 × d_model, LayerNorm eps 1e-5 (docs/ARCHITECTURE.md, "Model facts").
public struct ViTConfig: Sendable, Equatable {
    public var imageSize: Int = 224
    public var patchSize: Int = 16
    public var modelWidth: Int = 128
    public var headCount: Int = 4
    public var layerCount: Int = 2
    public var classCount: Int = 2
    public var layerNormEpsilon: Float = 1e-5

    public init() {}

    /// The input side the frame pipeline feeds (the preprocessor's 224 × 224 crop); a model trained for
    /// another size would load and then trap at the first frame.
    public static let supportedImageSize = 224

    public var feedForwardWidth: Int { 4 * self.modelWidth }
    public var patchesPerSide: Int { self.imageSize / self.patchSize }
    public var patchCount: Int { self.patchesPerSide * self.patchesPerSide }
    public var tokenCount: Int { self.patchCount + 1 }
    public var headWidth: Int { self.modelWidth / self.headCount }
    /// Values in one patch across the 3 input channels.
    public var patchLength: Int { 3 * self.patchSize * self.patchSize }

    /// Reads `cfg["model"]`; keys that are absent keep the defaults above. `requiredImageSize` is the input
    /// side the caller will feed (nil only for callers that build their own inputs of `imageSize`).
    public init(
        checkpointConfig: PickleValue?, path: String, requiredImageSize: Int? = ViTConfig.supportedImageSize
    ) throws {
        self.init()
        guard let model = checkpointConfig?["model"] else { return }
        func integer(_ key: String, _ current: Int) throws -> Int {
            guard let value = model[key] else { return current }
            guard let number = value.intValue, number > 0 else {
                throw CheckpointError(
                    code: .badConfig, path: path, message: "cfg.model.\(key) is not a positive integer")
            }
            return number
        }
        self.imageSize = try integer("image_size", self.imageSize)
        self.patchSize = try integer("patch_size", self.patchSize)
        self.modelWidth = try integer("d_model", self.modelWidth)
        self.headCount = try integer("nhead", self.headCount)
        self.layerCount = try integer("num_layers", self.layerCount)
        self.classCount = try integer("num_classes", self.classCount)
        guard self.imageSize % self.patchSize == 0, self.modelWidth % self.headCount == 0, self.layerCount <= 64,
            self.modelWidth <= 4096, self.imageSize <= 1024
        else {
            throw CheckpointError(
                code: .badConfig, path: path,
                message: "cfg.model describes an inconsistent ViT (image \(self.imageSize), patch \(self.patchSize), "
                    + "d_model \(self.modelWidth), heads \(self.headCount))")
        }
        // The score is softmax(logits)[1]: live and spoof, nothing else.
        guard self.classCount == 2 else {
            throw CheckpointError(
                code: .badConfig, path: path,
                message: "cfg.model.num_classes is \(self.classCount); only the two-class (live, spoof) model is "
                    + "supported. Use the published face-liveness checkpoint.")
        }
        if let requiredImageSize, self.imageSize != requiredImageSize {
            throw CheckpointError(
                code: .badConfig, path: path,
                message: "cfg.model.image_size is \(self.imageSize), but livenessd feeds the model "
                    + "\(requiredImageSize) × \(requiredImageSize) crops, so only image_size \(requiredImageSize) is "
                    + "supported. Use the published checkpoint or retrain at \(requiredImageSize).")
        }
    }

    /// Every state-dict key this architecture has, with its shape, in checkpoint order.
    public var expectedTensors: [(key: String, shape: [Int])] {
        let width = self.modelWidth
        var tensors: [(String, [Int])] = [
            ("pos_embed", [1, self.tokenCount, width]),
            ("cls_token", [1, 1, width]),
            ("patch_embed.proj.weight", [width, 3, self.patchSize, self.patchSize]),
            ("patch_embed.proj.bias", [width]),
        ]
        for layer in 0..<self.layerCount {
            let prefix = "encoder.transformer_encoder.layers.\(layer)."
            tensors += [
                (prefix + "self_attn.in_proj_weight", [3 * width, width]),
                (prefix + "self_attn.in_proj_bias", [3 * width]),
                (prefix + "self_attn.out_proj.weight", [width, width]),
                (prefix + "self_attn.out_proj.bias", [width]),
                (prefix + "linear1.weight", [self.feedForwardWidth, width]),
                (prefix + "linear1.bias", [self.feedForwardWidth]),
                (prefix + "linear2.weight", [width, self.feedForwardWidth]),
                (prefix + "linear2.bias", [width]),
                (prefix + "norm1.weight", [width]),
                (prefix + "norm1.bias", [width]),
                (prefix + "norm2.weight", [width]),
                (prefix + "norm2.bias", [width]),
            ]
        }
        tensors += [("head.weight", [self.classCount, width]), ("head.bias", [self.classCount])]
        return tensors
    }

    /// Checks a state dict against this architecture: every missing, extra or mis-shaped tensor is named.
    public func validate(stateDict: [String: Tensor], path: String) throws {
        var problems: [String] = []
        let expected = self.expectedTensors
        for (key, shape) in expected {
            guard let tensor = stateDict[key] else {
                problems.append("missing tensor '\(key)' (expected shape \(Self.format(shape)))")
                continue
            }
            if tensor.shape != shape {
                problems.append(
                    "tensor '\(key)' has shape \(Self.format(tensor.shape)), expected \(Self.format(shape))")
            }
        }
        let expectedKeys = Set(expected.map(\.key))
        for key in stateDict.keys.sorted() where !expectedKeys.contains(key) {
            problems.append(
                "unexpected tensor '\(key)' (shape \(Self.format(stateDict[key]!.shape))) is not part of this ViT")
        }
        guard problems.isEmpty else {
            throw CheckpointError(
                code: .architectureMismatch, path: path,
                message: "the weights do not match the architecture in cfg.model: " + problems.joined(separator: "; "))
        }
        // NaN or infinite weights make every score NaN: refuse them here rather than judge with them.
        for (key, _) in expected {
            let bad = stateDict[key]!.values.reduce(0) { $1.isFinite ? $0 : $0 + 1 }
            if bad > 0 {
                throw CheckpointError(
                    code: .badTensor, path: path,
                    message: "tensor '\(key)' holds \(bad) values that are not finite (NaN or infinity); "
                        + "the model file is damaged: reinstall it (scripts/setup.sh)")
            }
        }
    }

    static func format(_ shape: [Int]) -> String { "(" + shape.map(String.init).joined(separator: ", ") + ")" }
}
