import CoreMetrics
import FramePipeline
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import NIOConcurrencyHelpers
import Synchronization

/// The daemon's figures as Prometheus metrics (swift-metrics' API, swift-prometheus's registry and text
/// exposition). No global `MetricsSystem.bootstrap`: every metric is made from this object's factory, so
/// several daemons in one test process keep their own registries.
///
/// Per decided frame (`observe`, on the inference queue: counters and histograms are atomics in swift-prometheus):
/// decisions by state, verdict changes, transactions by outcome, and the stages' durations. At each scrape
/// (`refresh`): frames received and dropped per source (from the pipeline's lane counters), clients, MQTT.
public final class DaemonMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let factory: PrometheusMetricsFactory

    /// One source's per-frame metrics, made once.
    struct SourceMetrics {
        var decisions: [String: CoreMetrics.Counter] = [:]
        var stages: [CoreMetrics.Timer]
        var model: CoreMetrics.Timer
    }

    private let sources = NIOLockedValueBox<[String: SourceMetrics]>([:])
    /// Cumulative figures seen at the previous scrape, for counters fed from totals.
    private let lastTotals = NIOLockedValueBox<[String: Int]>([:])

    static let stageNames = ["queued", "prepare", "inference", "total"]

    public init(version: String) {
        let registry = PrometheusCollectorRegistry()
        self.registry = registry
        var factory = PrometheusMetricsFactory(registry: registry)
        // Stage durations from 0.5 ms (a frame without a face) to 2.5 s (a stalled lane).
        factory.defaultDurationHistogramBuckets = [
            .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
            .milliseconds(20), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
            .seconds(1), .milliseconds(2500),
        ]
        self.factory = factory
        Gauge(label: "livenessd_build_info", dimensions: [("version", version)], factory: factory).record(1)
    }

    private func sourceMetrics<Result>(_ source: String, _ body: (inout SourceMetrics) -> Result) -> Result {
        self.sources.withLockedValue { sources in
            if sources[source] == nil {
                sources[source] = SourceMetrics(
                    stages: Self.stageNames.map {
                        CoreMetrics.Timer(
                            label: "livenessd_stage_duration_seconds", dimensions: [("source", source), ("stage", $0)],
                            factory: self.factory)
                    },
                    model: CoreMetrics.Timer(
                        label: "livenessd_model_inference_seconds", dimensions: [("source", source)],
                        factory: self.factory))
            }
            return body(&sources[source]!)
        }
    }

    public func observe(_ event: PipelineEvent) {
        switch event {
        case .decision(let decided):
            let state = decided.decision.state.rawValue
            let (counter, stages, model) = self.sourceMetrics(decided.sourceID) {
                metrics -> (CoreMetrics.Counter, [CoreMetrics.Timer], CoreMetrics.Timer) in
                if let counter = metrics.decisions[state] { return (counter, metrics.stages, metrics.model) }
                let counter = CoreMetrics.Counter(
                    label: "livenessd_decisions_total", dimensions: [("source", decided.sourceID), ("state", state)],
                    factory: self.factory)
                metrics.decisions[state] = counter
                return (counter, metrics.stages, metrics.model)
            }
            counter.increment()
            if decided.modelNanoseconds > 0, decided.modelNanoseconds < UInt64(Int64.max) {
                model.recordNanoseconds(Int64(decided.modelNanoseconds))
            }
            if decided.preparedNanoseconds > 0 {
                let capture = decided.captureTimeNanoseconds
                let durations = [
                    decided.prepareStartedNanoseconds &- capture,
                    decided.preparedNanoseconds &- decided.prepareStartedNanoseconds,
                    decided.decidedTimeNanoseconds &- decided.preparedNanoseconds,
                    decided.decidedTimeNanoseconds &- capture,
                ]
                for (timer, nanoseconds) in zip(stages, durations) where nanoseconds < UInt64(Int64.max) {
                    timer.recordNanoseconds(Int64(nanoseconds))
                }
            }
            if decided.decision.changed, state == "live" || state == "spoof" {
                CoreMetrics.Counter(
                    label: "livenessd_verdicts_total", dimensions: [("source", decided.sourceID), ("state", state)],
                    factory: self.factory
                ).increment()
            }
        case .transaction(let transaction):
            if case .ended(let result, _, _) = transaction.phase {
                CoreMetrics.Counter(
                    label: "livenessd_transactions_total",
                    dimensions: [("source", transaction.sourceID), ("outcome", result.outcome.rawValue)],
                    factory: self.factory
                ).increment()
            }
        case .source(let id, let sourceEvent):
            let kind: String
            switch sourceEvent {
            case .frame: return
            case .disconnected: kind = "disconnected"
            case .reconnected: kind = "reconnected"
            case .waiting: kind = "waiting"
            case .skipped: kind = "skipped"
            case .ended: kind = "ended"
            }
            CoreMetrics.Counter(
                label: "livenessd_source_events_total", dimensions: [("source", id), ("kind", kind)],
                factory: self.factory
            ).increment()
        }
    }

    /// A counter that follows a running total (a decrease means the total started again).
    private func follow(_ label: String, _ dimensions: [(String, String)], total: Int) {
        let key = label + dimensions.map { "|\($0.0)=\($0.1)" }.joined()
        let delta = self.lastTotals.withLockedValue { last -> Int in
            let previous = last[key] ?? 0
            last[key] = total
            return total >= previous ? total - previous : total
        }
        let counter = CoreMetrics.Counter(label: label, dimensions: dimensions, factory: self.factory)
        if delta > 0 { counter.increment(by: delta) }
    }

    /// Brings the figures that are totals elsewhere up to date; called before each exposition.
    public func refresh(statistics: [String: LaneStatistics], clients: Int, mqtt: MQTTForwarder.Counters?) {
        for (source, lane) in statistics {
            self.follow("livenessd_frames_received_total", [("source", source)], total: lane.framesIn)
            self.follow("livenessd_frames_decided_total", [("source", source)], total: lane.processed)
            self.follow(
                "livenessd_frames_dropped_total", [("source", source), ("reason", "stale")], total: lane.droppedStale)
            self.follow(
                "livenessd_frames_dropped_total", [("source", source), ("reason", "busy")], total: lane.droppedBusy)
            self.follow(
                "livenessd_frames_dropped_total", [("source", source), ("reason", "rate")], total: lane.droppedRate)
        }
        Gauge(label: "livenessd_clients", factory: self.factory).record(clients)
        if let mqtt {
            Gauge(label: "livenessd_mqtt_connected", factory: self.factory).record(mqtt.connected ? 1 : 0)
            Gauge(label: "livenessd_mqtt_queue_length", factory: self.factory).record(mqtt.queued)
            self.follow("livenessd_mqtt_published_total", [], total: mqtt.published)
            self.follow("livenessd_mqtt_dropped_total", [], total: mqtt.dropped)
        }
        if let resident = Self.residentBytes() {
            Gauge(label: "process_resident_memory_bytes", factory: self.factory).record(resident)
        }
    }

    /// Resident set size from /proc/self/statm (pages × page size).
    static func residentBytes() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return nil }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return nil }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// What each metric means, as `# HELP` lines. swift-metrics' API carries no help text and swift-prometheus
    /// refuses a second registration with a different one, so the lines are added to the exposition here.
    static let help: [String: String] = [
        "livenessd_build_info": "The running livenessd's version (always 1).",
        "livenessd_frames_received_total": "Frames a source delivered to the pipeline.",
        "livenessd_frames_decided_total": "Frames that went through the models and the decision machine.",
        "livenessd_frames_dropped_total":
            "Frames dropped before analysis: stale (a newer frame of the same camera was waiting) or busy (the inference queue was full).",
        "livenessd_decisions_total": "Decided frames by the state they left the source in.",
        "livenessd_verdicts_total": "Changes of a source's verdict into live or spoof.",
        "livenessd_transactions_total": "Verification transactions by outcome.",
        "livenessd_source_events_total": "Source events: disconnected, reconnected, waiting, skipped, ended.",
        "livenessd_stage_duration_seconds":
            "Per decided frame: queued (capture to prepare), prepare (detection, gates, crops), inference (the models, batching included) and total (capture to decision).",
        "livenessd_model_inference_seconds":
            "Per scored frame: how long the models ran on the batch that scored it (every opinion).",
        "livenessd_clients": "Connections open on the event socket.",
        "livenessd_mqtt_connected": "1 while the MQTT broker is connected.",
        "livenessd_mqtt_queue_length": "MQTT messages waiting for the broker.",
        "livenessd_mqtt_published_total": "MQTT messages the broker took.",
        "livenessd_mqtt_dropped_total": "MQTT messages dropped because the queue was full while the broker was away.",
        "process_resident_memory_bytes": "Resident memory of the daemon, bytes.",
    ]

    /// The text exposition format (version 0.0.4), with a `# HELP` line before each metric's `# TYPE`.
    public func exposition() -> [UInt8] {
        let text = self.registry.emitToString()
        var output = ""
        output.reserveCapacity(text.utf8.count + 2048)
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("# TYPE "), let name = line.dropFirst(7).split(separator: " ").first,
                let help = Self.help[String(name)]
            {
                output += "# HELP \(name) \(help)\n"
            }
            output += line
            output += "\n"
        }
        if output.hasSuffix("\n\n") { output.removeLast() }
        return Array(output.utf8)
    }
}

/// `GET /metrics` over HTTP/1.1 (SwiftNIO's HTTP codec), on the event server's event loop.
public final class MetricsEndpoint: Sendable {
    let channel: any Channel
    /// The port bound (the one asked for, or the kernel's choice for port 0).
    public let port: Int

    /// Binds now, so a port in use fails the daemon's start with a clear reason.
    public init(
        host: String, port: Int, group: any EventLoopGroup, metrics: DaemonMetrics,
        refresh: @escaping @Sendable () -> Void
    ) throws {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(
                        MetricsHTTPHandler(metrics: metrics, refresh: refresh))
                }
            }
        do {
            self.channel = try bootstrap.bind(host: host, port: port).wait()
        } catch {
            throw ServerError(
                "cannot serve metrics on \(host):\(port) (metrics.listen): \(error); choose another address or port")
        }
        self.port = self.channel.localAddress?.port ?? port
    }

    public func close() { try? self.channel.close().wait() }
}

final class MetricsHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let metrics: DaemonMetrics
    let refresh: @Sendable () -> Void
    private var request: HTTPRequestHead?

    init(metrics: DaemonMetrics, refresh: @escaping @Sendable () -> Void) {
        self.metrics = metrics
        self.refresh = refresh
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.request = head
        case .body:
            break
        case .end:
            guard let head = self.request else { return }
            self.request = nil
            let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
            let status: HTTPResponseStatus
            var body: [UInt8]
            var contentType = "text/plain; charset=utf-8"
            if head.method != .GET && head.method != .HEAD {
                (status, body) = (.methodNotAllowed, Array("only GET /metrics\n".utf8))
            } else if path != "/metrics" {
                (status, body) = (.notFound, Array("livenessd serves /metrics only\n".utf8))
            } else {
                self.refresh()
                (status, body) = (.ok, self.metrics.exposition())
                contentType = "text/plain; version=0.0.4; charset=utf-8"
            }
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: contentType)
            headers.add(name: "Content-Length", value: "\(body.count)")
            if head.method == .HEAD { body = [] }
            let keepAlive = head.isKeepAlive
            if !keepAlive { headers.add(name: "Connection", value: "close") }
            context.write(
                self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
                promise: nil)
            if !body.isEmpty {
                context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
            }
            let done = context.writeAndFlush(self.wrapOutboundOut(.end(nil)))
            if !keepAlive {
                let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
                done.whenComplete { _ in loopBound.value.close(promise: nil) }
            }
        }
    }
}
