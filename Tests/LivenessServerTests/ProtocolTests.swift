import Foundation
import FramePipeline
import LivenessEngine
import Testing

@testable import LivenessServer

/// The wire format's guards (issue 15): values that once trapped the daemon or produced invalid JSON.
@Suite struct ProtocolTests {
    /// H1 without a process: the accepted heartbeat range and what falls outside it.
    @Test func heartbeatIntervalIsValidated() {
        #expect(EventProtocol.heartbeatMilliseconds(nil) == 1000)
        #expect(EventProtocol.heartbeatMilliseconds(0.05) == 50)
        #expect(EventProtocol.heartbeatMilliseconds(3600) == 3_600_000)
        for bad in [1e16, 3600.5, 0.01, 0, -1, .nan, .infinity, -.infinity] {
            #expect(EventProtocol.heartbeatMilliseconds(bad) == nil, "\(bad)")
        }
    }

    /// H4: a message holding NaN or infinity encodes as valid JSON (non-finite numbers become null).
    @Test func nonFiniteNumbersEncodeAsNull() throws {
        let message = EventProtocol.DecisionMessage(
            event: 1, source: "cam", seq: 2, pts: .infinity, state: "LIVE", changed: false, smoothed: .nan,
            raw: -.infinity, scores: OpinionScores(vit: .nan, minifasnet: 0.25), window: 3, threshold: .nan,
            box: nil, faces: 1, reason: nil, latencyMs: 1.5, time: 2)
        let line = EventProtocol.line(message)
        #expect(line.hasSuffix("\n"))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(line)")
        #expect(object["smoothed"] is NSNull && object["raw"] is NSNull && object["threshold"] is NSNull)
        #expect(object["pts"] is NSNull)
        #expect((object["scores"] as? [String: Any])?["vit"] is NSNull)
        #expect((object["scores"] as? [String: Any])?["minifasnet"] as? Double == 0.25)
        #expect(object["latency_ms"] as? Double == 1.5 && object["source"] as? String == "cam")
    }

    /// One encoder reused for many lines gives the same lines as a fresh one each time.
    @Test func aReusedEncoderEncodesLikeAFreshOne() {
        var encoder = SafeJSON()
        for value in [0.25, .nan, 1e300, -.infinity, 0.5] {
            let message = EventProtocol.ReplyMessage(type: "ok", id: "\(value)", op: "status", error: nil)
            let box = EventProtocol.Box(PixelRect(x: 1, y: 2, width: 3, height: 4))
            #expect(EventProtocol.line(message, encoder: &encoder) == EventProtocol.line(message))
            #expect(encoder.encode(box, fallback: "") == SafeJSON.encode(box, fallback: ""))
        }
    }

    /// H4: a classify result holding NaN or infinity prints valid JSON (`classify --json` writes it
    /// with SafeJSON); `classify` never printed `nan LIVE` again (HardeningTests.nanWeightsAreRefused).
    @Test func nonFiniteClassificationScoresEncodeAsNull() throws {
        var result = ClassificationResult(path: "a.png", threshold: 0.5)
        result.scores = OpinionScores(vit: .nan)
        result.spoofProbability = .infinity
        let line = SafeJSON.encode(result, fallback: "")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(line)")
        #expect(json["spoof_probability"] is NSNull)
        #expect((json["scores"] as? [String: Any])?["vit"] is NSNull)
    }
}

/// Issue 12: an ordinary user's default socket is under $XDG_RUNTIME_DIR (they cannot write to /run).
@Suite struct DefaultSocketTests {
    @Test func defaultSocketFollowsTheUser() {
        let session = ["XDG_RUNTIME_DIR": "/run/user/1000"]
        #expect(
            Configuration.defaultSocketPath(environment: session, uid: 1000)
                == "/run/user/1000/livenessd/livenessd.sock")
        #expect(Configuration.defaultSocketPath(environment: session, uid: 0) == "/run/livenessd/livenessd.sock")
        #expect(Configuration.defaultSocketPath(environment: [:], uid: 1000) == "/run/livenessd/livenessd.sock")
        #expect(
            Configuration.defaultSocketPath(environment: ["XDG_RUNTIME_DIR": "relative"], uid: 1000)
                == "/run/livenessd/livenessd.sock")
    }
}
