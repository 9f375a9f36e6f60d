/// The legacy (pre-zip, before PyTorch 1.6) `torch.save` layout, read with the same restricted
/// unpickler as the zip format: globals only from the whitelist, interpreted as data, nothing called.
///
/// Five pickles back to back — the magic number 0x1950a86a20f9469cfc6c, the protocol version 1001,
/// a sys-info dict (`little_endian`, `type_sizes`), the object, the list of storage keys — then, per
/// key in that order, an 8-byte little-endian element count and the raw elements.
struct LegacyTorchFile {
    /// The unpickled object (for a saved state dict: the OrderedDict of tensors).
    var root: PickleValue
    /// Byte order of the storage elements, from the sys-info pickle.
    var littleEndian: Bool
    /// Raw element bytes of every storage, by key; each checked against its persistent id.
    var storages: [String: [UInt8]]

    /// The magic number's LONG1 payload (10 bytes, little-endian two's complement).
    static let magic: [UInt8] = [0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19]
    static let protocolVersion = 1001

    init(bytes: [UInt8], path: String) throws {
        guard let afterMagic = Self.magicEnd(bytes) else {
            throw CheckpointError(
                code: .notZip, path: path,
                message: "not a torch.save checkpoint: the file is neither a torch.save zip archive nor a legacy "
                    + "torch.save file (\(bytes.count) bytes; truncated download or wrong file?). Re-download it and "
                    + "compare its SHA-256.")
        }
        var position = afterMagic
        func next(_ name: String) throws -> PickleValue {
            let (value, end) = try Self.unpickle(bytes, from: position, name: name, path: path)
            position = end
            return value
        }

        let version = try next("protocol version")
        guard version == .int(Self.protocolVersion) else {
            throw CheckpointError(
                code: .notZip, path: path,
                message: "not a torch.save checkpoint we can read: the file is neither a torch.save zip archive nor "
                    + "a legacy torch.save file of protocol version \(Self.protocolVersion) (it says \(version)). "
                    + "Re-save the model with a current torch.save.")
        }
        let info = try next("sys-info")
        guard case .bool(let littleEndian) = info["little_endian"] else {
            throw CheckpointError(
                code: .pickle, path: path,
                message: "the legacy torch.save sys-info pickle has no little_endian flag; the file is damaged")
        }
        let root = try next("object")
        guard case .list(let keyValues) = try next("storage keys") else {
            throw CheckpointError(
                code: .pickle, path: path,
                message: "the legacy torch.save storage key list is not a list; the file is damaged")
        }

        // Persistent ids say each storage's type and size; the raw data that follows must agree.
        var referenced: [String: StorageReference] = [:]
        try Self.collectStorages(root, into: &referenced, depth: 0, path: path)

        var storages: [String: [UInt8]] = [:]
        for keyValue in keyValues {
            guard case .string(let key) = keyValue else {
                throw CheckpointError(
                    code: .pickle, path: path,
                    message: "the legacy torch.save storage key list holds \(keyValue), not a key")
            }
            guard let storage = referenced[key], storages[key] == nil else {
                throw CheckpointError(
                    code: .badStorage, path: path,
                    message: "storage '\(key)' is listed \(storages[key] == nil ? "but no tensor uses it" : "twice"); "
                        + "the file is damaged. Re-download it and compare its SHA-256.")
            }
            let remaining = bytes.count - position
            guard remaining >= 8 else {
                throw CheckpointError(
                    code: .badStorage, path: path,
                    message: "the file ends inside the size header of storage '\(key)' at byte \(position) "
                        + "(truncated download?). Re-download it and compare its SHA-256.")
            }
            // The header is little-endian whatever the sys-info says (torch writes it so).
            let header = bytes[position..<(position + 8)].reversed().reduce(UInt64(0)) { ($0 << 8) | UInt64($1) }
            position += 8
            guard header == UInt64(storage.elementCount) else {
                throw CheckpointError(
                    code: .badStorage, path: path,
                    message: "storage '\(key)' holds \(header) elements but its tensors say \(storage.elementCount); "
                        + "the file is damaged. Re-download it and compare its SHA-256.")
            }
            let size = storage.elementCount.multipliedReportingOverflow(by: storage.dtype.elementSize)
            guard !size.overflow, size.partialValue <= bytes.count - position else {
                throw CheckpointError(
                    code: .badStorage, path: path,
                    message:
                        "storage '\(key)' (\(storage.elementCount) × \(storage.dtype.elementSize) bytes) runs past "
                        + "the end of the file at byte \(position) (truncated download?). Re-download it and compare "
                        + "its SHA-256.")
            }
            storages[key] = Array(bytes[position..<(position + size.partialValue)])
            position += size.partialValue
        }
        if let missing = referenced.keys.sorted().first(where: { storages[$0] == nil }) {
            throw CheckpointError(
                code: .missingEntry, path: path,
                message:
                    "storage '\(missing)' is used by a tensor but missing from the storage list; the file is damaged")
        }
        // torch.load ignores what follows the last storage; here it is refused, because a published
        // file with extra bytes is not the file that was published (appended to or concatenated).
        guard position == bytes.count else {
            throw CheckpointError(
                code: .badStorage, path: path,
                message: "\(bytes.count - position) unexpected bytes after the last storage (at byte \(position)); "
                    + "the file is damaged. Re-download it and compare its SHA-256.")
        }
        self.root = root
        self.littleEndian = littleEndian
        self.storages = storages
    }

    /// The offset just past the magic-number pickle (`PROTO n`, `LONG1` of the magic, `STOP`), or nil.
    /// Checked by hand: the magic is a 10-byte integer, more than the unpickler's 8-byte ints.
    static func magicEnd(_ bytes: [UInt8]) -> Int? {
        var position = 0
        if bytes.count >= 2, bytes[0] == 0x80, bytes[1] <= 5 { position = 2 }
        let expected: [UInt8] = [0x8A, UInt8(Self.magic.count)] + Self.magic + [0x2E]
        guard bytes.count - position >= expected.count, Array(bytes[position..<(position + expected.count)]) == expected
        else { return nil }
        return position + expected.count
    }

    static func unpickle(_ bytes: [UInt8], from start: Int, name: String, path: String) throws -> (PickleValue, Int) {
        do {
            return try RestrictedUnpickler.load(bytes, from: start, legacy: true)
        } catch let error as PickleError {
            let message = "legacy torch.save \(name) pickle at byte \(error.offset): \(error.detail)"
            if case .forbiddenGlobal = error.code {
                throw CheckpointError(code: .forbiddenGlobal, path: path, message: message)
            }
            throw CheckpointError(code: .pickle, path: path, message: message)
        }
    }

    /// Every storage a tensor in `value` refers to; one key must always mean one type and size.
    static func collectStorages(
        _ value: PickleValue, into storages: inout [String: StorageReference], depth: Int, path: String
    ) throws {
        // `freeze` already bounds nesting at 64; this walk follows the same tree.
        guard depth < 64 else { return }
        switch value {
        case .tensor(let reference):
            let storage = reference.storage
            if let known = storages[storage.key], known != storage {
                throw CheckpointError(
                    code: .badStorage, path: path,
                    message:
                        "storage '\(storage.key)' is described twice with different types or sizes; the file is damaged"
                )
            }
            storages[storage.key] = storage
        case .list(let items), .tuple(let items):
            for item in items { try Self.collectStorages(item, into: &storages, depth: depth + 1, path: path) }
        case .dict(let entries):
            for entry in entries {
                try Self.collectStorages(entry.value, into: &storages, depth: depth + 1, path: path)
            }
        default:
            break
        }
    }
}
