import Foundation
import TestSupport
import Testing

/// `livenessd bench detect` as a user runs it: the default model comes from $LIVENESSD_TEST_ASSETS.
@Suite struct BenchDetectTests {
    @Test func timesEachSizeAndFindsTheAstronaut() throws {
        let result = try Binary.run(
            ["bench", "detect", "--json", "--iterations", "2", "--warmup", "0", "--size", "320x240", "100x70"],
            environment: ["LIVENESSD_TEST_ASSETS": TestAssets.root.path])
        #expect(result.status == 0, "stderr: \(result.standardError)")
        let lines = result.standardOutput.split(separator: "\n").map {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] ?? [:]
        }
        #expect(lines.map { $0["width"] as? Int } == [320, 100])
        #expect(lines.first?["faces"] as? Int == 1)
        #expect(lines.allSatisfy { ($0["ms_per_frame_median"] as? Double ?? 0) > 0 })
    }

    @Test func missingDetectorModelIsAnErrorNamingThePath() throws {
        let result = try Binary.run(["bench", "detect", "--detector", "/nonexistent/yunet.onnx", "--iterations", "1"])
        #expect(result.status == 2)
        #expect(result.standardError.contains("/nonexistent/yunet.onnx"))
    }
}
