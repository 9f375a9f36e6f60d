import Foundation

/// Checks, before ZIPFoundation opens an archive held in memory, that every position it will read at
/// lies inside the data and every size it will convert fits.
///
/// Why by hand: ZIPFoundation 0.9.20's in-memory backend traps when it reads at an offset past the end
/// (`Archive+MemoryFile.swift`, `readData`; upstream pull request #394 is not released), and its
/// `off_t(UInt64)` / `Int64(UInt64)` conversions trap on ZIP64 values above `Int64.max`. A damaged or
/// crafted model file must be refused with an error, never end the process; no Debian or Swift library
/// validates a zip's directory without also reading it. The walk mirrors what `Archive` reads, field
/// for field (the same ZIP64 rules): the end of central directory record, the ZIP64 record 56 + 20
/// bytes before it, each central-directory record in turn, the local header it points to, the entry's
/// data and its data descriptor. Whatever `Archive` would stop at (a bad signature) ends the walk too.
/// Remove once a ZIPFoundation release validates offsets itself.
///
/// A file without an end of central directory record is reported apart (`noEndRecord`): `Archive(data:)`
/// would throw for it, but only after opening its in-memory file, which it then never closes (a leak of
/// the whole file per attempt, found by the `checkpoint` fuzz target).
enum ZipBounds {
    enum Verdict: Equatable {
        case safe
        /// No end of central directory record: not a (complete) zip.
        case noEndRecord
        /// Why ZIPFoundation cannot read it safely.
        case unsafe(String)
    }

    static func check(_ data: Data) -> Verdict {
        data.withUnsafeBytes { raw in Self.check(raw.bindMemory(to: UInt8.self)) }
    }

    static func check(_ bytes: UnsafeBufferPointer<UInt8>) -> Verdict {
        guard let problem = Self.problem(in: bytes) else { return .safe }
        return problem.isEmpty ? .noEndRecord : .unsafe(problem)
    }

    /// "" when there is no end record, a reason when unsafe, nil when safe.
    private static func problem(in bytes: UnsafeBufferPointer<UInt8>) -> String? {
        let count = UInt64(bytes.count)
        func u16(_ at: UInt64) -> UInt64? {
            guard at <= count, count - at >= 2 else { return nil }
            let i = Int(at)
            return UInt64(bytes[i]) | UInt64(bytes[i + 1]) << 8
        }
        func u32(_ at: UInt64) -> UInt64? {
            guard let low = u16(at), let high = u16(at + 2) else { return nil }
            return low | high << 16
        }
        func u64(_ at: UInt64) -> UInt64? {
            guard let low = u32(at), let high = u32(at + 4) else { return nil }
            return low | high << 32
        }
        /// `a + b + …` or nil when it overflows.
        func sum(_ terms: UInt64...) -> UInt64? {
            var total: UInt64 = 0
            for term in terms {
                let (next, overflow) = total.addingReportingOverflow(term)
                if overflow { return nil }
                total = next
            }
            return total
        }

        // The end of central directory record, searched backwards from 22 bytes before the end, as
        // `Archive.scanForEndOfCentralDirectoryRecord` does.
        guard count >= 22 else { return "" }
        var eocd: UInt64? = nil
        var position = count - 22
        while true {
            if u32(position) == 0x0605_4b50 {
                eocd = position
                break
            }
            if position == 0 { break }
            position -= 1
        }
        // `Archive` reads the record with its comment; a comment running past the end makes it throw
        // (after the leaking open, as above).
        guard let eocd, let commentLength = u16(eocd + 20), eocd + 22 + commentLength <= count else { return "" }
        guard var directory = u32(eocd + 16), var entries = u16(eocd + 10) else { return nil }
        // The ZIP64 record `Archive` reads at a fixed distance before the end record (not where the
        // locator points); when valid, its values replace the 32-bit ones.
        if eocd > 20, eocd - 20 > 56 {
            let record = eocd - 20 - 56
            if u32(eocd - 20) == 0x0706_4b50, u32(record) == 0x0606_4b50, let version = u16(record + 14),
                version >= 45, let total = u64(record + 32), let offset = u64(record + 48)
            {
                directory = offset
                entries = total
            }
        }
        guard directory <= count else {
            return "its central directory starts at byte \(directory), past the end of the \(count)-byte file"
        }

        var index: UInt64 = 0
        while index < entries {
            // A record that is not there ends `Archive`'s walk: nothing more is read.
            guard u32(directory) == 0x0201_4b50, let versionNeeded = u16(directory + 6),
                let flags = u16(directory + 8), let method = u16(directory + 10),
                let compressed32 = u32(directory + 20), let uncompressed32 = u32(directory + 24),
                let nameLength = u16(directory + 28), let extraLength = u16(directory + 30),
                let commentLength = u16(directory + 32), let disk = u16(directory + 34),
                let offset32 = u32(directory + 42),
                let next = sum(directory, 46, nameLength, extraLength, commentLength), next <= count
            else { return nil }

            // ZIP64 extended information: only the fields whose 32-bit value is all ones, in this order,
            // and only when the field's size is exactly theirs (`ZIP64ExtendedInformation.init?`).
            var fields: [(name: String, size: UInt64)] = []
            if uncompressed32 == 0xFFFF_FFFF { fields.append(("uncompressed", 8)) }
            if compressed32 == 0xFFFF_FFFF { fields.append(("compressed", 8)) }
            if offset32 == 0xFFFF_FFFF { fields.append(("offset", 8)) }
            if disk == 0xFFFF { fields.append(("disk", 4)) }
            var zip64: [String: UInt64]? = nil
            var extra = directory + 46 + nameLength
            let extraEnd = extra + extraLength
            while extraLength > 4, extra < extraEnd - 4, let id = u16(extra), let size = u16(extra + 2) {
                let fieldEnd = extra + 4 + size
                guard fieldEnd <= extraEnd else { break }
                if id == 0x0001 {
                    if fields.reduce(0, { $0 + $1.size }) == size {
                        var values: [String: UInt64] = [:]
                        var at = extra + 4
                        for field in fields {
                            values[field.name] = field.size == 8 ? u64(at) : u32(at)
                            at += field.size
                        }
                        zip64 = values
                    }
                    break
                }
                extra = fieldEnd
            }
            let nameStart = Int(directory) + 46
            let name = "entry \(String(decoding: bytes[nameStart..<(nameStart + Int(nameLength))], as: UTF8.self))"
            let isZIP64 = versionNeeded & 0xFF >= 45 || zip64 != nil
            func effective(_ name: String, _ narrow: UInt64) -> UInt64 {
                if isZIP64, let wide = zip64?[name], wide > 0 { return wide }
                return narrow
            }
            let local = effective("offset", offset32)
            let compressed = effective("compressed", compressed32)
            let uncompressed = effective("uncompressed", uncompressed32)
            guard let localEnd = sum(local, 30), localEnd <= count else {
                return "\(name)'s local header is at byte \(local), past the end of the \(count)-byte file"
            }
            guard compressed <= count, uncompressed <= UInt64(Int64.max) else {
                return "\(name) claims \(compressed) compressed and \(uncompressed) uncompressed bytes "
                    + "in a \(count)-byte file"
            }
            guard u32(local) == 0x0403_4b50, let localName = u16(local + 26), let localExtra = u16(local + 28) else {
                return nil
            }
            guard let dataEnd = sum(local, 30, localName, localExtra, method != 0 ? compressed : uncompressed),
                dataEnd <= count
            else {
                return "\(name)'s data runs past the end of the \(count)-byte file"
            }
            if flags & 0x8 != 0 {
                // The data descriptor after the data: 4-byte signature and CRC, then both sizes, 8 bytes
                // each in a ZIP64 entry, 4 otherwise; its compressed size is the one extraction uses.
                let width: UInt64 = isZIP64 ? 8 : 4
                guard let descriptorEnd = sum(dataEnd, 8, 2 * width), descriptorEnd <= count else {
                    return "\(name)'s data descriptor lies past the end of the \(count)-byte file"
                }
                let size = isZIP64 ? u64(dataEnd + 8) : u32(dataEnd + 8)
                let inflated = isZIP64 ? u64(dataEnd + 16) : u32(dataEnd + 12)
                guard let size, let inflated, size <= count, inflated <= UInt64(Int64.max) else {
                    return "\(name)'s data descriptor claims sizes that do not fit the \(count)-byte file"
                }
            }
            directory = next
            index += 1
        }
        return nil
    }
}
