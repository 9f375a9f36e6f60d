import Foundation
import LivenessEngine
import Testing
import ZIPFoundation

/// Writes protocol-2 pickles the way torch.save does, to craft checkpoints (good and malicious) in tests.
struct PickleWriter {
    var bytes: [UInt8] = [0x80, 0x02]

    mutating func op(_ code: UInt8) { self.bytes.append(code) }
    mutating func mark() { self.op(0x28) }
    mutating func tuple() { self.op(0x74) }
    mutating func emptyTuple() { self.op(0x29) }
    mutating func emptyDict() { self.op(0x7D) }
    mutating func emptyList() { self.op(0x5D) }
    mutating func setItems() { self.op(0x75) }
    mutating func reduce() { self.op(0x52) }
    mutating func stop() { self.op(0x2E) }

    mutating func global(_ module: String, _ name: String) {
        self.op(0x63)
        self.bytes += Array("\(module)\n\(name)\n".utf8)
    }

    mutating func string(_ text: String) {
        let utf8 = Array(text.utf8)
        self.op(0x58)
        withUnsafeBytes(of: UInt32(utf8.count).littleEndian) { self.bytes += $0 }
        self.bytes += utf8
    }

    mutating func int(_ value: Int) {
        self.op(0x4A)
        withUnsafeBytes(of: Int32(value).littleEndian) { self.bytes += $0 }
    }

    mutating func float(_ value: Double) {
        self.op(0x47)
        withUnsafeBytes(of: value.bitPattern.bigEndian) { self.bytes += $0 }
    }

    mutating func ints(_ values: [Int]) {
        self.mark()
        values.forEach { self.int($0) }
        self.tuple()
    }

    /// `_rebuild_tensor_v2(('storage', torch.<storage>, key, 'cpu', numel), 0, shape, stride, False, OrderedDict())`
    /// LONG1 with 8 bytes: any Int, including sizes past Int32 that BININT cannot hold.
    mutating func long(_ value: Int) {
        self.op(0x8A)
        self.op(8)
        withUnsafeBytes(of: Int64(value).littleEndian) { self.bytes += $0 }
    }

    /// `_rebuild_tensor_v2` on storage `storageKey`: contiguous by default; a crafted `numel` and
    /// `stride` (written as 8-byte integers, so they may be anything) for the refusal tests.
    mutating func tensor(
        storageKey: String, shape: [Int], storage: String = "FloatStorage", numel: Int? = nil, stride: [Int]? = nil
    ) {
        self.global("torch._utils", "_rebuild_tensor_v2")
        self.mark()
        self.mark()
        self.string("storage")
        self.global("torch", storage)
        self.string(storageKey)
        self.string("cpu")
        if let numel { self.long(numel) } else { self.int(shape.reduce(1, *)) }
        self.tuple()
        self.op(0x51)  // BINPERSID
        self.int(0)
        if let stride {
            self.mark()
            shape.forEach { self.long($0) }
            self.tuple()
            self.mark()
            stride.forEach { self.long($0) }
            self.tuple()
        } else {
            self.ints(shape)
            var strides = [Int](repeating: 1, count: shape.count)
            for axis in Swift.stride(from: shape.count - 2, through: 0, by: -1) {
                strides[axis] = strides[axis + 1] * shape[axis + 1]
            }
            self.ints(strides)
        }
        self.op(0x89)  // NEWFALSE
        self.global("collections", "OrderedDict")
        self.emptyTuple()
        self.reduce()
        self.tuple()
        self.reduce()
    }
}

/// A small ViT checkpoint built in the test: 32×32 input, 16×16 patches, width 8, 2 heads, 1 layer.
struct TinyCheckpoint {
    static let config: [(String, Int)] = [
        ("image_size", 32), ("patch_size", 16), ("d_model", 8), ("nhead", 2), ("num_layers", 1), ("num_classes", 2),
    ]

    static var tensors: [(String, [Int])] {
        let p = "encoder.transformer_encoder.layers.0."
        return [
            ("pos_embed", [1, 5, 8]), ("cls_token", [1, 1, 8]), ("patch_embed.proj.weight", [8, 3, 16, 16]),
            ("patch_embed.proj.bias", [8]), (p + "self_attn.in_proj_weight", [24, 8]),
            (p + "self_attn.in_proj_bias", [24]),
            (p + "self_attn.out_proj.weight", [8, 8]), (p + "self_attn.out_proj.bias", [8]),
            (p + "linear1.weight", [32, 8]),
            (p + "linear1.bias", [32]), (p + "linear2.weight", [8, 32]), (p + "linear2.bias", [8]),
            (p + "norm1.weight", [8]), (p + "norm1.bias", [8]), (p + "norm2.weight", [8]), (p + "norm2.bias", [8]),
            ("head.weight", [2, 8]), ("head.bias", [2]),
        ]
    }

    /// The pickle for `tensors` (each `(key, shape, storage class)`), with cfg and `threshold` (nil: no key).
    static func pickle(_ tensors: [(String, [Int], String)], threshold: Double? = 0.25) -> [UInt8] {
        var writer = PickleWriter()
        writer.emptyDict()
        writer.mark()
        writer.string("model")
        writer.global("collections", "OrderedDict")
        writer.emptyTuple()
        writer.reduce()
        writer.mark()
        for (index, (key, shape, storage)) in tensors.enumerated() {
            writer.string(key)
            writer.tensor(storageKey: "\(index)", shape: shape, storage: storage)
        }
        writer.setItems()
        writer.string("cfg")
        writer.emptyDict()
        writer.mark()
        writer.string("model")
        writer.emptyDict()
        writer.mark()
        for (key, value) in Self.config {
            writer.string(key)
            writer.int(value)
        }
        writer.setItems()
        writer.setItems()
        if let threshold {
            writer.string("threshold")
            writer.float(threshold)
        }
        writer.setItems()
        writer.stop()
        return writer.bytes
    }

    /// Writes a torch.save-style zip: archive/data.pkl, archive/byteorder, archive/data/N.
    static func write(
        to url: URL, tensors: [(String, [Int], String)] = Self.tensors.map { ($0.0, $0.1, "FloatStorage") },
        pickle: [UInt8]? = nil, bigEndian: Bool = false
    ) throws {
        let archive = try Archive(url: url, accessMode: .create)
        func add(_ path: String, _ bytes: [UInt8]) throws {
            try archive.addEntry(with: path, type: .file, uncompressedSize: Int64(bytes.count)) { position, size in
                Data(bytes[Int(position)..<(Int(position) + size)])
            }
        }
        try add("archive/data.pkl", pickle ?? Self.pickle(tensors))
        try add("archive/byteorder", Array((bigEndian ? "big" : "little").utf8))
        for (index, (_, shape, storage)) in tensors.enumerated() {
            let count = shape.reduce(1, *)
            let elementSize = storage == "LongStorage" ? 8 : 4
            // Deterministic small weights: sin of the index, so the forward pass gives finite numbers.
            var bytes: [UInt8] = []
            for element in 0..<count {
                if elementSize == 4 {
                    let bits = Float(sin(Double(element + index))).bitPattern
                    withUnsafeBytes(of: bigEndian ? bits.bigEndian : bits.littleEndian) { bytes += $0 }
                } else {
                    withUnsafeBytes(of: Int64(element).littleEndian) { bytes += $0 }
                }
            }
            try add("archive/data/\(index)", bytes)
        }
    }
}

/// Expects `body` to throw a CheckpointError with `code` whose message contains every fragment (the
/// refusal tests of the zip, legacy and hardening suites).
func expectCheckpointRefusal(
    _ code: CheckpointError.Code, _ fragments: [String], sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> Void
) {
    do {
        try body()
        Issue.record("expected the checkpoint to be refused (\(code))", sourceLocation: sourceLocation)
    } catch let error as CheckpointError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        for fragment in fragments {
            #expect(
                error.description.contains(fragment), "message lacks '\(fragment)': \(error)",
                sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("unexpected error type: \(error)", sourceLocation: sourceLocation)
    }
}
