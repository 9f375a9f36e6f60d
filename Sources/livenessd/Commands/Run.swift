import ArgumentParser
import CaptureKit
import Crypto
import FramePipeline
import Foundation
import LivenessEngine
import Logging
import Synchronization

struct Run: ParsableCommand {
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

    @Option(help: "Unix socket path (default: the config's socket.path, else /run/livenessd/livenessd.sock).")
    var socket: String?

    @Option(help: "Decision threshold (default: the config file's, else the checkpoint's).")
    var threshold: Double?

    @Option(help: "File pacing: realtime (as a camera) or fast (every frame, as fast as possible).")
    var pacing: String = "realtime"

    @Option(help: "Seconds to wait for in-flight frames when stopping.")
    var drainTimeout: Double = 5

    var captureSize: (width: Int, height: Int)? {
        let parts = self.size.split(separator: "x").compactMap { Int($0) }
        return parts.count == 2 && parts.allSatisfy({ $0 > 0 }) ? (parts[0], parts[1]) : nil
    }

    func validate() throws {
        guard self.captureSize != nil else { throw ValidationError("--size must look like 640x480") }
        guard ["realtime", "fast"].contains(self.pacing) else { throw ValidationError("--pacing must be realtime or fast") }
        if let threshold, !(0...1).contains(threshold) { throw ValidationError("--threshold must be between 0 and 1") }
    }

    func run() throws {
        let logger = Logger(label: "livenessd")
        do {
            let daemon = try Daemon(options: self, logger: logger)
            try daemon.runUntilStopped()
        } catch let error as CommandError {
            FileHandle.standardError.write(Data("livenessd: \(error)\n".utf8))
            throw ExitCode(2)
        } catch let error as CaptureError {
            FileHandle.standardError.write(Data("livenessd: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }
}

/// Frame flow as the daemon sees it: for READY, the watchdog, STATUS and fps.
final class DaemonMonitor: Sendable {
    struct State {
        var firstDecision = false
        var processed = 0
        var states: [String: String] = [:]
        var recent: [String: [UInt64]] = [:]  // decision times of the last 2 s, per source
        var ended: Set<String> = []
    }

    let state = Mutex(State())

    func observe(_ event: PipelineEvent) {
        let now = monotonicNanoseconds()
        self.state.withLock { state in
            switch event {
            case .decision(let decided):
                state.firstDecision = true
                state.processed += 1
                state.states[decided.sourceID] = decided.decision.state.rawValue
                var times = state.recent[decided.sourceID, default: []]
                times.append(now)
                times.removeAll { now &- $0 > 2_000_000_000 }
                state.recent[decided.sourceID] = times
            case .source(let id, let sourceEvent):
                if case .ended = sourceEvent { state.ended.insert(id) }
                if case .disconnected = sourceEvent { state.states[id] = "disconnected" }
            }
        }
    }

    func fps(_ source: String) -> Double {
        let now = monotonicNanoseconds()
        return self.state.withLock { state in
            let times = (state.recent[source] ?? []).filter { now &- $0 <= 2_000_000_000 }
            return Double(times.count) / 2
        }
    }
}

/// The running daemon: model, pipeline, event server, signals and systemd.
final class Daemon: @unchecked Sendable {
    // @unchecked: set up once in init; afterwards only Mutex-guarded state and thread-safe parts.
    let logger: Logger
    let options: Run
    let pipeline: LivenessPipeline
    let server: EventServer
    let monitor = DaemonMonitor()
    let notifier = SystemdNotifier()
    let sourceIDs: [String]
    let started = Date()
    let stopRequested = DispatchSemaphore(value: 0)
    let subscribed = DispatchSemaphore(value: 0)
    private let threshold: LockedValue<Double>
    private var signalSources: [DispatchSourceSignal] = []
    private var timers: [DispatchSourceTimer] = []
    private let control = DispatchQueue(label: "livenessd.control")

    init(options: Run, logger: Logger) throws {
        self.options = options
        self.logger = logger
        let loaded = try options.modelOptions.load()
        let configuration = loaded.configuration
        let threshold = options.threshold ?? configuration.threshold ?? loaded.defaultThreshold
        self.threshold = LockedValue(threshold)
        let files = try loaded.files()
        for file in files {
            logger.info(
                "model loaded",
                metadata: ["model.kind": "\(file.kind)", "model.path": "\(file.path)", "model.sha256": "\(file.sha256)"])
            let name = (file.path as NSString).lastPathComponent
            if file.kind == "minifasnet", let published = MiniFASNetPair.publishedSHA256[name], published != file.sha256 {
                logger.warning(
                    """
                    \(file.path) is not the published \(name) (SHA-256 \(file.sha256), published \(published)): \
                    decisions are not the measured ones; reinstall it with scripts/setup.sh
                    """)
            }
        }
        logger.info(
            "deciding on \(loaded.kinds.count > 1 ? "the fused score" : "one opinion")",
            metadata: [
                "model.opinions": "\(loaded.kinds.map(\.rawValue).joined(separator: ","))", "decision.threshold": "\(threshold)",
            ])
        // `model_sha256` in status stays the ViT's (or the first file's) for clients of schema 1.
        let modelDigest = files.first?.sha256 ?? ""
        let modelFiles = files.map { EventProtocol.ModelFile(kind: $0.kind, path: $0.path, sha256: $0.sha256) }

        self.detectorSetup = try options.cropOptions.resolve(configuration: configuration) { warning in
            logger.warning("\(warning)")
        }
        if let setup = self.detectorSetup {
            logger.info(
                "face detection on",
                metadata: ["detector.path": "\(setup.url.path)", "crop.scale": "\(setup.configuration.crop.scale)"])
        } else {
            logger.info("judging whole frames (crop: full)")
        }

        let flagged = options.devices + options.sources
        let locations = flagged.isEmpty ? (configuration.sources ?? []) : flagged
        guard !locations.isEmpty else {
            throw CommandError(
                "no source to watch: give --device /dev/videoN or --source FILE|URL (or `sources:` in the config file)")
        }
        var mediaOptions = MediaSource.Options()
        mediaOptions.pacing = options.pacing == "fast" ? .asFastAsPossible : .realTime
        // Replayed as fast as possible, the decode thread converts to RGB too (off the prepare lane).
        mediaOptions.attachRGB24 = mediaOptions.pacing == .asFastAsPossible
        var cameraConfiguration = V4L2Camera.Configuration()
        if let size = options.captureSize {
            cameraConfiguration.width = size.width
            cameraConfiguration.height = size.height
        }
        let sources: [FrameSource] = locations.map { location -> FrameSource in
            if location.hasPrefix("/dev/") {
                return V4L2Camera(path: location, configuration: cameraConfiguration, logger: logger)
            }
            return MediaSource(location: location, options: mediaOptions)
        }
        self.sourceIDs = sources.map(\.id)

        var serverConfiguration = EventServer.Configuration(
            path: options.socket ?? configuration.socket?.path ?? "/run/livenessd/livenessd.sock")
        serverConfiguration.inheritedDescriptor = SystemdNotifier.listenDescriptor()
        serverConfiguration.access = configuration.accessPolicy
        if let limit = configuration.socket?.clientQueueLimit { serverConfiguration.clientQueueLimit = max(1, limit) }
        if let limit = configuration.socket?.maxClients { serverConfiguration.maxClients = limit }
        if let seconds = configuration.socket?.idleTimeoutSeconds {
            serverConfiguration.idleTimeout = .milliseconds(Int64(seconds * 1000))
        }
        let monitor = self.monitor
        let sourceKinds = Dictionary(uniqueKeysWithValues: sources.map { ($0.id, $0.kind == .live ? "live" : "replay") })
        let statusThreshold = self.threshold
        let started = self.started
        let box = PipelineBox()
        let hooks = EventServer.Hooks(
            status: {
                let statistics = box.pipeline?.statistics() ?? [:]
                let states = monitor.state.withLock { $0.states }
                var sourcesStatus: [String: EventProtocol.SourceStatus] = [:]
                for (id, kind) in sourceKinds {
                    let lane = statistics[id] ?? LaneStatistics()
                    sourcesStatus[id] = EventProtocol.SourceStatus(
                        kind: kind, state: states[id] ?? "deciding", fps: monitor.fps(id), framesIn: lane.framesIn,
                        processed: lane.processed, droppedStale: lane.droppedStale, droppedBusy: lane.droppedBusy,
                        latencyP50Ms: lane.latencyMilliseconds(percentile: 50),
                        latencyP99Ms: lane.latencyMilliseconds(percentile: 99),
                        stages: Dictionary(
                            uniqueKeysWithValues: [LaneStatistics.Stage.queued, .prepare, .inference].map {
                                (
                                    $0.rawValue,
                                    EventProtocol.StageLatency(
                                        p50Ms: lane.milliseconds($0, percentile: 50), p99Ms: lane.milliseconds($0, percentile: 99))
                                )
                            }))
                }
                return EventProtocol.StatusMessage(
                    version: LivenessdVersion.string, uptimeSeconds: Date().timeIntervalSince(started),
                    modelSHA256: modelDigest, models: modelFiles, threshold: statusThreshold.value, sources: sourcesStatus)
            },
            subscribed: { [subscribed = self.subscribed] in subscribed.signal() },
            reset: { sources in
                if let sources {
                    for id in sources { box.pipeline?.reset(sourceID: id) }
                } else {
                    box.pipeline?.reset()
                }
            })
        self.server = EventServer(configuration: serverConfiguration, threshold: threshold, hooks: hooks, logger: logger)
        let server = self.server
        self.pipeline = LivenessPipeline(
            opinions: loaded.opinions,
            configuration: .init(decisions: configuration.decisionConfiguration(threshold: threshold))
        ) { event in
            monitor.observe(event)
            server.publish(event)
        }
        box.pipeline = self.pipeline

        try self.server.start()
        self.pendingSources = sources
    }

    private var pendingSources: [FrameSource] = []
    /// Face detection for every source; nil judges whole frames.
    private let detectorSetup: DetectorSetup?

    /// Starts every source; a source that cannot start stops the daemon (fail fast).
    private func startSources() throws {
        for source in self.pendingSources {
            do {
                if let setup = self.detectorSetup {
                    try self.pipeline.add(source, locator: try setup.makeLocator())
                } else {
                    try self.pipeline.add(source)
                }
            } catch {
                _ = self.pipeline.stop(timeoutSeconds: 1)
                self.server.shutdown(reason: "start-up failed")
                throw error
            }
            self.logger.info("watching", metadata: ["source.id": "\(source.id)", "source.kind": "\(source.kind)"])
        }
    }

    static func sha256(of url: URL) throws -> String {
        let data = try Data(contentsOf: url)
        return SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
    }

    /// Blocks until SIGTERM/SIGINT or until every source ended; then drains and closes.
    func runUntilStopped() throws {
        if self.options.holdUntilSubscribed {
            self.logger.info("waiting for a subscriber before starting the sources")
            self.subscribed.wait()
        }
        try self.startSources()
        self.installSignalHandlers()
        self.startTimers()
        // Every source ended by itself (files played out) also ends the daemon.
        self.pipeline.whenFinished(on: self.control) { [stopRequested = self.stopRequested] in stopRequested.signal() }
        self.stopRequested.wait()
        self.notifier.notify("STOPPING=1\nSTATUS=stopping")
        self.logger.info("stopping: draining in-flight frames")
        let drained = self.pipeline.stop(timeoutSeconds: self.options.drainTimeout)
        if !drained { self.logger.warning("in-flight frames did not drain within \(self.options.drainTimeout) s") }
        self.server.shutdown(reason: "daemon stopping")
        for timer in self.timers { timer.cancel() }
        self.logger.info("stopped", metadata: ["frames.processed": "\(self.monitor.state.withLock { $0.processed })"])
    }

    private func installSignalHandlers() {
        for number in [SIGTERM, SIGINT, SIGHUP] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: self.control)
            source.setEventHandler { [self] in
                if number == SIGHUP {
                    self.reload()
                } else {
                    self.logger.notice("signal \(number == SIGTERM ? "SIGTERM" : "SIGINT"): stopping")
                    self.stopRequested.signal()
                }
            }
            source.resume()
            self.signalSources.append(source)
        }
    }

    /// SIGHUP: threshold, decision rules and access list from the config file; clients and sources stay.
    private func reload() {
        do {
            let configuration = try Configuration.load(path: self.options.modelOptions.config)
            let threshold = self.options.threshold ?? configuration.threshold ?? self.threshold.value
            self.threshold.value = threshold
            self.pipeline.updateDecisions(configuration.decisionConfiguration(threshold: threshold))
            self.server.updateThreshold(threshold)
            self.server.updateAccess(configuration.accessPolicy)
            self.logger.notice("configuration reloaded", metadata: ["decision.threshold": "\(threshold)"])
        } catch {
            self.logger.error("reload failed, keeping the running configuration: \(error)")
        }
    }

    /// READY once the first frame was decided; WATCHDOG only while frames flow; STATUS every second.
    private func startTimers() {
        var ready = false
        var lastProcessed = 0
        let status = DispatchSource.makeTimerSource(queue: self.control)
        status.schedule(deadline: .now() + 0.1, repeating: 0.2)
        status.setEventHandler { [self] in
            let snapshot = self.monitor.state.withLock { $0 }
            if !ready && snapshot.firstDecision {
                ready = true
                self.notifier.notify("READY=1\nSTATUS=\(self.statusLine(snapshot))")
                self.logger.info("ready: model loaded, socket bound, first frame decided")
            }
        }
        status.resume()
        self.timers.append(status)
        let line = DispatchSource.makeTimerSource(queue: self.control)
        line.schedule(deadline: .now() + 1, repeating: 1)
        line.setEventHandler { [self] in
            if ready { self.notifier.notify("STATUS=\(self.statusLine(self.monitor.state.withLock { $0 }))") }
        }
        line.resume()
        self.timers.append(line)
        if let interval = self.notifier.watchdogIntervalSeconds {
            let watchdog = DispatchSource.makeTimerSource(queue: self.control)
            watchdog.schedule(deadline: .now() + interval, repeating: interval)
            watchdog.setEventHandler { [self] in
                let processed = self.monitor.state.withLock { $0.processed }
                // Frames decided since the last tick, or no keep-alive: a hung camera ends in a restart.
                if processed > lastProcessed { self.notifier.notify("WATCHDOG=1") }
                lastProcessed = processed
            }
            watchdog.resume()
            self.timers.append(watchdog)
        }
    }

    private func statusLine(_ snapshot: DaemonMonitor.State) -> String {
        self.sourceIDs.map { id in
            "\((id as NSString).lastPathComponent): \(snapshot.states[id] ?? "deciding") \(String(format: "%.1f", self.monitor.fps(id))) fps"
        }.joined(separator: "; ")
    }
}

/// The pipeline, reachable from the server's hooks (which are made before the pipeline exists).
final class PipelineBox: @unchecked Sendable {
    // @unchecked: written once during start-up, before the server accepts clients; read-only after.
    var pipeline: LivenessPipeline?
}

/// A value shared between threads behind a lock (a Mutex cannot be copied into closures).
final class LockedValue<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { self.mutex = Mutex(value) }
    var value: Value {
        get { self.mutex.withLock { $0 } }
        set { self.mutex.withLock { $0 = newValue } }
    }
}
