import Foundation

/// Finds the shared test material: `$LIVENESSD_TEST_ASSETS`, default `../shared` beside the package.
public enum TestAssets {
    public static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    public static let root: URL = {
        if let configured = ProcessInfo.processInfo.environment["LIVENESSD_TEST_ASSETS"], !configured.isEmpty {
            return URL(fileURLWithPath: configured, relativeTo: packageRoot).standardizedFileURL
        }
        return packageRoot.appendingPathComponent("../shared").standardizedFileURL
    }()

    public struct Missing: Error, CustomStringConvertible {
        public var description: String
    }

    /// A file under the assets root; throws (failing the test with a clear reason) when absent.
    public static func file(_ relativePath: String) throws -> URL {
        let url = Self.root.appendingPathComponent(relativePath)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw Missing(
                description: "test asset \(url.path) is missing: set LIVENESSD_TEST_ASSETS to the shared/ folder")
        }
        return url
    }

    public static var modelURL: URL { get throws { try Self.file("models/face-liveness-vit/model.pt") } }

    /// Files in an assets folder whose names end with `suffix`, sorted.
    public static func files(in folder: String, suffix: String) throws -> [URL] {
        let directory = try Self.file(folder)
        return try FileManager.default.contentsOfDirectory(atPath: directory.path)
            .filter { $0.hasSuffix(suffix) }.sorted().map { directory.appendingPathComponent($0) }
    }

    /// Little-endian float32 values of a raw `.f32` golden file.
    public static func float32(_ url: URL) throws -> [Float] {
        let data = try Data(contentsOf: url)
        return data.withUnsafeBytes { raw in
            (0..<(data.count / 4)).map {
                Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self)))
            }
        }
    }

    public static func json(_ url: URL) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any] ?? [:]
    }

    public static func maxAbsDifference(_ a: [Float], _ b: [Float]) -> Float {
        precondition(a.count == b.count, "compared arrays differ in length: \(a.count) vs \(b.count)")
        return zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
    }

    /// A fresh empty directory under the system temp folder.
    public static func temporaryDirectory(_ name: String = "livenessd-test") throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}
