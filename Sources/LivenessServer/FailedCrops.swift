import CaptureKit
import Foundation
import Logging

/// `verify.save_failed`: the face crop (the ViT's 224² grey input) of every transaction that did not
/// open, as a PNG in one folder, for the site to review attacks and false refusals. The folder holds at
/// most `limit` crops: the oldest go first. Written on a queue of its own (never the inference queue),
/// each file atomically (a temporary name, then rename), named
/// `UTC-TIME_OUTCOME_TRANSACTION-ID.png` so that a listing is in time order.
public final class FailedCropStore: Sendable {
    public let directory: URL
    public let limit: Int
    private let logger: Logger
    private let queue = DispatchQueue(label: "livenessd.save-failed", qos: .utility)

    /// Makes the folder if needed and checks that it can be written: a bad setting fails at start.
    public init(directory: String, limit: Int, logger: Logger) throws {
        self.directory = URL(fileURLWithPath: directory, isDirectory: true)
        self.limit = max(1, limit)
        self.logger = logger
        do {
            try FileManager.default.createDirectory(
                at: self.directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o750])
        } catch {
            throw ServerError("verify.save_failed: cannot create \(directory): \(error.localizedDescription)")
        }
        guard access(directory, W_OK | X_OK) == 0 else {
            throw ServerError(
                "verify.save_failed: \(directory) is not writable by uid \(getuid()) "
                    + "(under systemd, give it with StateDirectory= or ReadWritePaths=)")
        }
    }

    /// Queues one crop (row-major grey, square) to be written.
    public func save(crop: [UInt8], id: String, outcome: String, source: String, time: Date = Date()) {
        self.queue.async { self.write(crop: crop, id: id, outcome: outcome, source: source, time: time) }
    }

    /// Waits until every queued crop is written (tests, shutdown).
    public func flush() { self.queue.sync {} }

    private func write(crop: [UInt8], id: String, outcome: String, source: String, time: Date) {
        let side = Int(Double(crop.count).squareRoot())
        guard side > 0, side * side == crop.count else { return }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let stamp = formatter.string(from: time).replacingOccurrences(of: ":", with: "")
        // The id comes from a client: only letters, digits, '-', '_' and '.' reach the file name.
        let safe = String(
            id.unicodeScalars.prefix(64).map {
                CharacterSet.alphanumerics.contains($0) || "-_.".unicodeScalars.contains($0) ? Character($0) : "_"
            })
        let url = self.directory.appendingPathComponent("\(stamp)_\(outcome)_\(safe).png")
        let temporary = self.directory.appendingPathComponent(".\(stamp)_\(safe).tmp")
        do {
            let png = try PNGEncoder.encodeGrey(crop, width: side, height: side)
            try Data(png).write(to: temporary)
            guard rename(temporary.path, url.path) == 0 else {
                throw ServerError("rename failed: \(String(cString: strerror(errno)))")
            }
        } catch {
            unlink(temporary.path)
            self.logger.warning(
                "cannot save the face of a refused transaction", metadata: ["path": "\(url.path)", "error": "\(error)"])
            return
        }
        self.logger.info(
            "saved the face of a refused transaction",
            metadata: ["path": "\(url.path)", "transaction.id": "\(id)", "source.id": "\(source)"])
        self.prune()
    }

    /// Removes the oldest crops beyond `limit` (names start with the UTC time: name order is time order).
    private func prune() {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: self.directory.path)) ?? [])
            .filter { $0.hasSuffix(".png") && !$0.hasPrefix(".") }.sorted()
        guard names.count > self.limit else { return }
        for name in names.prefix(names.count - self.limit) {
            unlink(self.directory.appendingPathComponent(name).path)
        }
    }
}
