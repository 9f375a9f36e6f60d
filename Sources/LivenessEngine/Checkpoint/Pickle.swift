// A restricted unpickler for the `data.pkl` that `torch.save` writes.
//
// Python's pickle format is a small stack machine whose GLOBAL and REDUCE opcodes normally import
// and call arbitrary Python functions: that is how a malicious `.pt` file runs `os.system`.
// This reader implements the opcodes torch.save emits and treats the few globals a checkpoint
// needs (tensor rebuilders, storage types, OrderedDict, the numpy scalar a threshold is saved as)
// as *data constructors* interpreted here. Any other global is refused before anything else
// happens; nothing from the file is ever executed. Written by hand because no Swift library
// reads pickles, and Python's own `pickle` is exactly the thing we must not run.

/// Tensor element types a storage can hold (from `torch.<Name>Storage`).
public enum TorchDType: String, Sendable, Equatable, CaseIterable {
    case float32, float64, float16, bfloat16, int64, int32, int16, int8, uint8, bool

    /// The storage class name torch.save uses for this type, e.g. `FloatStorage`.
    public var storageName: String {
        switch self {
        case .float32: return "FloatStorage"
        case .float64: return "DoubleStorage"
        case .float16: return "HalfStorage"
        case .bfloat16: return "BFloat16Storage"
        case .int64: return "LongStorage"
        case .int32: return "IntStorage"
        case .int16: return "ShortStorage"
        case .int8: return "CharStorage"
        case .uint8: return "ByteStorage"
        case .bool: return "BoolStorage"
        }
    }

    public var elementSize: Int {
        switch self {
        case .float64, .int64: return 8
        case .float32, .int32: return 4
        case .float16, .bfloat16, .int16: return 2
        case .int8, .uint8, .bool: return 1
        }
    }

    init?(storageName: String) {
        guard let match = TorchDType.allCases.first(where: { $0.storageName == storageName }) else { return nil }
        self = match
    }
}

/// A storage named by a persistent id: `('storage', torch.FloatStorage, '3', 'cpu', 128)`.
public struct StorageReference: Sendable, Equatable {
    public var dtype: TorchDType
    public var key: String
    public var location: String
    public var elementCount: Int
}

/// A tensor as `torch._utils._rebuild_tensor_v2` describes it: a view into a storage.
public struct TensorReference: Sendable, Equatable {
    public var storage: StorageReference
    public var storageOffset: Int
    public var shape: [Int]
    public var stride: [Int]
}

/// A value decoded from a pickle. Plain data only.
public indirect enum PickleValue: Sendable, Equatable {
    case none
    case bool(Bool)
    case int(Int)
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case list([PickleValue])
    case tuple([PickleValue])
    /// Dictionaries keep insertion order (state dicts are ordered).
    case dict([DictEntry])
    case tensor(TensorReference)

    public struct DictEntry: Sendable, Equatable {
        public var key: PickleValue
        public var value: PickleValue
    }

    /// Looks a string key up in a dictionary value.
    public subscript(key: String) -> PickleValue? {
        guard case .dict(let entries) = self else { return nil }
        return entries.first(where: { $0.key == .string(key) })?.value
    }

    public var intValue: Int? {
        if case .int(let value) = self { return value }
        return nil
    }

    public var doubleValue: Double? {
        switch self {
        case .float(let value): return value
        case .int(let value): return Double(value)
        default: return nil
        }
    }

    public var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }
}

/// Why a pickle was refused.
public struct PickleError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        case truncated
        case unknownOpcode(UInt8)
        case forbiddenGlobal(String)
        case malformed
    }

    public var code: Code
    public var offset: Int
    public var detail: String

    public var description: String { "data.pkl at byte \(self.offset): \(self.detail)" }
}

/// The restricted unpickler. Use `RestrictedUnpickler.load(_:)`.
public enum RestrictedUnpickler {
    /// Globals a checkpoint may name, each interpreted as a data constructor.
    enum Callable: Equatable {
        case orderedDict
        case rebuildTensorV2
        case rebuildParameter
        case numpyScalar
        case numpyDType
        case codecsEncode
    }

    /// The whitelist: `module.name` → meaning. Everything else is refused.
    static func resolveGlobal(module: String, name: String) -> StackItem? {
        switch (module, name) {
        case ("collections", "OrderedDict"): return .callable(.orderedDict)
        case ("torch._utils", "_rebuild_tensor_v2"): return .callable(.rebuildTensorV2)
        case ("torch._utils", "_rebuild_parameter"): return .callable(.rebuildParameter)
        // numpy float64 scalars (the checkpoint's `threshold`) pickle as
        // scalar(dtype('f8'), _codecs.encode('<8 bytes as latin-1>', 'latin1')).
        case ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"): return .callable(.numpyScalar)
        case ("numpy", "dtype"): return .callable(.numpyDType)
        case ("_codecs", "encode"): return .callable(.codecsEncode)
        case ("torch", let storage):
            if let dtype = TorchDType(storageName: storage) { return .storageType(dtype) }
            return nil
        default: return nil
        }
    }

    /// Mutable containers while unpickling: pickle mutates lists and dicts after memoising them.
    final class ListBox {
        var items: [StackItem] = []
    }

    final class DictBox {
        var entries: [(StackItem, StackItem)] = []
    }

    enum StackItem {
        case value(PickleValue)
        case list(ListBox)
        case dict(DictBox)
        /// `depth`: tuples nested inside each other (boxes count as leaves), bounded at construction.
        case tuple([StackItem], depth: Int)
        case callable(Callable)
        case storageType(TorchDType)
        case storage(StorageReference)
        case numpyDType(code: String, littleEndian: Bool)
        case mark
    }

    /// Decodes a pickle. Throws `PickleError` for anything outside the supported subset.
    public static func load(_ bytes: [UInt8]) throws -> PickleValue {
        try Self.load(bytes, from: 0, legacy: false).value
    }

    /// Decodes the pickle that starts at `start` and returns it with the offset just past its STOP.
    /// Legacy torch.save files hold several pickles back to back; their persistent ids carry a sixth
    /// field (`view_metadata`), accepted only when `legacy` is set and only as None.
    static func load(_ bytes: [UInt8], from start: Int, legacy: Bool) throws -> (value: PickleValue, end: Int) {
        var machine = Machine(bytes: bytes, start: start, legacy: legacy)
        // Boxes can nest 10^5 deep or form cycles; emptying them one by one frees them without recursion.
        defer { machine.dismantle() }
        let result = try machine.run()
        var budget = Self.maxValues
        return (try Self.freeze(result, depth: 0, offset: machine.position, budget: &budget), machine.position)
    }

    /// Deepest nesting of lists, tuples and dicts accepted (a checkpoint needs about 5).
    static let maxDepth = 64
    /// Most values one pickle may freeze into: shared references ("billion laughs") are copied when frozen,
    /// so a few hundred bytes could otherwise expand to GiBs. A checkpoint has a few thousand values.
    static let maxValues = 1_000_000

    static func freeze(_ item: StackItem, depth: Int, offset: Int, budget: inout Int) throws -> PickleValue {
        // A pickle can build cycles (a list appended to itself); data never needs this depth.
        guard depth < Self.maxDepth else {
            throw PickleError(
                code: .malformed, offset: offset,
                detail: "nesting deeper than \(Self.maxDepth) levels (cyclic or crafted data); not a model checkpoint")
        }
        budget -= 1
        guard budget >= 0 else {
            throw PickleError(
                code: .malformed, offset: offset,
                detail: "the pickle expands to more than \(Self.maxValues) values (shared references repeated, "
                    + "a decompression bomb); not a model checkpoint")
        }
        switch item {
        case .value(let value): return value
        case .list(let box):
            var items: [PickleValue] = []
            for child in box.items {
                items.append(try freeze(child, depth: depth + 1, offset: offset, budget: &budget))
            }
            return .list(items)
        case .tuple(let children, _):
            var items: [PickleValue] = []
            for child in children {
                items.append(try freeze(child, depth: depth + 1, offset: offset, budget: &budget))
            }
            return .tuple(items)
        case .dict(let box):
            var entries: [PickleValue.DictEntry] = []
            for (key, value) in box.entries {
                entries.append(
                    PickleValue.DictEntry(
                        key: try freeze(key, depth: depth + 1, offset: offset, budget: &budget),
                        value: try freeze(value, depth: depth + 1, offset: offset, budget: &budget)))
            }
            return .dict(entries)
        case .callable, .storageType, .storage, .numpyDType, .mark:
            throw PickleError(
                code: .malformed, offset: offset, detail: "a type or storage object appears as a plain value")
        }
    }

    struct Machine {
        let bytes: [UInt8]
        var position = 0
        var stack: [StackItem] = []
        var memo: [Int: StackItem] = [:]
        let legacy: Bool
        /// Every list and dict created, so `dismantle` can free them without recursing.
        var boxes: [AnyObject] = []

        init(bytes: [UInt8], start: Int = 0, legacy: Bool = false) {
            self.bytes = bytes
            self.position = start
            self.legacy = legacy
        }

        /// Empties every box while all are still held, so no release recurses through a deep chain.
        mutating func dismantle() {
            self.stack.removeAll()
            self.memo.removeAll()
            for box in self.boxes {
                if let list = box as? ListBox { list.items.removeAll() }
                if let dict = box as? DictBox { dict.entries.removeAll() }
            }
            self.boxes.removeAll()
        }

        /// Pushes a tuple, refusing tuples nested deeper than `maxDepth` (their release would recurse).
        mutating func pushTuple(_ items: [StackItem]) throws {
            var depth = 1
            for item in items {
                if case .tuple(_, let inner) = item { depth = max(depth, inner + 1) }
            }
            guard depth <= RestrictedUnpickler.maxDepth else {
                throw self.fail(
                    .malformed,
                    "tuples nested deeper than \(RestrictedUnpickler.maxDepth) levels; not a model checkpoint")
            }
            self.stack.append(.tuple(items, depth: depth))
        }

        mutating func pushBox(_ item: StackItem) {
            if case .list(let box) = item { self.boxes.append(box) }
            if case .dict(let box) = item { self.boxes.append(box) }
            self.stack.append(item)
        }

        func fail(_ code: PickleError.Code, _ detail: String) -> PickleError {
            PickleError(code: code, offset: self.position, detail: detail)
        }

        mutating func read(_ count: Int) throws -> ArraySlice<UInt8> {
            guard count >= 0, self.position + count <= self.bytes.count else {
                throw self.fail(.truncated, "file ends in the middle of an opcode (truncated data.pkl)")
            }
            defer { self.position += count }
            return self.bytes[self.position..<(self.position + count)]
        }

        mutating func readUInt(_ count: Int) throws -> UInt64 {
            var value: UInt64 = 0
            for (index, byte) in try self.read(count).enumerated() { value |= UInt64(byte) << (8 * UInt64(index)) }
            return value
        }

        mutating func readLine() throws -> String {
            guard let end = self.bytes[self.position...].firstIndex(of: 0x0A) else {
                throw self.fail(.truncated, "unterminated text argument")
            }
            defer { self.position = end + 1 }
            return String(decoding: self.bytes[self.position..<end], as: UTF8.self)
        }

        mutating func readString(lengthBytes: Int) throws -> String {
            let length = try self.readUInt(lengthBytes)
            guard length <= UInt64(self.bytes.count) else {
                throw self.fail(.truncated, "string length \(length) exceeds the file")
            }
            return String(decoding: try self.read(Int(length)), as: UTF8.self)
        }

        mutating func pop() throws -> StackItem {
            guard let top = self.stack.popLast() else { throw self.fail(.malformed, "stack underflow") }
            if case .mark = top { throw self.fail(.malformed, "unexpected MARK") }
            return top
        }

        /// Pops everything above the topmost MARK (and the MARK).
        mutating func popToMark() throws -> [StackItem] {
            guard
                let markIndex = self.stack.lastIndex(where: { if case .mark = $0 { return true } else { return false } }
                )
            else { throw self.fail(.malformed, "no MARK on the stack") }
            let items = Array(self.stack[(markIndex + 1)...])
            self.stack.removeSubrange(markIndex...)
            return items
        }

        mutating func memoize(_ index: Int) throws {
            guard let top = self.stack.last else { throw self.fail(.malformed, "memoising an empty stack") }
            self.memo[index] = top
        }

        mutating func run() throws -> StackItem {
            while true {
                let opcode = try self.read(1).first!
                switch opcode {
                case 0x80:  // PROTO
                    let version = try self.readUInt(1)
                    guard version <= 5 else {
                        throw self.fail(.malformed, "pickle protocol \(version) is not supported")
                    }
                case 0x95:  // FRAME: a length hint only
                    _ = try self.readUInt(8)
                case 0x2E:  // STOP
                    return try self.pop()
                case 0x28:  // MARK
                    self.stack.append(.mark)
                case 0x7D:  // EMPTY_DICT
                    self.pushBox(.dict(DictBox()))
                case 0x5D:  // EMPTY_LIST
                    self.pushBox(.list(ListBox()))
                case 0x29:  // EMPTY_TUPLE
                    try self.pushTuple([])
                case 0x74:  // TUPLE
                    try self.pushTuple(try self.popToMark())
                case 0x85:  // TUPLE1
                    let a = try self.pop()
                    try self.pushTuple([a])
                case 0x86:  // TUPLE2
                    let b = try self.pop()
                    let a = try self.pop()
                    try self.pushTuple([a, b])
                case 0x87:  // TUPLE3
                    let c = try self.pop()
                    let b = try self.pop()
                    let a = try self.pop()
                    try self.pushTuple([a, b, c])
                case 0x71:  // BINPUT
                    try self.memoize(Int(try self.readUInt(1)))
                case 0x72:  // LONG_BINPUT
                    try self.memoize(Int(try self.readUInt(4)))
                case 0x94:  // MEMOIZE
                    try self.memoize(self.memo.count)
                case 0x68, 0x6A:  // BINGET, LONG_BINGET
                    let index = Int(try self.readUInt(opcode == 0x68 ? 1 : 4))
                    guard let item = self.memo[index] else {
                        throw self.fail(.malformed, "memo entry \(index) is not set")
                    }
                    self.stack.append(item)
                case 0x58:  // BINUNICODE
                    self.stack.append(.value(.string(try self.readString(lengthBytes: 4))))
                case 0x8C:  // SHORT_BINUNICODE
                    self.stack.append(.value(.string(try self.readString(lengthBytes: 1))))
                case 0x8D:  // BINUNICODE8
                    self.stack.append(.value(.string(try self.readString(lengthBytes: 8))))
                case 0x43, 0x42:  // SHORT_BINBYTES, BINBYTES
                    let length = Int(try self.readUInt(opcode == 0x43 ? 1 : 4))
                    self.stack.append(.value(.bytes(Array(try self.read(length)))))
                case 0x4A:  // BININT (signed 32-bit)
                    self.stack.append(.value(.int(Int(Int32(truncatingIfNeeded: try self.readUInt(4))))))
                case 0x4B:  // BININT1
                    self.stack.append(.value(.int(Int(try self.readUInt(1)))))
                case 0x4D:  // BININT2
                    self.stack.append(.value(.int(Int(try self.readUInt(2)))))
                case 0x8A:  // LONG1: little-endian two's complement, up to 8 bytes here
                    let length = Int(try self.readUInt(1))
                    guard length <= 8 else { throw self.fail(.malformed, "integer of \(length) bytes is too large") }
                    var value = try self.readUInt(length)
                    if length > 0 && length < 8 && value & (1 << (8 * UInt64(length) - 1)) != 0 {
                        value |= ~((1 << (8 * UInt64(length))) - 1)
                    }
                    self.stack.append(.value(.int(Int(Int64(bitPattern: value)))))
                case 0x47:  // BINFLOAT: big-endian double
                    let raw = try self.read(8).reduce(UInt64(0)) { ($0 << 8) | UInt64($1) }
                    self.stack.append(.value(.float(Double(bitPattern: raw))))
                case 0x4E:  // NONE
                    self.stack.append(.value(.none))
                case 0x88:  // NEWTRUE
                    self.stack.append(.value(.bool(true)))
                case 0x89:  // NEWFALSE
                    self.stack.append(.value(.bool(false)))
                case 0x30:  // POP
                    _ = try self.pop()
                case 0x31:  // POP_MARK
                    _ = try self.popToMark()
                case 0x32:  // DUP
                    guard let top = self.stack.last else { throw self.fail(.malformed, "DUP on an empty stack") }
                    self.stack.append(top)
                case 0x63:  // GLOBAL 'module\nname\n'
                    let module = try self.readLine()
                    let name = try self.readLine()
                    try self.pushGlobal(module: module, name: name)
                case 0x93:  // STACK_GLOBAL
                    let nameItem = try self.pop()
                    let moduleItem = try self.pop()
                    guard case .value(.string(let name)) = nameItem, case .value(.string(let module)) = moduleItem
                    else {
                        throw self.fail(.malformed, "STACK_GLOBAL needs two strings")
                    }
                    try self.pushGlobal(module: module, name: name)
                case 0x51:  // BINPERSID
                    try self.persistentLoad(try self.pop())
                case 0x52:  // REDUCE
                    let arguments = try self.pop()
                    let callable = try self.pop()
                    self.pushBox(try self.reduce(callable, arguments))
                case 0x62:  // BUILD
                    let state = try self.pop()
                    let object = try self.pop()
                    self.stack.append(try self.build(object, state))
                case 0x73:  // SETITEM
                    let value = try self.pop()
                    let key = try self.pop()
                    try self.dictTop().entries.append((key, value))
                case 0x75:  // SETITEMS
                    let items = try self.popToMark()
                    guard items.count % 2 == 0 else { throw self.fail(.malformed, "SETITEMS with an odd item count") }
                    let box = try self.dictTop()
                    for index in stride(from: 0, to: items.count, by: 2) {
                        box.entries.append((items[index], items[index + 1]))
                    }
                case 0x61:  // APPEND
                    let value = try self.pop()
                    try self.listTop().items.append(value)
                case 0x65:  // APPENDS
                    let items = try self.popToMark()
                    try self.listTop().items.append(contentsOf: items)
                default:
                    throw PickleError(
                        code: .unknownOpcode(opcode), offset: self.position - 1,
                        detail: "unsupported pickle opcode 0x\(String(opcode, radix: 16)) "
                            + "(this reader accepts what torch.save writes; re-save the checkpoint with torch.save)")
                }
            }
        }

        func dictTop() throws -> DictBox {
            guard case .dict(let box) = self.stack.last else {
                throw self.fail(.malformed, "SETITEM(S) without a dict")
            }
            return box
        }

        func listTop() throws -> ListBox {
            guard case .list(let box) = self.stack.last else { throw self.fail(.malformed, "APPEND(S) without a list") }
            return box
        }

        mutating func pushGlobal(module: String, name: String) throws {
            guard let item = RestrictedUnpickler.resolveGlobal(module: module, name: name) else {
                throw self.fail(
                    .forbiddenGlobal("\(module).\(name)"),
                    "refusing to load: the pickle references `\(module).\(name)`, which a model checkpoint never "
                        + "needs (only tensors, storages and containers are allowed). The file may be malicious; "
                        + "nothing was executed.")
            }
            self.stack.append(item)
        }

        mutating func persistentLoad(_ pid: StackItem) throws {
            // Zip: ('storage', type, key, location, numel). Legacy: the same plus view_metadata, which
            // only pre-1.0 storage views set; a view would alias another storage's bytes, so it is refused.
            let expected = self.legacy ? 6 : 5
            guard case .tuple(let fields, _) = pid, fields.count == expected,
                !self.legacy || { if case .value(.none) = fields[5] { true } else { false } }(),
                case .value(.string("storage")) = fields[0],
                case .storageType(let dtype) = fields[1],
                case .value(.string(let key)) = fields[2],
                case .value(.string(let location)) = fields[3],
                case .value(.int(let count)) = fields[4], count >= 0
            else {
                throw self.fail(
                    .malformed,
                    self.legacy
                        ? "persistent id is not ('storage', <type>, key, location, numel, None)"
                        : "persistent id is not ('storage', <type>, key, location, numel)")
            }
            self.stack.append(
                .storage(StorageReference(dtype: dtype, key: key, location: location, elementCount: count)))
        }

        func intTuple(_ item: StackItem, _ what: String) throws -> [Int] {
            guard case .tuple(let items, _) = item else { throw self.fail(.malformed, "\(what) is not a tuple") }
            return try items.map {
                guard case .value(.int(let value)) = $0, value >= 0 else {
                    throw self.fail(.malformed, "\(what) holds a non-integer or negative value")
                }
                return value
            }
        }

        func reduce(_ callable: StackItem, _ arguments: StackItem) throws -> StackItem {
            guard case .callable(let function) = callable else {
                throw self.fail(.malformed, "REDUCE on something that is not an allowed constructor")
            }
            guard case .tuple(let args, _) = arguments else {
                throw self.fail(.malformed, "REDUCE arguments are not a tuple")
            }
            switch function {
            case .orderedDict:
                guard args.isEmpty else { throw self.fail(.malformed, "OrderedDict with arguments") }
                return .dict(DictBox())
            case .rebuildTensorV2:
                // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
                guard args.count >= 6, case .storage(let storage) = args[0], case .value(.int(let offset)) = args[1],
                    offset >= 0
                else {
                    throw self.fail(
                        .malformed, "_rebuild_tensor_v2 arguments are not (storage, offset, size, stride, …)")
                }
                let shape = try self.intTuple(args[2], "tensor size")
                let stride = try self.intTuple(args[3], "tensor stride")
                guard shape.count == stride.count else { throw self.fail(.malformed, "size and stride differ in rank") }
                return .value(
                    .tensor(TensorReference(storage: storage, storageOffset: offset, shape: shape, stride: stride)))
            case .rebuildParameter:
                guard let first = args.first, case .value(.tensor) = first else {
                    throw self.fail(.malformed, "_rebuild_parameter without a tensor")
                }
                return first
            case .numpyDType:
                guard let first = args.first, case .value(.string(let code)) = first else {
                    throw self.fail(.malformed, "numpy.dtype without a type code")
                }
                return .numpyDType(code: code, littleEndian: true)
            case .codecsEncode:
                guard args.count == 2, case .value(.string(let text)) = args[0],
                    case .value(.string(let encoding)) = args[1], encoding == "latin1" || encoding == "latin-1"
                else { throw self.fail(.malformed, "_codecs.encode is only accepted as (text, 'latin1')") }
                var bytes: [UInt8] = []
                for scalar in text.unicodeScalars {
                    guard scalar.value <= 0xFF else {
                        throw self.fail(.malformed, "latin1 text with a code point above 255")
                    }
                    bytes.append(UInt8(scalar.value))
                }
                return .value(.bytes(bytes))
            case .numpyScalar:
                guard args.count == 2, case .numpyDType(let code, let littleEndian) = args[0],
                    case .value(.bytes(let raw)) = args[1]
                else { throw self.fail(.malformed, "numpy scalar is not (dtype, bytes)") }
                return .value(try Self.numpyScalar(code: code, littleEndian: littleEndian, raw: raw, at: self.position))
            }
        }

        static func numpyScalar(code: String, littleEndian: Bool, raw: [UInt8], at offset: Int) throws -> PickleValue {
            let bits = (littleEndian ? raw : raw.reversed()).enumerated().reduce(UInt64(0)) {
                $0 | (UInt64($1.element) << (8 * UInt64($1.offset)))
            }
            switch (code, raw.count) {
            case ("f8", 8): return .float(Double(bitPattern: bits))
            case ("f4", 4): return .float(Double(Float(bitPattern: UInt32(bits))))
            case ("i8", 8): return .int(Int(Int64(bitPattern: bits)))
            case ("i4", 4): return .int(Int(Int32(bitPattern: UInt32(bits))))
            case ("b1", 1): return .bool(bits != 0)
            default:
                throw PickleError(
                    code: .malformed, offset: offset,
                    detail: "numpy scalar of type '\(code)' (\(raw.count) bytes) is not supported")
            }
        }

        func build(_ object: StackItem, _ state: StackItem) throws -> StackItem {
            switch object {
            case .numpyDType(let code, _):
                // numpy dtype state: (version, byteorder, …); '<' little, '>' big, '|' not applicable.
                guard case .tuple(let fields, _) = state, fields.count >= 2, case .value(.string(let order)) = fields[1]
                else {
                    throw self.fail(.malformed, "numpy dtype state is not a tuple")
                }
                let littleEndian: Bool
                switch order {
                case ">": littleEndian = false
                case "=": littleEndian = (1 as UInt16).littleEndian == 1
                default: littleEndian = true
                }
                return .numpyDType(code: code, littleEndian: littleEndian)
            case .dict:
                // An OrderedDict's instance attributes (state_dict's `_metadata`: module versions).
                // They are not items of the dict and nothing here needs them.
                guard case .dict = state else { throw self.fail(.malformed, "BUILD on a dict with non-dict state") }
                return object
            default:
                throw self.fail(.malformed, "BUILD (object state) is only accepted for dicts and numpy dtypes")
            }
        }
    }
}
