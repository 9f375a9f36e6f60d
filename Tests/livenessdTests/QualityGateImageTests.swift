import Foundation
import TestSupport
import Testing

/// Every gate reason on real pictures from ../shared, spoiled by FFmpeg filters (not hand-made
/// pixels), through `livenessd classify --json` as a user runs it.
@Suite struct QualityGateImageTests {
    /// (name, golden image, FFmpeg filter, expected gate). The untouched images are judged.
    static let cases: [(String, String, String, String?)] = [
        ("plain", "live_astronaut.png", "null", nil),
        ("dark", "live_astronaut.png", "eq=brightness=-0.6", "too_dark"),
        ("bright", "live_astronaut.png", "eq=brightness=0.5", "too_bright"),
        ("small", "live_astronaut.png", "scale=112:-1", "face_too_small"),
        ("blurred", "live_selfie.png", "scale=486:-1,gblur=sigma=6", "too_blurred"),
        ("cut", "live_selfie.png", "crop=iw:1650:0:0", "face_cut_by_edge"),
        ("faceless", "live_astronaut.png", "crop=160:160:340:340", "no_face"),
    ]

    @Test func everyGateOnSpoiledRealImages() throws {
        let directory = try TestAssets.temporaryDirectory()
        var paths: [String] = []
        for (name, image, filter, _) in Self.cases {
            let output = directory.appendingPathComponent("\(name).png").path
            try FFmpegTool.run(
                "ffmpeg",
                ["-v", "error", "-y", "-i", try TestAssets.file("golden/images/\(image)").path, "-vf", filter, output])
            paths.append(output)
        }
        let detector = try TestAssets.file("models/yunet/face_detection_yunet.onnx").path
        let run = try Binary.run(
            ["classify", "--json", "--model", try TestAssets.modelURL.path, "--detector", detector] + paths)
        #expect(run.status == 3, "some images had no usable face: exit 3 (stderr: \(run.standardError))")
        let lines = run.standardOutput.split(separator: "\n").map {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] ?? [:]
        }
        try #require(lines.count == Self.cases.count, "\(run.standardOutput)")
        for (line, (name, _, _, gate)) in zip(lines, Self.cases) {
            #expect(line["gate"] as? String == gate, "\(name): \(line)")
            if gate == nil {
                #expect(line["decision"] as? String != nil && line["box"] != nil, "\(name): \(line)")
            } else {
                #expect(line["decision"] == nil && line["spoof_probability"] == nil, "\(name): \(line)")
            }
            #expect((line["box"] == nil) == (gate == "no_face"), "\(name): a box unless no face: \(line)")
        }
    }
}
