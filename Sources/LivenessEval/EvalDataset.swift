import Foundation

/// The ground truth of one presentation (ISO/IEC 30107-3 terms).
public enum PresentationLabel: String, Codable, Sendable {
    case bonaFide = "bona_fide"
    case attack

    /// Accepts the usual spellings of dataset labels; nil for anything else (unknown, unlabelled …).
    init?(word: String) {
        switch word.trimmingCharacters(in: .whitespaces).lowercased() {
        case "live", "bona_fide", "bonafide", "bona-fide", "bona fide", "real", "genuine", "0": self = .bonaFide
        case "spoof", "attack", "fake", "pa", "presentation_attack", "1": self = .attack
        default: return nil
        }
    }
}

/// One file to present to the pipeline, with its label.
public struct Presentation: Codable, Sendable, Equatable {
    /// As given (relative to the dataset folder or manifest when it was relative there).
    public var path: String
    public var label: PresentationLabel
    /// Presentation attack instrument species (`print`, `replay`, `mask` …); nil for bona fide.
    public var species: String?
    /// `dev`, `eval`, `train` … when the manifest has a split column.
    public var split: String?
    /// Filesystem location.
    public var location: String
}

/// The presentations of an evaluation run, and the rows that were left out (with why).
public struct EvalDataset: Sendable {
    public var presentations: [Presentation]
    /// Rows or files that are not presentations (unknown label, not a media file …), with the reason.
    public var excluded: [(path: String, reason: String)]
    /// Where the list came from (a folder layout or a manifest path).
    public var origin: String

    static let mediaExtensions: Set<String> = [
        "jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff", "gif", "pgm", "ppm",
        "mp4", "mov", "m4v", "avi", "mkv", "webm", "mpg", "mpeg", "ts", "y4m", "3gp",
    ]
    static let stillExtensions: Set<String> = ["jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff", "pgm", "ppm"]
    static let manifestNames = ["MANIFEST.tsv", "manifest.tsv", "MANIFEST.csv", "manifest.csv"]

    static func isStill(_ path: String) -> Bool {
        Self.stillExtensions.contains((path as NSString).pathExtension.lowercased())
    }

    /// `path` is a manifest (.tsv/.csv) or a folder: a folder holding a manifest uses it, else its
    /// layout (`live/…`, `spoof/<species>/…`).
    public static func load(path: String) throws -> EvalDataset {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw EvalError(
                "\(path): no such file or folder; give a folder laid out as live/ and spoof/<species>/, "
                    + "or a manifest (.tsv/.csv)")
        }
        if !isDirectory.boolValue { return try Self.manifest(path: path) }
        for name in Self.manifestNames where FileManager.default.fileExists(atPath: path + "/" + name) {
            return try Self.manifest(path: path + "/" + name)
        }
        return try Self.layout(folder: path)
    }

    // MARK: - Folder layout

    /// `live/` (or bona_fide/, real/) holds bona fide presentations at any depth; `spoof/` (or
    /// attack/, fake/) holds attacks, the first folder below it naming the species (files directly
    /// in it: species `unknown`).
    static func layout(folder: String) throws -> EvalDataset {
        let manager = FileManager.default
        let top = try manager.contentsOfDirectory(atPath: folder).sorted()
        var presentations: [Presentation] = []
        var excluded: [(String, String)] = []
        for name in top {
            var isDirectory: ObjCBool = false
            let classFolder = folder + "/" + name
            guard manager.fileExists(atPath: classFolder, isDirectory: &isDirectory), isDirectory.boolValue else {
                continue
            }
            guard let label = PresentationLabel(word: name) else {
                excluded.append(
                    (name + "/", "folder name is not a label (live, bona_fide, real / spoof, attack, fake)"))
                continue
            }
            let files = (manager.enumerator(atPath: classFolder)?.allObjects as? [String] ?? []).sorted()
            for relative in files {
                var isDir: ObjCBool = false
                let location = classFolder + "/" + relative
                // A link to a missing file is kept: it is reported as a failure to acquire, not hidden.
                let dangling =
                    (try? manager.destinationOfSymbolicLink(atPath: location)) != nil
                    && !manager.fileExists(atPath: location)
                guard dangling || (manager.fileExists(atPath: location, isDirectory: &isDir) && !isDir.boolValue) else {
                    continue
                }
                let path = name + "/" + relative
                let ext = (relative as NSString).pathExtension.lowercased()
                guard Self.mediaExtensions.contains(ext) else {
                    if !relative.hasPrefix(".") { excluded.append((path, "not a picture or clip (.\(ext))")) }
                    continue
                }
                let components = relative.split(separator: "/")
                let species = label == .attack ? (components.count > 1 ? String(components[0]) : "unknown") : nil
                presentations.append(
                    Presentation(path: path, label: label, species: species, split: nil, location: location))
            }
        }
        guard !presentations.isEmpty else {
            throw EvalError(
                "\(folder): no pictures or clips under live/ or spoof/<species>/ (and no MANIFEST.tsv); see `livenessd eval --help`"
            )
        }
        return EvalDataset(presentations: presentations, excluded: excluded, origin: folder)
    }

    // MARK: - Manifest

    /// A TSV or CSV manifest: columns path, label, attack species, optional split — by header names
    /// (path|file|filename, label, species|attack_type|attack|pai, split) when the first row has them,
    /// else in that order. Paths are relative to the manifest's folder.
    static func manifest(path: String) throws -> EvalDataset {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw EvalError("\(path): cannot read the manifest (\(error.localizedDescription))")
        }
        let separator: Character = path.lowercased().hasSuffix(".csv") ? "," : (text.contains("\t") ? "\t" : ",")
        let rows = DelimitedText.rows(text, separator: separator).filter { !($0.count == 1 && $0[0].isEmpty) }
        guard let first = rows.first else { throw EvalError("\(path): the manifest is empty") }
        let names = first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        func column(_ candidates: [String]) -> Int? { names.firstIndex { candidates.contains($0) } }
        let header = column(["path", "file", "filename", "file_name"]) != nil
        let pathColumn = header ? column(["path", "file", "filename", "file_name"])! : 0
        guard let labelColumn = header ? column(["label", "class", "ground_truth"]) : 1 else {
            throw EvalError(
                "\(path): the manifest's header has no `label` column (columns: path, label, species, split)")
        }
        let speciesColumn = header ? column(["species", "attack_type", "attack", "pai", "pai_species", "type"]) : 2
        let splitColumn = header ? column(["split", "set", "subset", "partition"]) : 3
        let base = (path as NSString).deletingLastPathComponent
        var presentations: [Presentation] = []
        var excluded: [(String, String)] = []
        for (index, row) in rows.enumerated().dropFirst(header ? 1 : 0) {
            func field(_ column: Int?) -> String? {
                guard let column, column < row.count else { return nil }
                let value = row[column].trimmingCharacters(in: .whitespaces)
                return value.isEmpty ? nil : value
            }
            guard let file = field(pathColumn) else {
                excluded.append(("line \(index + 1)", "no path"))
                continue
            }
            guard let labelWord = field(labelColumn) else {
                excluded.append((file, "no label"))
                continue
            }
            guard let label = PresentationLabel(word: labelWord) else {
                excluded.append((file, "label `\(labelWord)` is neither bona fide (live) nor attack (spoof)"))
                continue
            }
            let location = file.hasPrefix("/") ? file : (base.isEmpty ? file : base + "/" + file)
            var species: String?
            if label == .attack {
                let word = field(speciesColumn)?.lowercased()
                species = (word == nil || word == "none") ? "unknown" : word
            }
            presentations.append(
                Presentation(
                    path: file, label: label, species: species, split: field(splitColumn)?.lowercased(),
                    location: location))
        }
        guard !presentations.isEmpty else {
            throw EvalError("\(path): no labelled rows (labels live|bona_fide / spoof|attack)")
        }
        return EvalDataset(presentations: presentations, excluded: excluded, origin: path)
    }
}

/// RFC 4180 rows (quoted fields with doubled quotes, separators and newlines inside quotes).
/// Written here because none of the mirrored packages reads CSV, and manifests need only this.
enum DelimitedText {
    static func rows(_ text: String, separator: Character) -> [[String]] {
        var rows: [[String]] = []
        var row: [String] = []
        var field = ""
        var quoted = false
        var characters = text.makeIterator()
        var pending: Character? = nil
        func next() -> Character? {
            if let character = pending {
                pending = nil
                return character
            }
            return characters.next()
        }
        while let character = next() {
            if quoted {
                if character == "\"" {
                    if let following = next() {
                        if following == "\"" {
                            field.append("\"")
                        } else {
                            quoted = false
                            pending = following
                        }
                    } else {
                        quoted = false
                    }
                } else {
                    field.append(character)
                }
                continue
            }
            switch character {
            case "\"" where field.isEmpty: quoted = true
            case separator:
                row.append(field)
                field = ""
            case "\n", "\r\n", "\r":
                row.append(field)
                rows.append(row)
                row = []
                field = ""
            default: field.append(character)
            }
        }
        if !field.isEmpty || !row.isEmpty {
            row.append(field)
            rows.append(row)
        }
        return rows
    }
}
