import Crypto
import Foundation

/// The SHA-256 of a model file, as logs and reports name it: which exact file judged.
public enum FileDigest {
    /// Read in 1 MiB chunks: a checkpoint need not sit in memory a second time just to be named.
    static let chunkSize = 1 << 20

    /// Lower-case hex, as `sha256sum` prints it.
    public static func sha256(of url: URL) throws -> String {
        let handle = try FileHandle(forReadingFrom: url)
        defer { try? handle.close() }
        var hasher = SHA256()
        while let chunk = try handle.read(upToCount: Self.chunkSize), !chunk.isEmpty {
            hasher.update(data: chunk)
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }
}
