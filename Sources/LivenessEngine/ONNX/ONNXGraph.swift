import Foundation

/// Runs the float32 graph of an `ONNXModel` built from the operators a small detection CNN uses
/// (those of YuNet: Conv, Relu, MaxPool, nearest Resize, Add, Sigmoid, Transpose, Reshape) on
/// OpenBLAS, batch 1, NCHW.
///
/// Everything that does not depend on the input size (operators, attributes, weights) is checked
/// when the graph is built; shapes are inferred and buffers planned by `prepare(inputShape:)`,
/// which `run` calls when the size changes. Buffers are shared between values whose lifetimes do
/// not overlap. Not thread-safe: one instance per inference thread.
public final class ONNXGraph {
    public static let supportedOperators = [
        "Add", "Conv", "MaxPool", "Relu", "Reshape", "Resize", "Sigmoid", "Transpose",
    ]

    final class Convolution {
        enum Kind { case pointwise, depthwise3x3, general }
        let kind: Kind
        let geometry: WindowGeometry
        let outputChannels, inputChannelsPerGroup, groups: Int
        let weights: FloatBuffer  // (outputChannels, inputChannelsPerGroup · kh · kw), as stored by ONNX
        let bias: FloatBuffer  // zeros when the node has none

        init(geometry: WindowGeometry, weightShape: [Int], weights: [Float], bias: [Float]?, groups: Int) {
            self.geometry = geometry
            self.outputChannels = weightShape[0]
            self.inputChannelsPerGroup = weightShape[1]
            self.groups = groups
            self.weights = FloatBuffer(weights)
            self.bias = FloatBuffer(bias ?? [Float](repeating: 0, count: weightShape[0]))
            let g = geometry
            let unitStride = g.strideX == 1 && g.strideY == 1
            if g.kernelHeight == 1 && g.kernelWidth == 1 && unitStride && groups == 1
                && [g.padTop, g.padLeft, g.padBottom, g.padRight] == [0, 0, 0, 0]
            {
                self.kind = .pointwise
            } else if g.kernelHeight == 3 && g.kernelWidth == 3 && unitStride && weightShape[1] == 1
                && groups == weightShape[0] && [g.padTop, g.padLeft, g.padBottom, g.padRight] == [1, 1, 1, 1]
            {
                self.kind = .depthwise3x3
            } else {
                self.kind = .general
            }
        }
    }

    enum Operation {
        case convolution(Convolution, relu: Bool)
        case relu
        case sigmoid
        case add
        case maxPool(WindowGeometry)
        /// Nearest-neighbour, `asymmetric` coordinates, `floor` rounding; scale per axis.
        case resizeNearest(scales: [Float])
        case transpose([Int])
        case reshape([Int])
    }

    struct Instruction {
        var label: String
        var operation: Operation
        var inputs: [Int]  // value ids of the data inputs
        var output: Int
    }

    public let path: String
    public let inputName: String
    public let outputNames: [String]
    let declaredInputShape: [Int?]?
    let instructions: [Instruction]
    let valueCount: Int
    let inputValue: Int
    let outputValues: [Int]

    // The plan for the current input shape.
    public private(set) var inputShape: [Int] = []
    private(set) var shapes: [[Int]] = []
    private var slotOfValue: [Int] = []
    private var slots: [FloatBuffer] = []
    private let columns = FloatBuffer(capacity: 1)  // im2col scratch
    private let phases = FloatBuffer(capacity: 1)  // phase-split input planes (im2col's, or convolveInPlace's)
    private let zeroRow = FloatBuffer(capacity: 1)  // depthwise and convolveInPlace padding row, never written
    private let spareRow = FloatBuffer(capacity: 1)  // depthwise output row past an odd height
    private var resizeTables: [Int: (rows: [Int], columns: [Int])] = [:]

    public convenience init(contentsOf url: URL) throws {
        try self.init(model: try ONNXModel(contentsOf: url))
    }

    public init(model: ONNXModel) throws {
        let path = model.path
        self.path = path
        guard model.inputs.count == 1, let input = model.inputs.first else {
            throw ONNXError(
                code: .unsupportedOperator, path: path, node: nil,
                message: "the graph has \(model.inputs.count) inputs; one image input is supported")
        }
        self.inputName = input.name
        self.declaredInputShape = input.shape
        var ids: [String: Int] = [input.name: 0]
        var instructions: [Instruction] = []
        for node in model.nodes {
            let label = node.label
            func fail(_ code: ONNXError.Code, _ message: String) -> ONNXError {
                ONNXError(code: code, path: path, node: label, message: message)
            }
            guard node.domain.isEmpty || node.domain == "ai.onnx",
                Self.supportedOperators.contains(node.opType)
            else {
                let name = node.domain.isEmpty ? node.opType : "\(node.domain).\(node.opType)"
                throw fail(
                    .unsupportedOperator,
                    "operator \(name) is not supported (supported: \(Self.supportedOperators.joined(separator: ", ")))")
            }
            guard node.outputs.count == 1, !node.outputs[0].isEmpty else {
                throw fail(
                    .unsupportedAttribute, "\(node.outputs.count) outputs; only the first (data) output is supported")
            }
            /// A computed value (graph input or an earlier node's output).
            func activation(_ index: Int) throws -> Int {
                guard index < node.inputs.count, !node.inputs[index].isEmpty else {
                    throw fail(.missingValue, "input \(index) is missing")
                }
                let name = node.inputs[index]
                if let id = ids[name] { return id }
                if model.floatInitializers[name] != nil || model.integerInitializers[name] != nil {
                    throw fail(
                        .unsupportedTensor, "input '\(name)' is a constant; only computed values are supported here")
                }
                throw fail(
                    .missingValue,
                    "input '\(name)' is neither the graph input, an initializer nor an earlier node's output")
            }
            func constant(_ index: Int) throws -> Tensor {
                let name = index < node.inputs.count ? node.inputs[index] : ""
                guard let tensor = model.floatInitializers[name] else {
                    if ids[name] != nil {
                        throw fail(.unsupportedTensor, "input '\(name)' must be an initializer, not computed")
                    }
                    throw fail(.missingValue, "initializer '\(name)' (input \(index)) is missing from the file")
                }
                return tensor
            }
            func ints(_ key: String, _ fallback: [Int]) throws -> [Int] {
                switch node.attributes[key] {
                case nil: return fallback
                case .ints(let values)?: return values
                case let other?:
                    throw fail(.unsupportedAttribute, "attribute \(key) should be a list of ints, found \(other)")
                }
            }
            func int(_ key: String, _ fallback: Int) throws -> Int {
                switch node.attributes[key] {
                case nil: return fallback
                case .int(let value)?: return value
                case let other?: throw fail(.unsupportedAttribute, "attribute \(key) should be an int, found \(other)")
                }
            }
            func string(_ key: String, _ fallback: String) throws -> String {
                switch node.attributes[key] {
                case nil: return fallback
                case .string(let value)?: return value
                case let other?:
                    throw fail(.unsupportedAttribute, "attribute \(key) should be a string, found \(other)")
                }
            }
            func window(kernel: [Int]) throws -> WindowGeometry {
                let strides = try ints("strides", [1, 1])
                let pads = try ints("pads", [0, 0, 0, 0])
                let limit = ONNXLimits.maxWindow
                guard kernel.count == 2, strides.count == 2, pads.count == 4,
                    kernel.allSatisfy({ $0 > 0 && $0 <= limit }), strides.allSatisfy({ $0 > 0 && $0 <= limit }),
                    pads.allSatisfy({ $0 >= 0 && $0 <= limit })
                else {
                    throw fail(
                        .unsupportedAttribute,
                        "2-D windows only, each side, stride and pad at most \(limit): kernel \(kernel), "
                            + "strides \(strides), pads \(pads)")
                }
                guard try ints("dilations", [1, 1]) == [1, 1] else {
                    throw fail(.unsupportedAttribute, "dilation is not supported")
                }
                guard try string("auto_pad", "NOTSET") == "NOTSET" else {
                    throw fail(.unsupportedAttribute, "auto_pad is not supported; export with explicit pads")
                }
                return WindowGeometry(
                    kernelHeight: kernel[0], kernelWidth: kernel[1], strideY: strides[0], strideX: strides[1],
                    padTop: pads[0], padLeft: pads[1], padBottom: pads[2], padRight: pads[3])
            }

            let operation: Operation
            var inputs = [try activation(0)]
            switch node.opType {
            case "Conv":
                let weight = try constant(1)
                guard weight.shape.count == 4 else { throw fail(.badShape, "weight shape \(weight.shape) is not 4-D") }
                let bias = node.inputs.count > 2 && !node.inputs[2].isEmpty ? try constant(2) : nil
                if let bias, bias.shape != [weight.shape[0]] {
                    throw fail(.badShape, "bias shape \(bias.shape) does not match \(weight.shape[0]) output channels")
                }
                let groups = try int("group", 1)
                guard groups >= 1, weight.shape[0] % groups == 0 else {
                    throw fail(.badShape, "\(weight.shape[0]) output channels do not split into \(groups) groups")
                }
                let kernel = try ints("kernel_shape", Array(weight.shape[2...]))
                guard kernel == Array(weight.shape[2...]) else {
                    throw fail(.badShape, "kernel_shape \(kernel) does not match weight shape \(weight.shape)")
                }
                let convolution = Convolution(
                    geometry: try window(kernel: kernel), weightShape: weight.shape, weights: weight.values,
                    bias: bias?.values, groups: groups)
                operation = .convolution(convolution, relu: false)
            case "Relu": operation = .relu
            case "Sigmoid": operation = .sigmoid
            case "Add":
                inputs.append(try activation(1))
                operation = .add
            case "MaxPool":
                // ceil_mode 1 has a rule for windows starting in the padding that nothing here needs yet.
                guard try int("storage_order", 0) == 0, try int("ceil_mode", 0) == 0 else {
                    throw fail(.unsupportedAttribute, "ceil_mode 1 and storage_order 1 are not supported")
                }
                operation = .maxPool(try window(kernel: try ints("kernel_shape", [])))
            case "Resize":
                guard try string("mode", "nearest") == "nearest",
                    try string("coordinate_transformation_mode", "half_pixel") == "asymmetric",
                    try string("nearest_mode", "round_prefer_floor") == "floor"
                else {
                    throw fail(
                        .unsupportedAttribute,
                        "only mode nearest with asymmetric coordinates and floor rounding is supported")
                }
                // Inputs (X, roi, scales, sizes) from opset 11; opset 10 had other inputs and defaults.
                guard model.opsetVersion >= 11 else {
                    throw fail(
                        .unsupportedAttribute, "Resize of opset \(model.opsetVersion) is not supported (11 or later)")
                }
                let scales = try constant(2).values
                guard scales.count == 4, scales[0] == 1, scales[1] == 1, scales[2] > 0, scales[3] > 0 else {
                    throw fail(
                        .unsupportedAttribute, "scales \(scales): only spatial scaling of an NCHW tensor is supported")
                }
                operation = .resizeNearest(scales: scales)
            case "Transpose":
                let permutation = try ints("perm", [])
                guard !permutation.isEmpty, permutation.count <= 4, permutation.sorted() == Array(0..<permutation.count)
                else {
                    throw fail(.unsupportedAttribute, "perm \(permutation) is not a permutation of at most 4 axes")
                }
                operation = .transpose(permutation)
            case "Reshape":
                let name = node.inputs.count > 1 ? node.inputs[1] : ""
                guard let shape = model.integerInitializers[name] else {
                    throw fail(.missingValue, "shape '\(name)' must be an int64 initializer")
                }
                guard try int("allowzero", 0) == 0 else { throw fail(.unsupportedAttribute, "allowzero 1") }
                operation = .reshape(shape.values)
            default:
                preconditionFailure("operator list and switch disagree")
            }
            let output = ids.count
            guard ids[node.outputs[0]] == nil else {
                throw fail(.badShape, "output '\(node.outputs[0])' is produced twice")
            }
            ids[node.outputs[0]] = output
            instructions.append(Instruction(label: label, operation: operation, inputs: inputs, output: output))
        }
        self.outputNames = model.outputs.map(\.name)
        self.outputValues = try model.outputs.map { output in
            guard let id = ids[output.name] else {
                throw ONNXError(
                    code: .missingValue, path: path, node: nil,
                    message: "graph output '\(output.name)' is never computed")
            }
            return id
        }
        self.valueCount = ids.count
        self.inputValue = 0
        self.instructions = Self.fuseRelu(instructions, keep: Set(self.outputValues))
    }

    /// Conv → Relu pairs become one convolution with the ReLU applied as its output is written,
    /// when nothing else reads the convolution's output.
    static func fuseRelu(_ instructions: [Instruction], keep: Set<Int>) -> [Instruction] {
        var readers: [Int: Int] = [:]
        for instruction in instructions { for input in instruction.inputs { readers[input, default: 0] += 1 } }
        var fused: [Instruction] = []
        for instruction in instructions {
            if case .relu = instruction.operation, let previous = fused.last,
                case .convolution(let convolution, relu: false) = previous.operation,
                previous.output == instruction.inputs[0], readers[previous.output] == 1, !keep.contains(previous.output)
            {
                fused[fused.count - 1].operation = .convolution(convolution, relu: true)
                fused[fused.count - 1].output = instruction.output
                fused[fused.count - 1].label += " + " + instruction.label
                continue
            }
            fused.append(instruction)
        }
        return fused
    }

    // MARK: - Planning

    /// Infers every shape for an input of `inputShape` (N, C, H, W) and lays out the buffers.
    public func prepare(inputShape: [Int]) throws {
        guard inputShape != self.inputShape else { return }
        let declared = self.declaredInputShape ?? inputShape.map { _ in nil }
        guard inputShape.count == declared.count, zip(inputShape, declared).allSatisfy({ $1 == nil || $0 == $1 }),
            inputShape.allSatisfy({ $0 > 0 }), ONNXLimits.elementCount(inputShape) != nil
        else {
            throw ONNXError(
                code: .badShape, path: self.path, node: nil,
                message:
                    "input shape \(inputShape) does not fit the declared \(declared.map { $0.map(String.init) ?? "?" })"
            )
        }
        var shapes = [[Int]](repeating: [], count: self.valueCount)
        shapes[self.inputValue] = inputShape
        var columnsNeeded = 1
        var phasesNeeded = 1
        var widestRow = 1
        var tables: [Int: (rows: [Int], columns: [Int])] = [:]
        for (index, instruction) in self.instructions.enumerated() {
            func fail(_ message: String) -> ONNXError {
                ONNXError(code: .badShape, path: self.path, node: instruction.label, message: message)
            }
            let x = shapes[instruction.inputs[0]]
            let output: [Int]
            switch instruction.operation {
            case .convolution(let c, _):
                guard x.count == 4, x[0] == 1, x[1] == c.inputChannelsPerGroup * c.groups else {
                    throw fail("input \(x) does not fit \(c.groups) group(s) of \(c.inputChannelsPerGroup) channels")
                }
                let size = c.geometry.outputSize(height: x[2], width: x[3])
                guard size.height > 0, size.width > 0 else { throw fail("input \(x) is smaller than the kernel") }
                output = [1, c.outputChannels, size.height, size.width]
                if c.kind == .general && c.groups == 1 && ConvolutionKernels.convolvesInPlace {
                    let layout = ConvolutionKernels.PhaseLayout(
                        width: x[3], geometry: c.geometry, outputWidth: size.width)
                    guard let planes = ONNXLimits.elementCount([x[1], x[2], layout.stride, layout.rowLength]) else {
                        throw fail("the phase planes for input \(x) would exceed \(ONNXLimits.maxElements) elements")
                    }
                    phasesNeeded = max(phasesNeeded, planes)
                    widestRow = max(widestRow, layout.rowLength)
                } else if c.kind == .general {
                    let rows = [c.inputChannelsPerGroup, c.geometry.kernelHeight, c.geometry.kernelWidth]
                    guard let columns = ONNXLimits.elementCount(rows + [size.height, size.width]) else {
                        throw fail("the im2col buffer for input \(x) would exceed \(ONNXLimits.maxElements) elements")
                    }
                    columnsNeeded = max(columnsNeeded, columns)
                    let stride = c.geometry.strideX
                    phasesNeeded = max(phasesNeeded, x[2] * stride * ((x[3] + stride - 1) / stride))
                }
                if c.kind == .depthwise3x3 { widestRow = max(widestRow, x[3]) }
            case .relu, .sigmoid:
                output = x
            case .add:
                let y = shapes[instruction.inputs[1]]
                guard x == y else { throw fail("operand shapes \(x) and \(y) differ (broadcasting is not supported)") }
                output = x
            case .maxPool(let geometry):
                guard x.count == 4 else { throw fail("input \(x) is not NCHW") }
                let size = geometry.outputSize(height: x[2], width: x[3])
                guard size.height > 0, size.width > 0 else { throw fail("input \(x) is smaller than the window") }
                output = [x[0], x[1], size.height, size.width]
            case .resizeNearest(let scales):
                guard x.count == 4 else { throw fail("input \(x) is not NCHW") }
                // ONNX: output = floor(input · scale); asymmetric: source = floor(output / scale).
                let scaledHeight = (Float(x[2]) * scales[2]).rounded(.down)
                let scaledWidth = (Float(x[3]) * scales[3]).rounded(.down)
                // Checked in Float first: a huge or infinite scale would trap the conversion to Int.
                let limit = Float(ONNXLimits.maxElements)
                guard scaledHeight < limit, scaledWidth < limit else { throw fail("input \(x) scales past the limits") }
                let height = Int(scaledHeight)
                let width = Int(scaledWidth)
                guard height > 0, width > 0 else { throw fail("input \(x) scales to nothing") }
                output = [x[0], x[1], height, width]
                tables[index] = (
                    (0..<height).map { min(Int((Float($0) / scales[2]).rounded(.down)), x[2] - 1) },
                    (0..<width).map { min(Int((Float($0) / scales[3]).rounded(.down)), x[3] - 1) }
                )
            case .transpose(let permutation):
                guard permutation.count == x.count else { throw fail("perm \(permutation) does not fit input \(x)") }
                output = permutation.map { x[$0] }
            case .reshape(let target):
                let count = ONNXLimits.elementCount(x) ?? -1
                var shape = target.enumerated().map { $1 == 0 && $0 < x.count ? x[$0] : $1 }
                // Target sizes come from the file: a checked product, or nil for an absurd one.
                let known = ONNXLimits.elementCount(shape.filter { $0 != -1 })
                let inferred = shape.filter { $0 == -1 }.count
                if inferred == 1, let known, known > 0, count % known == 0, let at = shape.firstIndex(of: -1) {
                    shape[at] = count / known
                }
                guard inferred <= 1, shape.allSatisfy({ $0 >= 0 }), ONNXLimits.elementCount(shape) == count else {
                    throw fail("cannot reshape \(x) to \(target)")
                }
                output = shape
            }
            // Every later buffer size and index is a product of these: bound them once here.
            guard ONNXLimits.elementCount(output) != nil else {
                throw fail("output shape \(output) has more than \(ONNXLimits.maxElements) elements")
            }
            shapes[instruction.output] = output
        }

        // Buffers: an instruction's output takes a free slot (best fit) before its inputs are released,
        // so no kernel ever reads and writes the same memory. Graph outputs are never released.
        var lastUse = [Int](repeating: -1, count: self.valueCount)
        for (index, instruction) in self.instructions.enumerated() {
            for input in instruction.inputs { lastUse[input] = index }
        }
        for output in self.outputValues { lastUse[output] = Int.max }
        var slotOfValue = [Int](repeating: -1, count: self.valueCount)
        var capacities: [Int] = []
        var free: [Int] = []
        func allocate(_ value: Int) {
            let size = shapes[value].reduce(1, *)
            let fitting = free.filter { capacities[$0] >= size }.min { capacities[$0] < capacities[$1] }
            if let slot = fitting ?? free.max(by: { capacities[$0] < capacities[$1] }) {
                free.removeAll { $0 == slot }
                capacities[slot] = max(capacities[slot], size)
                slotOfValue[value] = slot
            } else {
                capacities.append(size)
                slotOfValue[value] = capacities.count - 1
            }
        }
        allocate(self.inputValue)
        for (index, instruction) in self.instructions.enumerated() {
            allocate(instruction.output)
            for input in Set(instruction.inputs) where lastUse[input] == index { free.append(slotOfValue[input]) }
        }
        self.slots = capacities.map { FloatBuffer(capacity: $0) }
        self.slotOfValue = slotOfValue
        self.shapes = shapes
        self.resizeTables = tables
        self.columns.reserve(columnsNeeded)
        self.phases.reserve(phasesNeeded)
        self.zeroRow.reserve(widestRow)
        self.spareRow.reserve(widestRow)
        self.inputShape = inputShape
    }

    /// Floats held by the planned buffers (input, intermediates and outputs).
    public var plannedFloatCount: Int { self.slots.reduce(0) { $0 + $1.capacity } }

    // MARK: - Running

    /// Runs the graph on one NCHW float32 input; returns every graph output by name.
    public func run(input: [Float], shape: [Int]) throws -> [String: Tensor] {
        try self.prepare(inputShape: shape)
        precondition(input.count == shape.reduce(1, *), "input holds \(input.count) floats for shape \(shape)")
        self.inputBuffer.update(from: input, count: input.count)
        self.execute()
        var outputs: [String: Tensor] = [:]
        for (name, value) in zip(self.outputNames, self.outputValues) {
            let shape = self.shapes[value]
            let data = self.pointer(value)
            outputs[name] = Tensor(
                shape: shape, values: Array(UnsafeBufferPointer(start: data, count: shape.reduce(1, *))))
        }
        return outputs
    }

    /// Where the caller writes the input for `execute()`, after `prepare`.
    var inputBuffer: UnsafeMutablePointer<Float> { self.pointer(self.inputValue) }

    func pointer(_ value: Int) -> UnsafeMutablePointer<Float> { self.slots[self.slotOfValue[value]].pointer }

    /// Output `index` (in `outputNames` order) of the last `execute()`, and its shape.
    func output(_ index: Int) -> (data: UnsafePointer<Float>, shape: [Int]) {
        let value = self.outputValues[index]
        return (UnsafePointer(self.pointer(value)), self.shapes[value])
    }

    /// Runs every instruction on the prepared input buffer.
    func execute() {
        for (index, instruction) in self.instructions.enumerated() {
            let x = UnsafePointer(self.pointer(instruction.inputs[0]))
            let xShape = self.shapes[instruction.inputs[0]]
            let out = self.pointer(instruction.output)
            let outShape = self.shapes[instruction.output]
            let count = outShape.reduce(1, *)
            switch instruction.operation {
            case .convolution(let convolution, let relu):
                self.convolve(convolution, relu: relu, x, shape: xShape, out, shape: outShape)
            case .relu:
                out.update(from: x, count: count)
                ConvolutionKernels.relu(out, count: count)
            case .sigmoid:
                for i in 0..<count { out[i] = 1 / (1 + Foundation.exp(-x[i])) }
            case .add:
                let y = self.pointer(instruction.inputs[1])
                for i in 0..<count { out[i] = x[i] + y[i] }
            case .maxPool(let geometry):
                ConvolutionKernels.maxPool(
                    x, channels: xShape[0] * xShape[1], height: xShape[2], width: xShape[3], geometry: geometry,
                    outputHeight: outShape[2], outputWidth: outShape[3], into: out)
            case .resizeNearest:
                let table = self.resizeTables[index]!
                ConvolutionKernels.gather(
                    x, channels: xShape[0] * xShape[1], height: xShape[2], width: xShape[3], rows: table.rows,
                    columns: table.columns, into: out)
            case .transpose(let permutation):
                ConvolutionKernels.transpose(x, shape: xShape, permutation: permutation, into: out)
            case .reshape:
                out.update(from: x, count: count)
            }
        }
    }

    private func convolve(
        _ c: Convolution, relu: Bool, _ x: UnsafePointer<Float>, shape xShape: [Int],
        _ out: UnsafeMutablePointer<Float>,
        shape outShape: [Int]
    ) {
        let (height, width) = (xShape[2], xShape[3])
        let outputArea = outShape[2] * outShape[3]
        switch c.kind {
        case .pointwise:
            ConvolutionKernels.pointwise(
                weights: c.weights.pointer, outputs: c.outputChannels, inputs: c.inputChannelsPerGroup, input: x,
                area: outputArea, bias: c.bias.pointer, relu: relu, into: out)
        case .depthwise3x3:
            ConvolutionKernels.depthwise3x3(
                x, channels: c.outputChannels, height: height, width: width, weights: c.weights.pointer,
                bias: c.bias.pointer, relu: relu, zeroRow: self.zeroRow.pointer, spareRow: self.spareRow.pointer,
                into: out)
        case .general where c.groups == 1 && ConvolutionKernels.convolvesInPlace:
            ConvolutionKernels.convolveInPlace(
                x, channels: c.inputChannelsPerGroup, height: height, width: width, geometry: c.geometry,
                outputHeight: outShape[2], outputWidth: outShape[3], weights: c.weights.pointer,
                outputs: c.outputChannels, bias: c.bias.pointer, relu: relu, planes: self.phases.pointer,
                zeroRow: self.zeroRow.pointer, into: out)
        case .general:
            let g = c.geometry
            let depth = c.inputChannelsPerGroup * g.kernelHeight * g.kernelWidth
            let outputsPerGroup = c.outputChannels / c.groups
            for group in 0..<c.groups {
                ConvolutionKernels.im2col(
                    x + group * c.inputChannelsPerGroup * height * width, channels: c.inputChannelsPerGroup,
                    height: height, width: width, geometry: g, outputHeight: outShape[2], outputWidth: outShape[3],
                    phases: self.phases.pointer, into: self.columns.pointer)
                ConvolutionKernels.pointwise(
                    weights: c.weights.pointer + group * outputsPerGroup * depth, outputs: outputsPerGroup,
                    inputs: depth, input: self.columns.pointer, area: outputArea,
                    bias: c.bias.pointer + group * outputsPerGroup, relu: relu,
                    into: out + group * outputsPerGroup * outputArea)
            }
        }
    }
}
