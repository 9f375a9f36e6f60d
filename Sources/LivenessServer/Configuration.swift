import Foundation
import LivenessEngine
import Yams

/// The config file (YAML). Every key is optional; command-line flags override it. The documented
/// schema with defaults is samples/livenessd.yaml.
///
/// It lives with the daemon (LivenessServer) because it describes the daemon; `classify` and `eval` read
/// the same file for the model, threshold, fusion and decision settings.
public struct Configuration: Decodable, Equatable, Sendable {
    public init() {}

    public var model: String?
    public var threshold: Double?
    public var sources: [String]?
    /// Named sources: cameras and streams with their settings; events and status use the name.
    public var cameras: [Camera]?
    public var socket: Socket?
    public var access: Access?
    public var decision: Decision?
    /// What a `verify` transaction needs before it answers.
    public var verify: Verify?
    /// The YuNet face detector (ONNX); see `DetectorModelLocator`.
    public var detector: String?
    public var crop: Crop?
    /// Which opinions judge a face: `[vit, minifasnet]` (the default), or one of them.
    public var models: ModelSelection?
    /// Folder holding the MiniFASNet pair's two `.pth` files; see `PairModelLocator`.
    public var minifasnet: String?
    /// Weights of the opinions' logits in the fused score (default 1 each).
    public var fusion: Fusion?
    /// SHA-256 digests of model files `run` may load although they are not the published ones (a model
    /// of one's own); any other unpublished file is refused as damaged.
    public var trustedSHA256: [String]?
    /// Events to the site's MQTT broker (off when absent); see `MQTT`.
    public var mqtt: MQTT?
    /// Prometheus metrics over HTTP (off when absent); see `Metrics`.
    public var metrics: Metrics?
    /// Frames analysed per second of each source (0: every frame); a camera's own `analysis_fps` wins.
    /// Default `defaultAnalysisFramesPerSecond`.
    public var analysisFPS: Double?

    /// The analysis rate when neither the config nor `--analysis-fps` names one (docs/ARCHITECTURE.md,
    /// "Analysis rate": chosen on the shared clips).
    public static let defaultAnalysisFramesPerSecond = 5.0

    /// `analysis_fps` must be 0 (every frame) or a rate up to 240 frames/s.
    static func checkAnalysisFPS(_ value: Double?, path: String, label: String) throws(ConfigurationError) {
        if let value, !(value.isFinite && value >= 0 && value <= 240) {
            throw ConfigurationError(
                "\(path): \(label)analysis_fps must be 0 (every frame) or frames per second up to 240, got \(value)")
        }
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case model, threshold, sources, cameras, socket, access, decision, verify, detector, crop, models, minifasnet,
            fusion, mqtt, metrics
        case trustedSHA256 = "trusted_sha256"
        case analysisFPS = "analysis_fps"
    }

    /// `models: [vit, minifasnet]`, `models: vit`, or `models: both`.
    public struct ModelSelection: Decodable, Equatable, Sendable {
        public var kinds: [OpinionKind]

        public init(kinds: [OpinionKind]) { self.kinds = kinds }

        public init(from decoder: Decoder) throws {
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

    public struct Fusion: Decodable, Equatable, Sendable {
        public var vit: Double?
        public var minifasnet: Double?

        enum CodingKeys: String, CodingKey, CaseIterable { case vit, minifasnet }
    }

    /// `crop: {mode: detect|full, scale: 1.5, track_seconds: 0.1}`.
    public struct Crop: Decodable, Equatable, Sendable {
        public var mode: String?
        public var scale: Double?
        /// Frame time a detected face box is reused for while the face stays still (0: detect every analysed
        /// frame); see `DetectorLocator.Configuration.trackingSeconds`.
        public var trackSeconds: Double?

        enum CodingKeys: String, CodingKey, CaseIterable {
            case mode, scale
            case trackSeconds = "track_seconds"
        }
    }

    public struct Socket: Decodable, Equatable, Sendable {
        public var path: String?
        /// Octal text, e.g. "0660".
        public var mode: String?
        public var group: String?
        /// Messages a client may have waiting before it is disconnected as too slow.
        public var clientQueueLimit: Int?
        /// Connections open at once; more get one error line and are closed.
        public var maxClients: Int?
        /// Seconds a connection may stay open without sending a request.
        public var idleTimeoutSeconds: Double?

        enum CodingKeys: String, CodingKey, CaseIterable {
            case path, mode, group
            case clientQueueLimit = "client_queue_limit"
            case maxClients = "max_clients"
            case idleTimeoutSeconds = "idle_timeout_seconds"
        }
    }

    /// A user or group in an access list: a number, or a name looked up in the system's databases
    /// (`kiosk`, `video`) when the file is read.
    public enum Principal: Decodable, Equatable, Sendable {
        case number(UInt32)
        case name(String)

        public init(from decoder: Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let number = try? container.decode(UInt32.self) {
                self = .number(number)
            } else {
                self = .name(try container.decode(String.self))
            }
        }

        /// The number; for a name, the uid (`user`) or gid of that name, nil when there is none.
        public func resolve(user: Bool) -> UInt32? {
            switch self {
            case .number(let number): return number
            case .name(let name):
                var buffer = [CChar](repeating: 0, count: 16_384)
                if user {
                    var entry = passwd()
                    var result: UnsafeMutablePointer<passwd>?
                    guard getpwnam_r(name, &entry, &buffer, buffer.count, &result) == 0, result != nil else {
                        return nil
                    }
                    return entry.pw_uid
                }
                var entry = group()
                var result: UnsafeMutablePointer<group>?
                guard getgrnam_r(name, &entry, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
                return entry.gr_gid
            }
        }
    }

    public struct Access: Decodable, Equatable, Sendable {
        /// Observers: may subscribe and ask for status and snapshots. Numbers or names.
        public var allowUIDs: [Principal]?
        public var allowGIDs: [Principal]?
        /// Controllers: may also change state (reset).
        public var controllerUIDs: [Principal]?
        public var controllerGIDs: [Principal]?

        /// Each list with its key, whether it holds users, and its entries.
        var lists: [(key: String, users: Bool, entries: [Principal])] {
            [
                ("allow_uids", true, self.allowUIDs ?? []), ("allow_gids", false, self.allowGIDs ?? []),
                ("controller_uids", true, self.controllerUIDs ?? []),
                ("controller_gids", false, self.controllerGIDs ?? []),
            ]
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case allowUIDs = "allow_uids"
            case allowGIDs = "allow_gids"
            case controllerUIDs = "controller_uids"
            case controllerGIDs = "controller_gids"
        }
    }

    public struct Decision: Decodable, Equatable, Sendable {
        public var windowFrames: Int?
        public var windowSeconds: Double?
        public var minimumFrames: Int?
        public var hysteresis: Double?
        public var smoothing: String?
        public var emaAlpha: Double?
        public var faceLostResetSeconds: Double?

        /// Each setting within the range the decision machine can work with; out of range, a window
        /// never fills (deciding forever) or a verdict never changes, so the file is refused instead.
        public func validate(path: String) throws(ConfigurationError) {
            let defaults = DecisionConfiguration(threshold: 0.5)
            let windowFrames = self.windowFrames ?? defaults.windowFrames
            if let frames = self.windowFrames, frames < 1 {
                throw ConfigurationError("\(path): decision.window_frames must be at least 1, got \(frames)")
            }
            if let frames = self.minimumFrames, !(1...windowFrames).contains(frames) {
                throw ConfigurationError(
                    "\(path): decision.min_frames must be between 1 and window_frames (\(windowFrames)), got \(frames)")
            }
            if let seconds = self.windowSeconds, !(seconds.isFinite && seconds > 0) {
                throw ConfigurationError(
                    "\(path): decision.window_seconds must be a number of seconds above 0, got \(seconds)")
            }
            if let band = self.hysteresis, !(band >= 0 && band < 0.5) {
                throw ConfigurationError("\(path): decision.hysteresis must be at least 0 and below 0.5, got \(band)")
            }
            if let alpha = self.emaAlpha, !(alpha > 0 && alpha <= 1) {
                throw ConfigurationError("\(path): decision.ema_alpha must be above 0 and at most 1, got \(alpha)")
            }
            if let seconds = self.faceLostResetSeconds, !(seconds.isFinite && seconds >= 0) {
                throw ConfigurationError(
                    "\(path): decision.face_lost_reset_seconds must be a number of seconds, 0 or more, got \(seconds)")
            }
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case hysteresis, smoothing
            case windowFrames = "window_frames"
            case windowSeconds = "window_seconds"
            case minimumFrames = "min_frames"
            case emaAlpha = "ema_alpha"
            case faceLostResetSeconds = "face_lost_reset_seconds"
        }
    }

    /// One entry of `cameras:` — a V4L2 camera (`device`) or a stream (`url`) under a name of its own.
    public struct Camera: Decodable, Equatable, Sendable {
        public var name: String
        public var device: String?
        public var url: String?
        /// `WIDTHxHEIGHT` (cameras; default 640x480).
        public var size: String?
        /// Frames per second asked of the camera (default 30).
        public var fps: Double?
        /// `grey`, `yuyv`, `nv12` or `mjpeg`: the capture format to insist on (default: the best offered).
        public var format: String?
        /// Frames of this camera analysed per second (0: every frame); default: the top-level `analysis_fps`.
        public var analysisFPS: Double?

        public static let formats = ["grey", "yuyv", "nv12", "mjpeg"]

        /// The size as numbers, when `size` is well formed.
        public var dimensions: (width: Int, height: Int)? {
            guard let size else { return nil }
            let parts = size.split(separator: "x").compactMap { Int($0) }
            return parts.count == 2 && parts.allSatisfy { (16...8192).contains($0) } ? (parts[0], parts[1]) : nil
        }

        func validate(path: String, index: Int) throws(ConfigurationError) {
            let label = "cameras[\(index)]" + (self.name.isEmpty ? "" : " (\(self.name))")
            guard !self.name.isEmpty else { throw ConfigurationError("\(path): \(label) needs a name") }
            guard (self.device == nil) != (self.url == nil) else {
                throw ConfigurationError(
                    "\(path): \(label) needs exactly one of device (a V4L2 camera) or url (a stream)")
            }
            if self.size != nil && self.dimensions == nil {
                throw ConfigurationError("\(path): \(label): size must look like 640x480, got \(self.size ?? "")")
            }
            if let fps = self.fps, !(fps.isFinite && fps > 0 && fps <= 240) {
                throw ConfigurationError("\(path): \(label): fps must be above 0 and at most 240, got \(fps)")
            }
            if let format = self.format, !Self.formats.contains(format) {
                throw ConfigurationError(
                    "\(path): \(label): format must be one of \(Self.formats.joined(separator: ", ")), got \(format)")
            }
            try Configuration.checkAnalysisFPS(self.analysisFPS, path: path, label: label + ": ")
            if self.url != nil && (self.size != nil || self.fps != nil || self.format != nil) {
                throw ConfigurationError(
                    "\(path): \(label): size, fps and format apply to a V4L2 device; a stream sends what it sends")
            }
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case name, device, url, size, fps, format
            case analysisFPS = "analysis_fps"
        }
    }

    /// `verify:` — the evidence a verification transaction needs (defaults: `VerificationRules`).
    public struct Verify: Decodable, Equatable, Sendable {
        public var minimumSeconds: Double?
        public var minimumFrames: Int?
        public var stableFrames: Int?
        public var timeoutSeconds: Double?
        public var maximumTimeoutSeconds: Double?
        /// A folder that keeps the face crop of every transaction that did not open (off when absent).
        public var saveFailed: String?
        /// The most crops `save_failed` keeps (the oldest go first); default 100.
        public var saveFailedLimit: Int?

        public func validate(path: String) throws(ConfigurationError) {
            if let seconds = self.minimumSeconds, !(seconds.isFinite && seconds >= 0 && seconds <= 600) {
                throw ConfigurationError("\(path): verify.min_seconds must be from 0 to 600 seconds, got \(seconds)")
            }
            for (key, value) in [("min_frames", self.minimumFrames), ("stable_frames", self.stableFrames)] {
                if let value, !(1...10_000).contains(value) {
                    throw ConfigurationError("\(path): verify.\(key) must be from 1 to 10000 frames, got \(value)")
                }
            }
            let maximum = self.maximumTimeoutSeconds ?? VerificationRules().maximumTimeoutSeconds
            for (key, value) in [
                ("timeout_seconds", self.timeoutSeconds), ("max_timeout_seconds", self.maximumTimeoutSeconds),
            ] {
                if let value, !(value.isFinite && value > 0 && value <= 3600) {
                    throw ConfigurationError(
                        "\(path): verify.\(key) must be a number of seconds above 0 and at most 3600, got \(value)")
                }
            }
            if let limit = self.saveFailedLimit, !(1...1_000_000).contains(limit) {
                throw ConfigurationError(
                    "\(path): verify.save_failed_limit must be from 1 to 1000000 files, got \(limit)")
            }
            if let folder = self.saveFailed, folder.isEmpty {
                throw ConfigurationError("\(path): verify.save_failed must name a folder (or be left out)")
            }
            if let timeout = self.timeoutSeconds, timeout > maximum {
                throw ConfigurationError(
                    "\(path): verify.timeout_seconds (\(timeout)) is above verify.max_timeout_seconds (\(maximum))")
            }
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case minimumSeconds = "min_seconds"
            case minimumFrames = "min_frames"
            case stableFrames = "stable_frames"
            case timeoutSeconds = "timeout_seconds"
            case maximumTimeoutSeconds = "max_timeout_seconds"
            case saveFailed = "save_failed"
            case saveFailedLimit = "save_failed_limit"
        }
    }

    /// The transaction rules this file describes.
    public var verificationRules: VerificationRules {
        var rules = VerificationRules()
        guard let verify else { return rules }
        if let value = verify.minimumSeconds { rules.minimumSeconds = value }
        if let value = verify.minimumFrames { rules.minimumScoredFrames = value }
        if let value = verify.stableFrames { rules.stableFrames = value }
        if let value = verify.timeoutSeconds { rules.defaultTimeoutSeconds = value }
        if let value = verify.maximumTimeoutSeconds { rules.maximumTimeoutSeconds = value }
        return rules
    }

    public static let defaultPath = "/etc/livenessd/livenessd.yaml"

    /// The socket when neither `--socket` nor `socket.path` names one: the system path for root (and for a
    /// service without a user session), `$XDG_RUNTIME_DIR/livenessd/livenessd.sock` for an ordinary user,
    /// who cannot write to /run (the README's first `run` example then works without root).
    public static func defaultSocketPath(
        environment: [String: String] = ProcessInfo.processInfo.environment, uid: UInt32 = getuid()
    ) -> String {
        if uid != 0, let runtime = environment["XDG_RUNTIME_DIR"], runtime.hasPrefix("/") {
            return runtime + "/livenessd/livenessd.sock"
        }
        return "/run/livenessd/livenessd.sock"
    }

    /// Reads `path`, or the default path when it exists; no file means an empty configuration.
    public static func read(path: String?) throws(ConfigurationError) -> Configuration {
        let chosen = path ?? Self.defaultPath
        guard FileManager.default.fileExists(atPath: chosen) else {
            if let path {
                throw ConfigurationError("config file \(path) does not exist")
            }
            return Configuration()
        }
        let text: String
        do {
            text = try String(contentsOfFile: chosen, encoding: .utf8)
        } catch {
            throw ConfigurationError("cannot read config file \(chosen): \(error.localizedDescription)")
        }
        return try Self.parse(text, path: chosen)
    }

    /// The configuration `text` (YAML) describes, validated; `path` only names it in messages.
    public static func parse(_ text: String, path: String) throws(ConfigurationError) -> Configuration {
        try Self.checkKeys(text, path: path)
        let configuration: Configuration
        do {
            configuration = try YAMLDecoder().decode(Configuration.self, from: text.isEmpty ? "{}" : text)
        } catch {
            throw ConfigurationError("config file \(path) is not valid: \(error)")
        }
        try configuration.validate(path: path)
        return configuration
    }

    /// Every key the file may hold, by the path of the mapping that holds it ("" is the top level).
    static let knownKeys: [String: [String]] = [
        "": CodingKeys.allCases.map(\.stringValue),
        "socket": Socket.CodingKeys.allCases.map(\.stringValue),
        "access": Access.CodingKeys.allCases.map(\.stringValue),
        "decision": Decision.CodingKeys.allCases.map(\.stringValue),
        "verify": Verify.CodingKeys.allCases.map(\.stringValue),
        "cameras": Camera.CodingKeys.allCases.map(\.stringValue),
        "crop": Crop.CodingKeys.allCases.map(\.stringValue),
        "fusion": Fusion.CodingKeys.allCases.map(\.stringValue),
        "mqtt": MQTT.CodingKeys.allCases.map(\.stringValue),
        "metrics": Metrics.CodingKeys.allCases.map(\.stringValue),
    ]

    /// A misspelt key (`treshold: 0.5`) would otherwise be ignored without a word, leaving the default in
    /// force: every mapping's keys must be known, and an unknown one is named with the nearest known one.
    static func checkKeys(_ text: String, path: String) throws(ConfigurationError) {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw ConfigurationError("config file \(path) is not valid: \(error)")
        }
        if let root { try Self.checkBase60(root, path: path) }
        guard let mapping = root?.mapping else { return }
        func check(_ mapping: Node.Mapping, at prefix: String) throws(ConfigurationError) {
            guard let known = Self.knownKeys[prefix] else { return }
            for (key, value) in mapping {
                guard let name = key.string else { continue }
                let qualified = prefix.isEmpty ? name : "\(prefix).\(name)"
                guard known.contains(name) else {
                    let nearest = known.min { editDistance(name, $0) < editDistance(name, $1) }
                    let hint =
                        nearest.map {
                            editDistance(name, $0) <= max(2, name.count / 3) ? " (did you mean '\($0)'?)" : ""
                        }
                        ?? ""
                    throw ConfigurationError(
                        "\(path): unknown key '\(qualified)'\(hint); known keys here: \(known.joined(separator: ", "))")
                }
                if prefix.isEmpty, let nested = value.mapping { try check(nested, at: name) }
                // A list of mappings (`cameras:`): each entry's keys are checked too.
                if prefix.isEmpty, let entries = value.sequence {
                    for entry in entries { if let nested = entry.mapping { try check(nested, at: name) } }
                }
            }
        }
        try check(mapping, at: "")
    }

    /// Yams (6.2) reads a scalar with colons as a YAML 1.1 base-60 integer when a setting is an integer,
    /// and traps when that overflows (`window_frames: 1:0:0:0:0:0:0:0:0:0:0`: a crash, found by the
    /// `config` fuzz target). Such a scalar anywhere in the file is refused first. The test mirrors Yams's
    /// `Int.construct`: underscores dropped, one sign, no 0/0x/0b/0o prefix, every part a decimal integer;
    /// then its arithmetic, base included, with overflow checks.
    static func checkBase60(_ node: Node, path: String) throws(ConfigurationError) {
        switch node {
        case .scalar(let scalar):
            var text = Substring(scalar.string.replacingOccurrences(of: "_", with: ""))
            if text.hasPrefix("-") || text.hasPrefix("+") { text = text.dropFirst() }
            guard text.contains(":"), !text.hasPrefix("0") else { return }
            let parts = text.split(separator: ":", omittingEmptySubsequences: false).map { Int($0, radix: 10) }
            guard parts.allSatisfy({ $0 != nil }) else { return }
            var base = 1
            var value = 0
            var fits = true
            for digit in parts.reversed().compactMap({ $0 }) {
                let (product, productOverflow) = digit.multipliedReportingOverflow(by: base)
                let (sum, sumOverflow) = value.addingReportingOverflow(product)
                let (next, baseOverflow) = base.multipliedReportingOverflow(by: 60)
                if productOverflow || sumOverflow || baseOverflow {
                    fits = false
                    break
                }
                (value, base) = (sum, next)
            }
            if !fits {
                throw ConfigurationError(
                    "\(path): '\(scalar.string.prefix(80))' reads as a YAML base-60 number too large for any setting; "
                        + "give a plain number (or quote text)")
            }
        case .mapping(let mapping):
            for (key, value) in mapping {
                try Self.checkBase60(key, path: path)
                try Self.checkBase60(value, path: path)
            }
        case .sequence(let sequence):
            for item in sequence { try Self.checkBase60(item, path: path) }
        case .alias:
            return
        }
    }

    public func validate(path: String) throws(ConfigurationError) {
        if let threshold, !(0...1).contains(threshold) {
            throw ConfigurationError("\(path): threshold must be between 0 and 1, got \(threshold)")
        }
        if let limit = self.socket?.maxClients, !(1...100_000).contains(limit) {
            throw ConfigurationError("\(path): socket.max_clients must be from 1 to 100000, got \(limit)")
        }
        if let seconds = self.socket?.idleTimeoutSeconds, !(seconds >= 0.1 && seconds <= 86_400) {
            throw ConfigurationError("\(path): socket.idle_timeout_seconds must be from 0.1 to 86400, got \(seconds)")
        }
        if let mode = self.socket?.mode, UInt32(mode, radix: 8) == nil {
            throw ConfigurationError("\(path): socket.mode must be octal like \"0660\", got \(mode)")
        }
        if let smoothing = self.decision?.smoothing, !["mean", "median", "ema"].contains(smoothing) {
            throw ConfigurationError("\(path): decision.smoothing must be mean, median or ema, got \(smoothing)")
        }
        if let mode = self.crop?.mode, !["detect", "full"].contains(mode) {
            throw ConfigurationError("\(path): crop.mode must be detect or full, got \(mode)")
        }
        if let scale = self.crop?.scale, !(scale >= 0.5 && scale <= 5) {
            throw ConfigurationError("\(path): crop.scale must be between 0.5 and 5, got \(scale)")
        }
        if let seconds = self.crop?.trackSeconds, !(seconds >= 0 && seconds <= 1) {
            throw ConfigurationError(
                "\(path): crop.track_seconds must be from 0 (detect every analysed frame) to 1, got \(seconds)")
        }
        try Self.checkAnalysisFPS(self.analysisFPS, path: path, label: "")
        if let decision = self.decision { try decision.validate(path: path) }
        if let verify = self.verify { try verify.validate(path: path) }
        if let mqtt = self.mqtt { try mqtt.validate(path: path) }
        if let metrics = self.metrics { try metrics.validate(path: path) }
        var names = Set<String>()
        for (index, camera) in (self.cameras ?? []).enumerated() {
            try camera.validate(path: path, index: index)
            guard names.insert(camera.name).inserted else {
                throw ConfigurationError("\(path): cameras: the name '\(camera.name)' is used twice; names must differ")
            }
        }
        for list in self.access?.lists ?? [] {
            for case .name(let name) in list.entries where Principal.name(name).resolve(user: list.users) == nil {
                throw ConfigurationError(
                    "\(path): access.\(list.key): there is no \(list.users ? "user" : "group") named '\(name)' on this "
                        + "system (names are looked up when the file is read; numbers are taken as they are)")
            }
        }
        for digest in self.trustedSHA256 ?? []
        where digest.count != 64 || !digest.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) {
            throw ConfigurationError("\(path): trusted_sha256 entries are 64 lower-case hex digits, got '\(digest)'")
        }
        for (name, weight) in [("vit", self.fusion?.vit), ("minifasnet", self.fusion?.minifasnet)] {
            if let weight, !(weight.isFinite && weight >= 0 && weight <= 100) {
                throw ConfigurationError("\(path): fusion.\(name) must be a weight between 0 and 100, got \(weight)")
            }
        }
    }

    /// The fusion weights from the file (1 each by default).
    public var scoreFusion: ScoreFusion {
        var weights: [OpinionKind: Double] = [:]
        if let weight = self.fusion?.vit { weights[.vit] = weight }
        if let weight = self.fusion?.minifasnet { weights[.minifasnet] = weight }
        return ScoreFusion(weights: weights)
    }

    /// The decision rules this file describes on top of `threshold`.
    public func decisionConfiguration(threshold: Double) -> DecisionConfiguration {
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
    public var accessPolicy: AccessPolicy {
        var policy = AccessPolicy()
        // Names were checked when the file was read; one deleted since then simply matches nobody.
        func ids(_ list: [Principal]?, user: Bool) -> Set<UInt32> {
            Set((list ?? []).compactMap { $0.resolve(user: user) })
        }
        policy.allowedUIDs = ids(self.access?.allowUIDs, user: true)
        policy.allowedGIDs = ids(self.access?.allowGIDs, user: false)
        policy.controllerUIDs = ids(self.access?.controllerUIDs, user: true)
        policy.controllerGIDs = ids(self.access?.controllerGIDs, user: false)
        if let mode = self.socket?.mode, let value = UInt32(mode, radix: 8) { policy.socketMode = value }
        policy.socketGroup = self.socket?.group
        return policy
    }
}

/// What is wrong with a config file, in one line that names the file and the setting.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Levenshtein distance between two short keys, for "did you mean" (no Swift or Debian library offers it;
/// keys are a few dozen characters, so the quadratic table is nothing).
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a)
    let b = Array(b)
    if a.isEmpty || b.isEmpty { return max(a.count, b.count) }
    var previous = Array(0...b.count)
    var current = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        current[0] = i
        for j in 1...b.count {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        swap(&previous, &current)
    }
    return previous[b.count]
}
