import Foundation
import Yams

/// The config file (YAML). Every key is optional; command-line flags override it.
///
///     model: /usr/local/share/livenessd/face-liveness-vit/model.pt
///     threshold: 0.1199        # spoof iff probability ≥ threshold (default: the checkpoint's)
///
/// See samples/livenessd.yaml for the documented schema.
struct Configuration: Decodable, Equatable {
    var model: String?
    var threshold: Double?

    static let defaultPath = "/etc/livenessd/livenessd.yaml"

    /// Reads `path`, or the default path when it exists; no file means an empty configuration.
    static func load(path: String?) throws -> Configuration {
        let chosen = path ?? Self.defaultPath
        guard FileManager.default.fileExists(atPath: chosen) else {
            if let path {
                throw CommandError("config file \(path) does not exist")
            }
            return Configuration()
        }
        let text: String
        do {
            text = try String(contentsOfFile: chosen, encoding: .utf8)
        } catch {
            throw CommandError("cannot read config file \(chosen): \(error.localizedDescription)")
        }
        do {
            return try YAMLDecoder().decode(Configuration.self, from: text.isEmpty ? "{}" : text)
        } catch {
            throw CommandError("config file \(chosen) is not valid: \(error)")
        }
    }
}

/// A failure reported to the user as one line, with exit status 2.
struct CommandError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Where the liveness model comes from.
enum ModelLocator {
    static let relativeDefault = "models/face-liveness-vit/model.pt"
    static let installedDefaults = [
        "/usr/local/share/livenessd/face-liveness-vit/model.pt",
        "/usr/share/livenessd/face-liveness-vit/model.pt",
    ]

    /// --model, then $LIVENESSD_MODEL, then the config file, then the default locations.
    static func resolve(flag: String?, configuration: Configuration, environment: [String: String]) throws -> URL {
        if let flag { return try Self.existing(flag, origin: "--model") }
        if let variable = environment["LIVENESSD_MODEL"], !variable.isEmpty {
            return try Self.existing(variable, origin: "$LIVENESSD_MODEL")
        }
        if let configured = configuration.model { return try Self.existing(configured, origin: "the config file's model:") }
        let candidates = [Self.relativeDefault] + Self.installedDefaults
        if let found = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) {
            return URL(fileURLWithPath: found)
        }
        throw CommandError(
            "no liveness model found: pass --model PATH, set LIVENESSD_MODEL, or run scripts/setup.sh "
                + "(looked in \(candidates.joined(separator: ", ")))")
    }

    static func existing(_ path: String, origin: String) throws -> URL {
        guard FileManager.default.fileExists(atPath: path) else {
            throw CommandError("model file \(path) (from \(origin)) does not exist")
        }
        return URL(fileURLWithPath: path)
    }
}
