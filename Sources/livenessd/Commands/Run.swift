import ArgumentParser
import CaptureKit
import FramePipeline
import Foundation
import LivenessEngine
import LivenessServer
import Logging
import UnixSignals

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the daemon: watch the sources, publish decisions on the Unix socket.",
        discussion: """
            Sources: --source FILE|URL (repeatable), or `sources:` in the config file. Files play at their \
            own frame rate (--pacing realtime, frames may be dropped like a camera's) or as fast as \
            possible without dropping (--pacing fast). The daemon exits 0 after SIGTERM/SIGINT (draining \
            what is in flight) or when every source has ended. SIGHUP reloads threshold, decision window \
            and access list from the config file. Under systemd: Type=notify, watchdog fed only while \
            frames flow, socket activation. Protocol: docs/PROTOCOL.md.
            """)

    @OptionGroup var modelOptions: ModelOptions

    @OptionGroup var cropOptions: CropOptions

    @Option(name: .customLong("device"), help: "A V4L2 camera: /dev/videoN or a /dev/v4l/by-id/… link (repeatable).")
    var devices: [String] = []

    @Option(name: .customLong("source"), help: "A video file, image or stream URL to watch (repeatable).")
    var sources: [String] = []

    @Option(help: "Camera capture size, WIDTHxHEIGHT.")
    var size = "640x480"

    @Flag(help: "Start the sources only once a client has subscribed (replays in a test lab).")
    var holdUntilSubscribed = false

    @Option(
        help: """
            Unix socket path (default: the config's socket.path, else /run/livenessd/livenessd.sock as root, \
            $XDG_RUNTIME_DIR/livenessd/livenessd.sock otherwise).
            """)
    var socket: String?

    @Option(help: "Decision threshold (default: the config file's, else the checkpoint's).")
    var threshold: Double?

    @Option(help: "File pacing: realtime (as a camera) or fast (every frame, as fast as possible).")
    var pacing: String = "realtime"

    @Option(help: "Seconds to wait for in-flight frames when stopping.")
    var drainTimeout: Double = 5

    @Option(
        help: """
            Frames analysed per second of each source, 0 for every frame (default: a camera's analysis_fps, \
            else the config's, else \(Int(Configuration.defaultAnalysisFramesPerSecond))). The others are skipped \
            (counted as dropped_rate); decision windows keep their length in seconds.
            """)
    var analysisFps: Double?

    var captureSize: (width: Int, height: Int)? {
        let parts = self.size.split(separator: "x").compactMap { Int($0) }
        return parts.count == 2 && parts.allSatisfy({ $0 > 0 }) ? (parts[0], parts[1]) : nil
    }

    func validate() throws {
        guard self.captureSize != nil else { throw ValidationError("--size must look like 640x480") }
        guard ["realtime", "fast"].contains(self.pacing) else {
            throw ValidationError("--pacing must be realtime or fast")
        }
        if let threshold, !(0...1).contains(threshold) { throw ValidationError("--threshold must be between 0 and 1") }
        guard self.drainTimeout.isFinite, (0...3600).contains(self.drainTimeout) else {
            throw ValidationError("--drain-timeout must be between 0 and 3600 seconds")
        }
        if let rate = self.analysisFps, !(rate.isFinite && rate >= 0 && rate <= 240) {
            throw ValidationError("--analysis-fps must be 0 (every frame) or frames per second up to 240")
        }
    }

    func run() async throws {
        let logger = Logger(label: "livenessd")
        // Trapped before the slow start-up (models, detector, socket): a SIGTERM, SIGINT or SIGHUP that
        // arrives meanwhile is kept and handled once the daemon runs, instead of killing it half-started.
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint, .sighup)
        do {
            let daemon = try self.makeDaemon(logger: logger)
            if try await !daemon.run(signals: signals) {
                // Frames still inside the models: leave without exit's destructors (they would unmap
                // OpenBLAS's buffers under a running sgemm). Events and the socket are already closed.
                logger.notice("leaving without waiting for the frames still in the models")
                fflush(nil)  // every C stream (the log handlers write through FileHandle, unbuffered)
                _exit(0)
            }
        } catch {
            // Every failure that stops the daemon is a start-up failure (a bad config or model file, a
            // socket in use, a detector graph the locator refuses, a source that cannot start): exit 2,
            // as the README promises, with the reason at priority `err` in the journal.
            Self.reportFatal(error, logger: logger)
            throw ExitCode(2)
        }
    }

    /// One line for the operator: under systemd through the journal handler (priority `err`, so
    /// `journalctl -p err` shows it), elsewhere plainly on standard error.
    static func reportFatal(_ error: Error, logger: Logger) {
        if ProcessInfo.processInfo.environment["JOURNAL_STREAM"] != nil {
            logger.error("\(error)")
        } else {
            FileHandle.standardError.write(Data("livenessd: \(error)\n".utf8))
        }
    }

    /// Models, detector, sources and socket from the options and the config file.
    private func makeDaemon(logger: Logger) throws -> LivenessDaemon {
        let loaded = try self.modelOptions.load(pinDigests: true)
        let configuration = loaded.configuration
        let threshold = self.threshold ?? configuration.threshold ?? loaded.defaultThreshold
        let files = try loaded.files()
        for file in files {
            logger.info(
                "model loaded",
                metadata: [
                    "model.kind": "\(file.kind)", "model.path": "\(file.path)", "model.sha256": "\(file.sha256)",
                ])
            let published =
                file.kind == "vit"
                ? LivenessViT.publishedSHA256
                : MiniFASNetPair.publishedSHA256[(file.path as NSString).lastPathComponent]
            if file.sha256 != published {
                // Loaded only because the config trusts its digest (ModelDigestPin): say so once.
                logger.notice(
                    "\(file.path) is not the published file; running it because trusted_sha256 names its digest")
            }
        }
        logger.info(
            "deciding on \(loaded.kinds.count > 1 ? "the fused score" : "one opinion")",
            metadata: [
                "model.opinions": "\(loaded.kinds.map(\.rawValue).joined(separator: ","))",
                "decision.threshold": "\(threshold)",
            ])

        let detectorSetup = try self.cropOptions.resolve(configuration: configuration) { warning in
            logger.warning("\(warning)")
        }
        if let setup = detectorSetup {
            logger.info(
                "face detection on",
                metadata: ["detector.path": "\(setup.url.path)", "crop.scale": "\(setup.configuration.crop.scale)"])
        } else {
            logger.info("judging whole frames (crop: full)")
        }

        // What to watch: the flags, else the config's named `cameras:` and its plain `sources:`.
        let flagged = self.devices + self.sources
        let entries: [(name: String?, location: String, camera: Configuration.Camera?)] =
            flagged.isEmpty
            ? (configuration.cameras ?? []).map { ($0.name, $0.device ?? $0.url ?? "", $0) }
                + (configuration.sources ?? []).map { (nil, $0, nil) }
            : flagged.map { (nil, $0, nil) }
        guard !entries.isEmpty else {
            throw CommandError(
                "no source to watch: give --device /dev/videoN or --source FILE|URL (or `cameras:` / `sources:` in the "
                    + "config file)")
        }
        // Sources are known by their name or location (events, status, reset, verify): one given twice once
        // crashed the daemon at start-up (a duplicate dictionary key).
        var seen = Set<String>()
        for entry in entries where !seen.insert(entry.name ?? entry.location).inserted {
            throw CommandError(
                "\(entry.name ?? entry.location) is given twice as a source; each camera, file or stream may be watched "
                    + "once, under one name")
        }
        var mediaOptions = MediaSource.Options()
        mediaOptions.pacing = self.pacing == "fast" ? .asFastAsPossible : .realTime
        // A network camera that is not up yet is waited for (`waiting`), like a V4L2 one; files are not.
        mediaOptions.waitForStream = true
        // Replayed as fast as possible, the decode thread converts to RGB too (off the prepare lane).
        mediaOptions.attachRGB24 = mediaOptions.pacing == .asFastAsPossible
        var cameraConfiguration = V4L2Camera.Configuration()
        // A camera missing at start is waited for (reported as `waiting`), never a start-up failure.
        cameraConfiguration.waitForDevice = true
        if let size = self.captureSize {
            cameraConfiguration.width = size.width
            cameraConfiguration.height = size.height
        }
        var makeLocator: (@Sendable () throws -> FaceLocator)?
        if let detectorSetup { makeLocator = { try detectorSetup.makeLocator() } }
        let sources = entries.map { entry -> DaemonSource in
            // The flag wins over everything; then the camera's own rate, the config's, the default.
            let rate =
                self.analysisFps ?? entry.camera?.analysisFPS ?? configuration.analysisFPS
                ?? Configuration.defaultAnalysisFramesPerSecond
            let source: FrameSource
            if entry.location.hasPrefix("/dev/") {
                var settings = cameraConfiguration
                if let camera = entry.camera {
                    if let size = camera.dimensions { (settings.width, settings.height) = size }
                    if let fps = camera.fps { settings.framesPerSecond = fps }
                    switch camera.format {
                    case "grey": (settings.preferredFormats, settings.allowMotionJPEG) = ([.grey], false)
                    case "yuyv": (settings.preferredFormats, settings.allowMotionJPEG) = ([.yuyv], false)
                    case "nv12": (settings.preferredFormats, settings.allowMotionJPEG) = ([.nv12], false)
                    case "mjpeg": (settings.preferredFormats, settings.allowMotionJPEG) = ([], true)
                    default: break
                    }
                }
                source = V4L2Camera(path: entry.location, id: entry.name, configuration: settings, logger: logger)
            } else {
                var options = mediaOptions
                // Not for frames the analysis rate skips: they would be converted for nothing.
                options.attachRGB24 = mediaOptions.attachRGB24 && rate == 0
                source = MediaSource(location: entry.location, id: entry.name, options: options)
            }
            return DaemonSource(
                source: source, location: entry.location, makeLocator: makeLocator, analysisFramesPerSecond: rate)
        }

        let socketPath: String
        if let path = self.socket ?? configuration.socket?.path {
            socketPath = path
        } else {
            // The default's folder is made when missing (/run/livenessd under systemd is RuntimeDirectory's).
            socketPath = Configuration.defaultSocketPath()
            try? FileManager.default.createDirectory(
                atPath: (socketPath as NSString).deletingLastPathComponent, withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o755])
        }
        var server = EventServer.Configuration(path: socketPath)
        server.inheritedDescriptor = SystemdNotifier.listenDescriptor()
        if let limit = configuration.socket?.clientQueueLimit { server.clientQueueLimit = max(1, limit) }
        if let limit = configuration.socket?.maxClients { server.maxClients = limit }
        if let seconds = configuration.socket?.idleTimeoutSeconds {
            server.idleTimeout = .milliseconds(Int64(seconds * 1000))
        }
        var options = LivenessDaemon.Options(
            version: LivenessdVersion.string,
            models: files.map { EventProtocol.ModelFile(kind: $0.kind, path: $0.path, sha256: $0.sha256) },
            server: server)
        options.holdUntilSubscribed = self.holdUntilSubscribed
        if let folder = configuration.verify?.saveFailed {
            options.failedCrops = try FailedCropStore(
                directory: folder, limit: configuration.verify?.saveFailedLimit ?? 100, logger: logger)
        }
        options.drainTimeoutSeconds = self.drainTimeout
        if let mqtt = configuration.mqtt {
            options.mqtt = try MQTTForwarder.Settings(
                mqtt, hostname: ProcessInfo.processInfo.hostName, version: LivenessdVersion.string)
        }
        if let metrics = configuration.metrics, metrics.enabled != false, let address = metrics.address {
            options.metrics = MetricsAddress(host: address.host, port: address.port)
        }
        let settings = DaemonSettings(
            threshold: threshold, decisions: configuration.decisionConfiguration(threshold: threshold),
            access: configuration.accessPolicy, verification: configuration.verificationRules)
        let configPath = self.modelOptions.config
        let flaggedThreshold = self.threshold
        return try LivenessDaemon(
            options: options, sources: sources, opinions: loaded.opinions, settings: settings, logger: logger
        ) { running in
            // SIGHUP: the config file again; a --threshold flag still wins, else the running threshold stays.
            let configuration = try Configuration.load(path: configPath)
            let threshold = flaggedThreshold ?? configuration.threshold ?? running
            return DaemonSettings(
                threshold: threshold, decisions: configuration.decisionConfiguration(threshold: threshold),
                access: configuration.accessPolicy, verification: configuration.verificationRules)
        }
    }
}
