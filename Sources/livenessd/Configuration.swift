import Foundation
import LivenessEngine
import LivenessServer
import Yams

/// The config file (YAML). Every key is optional; command-line flags override it. The documented
/// schema with defaults is samples/livenessd.yaml.
struct Configuration: Decodable, Equatable {
    var model: String?
    var threshold: Double?
    var sources: [String]?
    var socket: Socket?
    var access: Access?
    var decision: Decision?
    /// The YuNet face detector (ONNX); see `DetectorModelLocator`.
    var detector: String?
    var crop: Crop?
    /// Which opinions judge a face: `[vit, minifasnet]` (the default), or one of them.
    var models: ModelSelection?
    /// Folder holding the MiniFASNet pair's two `.pth` files; see `PairModelLocator`.
    var minifasnet: String?
    /// Weights of the opinions' logits in the fused score (default 1 each).
    var fusion: Fusion?
    /// SHA-256 digests of model files `run` may load although they are not the published ones (a model
    /// of one's own); any other unpublished file is refused as damaged.
    var trustedSHA256: [String]?

    enum CodingKeys: String, CodingKey {
        case model, threshold, sources, socket, access, decision, detector, crop, models, minifasnet, fusion
        case trustedSHA256 = "trusted_sha256"
    }

    /// `models: [vit, minifasnet]`, `models: vit`, or `models: both`.
    struct ModelSelection: Decodable, Equatable {
        var kinds: [OpinionKind]

        init(kinds: [OpinionKind]) { self.kinds = kinds }

        init(from decoder: Decoder) throws {
            let container = try decoder.singleValueContainer()
            let names: [String]
            if let single = try? container.decode(String.self) {
                names = single == "both" ? OpinionKind.allCases.map(\.rawValue) : [single]
            } else {
                names = try container.decode([String].self)
            }
            var kinds: [OpinionKind] = []
            for name in names {
                guard let kind = OpinionKind(rawValue: name) else {
                    throw DecodingError.dataCorruptedError(
                        in: container, debugDescription: "unknown model '\(name)': use vit, minifasnet or both")
                }
                if !kinds.contains(kind) { kinds.append(kind) }
            }
            guard !kinds.isEmpty else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "models: names no model")
            }
            self.kinds = kinds
        }
    }

    struct Fusion: Decodable, Equatable {
        var vit: Double?
        var minifasnet: Double?
    }

    /// `crop: {mode: detect|full, scale: 1.5}`.
    struct Crop: Decodable, Equatable {
        var mode: String?
        var scale: Double?
    }

    struct Socket: Decodable, Equatable {
        var path: String?
        /// Octal text, e.g. "0660".
        var mode: String?
        var group: String?
        /// Messages a client may have waiting before it is disconnected as too slow.
        var clientQueueLimit: Int?
        /// Connections open at once; more get one error line and are closed.
        var maxClients: Int?
        /// Seconds a connection may stay open without sending a request.
        var idleTimeoutSeconds: Double?

        enum CodingKeys: String, CodingKey {
            case path, mode, group
            case clientQueueLimit = "client_queue_limit"
            case maxClients = "max_clients"
            case idleTimeoutSeconds = "idle_timeout_seconds"
        }
    }

    struct Access: Decodable, Equatable {
        /// Observers: may subscribe and ask for status and snapshots.
        var allowUIDs: [UInt32]?
        var allowGIDs: [UInt32]?
        /// Controllers: may also change state (reset).
        var controllerUIDs: [UInt32]?
        var controllerGIDs: [UInt32]?

        enum CodingKeys: String, CodingKey {
            case allowUIDs = "allow_uids"
            case allowGIDs = "allow_gids"
            case controllerUIDs = "controller_uids"
            case controllerGIDs = "controller_gids"
        }
    }

    struct Decision: Decodable, Equatable {
        var windowFrames: Int?
        var windowSeconds: Double?
        var minimumFrames: Int?
        var hysteresis: Double?
        var smoothing: String?
        var emaAlpha: Double?
        var faceLostResetSeconds: Double?

        /// Each setting within the range the decision machine can work with; out of range, a window
        /// never fills (deciding forever) or a verdict never changes, so the file is refused instead.
        func validate(path: String) throws {
            let defaults = DecisionConfiguration(threshold: 0.5)
            let windowFrames = self.windowFrames ?? defaults.windowFrames
            if let frames = self.windowFrames, frames < 1 {
                throw CommandError("\(path): decision.window_frames must be at least 1, got \(frames)")
            }
            if let frames = self.minimumFrames, !(1...windowFrames).contains(frames) {
                throw CommandError(
                    "\(path): decision.min_frames must be between 1 and window_frames (\(windowFrames)), got \(frames)")
            }
            if let seconds = self.windowSeconds, !(seconds.isFinite && seconds > 0) {
                throw CommandError(
                    "\(path): decision.window_seconds must be a number of seconds above 0, got \(seconds)")
            }
            if let band = self.hysteresis, !(band >= 0 && band < 0.5) {
                throw CommandError("\(path): decision.hysteresis must be at least 0 and below 0.5, got \(band)")
            }
            if let alpha = self.emaAlpha, !(alpha > 0 && alpha <= 1) {
                throw CommandError("\(path): decision.ema_alpha must be above 0 and at most 1, got \(alpha)")
            }
            if let seconds = self.faceLostResetSeconds, !(seconds.isFinite && seconds >= 0) {
                throw CommandError(
                    "\(path): decision.face_lost_reset_seconds must be a number of seconds, 0 or more, got \(seconds)")
            }
        }

        enum CodingKeys: String, CodingKey {
            case hysteresis, smoothing
            case windowFrames = "window_frames"
            case windowSeconds = "window_seconds"
            case minimumFrames = "min_frames"
            case emaAlpha = "ema_alpha"
            case faceLostResetSeconds = "face_lost_reset_seconds"
        }
    }

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
        let configuration: Configuration
        do {
            configuration = try YAMLDecoder().decode(Configuration.self, from: text.isEmpty ? "{}" : text)
        } catch {
            throw CommandError("config file \(chosen) is not valid: \(error)")
        }
        try configuration.validate(path: chosen)
        return configuration
    }

    func validate(path: String) throws {
        if let threshold, !(0...1).contains(threshold) {
            throw CommandError("\(path): threshold must be between 0 and 1, got \(threshold)")
        }
        if let limit = self.socket?.maxClients, !(1...100_000).contains(limit) {
            throw CommandError("\(path): socket.max_clients must be from 1 to 100000, got \(limit)")
        }
        if let seconds = self.socket?.idleTimeoutSeconds, !(seconds >= 0.1 && seconds <= 86_400) {
            throw CommandError("\(path): socket.idle_timeout_seconds must be from 0.1 to 86400, got \(seconds)")
        }
        if let mode = self.socket?.mode, UInt32(mode, radix: 8) == nil {
            throw CommandError("\(path): socket.mode must be octal like \"0660\", got \(mode)")
        }
        if let smoothing = self.decision?.smoothing, !["mean", "median", "ema"].contains(smoothing) {
            throw CommandError("\(path): decision.smoothing must be mean, median or ema, got \(smoothing)")
        }
        if let mode = self.crop?.mode, !["detect", "full"].contains(mode) {
            throw CommandError("\(path): crop.mode must be detect or full, got \(mode)")
        }
        if let scale = self.crop?.scale, !(scale >= 0.5 && scale <= 5) {
            throw CommandError("\(path): crop.scale must be between 0.5 and 5, got \(scale)")
        }
        if let decision = self.decision { try decision.validate(path: path) }
        for digest in self.trustedSHA256 ?? []
        where digest.count != 64 || !digest.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) {
            throw CommandError("\(path): trusted_sha256 entries are 64 lower-case hex digits, got '\(digest)'")
        }
        for (name, weight) in [("vit", self.fusion?.vit), ("minifasnet", self.fusion?.minifasnet)] {
            if let weight, !(weight.isFinite && weight >= 0 && weight <= 100) {
                throw CommandError("\(path): fusion.\(name) must be a weight between 0 and 100, got \(weight)")
            }
        }
    }

    /// The fusion weights from the file (1 each by default).
    var scoreFusion: ScoreFusion {
        var weights: [OpinionKind: Double] = [:]
        if let weight = self.fusion?.vit { weights[.vit] = weight }
        if let weight = self.fusion?.minifasnet { weights[.minifasnet] = weight }
        return ScoreFusion(weights: weights)
    }

    /// The decision rules this file describes on top of `threshold`.
    func decisionConfiguration(threshold: Double) -> DecisionConfiguration {
        var rules = DecisionConfiguration(threshold: threshold)
        guard let decision else { return rules }
        if let value = decision.windowFrames { rules.windowFrames = value }
        if let value = decision.windowSeconds { rules.windowSeconds = value }
        if let value = decision.minimumFrames { rules.minimumScoredFrames = value }
        if let value = decision.hysteresis { rules.hysteresis = value }
        if let value = decision.faceLostResetSeconds { rules.faceLostResetSeconds = value }
        switch decision.smoothing {
        case "median": rules.smoothing = .median
        case "ema": rules.smoothing = .exponential(alpha: decision.emaAlpha ?? 0.3)
        default: rules.smoothing = .mean
        }
        return rules
    }

    /// Socket access from the file.
    var accessPolicy: AccessPolicy {
        var policy = AccessPolicy()
        policy.allowedUIDs = Set(self.access?.allowUIDs ?? [])
        policy.allowedGIDs = Set(self.access?.allowGIDs ?? [])
        policy.controllerUIDs = Set(self.access?.controllerUIDs ?? [])
        policy.controllerGIDs = Set(self.access?.controllerGIDs ?? [])
        if let mode = self.socket?.mode, let value = UInt32(mode, radix: 8) { policy.socketMode = value }
        policy.socketGroup = self.socket?.group
        return policy
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
    static let installedDefaults = ["/usr/local/share/livenessd/yunet/face_detection_yunet.onnx"]

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
