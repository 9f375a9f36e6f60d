import Foundation
import LivenessEngine
import LivenessServer
import TestSupport
import Testing

/// Runs the built `livenessd` binary as a user would.
enum Binary {
    static var url: URL? {
        let candidates = [
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(
                "livenessd"),
            TestAssets.packageRoot.appendingPathComponent(".build/debug/livenessd"),
        ]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }

    /// The shared MiniFASNet pair, found by the binary through $LIVENESSD_MINIFASNET (as a user's
    /// environment or setup.sh's models/silent-face would provide it).
    static var pairFolder: String? { try? TestAssets.file("models/silent-face").path }

    struct Output {
        var status: Int32
        var standardOutput: String
        var standardError: String
    }

    static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> Output {
        let process = Process()
        process.executableURL = try #require(Self.url, "livenessd binary not found next to the tests")
        process.arguments = arguments
        var merged = ProcessInfo.processInfo.environment
        merged["LIVENESSD_MODEL"] = nil
        merged["LIVENESSD_MINIFASNET"] = Self.pairFolder
        for (key, value) in environment { merged[key] = value }
        process.environment = merged
        process.currentDirectoryURL = TestAssets.packageRoot
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Output(
            status: process.terminationStatus, standardOutput: String(decoding: outData, as: UTF8.self),
            standardError: String(decoding: errData, as: UTF8.self))
    }
}

@Suite struct CommandLineTests {
    @Test func classifyReportsEveryImageAndFailsOnTheBadOne() throws {
        let model = try TestAssets.modelURL.path
        let good = try TestAssets.file("golden/images/spoof_screen.png").path
        let exif = try TestAssets.file("golden/exif/spoof_print_exif6.jpg").path
        let directory = try TestAssets.temporaryDirectory()
        let bad = directory.appendingPathComponent("broken.jpg")
        try "not a jpeg".write(to: bad, atomically: true, encoding: .utf8)

        // Whole pictures, as the reference probabilities were computed; the ViT alone, as the reference.
        let json = try Binary.run([
            "classify", "--json", "--crop", "full", "--models", "vit", "--model", model, good, bad.path, exif,
        ])
        #expect(json.status == 1, "stderr: \(json.standardError)")
        let lines = json.standardOutput.split(separator: "\n").map {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] ?? [:]
        }
        #expect(lines.count == 3)
        #expect(lines[0]["path"] as? String == good && lines[0]["decision"] as? String == "SPOOF")
        #expect(abs((lines[0]["spoof_probability"] as? Double ?? 0) - 0.9790990352630615) <= 0.005)
        #expect(lines[1]["path"] as? String == bad.path && (lines[1]["error"] as? String)?.isEmpty == false)
        #expect(lines[1]["spoof_probability"] == nil)
        #expect(lines[2]["exif_orientation"] as? Int == 6 && lines[2]["decision"] as? String == "SPOOF")

        let text = try Binary.run([
            "classify", "--crop", "full", "--models", "vit", "--model", model, "--threshold", "0.99", good,
        ])
        #expect(text.status == 0)
        #expect(text.standardOutput.hasPrefix("\(good)\t0.979"))
        #expect(text.standardOutput.contains("LIVE"))  // 0.979 < 0.99
    }

    @Test func missingOrBrokenModelExitsWithTwoAndSaysWhy() throws {
        let image = try TestAssets.file("golden/images/live_astronaut.png").path
        let missing = try Binary.run(["classify", "--model", "/nonexistent/model.pt", image])
        #expect(missing.status == 2)
        #expect(missing.standardError.contains("/nonexistent/model.pt"))
        #expect(missing.standardError.contains("does not exist"))

        let broken = try TestAssets.temporaryDirectory().appendingPathComponent("model.pt")
        try "not a model".write(to: broken, atomically: true, encoding: .utf8)
        let refused = try Binary.run(["classify", image], environment: ["LIVENESSD_MODEL": broken.path])
        #expect(refused.status == 2)
        #expect(refused.standardError.contains("not a torch.save checkpoint"))
    }

    /// `config check`'s JSON, or nil (and the message) when it refuses the file.
    static func check(
        _ arguments: [String], environment: [String: String] = [:]
    ) throws -> ([String: Any]?, Binary.Output) {
        let run = try Binary.run(["config", "check"] + arguments, environment: environment)
        guard run.status == 0 else { return (nil, run) }
        let object = try JSONSerialization.jsonObject(with: Data(run.standardOutput.utf8)) as? [String: Any]
        return (try #require(object, "not JSON: \(run.standardOutput)"), run)
    }

    /// A misspelt key used to be ignored without a word (`treshold: 0.5` left the checkpoint's threshold
    /// in force): now the file is refused, naming the key, where it is, and the nearest known key.
    @Test(arguments: [
        ("treshold: 0.5\n", "unknown key 'treshold' (did you mean 'threshold'?)"),
        ("decision:\n  min_frame: 3\n", "unknown key 'decision.min_frame' (did you mean 'min_frames'?)"),
        ("socket:\n  max_client: 3\n", "unknown key 'socket.max_client' (did you mean 'max_clients'?)"),
        ("cammeras: []\n", "unknown key 'cammeras' (did you mean 'cameras'?)"),
        ("zzz: 1\n", "unknown key 'zzz'; known keys here: model, threshold"),
        // Named cameras: each entry's keys are checked, names differ, one of device or url.
        ("cameras:\n  - name: door\n    device: /dev/video0\n    rotation: 90\n", "unknown key 'cameras.rotation'"),
        (
            "cameras:\n  - name: a\n    device: /dev/video0\n  - name: a\n    url: rtsp://x\n",
            "the name 'a' is used twice"
        ),
        ("cameras:\n  - name: a\n    device: /dev/video0\n    url: rtsp://x\n", "needs exactly one of device"),
        ("cameras:\n  - name: a\n    device: /dev/video0\n    size: big\n", "size must look like 640x480"),
        ("analysis_fps: -1\n", "analysis_fps must be 0 (every frame) or frames per second up to 240, got -1"),
        ("cameras:\n  - name: a\n    device: /dev/video0\n    analysis_fps: 500\n", "(a): analysis_fps must be 0"),
        // Found by the config fuzz target: Yams trapped on a base-60 integer that overflows.
        ("decision:\n  window_frames: 1:0:0:0:0:0:0:0:0:0:0\n", "reads as a YAML base-60 number too large"),
    ])
    func unknownConfigKeysAreRefusedWithASuggestion(text: String, message: String) throws {
        let file = try TestAssets.temporaryDirectory().appendingPathComponent("livenessd.yaml")
        try text.write(to: file, atomically: true, encoding: .utf8)
        let (settings, run) = try Self.check([file.path])
        #expect(settings == nil && run.status == 2)
        #expect(run.standardError.contains(file.path) && run.standardError.contains(message), "\(run.standardError)")
    }

    /// Issue 12: access lists take user and group names as well as numbers (looked up when the file is
    /// read); a name the system does not know is refused, naming the list and the name.
    @Test func accessListsTakeNames() throws {
        let directory = try TestAssets.temporaryDirectory()
        let file = directory.appendingPathComponent("livenessd.yaml")
        try "access:\n  allow_uids: [root, 4242]\n  allow_gids: [daemon]\n  controller_gids: [0]\n"
            .write(to: file, atomically: true, encoding: .utf8)
        let models = ["--models", "vit", "--model", try TestAssets.modelURL.path]
        let (settings, run) = try Self.check(models + [file.path])
        let access = try #require(settings?["access"] as? [String: Any], "\(run.standardError)")
        #expect(access["allow_uids"] as? [Int] == [0, 4242])
        #expect(access["allow_gids"] as? [Int] == [Int(getgrnam("daemon").pointee.gr_gid)])
        #expect(access["controller_gids"] as? [Int] == [0])
        try "access:\n  allow_gids: [no-such-group-4f1c]\n".write(to: file, atomically: true, encoding: .utf8)
        let (refused, failed) = try Self.check(models + [file.path])
        #expect(refused == nil && failed.status == 2)
        #expect(
            failed.standardError.contains("access.allow_gids: there is no group named 'no-such-group-4f1c'"),
            "\(failed.standardError)")
    }

    /// The documented sample config names only keys the daemon knows and passes validation (its model
    /// paths are an installed system's, so they are pointed at the test models here).
    @Test func sampleConfigHasNoUnknownKeys() throws {
        let sample = try String(
            contentsOf: TestAssets.packageRoot.appendingPathComponent("samples/livenessd.yaml"), encoding: .utf8)
        let models = try TestAssets.file("models")
        let text = sample.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            if line.hasPrefix("model:") { return "model: \(models.path)/face-liveness-vit/model.pt" }
            if line.hasPrefix("minifasnet:") { return "minifasnet: \(models.path)/silent-face" }
            if line.hasPrefix("detector:") { return "detector: \(models.path)/yunet/face_detection_yunet.onnx" }
            return String(line)
        }.joined(separator: "\n")
        let file = try TestAssets.temporaryDirectory().appendingPathComponent("livenessd.yaml")
        try text.write(to: file, atomically: true, encoding: .utf8)
        let (settings, run) = try Self.check([file.path])
        #expect(settings != nil, "\(run.standardError)")
        #expect(settings?["analysis_fps"] as? Double == 5)
    }

    /// Issue 14: the analysis rate `config check` reports — the default, the file's, a camera's own.
    @Test func analysisRateIsReported() throws {
        let directory = try TestAssets.temporaryDirectory()
        let file = directory.appendingPathComponent("livenessd.yaml")
        let environment = ["LIVENESSD_MODEL": try TestAssets.modelURL.path]
        try "models: vit\n".write(to: file, atomically: true, encoding: .utf8)
        let (defaults, first) = try Self.check([file.path], environment: environment)
        #expect(defaults?["analysis_fps"] as? Double == 5, "\(first.standardError)")
        try """
        models: vit
        analysis_fps: 12.5
        cameras:
          - {name: door, device: /dev/video0, analysis_fps: 0}
          - {name: hall, device: /dev/video1}
        """.write(to: file, atomically: true, encoding: .utf8)
        let (settings, second) = try Self.check([file.path], environment: environment)
        #expect(settings?["analysis_fps"] as? Double == 12.5, "\(second.standardError)")
        #expect(settings?["camera_analysis_fps"] as? [String: Double] == ["door": 0, "hall": 12.5])
    }

    @Test func modelIsFoundByFlagThenEnvironmentThenConfig() throws {
        let directory = try TestAssets.temporaryDirectory()
        let a = directory.appendingPathComponent("a.pt")
        let b = directory.appendingPathComponent("b.pt")
        let c = directory.appendingPathComponent("c.pt")
        for url in [a, b, c] { FileManager.default.createFile(atPath: url.path, contents: Data()) }
        let file = directory.appendingPathComponent("livenessd.yaml")
        try "model: \(c.path)\nthreshold: 0.3\n".write(to: file, atomically: true, encoding: .utf8)
        let environment = ["LIVENESSD_MODEL": b.path]
        let vit = ["--models", "vit", file.path]
        #expect(try Self.check(["--model", a.path] + vit, environment: environment).0?["model"] as? String == a.path)
        #expect(try Self.check(vit, environment: environment).0?["model"] as? String == b.path)
        let fromFile = try Self.check(vit).0
        #expect(fromFile?["model"] as? String == c.path)
        #expect(fromFile?["threshold"] as? Double == 0.3)
        #expect(fromFile?["config"] as? String == file.path)

        try "threshold: [oops".write(to: file, atomically: true, encoding: .utf8)
        let (refused, run) = try Self.check(vit)
        #expect(refused == nil && run.status == 2)
        #expect(run.standardError.contains("config file \(file.path) is not valid"), "\(run.standardError)")
        let missing = try Self.check(["--models", "vit", directory.appendingPathComponent("none.yaml").path]).1
        #expect(missing.status == 2 && missing.standardError.contains("does not exist"))
    }

    /// `models:` takes a name, a list or `both`; unknown names and bad fusion weights are refused.
    @Test func modelSelectionAndFusionWeightsInTheConfig() throws {
        let file = try TestAssets.temporaryDirectory().appendingPathComponent("livenessd.yaml")
        let model = try TestAssets.file("models/face-liveness-vit/model.pt").path
        func check(_ text: String) throws -> ([String: Any]?, Binary.Output) {
            try text.write(to: file, atomically: true, encoding: .utf8)
            return try Self.check(["--model", model, file.path])
        }
        #expect(try check("models: vit\n").0?["models"] as? [String] == ["vit"])
        #expect(try check("models: [minifasnet, vit]\n").0?["models"] as? [String] == ["minifasnet", "vit"])
        #expect(try check("models: both\n").0?["models"] as? [String] == ["vit", "minifasnet"])
        #expect(try check("threshold: 0.4\n").0?["models"] as? [String] == ["vit", "minifasnet"])
        #expect(try check("models: [vit, resnet]\n").1.standardError.contains("unknown model 'resnet'"))
        let weighted = try check("fusion: {vit: 0.5, minifasnet: 2}\n").0?["fusion"] as? [String: Double]
        #expect(weighted == ["vit": 0.5, "minifasnet": 2])
        #expect(try check("fusion: {vit: -1}\n").1.standardError.contains("fusion.vit"))
        #expect(try check("fusion: {minifasnet: .nan}\n").1.standardError.contains("fusion.minifasnet"))
    }

    /// Both opinions on still pictures: text and JSON show each opinion and the fused score.
    @Test func classifyShowsEveryOpinionAndTheFusedScore() throws {
        let image = try TestAssets.file("golden/images/live_astronaut.png").path
        let detector = try TestAssets.file("models/yunet/face_detection_yunet.onnx").path
        let json = try Binary.run([
            "classify", "--json", "--model", try TestAssets.modelURL.path, "--detector", detector, image,
        ])
        #expect(json.status == 0, "stderr: \(json.standardError)")
        let line = try #require(
            try JSONSerialization.jsonObject(with: Data(json.standardOutput.utf8)) as? [String: Any])
        let scores = try #require(line["scores"] as? [String: Double])
        let vit = try #require(scores["vit"])
        let pair = try #require(scores["minifasnet"])
        let fused = try #require(line["spoof_probability"] as? Double)
        #expect(abs(fused - ScoreFusion().fuse(OpinionScores(vit: vit, minifasnet: pair))!) < 1e-12)
        // One face-box shape everywhere (issue 12): {"x","y","w","h"}, as on the socket and in frames.jsonl.
        #expect((line["box"] as? [String: Int]).map { Set($0.keys) } == ["x", "y", "w", "h"], "\(line)")
        #expect((line["crop"] as? [String: Int]).map { Set($0.keys) } == ["x", "y", "w", "h"], "\(line)")
        // The ViT on the 2× face crop (the README's example line) and the pair against its golden
        // (golden/silentface/live_astronaut.json: the same YuNet box, crops byte for byte the reference's).
        #expect(abs(vit - 0.004248) < 5e-5, "\(scores)")
        #expect(abs(pair - 0.060425400733947754) < 0.002, "\(scores)")
        let text = try Binary.run(["classify", "--model", try TestAssets.modelURL.path, image])
        #expect(text.status == 0)
        #expect(
            text.standardOutput.contains("vit ") && text.standardOutput.contains("minifasnet "),
            "\(text.standardOutput)")
        // Without the pair's files, the error says where it looked and how to do without.
        let missing = try Binary.run(
            ["classify", "--model", try TestAssets.modelURL.path, image],
            environment: ["LIVENESSD_MINIFASNET": "/nonexistent"])
        #expect(missing.status == 2 && missing.standardError.contains("--models vit"), "\(missing.standardError)")
    }

}

@Suite struct WatchCommandTests {
    /// `livenessd watch` against a daemon: prints the status line.
    @Test func watchPrintsStatus() throws {
        let daemon = try DaemonProcess([
            "--source", try TestAssets.file("samples/live/pad-tdreal__621f74a8_live_video.MOV").path,
        ])
        defer { daemon.signal(SIGTERM) }
        _ = try EventClient(path: daemon.socketPath)  // wait until it listens
        let output = try Binary.run(["watch", "--socket", daemon.socketPath, "--status"])
        #expect(output.status == 0)
        #expect(output.standardOutput.contains("\"type\":\"status\""), "\(output.standardOutput)")
        let refused = try Binary.run(["watch", "--socket", "/nonexistent/livenessd.sock"])
        #expect(refused.status == 2 && refused.standardError.contains("no daemon is listening there"))
    }

    /// Issue 12: `watch --text` prints one readable line per event, and outlives a daemon restart: it
    /// reconnects to the new daemon on the same socket and goes on printing.
    @Test func watchReadsAsTextAndReconnects() throws {
        let clip = try TestAssets.file("samples/live/pad-tdreal__621f74a8_live_video.MOV").path
        let first = try DaemonProcess(["--source", clip, "--pacing", "realtime"])
        _ = try EventClient(path: first.socketPath)
        let watch = Process()
        watch.executableURL = try #require(Binary.url)
        watch.arguments = ["watch", "--socket", first.socketPath, "--text"]
        watch.environment = ProcessInfo.processInfo.environment
        let output = Pipe()
        let errors = Pipe()
        watch.standardOutput = output
        watch.standardError = errors
        try watch.run()
        let lines = NIOLockedLines()
        let reader = Thread {
            while true {
                let chunk = output.fileHandleForReading.availableData
                if chunk.isEmpty { return }
                lines.append(String(decoding: chunk, as: UTF8.self))
            }
        }
        reader.start()
        func waitFor(_ what: String, seconds: Double = 30) -> Bool {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                if lines.text.contains(what) { return true }
                Thread.sleep(forTimeInterval: 0.05)
            }
            return false
        }
        #expect(waitFor(" #20"), "\(lines.text.suffix(2000))")  // decisions of the first daemon
        first.signal(SIGTERM)
        #expect(first.waitForExit(seconds: 15) == 0)
        #expect(waitFor("daemon: bye — daemon stopping"), "\(lines.text.suffix(2000))")
        let before = lines.text.count
        // `watch` retries every 1–5 s, and on a loaded machine the new daemon's start takes seconds too, so the
        // second daemon plays the 10.7 s clip three times over (stream copy, ≈ 32 s): its decisions are still
        // coming when `watch` is back, however late.
        let looped = FileManager.default.temporaryDirectory
            .appendingPathComponent("livenessd-watch-\(UUID().uuidString).mov")
        try FFmpegTool.run(
            "ffmpeg", ["-v", "error", "-stream_loop", "2", "-i", clip, "-c", "copy", "-y", looped.path])
        defer { try? FileManager.default.removeItem(at: looped) }
        let second = try DaemonProcess(["--source", looped.path, "--pacing", "realtime"], socketPath: first.socketPath)
        defer { second.signal(SIGTERM) }
        let deadline = Date().addingTimeInterval(40)
        while Date() < deadline && !String(lines.text.dropFirst(before)).contains(" #") {
            Thread.sleep(forTimeInterval: 0.05)
        }
        watch.terminate()
        watch.waitUntilExit()
        let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(stderr.contains("reconnecting") && stderr.contains("reconnected to"), "\(stderr)")
        let after = String(lines.text.dropFirst(before))
        #expect(after.contains(" #"), "no decisions after the restart: \(after.suffix(2000))")
        // Every decision line reads `HH:MM:SS.mmm SOURCE [*]STATE … #SEQ`.
        // (How many came before the restart depends on when `watch` connected: on a loaded machine the first
        // daemon may be well into its clip by then. Both daemons' decisions are there, checked above.)
        let decisions = lines.text.split(separator: "\n").filter { $0.contains(" #") }
        #expect(String(lines.text.prefix(before)).contains(" #20") && decisions.count >= 2)
        let shape = /^\d\d:\d\d:\d\d\.\d{3} \S+ [ *](deciding|live|spoof|no_face|unusable)( smoothed \d\.\d{4})?.* #\d+/
        #expect(decisions.allSatisfy { $0.firstMatch(of: shape) != nil }, "\(decisions.prefix(5))")
    }
}

extension WatchCommandTests {
    /// A daemon that stops while `watch`'s new connection still waits in its backlog resets it (ECONNRESET);
    /// `watch` read through FileHandle, which traps on a read error, and died there ("Connection reset by
    /// peer", seen as a flaky `watchReadsAsTextAndReconnects`). It must say so and reconnect. The listening
    /// socket is the test's own: a reset cannot be had on demand from a real daemon.
    @Test func watchReconnectsAfterAResetConnection() throws {
        let directory = try TestAssets.temporaryDirectory("livenessd-watch-reset")
        let path = directory.appendingPathComponent("reset.sock").path
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        try #require(listener >= 0)
        defer { close(listener) }
        let bound = withUnixSocketAddress(path) { bind(listener, $0, $1) }
        try #require(bound == 0 && listen(listener, 4) == 0)
        let watch = Process()
        watch.executableURL = try #require(Binary.url)
        watch.arguments = ["watch", "--socket", path]
        let output = Pipe()
        let errors = Pipe()
        watch.standardOutput = output
        watch.standardError = errors
        try watch.run()
        defer { if watch.isRunning { watch.terminate() } }
        // First connection: closed with the request unread, so the kernel resets it on `watch`'s side.
        let first = accept(listener, nil, nil)
        try #require(first >= 0)
        var waiting = pollfd(fd: first, events: Int16(POLLIN), revents: 0)
        _ = poll(&waiting, 1, 10_000)  // the request has arrived (and stays unread)
        close(first)
        // Second connection: `watch` came back and asks again; one event goes out and must be printed.
        var ready = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
        let reconnected = poll(&ready, 1, 20_000) == 1
        let stderrSoFar = { () -> String in
            watch.terminate()
            watch.waitUntilExit()
            return String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        }
        try #require(reconnected, "watch did not reconnect after the reset: \(stderrSoFar())")
        let second = accept(listener, nil, nil)
        try #require(second >= 0)
        var request = [UInt8](repeating: 0, count: 4096)
        let received = recv(second, &request, request.count, 0)
        #expect(String(decoding: request.prefix(max(0, received)), as: UTF8.self).contains("\"subscribe\""))
        let event = Array("{\"type\":\"heartbeat\",\"time\":1.5}\n".utf8)
        #expect(send(second, event, event.count, Int32(MSG_NOSIGNAL)) == event.count)
        close(second)  // an orderly close this time: `watch` says so and retries
        let deadline = Date().addingTimeInterval(20)
        var printed = Data()
        let reader = output.fileHandleForReading
        while Date() < deadline && !String(decoding: printed, as: UTF8.self).contains("heartbeat") {
            var readable = pollfd(fd: reader.fileDescriptor, events: Int16(POLLIN), revents: 0)
            if poll(&readable, 1, 100) == 1 { printed.append(reader.availableData) }
        }
        #expect(watch.isRunning, "watch exited: \(watch.isRunning ? 0 : watch.terminationStatus)")
        watch.terminate()
        watch.waitUntilExit()
        let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(String(decoding: printed, as: UTF8.self).contains("\"heartbeat\""), "stderr: \(stderr)")
        #expect(stderr.contains("reconnected to") && !stderr.contains("Fatal error"), "\(stderr)")
    }
}

/// Text collected from a reader thread.
final class NIOLockedLines: @unchecked Sendable {
    private let lock = NSLock()
    private var collected = ""
    func append(_ text: String) { self.lock.withLock { self.collected += text } }
    var text: String { self.lock.withLock { self.collected } }
}
