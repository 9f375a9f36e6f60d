import Foundation

/// Float storage owned by exactly one value and freed in `deinit`; grows only when asked for more.
final class FloatBuffer {
    private(set) var pointer: UnsafeMutablePointer<Float>
    private(set) var capacity: Int

    init(capacity: Int) {
        self.capacity = max(capacity, 1)
        self.pointer = .allocate(capacity: self.capacity)
        self.pointer.initialize(repeating: 0, count: self.capacity)
    }

    convenience init(_ values: [Float]) {
        self.init(capacity: values.count)
        values.withUnsafeBufferPointer { self.pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    func reserve(_ count: Int) {
        guard count > self.capacity else { return }
        self.pointer.deallocate()
        self.capacity = count
        self.pointer = .allocate(capacity: count)
        self.pointer.initialize(repeating: 0, count: count)
    }

    deinit { self.pointer.deallocate() }
}

/// The face-liveness Vision Transformer on OpenBLAS.
///
/// Architecture (docs/ARCHITECTURE.md): Conv2d(3, D, 16, stride 16) patch embedding, CLS token,
/// learned position embedding, N post-norm ReLU encoder layers (nn.TransformerEncoderLayer
/// defaults), Linear(D, 2) on the CLS token; softmax index 1 is the spoof probability.
///
/// Not thread-safe: one instance per inference thread. Scratch buffers are sized for the largest
/// batch seen so far and reused, so steady-state inference allocates nothing.
public final class LivenessViT {
    /// SHA-256 of the published checkpoint (face-liveness-vit release v1.0.0, `model.pt`): `run`
    /// refuses another file unless the config names its digest (a bit flipped on an SD card once
    /// made every attack LIVE without a word).
    public static let publishedSHA256 = "292ea6b17597c0eb7fb08a8c22f17bc37c1e6d0e3aa03b9e8cd0757218290d78"

    public let config: ViTConfig
    /// The checkpoint's decision threshold: spoof iff probability ≥ threshold.
    public let threshold: Double

    struct Layer {
        var inProjectionWeight, inProjectionBias, outProjectionWeight, outProjectionBias: FloatBuffer
        var linear1Weight, linear1Bias, linear2Weight, linear2Bias: FloatBuffer
        var norm1Weight, norm1Bias, norm2Weight, norm2Bias: FloatBuffer
    }

    let patchWeight: FloatBuffer  // (D, 3·16·16)
    /// The patch embedding folded for grey input: the three channels carry the same luma L, so
    /// Σ_c W[o,c,k]·(L/255 − mean_c)/std_c = Σ_k W'[o,k]·L − Σ_c mean_c/std_c·Σ_k W[o,c,k].
    /// W' (D, 16·16) takes raw 0…255 luma; the constant joins `lumaPositionAndBias`. One third
    /// of the patch-embedding work, same result to float rounding.
    let lumaPatchWeight: FloatBuffer
    let lumaPositionAndBias: FloatBuffer
    /// Row 0: cls_token + pos_embed[0]; row i ≥ 1: pos_embed[i] + patch bias. The patch GEMM adds onto it.
    let positionAndBias: FloatBuffer
    let layers: [Layer]
    let headWeight, headBias: FloatBuffer

    // Scratch, sized for `batchCapacity`.
    private var batchCapacity = 0
    private let patches = FloatBuffer(capacity: 1)
    private let tokens = FloatBuffer(capacity: 1)
    private let projections = FloatBuffer(capacity: 1)
    private let scores = FloatBuffer(capacity: 1)
    private let rowScales = FloatBuffer(capacity: 1)
    private let attention = FloatBuffer(capacity: 1)
    private let residual = FloatBuffer(capacity: 1)
    private let hidden = FloatBuffer(capacity: 1)
    private let classTokens = FloatBuffer(capacity: 1)
    private let logitsBuffer = FloatBuffer(capacity: 1)

    /// Loads, validates and prepares a checkpoint (`torch.save` zip with `model`, `cfg`, `threshold`).
    public convenience init(contentsOf url: URL) throws {
        try self.init(checkpoint: try TorchCheckpoint(contentsOf: url), path: url.path)
    }

    /// The checkpoint's decision threshold, which must be a probability strictly between 0 and 1: at 0 or
    /// below every face is SPOOF, at 1 or above every face is LIVE, so such a file is damaged or not ours.
    static func threshold(of checkpoint: TorchCheckpoint, path: String) throws -> Double {
        guard let threshold = checkpoint.threshold else {
            throw CheckpointError(
                code: .badConfig, path: path,
                message: "the checkpoint has no threshold (a number between 0 and 1 under the key 'threshold'); "
                    + "it is not a face-liveness checkpoint or it is damaged")
        }
        guard threshold.isFinite, threshold > 0, threshold < 1 else {
            throw CheckpointError(
                code: .badConfig, path: path,
                message:
                    "the checkpoint's threshold \(threshold) is not between 0 and 1 (exclusive); the file is damaged "
                    + "or was not saved by the training code")
        }
        return threshold
    }

    /// `requiredImageSize`: the input side the caller feeds; nil only for callers that build their own
    /// `inputLength` inputs through `spoofProbabilities(input:batch:)` (tests of small crafted models).
    public init(
        checkpoint: TorchCheckpoint, path: String, requiredImageSize: Int? = ViTConfig.supportedImageSize
    ) throws {
        let config = try ViTConfig(
            checkpointConfig: checkpoint.config, path: path, requiredImageSize: requiredImageSize)
        try config.validate(stateDict: checkpoint.stateDict, path: path)
        self.config = config
        self.threshold = try Self.threshold(of: checkpoint, path: path)
        let weights = checkpoint.stateDict
        func buffer(_ key: String) -> FloatBuffer { FloatBuffer(weights[key]!.values) }

        self.patchWeight = buffer("patch_embed.proj.weight")
        let width = config.modelWidth
        var table = weights["pos_embed"]!.values
        let cls = weights["cls_token"]!.values
        let patchBias = weights["patch_embed.proj.bias"]!.values
        for column in 0..<width { table[column] += cls[column] }
        for token in 1..<config.tokenCount {
            for column in 0..<width { table[token * width + column] += patchBias[column] }
        }
        self.positionAndBias = FloatBuffer(table)

        let patchWeights = weights["patch_embed.proj.weight"]!.values
        let area = config.patchSize * config.patchSize
        var folded = [Float](repeating: 0, count: width * area)
        var lumaTable = table
        for output in 0..<width {
            var constant: Double = 0
            for channel in 0..<3 {
                let mean = Double(Preprocessor.mean[channel])
                let deviation = Double(Preprocessor.standardDeviation[channel])
                for k in 0..<area {
                    let weight = Double(patchWeights[(output * 3 + channel) * area + k])
                    folded[output * area + k] += Float(weight / (255 * deviation))
                    constant += weight * mean / deviation
                }
            }
            for token in 1..<config.tokenCount { lumaTable[token * width + output] -= Float(constant) }
        }
        self.lumaPatchWeight = FloatBuffer(folded)
        self.lumaPositionAndBias = FloatBuffer(lumaTable)
        self.layers = (0..<config.layerCount).map { index in
            let prefix = "encoder.transformer_encoder.layers.\(index)."
            return Layer(
                inProjectionWeight: buffer(prefix + "self_attn.in_proj_weight"),
                inProjectionBias: buffer(prefix + "self_attn.in_proj_bias"),
                outProjectionWeight: buffer(prefix + "self_attn.out_proj.weight"),
                outProjectionBias: buffer(prefix + "self_attn.out_proj.bias"),
                linear1Weight: buffer(prefix + "linear1.weight"), linear1Bias: buffer(prefix + "linear1.bias"),
                linear2Weight: buffer(prefix + "linear2.weight"), linear2Bias: buffer(prefix + "linear2.bias"),
                norm1Weight: buffer(prefix + "norm1.weight"), norm1Bias: buffer(prefix + "norm1.bias"),
                norm2Weight: buffer(prefix + "norm2.weight"), norm2Bias: buffer(prefix + "norm2.bias"))
        }
        self.headWeight = buffer("head.weight")
        self.headBias = buffer("head.bias")
    }

    /// Number of floats one input image occupies: 3 × imageSize × imageSize (NCHW).
    public var inputLength: Int { 3 * self.config.imageSize * self.config.imageSize }

    /// Sizes the scratch buffers for `batch` images; inference then allocates nothing.
    public func reserve(batch: Int) {
        guard batch > self.batchCapacity else { return }
        let c = self.config
        let rows = batch * c.tokenCount
        self.patches.reserve(batch * c.patchCount * c.patchLength)
        self.tokens.reserve(rows * c.modelWidth)
        self.projections.reserve(rows * 3 * c.modelWidth)
        self.scores.reserve(c.tokenCount * c.tokenCount)
        self.rowScales.reserve(c.tokenCount)
        self.attention.reserve(rows * c.modelWidth)
        self.residual.reserve(rows * c.modelWidth)
        self.hidden.reserve(rows * c.feedForwardWidth)
        self.classTokens.reserve(batch * c.modelWidth)
        self.logitsBuffer.reserve(batch * c.classCount)
        self.batchCapacity = batch
    }

    // MARK: - Public inference

    /// Logits for `batch` preprocessed images (NCHW float32, `inputLength` floats each) into `logits`
    /// (`batch × classCount`). The last encoder layer is evaluated for the CLS token only: the head
    /// reads nothing else, so the other 196 rows of that layer are never needed.
    public func logits(input: UnsafePointer<Float>, batch: Int, into logits: UnsafeMutablePointer<Float>) {
        precondition(batch >= 1, "batch must be at least 1")
        self.reserve(batch: batch)
        self.embed(input: input, batch: batch)
        for layer in self.layers.dropLast() { self.encoderLayer(layer, batch: batch) }
        self.lastLayerClassTokenOnly(self.layers.last!, batch: batch)
        self.head(classTokens: self.classTokens.pointer, stride: self.config.modelWidth, batch: batch, into: logits)
    }

    /// Logits for `batch` grey 224 × 224 crops (`Preprocessor.lumaCrop`, 8-bit, row-major, one after
    /// another): the same as normalising them to 3 channels and calling `logits(input:)`, with the
    /// normalisation folded into the patch embedding.
    public func logits(lumaCrops: UnsafePointer<UInt8>, batch: Int, into logits: UnsafeMutablePointer<Float>) {
        precondition(batch >= 1, "batch must be at least 1")
        self.reserve(batch: batch)
        self.embedLuma(lumaCrops, batch: batch)
        for layer in self.layers.dropLast() { self.encoderLayer(layer, batch: batch) }
        self.lastLayerClassTokenOnly(self.layers.last!, batch: batch)
        self.head(classTokens: self.classTokens.pointer, stride: self.config.modelWidth, batch: batch, into: logits)
    }

    /// Spoof probability of one grey 224 × 224 crop.
    public func spoofProbability(lumaCrop: [UInt8]) -> Double {
        precondition(lumaCrop.count == self.config.imageSize * self.config.imageSize)
        self.reserve(batch: 1)
        lumaCrop.withUnsafeBufferPointer {
            self.logits(lumaCrops: $0.baseAddress!, batch: 1, into: self.logitsBuffer.pointer)
        }
        return Self.spoofProbability(logits: self.logitsBuffer.pointer)
    }

    /// Spoof probabilities (softmax index 1) for `batch` preprocessed images.
    public func spoofProbabilities(input: [Float], batch: Int) -> [Double] {
        precondition(
            input.count == batch * self.inputLength,
            "input holds \(input.count) floats, expected \(batch * self.inputLength)")
        self.reserve(batch: batch)
        input.withUnsafeBufferPointer {
            self.logits(input: $0.baseAddress!, batch: batch, into: self.logitsBuffer.pointer)
        }
        return (0..<batch).map {
            Self.spoofProbability(logits: self.logitsBuffer.pointer + $0 * self.config.classCount)
        }
    }

    /// Activations of one image through every stage, for checks against PyTorch: tokens after the
    /// embedding, the output of every encoder layer (all tokens), and the logits.
    public struct Trace: Sendable {
        public var embedding: [Float]
        public var layerOutputs: [[Float]]
        public var logits: [Float]
    }

    public func trace(input: [Float]) -> Trace {
        precondition(input.count == self.inputLength)
        self.reserve(batch: 1)
        let c = self.config
        let count = c.tokenCount * c.modelWidth
        input.withUnsafeBufferPointer { self.embed(input: $0.baseAddress!, batch: 1) }
        let embedding = Array(UnsafeBufferPointer(start: self.tokens.pointer, count: count))
        var outputs: [[Float]] = []
        for layer in self.layers {
            self.encoderLayer(layer, batch: 1)
            outputs.append(Array(UnsafeBufferPointer(start: self.tokens.pointer, count: count)))
        }
        self.head(
            classTokens: self.tokens.pointer, stride: c.tokenCount * c.modelWidth, batch: 1,
            into: self.logitsBuffer.pointer)
        return Trace(
            embedding: embedding, layerOutputs: outputs,
            logits: Array(UnsafeBufferPointer(start: self.logitsBuffer.pointer, count: c.classCount)))
    }

    /// softmax(logits)[1], computed stably in Double.
    public static func spoofProbability(logits: UnsafePointer<Float>) -> Double {
        let live = Double(logits[0])
        let spoof = Double(logits[1])
        return 1 / (1 + Foundation.exp(live - spoof))
    }

    // MARK: - Stages

    /// Patch embedding (im2col + one GEMM per image) plus CLS token and position embedding.
    func embed(input: UnsafePointer<Float>, batch: Int) {
        let c = self.config
        let side = c.imageSize
        let patch = c.patchSize
        let plane = side * side
        let patchRowLength = patch * patch
        for image in 0..<batch {
            let source = input + image * 3 * plane
            let destination = self.patches.pointer + image * c.patchCount * c.patchLength
            for patchRow in 0..<c.patchesPerSide {
                for patchColumn in 0..<c.patchesPerSide {
                    let row = destination + (patchRow * c.patchesPerSide + patchColumn) * c.patchLength
                    for channel in 0..<3 {
                        for y in 0..<patch {
                            let from = source + channel * plane + (patchRow * patch + y) * side + patchColumn * patch
                            (row + channel * patchRowLength + y * patch).update(from: from, count: patch)
                        }
                    }
                }
            }
        }
        for image in 0..<batch {
            let tokens = self.tokens.pointer + image * c.tokenCount * c.modelWidth
            tokens.update(from: self.positionAndBias.pointer, count: c.tokenCount * c.modelWidth)
            BLAS.gemm(
                transposeB: true, m: c.patchCount, n: c.modelWidth, k: c.patchLength,
                a: self.patches.pointer + image * c.patchCount * c.patchLength, lda: c.patchLength,
                b: self.patchWeight.pointer, ldb: c.patchLength, beta: 1, c: tokens + c.modelWidth, ldc: c.modelWidth)
        }
    }

    /// Patch embedding from 8-bit grey crops with the folded weights (see `lumaPatchWeight`).
    func embedLuma(_ crops: UnsafePointer<UInt8>, batch: Int) {
        let c = self.config
        let side = c.imageSize
        let patch = c.patchSize
        let area = patch * patch
        for image in 0..<batch {
            let source = crops + image * side * side
            let destination = self.patches.pointer + image * c.patchCount * area
            for patchRow in 0..<c.patchesPerSide {
                for patchColumn in 0..<c.patchesPerSide {
                    let row = destination + (patchRow * c.patchesPerSide + patchColumn) * area
                    for y in 0..<patch {
                        let from = source + (patchRow * patch + y) * side + patchColumn * patch
                        for x in 0..<patch { row[y * patch + x] = Float(from[x]) }
                    }
                }
            }
        }
        for image in 0..<batch {
            let tokens = self.tokens.pointer + image * c.tokenCount * c.modelWidth
            tokens.update(from: self.lumaPositionAndBias.pointer, count: c.tokenCount * c.modelWidth)
            BLAS.gemm(
                transposeB: true, m: c.patchCount, n: c.modelWidth, k: area,
                a: self.patches.pointer + image * c.patchCount * area, lda: area,
                b: self.lumaPatchWeight.pointer, ldb: area, beta: 1, c: tokens + c.modelWidth, ldc: c.modelWidth)
        }
    }

    /// One post-norm encoder layer over every token: x = LN1(x + MHA(x)); x = LN2(x + FFN(x)).
    func encoderLayer(_ layer: Layer, batch: Int) {
        let c = self.config
        let width = c.modelWidth
        let rows = batch * c.tokenCount
        let x = self.tokens.pointer
        let qkv = self.projections.pointer
        VectorKernels.fillRows(
            qkv, rows: rows, width: 3 * width, stride: 3 * width, bias: layer.inProjectionBias.pointer)
        BLAS.gemm(
            transposeB: true, m: rows, n: 3 * width, k: width, a: x, lda: width,
            b: layer.inProjectionWeight.pointer, ldb: width, beta: 1, c: qkv, ldc: 3 * width)
        let scale = 1 / Float(c.headWidth).squareRoot()
        for image in 0..<batch {
            for head in 0..<c.headCount {
                let q = qkv + image * c.tokenCount * 3 * width + head * c.headWidth
                BLAS.gemm(
                    transposeB: true, m: c.tokenCount, n: c.tokenCount, k: c.headWidth, alpha: scale,
                    a: q, lda: 3 * width, b: q + width, ldb: 3 * width, beta: 0, c: self.scores.pointer,
                    ldc: c.tokenCount)
                VectorKernels.exponentiateRows(
                    self.scores.pointer, rows: c.tokenCount, count: c.tokenCount, stride: c.tokenCount,
                    inverseSums: self.rowScales.pointer)
                let output = self.attention.pointer + image * c.tokenCount * width + head * c.headWidth
                BLAS.gemm(
                    m: c.tokenCount, n: c.headWidth, k: c.tokenCount, a: self.scores.pointer, lda: c.tokenCount,
                    b: q + 2 * width, ldb: 3 * width, beta: 0, c: output, ldc: width)
                VectorKernels.scaleRows(
                    output, rows: c.tokenCount, width: c.headWidth, stride: width, factors: self.rowScales.pointer)
            }
        }
        self.attentionOutputAndFeedForward(
            layer, x: x, xStride: width, attention: self.attention.pointer, rows: rows, output: x)
    }

    /// The last layer, for the CLS token only. Keys and values are never formed for all 197 tokens:
    /// with q the CLS query of head h and Wk_h, Wv_h that head's rows of the in-projection,
    ///   scores_t = q·(Wk_h x_t + bk_h) = x_t·(Wk_hᵀ q) + const   (a constant shift: softmax ignores it)
    ///   output   = Σ_t p_t (Wv_h x_t + bv_h) = Wv_h (Σ_t p_t x_t) + bv_h   (Σ_t p_t = 1)
    /// so each head costs four matrix-vector products (≈ 59 k multiply-adds) instead of the
    /// 6.5 M the key/value projections of every token would take.
    func lastLayerClassTokenOnly(_ layer: Layer, batch: Int) {
        let c = self.config
        let width = c.modelWidth
        let headWidth = c.headWidth
        let x = self.tokens.pointer
        let weights = layer.inProjectionWeight.pointer
        let biases = layer.inProjectionBias.pointer
        // Queries for the CLS rows only: rows 0, T, 2T, … of x.
        let queries = self.residual.pointer
        VectorKernels.fillRows(queries, rows: batch, width: width, stride: width, bias: biases)
        BLAS.gemm(
            transposeB: true, m: batch, n: width, k: width, a: x, lda: c.tokenCount * width,
            b: weights, ldb: width, beta: 1, c: queries, ldc: width)
        let scale = 1 / Float(headWidth).squareRoot()
        let attention = self.attention.pointer
        let folded = self.projections.pointer  // Wk_hᵀ q, then Σ_t p_t x_t: one row of `width`
        for image in 0..<batch {
            let tokens = x + image * c.tokenCount * width
            for head in 0..<c.headCount {
                let keyRows = weights + (width + head * headWidth) * width
                let valueRows = weights + (2 * width + head * headWidth) * width
                BLAS.gemv(
                    transpose: true, m: headWidth, n: width, a: keyRows, lda: width,
                    x: queries + image * width + head * headWidth, beta: 0, y: folded)
                BLAS.gemv(
                    m: c.tokenCount, n: width, alpha: scale, a: tokens, lda: width, x: folded, beta: 0,
                    y: self.scores.pointer)
                VectorKernels.softmax(self.scores.pointer, count: c.tokenCount)
                BLAS.gemv(
                    transpose: true, m: c.tokenCount, n: width, a: tokens, lda: width, x: self.scores.pointer,
                    beta: 0, y: folded)
                let output = attention + image * width + head * headWidth
                output.update(from: biases + 2 * width + head * headWidth, count: headWidth)
                BLAS.gemv(m: headWidth, n: width, a: valueRows, lda: width, x: folded, beta: 1, y: output)
            }
        }
        self.attentionOutputAndFeedForward(
            layer, x: x, xStride: c.tokenCount * width, attention: attention, rows: batch,
            output: self.classTokens.pointer)
    }

    /// out = LN1(x + attention·Woutᵀ + b); out = LN2(out + FFN(out)). `x` rows may be strided.
    private func attentionOutputAndFeedForward(
        _ layer: Layer, x: UnsafePointer<Float>, xStride: Int, attention: UnsafePointer<Float>, rows: Int,
        output: UnsafeMutablePointer<Float>
    ) {
        let c = self.config
        let width = c.modelWidth
        let y = self.residual.pointer
        VectorKernels.addRows(
            x, inputStride: xStride, bias: layer.outProjectionBias.pointer, y, rows: rows, width: width)
        BLAS.gemm(
            transposeB: true, m: rows, n: width, k: width, a: attention, lda: width,
            b: layer.outProjectionWeight.pointer, ldb: width, beta: 1, c: y, ldc: width)
        VectorKernels.layerNormRows(
            y, output, rows: rows, width: width, gamma: layer.norm1Weight.pointer, beta: layer.norm1Bias.pointer,
            epsilon: c.layerNormEpsilon)
        let hidden = self.hidden.pointer
        VectorKernels.fillRows(
            hidden, rows: rows, width: c.feedForwardWidth, stride: c.feedForwardWidth, bias: layer.linear1Bias.pointer)
        BLAS.gemm(
            transposeB: true, m: rows, n: c.feedForwardWidth, k: width, a: output, lda: width,
            b: layer.linear1Weight.pointer, ldb: width, beta: 1, c: hidden, ldc: c.feedForwardWidth)
        VectorKernels.relu(hidden, count: rows * c.feedForwardWidth)
        VectorKernels.addRows(output, inputStride: width, bias: layer.linear2Bias.pointer, y, rows: rows, width: width)
        BLAS.gemm(
            transposeB: true, m: rows, n: width, k: c.feedForwardWidth, a: hidden, lda: c.feedForwardWidth,
            b: layer.linear2Weight.pointer, ldb: c.feedForwardWidth, beta: 1, c: y, ldc: width)
        VectorKernels.layerNormRows(
            y, output, rows: rows, width: width, gamma: layer.norm2Weight.pointer, beta: layer.norm2Bias.pointer,
            epsilon: c.layerNormEpsilon)
    }

    /// logits[b] = head(classToken[b]).
    private func head(
        classTokens: UnsafePointer<Float>, stride: Int, batch: Int, into logits: UnsafeMutablePointer<Float>
    ) {
        let c = self.config
        VectorKernels.fillRows(
            logits, rows: batch, width: c.classCount, stride: c.classCount, bias: self.headBias.pointer)
        BLAS.gemm(
            transposeB: true, m: batch, n: c.classCount, k: c.modelWidth, a: classTokens, lda: stride,
            b: self.headWeight.pointer, ldb: c.modelWidth, beta: 1, c: logits, ldc: c.classCount)
    }
}
