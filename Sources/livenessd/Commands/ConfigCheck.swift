import ArgumentParser
import Foundation
import LivenessEngine
import LivenessServer

/// `livenessd config …`: the config file without starting anything.
struct Config: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Work with the config file.", subcommands: [ConfigCheck.self])
}

/// Validates a config file and prints the settings `run` would use, defaults filled in: what an
/// integrator checks before restarting the service. Exit 0 when valid and every model file named or
/// found exists, 2 otherwise (the message says what is wrong).
struct ConfigCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Validate the config file and print the effective settings (JSON).",
        discussion: """
            Model, pair and detector files are located as `run` locates them (flag, environment, config \
            file, default folders) but not loaded. The threshold is the file's; absent, `run` uses the \
            checkpoint's (ViT alone), 0.5 (pair alone) or \(Opinions.fusedThreshold) (both).
            """)

    @Argument(help: "Config file (default: --config, else /etc/livenessd/livenessd.yaml when present).")
    var file: String?

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Path to the YuNet face detector (as for run).")
    var detector: String?

    func run() throws {
        do {
            print(try self.effectiveSettings())
        } catch let error as CommandError {
            FileHandle.standardError.write(Data("livenessd: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }

    func effectiveSettings() throws -> String {
        let path = self.file ?? self.modelOptions.config
        let configuration = try Configuration.load(path: path)
        let kinds = try self.modelOptions.kinds(configuration: configuration)
        let environment = ProcessInfo.processInfo.environment
        let vit =
            kinds.contains(.vit)
            ? try ModelLocator.resolve(
                flag: self.modelOptions.model, configuration: configuration, environment: environment
            )
            .path : nil
        let pair =
            kinds.contains(.minifasnet)
            ? try PairModelLocator.resolve(
                flag: self.modelOptions.minifasnet, configuration: configuration, environment: environment
            ).path : nil
        let detector = try DetectorModelLocator.resolve(
            flag: self.detector, configuration: configuration, environment: environment)
        let rules = configuration.decisionConfiguration(threshold: configuration.threshold ?? 0.5)
        let smoothing: String
        var alpha: Double?
        switch rules.smoothing {
        case .mean: smoothing = "mean"
        case .median: smoothing = "median"
        case .exponential(let value):
            smoothing = "ema"
            alpha = value
        }
        let access = configuration.accessPolicy
        let settings = EffectiveSettings(
            config: path
                ?? (FileManager.default.fileExists(atPath: Configuration.defaultPath)
                    ? Configuration.defaultPath : nil),
            models: kinds.map(\.rawValue), model: vit, minifasnet: pair, detector: detector?.path,
            threshold: configuration.threshold,
            fusion: Dictionary(uniqueKeysWithValues: kinds.map { ($0.rawValue, configuration.scoreFusion.weight($0)) }),
            decision: .init(
                windowFrames: rules.windowFrames, windowSeconds: rules.windowSeconds,
                minFrames: rules.minimumScoredFrames,
                hysteresis: rules.hysteresis, smoothing: smoothing, emaAlpha: alpha,
                faceLostResetSeconds: rules.faceLostResetSeconds),
            crop: .init(
                mode: configuration.crop?.mode ?? (detector == nil ? "full" : "detect"),
                scale: configuration.crop?.scale ?? CropPolicy.defaultScale),
            socket: .init(
                path: configuration.socket?.path ?? Configuration.defaultSocketPath(),
                mode: String(format: "%04o", access.socketMode), group: access.socketGroup,
                clientQueueLimit: max(1, configuration.socket?.clientQueueLimit ?? 256),
                maxClients: configuration.socket?.maxClients ?? 64,
                idleTimeoutSeconds: configuration.socket?.idleTimeoutSeconds ?? 30),
            access: .init(
                allowUIDs: access.allowedUIDs.sorted(), allowGIDs: access.allowedGIDs.sorted(),
                controllerUIDs: access.controllerUIDs.sorted(), controllerGIDs: access.controllerGIDs.sorted()),
            sources: configuration.sources ?? [], trustedSHA256: configuration.trustedSHA256 ?? [],
            analysisFPS: configuration.analysisFPS ?? Configuration.defaultAnalysisFramesPerSecond,
            cameraAnalysisFPS: Dictionary(
                (configuration.cameras ?? []).map {
                    (
                        $0.name,
                        $0.analysisFPS ?? configuration.analysisFPS ?? Configuration.defaultAnalysisFramesPerSecond
                    )
                }, uniquingKeysWith: { first, _ in first }))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(settings), as: UTF8.self)
    }
}

/// What `config check` prints (snake_case keys, as in the config file).
struct EffectiveSettings: Encodable {
    var config: String?
    var models: [String]
    var model: String?
    var minifasnet: String?
    var detector: String?
    var threshold: Double?
    var fusion: [String: Double]
    var decision: Decision
    var crop: Crop
    var socket: Socket
    var access: Access
    var sources: [String]
    var trustedSHA256: [String]
    /// Frames analysed per second (0: every frame): the sources' rate, and each named camera's.
    var analysisFPS: Double
    var cameraAnalysisFPS: [String: Double]

    enum CodingKeys: String, CodingKey {
        case config, models, model, minifasnet, detector, threshold, fusion, decision, crop, socket, access, sources
        case trustedSHA256 = "trusted_sha256"
        case analysisFPS = "analysis_fps"
        case cameraAnalysisFPS = "camera_analysis_fps"
    }

    struct Decision: Encodable {
        var windowFrames: Int
        var windowSeconds: Double
        var minFrames: Int
        var hysteresis: Double
        var smoothing: String
        var emaAlpha: Double?
        var faceLostResetSeconds: Double

        enum CodingKeys: String, CodingKey {
            case hysteresis, smoothing
            case windowFrames = "window_frames"
            case windowSeconds = "window_seconds"
            case minFrames = "min_frames"
            case emaAlpha = "ema_alpha"
            case faceLostResetSeconds = "face_lost_reset_seconds"
        }
    }

    struct Crop: Encodable {
        var mode: String
        var scale: Double
    }

    struct Socket: Encodable {
        var path: String
        var mode: String
        var group: String?
        var clientQueueLimit: Int
        var maxClients: Int
        var idleTimeoutSeconds: Double

        enum CodingKeys: String, CodingKey {
            case path, mode, group
            case clientQueueLimit = "client_queue_limit"
            case maxClients = "max_clients"
            case idleTimeoutSeconds = "idle_timeout_seconds"
        }
    }

    struct Access: Encodable {
        var allowUIDs: [UInt32]
        var allowGIDs: [UInt32]
        var controllerUIDs: [UInt32]
        var controllerGIDs: [UInt32]

        enum CodingKeys: String, CodingKey {
            case allowUIDs = "allow_uids"
            case allowGIDs = "allow_gids"
            case controllerUIDs = "controller_uids"
            case controllerGIDs = "controller_gids"
        }
    }
}
