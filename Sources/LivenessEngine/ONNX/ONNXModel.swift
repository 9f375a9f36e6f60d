import Foundation
import SwiftProtobuf

/// Why an ONNX model could not be used, naming the file and, where there is one, the graph node.
public struct ONNXError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        case unreadable
        case notONNX
        case unsupportedOperator
        case unsupportedAttribute
        case unsupportedTensor
        case missingValue
        case badShape
    }

    public var code: Code
    public var path: String
    /// The node the problem is in (`name (OpType)`), or nil for file-level problems.
    public var node: String?
    public var message: String

    public var description: String {
        if let node = self.node { return "\(self.path): node \(node): \(self.message)" }
        return "\(self.path): \(self.message)"
    }
}

/// An ONNX model file as plain Swift values: the nodes in file (topological) order, float32 and int64
/// initializers, and the declared inputs and outputs. Reads only the subset a float32 CNN needs.
public struct ONNXModel: Sendable {
    public enum Attribute: Sendable, Equatable {
        case int(Int)
        case ints([Int])
        case float(Float)
        case floats([Float])
        case string(String)
        /// Tensors, graphs and other kinds no supported operator takes; kept so errors can name them.
        case unsupported(String)
    }

    public struct Node: Sendable {
        public var name: String
        public var opType: String
        public var domain: String
        public var inputs: [String]
        public var outputs: [String]
        public var attributes: [String: Attribute]

        /// How errors name the node: `name (OpType)`.
        public var label: String { "\(self.name.isEmpty ? "<unnamed>" : self.name) (\(self.opType))" }
    }

    /// An int64 initializer (shapes, axes), as Int.
    public struct IntegerTensor: Sendable, Equatable {
        public var shape: [Int]
        public var values: [Int]
    }

    /// A declared graph input or output; nil dimensions are symbolic (e.g. `height`), a nil shape undeclared.
    public struct ValueInfo: Sendable {
        public var name: String
        public var shape: [Int?]?
    }

    public var path: String
    public var opsetVersion: Int
    public var nodes: [Node]
    public var floatInitializers: [String: Tensor]
    public var integerInitializers: [String: IntegerTensor]
    /// Graph inputs that are not initializers (what the caller feeds).
    public var inputs: [ValueInfo]
    public var outputs: [ValueInfo]

    public init(contentsOf url: URL) throws {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw ONNXError(
                code: .unreadable, path: url.path, node: nil,
                message:
                    "cannot read the model file (\(error.localizedDescription)); check the path and its permissions")
        }
        try self.init(data: data, path: url.path)
    }

    public init(data: Data, path: String) throws {
        let proto: Onnx_ModelProto
        do {
            proto = try Onnx_ModelProto(serializedBytes: data)
        } catch {
            throw ONNXError(
                code: .notONNX, path: path, node: nil,
                message:
                    "not an ONNX model: the file (\(data.count) bytes) is not a complete protobuf message (\(error))")
        }
        try self.init(proto: proto, path: path)
    }

    init(proto: Onnx_ModelProto, path: String) throws {
        // Arbitrary bytes can decode as a message of unknown fields; a model has a graph with nodes.
        guard proto.hasGraph, !proto.graph.node.isEmpty else {
            throw ONNXError(
                code: .notONNX, path: path, node: nil, message: "not an ONNX model: the file holds no graph nodes")
        }
        self.path = path
        let defaultDomain = proto.opsetImport.first { $0.domain.isEmpty || $0.domain == "ai.onnx" }
        self.opsetVersion = Int(defaultDomain?.version ?? 0)
        let graph = proto.graph
        var floats: [String: Tensor] = [:]
        var integers: [String: IntegerTensor] = [:]
        for tensor in graph.initializer {
            switch try Self.decode(tensor, path: path) {
            case .float(let value): floats[tensor.name] = value
            case .integer(let value): integers[tensor.name] = value
            }
        }
        self.floatInitializers = floats
        self.integerInitializers = integers
        self.nodes = graph.node.map { node in
            Node(
                name: node.name, opType: node.opType, domain: node.domain, inputs: node.input, outputs: node.output,
                attributes: Dictionary(
                    node.attribute.map { ($0.name, Self.attribute($0)) }, uniquingKeysWith: { first, _ in first }))
        }
        func info(_ value: Onnx_ValueInfoProto) -> ValueInfo {
            guard value.type.tensorType.hasShape else { return ValueInfo(name: value.name, shape: nil) }
            let dims = value.type.tensorType.shape.dim.map { dim -> Int? in
                if case .dimValue(let size)? = dim.value { return Int(size) }
                return nil
            }
            return ValueInfo(name: value.name, shape: dims)
        }
        self.inputs = graph.input.filter { floats[$0.name] == nil && integers[$0.name] == nil }.map(info)
        self.outputs = graph.output.map(info)
    }

    enum Decoded {
        case float(Tensor)
        case integer(IntegerTensor)
    }

    /// float32 (raw_data or float_data) and int64 (raw_data or int64_data) tensors; anything else is refused.
    static func decode(_ tensor: Onnx_TensorProto, path: String) throws -> Decoded {
        func refuse(_ message: String) -> ONNXError {
            ONNXError(
                code: .unsupportedTensor, path: path, node: nil, message: "initializer '\(tensor.name)': \(message)")
        }
        if tensor.dataLocation == .external {
            throw refuse("stored in an external file; save the model with its weights inside")
        }
        let shape = tensor.dims.map(Int.init)
        guard shape.allSatisfy({ $0 >= 0 }) else { throw refuse("negative dimension in \(shape)") }
        guard let count = ONNXLimits.elementCount(shape) else {
            throw refuse(
                "shape \(shape) has more than \(ONNXLimits.maxElements) elements; the file is damaged or not a "
                    + "detector model. Re-download it and compare its SHA-256.")
        }
        /// raw_data as `count` little-endian values.
        func raw<T: FixedWidthInteger>(_ type: T.Type) throws -> [T] {
            let size = MemoryLayout<T>.size
            let data = tensor.rawData
            // count ≤ 2^28, so count * 8 cannot overflow.
            guard data.count == count * size else { throw refuse("\(data.count) bytes of raw data for shape \(shape)") }
            return data.withUnsafeBytes { bytes in
                (0..<count).map { T(littleEndian: bytes.loadUnaligned(fromByteOffset: $0 * size, as: T.self)) }
            }
        }
        func checked<T>(_ values: [T]) throws -> [T] {
            guard values.count == count else { throw refuse("\(values.count) values for shape \(shape)") }
            return values
        }
        switch tensor.dataType {
        case Int32(Onnx_TensorProto.DataType.float.rawValue):
            let values = tensor.hasRawData ? try raw(UInt32.self).map(Float.init(bitPattern:)) : tensor.floatData
            return .float(Tensor(shape: shape, values: try checked(values)))
        case Int32(Onnx_TensorProto.DataType.int64.rawValue):
            let values = tensor.hasRawData ? try raw(Int64.self) : tensor.int64Data
            return .integer(IntegerTensor(shape: shape, values: try checked(values).map(Int.init)))
        default:
            throw refuse("element type \(tensor.dataType) is not supported (float32 and int64 are)")
        }
    }

    static func attribute(_ attribute: Onnx_AttributeProto) -> Attribute {
        switch attribute.type {
        case .int: return .int(Int(attribute.i))
        case .ints: return .ints(attribute.ints.map(Int.init))
        case .float: return .float(attribute.f)
        case .floats: return .floats(attribute.floats)
        case .string: return .string(String(decoding: attribute.s, as: UTF8.self))
        default: return .unsupported("\(attribute.type)")
        }
    }
}

/// Bounds on what a model file may ask for: its dims, pads and strides come from the file, and every
/// product of them is checked so a crafted graph is refused instead of trapping or allocating GiBs.
enum ONNXLimits {
    /// Elements in one tensor (initialiser or intermediate value): 1 GiB of float32.
    static let maxElements = 1 << 28
    /// Kernel sides, strides and pads: a detector uses single digits.
    static let maxWindow = 1 << 12

    /// The product of `shape`, or nil when it overflows, is negative or exceeds `maxElements`.
    static func elementCount(_ shape: [Int]) -> Int? {
        var count = 1
        for size in shape {
            guard size >= 0 else { return nil }
            let product = count.multipliedReportingOverflow(by: size)
            guard !product.overflow, product.partialValue <= Self.maxElements else { return nil }
            count = product.partialValue
        }
        return count
    }
}
