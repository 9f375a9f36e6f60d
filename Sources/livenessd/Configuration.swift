import Foundation
import LivenessEngine
import LivenessServer

extension Configuration {
    /// `Configuration.read` with its error as the one line every command reports (exit 2).
    static func load(path: String?) throws -> Configuration {
        do {
            return try Self.read(path: path)
        } catch {
            throw CommandError(error.description)
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
        if let configured = configuration.model {
            return try Self.existing(configured, origin: "the config file's model:")
        }
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

/// Where the MiniFASNet pair is: --minifasnet, then $LIVENESSD_MINIFASNET, then the config file, then
/// the default folders (scripts/setup.sh and install.sh put the two `.pth` files there).
enum PairModelLocator {
    static let relativeDefault = "models/silent-face"
    static let installedDefaults = ["/usr/local/share/livenessd/silent-face", "/usr/share/livenessd/silent-face"]

    static func resolve(flag: String?, configuration: Configuration, environment: [String: String]) throws -> URL {
        if let flag { return try Self.existing(flag, origin: "--minifasnet") }
        if let variable = environment["LIVENESSD_MINIFASNET"], !variable.isEmpty {
            return try Self.existing(variable, origin: "$LIVENESSD_MINIFASNET")
        }
        if let configured = configuration.minifasnet {
            return try Self.existing(configured, origin: "the config file's minifasnet:")
        }
        let candidates = [Self.relativeDefault] + Self.installedDefaults
        if let found = candidates.first(where: { Self.holdsPair($0) }) { return URL(fileURLWithPath: found) }
        throw CommandError(
            "the MiniFASNet pair was not found: pass --minifasnet FOLDER (holding "
                + MiniFASNetPair.fileNames.joined(separator: " and ") + "), set LIVENESSD_MINIFASNET, run "
                + "scripts/setup.sh, or judge with the ViT alone (--models vit) (looked in \(candidates.joined(separator: ", ")))"
        )
    }

    static func holdsPair(_ folder: String) -> Bool {
        MiniFASNetPair.fileNames.allSatisfy { FileManager.default.fileExists(atPath: folder + "/" + $0) }
    }

    static func existing(_ path: String, origin: String) throws -> URL {
        guard Self.holdsPair(path) else {
            throw CommandError(
                "MiniFASNet folder \(path) (from \(origin)) does not hold "
                    + MiniFASNetPair.fileNames.joined(separator: " and ")
                    + "; run scripts/setup.sh, or judge with the ViT alone (--models vit)")
        }
        return URL(fileURLWithPath: path)
    }
}

/// Where the YuNet face detector is: --detector, then $LIVENESSD_DETECTOR, then the config file, then
/// the default locations (scripts/setup.sh installs it in both).
enum DetectorModelLocator {
    static let relativeDefault = "models/yunet/face_detection_yunet.onnx"
    static let installedDefaults = [
        "/usr/local/share/livenessd/yunet/face_detection_yunet.onnx",
        "/usr/share/livenessd/yunet/face_detection_yunet.onnx",
    ]

    /// The detector file; nil when none was named and none is in the default locations. A named file
    /// that does not exist is an error.
    static func resolve(flag: String?, configuration: Configuration, environment: [String: String]) throws -> URL? {
        if let flag { return try Self.existing(flag, origin: "--detector") }
        if let variable = environment["LIVENESSD_DETECTOR"], !variable.isEmpty {
            return try Self.existing(variable, origin: "$LIVENESSD_DETECTOR")
        }
        if let configured = configuration.detector {
            return try Self.existing(configured, origin: "the config file's detector:")
        }
        let candidates = [Self.relativeDefault] + Self.installedDefaults
        return candidates.first(where: { FileManager.default.fileExists(atPath: $0) }).map { URL(fileURLWithPath: $0) }
    }

    static func existing(_ path: String, origin: String) throws -> URL {
        guard FileManager.default.fileExists(atPath: path) else {
            throw CommandError("face detector file \(path) (from \(origin)) does not exist")
        }
        return URL(fileURLWithPath: path)
    }
}

/// `run` loads only the published model files, or files whose digest the config names: a damaged
/// file (a flipped bit on an SD card) is refused before it can judge anyone.
enum ModelDigestPin {
    static func check(_ url: URL, published: String?, configuration: Configuration) throws {
        let actual = try FileDigest.sha256(of: url)
        guard let published, actual != published else { return }
        if (configuration.trustedSHA256 ?? []).contains(actual) { return }
        throw CommandError(
            "\(url.path) is not the published \(url.lastPathComponent): SHA-256 \(actual), expected \(published). "
                + "The file is damaged or a different model: reinstall it with scripts/setup.sh, or, to run a model "
                + "of your own, name its digest under trusted_sha256: in the config file")
    }
}
