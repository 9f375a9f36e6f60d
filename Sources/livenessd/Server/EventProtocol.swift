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
enum EventProtocol {
    static let schemaVersion = 2

    /// A request from a client: `{"op": "subscribe" | "status" | "snapshot" | "reset", …}`.
    struct Request: Decodable {
        var op: String
        /// Echoed in the reply so a client can match answers to questions.
        var id: String?
        /// subscribe / reset: limit to these sources (default: all).
        var sources: [String]?
        /// subscribe: "frames" (every decided frame) or "changes" (state changes + heartbeats).
        var mode: String?
        /// subscribe, mode "changes": seconds between heartbeats (default 1).
        var heartbeatSeconds: Double?

        enum CodingKeys: String, CodingKey {
            case op, id, sources, mode
            case heartbeatSeconds = "heartbeat_seconds"
        }
    }

    struct Box: Codable, Equatable {
        var x: Int
        var y: Int
        var w: Int
        var h: Int

        init(_ rect: PixelRect) {
            self.x = rect.x
            self.y = rect.y
            self.w = rect.width
            self.h = rect.height
        }
    }

    /// One decided frame.
    struct DecisionMessage: Codable {
        var schema = EventProtocol.schemaVersion
        var type = "decision"
        /// Server-wide event number: strictly increasing across every message the server publishes.
        var event: UInt64
        var source: String
        /// The frame's sequence number within its source.
        var seq: UInt64
        var pts: Double
        var state: String
        var changed: Bool
        /// Fused spoof probability: smoothed over the window, and this frame's.
        var smoothed: Double?
        var raw: Double?
        /// Each opinion's spoof probability for this frame (absent when the frame was not scored).
        var scores: OpinionScores?
        var window: Int
        var threshold: Double
        var box: Box?
        var faces: Int
        var reason: String?
        var latencyMs: Double
        var time: Double

        enum CodingKeys: String, CodingKey {
            case schema, type, event, source, seq, pts, state, changed, smoothed, raw, scores, window, threshold, box,
                faces, reason, time
            case latencyMs = "latency_ms"
        }
    }

    /// A source's own news: disconnected, reconnected, skipped, ended.
    struct SourceMessage: Codable {
        var schema = EventProtocol.schemaVersion
        var type = "source"
        var event: UInt64
        var source: String
        var kind: String
        var reason: String?
        var time: Double
    }

    struct HeartbeatMessage: Codable {
        var schema = EventProtocol.schemaVersion
        var type = "heartbeat"
        var time: Double
        var sources: [String: SourceSnapshot]
    }

    struct SourceSnapshot: Codable {
        var state: String
        var smoothed: Double?
        var seq: UInt64?
        var pts: Double?
        var reason: String?
        var box: Box?
    }

    struct StatusMessage: Codable {
        var schema = EventProtocol.schemaVersion
        var type = "status"
        var id: String?
        var version: String
        var uptimeSeconds: Double
        var modelSHA256: String
        /// Every model file in use, with its kind (`vit`, `minifasnet`) and SHA-256.
        var models: [ModelFile]?
        var threshold: Double
        var sources: [String: SourceStatus]

        enum CodingKeys: String, CodingKey {
            case schema, type, id, version, threshold, sources, models
            case uptimeSeconds = "uptime_seconds"
            case modelSHA256 = "model_sha256"
        }
    }

    struct ModelFile: Codable, Equatable {
        var kind: String
        var path: String
        var sha256: String
    }

    struct SourceStatus: Codable {
        var kind: String
        var state: String
        var fps: Double
        var framesIn: Int
        var processed: Int
        var droppedStale: Int
        var droppedBusy: Int
        var latencyP50Ms: Double
        var latencyP99Ms: Double
        /// Per stage (`queued`, `prepare`, `inference`): p50 and p99 in milliseconds.
        var stages: [String: StageLatency]? = nil

        enum CodingKeys: String, CodingKey {
            case kind, state, fps, processed, stages
            case framesIn = "frames_in"
            case droppedStale = "dropped_stale"
            case droppedBusy = "dropped_busy"
            case latencyP50Ms = "latency_p50_ms"
            case latencyP99Ms = "latency_p99_ms"
        }
    }

    struct StageLatency: Codable, Equatable {
        var p50Ms: Double
        var p99Ms: Double

        enum CodingKeys: String, CodingKey {
            case p50Ms = "p50_ms"
            case p99Ms = "p99_ms"
        }
    }

    struct SnapshotMessage: Codable {
        var schema = EventProtocol.schemaVersion
        var type = "snapshot"
        var id: String?
        var sources: [String: SourceSnapshot]
    }

    /// Replies without data (`subscribe`, `reset`), and errors.
    struct ReplyMessage: Codable {
        var schema = EventProtocol.schemaVersion
        var type: String  // "ok" | "error" | "bye"
        var id: String?
        var op: String?
        var error: String?
    }

    static func line<Message: Encodable>(_ message: Message) -> String {
        SafeJSON.encode(message, fallback: #"{"error":"cannot encode a message","schema":2,"type":"error"}"#) + "\n"
    }

    /// Heartbeat intervals a client may ask for, in seconds.
    static let heartbeatRange: ClosedRange<Double> = 0.05...3600

    /// Milliseconds between heartbeats for a subscribe request's `heartbeat_seconds` (default 1 s); nil
    /// when it is not a finite number within `heartbeatRange` (a huge one once overflowed Int64 and trapped).
    static func heartbeatMilliseconds(_ seconds: Double?) -> Int64? {
        let value = seconds ?? 1
        guard value.isFinite, Self.heartbeatRange.contains(value) else { return nil }
        return Int64((value * 1000).rounded())
    }

    static func snapshot(of decision: FrameDecision) -> SourceSnapshot {
        SourceSnapshot(
            state: decision.decision.state.rawValue, smoothed: decision.decision.smoothedScore, seq: decision.sequence,
            pts: decision.presentationTimeSeconds, reason: decision.decision.reason, box: decision.box.map(Box.init))
    }
}

/// JSON encoding that cannot trap: NaN and ±infinity (which JSON cannot express) become `null`, so a
/// damaged model that yields a NaN score still produces valid lines instead of crashing the daemon.
enum SafeJSON {
    /// Stands in for a non-finite number during encoding; a string no message field holds.
    private static let marker = "livenessd.non-finite-number.4f1c"

    /// `value` as compact JSON with sorted keys; `fallback` if encoding fails anyway.
    static func encode<Value: Encodable>(_ value: Value, fallback: String) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: Self.marker, negativeInfinity: Self.marker, nan: Self.marker)
        guard let data = try? encoder.encode(value) else { return fallback }
        return String(decoding: data, as: UTF8.self).replacingOccurrences(of: "\"\(Self.marker)\"", with: "null")
    }
}
