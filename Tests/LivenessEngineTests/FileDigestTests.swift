import Foundation
import LivenessEngine
import TestSupport
import Testing

/// The streamed digest is the digest of the whole file, across chunk boundaries too.
@Suite struct FileDigestTests {
    @Test func agreesWithSha256sum() throws {
        let folder = try TestAssets.temporaryDirectory("file-digest")
        // Empty, one byte, and 2 MiB + 3 bytes (two full chunks and a short one).
        for count in [0, 1, 2 << 20 + 3] {
            let url = folder.appendingPathComponent("\(count).bin")
            try Data((0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 11) }).write(to: url)
            let expected = String(try Program.run("/usr/bin/sha256sum", [url.path]).prefix(64))
            #expect(try FileDigest.sha256(of: url) == expected, "\(count) bytes")
        }
    }

    @Test func missingFileThrows() {
        #expect(throws: (any Error).self) { try FileDigest.sha256(of: URL(fileURLWithPath: "/nonexistent/model.pt")) }
    }
}
