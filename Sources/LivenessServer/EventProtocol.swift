import CaptureKit
import FramePipeline
import Foundation
import LivenessEngine

/// The event socket's wire format: newline-delimited JSON, one object per line, every object with
/// `"schema": 2` and a `"type"`. Documented with examples in docs/PROTOCOL.md.
///
/// Compatibility: within a schema version fields are only ever added; a new version changes the
/// meaning of a field. Schema 2 (the MiniFASNet pair beside the ViT): `raw`, `smoothed` and
/// `threshold` are the fused score's; `scores` gives each opinion's spoof probability; status
/// lists every model file in `models`.
public enum EventProtocol {
    public static let schemaVersion = 2

    /// A request from a client: `{"op": "subscribe" | "status" | "snapshot" | "reset" | "verify", …}`.
    public struct Request: Decodable, Sendable {
        public var op: String
        /// Echoed in the reply so a client can match answers to questions.
        public var id: String?
        /// subscribe / reset: limit to these sources (default: all).
        public var sources: [String]?
        /// subscribe: "frames" (every decided frame) or "changes" (state changes + heartbeats).
        public var mode: String?
        /// subscribe, mode "changes": seconds between heartbeats (default 1).
        public var heartbeatSeconds: Double?
        /// verify: the source to judge (may be left out when the daemon watches one source).
        public var source: String?
        /// verify: how long the requester waits for a verdict, in milliseconds (default `verify.timeout_seconds`).
        public var timeoutMs: Double?

        enum CodingKeys: String, CodingKey {
            case op, id, sources, mode, source
            case heartbeatSeconds = "heartbeat_seconds"
            case timeoutMs = "timeout_ms"
        }
    }

    /// A face box: `{"x","y","w","h"}` in frame pixels, the same shape in every output (`FrameBox`).
    public typealias Box = FrameBox

    /// One decided frame.
    public struct DecisionMessage: Codable, Sendable {
        public var schema = EventProtocol.schemaVersion
        public var type = "decision"
        /// Server-wide event number: strictly increasing across every message the server publishes.
        public var event: UInt64
        public var source: String
        /// The frame's sequence number within its source.
        public var seq: UInt64
        public var pts: Double
        public var state: String
        public var changed: Bool
        /// Fused spoof probability: smoothed over the window, and this frame's.
        public var smoothed: Double?
        public var raw: Double?
        /// Each opinion's spoof probability for this frame (absent when the frame was not scored).
        public var scores: OpinionScores?
        public var window: Int
        public var threshold: Double
        public var box: Box?
        public var faces: Int
        public var reason: String?
        public var latencyMs: Double
        public var time: Double

        enum CodingKeys: String, CodingKey {
            case schema, type, event, source, seq, pts, state, changed, smoothed, raw, scores, window, threshold, box,
                faces, reason, time
            case latencyMs = "latency_ms"
        }
    }

    /// A source's own news: disconnected, reconnected, skipped, ended.
    public struct SourceMessage: Codable, Sendable {
        public var schema = EventProtocol.schemaVersion
        public var type = "source"
        public var event: UInt64
        public var source: String
        public var kind: String
        public var reason: String?
        public var time: Double
    }

    /// A verification transaction: the one answer to a `verify` request (`type` "verify"), and the
    /// transaction's start and end as events for subscribers (`type` "transaction", `phase`).
    public struct TransactionMessage: Codable, Sendable {
        public var schema = EventProtocol.schemaVersion
        public var type: String
        /// Events only (the server's event counter).
        public var event: UInt64?
        /// The transaction id (the request's `id`, or one the daemon made).
        public var id: String
        public var source: String
        /// Events only: `started` or `ended`.
        public var phase: String?
        /// `live`, `spoof`, `no_face`, `unusable` or `timeout` (absent when started).
        public var outcome: String?
        public var reason: String?
        /// The fused spoof probability smoothed over the window at the last scored frame.
        public var smoothed: Double?
        /// Each opinion's spoof probability, averaged over the transaction's scored frames.
        public var scores: OpinionScores?
        public var threshold: Double
        public var frames: Int?
        public var scoredFrames: Int?
        /// Frame time the evidence spans, and time from request to answer.
        public var evidenceSeconds: Double?
        public var elapsedMs: Double?
        public var timeoutMs: Double?
        public var firstSeq: UInt64?
        public var lastSeq: UInt64?
        public var time: Double

        enum CodingKeys: String, CodingKey {
            case schema, type, event, id, source, phase, outcome, reason, smoothed, scores, threshold, frames, time
            case scoredFrames = "scored_frames"
            case evidenceSeconds = "evidence_seconds"
            case elapsedMs = "elapsed_ms"
            case timeoutMs = "timeout_ms"
            case firstSeq = "first_seq"
            case lastSeq = "last_seq"
        }

        /// The message for `event`: an event for subscribers, or (`asReply`) the requester's answer.
        public init(_ event: TransactionEvent, number: UInt64?, asReply: Bool, time: Double) {
            self.type = asReply ? "verify" : "transaction"
            self.event = asReply ? nil : number
            self.id = event.id
            self.source = event.sourceID
            self.threshold = event.threshold
            self.time = time
            switch event.phase {
            case .started(let timeout):
                self.phase = asReply ? nil : "started"
                self.timeoutMs = (timeout * 1000).rounded()
            case .ended(let result, let elapsed, _):
                self.phase = asReply ? nil : "ended"
                self.outcome = result.outcome.rawValue
                self.reason = result.reason
                self.smoothed = result.smoothed
                let scores = result.scores.finite
                self.scores = scores.vit == nil && scores.minifasnet == nil ? nil : scores
                self.frames = result.frames
                self.scoredFrames = result.scoredFrames
                self.evidenceSeconds = (result.evidenceSeconds * 1000).rounded() / 1000
                self.elapsedMs = (elapsed * 10_000).rounded() / 10
                self.firstSeq = result.firstSequence
                self.lastSeq = result.lastSequence
            }
        }
    }

    public struct HeartbeatMessage: Codable, Sendable {
        public var schema = EventProtocol.schemaVersion
        public var type = "heartbeat"
        public var time: Double
        public var sources: [String: SourceSnapshot]
    }

    public struct SourceSnapshot: Codable, Sendable {
        public var state: String
        public var smoothed: Double?
        public var seq: UInt64?
        public var pts: Double?
        public var reason: String?
        public var box: Box?
    }

    public struct StatusMessage: Codable, Sendable {
        public var schema = EventProtocol.schemaVersion
        public var type = "status"
        public var id: String?
        public var version: String
        public var uptimeSeconds: Double
        public var modelSHA256: String
        /// Every model file in use, with its kind (`vit`, `minifasnet`) and SHA-256.
        public var models: [ModelFile]?
        public var threshold: Double
        public var sources: [String: SourceStatus]

        enum CodingKeys: String, CodingKey {
            case schema, type, id, version, threshold, sources, models
            case uptimeSeconds = "uptime_seconds"
            case modelSHA256 = "model_sha256"
        }
    }

    public struct ModelFile: Codable, Equatable, Sendable {
        public var kind: String
        public var path: String
        public var sha256: String

        public init(kind: String, path: String, sha256: String) {
            self.kind = kind
            self.path = path
            self.sha256 = sha256
        }
    }

    public struct SourceStatus: Codable, Sendable {
        public var kind: String
        public var state: String
        public var fps: Double
        public var framesIn: Int
        public var processed: Int
        public var droppedStale: Int
        public var droppedBusy: Int
        /// Frames beyond the source's analysis rate (`analysis_fps`), skipped on purpose.
        public var droppedRate: Int? = nil
        public var latencyP50Ms: Double
        public var latencyP99Ms: Double
        /// Per stage (`queued`, `prepare`, `inference`): p50 and p99 in milliseconds.
        public var stages: [String: StageLatency]? = nil
        /// The device or URL, when the source is known by a name (`cameras:` in the config).
        public var location: String? = nil

        enum CodingKeys: String, CodingKey {
            case kind, state, fps, processed, stages, location
            case framesIn = "frames_in"
            case droppedStale = "dropped_stale"
            case droppedBusy = "dropped_busy"
            case droppedRate = "dropped_rate"
            case latencyP50Ms = "latency_p50_ms"
            case latencyP99Ms = "latency_p99_ms"
        }
    }

    public struct StageLatency: Codable, Equatable, Sendable {
        public var p50Ms: Double
        public var p99Ms: Double

        enum CodingKeys: String, CodingKey {
            case p50Ms = "p50_ms"
            case p99Ms = "p99_ms"
        }
    }

    public struct SnapshotMessage: Codable, Sendable {
        public var schema = EventProtocol.schemaVersion
        public var type = "snapshot"
        public var id: String?
        public var sources: [String: SourceSnapshot]
    }

    /// Replies without data (`subscribe`, `reset`), and errors.
    public struct ReplyMessage: Codable, Sendable {
        public var schema = EventProtocol.schemaVersion
        public var type: String  // "ok" | "error" | "bye"
        public var id: String?
        public var op: String?
        public var error: String?
    }

    /// `message` as one line (one-off encoder; the server's hot paths pass their own).
    public static func line<Message: Encodable>(_ message: Message) -> String {
        var encoder = SafeJSON()
        return Self.line(message, encoder: &encoder)
    }

    static func line<Message: Encodable>(_ message: Message, encoder: inout SafeJSON) -> String {
        encoder.encode(message, fallback: #"{"error":"cannot encode a message","schema":2,"type":"error"}"#) + "\n"
    }

    /// Heartbeat intervals a client may ask for, in seconds.
    public static let heartbeatRange: ClosedRange<Double> = 0.05...3600

    /// Milliseconds between heartbeats for a subscribe request's `heartbeat_seconds` (default 1 s); nil
    /// when it is not a finite number within `heartbeatRange` (a huge one once overflowed Int64 and trapped).
    public static func heartbeatMilliseconds(_ seconds: Double?) -> Int64? {
        let value = seconds ?? 1
        guard value.isFinite, Self.heartbeatRange.contains(value) else { return nil }
        return Int64((value * 1000).rounded())
    }

    public static func snapshot(of decision: FrameDecision) -> SourceSnapshot {
        SourceSnapshot(
            state: decision.decision.state.rawValue, smoothed: decision.decision.smoothedScore, seq: decision.sequence,
            pts: decision.presentationTimeSeconds, reason: decision.decision.reason, box: decision.box.map(Box.init))
    }
}

/// JSON encoding that cannot trap: NaN and ±infinity (which JSON cannot express) become `null`, so a
/// damaged model that yields a NaN score still produces valid lines instead of crashing the daemon.
///
/// One value owns one `JSONEncoder` (making one costs more than encoding a decision line): the
/// server's publishing queue keeps one, and each connection one for its replies.
public struct SafeJSON {
    /// Stands in for a non-finite number during encoding; a string no message field holds.
    private static let marker = "livenessd.non-finite-number.4f1c"
    private let encoder: JSONEncoder

    public init() {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: Self.marker, negativeInfinity: Self.marker, nan: Self.marker)
        self.encoder = encoder
    }

    /// `value` as compact JSON with sorted keys; `fallback` if encoding fails anyway.
    public mutating func encode<Value: Encodable>(_ value: Value, fallback: String) -> String {
        guard let data = try? self.encoder.encode(value) else { return fallback }
        let text = String(decoding: data, as: UTF8.self)
        // Only lines that held a non-finite number pay for the search and replace.
        guard text.contains(Self.marker) else { return text }
        return text.replacingOccurrences(of: "\"\(Self.marker)\"", with: "null")
    }

    /// One-off encoding with a fresh encoder.
    public static func encode<Value: Encodable>(_ value: Value, fallback: String) -> String {
        var encoder = SafeJSON()
        return encoder.encode(value, fallback: fallback)
    }
}
