import CaptureKit
import FramePipeline
import Foundation
import LivenessEngine
import Logging
import ServiceLifecycle
import NIOConcurrencyHelpers
import Synchronization
import UnixSignals

/// What SIGHUP may change while the daemon runs (read from the config file by the caller).
public struct DaemonSettings: Sendable {
    public var threshold: Double
    public var decisions: DecisionConfiguration
    public var access: AccessPolicy
    /// What a `verify` transaction needs before it answers.
    public var verification: VerificationRules

    public init(
        threshold: Double, decisions: DecisionConfiguration, access: AccessPolicy,
        verification: VerificationRules = VerificationRules()
    ) {
        self.threshold = threshold
        self.decisions = decisions
        self.access = access
        self.verification = verification
    }
}

/// Where the Prometheus endpoint listens (`metrics.listen`).
public struct MetricsAddress: Sendable {
    public var host: String
    public var port: Int
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }
}

/// One source to watch, and how faces are found in its frames.
public struct DaemonSource: Sendable {
    public var source: FrameSource
    /// The device or URL behind the source's id (a `cameras:` entry's name), for `status`.
    public var location: String?
    /// Makes the source's face locator (one per lane); nil judges whole frames.
    public var makeLocator: (@Sendable () throws -> FaceLocator)?
    /// Frames analysed per second of the source (`analysis_fps`); nil or 0: every frame.
    public var analysisFramesPerSecond: Double?

    public init(
        source: FrameSource, location: String? = nil, makeLocator: (@Sendable () throws -> FaceLocator)?,
        analysisFramesPerSecond: Double? = nil
    ) {
        self.analysisFramesPerSecond = analysisFramesPerSecond
        self.source = source
        self.location = location
        self.makeLocator = makeLocator
    }
}

/// The running daemon: the pipeline, the event server and systemd, run as services of one
/// `ServiceGroup` (swift-service-lifecycle). Start-up order is the array's: server (bound in `init`,
/// so a socket problem fails before anything runs), pipeline, systemd notifications, signals.
/// Shutdown runs in reverse with a deadline: systemd hears STOPPING, the pipeline drains its
/// in-flight frames (their events still reach clients), then the server says bye and closes.
public final class LivenessDaemon: Sendable {
    public struct Options: Sendable {
        /// Start the sources only once a client has subscribed (replays in a test lab).
        public var holdUntilSubscribed = false
        /// Seconds the pipeline may take to drain in-flight frames when stopping.
        public var drainTimeoutSeconds = 5.0
        /// Reported in `status`.
        public var version: String
        /// Every model file in use, for `status`.
        public var models: [EventProtocol.ModelFile]
        public var server: EventServer.Configuration
        /// `verify.save_failed`: where the faces of transactions that did not open are kept (nil: nowhere).
        public var failedCrops: FailedCropStore?
        /// `mqtt:`: the broker events go to (nil: none).
        public var mqtt: MQTTForwarder.Settings?
        /// `metrics:`: where Prometheus scrapes (nil: no endpoint).
        public var metrics: MetricsAddress?

        public init(version: String, models: [EventProtocol.ModelFile], server: EventServer.Configuration) {
            self.version = version
            self.models = models
            self.server = server
        }
    }

    let logger: Logger
    let options: Options
    let pipeline: LivenessPipeline
    let server: EventServer
    let monitor = DaemonMonitor()
    let notifier: SystemdNotifier
    let sources: [DaemonSource]
    let mqtt: MQTTForwarder?
    let metrics: DaemonMetrics?
    /// The bound metrics endpoint (its port, for a `listen` on port 0).
    public let metricsEndpoint: MetricsEndpoint?
    private let reloadSettings: @Sendable (_ runningThreshold: Double) throws -> DaemonSettings
    /// False once a drain timed out: frames may still be inside the models (see `run`).
    let drained = Synchronization.Atomic<Bool>(true)
    /// One element per `subscribe` request (only the newest is kept): ends `holdUntilSubscribed`.
    private let subscriptions: AsyncStream<Void>
    private let subscribed: AsyncStream<Void>.Continuation

    /// Builds the pipeline and binds the socket. `reload` reads the settings again on SIGHUP (given the
    /// threshold in force, for a config file that no longer names one).
    public init(
        options: Options, sources: [DaemonSource], opinions: Opinions, settings: DaemonSettings,
        notifier: SystemdNotifier = SystemdNotifier(), logger: Logger,
        reload: @escaping @Sendable (_ runningThreshold: Double) throws -> DaemonSettings
    ) throws {
        self.options = options
        self.sources = sources
        self.logger = logger
        self.notifier = notifier
        self.reloadSettings = reload
        (self.subscriptions, self.subscribed) = AsyncStream.makeStream(
            of: Void.self, bufferingPolicy: .bufferingNewest(1))
        var serverConfiguration = options.server
        serverConfiguration.access = settings.access
        let status = StatusReporter(
            version: options.version, models: options.models, started: Date(),
            sourceKinds: Dictionary(
                sources.map { ($0.source.id, $0.source.kind == .live ? "live" : "replay") },
                uniquingKeysWith: { a, _ in a }),
            sourceLocations: Dictionary(
                sources.compactMap { entry in entry.location.map { (entry.source.id, $0) } },
                uniquingKeysWith: { a, _ in a }))
        let box = PipelineReference(threshold: settings.threshold, verification: settings.verification)
        let monitor = self.monitor
        let subscribed = self.subscribed
        let sourceIDs = sources.map(\.source.id)
        let hooks = EventServer.Hooks(
            status: { status.message(pipeline: box.pipeline, monitor: monitor, threshold: box.threshold) },
            subscribed: { subscribed.yield() },
            reset: { sources in
                if let sources {
                    for id in sources { box.pipeline?.reset(sourceID: id) }
                } else {
                    box.pipeline?.reset()
                }
            },
            verify: { id, source, timeout in
                guard let pipeline = box.pipeline else { throw ServerError("the daemon is still starting") }
                guard let sourceID = source ?? (sourceIDs.count == 1 ? sourceIDs[0] : nil) else {
                    throw ServerError(
                        "name the source to verify (\"source\"): this daemon watches \(sourceIDs.joined(separator: ", "))"
                    )
                }
                let rules = box.verification
                let seconds = timeout ?? rules.defaultTimeoutSeconds
                guard seconds <= rules.maximumTimeoutSeconds else {
                    throw ServerError(
                        "timeout_ms \(Int(seconds * 1000)) is above the longest allowed, "
                            + "\(Int(rules.maximumTimeoutSeconds * 1000)) (verify.max_timeout_seconds)")
                }
                do {
                    return try pipeline.beginTransaction(
                        id: id, sourceID: sourceID, timeoutSeconds: seconds, rules: rules)
                } catch let refusal as TransactionRefusal {
                    if sourceIDs.contains(sourceID) && refusal.description.hasPrefix("no source") {
                        // Configured, not started yet (holding for a subscriber, or still opening).
                        throw ServerError("source '\(sourceID)' has not started yet; try again in a moment")
                    }
                    throw ServerError(refusal.description)
                }
            })
        let server = EventServer(
            configuration: serverConfiguration, threshold: settings.threshold, hooks: hooks, logger: logger)
        self.server = server
        var pipelineConfiguration = LivenessPipeline.Configuration(decisions: settings.decisions)
        pipelineConfiguration.keepTransactionCrops = options.failedCrops != nil
        let failedCrops = options.failedCrops
        let statusMessage: @Sendable () -> EventProtocol.StatusMessage = {
            status.message(pipeline: box.pipeline, monitor: monitor, threshold: box.threshold)
        }
        let mqtt = try options.mqtt.map { try MQTTForwarder(settings: $0, logger: logger, status: statusMessage) }
        let metrics = options.metrics.map { _ in DaemonMetrics(version: options.version) }
        self.mqtt = mqtt
        self.metrics = metrics
        self.pipeline = LivenessPipeline(opinions: opinions, configuration: pipelineConfiguration) { event in
            monitor.observe(event)
            server.publish(event)
            mqtt?.observe(event)
            metrics?.observe(event)
            Self.audit(event, logger: logger, failedCrops: failedCrops)
        }
        box.set(self.pipeline)
        self.statusBox = box
        try server.start()
        if let metrics, let address = options.metrics {
            let pipeline = self.pipeline
            let endpoint = try MetricsEndpoint(
                host: address.host, port: address.port, group: server.eventLoopGroup, metrics: metrics
            ) {
                metrics.refresh(statistics: pipeline.statistics(), clients: server.clientCount, mqtt: mqtt?.counters)
            }
            logger.info("metrics on http://\(address.host):\(endpoint.port)/metrics")
            self.metricsEndpoint = endpoint
        } else {
            self.metricsEndpoint = nil
        }
    }

    private let statusBox: PipelineReference

    /// The audit trail (issue 12): every verdict a source's state enters, and every transaction's start and
    /// outcome, at `info` with the source, scores and transaction id.
    static func audit(_ event: PipelineEvent, logger: Logger, failedCrops: FailedCropStore? = nil) {
        switch event {
        case .decision(let decided):
            let state = decided.decision.state
            guard decided.decision.changed, state == .live || state == .spoof else { return }
            logger.info(
                "verdict \(state.rawValue)",
                metadata: [
                    "source.id": "\(decided.sourceID)", "frame.seq": "\(decided.sequence)",
                    "score.smoothed": "\(Self.figure(decided.decision.smoothedScore))",
                    "score.vit": "\(Self.figure(decided.scores.vit))",
                    "score.minifasnet": "\(Self.figure(decided.scores.minifasnet))",
                ])
        case .transaction(let transaction):
            switch transaction.phase {
            case .started(let timeout):
                logger.info(
                    "transaction started",
                    metadata: [
                        "source.id": "\(transaction.sourceID)", "transaction.id": "\(transaction.id)",
                        "transaction.timeout_s": "\(timeout)",
                    ])
            case .ended(let result, let elapsed, let crop):
                if result.outcome != .live, let crop, let failedCrops {
                    failedCrops.save(
                        crop: crop, id: transaction.id, outcome: result.outcome.rawValue, source: transaction.sourceID)
                }
                logger.info(
                    "transaction \(result.outcome.rawValue)",
                    metadata: [
                        "source.id": "\(transaction.sourceID)", "transaction.id": "\(transaction.id)",
                        "transaction.outcome": "\(result.outcome.rawValue)",
                        "transaction.reason": "\(result.reason ?? "")",
                        "transaction.elapsed_s": "\(Self.figure(elapsed))",
                        "transaction.frames": "\(result.frames)", "transaction.scored": "\(result.scoredFrames)",
                        "score.smoothed": "\(Self.figure(result.smoothed))",
                        "score.vit": "\(Self.figure(result.scores.vit))",
                        "score.minifasnet": "\(Self.figure(result.scores.minifasnet))",
                        "decision.threshold": "\(transaction.threshold)",
                    ])
            }
        case .source:
            return
        }
    }

    private static func figure(_ value: Double?) -> String {
        guard let value else { return "none" }
        return String(format: "%.4f", value)
    }

    /// Runs until every source has ended or a signal asks to stop. `signals` should be made (it traps
    /// SIGTERM, SIGINT and SIGHUP) before the slow start-up work, so a signal during it is kept.
    /// Returns false when in-flight frames did not drain in time: a lane may still be inside a model,
    /// and the caller must then leave with `_exit` rather than `exit` (exit's destructors unmap
    /// OpenBLAS's buffers under that lane: SIGSEGV at exit, issue 15 M4).
    @discardableResult
    public func run(signals: UnixSignalsSequence) async throws -> Bool {
        var configuration = ServiceGroupConfiguration(
            services: [
                .init(service: ServerService(daemon: self)),
                // After the pipeline in shutdown: its last events are forwarded before `offline`.
                .init(service: ForwardingService(daemon: self)),
                .init(
                    service: PipelineService(daemon: self), successTerminationBehavior: .gracefullyShutdownGroup,
                    failureTerminationBehavior: .gracefullyShutdownGroup),
                .init(service: SystemdService(daemon: self)),
                .init(
                    service: SignalService(daemon: self, signals: signals),
                    successTerminationBehavior: .gracefullyShutdownGroup),
            ],
            logger: self.logger)
        // The drain has its own limit; the rest (bye to clients, closing) takes milliseconds.
        configuration.maximumGracefulShutdownDuration = .milliseconds(
            Int64((self.options.drainTimeoutSeconds + 5) * 1000))
        configuration.maximumCancellationDuration = .seconds(5)
        try await ServiceGroup(configuration: configuration).run()
        self.logger.info(
            "stopped", metadata: ["frames.processed": "\(self.monitor.state.withLockedValue { $0.processed })"])
        return self.drained.load(ordering: .relaxed)
    }

    /// SIGHUP: threshold, decision rules and access list again; clients and sources stay.
    func reload() {
        do {
            let settings = try self.reloadSettings(self.statusBox.threshold)
            self.statusBox.setThreshold(settings.threshold)
            self.statusBox.setVerification(settings.verification)
            self.pipeline.updateDecisions(settings.decisions)
            self.server.updateThreshold(settings.threshold)
            self.server.updateAccess(settings.access)
            self.logger.notice("configuration reloaded", metadata: ["decision.threshold": "\(settings.threshold)"])
        } catch {
            self.logger.error("reload failed, keeping the running configuration: \(error)")
        }
    }

    /// Waits for the first subscriber; false when the daemon is asked to stop first.
    func waitForSubscriber() async -> Bool {
        for await _ in self.subscriptions.cancelOnGracefulShutdown() { return true }
        return false
    }

    func statusLine(_ snapshot: DaemonMonitor.State) -> String {
        self.sources.map { entry in
            let id = entry.source.id
            let fps = String(format: "%.1f", self.monitor.fps(id))
            return "\((id as NSString).lastPathComponent): \(snapshot.states[id] ?? "deciding") \(fps) fps"
        }.joined(separator: "; ")
    }
}

// MARK: - The services

/// The event server: bound before the group starts; closed last, after the final events went out.
struct ServerService: Service {
    let daemon: LivenessDaemon

    func run() async throws {
        try? await gracefulShutdown()
        self.daemon.server.shutdown(reason: "daemon stopping")
    }
}

/// The MQTT forwarder and the metrics endpoint: started before the sources, stopped after the pipeline drained
/// (the forwarder publishes what is queued, then `offline`, within its own 2 s limit).
struct ForwardingService: Service {
    let daemon: LivenessDaemon

    func run() async throws {
        self.daemon.mqtt?.start()
        try? await gracefulShutdown()
        guard self.daemon.mqtt != nil || self.daemon.metricsEndpoint != nil else { return }
        let daemon = self.daemon
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            // Both block briefly (a broker's acknowledgement, closing a channel): never on the pool's threads.
            DispatchQueue.global().async {
                daemon.mqtt?.stop()
                daemon.metricsEndpoint?.close()
                continuation.resume()
            }
        }
    }
}

/// Starts the sources (after the first subscriber, if asked) and ends when they all have ended, or
/// drains in-flight frames when the group shuts down.
struct PipelineService: Service {
    let daemon: LivenessDaemon

    func run() async throws {
        let daemon = self.daemon
        if daemon.options.holdUntilSubscribed {
            daemon.logger.info("waiting for a subscriber before starting the sources")
            guard await daemon.waitForSubscriber() else { return }
        }
        try self.startSources()
        let finished = OneShot()
        let control = DispatchQueue(label: "livenessd.control")
        await withGracefulShutdownHandler {
            await withCheckedContinuation { continuation in
                finished.wait(continuation)
                daemon.pipeline.whenFinished(on: control) { finished.fire() }
            }
        } onGracefulShutdown: {
            // Draining blocks (up to the drain timeout): on a queue of its own, never on the
            // concurrency pool's threads.
            control.async {
                daemon.logger.info("stopping: draining in-flight frames")
                let timeout = daemon.options.drainTimeoutSeconds
                if !daemon.pipeline.stop(timeoutSeconds: timeout) {
                    daemon.logger.warning("in-flight frames did not drain within \(timeout) s")
                    daemon.drained.store(false, ordering: .relaxed)
                }
                finished.fire()
            }
        }
    }

    /// A source that cannot start stops the daemon (fail fast); those already started are stopped.
    private func startSources() throws {
        for entry in self.daemon.sources {
            do {
                let rate = entry.analysisFramesPerSecond ?? 0
                if let makeLocator = entry.makeLocator {
                    try self.daemon.pipeline.add(
                        entry.source, locator: try makeLocator(), analysisFramesPerSecond: rate)
                } else {
                    try self.daemon.pipeline.add(entry.source, analysisFramesPerSecond: rate)
                }
            } catch {
                _ = self.daemon.pipeline.stop(timeoutSeconds: 1)
                throw error
            }
            self.daemon.logger.info(
                "watching", metadata: ["source.id": "\(entry.source.id)", "source.kind": "\(entry.source.kind)"])
        }
    }
}

/// READY once the first frame was decided, or once a source waits for its camera (a camera missing at boot
/// is reported, not a start-up failure); WATCHDOG only while frames flow, or while no source has delivered
/// yet and one is waiting (a late camera is not a hang; once frames flowed, the watchdog is gated on them
/// again); STATUS every second; STOPPING when the group shuts down.
struct SystemdService: Service {
    let daemon: LivenessDaemon

    func run() async throws {
        let daemon = self.daemon
        try? await cancelWhenGracefulShutdown {
            var ready = false
            var lastProcessed = 0
            var tick = 0
            let period = Duration.milliseconds(200)
            // Watchdog ticks at half systemd's interval, rounded to whole periods (at least one).
            let watchdogTicks = daemon.notifier.watchdogIntervalSeconds.map { max(1, Int($0 / 0.2)) }
            while true {
                try await Task.sleep(for: period)
                tick += 1
                let snapshot = daemon.monitor.state.withLockedValue { $0 }
                let waitingOnly = snapshot.delivered.isEmpty && !snapshot.waiting.isEmpty
                if !ready && (snapshot.firstDecision || waitingOnly) {
                    ready = true
                    daemon.notifier.notify("READY=1\nSTATUS=\(daemon.statusLine(snapshot))")
                    daemon.logger.info(
                        snapshot.firstDecision
                            ? "ready: model loaded, socket bound, first frame decided"
                            : "ready: model loaded, socket bound, waiting for a camera")
                }
                if ready && tick % 5 == 0 { daemon.notifier.notify("STATUS=\(daemon.statusLine(snapshot))") }
                if let every = watchdogTicks, tick % every == 0 {
                    // Frames decided since the last tick, or no keep-alive: a hung camera ends in a restart.
                    if snapshot.processed > lastProcessed || waitingOnly { daemon.notifier.notify("WATCHDOG=1") }
                    lastProcessed = snapshot.processed
                }
            }
        }
        daemon.notifier.notify("STOPPING=1\nSTATUS=stopping")
    }
}

/// SIGTERM and SIGINT end this service, which shuts the group down; SIGHUP reloads the settings.
struct SignalService: Service {
    let daemon: LivenessDaemon
    let signals: UnixSignalsSequence

    func run() async throws {
        for await signal in self.signals.cancelOnGracefulShutdown() {
            switch signal {
            case .sighup:
                self.daemon.reload()
            case .sigterm, .sigint:
                self.daemon.logger.notice("signal \(signal): stopping")
                return
            default:
                continue
            }
        }
    }
}

// MARK: - Helpers

/// Resumes one waiting continuation exactly once, whichever of `wait` and `fire` comes last.
final class OneShot: Sendable {
    private enum State {
        case idle
        case waiting(CheckedContinuation<Void, Never>)
        case fired
        case done
    }
    private let state = NIOLockedValueBox(State.idle)

    func wait(_ continuation: CheckedContinuation<Void, Never>) {
        let resumeNow = self.state.withLockedValue { state -> Bool in
            if case .fired = state {
                state = .done
                return true
            }
            state = .waiting(continuation)
            return false
        }
        if resumeNow { continuation.resume() }
    }

    func fire() {
        let waiting = self.state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            switch state {
            case .idle:
                state = .fired
                return nil
            case .waiting(let continuation):
                state = .done
                return continuation
            case .fired, .done:
                return nil
            }
        }
        waiting?.resume()
    }
}

/// The pipeline and threshold as the server's hooks see them (the hooks are made before the pipeline).
final class PipelineReference: Sendable {
    private let state:
        NIOLockedValueBox<(pipeline: LivenessPipeline?, threshold: Double, verification: VerificationRules)>
    init(threshold: Double, verification: VerificationRules) {
        self.state = NIOLockedValueBox((nil, threshold, verification))
    }
    var pipeline: LivenessPipeline? { self.state.withLockedValue { $0.pipeline } }
    var threshold: Double { self.state.withLockedValue { $0.threshold } }
    var verification: VerificationRules { self.state.withLockedValue { $0.verification } }
    func set(_ pipeline: LivenessPipeline) { self.state.withLockedValue { $0.pipeline = pipeline } }
    func setThreshold(_ value: Double) { self.state.withLockedValue { $0.threshold = value } }
    func setVerification(_ rules: VerificationRules) { self.state.withLockedValue { $0.verification = rules } }
}

/// Builds `status` replies from the pipeline's statistics and the monitor's view.
struct StatusReporter: Sendable {
    let version: String
    let models: [EventProtocol.ModelFile]
    let started: Date
    let sourceKinds: [String: String]
    /// The device or URL of each source whose id is a name.
    var sourceLocations: [String: String] = [:]

    func message(pipeline: LivenessPipeline?, monitor: DaemonMonitor, threshold: Double) -> EventProtocol.StatusMessage
    {
        let statistics = pipeline?.statistics() ?? [:]
        let states = monitor.state.withLockedValue { $0.states }
        var sources: [String: EventProtocol.SourceStatus] = [:]
        for (id, kind) in self.sourceKinds {
            let lane = statistics[id] ?? LaneStatistics()
            let stages = [LaneStatistics.Stage.queued, .prepare, .inference].map {
                (
                    $0.rawValue,
                    EventProtocol.StageLatency(
                        p50Ms: lane.milliseconds($0, percentile: 50), p99Ms: lane.milliseconds($0, percentile: 99))
                )
            }
            sources[id] = EventProtocol.SourceStatus(
                kind: kind, state: states[id] ?? "deciding", fps: monitor.fps(id), framesIn: lane.framesIn,
                processed: lane.processed, droppedStale: lane.droppedStale, droppedBusy: lane.droppedBusy,
                droppedRate: lane.droppedRate, latencyP50Ms: lane.latencyMilliseconds(percentile: 50),
                latencyP99Ms: lane.latencyMilliseconds(percentile: 99),
                stages: Dictionary(uniqueKeysWithValues: stages), location: self.sourceLocations[id])
        }
        // `model_sha256` stays the first file's (the ViT's when it is loaded) for clients of schema 1.
        return EventProtocol.StatusMessage(
            version: self.version, uptimeSeconds: Date().timeIntervalSince(self.started),
            modelSHA256: self.models.first?.sha256 ?? "", models: self.models, threshold: threshold, sources: sources)
    }
}
