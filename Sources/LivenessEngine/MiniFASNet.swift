import Foundation

/// Silent-Face-Anti-Spoofing's MiniFASNetV2 / MiniFASNetV1SE (minivision-ai, Apache-2.0), built from
/// the published state dict on the engine's kernels: the second liveness opinion.
///
/// Structure: ../shared/docs/MINIFASNET.md. Channel counts come from the weight shapes; every
/// BatchNorm is folded into the convolution (or linear layer) before it at load. Input: 80 × 80
/// NCHW float32, **BGR**, 0…255 unscaled; output: 3 logits, softmax index 1 = real.
///
/// Not thread-safe: the scratch buffers (a `Scratch`, possibly shared with other instances) are reused
/// by every call, so use one instance, or one group sharing a scratch, per inference queue.
/// Steady-state inference allocates nothing.
public final class MiniFASNet {
    /// The per-image working buffers: activations, im2col columns, kernel rows, the planar input.
    ///
    /// Not thread-safe. Models that never run concurrently (the pair, on one queue) may share one
    /// instance: each call overwrites it from scratch and leaves nothing in it that a later call reads.
    /// Every model grows the buffers to what it needs at init, so the shared size is the max of the two.
    public final class Scratch {
        /// Block inputs / outputs (conv1, conv2_dw, each block's output, conv_6_sep): never the expanded width.
        let current = FloatBuffer(capacity: 1)
        let next = FloatBuffer(capacity: 1)
        /// Inside a block: a channel group of the 1×1 expansion (at the input side); before the blocks,
        /// conv1's im2col columns.
        let expanded = FloatBuffer(capacity: 1)
        /// Inside a block: the depthwise output (at the output side); before the blocks, the planar input.
        let filtered = FloatBuffer(capacity: 1)
        let phases = FloatBuffer(capacity: 1)
        let zeroRow = FloatBuffer(capacity: 1)
        let spareRow = FloatBuffer(capacity: 1)
        let pooled = FloatBuffer(capacity: 1)
        let squeezed = FloatBuffer(capacity: 1)

        public init() {}

        /// Floats held, all buffers together.
        var floatCount: Int {
            [
                self.current, self.next, self.expanded, self.filtered, self.phases, self.zeroRow, self.spareRow,
                self.pooled, self.squeezed,
            ].reduce(0) { $0 + $1.capacity }
        }
    }

    /// What one model needs of a `Scratch`, in floats per buffer.
    struct ScratchNeeds {
        var activation = 1
        /// Also the channel-group budget of a block's expansion.
        var expanded = 1
        var filtered = 1
        var phases = 1
        var row = 1
        var squeeze = 1
    }
    public enum Variant: String, Sendable, Equatable {
        /// MiniFASNetV2 (no squeeze-excitation).
        case v2
        /// MiniFASNetV1SE: the last block of conv_3, conv_4 and conv_5 has a squeeze-excitation gate.
        case v1se
    }

    public static let inputSide = 80
    /// conv1: 3 × 3, stride 2, padding 1.
    static let conv1Geometry = WindowGeometry(
        kernelHeight: 3, kernelWidth: 3, strideY: 2, strideX: 2, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1)
    public static let classCount = 3
    /// Floats one input image occupies (3 × 80 × 80).
    public static let inputLength = 3 * inputSide * inputSide

    /// A convolution with its BatchNorm folded in: weight [out, in/groups, k, k], bias [out].
    struct Convolution {
        var weight: FloatBuffer
        var bias: FloatBuffer
        var outputs: Int
        var inputs: Int
        var kernel: Int
        /// Per-channel PReLU slopes, when the block has one.
        var slopes: FloatBuffer?
    }

    struct SqueezeExcite {
        var fc1, bias1, fc2, bias2: FloatBuffer
        var reduced: Int
    }

    /// DepthWise / DepthWiseSE: 1×1 expand + PReLU → 3×3 depthwise (stride) + PReLU → 1×1 project
    /// [→ SE] [+ input].
    struct Block {
        var name: String
        var expand, depthwise, project: Convolution
        var stride: Int
        var residual: Bool
        var squeeze: SqueezeExcite?
    }

    /// Where a block output goes in a trace, for the goldens (names as in the state dict).
    public static let traceBlocks = [
        "conv1", "conv2_dw", "conv_23", "conv_3", "conv_34", "conv_4", "conv_45", "conv_5", "conv_6_sep", "conv_6_dw",
        "linear", "bn",
    ]

    public let variant: Variant
    let conv1: Convolution
    let conv2: Convolution
    /// conv_23, conv_3.model.*, conv_34, conv_4.model.*, conv_45, conv_5.model.*, in order; the
    /// trace records after the last block of each stage.
    let blocks: [Block]
    let stageEnds: [Int: String]
    let conv6Separable: Convolution
    let conv6Depthwise: Convolution
    /// `linear` with `bn` folded in, [hidden, features], and the folding scale: trace recovers the raw
    /// `linear` output by dividing it out rather than keeping a second copy of the weight.
    let linearWeight, linearBias, linearScale: FloatBuffer
    let probWeight: FloatBuffer
    let featureCount, hiddenCount: Int

    // Scratch: one image at a time through the convolutions (shareable), the head over the whole batch.
    private(set) var scratch: Scratch
    let scratchNeeds: ScratchNeeds
    private var batchCapacity = 0
    private let features = FloatBuffer(capacity: 1)
    private let hidden = FloatBuffer(capacity: 1)

    /// Loads a published `.pth` (legacy torch.save) or a zip checkpoint holding the state dict.
    public convenience init(contentsOf url: URL, scratch: Scratch = Scratch()) throws {
        try self.init(checkpoint: try TorchCheckpoint(contentsOf: url), path: url.path, scratch: scratch)
    }

    public convenience init(checkpoint: TorchCheckpoint, path: String, scratch: Scratch = Scratch()) throws {
        try self.init(stateDict: checkpoint.stateDict, path: path, scratch: scratch)
    }

    /// Builds the network from a state dict (keys with or without DataParallel's `module.` prefix);
    /// a missing, misshapen or unexpected tensor throws `.architectureMismatch` naming the key.
    /// `scratch` may be shared with models that never run concurrently with this one (see `Scratch`).
    public init(stateDict: [String: Tensor], path: String, scratch: Scratch = Scratch()) throws {
        var reader = WeightReader(stateDict: stateDict, path: path)
        self.variant = stateDict.keys.contains { $0.contains(".se_module.") } ? .v1se : .v2

        let side = Self.inputSide
        var height = (side + 2 - 3) / 2 + 1
        // Sized to what each buffer really holds (see extractFeatures / run); the input image has its own.
        var needs = ScratchNeeds()
        needs.row = height
        self.conv1 = try reader.convolution("conv1", inputs: 3, kernel: 3, depthwise: false, prelu: true)
        let stem = self.conv1.outputs
        needs.activation = max(needs.activation, stem * height * height)
        self.conv2 = try reader.convolution("conv2_dw", inputs: stem, kernel: 3, depthwise: true, prelu: true)

        var blocks: [Block] = []
        var stageEnds: [Int: String] = [:]
        var channels = stem
        func block(_ name: String, stride: Int, residual: Bool, squeeze: Bool) throws {
            let expand = try reader.convolution(
                name + ".conv", inputs: channels, kernel: 1, depthwise: false, prelu: true)
            let depthwise = try reader.convolution(
                name + ".conv_dw", inputs: expand.outputs, kernel: 3, depthwise: true, prelu: true)
            let project = try reader.convolution(
                name + ".project", inputs: expand.outputs, kernel: 1, depthwise: false, prelu: false,
                outputs: residual ? channels : nil)
            var gate: SqueezeExcite?
            if squeeze { gate = try reader.squeezeExcite(name + ".se_module", channels: project.outputs) }
            height = (height + 2 - 3) / stride + 1
            needs.filtered = max(needs.filtered, expand.outputs * height * height)
            needs.activation = max(needs.activation, project.outputs * height * height)
            blocks.append(
                Block(
                    name: name, expand: expand, depthwise: depthwise, project: project, stride: stride,
                    residual: residual, squeeze: gate))
            channels = project.outputs
        }
        let se = self.variant == .v1se
        try block("conv_23", stride: 2, residual: false, squeeze: false)
        stageEnds[blocks.count - 1] = "conv_23"
        for index in 0..<4 { try block("conv_3.model.\(index)", stride: 1, residual: true, squeeze: se && index == 3) }
        stageEnds[blocks.count - 1] = "conv_3"
        try block("conv_34", stride: 2, residual: false, squeeze: false)
        stageEnds[blocks.count - 1] = "conv_34"
        for index in 0..<6 { try block("conv_4.model.\(index)", stride: 1, residual: true, squeeze: se && index == 5) }
        stageEnds[blocks.count - 1] = "conv_4"
        try block("conv_45", stride: 2, residual: false, squeeze: false)
        stageEnds[blocks.count - 1] = "conv_45"
        for index in 0..<2 { try block("conv_5.model.\(index)", stride: 1, residual: true, squeeze: se && index == 1) }
        stageEnds[blocks.count - 1] = "conv_5"
        self.blocks = blocks
        self.stageEnds = stageEnds

        self.conv6Separable = try reader.convolution(
            "conv_6_sep", inputs: channels, kernel: 1, depthwise: false, prelu: true)
        let features = self.conv6Separable.outputs
        needs.activation = max(needs.activation, features * height * height)
        // conv_6_dw covers the whole last map (5 × 5 at 80 × 80 input) and leaves one value per channel.
        self.conv6Depthwise = try reader.convolution(
            "conv_6_dw", inputs: features, kernel: height, depthwise: true, prelu: false)
        self.featureCount = features

        let linear = try reader.tensor("linear.weight", rank: 2, [nil, features])
        let hiddenCount = linear.shape[0]
        let (scale, shift) = try reader.batchNorm("bn", channels: hiddenCount)
        var folded = linear.values
        for row in 0..<hiddenCount {
            for column in 0..<features { folded[row * features + column] *= scale[row] }
        }
        self.linearWeight = FloatBuffer(folded)
        self.linearBias = FloatBuffer(shift)
        self.linearScale = FloatBuffer(scale)
        self.hiddenCount = hiddenCount
        self.probWeight = FloatBuffer(try reader.tensor("prob.weight", rank: 2, [Self.classCount, hiddenCount]).values)
        try reader.checkNothingLeft()

        // The expansion runs in channel groups of at most this many floats (at least one channel of the
        // widest map), so `expanded` needs no more than the block width or conv1's columns.
        needs.expanded = max(needs.activation, 27 * (side / 2) * (side / 2), (side / 2) * (side / 2))
        needs.filtered = max(needs.filtered, Self.inputLength)
        needs.phases = side * (side + 2)  // im2col's and the depthwise kernel's
        needs.squeeze = max(blocks.map(\.project.outputs).max() ?? 1, 1)
        self.scratchNeeds = needs
        self.scratch = scratch
        self.use(scratch)
    }

    /// Switches to `scratch` (grown to what this model needs), e.g. one shared with a model that runs on
    /// the same queue; the previous one is released if nothing else holds it.
    public func use(_ scratch: Scratch) {
        let needs = self.scratchNeeds
        scratch.current.reserve(needs.activation)
        scratch.next.reserve(needs.activation)
        scratch.expanded.reserve(needs.expanded)
        scratch.filtered.reserve(needs.filtered)
        scratch.phases.reserve(needs.phases)
        scratch.zeroRow.reserve(needs.row)
        scratch.spareRow.reserve(needs.row)
        scratch.pooled.reserve(needs.squeeze)
        scratch.squeezed.reserve(needs.squeeze)
        self.scratch = scratch
    }

    /// Sizes the batch-wide buffers (the head) for `batch` images.
    public func reserve(batch: Int) {
        guard batch > self.batchCapacity else { return }
        self.features.reserve(batch * self.featureCount)
        self.hidden.reserve(batch * self.hiddenCount)
        self.batchCapacity = batch
    }

    // MARK: - Inference

    /// Logits (3 per image, `batch × 3` floats) for `batch` NCHW float32 images, BGR, 0…255.
    public func logits(input: UnsafePointer<Float>, batch: Int, into logits: UnsafeMutablePointer<Float>) {
        precondition(batch >= 1, "batch must be at least 1")
        self.reserve(batch: batch)
        for index in 0..<batch {
            self.extractFeatures(
                image: input + index * Self.inputLength, into: self.features.pointer + index * self.featureCount)
        }
        self.head(batch: batch, into: logits)
    }

    /// Logits for `batch` crops of 80 × 80 × 3 uint8 in BGR order, HWC (as OpenCV gives), one after another.
    public func logits(bgrCrops: UnsafePointer<UInt8>, batch: Int, into logits: UnsafeMutablePointer<Float>) {
        precondition(batch >= 1, "batch must be at least 1")
        self.reserve(batch: batch)
        for index in 0..<batch {
            let image = self.scratch.filtered.pointer
            Self.planar(bgr: bgrCrops + index * Self.inputLength, into: image)
            self.extractFeatures(image: image, into: self.features.pointer + index * self.featureCount)
        }
        self.head(batch: batch, into: logits)
    }

    /// Logits of one 80 × 80 BGR HWC crop.
    public func logits(bgrCrop: [UInt8]) -> [Float] {
        precondition(bgrCrop.count == Self.inputLength, "a crop holds \(Self.inputLength) bytes, got \(bgrCrop.count)")
        var result = [Float](repeating: 0, count: Self.classCount)
        bgrCrop.withUnsafeBufferPointer { crop in
            result.withUnsafeMutableBufferPointer {
                self.logits(bgrCrops: crop.baseAddress!, batch: 1, into: $0.baseAddress!)
            }
        }
        return result
    }

    /// Softmax probability of class 1 (real) from 3 logits.
    public static func realProbability(logits: UnsafePointer<Float>) -> Double {
        let values = (0..<Self.classCount).map { Double(logits[$0]) }
        let largest = values.max() ?? 0
        let exponentials = values.map { Foundation.exp($0 - largest) }
        return exponentials[1] / exponentials.reduce(0, +)
    }

    /// Every top-level block output for one NCHW image (`traceBlocks` names), then `logits`.
    public struct Trace: Sendable {
        public var blocks: [String: [Float]]
        public var logits: [Float]
    }

    public func trace(input: [Float]) -> Trace {
        precondition(input.count == Self.inputLength, "an image holds \(Self.inputLength) floats, got \(input.count)")
        self.reserve(batch: 1)
        var blocks: [String: [Float]] = [:]
        input.withUnsafeBufferPointer { image in
            self.extractFeatures(image: image.baseAddress!, into: self.features.pointer) { name, data, count in
                blocks[name] = Array(UnsafeBufferPointer(start: data, count: count))
            }
        }
        // W·x from the folded (scale·W)·x: exact up to float rounding, as long as no BN scale is 0.
        var linear = [Float](repeating: 0, count: self.hiddenCount)
        BLAS.gemv(
            m: self.hiddenCount, n: self.featureCount, a: self.linearWeight.pointer, lda: self.featureCount,
            x: self.features.pointer, beta: 0, y: &linear)
        for row in 0..<self.hiddenCount { linear[row] /= self.linearScale.pointer[row] }
        blocks["linear"] = linear
        var logits = [Float](repeating: 0, count: Self.classCount)
        self.head(batch: 1, into: &logits)
        blocks["bn"] = Array(UnsafeBufferPointer(start: self.hidden.pointer, count: self.hiddenCount))
        return Trace(blocks: blocks, logits: logits)
    }

    /// HWC BGR bytes → NCHW float (channel order kept: the network takes BGR).
    static func planar(bgr: UnsafePointer<UInt8>, into image: UnsafeMutablePointer<Float>) {
        let area = Self.inputSide * Self.inputSide
        for pixel in 0..<area {
            image[pixel] = Float(bgr[3 * pixel])
            image[area + pixel] = Float(bgr[3 * pixel + 1])
            image[2 * area + pixel] = Float(bgr[3 * pixel + 2])
        }
    }

    /// conv1 … conv_6_dw for one image: `featureCount` values into `output`.
    private func extractFeatures(
        image: UnsafePointer<Float>, into output: UnsafeMutablePointer<Float>,
        record: ((String, UnsafePointer<Float>, Int) -> Void)? = nil
    ) {
        let scratch = self.scratch
        let side = Self.inputSide
        var height = (side + 2 - 3) / 2 + 1
        var area = height * height
        // conv1: 3 × 3 stride 2 over 3 channels as im2col + one GEMM
        let geometry = Self.conv1Geometry
        // (im2col here rather than `convolveInPlace`: on 80 × 80 the columns stay in cache, and the in-place
        // kernel's 40-pixel rows made the pair 0.05 ms slower.)
        ConvolutionKernels.im2col(
            image, channels: 3, height: side, width: side, geometry: geometry, outputHeight: height,
            outputWidth: height, phases: scratch.phases.pointer, into: scratch.expanded.pointer)
        var x = scratch.next.pointer
        var y = scratch.current.pointer
        self.pointwise(self.conv1, input: scratch.expanded.pointer, area: area, into: x)
        record?("conv1", x, self.conv1.outputs * area)
        ConvolutionKernels.depthwise3x3(
            x, channels: self.conv2.outputs, height: height, width: height, weights: self.conv2.weight.pointer,
            bias: self.conv2.bias.pointer, relu: false, zeroRow: scratch.zeroRow.pointer,
            spareRow: scratch.spareRow.pointer, into: y)
        self.prelu(self.conv2, y, area: area)
        record?("conv2_dw", y, self.conv2.outputs * area)
        swap(&x, &y)
        // x holds the block input from here on.
        for (index, block) in self.blocks.enumerated() {
            height = self.run(block, input: x, height: height, into: y)
            area = height * height
            swap(&x, &y)
            if let name = self.stageEnds[index] { record?(name, x, block.project.outputs * area) }
        }
        self.pointwise(self.conv6Separable, input: x, area: area, into: y)
        record?("conv_6_sep", y, self.conv6Separable.outputs * area)
        MobileKernels.depthwise(
            y, channels: self.featureCount, height: height, width: height, kernel: self.conv6Depthwise.kernel,
            stride: 1, padding: 0, weights: self.conv6Depthwise.weight.pointer, bias: self.conv6Depthwise.bias.pointer,
            phases: scratch.phases.pointer, into: output)
        record?("conv_6_dw", output, self.featureCount)
    }

    /// One DepthWise block; returns the output side.
    private func run(
        _ block: Block, input: UnsafePointer<Float>, height: Int, into output: UnsafeMutablePointer<Float>
    )
        -> Int
    {
        let scratch = self.scratch
        let area = height * height
        let expanded = scratch.expanded.pointer
        let filtered = scratch.filtered.pointer
        let outputHeight = (height + 2 - 3) / block.stride + 1
        let outputArea = outputHeight * outputHeight
        let expand = block.expand
        let conv = block.depthwise
        // Depthwise filtering is per channel, so expanding and filtering a channel group at a time gives the
        // whole map's result while `expanded` stays at the block width (not 103 × 40 × 40 for conv_23).
        let group = max(1, min(expand.outputs, self.scratchNeeds.expanded / area))
        var first = 0
        while first < expand.outputs {
            let count = min(group, expand.outputs - first)
            ConvolutionKernels.pointwise(
                weights: expand.weight.pointer + first * expand.inputs, outputs: count, inputs: expand.inputs,
                input: input, area: area, bias: expand.bias.pointer + first,
                slopes: expand.slopes?.pointer.advanced(by: first),
                into: expanded)
            let weights = conv.weight.pointer + first * 9
            let bias = conv.bias.pointer + first
            let into = filtered + first * outputArea
            if block.stride == 1 {
                ConvolutionKernels.depthwise3x3(
                    expanded, channels: count, height: height, width: height, weights: weights, bias: bias,
                    relu: false, zeroRow: scratch.zeroRow.pointer, spareRow: scratch.spareRow.pointer, into: into)
            } else {
                MobileKernels.depthwise(
                    expanded, channels: count, height: height, width: height, kernel: 3, stride: block.stride,
                    padding: 1, weights: weights, bias: bias, phases: scratch.phases.pointer, into: into)
            }
            first += count
        }
        self.prelu(conv, filtered, area: outputArea)
        let project = block.project
        if let gate = block.squeeze {
            self.pointwise(project, input: filtered, area: outputArea, into: output)
            MobileKernels.squeezeExcite(
                output, channels: project.outputs, area: outputArea, reduced: gate.reduced, fc1: gate.fc1.pointer,
                bias1: gate.bias1.pointer, fc2: gate.fc2.pointer, bias2: gate.bias2.pointer,
                pooled: scratch.pooled.pointer, hidden: scratch.squeezed.pointer)
            if block.residual { MobileKernels.add(output, input, count: project.outputs * outputArea) }
        } else if block.residual {
            // The sums land on input + bias: the residual add costs no extra pass.
            self.pointwise(project, input: filtered, area: outputArea, residual: input, into: output)
        } else {
            self.pointwise(project, input: filtered, area: outputArea, into: output)
        }
        return outputHeight
    }

    /// 1 × 1 convolution (or an im2col'd one): output = W·input + bias (+ residual), then PReLU if the
    /// block has it.
    @inline(__always)
    private func pointwise(
        _ conv: Convolution, input: UnsafePointer<Float>, area: Int, residual: UnsafePointer<Float>? = nil,
        into output: UnsafeMutablePointer<Float>
    ) {
        ConvolutionKernels.pointwise(
            weights: conv.weight.pointer, outputs: conv.outputs, inputs: conv.inputs * conv.kernel * conv.kernel,
            input: input, area: area, bias: conv.bias.pointer, residual: residual, slopes: conv.slopes?.pointer,
            into: output)
    }

    @inline(__always)
    private func prelu(_ conv: Convolution, _ data: UnsafeMutablePointer<Float>, area: Int) {
        guard let slopes = conv.slopes else { return }
        MobileKernels.prelu(data, channels: conv.outputs, area: area, slopes: slopes.pointer)
    }

    /// linear + bn (folded) and prob over the batch's features.
    private func head(batch: Int, into logits: UnsafeMutablePointer<Float>) {
        VectorKernels.fillRows(
            self.hidden.pointer, rows: batch, width: self.hiddenCount, stride: self.hiddenCount,
            bias: self.linearBias.pointer)
        BLAS.gemm(
            transposeB: true, m: batch, n: self.hiddenCount, k: self.featureCount, a: self.features.pointer,
            lda: self.featureCount, b: self.linearWeight.pointer, ldb: self.featureCount, beta: 1,
            c: self.hidden.pointer, ldc: self.hiddenCount)
        BLAS.gemm(
            transposeB: true, m: batch, n: Self.classCount, k: self.hiddenCount, a: self.hidden.pointer,
            lda: self.hiddenCount, b: self.probWeight.pointer, ldb: self.hiddenCount, beta: 0, c: logits,
            ldc: Self.classCount)
    }
}

/// Reads and checks the tensors of a MiniFASNet state dict, folding BatchNorm as it goes, and
/// remembers which keys it used so that leftovers can be refused.
private struct WeightReader {
    let stateDict: [String: Tensor]
    let path: String
    let prefix: String
    var used: Set<String> = []
    static let epsilon = 1e-5

    init(stateDict: [String: Tensor], path: String) {
        self.stateDict = stateDict
        self.path = path
        // Published files were saved from DataParallel: every key starts with `module.`.
        self.prefix = stateDict.keys.contains("module.conv1.conv.weight") ? "module." : ""
    }

    func mismatch(_ message: String) -> CheckpointError {
        CheckpointError(
            code: .architectureMismatch, path: self.path,
            message: "not a MiniFASNet (V2 / V1SE) state dict: \(message). Use the published Silent-Face-Anti-Spoofing "
                + "2.7_80x80_MiniFASNetV2.pth / 4_0_0_80x80_MiniFASNetV1SE.pth and compare their SHA-256.")
    }

    /// The tensor `prefix + key`, whose shape must have `rank` dimensions and match `expected` where
    /// given (nil = any).
    mutating func tensor(_ key: String, rank: Int, _ expected: [Int?]) throws -> Tensor {
        let name = self.prefix + key
        guard let tensor = self.stateDict[name] else { throw self.mismatch("tensor '\(name)' is missing") }
        let matches =
            tensor.shape.count == rank
            && zip(tensor.shape, expected).allSatisfy { actual, wanted in wanted.map { $0 == actual } ?? (actual > 0) }
        guard matches else {
            let wanted = expected.map { $0.map(String.init) ?? "*" }.joined(separator: ", ")
            throw self.mismatch("tensor '\(name)' has shape \(tensor.shape), expected [\(wanted)]")
        }
        // NaN or infinite weights make every score NaN: refuse them here rather than judge with them.
        let bad = tensor.values.reduce(0) { $1.isFinite ? $0 : $0 + 1 }
        guard bad == 0 else {
            throw CheckpointError(
                code: .badTensor, path: self.path,
                message: "tensor '\(name)' holds \(bad) values that are not finite (NaN or infinity); "
                    + "the model file is damaged: reinstall it (scripts/setup.sh)")
        }
        self.used.insert(name)
        return tensor
    }

    /// BatchNorm `name` as scale γ/√(var + ε) and shift β − mean·scale.
    mutating func batchNorm(_ name: String, channels: Int) throws -> (scale: [Float], shift: [Float]) {
        let gamma = try self.tensor(name + ".weight", rank: 1, [channels]).values
        let beta = try self.tensor(name + ".bias", rank: 1, [channels]).values
        let mean = try self.tensor(name + ".running_mean", rank: 1, [channels]).values
        let variance = try self.tensor(name + ".running_var", rank: 1, [channels]).values
        var scale = [Float](repeating: 0, count: channels)
        var shift = [Float](repeating: 0, count: channels)
        for c in 0..<channels {
            let factor = Double(gamma[c]) / (Double(variance[c]) + Self.epsilon).squareRoot()
            scale[c] = Float(factor)
            shift[c] = Float(Double(beta[c]) - Double(mean[c]) * factor)
        }
        return (scale, shift)
    }

    /// ConvBlock / LinearBlock `name`: `name.conv.weight`, `name.bn.*` folded, `name.prelu.weight`.
    mutating func convolution(
        _ name: String, inputs: Int, kernel: Int, depthwise: Bool, prelu: Bool, outputs: Int? = nil
    ) throws -> MiniFASNet.Convolution {
        let weight = try self.tensor(
            name + ".conv.weight", rank: 4, [depthwise ? inputs : outputs, depthwise ? 1 : inputs, kernel, kernel])
        let count = weight.shape[0]
        let (scale, shift) = try self.batchNorm(name + ".bn", channels: count)
        let slopes = prelu ? try self.tensor(name + ".prelu.weight", rank: 1, [count]).values : nil
        return MiniFASNet.Convolution(
            weight: FloatBuffer(Self.scaleRows(weight.values, scale)), bias: FloatBuffer(shift), outputs: count,
            inputs: depthwise ? 1 : inputs, kernel: kernel, slopes: slopes.map { FloatBuffer($0) })
    }

    mutating func squeezeExcite(_ name: String, channels: Int) throws -> MiniFASNet.SqueezeExcite {
        let fc1 = try self.tensor(name + ".fc1.weight", rank: 4, [nil, channels, 1, 1])
        let reduced = fc1.shape[0]
        let (scale1, shift1) = try self.batchNorm(name + ".bn1", channels: reduced)
        let fc2 = try self.tensor(name + ".fc2.weight", rank: 4, [channels, reduced, 1, 1])
        let (scale2, shift2) = try self.batchNorm(name + ".bn2", channels: channels)
        return MiniFASNet.SqueezeExcite(
            fc1: FloatBuffer(Self.scaleRows(fc1.values, scale1)), bias1: FloatBuffer(shift1),
            fc2: FloatBuffer(Self.scaleRows(fc2.values, scale2)), bias2: FloatBuffer(shift2), reduced: reduced)
    }

    /// Row r (one output channel) of a weight times scale[r].
    static func scaleRows(_ values: [Float], _ scale: [Float]) -> [Float] {
        let width = values.count / max(scale.count, 1)
        var result = values
        for row in 0..<scale.count {
            for column in 0..<width {
                result[row * width + column] = Float(Double(values[row * width + column]) * Double(scale[row]))
            }
        }
        return result
    }

    func checkNothingLeft() throws {
        let left = self.stateDict.keys.filter { !self.used.contains($0) && !$0.hasSuffix("num_batches_tracked") }
            .sorted()
        if let first = left.first {
            throw self.mismatch("unexpected tensor '\(first)'\(left.count > 1 ? " (and \(left.count - 1) more)" : "")")
        }
    }
}

/// The published pair as upstream runs it: MiniFASNetV2 on the face box scaled 2.7×, MiniFASNetV1SE on
/// the box scaled 4.0×, each crop resized to 80 × 80; spoof probability = 1 − mean of the two real
/// probabilities. Not thread-safe (it owns two `MiniFASNet`s sharing one scratch): one pair per inference queue,
/// and its models used only through it (or on its queue).
public final class MiniFASNetPair {
    public static let v2FileName = "2.7_80x80_MiniFASNetV2.pth"
    public static let v1seFileName = "4_0_0_80x80_MiniFASNetV1SE.pth"
    /// SHA-256 of the files at minivision-ai/Silent-Face-Anti-Spoofing b6d5f04 (resources/anti_spoof_models).
    public static let publishedSHA256: [String: String] = [
        "2.7_80x80_MiniFASNetV2.pth": "a5eb02e1843f19b5386b953cc4c9f011c3f985d0ee2bb9819eea9a142099bec0",
        "4_0_0_80x80_MiniFASNetV1SE.pth": "84ee1d37d96894d5e82de5a57df044ef80a58be2b218b5ed7cdfd875ec2f5990",
    ]
    /// Crop scale of each model's face box, in the order (V2, V1SE).
    public static let scales: [Double] = [2.7, 4.0]

    public let v2: MiniFASNet
    public let v1se: MiniFASNet

    /// The two models end up sharing one `Scratch` (V2's): they run one after the other, never at once.
    public init(v2: MiniFASNet, v1se: MiniFASNet, path: String = "") throws {
        guard v2.variant == .v2, v1se.variant == .v1se else {
            throw CheckpointError(
                code: .architectureMismatch, path: path,
                message: "the MiniFASNet pair needs a V2 and a V1SE model, got \(v2.variant.rawValue) and "
                    + "\(v1se.variant.rawValue); are the two files swapped?")
        }
        if v1se.scratch !== v2.scratch { v1se.use(v2.scratch) }
        self.v2 = v2
        self.v1se = v1se
    }

    /// Loads both models from a folder (e.g. `models/silent-face/`) by their published file names.
    public convenience init(directory: URL) throws {
        let scratch = MiniFASNet.Scratch()
        let v2 = try MiniFASNet(contentsOf: directory.appendingPathComponent(Self.v2FileName), scratch: scratch)
        let v1se = try MiniFASNet(contentsOf: directory.appendingPathComponent(Self.v1seFileName), scratch: scratch)
        try self.init(v2: v2, v1se: v1se, path: directory.path)
    }

    /// 1 − mean(p_real(V2), p_real(V1SE)), as upstream combines them.
    public static func spoofProbability(v2Logits: UnsafePointer<Float>, v1seLogits: UnsafePointer<Float>) -> Double {
        1 - (MiniFASNet.realProbability(logits: v2Logits) + MiniFASNet.realProbability(logits: v1seLogits)) / 2
    }

    /// Spoof probability of one face from its two 80 × 80 BGR HWC crops (V2's at 2.7×, V1SE's at 4.0×).
    public func spoofProbability(v2Crop: [UInt8], v1seCrop: [UInt8]) -> Double {
        let first = self.v2.logits(bgrCrop: v2Crop)
        let second = self.v1se.logits(bgrCrop: v1seCrop)
        return Self.spoofProbability(v2Logits: first, v1seLogits: second)
    }

    /// log(p / (1 − p)) with p clamped to [1e-6, 1 − 1e-6]: finite (about ±13.8) for fusing with other
    /// opinions in logit space, even when a model is certain.
    public static func logit(_ p: Double) -> Double {
        let clamped = min(max(p.isNaN ? 0.5 : p, 1e-6), 1 - 1e-6)
        return Foundation.log(clamped / (1 - clamped))
    }
}
