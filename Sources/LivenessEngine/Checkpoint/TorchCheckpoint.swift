import Foundation
import ZIPFoundation

/// Why a checkpoint could not be used, in words an installer can act on.
public struct CheckpointError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        case unreadable
        case notZip
        case missingEntry
        case pickle
        case forbiddenGlobal
        case unsupportedDType
        case badTensor
        case architectureMismatch
        case badConfig
    }

    public var code: Code
    public var path: String
    public var message: String

    public var description: String { "\(self.path): \(self.message)" }
}

/// A float32 tensor read from a checkpoint, contiguous in row-major order.
public struct Tensor: Sendable, Equatable {
    public var shape: [Int]
    public var values: [Float]

    public init(shape: [Int], values: [Float]) {
        precondition(shape.reduce(1, *) == values.count, "tensor shape \(shape) does not match \(values.count) values")
        self.shape = shape
        self.values = values
    }

    public var elementCount: Int { self.values.count }
}

/// A `torch.save` checkpoint (zip container + `data.pkl` + `data/N` storages), read without Python.
///
/// Layout written by torch.save (format version 3): `<name>/data.pkl`, `<name>/byteorder`
/// (`little` or `big`; absent in old files, meaning little), `<name>/data/<key>` (raw storage bytes,
/// 64-byte aligned, stored uncompressed), `<name>/version`.
public struct TorchCheckpoint: Sendable {
    /// The unpickled top-level object (for our checkpoint: `{model, cfg, threshold}`).
    public var root: PickleValue
    /// Every tensor of the `model` state dict, by key, materialised as contiguous float32.
    public var stateDict: [String: Tensor]
    /// State-dict keys in file order.
    public var stateDictKeys: [String]

    /// `cfg` from the checkpoint (the training configuration), if present.
    public var config: PickleValue? { self.root["cfg"] }

    /// `threshold` from the checkpoint: spoof iff probability ≥ threshold.
    public var threshold: Double? { self.root["threshold"]?.doubleValue }

    /// Reads and decodes a checkpoint. Tensors of the state dict found under `stateDictKey`
    /// (or at the top level when the pickle is itself a state dict) are materialised.
    public init(contentsOf url: URL, stateDictKey: String = "model") throws {
        let path = url.path
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw CheckpointError(
                code: .unreadable, path: path,
                message: "cannot read the model file (\(Self.reason(error))); check the path and its permissions")
        }
        try self.init(data: data, path: path, stateDictKey: stateDictKey)
    }

    public init(data: Data, path: String, stateDictKey: String = "model") throws {
        let archive: Archive
        do {
            archive = try Archive(data: data, accessMode: .read)
        } catch {
            throw CheckpointError(
                code: .notZip, path: path,
                message: "not a torch.save checkpoint: the file is not a complete zip archive (\(data.count) bytes; "
                    + "truncated download or wrong file?). Re-download it and compare its SHA-256.")
        }
        guard let pickleEntry = archive.first(where: { $0.path.hasSuffix("data.pkl") && $0.type == .file }) else {
            throw CheckpointError(
                code: .missingEntry, path: path,
                message: "the zip has no data.pkl, so it is not a torch.save checkpoint")
        }
        let prefix = String(pickleEntry.path.dropLast("data.pkl".count))
        let pickleBytes = try Self.read(pickleEntry, from: archive, path: path)

        var littleEndian = true
        if let orderEntry = archive[prefix + "byteorder"] {
            let order = String(decoding: try Self.read(orderEntry, from: archive, path: path), as: UTF8.self)
            switch order.trimmingCharacters(in: .whitespacesAndNewlines) {
            case "little": littleEndian = true
            case "big": littleEndian = false
            default:
                throw CheckpointError(code: .badTensor, path: path, message: "unknown byteorder '\(order)' in the checkpoint")
            }
        }

        let root: PickleValue
        do {
            root = try RestrictedUnpickler.load(pickleBytes)
        } catch let error as PickleError {
            if case .forbiddenGlobal = error.code {
                throw CheckpointError(code: .forbiddenGlobal, path: path, message: error.description)
            }
            throw CheckpointError(code: .pickle, path: path, message: error.description)
        }

        let stateValue: PickleValue
        if let nested = root[stateDictKey] {
            stateValue = nested
        } else if case .dict(let entries) = root, entries.contains(where: { if case .tensor = $0.value { true } else { false } }) {
            stateValue = root
        } else {
            throw CheckpointError(
                code: .missingEntry, path: path,
                message: "the checkpoint has no '\(stateDictKey)' state dict")
        }
        guard case .dict(let entries) = stateValue else {
            throw CheckpointError(code: .missingEntry, path: path, message: "'\(stateDictKey)' is not a state dict")
        }

        var storages: [String: [UInt8]] = [:]
        var tensors: [String: Tensor] = [:]
        var keys: [String] = []
        for entry in entries {
            guard case .string(let key) = entry.key, case .tensor(let reference) = entry.value else {
                throw CheckpointError(
                    code: .badTensor, path: path, message: "state dict entry \(entry.key) is not a named tensor")
            }
            guard reference.storage.dtype == .float32 else {
                throw CheckpointError(
                    code: .unsupportedDType, path: path,
                    message: "tensor '\(key)' has dtype \(reference.storage.dtype.rawValue); only float32 checkpoints "
                        + "are supported (convert with model.float() before torch.save)")
            }
            let storageKey = reference.storage.key
            if storages[storageKey] == nil {
                guard let storageEntry = archive[prefix + "data/" + storageKey] else {
                    throw CheckpointError(
                        code: .missingEntry, path: path,
                        message: "storage data/\(storageKey) for tensor '\(key)' is missing from the zip")
                }
                storages[storageKey] = try Self.read(storageEntry, from: archive, path: path)
            }
            tensors[key] = try Self.materialise(
                reference, bytes: storages[storageKey]!, littleEndian: littleEndian, key: key, path: path)
            keys.append(key)
        }
        self.root = root
        self.stateDict = tensors
        self.stateDictKeys = keys
    }

    static func read(_ entry: Entry, from archive: Archive, path: String) throws -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Int(clamping: entry.uncompressedSize))
        do {
            _ = try archive.extract(entry) { chunk in bytes.append(contentsOf: chunk) }
        } catch {
            throw CheckpointError(
                code: .notZip, path: path,
                message: "zip entry \(entry.path) is damaged (\(Self.reason(error))); re-download the checkpoint")
        }
        return bytes
    }

    /// Gathers a strided view of a float32 storage into a contiguous tensor.
    static func materialise(
        _ reference: TensorReference, bytes: [UInt8], littleEndian: Bool, key: String, path: String
    ) throws -> Tensor {
        let available = bytes.count / 4
        // Sizes come from the file: compute the extent with overflow checks before trusting it.
        var count = 1
        var lastIndex = reference.storageOffset
        var overflow = false
        for (size, stride) in zip(reference.shape, reference.stride) {
            let product = count.multipliedReportingOverflow(by: size)
            count = product.partialValue
            overflow = overflow || product.overflow
            guard size > 0 else { continue }
            let step = (size - 1).multipliedReportingOverflow(by: stride)
            let sum = lastIndex.addingReportingOverflow(step.partialValue)
            lastIndex = sum.partialValue
            overflow = overflow || step.overflow || sum.overflow
        }
        guard !overflow, count == 0 || lastIndex < min(available, reference.storage.elementCount) else {
            throw CheckpointError(
                code: .badTensor, path: path,
                message: "tensor '\(key)' (shape \(reference.shape), stride \(reference.stride), offset "
                    + "\(reference.storageOffset)) reaches past its storage of \(available) elements")
        }
        var values = [Float](repeating: 0, count: count)
        let rank = reference.shape.count
        var index = [Int](repeating: 0, count: rank)
        bytes.withUnsafeBytes { raw in
            for flat in 0..<count {
                var element = reference.storageOffset
                for axis in 0..<rank { element += index[axis] * reference.stride[axis] }
                let bits = raw.loadUnaligned(fromByteOffset: element * 4, as: UInt32.self)
                values[flat] = Float(bitPattern: littleEndian ? UInt32(littleEndian: bits) : UInt32(bigEndian: bits))
                var axis = rank - 1
                while axis >= 0 {
                    index[axis] += 1
                    if index[axis] < reference.shape[axis] { break }
                    index[axis] = 0
                    axis -= 1
                }
            }
        }
        return Tensor(shape: reference.shape, values: values)
    }

    static func reason(_ error: Error) -> String {
        if let error = error as? CocoaError, let underlying = error.userInfo[NSUnderlyingErrorKey] as? Error {
            return "\(underlying.localizedDescription)"
        }
        return "\(error)"
    }
}
