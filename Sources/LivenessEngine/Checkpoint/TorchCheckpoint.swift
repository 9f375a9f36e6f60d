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
        /// A legacy file's raw storages do not match their headers or persistent ids (truncated or damaged).
        case badStorage
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

/// A `torch.save` checkpoint (zip container + `data.pkl` + `data/N` storages, or the legacy pre-zip
/// layout described in `LegacyTorchFile`), read without Python.
///
/// Zip layout written by torch.save (format version 3): `<name>/data.pkl`, `<name>/byteorder`
/// (`little` or `big`; absent in old files, meaning little), `<name>/data/<key>` (raw storage bytes,
/// 64-byte aligned, stored uncompressed), `<name>/version`.
public struct TorchCheckpoint: Sendable {
    /// The unpickled top-level object (for our checkpoint: `{model, cfg, threshold}`).
    public var root: PickleValue
    /// Every tensor of the `model` state dict, by key, materialised as contiguous float32.
    public var stateDict: [String: Tensor]
    /// State-dict keys in file order (float32 tensors only, the keys of `stateDict`).
    public var stateDictKeys: [String]
    /// int64 tensors of a legacy checkpoint's state dict (batch norm's `num_batches_tracked`), by key,
    /// contiguous in row-major order. They are bookkeeping, not weights, so they stay out of `stateDict`.
    public var integerTensors: [String: [Int64]]

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

    /// Decodes a checkpoint held in memory: a torch.save zip (recognised by its `PK\u{3}\u{4}` signature)
    /// or a legacy (pre-zip) torch.save file. `path` only names the file in error messages.
    public init(data: Data, path: String, stateDictKey: String = "model") throws {
        let root: PickleValue
        let littleEndian: Bool
        // Legacy files must not pass int64 tensors off as an error: their batch-norm
        // `num_batches_tracked` counters are int64 in every published legacy checkpoint.
        let acceptsInt64: Bool
        let storageBytes: (_ storage: StorageReference, _ tensorKey: String) throws -> [UInt8]
        if data.starts(with: [0x50, 0x4B, 0x03, 0x04]) {
            let verdict = ZipBounds.check(data)
            if case .unsafe(let problem) = verdict {
                throw CheckpointError(
                    code: .notZip, path: path,
                    message: "not a readable torch.save checkpoint: \(problem); the zip is damaged or crafted. "
                        + "Re-download it and compare its SHA-256.")
            }
            let archive: Archive
            do {
                guard verdict == .safe else { throw CocoaError(.fileReadCorruptFile) }
                archive = try Archive(data: data, accessMode: .read)
            } catch {
                throw CheckpointError(
                    code: .notZip, path: path,
                    message:
                        "not a torch.save checkpoint: the file is not a complete zip archive (\(data.count) bytes; "
                        + "truncated download or wrong file?). Re-download it and compare its SHA-256.")
            }
            let zip = try Self.openZip(archive, path: path)
            root = zip.root
            littleEndian = zip.littleEndian
            var storageTotal: UInt64 = 0
            acceptsInt64 = false
            storageBytes = { storage, tensorKey in
                guard let storageEntry = archive[zip.prefix + "data/" + storage.key] else {
                    throw CheckpointError(
                        code: .missingEntry, path: path,
                        message: "storage data/\(storage.key) for tensor '\(tensorKey)' is missing from the zip")
                }
                let bytes = try Self.read(
                    storageEntry, from: archive, path: path, limit: Self.maxStorageBytes - storageTotal)
                storageTotal += UInt64(bytes.count)
                return bytes
            }
        } else {
            let legacy = try LegacyTorchFile(bytes: [UInt8](data), path: path)
            root = legacy.root
            littleEndian = legacy.littleEndian
            acceptsInt64 = true
            // Every referenced storage was read and checked against its persistent id already.
            storageBytes = { storage, _ in legacy.storages[storage.key] ?? [] }
        }

        let stateValue: PickleValue
        if let nested = root[stateDictKey] {
            stateValue = nested
        } else if case .dict(let entries) = root,
            entries.contains(where: { if case .tensor = $0.value { true } else { false } })
        {
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
        var integers: [String: [Int64]] = [:]
        var keys: [String] = []
        var totalElements = 0
        for entry in entries {
            guard case .string(let key) = entry.key, case .tensor(let reference) = entry.value else {
                throw CheckpointError(
                    code: .badTensor, path: path, message: "state dict entry \(entry.key) is not a named tensor")
            }
            let dtype = reference.storage.dtype
            guard dtype == .float32 || (dtype == .int64 && acceptsInt64) else {
                throw CheckpointError(
                    code: .unsupportedDType, path: path,
                    message: "tensor '\(key)' has dtype \(dtype.rawValue); only float32 checkpoints "
                        + "are supported (convert with model.float() before torch.save)")
            }
            // Each tensor is bounded in checkExtent; together they must fit the same budget.
            let elements = reference.shape.reduce(1) { $0.multipliedReportingOverflow(by: $1).partialValue }
            totalElements = totalElements.addingReportingOverflow(max(0, elements)).partialValue
            guard totalElements <= Self.maxTensorElements else {
                throw CheckpointError(
                    code: .badTensor, path: path,
                    message: "the state dict holds more than \(Self.maxTensorElements) elements in all (at tensor "
                        + "'\(key)'); the file is damaged or not a model. Re-download it and compare its SHA-256.")
            }
            let storageKey = reference.storage.key
            if storages[storageKey] == nil {
                storages[storageKey] = try storageBytes(reference.storage, key)
            }
            if dtype == .int64 {
                integers[key] = try Self.materialiseInt64(
                    reference, bytes: storages[storageKey]!, littleEndian: littleEndian, key: key, path: path)
                continue
            }
            tensors[key] = try Self.materialise(
                reference, bytes: storages[storageKey]!, littleEndian: littleEndian, key: key, path: path)
            keys.append(key)
        }
        self.root = root
        self.stateDict = tensors
        self.stateDictKeys = keys
        self.integerTensors = integers
    }

    /// Reads `data.pkl` and the byte order of a torch.save zip.
    static func openZip(
        _ archive: Archive, path: String
    ) throws -> (root: PickleValue, littleEndian: Bool, prefix: String) {
        guard let pickleEntry = archive.first(where: { $0.path.hasSuffix("data.pkl") && $0.type == .file }) else {
            throw CheckpointError(
                code: .missingEntry, path: path,
                message: "the zip has no data.pkl, so it is not a torch.save checkpoint")
        }
        let prefix = String(pickleEntry.path.dropLast("data.pkl".count))
        let pickleBytes = try Self.read(pickleEntry, from: archive, path: path, limit: Self.maxPickleBytes)

        var littleEndian = true
        if let orderEntry = archive[prefix + "byteorder"] {
            let order = String(decoding: try Self.read(orderEntry, from: archive, path: path, limit: 64), as: UTF8.self)
            switch order.trimmingCharacters(in: .whitespacesAndNewlines) {
            case "little": littleEndian = true
            case "big": littleEndian = false
            default:
                throw CheckpointError(
                    code: .badTensor, path: path, message: "unknown byteorder '\(order)' in the checkpoint")
            }
        }

        do {
            return (try RestrictedUnpickler.load(pickleBytes), littleEndian, prefix)
        } catch let error as PickleError {
            if case .forbiddenGlobal = error.code {
                throw CheckpointError(code: .forbiddenGlobal, path: path, message: error.description)
            }
            throw CheckpointError(code: .pickle, path: path, message: error.description)
        }
    }

    /// Largest `data.pkl` accepted: the published one is a few KiB, so anything near this is not a checkpoint.
    static let maxPickleBytes: UInt64 = 64 << 20
    /// Largest single storage, and all storages together: a door model is tens of MiB.
    static let maxStorageBytes: UInt64 = 1 << 30
    /// Largest tensor (elements) materialised, and all tensors together: 1 GiB of float32.
    static let maxTensorElements = 1 << 28

    /// Extracts one entry, refusing sizes above `limit` before allocating (the central directory's size
    /// comes from the file, and a deflated entry may inflate past what it claims) and checking its CRC-32,
    /// so a damaged file (bit rot on an SD card) is refused instead of silently changing decisions.
    static func read(_ entry: Entry, from archive: Archive, path: String, limit: UInt64) throws -> [UInt8] {
        // torch.save writes plain files only. ZIPFoundation reads a symlink entry's data in one piece of the
        // size the local header claims (found by the `checkpoint` fuzz target: a storage entry turned into
        // a symlink claiming 4 GiB made a 4 GiB allocation), and a directory has none.
        guard entry.type == .file else {
            throw CheckpointError(
                code: .badStorage, path: path,
                message: "zip entry \(entry.path) is a \(entry.type == .symlink ? "symbolic link" : "directory"), "
                    + "not a file; the file is damaged or not a model. Re-download it and compare its SHA-256.")
        }
        guard entry.uncompressedSize <= limit else {
            throw CheckpointError(
                code: .badStorage, path: path,
                message: "zip entry \(entry.path) claims \(entry.uncompressedSize) bytes, more than the \(limit) "
                    + "bytes a model file entry may hold; the file is damaged or not a model. Re-download it and "
                    + "compare its SHA-256.")
        }
        var bytes: [UInt8] = []
        // Reserved up to 64 MiB: a deflated entry may claim far more than it holds (the limit above is 1 GiB),
        // and what it really holds is appended as it inflates.
        bytes.reserveCapacity(Int(min(entry.uncompressedSize, 64 << 20)))
        var overrun = false
        let checksum: CRC32
        do {
            // A deflated entry is inflated until its compressed data ends: stop at the size it claims.
            checksum = try archive.extract(entry) { chunk in
                guard UInt64(bytes.count) + UInt64(chunk.count) <= entry.uncompressedSize else {
                    overrun = true
                    throw CocoaError(.fileReadTooLarge)
                }
                bytes.append(contentsOf: chunk)
            }
        } catch {
            if overrun {
                throw CheckpointError(
                    code: .badStorage, path: path,
                    message: "zip entry \(entry.path) inflates past the \(entry.uncompressedSize) bytes it claims; "
                        + "the file is damaged or not a model. Re-download it and compare its SHA-256.")
            }
            throw CheckpointError(
                code: .notZip, path: path,
                message: "zip entry \(entry.path) is damaged (\(Self.reason(error))); re-download the checkpoint "
                    + "and compare its SHA-256")
        }
        guard checksum == entry.checksum, UInt64(bytes.count) == entry.uncompressedSize else {
            throw CheckpointError(
                code: .badStorage, path: path,
                message: "zip entry \(entry.path) is damaged: its CRC-32 is \(Self.hex(checksum)) where the zip "
                    + "directory says \(Self.hex(entry.checksum)) (\(bytes.count) of \(entry.uncompressedSize) bytes "
                    + "read); the model file is corrupt (bit rot or a bad copy). Re-download it and compare its "
                    + "SHA-256.")
        }
        return bytes
    }

    static func hex(_ value: CRC32) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }

    /// Checks that a strided view fits in a storage of `available` elements (sizes and strides come
    /// from the file, so every step is overflow-checked) and returns its element count.
    static func checkExtent(_ reference: TensorReference, available: Int, key: String, path: String) throws -> Int {
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
        // A zero stride passes the extent check with any size; the element count is what gets allocated.
        guard count <= Self.maxTensorElements else {
            throw CheckpointError(
                code: .badTensor, path: path,
                message: "tensor '\(key)' (shape \(reference.shape), stride \(reference.stride)) has \(count) "
                    + "elements, more than the \(Self.maxTensorElements) a model tensor may have; the file is damaged "
                    + "or not a model. Re-download it and compare its SHA-256.")
        }
        return count
    }

    /// Visits the storage element index of every tensor element, in row-major order.
    static func forEachElement(of reference: TensorReference, count: Int, _ body: (_ flat: Int, _ element: Int) -> Void)
    {
        let rank = reference.shape.count
        var index = [Int](repeating: 0, count: rank)
        for flat in 0..<count {
            var element = reference.storageOffset
            for axis in 0..<rank { element += index[axis] * reference.stride[axis] }
            body(flat, element)
            var axis = rank - 1
            while axis >= 0 {
                index[axis] += 1
                if index[axis] < reference.shape[axis] { break }
                index[axis] = 0
                axis -= 1
            }
        }
    }

    /// Gathers a strided view of a float32 storage into a contiguous tensor.
    static func materialise(
        _ reference: TensorReference, bytes: [UInt8], littleEndian: Bool, key: String, path: String
    ) throws -> Tensor {
        let count = try Self.checkExtent(reference, available: bytes.count / 4, key: key, path: path)
        var values = [Float](repeating: 0, count: count)
        bytes.withUnsafeBytes { raw in
            Self.forEachElement(of: reference, count: count) { flat, element in
                let bits = raw.loadUnaligned(fromByteOffset: element * 4, as: UInt32.self)
                values[flat] = Float(bitPattern: littleEndian ? UInt32(littleEndian: bits) : UInt32(bigEndian: bits))
            }
        }
        return Tensor(shape: reference.shape, values: values)
    }

    /// Gathers a strided view of an int64 storage, contiguous in row-major order.
    static func materialiseInt64(
        _ reference: TensorReference, bytes: [UInt8], littleEndian: Bool, key: String, path: String
    ) throws -> [Int64] {
        let count = try Self.checkExtent(reference, available: bytes.count / 8, key: key, path: path)
        var values = [Int64](repeating: 0, count: count)
        bytes.withUnsafeBytes { raw in
            Self.forEachElement(of: reference, count: count) { flat, element in
                let bits = raw.loadUnaligned(fromByteOffset: element * 8, as: UInt64.self)
                values[flat] = Int64(bitPattern: littleEndian ? UInt64(littleEndian: bits) : UInt64(bigEndian: bits))
            }
        }
        return values
    }

    static func reason(_ error: Error) -> String {
        if let error = error as? CocoaError, let underlying = error.userInfo[NSUnderlyingErrorKey] as? Error {
            return "\(underlying.localizedDescription)"
        }
        return "\(error)"
    }
}
