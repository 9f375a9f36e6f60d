import Foundation
import LivenessEngine
import TestSupport
import Testing
import ZIPFoundation

/// Regression tests for the security review (issue 15): each input once crashed the daemon, made it
/// misjudge, or destroyed files.
@Suite(.serialized) struct HardeningTests {
    static let clip = "samples/live/pad-tdreal__621f74a8_live_video.MOV"

    /// H1: a heartbeat interval whose milliseconds do not fit Int64 trapped the daemon; now the request
    /// gets an error line naming the allowed range and the connection (and the daemon) stays up.
    @Test func hugeHeartbeatIsRefusedAndTheDaemonStaysUp() throws {
        let daemon = try DaemonProcess(
            [
                "--pacing", "realtime", "--crop", "full", "--models", "vit", "--source",
                try TestAssets.file(Self.clip).path,
            ])
        defer { daemon.signal(SIGTERM) }
        let client = try EventClient(path: daemon.socketPath)
        try client.send(["op": "subscribe", "mode": "changes", "heartbeat_seconds": 1e16, "id": "h"])
        let reply = try client.next(seconds: 20)
        #expect(reply?["type"] as? String == "error", "\(String(describing: reply)) log: \(daemon.log.suffix(1000))")
        #expect((reply?["error"] as? String)?.contains("heartbeat_seconds") == true)
        #expect((reply?["error"] as? String)?.contains("3600") == true)
        try client.send(["op": "status", "id": "after"])
        var status: [String: Any]?
        while status == nil, let message = try client.next(seconds: 20) {
            if message["type"] as? String == "status" { status = message }
        }
        #expect(status?["id"] as? String == "after", "log: \(daemon.log.suffix(1000))")
        #expect(daemon.process.isRunning)
    }

    /// H4: a copy of the published model with NaN weights is refused at load, naming the tensor;
    /// `classify` never prints `nan LIVE`.
    @Test func nanWeightsAreRefused() throws {
        let directory = try TestAssets.temporaryDirectory()
        let model = directory.appendingPathComponent("nan.pt")
        try Self.copyModel(to: model) { _, values in
            for index in stride(from: 0, to: values.count, by: 7) { values[index] = .nan }
        }
        let image = try TestAssets.file("golden/images/spoof_screen.png").path
        for extra in [[], ["--json"]] {
            let output = try Binary.run(
                ["classify", "--crop", "full", "--models", "vit", "--model", model.path, image] + extra)
            #expect(output.status != 0, "stdout: \(output.standardOutput)")
            #expect(!output.standardOutput.contains("LIVE") && !output.standardOutput.contains("SPOOF"))
            #expect(
                output.standardError.contains("nan.pt") && output.standardError.contains("not finite"),
                "\(output.standardError)")
        }
    }

    /// H3, pinning: `run` with a damaged model.pt (one bit flipped, as an SD card loses it) refuses to
    /// start, naming the file, the expected and the actual digest, at priority `err` under systemd.
    @Test func damagedModelRefusesToStart() throws {
        let directory = try TestAssets.temporaryDirectory()
        let damaged = directory.appendingPathComponent("model.pt")
        var bytes = try Data(contentsOf: try TestAssets.modelURL)
        bytes[2_091_331] ^= 0x01
        try bytes.write(to: damaged)
        let actual = try FileDigest.sha256(of: damaged)
        let run = try Binary.run(
            [
                "run", "--models", "vit", "--model", damaged.path, "--socket",
                directory.appendingPathComponent("livenessd.sock").path, "--source",
                try TestAssets.file(Self.clip).path,
            ], environment: ["JOURNAL_STREAM": "8:8"])
        #expect(run.status == 2)
        let line = run.standardError.split(separator: "\n").first { $0.contains("is not the published") }
        #expect(line?.hasPrefix("<3>") == true, "\(run.standardError)")
        #expect(line?.contains(damaged.path) == true)
        #expect(line?.contains(LivenessViT.publishedSHA256) == true && line?.contains(actual) == true)
    }

    /// A detector file that parses but whose graph the locator refuses (its first Conv renamed to an
    /// operator nothing here runs) stops `run` with status 2, as the README promises for every start-up
    /// error (it exited 1 before); the message names the file, the node and the supported operators.
    @Test func refusedDetectorGraphExitsTwo() throws {
        let directory = try TestAssets.temporaryDirectory()
        var bytes = [UInt8](try Data(contentsOf: try TestAssets.file("models/yunet/face_detection_yunet.onnx")))
        // NodeProto.op_type is field 4: tag 0x22, length 4, "Conv".
        let conv: [UInt8] = [0x22, 0x04] + Array("Conv".utf8)
        let at = try #require((0...(bytes.count - conv.count)).first { Array(bytes[$0..<($0 + conv.count)]) == conv })
        bytes.replaceSubrange((at + 2)..<(at + 6), with: Array("Cxnv".utf8))
        let detector = directory.appendingPathComponent("yunet-bad.onnx")
        try Data(bytes).write(to: detector)
        let run = try Binary.run([
            "run", "--models", "vit", "--model", try TestAssets.modelURL.path, "--detector", detector.path,
            "--crop", "detect", "--socket", directory.appendingPathComponent("livenessd.sock").path,
            "--source", try TestAssets.file(Self.clip).path,
        ])
        #expect(run.status == 2, "\(run.standardError)")
        #expect(run.standardError.contains(detector.path), "\(run.standardError)")
        #expect(
            run.standardError.contains("Cxnv") && run.standardError.contains("not supported"), "\(run.standardError)")
    }

    /// A model of one's own (here the published one, re-zipped: same tensors, another digest) is refused
    /// until the config names its digest under `trusted_sha256:`; then it runs.
    @Test func trustedDigestLetsAnUnpublishedModelRun() throws {
        let directory = try TestAssets.temporaryDirectory()
        let own = directory.appendingPathComponent("own.pt")
        try Self.copyModel(to: own) { _, _ in }
        let digest = try FileDigest.sha256(of: own)
        #expect(digest != LivenessViT.publishedSHA256)
        let arguments = [
            "run", "--models", "vit", "--model", own.path, "--crop", "full", "--pacing", "fast", "--socket",
            directory.appendingPathComponent("livenessd.sock").path, "--source", try TestAssets.file(Self.clip).path,
        ]
        let refused = try Binary.run(arguments)
        #expect(refused.status == 2 && refused.standardError.contains("trusted_sha256"), "\(refused.standardError)")
        let config = directory.appendingPathComponent("livenessd.yaml")
        try "trusted_sha256: [\(digest)]\n".write(to: config, atomically: true, encoding: .utf8)
        let ran = try Binary.run(arguments + ["--config", config.path])
        #expect(ran.status == 0, "\(ran.standardError)")
        #expect(ran.standardError.contains("running it because trusted_sha256 names its digest"))
    }

    /// Rewrites every float storage of the published model through `patch`; zip CRCs stay right.
    static func copyModel(to url: URL, patch: (String, inout [Float]) -> Void) throws {
        let entries = try ZipEntries.read(try TestAssets.modelURL)
        var patched: [(String, [UInt8])] = []
        for (name, bytes) in entries {
            if name.contains("/data/") && !name.hasSuffix(".pkl") && bytes.count % 4 == 0 {
                var values = bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
                patch(name, &values)
                patched.append((name, values.withUnsafeBytes { Array($0) }))
            } else {
                patched.append((name, bytes))
            }
        }
        try ZipEntries.write(patched, to: url)
    }

    /// M3: `--socket` naming a directory (or any non-socket file) is an error; nothing is deleted.
    @Test func socketPathThatIsNotASocketIsNeverDeleted() throws {
        let directory = try TestAssets.temporaryDirectory()
        let folder = directory.appendingPathComponent("precious")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let inside = folder.appendingPathComponent("keep.txt")
        try "keep me".write(to: inside, atomically: true, encoding: .utf8)
        let file = directory.appendingPathComponent("notes.txt")
        try "keep me too".write(to: file, atomically: true, encoding: .utf8)
        for path in [folder.path, file.path] {
            let daemon = try DaemonProcess(
                ["--models", "vit", "--source", try TestAssets.file(Self.clip).path], socketPath: path)
            #expect(daemon.waitForExit(seconds: 30) == 2, "\(daemon.log.suffix(1000))")
            #expect(daemon.log.contains(path) && daemon.log.contains("not a socket"), "\(daemon.log.suffix(1000))")
        }
        #expect(FileManager.default.fileExists(atPath: inside.path))
        #expect(FileManager.default.fileExists(atPath: file.path))
    }

    /// M8: decision settings outside their ranges are refused, naming the key and the range.
    @Test(arguments: [
        ("decision:\n  ema_alpha: 7\n", "decision.ema_alpha"),
        ("decision:\n  ema_alpha: 0\n", "decision.ema_alpha"),
        ("decision:\n  ema_alpha: .nan\n", "decision.ema_alpha"),
        ("decision:\n  window_frames: 5\n  min_frames: 6\n", "decision.min_frames"),
        ("decision:\n  min_frames: 0\n", "decision.min_frames"),
        ("decision:\n  min_frames: 100000\n", "decision.min_frames"),
        ("decision:\n  window_frames: 0\n", "decision.window_frames"),
        ("decision:\n  window_seconds: -1\n", "decision.window_seconds"),
        ("decision:\n  window_seconds: 0\n", "decision.window_seconds"),
        ("decision:\n  window_seconds: .inf\n", "decision.window_seconds"),
        ("decision:\n  hysteresis: -0.1\n", "decision.hysteresis"),
        ("decision:\n  hysteresis: 0.5\n", "decision.hysteresis"),
        ("decision:\n  face_lost_reset_seconds: -2\n", "decision.face_lost_reset_seconds"),
        ("decision:\n  face_lost_reset_seconds: .nan\n", "decision.face_lost_reset_seconds"),
        ("threshold: .nan\n", "threshold"),
    ])
    func badDecisionSettingsAreRefused(_ text: String, _ key: String) throws {
        let file = try TestAssets.temporaryDirectory().appendingPathComponent("livenessd.yaml")
        try text.write(to: file, atomically: true, encoding: .utf8)
        let (accepted, run) = try CommandLineTests.check(["--models", "minifasnet", file.path])
        #expect(accepted == nil, "\(text) was accepted")
        #expect(run.status == 2)
        #expect(run.standardError.contains(key), "\(run.standardError)")
    }

    /// M8: values at the edges of the ranges load.
    @Test func decisionSettingsAtTheEdgesLoad() throws {
        let file = try TestAssets.temporaryDirectory().appendingPathComponent("livenessd.yaml")
        try """
        decision:
          window_frames: 4
          min_frames: 4
          window_seconds: 0.5
          hysteresis: 0
          smoothing: ema
          ema_alpha: 1
          face_lost_reset_seconds: 0
        """.write(to: file, atomically: true, encoding: .utf8)
        let decision =
            try CommandLineTests.check(["--models", "minifasnet", file.path]).0?["decision"] as? [String: Any]
        #expect(decision?["min_frames"] as? Int == 4 && decision?["window_frames"] as? Int == 4)
        #expect(decision?["smoothing"] as? String == "ema" && decision?["ema_alpha"] as? Double == 1)
    }
}

/// Reads and writes zip archives entry by entry (stored, no compression), as torch.save writes them.
enum ZipEntries {
    static func read(_ url: URL) throws -> [(String, [UInt8])] {
        let archive = try Archive(url: url, accessMode: .read)
        var entries: [(String, [UInt8])] = []
        for entry in archive {
            var bytes: [UInt8] = []
            _ = try archive.extract(entry, skipCRC32: true) { bytes += $0 }
            entries.append((entry.path, bytes))
        }
        return entries
    }

    static func write(_ entries: [(String, [UInt8])], to url: URL) throws {
        let archive = try Archive(url: url, accessMode: .create)
        for (name, bytes) in entries {
            try archive.addEntry(with: name, type: .file, uncompressedSize: Int64(bytes.count)) { position, size in
                Data(bytes[Int(position)..<(Int(position) + size)])
            }
        }
    }
}
