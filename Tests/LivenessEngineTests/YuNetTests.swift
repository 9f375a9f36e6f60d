import Foundation
import TestSupport
import Testing

@testable import LivenessEngine

/// YuNet on the ONNX interpreter against ONNX Runtime (raw heads) and OpenCV FaceDetectorYN
/// (faces), on ../shared/golden/yunet (made by reference/make_golden.py, `yunet_cases`).
@Suite struct YuNetTests {
    static var modelURL: URL { get throws { try TestAssets.file("models/yunet/face_detection_yunet.onnx") } }

    static func cases() throws -> [String] {
        try TestAssets.files(in: "golden/yunet", suffix: ".input.bgr").map {
            String($0.lastPathComponent.dropLast(".input.bgr".count))
        }
    }

    /// The golden network input (uint8 BGR, HWC, padded) and its metadata.
    struct Case {
        var pixels: [UInt8]
        var inputSize: (width: Int, height: Int)
        var paddedSize: (width: Int, height: Int)
        var metadata: [String: Any]

        init(_ name: String) throws {
            self.pixels = [UInt8](try Data(contentsOf: try TestAssets.file("golden/yunet/\(name).input.bgr")))
            self.metadata = try TestAssets.json(try TestAssets.file("golden/yunet/\(name).json"))
            let input = self.metadata["input_size"] as? [Int] ?? []
            let padded = self.metadata["padded_size"] as? [Int] ?? []
            self.inputSize = (input[0], input[1])
            self.paddedSize = (padded[0], padded[1])
        }

        var faces: [[Float]] { (self.metadata["faces"] as? [[Double]] ?? []).map { $0.map(Float.init) } }
        var configuration: FaceDetector.Configuration {
            FaceDetector.Configuration(
                scoreThreshold: Float(self.metadata["score_threshold"] as? Double ?? .nan),
                nmsThreshold: Float(self.metadata["nms_threshold"] as? Double ?? .nan))
        }
    }

    @Test func goldenCasesArePresent() throws {
        #expect(try Self.cases().count >= 7)
    }

    @Test func graphUsesExactlyTheSupportedOperators() throws {
        let model = try ONNXModel(contentsOf: try Self.modelURL)
        #expect(Set(model.nodes.map(\.opType)) == Set(ONNXGraph.supportedOperators))
        #expect(model.opsetVersion == 11)
        #expect(model.inputs.map(\.name) == ["input"])
        #expect(model.outputs.map(\.name) == FaceDetector.headNames)
    }

    /// Values whose lifetimes do not overlap share buffers: at 320 × 256 the plan holds under a
    /// quarter of what one buffer per value would.
    @Test func buffersAreShared() throws {
        let graph = try ONNXGraph(contentsOf: try Self.modelURL)
        try graph.prepare(inputShape: [1, 3, 256, 320])
        let separate = graph.shapes.reduce(0) { $0 + $1.reduce(1, *) }
        #expect(graph.plannedFloatCount * 4 < separate, "\(graph.plannedFloatCount) of \(separate) floats")
        // Sizes that are not multiples of 32 break the neck's Add, named in the error.
        let error = #expect(throws: ONNXError.self) { try graph.prepare(inputShape: [1, 3, 240, 320]) }
        #expect(
            error?.code == .badShape && error?.description.contains("(Add)") == true, "\(String(describing: error))")
    }

    /// Every raw head output within 1e-3 of ONNX Runtime's (rounded to 6 decimals) on the exact golden input.
    @Test(arguments: try YuNetTests.cases())
    func headsMatchONNXRuntime(_ name: String) throws {
        let detector = try FaceDetector(contentsOf: try Self.modelURL)
        let golden = try Case(name)
        let (width, height) = golden.paddedSize
        #expect(golden.pixels.count == width * height * 3)
        let heads = try golden.pixels.withUnsafeBufferPointer {
            try detector.heads(bgr: $0.baseAddress!, width: width, height: height, rowStride: 3 * width)
        }
        let expected = try TestAssets.json(try TestAssets.file("golden/yunet/\(name).heads.json"))
        #expect(Set(expected.keys) == Set(FaceDetector.headNames))
        for (head, value) in expected {
            let reference = value as? [String: Any] ?? [:]
            let shape = reference["shape"] as? [Int] ?? []
            let data = (reference["data"] as? [Double] ?? []).map(Float.init)
            let tensor = try #require(heads[head])
            #expect(tensor.shape == shape, "\(name) \(head)")
            guard tensor.shape == shape else { continue }
            let difference = TestAssets.maxAbsDifference(tensor.values, data)
            #expect(difference <= 1e-3, "\(name) \(head): max abs difference \(difference)")
        }
    }

    /// Faces as OpenCV FaceDetectorYN finds them: same count, boxes and landmarks within 1 px,
    /// scores within 0.01. Run on the unpadded image (the detector pads) and on the padded one.
    @Test(arguments: try YuNetTests.cases())
    func facesMatchOpenCV(_ name: String) throws {
        let golden = try Case(name)
        let detector = try FaceDetector(contentsOf: try Self.modelURL, configuration: golden.configuration)
        let stride = 3 * golden.paddedSize.width
        for (width, height) in [golden.inputSize, golden.paddedSize] {
            let faces = try golden.pixels.withUnsafeBufferPointer {
                try detector.detect(bgr: $0.baseAddress!, width: width, height: height, rowStride: stride)
            }
            let expected = golden.faces
            #expect(faces.count == expected.count, "\(name) at \(width)x\(height): \(faces.map(\.openCVRow))")
            for (face, reference) in zip(faces, expected) {
                let row = face.openCVRow
                let geometry = TestAssets.maxAbsDifference(Array(row[0..<14]), Array(reference[0..<14]))
                #expect(geometry <= 1, "\(name): box/landmarks off by \(geometry) px: \(row) vs \(reference)")
                #expect(abs(row[14] - reference[14]) <= 0.01, "\(name): score \(row[14]) vs \(reference[14])")
            }
        }
    }

    // MARK: - Refusals

    /// Expects an ONNXError with `code` whose description contains every fragment.
    func expectRefusal(_ code: ONNXError.Code, _ fragments: [String], _ body: () throws -> Void) {
        do {
            try body()
            Issue.record("expected the model to be refused (\(code))")
        } catch let error as ONNXError {
            #expect(error.code == code, "\(error)")
            for fragment in fragments {
                #expect(error.description.contains(fragment), "message lacks '\(fragment)': \(error)")
            }
        } catch {
            Issue.record("unexpected error type: \(error)")
        }
    }

    func modelBytes() throws -> Data { try Data(contentsOf: try Self.modelURL) }

    /// The real model, decoded for editing.
    func modelProto() throws -> Onnx_ModelProto { try Onnx_ModelProto(serializedBytes: try self.modelBytes()) }

    func load(_ proto: Onnx_ModelProto) throws {
        _ = try FaceDetector(model: try ONNXModel(data: try proto.serializedData(), path: "edited.onnx"))
    }

    @Test func refusesBytesThatAreNotProtobuf() throws {
        self.expectRefusal(.notONNX, ["garbage.onnx", "not an ONNX model"]) {
            _ = try ONNXModel(data: Data("this is a text file, not a model\n".utf8), path: "garbage.onnx")
        }
        let png = try Data(contentsOf: try TestAssets.file("golden/images/live_astronaut.png"))
        self.expectRefusal(.notONNX, ["picture.onnx", "not an ONNX model"]) {
            _ = try ONNXModel(data: png, path: "picture.onnx")
        }
        self.expectRefusal(.notONNX, ["empty.onnx"]) { _ = try ONNXModel(data: Data(), path: "empty.onnx") }
    }

    @Test func refusesTruncatedFile() throws {
        let bytes = try self.modelBytes()
        for fraction in [0.1, 0.5, 0.99] {
            let cut = bytes.prefix(Int(Double(bytes.count) * fraction))
            self.expectRefusal(.notONNX, ["cut.onnx", "not a complete protobuf message"]) {
                _ = try ONNXModel(data: Data(cut), path: "cut.onnx")
            }
        }
    }

    @Test func refusesUnknownOperatorNamingTheNode() throws {
        var proto = try self.modelProto()
        let index = try #require(proto.graph.node.firstIndex { $0.opType == "Sigmoid" })
        proto.graph.node[index].opType = "HardSwish"
        let name = proto.graph.node[index].name
        self.expectRefusal(
            .unsupportedOperator, ["edited.onnx", "node \(name) (HardSwish)", "HardSwish is not supported"]
        ) {
            try self.load(proto)
        }
    }

    @Test func refusesMissingInitializerNamingTheNode() throws {
        var proto = try self.modelProto()
        let weight = "backbone.model2.conv1.conv1.weight"
        proto.graph.initializer.removeAll { $0.name == weight }
        let node = try #require(proto.graph.node.first { $0.input.contains(weight) })
        self.expectRefusal(.missingValue, ["node \(node.name) (Conv)", "'\(weight)'", "missing"]) {
            try self.load(proto)
        }
    }

    @Test func refusesWeightsOfTheWrongShapeNamingTheNode() throws {
        var proto = try self.modelProto()
        // 32 → 48 output channels: the depthwise convolution after it no longer fits.
        let name = "backbone.model2.conv1.conv1"
        let weight = try #require(proto.graph.initializer.firstIndex { $0.name == name + ".weight" })
        let bias = try #require(proto.graph.initializer.firstIndex { $0.name == name + ".bias" })
        proto.graph.initializer[weight].dims = [48, 32, 1, 1]
        proto.graph.initializer[weight].rawData = Data(count: 48 * 32 * 4)
        proto.graph.initializer[bias].dims = [48]
        proto.graph.initializer[bias].rawData = Data(count: 48 * 4)
        let consumer = try #require(proto.graph.node.first { $0.opType == "Conv" && $0.input[1] == "432" })
        self.expectRefusal(.badShape, ["node \(consumer.name) (Conv", "[1, 48, "]) { try self.load(proto) }
        // Raw data that does not fill the declared shape.
        proto = try self.modelProto()
        proto.graph.initializer[weight].rawData = Data(count: 10)
        self.expectRefusal(.unsupportedTensor, ["'\(name).weight'", "10 bytes"]) { try self.load(proto) }
    }

    /// Dims, pads and strides come from the file: absurd ones are refused with a message, never a trap
    /// (issue 15, M6).
    @Test func refusesHugeInitializerDimsAndWindows() throws {
        var proto = try self.modelProto()
        let name = "backbone.model2.conv1.conv1.weight"
        let weight = try #require(proto.graph.initializer.firstIndex { $0.name == name })
        proto.graph.initializer[weight].dims = [1 << 31, 1 << 31, 4, 1]
        self.expectRefusal(.unsupportedTensor, ["conv1.weight", "more than 268435456 elements"]) {
            try self.load(proto)
        }
        for (name, value) in [("pads", 1 << 40), ("strides", 1 << 62), ("pads", Int(Int64.max))] {
            proto = try self.modelProto()
            let node = try #require(proto.graph.node.firstIndex { $0.attribute.contains { $0.name == name } })
            let attribute = try #require(proto.graph.node[node].attribute.firstIndex { $0.name == name })
            let count = proto.graph.node[node].attribute[attribute].ints.count
            proto.graph.node[node].attribute[attribute].ints = [Int64](repeating: Int64(value), count: count)
            self.expectRefusal(.unsupportedAttribute, ["at most 4096", "\(name) ["]) { try self.load(proto) }
        }
    }

    // MARK: - Kernels

    /// The convolution paths (GEMM 1×1, direct depthwise 3×3, im2col for the rest) against plain loops,
    /// including a grouped, strided, asymmetrically padded case YuNet does not have.
    @Test(arguments: [
        (channels: 6, outputs: 4, groups: 1, kernel: 1, stride: 1, pads: [0, 0, 0, 0], size: [11, 13]),
        (channels: 6, outputs: 6, groups: 6, kernel: 3, stride: 1, pads: [1, 1, 1, 1], size: [11, 13]),
        (channels: 2, outputs: 2, groups: 2, kernel: 3, stride: 1, pads: [1, 1, 1, 1], size: [6, 6]),
        (channels: 2, outputs: 2, groups: 2, kernel: 3, stride: 1, pads: [1, 1, 1, 1], size: [3, 5]),
        (channels: 3, outputs: 5, groups: 1, kernel: 3, stride: 2, pads: [1, 1, 1, 1], size: [11, 13]),
        (channels: 4, outputs: 6, groups: 2, kernel: 3, stride: 2, pads: [0, 1, 2, 1], size: [11, 13]),
        (channels: 6, outputs: 6, groups: 6, kernel: 3, stride: 2, pads: [1, 1, 1, 1], size: [11, 13]),
    ])
    func convolutionMatchesDirectLoops(
        _ c: (channels: Int, outputs: Int, groups: Int, kernel: Int, stride: Int, pads: [Int], size: [Int])
    ) throws {
        let (height, width) = (c.size[0], c.size[1])
        let perGroup = c.channels / c.groups
        func values(_ count: Int, _ seed: Int) -> [Float] { (0..<count).map { Float(sin(Double($0 * 7 + seed))) } }
        let weights = values(c.outputs * perGroup * c.kernel * c.kernel, 1)
        let bias = values(c.outputs, 2)
        let input = values(c.channels * height * width, 3)
        var proto = Onnx_ModelProto()
        proto.opsetImport = [Onnx_OperatorSetIdProto.with { $0.version = 11 }]
        proto.graph.input = [Onnx_ValueInfoProto.with { $0.name = "x" }]
        proto.graph.output = [Onnx_ValueInfoProto.with { $0.name = "y" }]
        func tensor(_ name: String, _ dims: [Int], _ data: [Float]) -> Onnx_TensorProto {
            Onnx_TensorProto.with {
                $0.name = name
                $0.dims = dims.map(Int64.init)
                $0.dataType = 1
                $0.floatData = data
            }
        }
        proto.graph.initializer = [
            tensor("w", [c.outputs, perGroup, c.kernel, c.kernel], weights), tensor("b", [c.outputs], bias),
        ]
        func ints(_ name: String, _ values: [Int]) -> Onnx_AttributeProto {
            Onnx_AttributeProto.with {
                $0.name = name
                $0.type = .ints
                $0.ints = values.map(Int64.init)
            }
        }
        proto.graph.node = [
            Onnx_NodeProto.with {
                $0.name = "conv"
                $0.opType = "Conv"
                $0.input = ["x", "w", "b"]
                $0.output = ["c"]
                $0.attribute = [
                    ints("kernel_shape", [c.kernel, c.kernel]), ints("strides", [c.stride, c.stride]),
                    ints("pads", c.pads),
                    Onnx_AttributeProto.with {
                        $0.name = "group"
                        $0.type = .int
                        $0.i = Int64(c.groups)
                    },
                ]
            },
            Onnx_NodeProto.with {
                $0.opType = "Relu"
                $0.input = ["c"]
                $0.output = ["y"]
            },
        ]
        let graph = try ONNXGraph(model: try ONNXModel(data: try proto.serializedData(), path: "conv.onnx"))
        let output = try #require(try graph.run(input: input, shape: [1, c.channels, height, width])["y"])
        let outputHeight = (height + c.pads[0] + c.pads[2] - c.kernel) / c.stride + 1
        let outputWidth = (width + c.pads[1] + c.pads[3] - c.kernel) / c.stride + 1
        #expect(output.shape == [1, c.outputs, outputHeight, outputWidth])
        var expected: [Float] = []
        for o in 0..<c.outputs {
            let group = o / (c.outputs / c.groups)
            for oy in 0..<outputHeight {
                for ox in 0..<outputWidth {
                    var sum = Double(bias[o])
                    for i in 0..<perGroup {
                        for ky in 0..<c.kernel {
                            for kx in 0..<c.kernel {
                                let (y, x) = (oy * c.stride - c.pads[0] + ky, ox * c.stride - c.pads[1] + kx)
                                guard y >= 0, y < height, x >= 0, x < width else { continue }
                                let weight = weights[((o * perGroup + i) * c.kernel + ky) * c.kernel + kx]
                                sum += Double(weight) * Double(input[((group * perGroup + i) * height + y) * width + x])
                            }
                        }
                    }
                    expected.append(Float(max(sum, 0)))
                }
            }
        }
        #expect(TestAssets.maxAbsDifference(output.values, expected) <= 1e-5)
    }
}
