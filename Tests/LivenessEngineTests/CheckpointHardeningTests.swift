import Foundation
import LivenessEngine
import TestSupport
import Testing
import ZIPFoundation

extension PickleWriter {
    /// `{'model': {'w': <tensor>}}` for one crafted tensor on storage "0".
    static func oneTensor(numel: Int, shape: [Int], stride: [Int]) -> [UInt8] {
        var writer = PickleWriter()
        writer.emptyDict()
        writer.string("model")
        writer.emptyDict()
        writer.string("w")
        writer.tensor(storageKey: "0", shape: shape, numel: numel, stride: stride)
        writer.op(0x73)  // SETITEM
        writer.op(0x73)
        writer.stop()
        return writer.bytes
    }
}

/// Model files crafted by an adversary or damaged on disk (issue 15, H3 and H5): each is refused with a
/// CheckpointError, without a crash, a write past an array or a huge allocation.
@Suite struct CheckpointHardeningTests {
    /// A zip holding `archive/data.pkl` = `pickle` (deflated when asked) and one storage `archive/data/0`.
    func zip(pickle: [UInt8], storage: [UInt8] = [0, 0, 0, 0], deflate: Bool = false) throws -> Data {
        let archive = try Archive(accessMode: .create)
        func add(_ path: String, _ bytes: [UInt8], _ method: CompressionMethod) throws {
            try archive.addEntry(
                with: path, type: .file, uncompressedSize: Int64(bytes.count), compressionMethod: method
            ) { position, size in Data(bytes[Int(position)..<(Int(position) + size)]) }
        }
        try add("archive/data.pkl", pickle, deflate ? .deflate : .none)
        try add("archive/byteorder", Array("little".utf8), .none)
        try add("archive/data/0", storage, .none)
        return archive.data!
    }

    /// Rewrites the uncompressed size the central directory gives for `name`.
    func claim(_ size: UInt32, for name: String, in data: Data) -> Data {
        var bytes = [UInt8](data)
        let nameBytes = Array(name.utf8)
        var index = 0
        while index + 46 + nameBytes.count <= bytes.count {
            if bytes[index..<(index + 4)] == [0x50, 0x4B, 0x01, 0x02],
                Array(bytes[(index + 46)..<(index + 46 + nameBytes.count)]) == nameBytes
            {
                withUnsafeBytes(of: size.littleEndian) { bytes.replaceSubrange((index + 24)..<(index + 28), with: $0) }
                return Data(bytes)
            }
            index += 1
        }
        Issue.record("no central directory entry for \(name)")
        return data
    }

    // MARK: H3: CRC-32

    /// One flipped bit inside a storage of the published model (SD-card bit rot) used to load and change
    /// decisions; the zip's CRC-32 now refuses it.
    @Test func flippedBitInARealStorageIsRefusedByItsCRC() throws {
        let data = try Data(contentsOf: try TestAssets.modelURL)
        let real = try TorchCheckpoint(data: data, path: "model.pt")
        let head = try #require(real.stateDict["head.weight"])
        var needle: [UInt8] = []
        for value in head.values.prefix(8) { withUnsafeBytes(of: value.bitPattern.littleEndian) { needle += $0 } }
        var bytes = [UInt8](data)
        let start = try #require(
            (0...(bytes.count - needle.count)).first {
                bytes[$0] == needle[0] && Array(bytes[$0..<($0 + needle.count)]) == needle
            })
        bytes[start + 5] ^= 0x10
        expectCheckpointRefusal(.badStorage, ["model.pt", "CRC-32", "damaged", "SHA-256"]) {
            _ = try TorchCheckpoint(data: Data(bytes), path: "model.pt")
        }
    }

    // MARK: H5: sizes, strides, depth, expansion

    /// `[2^31, 2^31]` with stride `[0, 0]` stays inside a 1-element storage but has 2^62 elements.
    @Test(arguments: [
        ([1 << 31, 1 << 31], [0, 0]), ([1 << 62], [0]), ([1 << 62], [1]), ([1 << 62, 4], [0, 0]), ([1 << 29], [0]),
    ])
    func hugeOrOverflowingTensorIsRefused(shape: [Int], stride: [Int]) throws {
        let data = try self.zip(pickle: PickleWriter.oneTensor(numel: 1, shape: shape, stride: stride))
        expectCheckpointRefusal(.badTensor, ["'w'"]) { _ = try TorchCheckpoint(data: data, path: "huge.pt") }
    }

    /// A zip directory claiming a deflated data.pkl far past the limits is refused before allocating.
    @Test func absurdClaimedEntrySizeIsRefused() throws {
        let pickle = PickleWriter.oneTensor(numel: 1, shape: [1], stride: [1])
        let valid = try self.zip(pickle: pickle, deflate: true)
        _ = try TorchCheckpoint(data: valid, path: "valid.pt")
        let size = UInt32(100 << 20)
        let data = self.claim(size, for: "archive/data.pkl", in: valid)
        expectCheckpointRefusal(.badStorage, ["archive/data.pkl", "claims \(size) bytes", "more than"]) {
            _ = try TorchCheckpoint(data: data, path: "claim.pt")
        }
    }

    /// A stored entry claiming more bytes than the file holds is refused before ZIPFoundation reads past
    /// the end (which traps in its in-memory reader).
    @Test(arguments: [("archive/data/0", UInt32(0xFFFF_FFF0)), ("archive/data.pkl", UInt32(100 << 20))])
    func storedEntryPastTheEndIsRefused(entry: String, size: UInt32) throws {
        let valid = try self.zip(pickle: PickleWriter.oneTensor(numel: 1, shape: [1], stride: [1]))
        _ = try TorchCheckpoint(data: valid, path: "valid.pt")
        let data = self.claim(size, for: entry, in: valid)
        expectCheckpointRefusal(.notZip, ["entry \(entry)", "past the end", "SHA-256"]) {
            _ = try TorchCheckpoint(data: data, path: "claim.pt")
        }
    }

    /// Found by the `checkpoint` fuzz target in CI: a storage entry marked as a symbolic link (external
    /// attributes) whose local header claims 4 GiB made ZIPFoundation allocate 4 GiB in one piece. Any
    /// entry that is not a plain file is refused before it is read.
    @Test func storageThatIsASymlinkIsRefused() throws {
        let archive = try Archive(accessMode: .create)
        let pickle = PickleWriter.oneTensor(numel: 1, shape: [1], stride: [1])
        for (name, bytes, type) in [
            ("archive/data.pkl", pickle, Entry.EntryType.file), ("archive/byteorder", Array("little".utf8), .file),
            ("archive/data/0", [UInt8](repeating: 0, count: 4), .symlink),
        ] {
            try archive.addEntry(with: name, type: type, uncompressedSize: Int64(bytes.count)) { position, size in
                Data(bytes[Int(position)..<(Int(position) + size)])
            }
        }
        var bytes = [UInt8](archive.data!)
        // The local header's compressed size (byte 18) of the symlink, as in the fuzzer's input.
        let name = Array("archive/data/0".utf8)
        let signature: [UInt8] = [0x50, 0x4B, 0x03, 0x04]
        func isHeader(_ index: Int) -> Bool {
            Array(bytes[index..<(index + 4)]) == signature
                && Array(bytes[(index + 30)..<(index + 30 + name.count)]) == name
        }
        let local = try #require((0...(bytes.count - 30 - name.count)).first(where: isHeader))
        withUnsafeBytes(of: UInt32.max.littleEndian) { bytes.replaceSubrange((local + 18)..<(local + 22), with: $0) }
        expectCheckpointRefusal(.badStorage, ["archive/data/0", "symbolic link", "not a file"]) {
            _ = try TorchCheckpoint(data: Data(bytes), path: "symlink.pt")
        }
    }

    /// A deflated data.pkl that inflates past the size it claims stops at that size.
    @Test func pickleInflatingPastItsClaimIsRefused() throws {
        var writer = PickleWriter()
        writer.emptyList()
        for _ in 0..<100_000 {
            writer.op(0x4E)
            writer.op(0x30)
        }  // NONE, POP: compresses well
        writer.stop()
        let data = self.claim(1000, for: "archive/data.pkl", in: try self.zip(pickle: writer.bytes, deflate: true))
        expectCheckpointRefusal(.badStorage, ["archive/data.pkl", "inflates past the 1000 bytes it claims"]) {
            _ = try TorchCheckpoint(data: data, path: "bomb.pt")
        }
    }

    /// 10^5 nested lists (or tuples): refused, and freeing them does not recurse 10^5 deep.
    @Test(arguments: [false, true])
    func deeplyNestedPickleIsRefused(tuples: Bool) throws {
        var writer = PickleWriter()
        let depth = 100_000
        if tuples {
            writer.op(0x4E)
            for _ in 0..<depth { writer.op(0x85) }  // TUPLE1
        } else {
            for _ in 0..<depth { writer.emptyList() }
            for _ in 1..<depth { writer.op(0x61) }  // APPEND
        }
        writer.stop()
        let data = try self.zip(pickle: writer.bytes)
        expectCheckpointRefusal(.pickle, ["nest", "64"]) { _ = try TorchCheckpoint(data: data, path: "deep.pt") }
    }

    /// "Billion laughs": list i holds list i−1 twice by memo reference; freezing would copy 2^26 values.
    @Test func sharedReferenceExpansionIsRefused() throws {
        var writer = PickleWriter()
        writer.emptyList()
        writer.op(0x94)  // MEMOIZE → 0
        for level in 1...25 {
            writer.emptyList()
            writer.mark()
            for _ in 0..<2 {
                writer.op(0x6A)  // LONG_BINGET
                withUnsafeBytes(of: UInt32(level - 1).littleEndian) { writer.bytes += $0 }
            }
            writer.op(0x65)  // APPENDS
            writer.op(0x94)  // MEMOIZE → level
            writer.op(0x30)  // POP
        }
        writer.op(0x6A)
        withUnsafeBytes(of: UInt32(25).littleEndian) { writer.bytes += $0 }
        writer.stop()
        #expect(writer.bytes.count < 400)
        let data = try self.zip(pickle: writer.bytes)
        expectCheckpointRefusal(.pickle, ["more than 1000000 values"]) {
            _ = try TorchCheckpoint(data: data, path: "laughs.pt")
        }
    }

    // MARK: H5: offsets ZIPFoundation's in-memory reader would trap on

    /// The published model with `patch` applied to its bytes: each names a position ZIPFoundation 0.9.20
    /// reads at (past the end: a trap in `Archive+MemoryFile`; above Int64.max: a trap in `off_t(_:)`).
    func patchedModel(_ patch: (inout [UInt8], _ eocd: Int) -> Void) throws -> Data {
        var bytes = [UInt8](try Data(contentsOf: try TestAssets.modelURL))
        let eocd = try #require(
            (0...(bytes.count - 22)).reversed().first { bytes[$0..<($0 + 4)] == [0x50, 0x4B, 0x05, 0x06] })
        patch(&bytes, eocd)
        return Data(bytes)
    }

    func put<T: FixedWidthInteger>(_ value: T, at index: Int, in bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) {
            bytes.replaceSubrange(index..<(index + MemoryLayout<T>.size), with: $0)
        }
    }

    @Test func localHeaderOffsetPastTheEndIsRefused() throws {
        // torch.save writes a ZIP64 end record: the central directory's offset is at byte 48 of it.
        let data = try self.patchedModel { bytes, eocd in
            let record = eocd - 20 - 56
            let directory = Int(
                bytes[(record + 48)..<(record + 56)].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
            // The first entry's local header offset (32-bit, at byte 42 of its central-directory record).
            self.put(UInt32(bytes.count + 1000), at: directory + 42, in: &bytes)
        }
        expectCheckpointRefusal(.notZip, ["model.pt", "local header", "past the end", "SHA-256"]) {
            _ = try TorchCheckpoint(data: data, path: "model.pt")
        }
    }

    @Test func centralDirectoryPastTheEndIsRefused() throws {
        for offset in [UInt64(5_000_000), UInt64(1) << 63 | 1] {
            let data = try self.patchedModel { bytes, eocd in self.put(offset, at: eocd - 20 - 56 + 48, in: &bytes) }
            expectCheckpointRefusal(.notZip, ["central directory", "past the end"]) {
                _ = try TorchCheckpoint(data: data, path: "model.pt")
            }
        }
    }

    @Test func dataDescriptorPastTheEndIsRefused() throws {
        // The first entry's size made almost the file's: its data, and so the data descriptor ZIPFoundation
        // reads after it, end past the end of the file.
        let data = try self.patchedModel { bytes, eocd in
            let record = eocd - 20 - 56
            let directory = Int(
                bytes[(record + 48)..<(record + 56)].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
            self.put(UInt32(bytes.count - 10), at: directory + 20, in: &bytes)
            self.put(UInt32(bytes.count - 10), at: directory + 24, in: &bytes)
        }
        expectCheckpointRefusal(.notZip, ["entry model/data.pkl", "past the end"]) {
            _ = try TorchCheckpoint(data: data, path: "model.pt")
        }
    }
}
