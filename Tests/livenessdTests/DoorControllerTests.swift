import Foundation
import TestSupport
import Testing

/// Issue 12's day-one path: `samples/door_controller.py` (one `verify` per badge swipe) against the real
/// daemon replaying the shared live / replay pair in real time, with the daemon's own thresholds (the
/// fused 0.28 shipped from `livenessd calibrate` on the whole shared manifest, docs/ARCHITECTURE.md;
/// nothing here is tuned to this pair).
@Suite(.serialized) struct DoorControllerTests {
    /// The daemon's default band half-width (`decision.hysteresis`) and run length (`verify.stable_frames`).
    static let hysteresis = 0.05
    static let stableFrames = 10

    struct Run {
        var answers: [String: [[String: Any]]]
        var decisions: [String: [[String: Any]]]
        var transactionEvents: [[String: Any]]
    }

    /// One daemon: both clips in real time; one controller per clip gets a swipe at each offset (seconds
    /// after the sources start).
    func run(offsets: [Double]) throws -> Run {
        let live = try TestAssets.file(DaemonTests.live).path
        let replay = try TestAssets.file(DaemonTests.replay).path
        // Faces found by YuNet, as on a door (named here: a checkout without scripts/setup.sh's models/ would
        // otherwise judge whole frames).
        let detector = try TestAssets.file("models/yunet/face_detection_yunet.onnx").path
        let daemon = try DaemonProcess(
            ["--pacing", "realtime", "--hold-until-subscribed", "--crop", "detect", "--detector", detector]
                + DaemonTests.clipArguments())
        let client = try EventClient(path: daemon.socketPath)
        try client.send(["op": "subscribe", "mode": "frames", "id": "s"])
        let controllers = try [live, replay].map { source -> (Process, Pipe, Pipe) in
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
            process.arguments = [
                TestAssets.packageRoot.appendingPathComponent("samples/door_controller.py").path,
                "--socket", daemon.socketPath, "--source", source, "--json", "--timeout-ms", "5000",
            ]
            let input = Pipe()
            let output = Pipe()
            process.standardInput = input
            process.standardOutput = output
            try process.run()
            return (process, input, output)
        }
        let subscribed = try #require(try client.next(seconds: 60))
        #expect(subscribed["type"] as? String == "ok")
        // Swipes on their own thread, at their times; the event stream is read meanwhile (a subscriber that
        // stopped reading would be dropped as too slow).
        let start = Date()
        let swiper = Thread {
            for (index, offset) in offsets.enumerated() {
                Thread.sleep(until: start.addingTimeInterval(offset))
                for (name, controller) in zip(["live", "replay"], controllers) {
                    controller.1.fileHandleForWriting.write(Data("\(name)-\(Int(offset * 10))-\(index)\n".utf8))
                }
            }
            for controller in controllers { try? controller.1.fileHandleForWriting.close() }
        }
        swiper.start()
        let messages = try client.readToEnd(seconds: 120)
        #expect(daemon.waitForExit(seconds: 20) == 0, "\(daemon.log.suffix(2000))")
        var answers: [String: [[String: Any]]] = [:]
        for (source, controller) in zip([live, replay], controllers) {
            let text = String(decoding: controller.2.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            controller.0.waitUntilExit()
            answers[source] = try text.split(separator: "\n").map {
                try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
            }
        }
        var decisions: [String: [[String: Any]]] = [:]
        for source in [live, replay] { decisions[source] = DaemonTests.decisions(messages, source: source) }
        return Run(
            answers: answers, decisions: decisions,
            transactionEvents: messages.filter { $0["type"] as? String == "transaction" })
    }

    /// The answer against the decisions the daemon published for the same frames: the transaction's frames
    /// are exactly those from `first_seq` to `last_seq`, the first of them announces the reset, and a
    /// verdict stands on a run of scored frames whose smoothed score is on the verdict's side of the band.
    func checkAgainstTheStream(_ answer: [String: Any], decisions: [[String: Any]]) throws {
        let id = answer["id"] as? String ?? "?"
        let outcome = try #require(answer["outcome"] as? String, "\(answer)")
        guard let first = answer["first_seq"] as? Int, let last = answer["last_seq"] as? Int else {
            #expect(outcome != "live" && outcome != "spoof", "\(id): a verdict without frames: \(answer)")
            return
        }
        let frames = decisions.filter { ($0["seq"] as? Int).map { (first...last).contains($0) } ?? false }
        #expect(frames.count == answer["frames"] as? Int, "\(id)")
        #expect(frames.first?["reason"] as? String == "reset" && frames.first?["changed"] as? Bool == true, "\(id)")
        guard outcome == "live" || outcome == "spoof" else { return }
        let threshold = try #require(answer["threshold"] as? Double)
        let run = frames.suffix(Self.stableFrames)
        #expect(run.count == Self.stableFrames && run.allSatisfy { $0["raw"] is Double }, "\(id)")
        let smoothed = run.compactMap { $0["smoothed"] as? Double }
        #expect(smoothed.count == Self.stableFrames, "\(id)")
        if outcome == "live" {
            #expect(smoothed.allSatisfy { $0 < threshold - Self.hysteresis }, "\(id): \(smoothed)")
        } else {
            #expect(smoothed.allSatisfy { $0 >= threshold + Self.hysteresis }, "\(id): \(smoothed)")
        }
        #expect(frames.last?["state"] as? String == outcome, "\(id)")
        #expect(answer["smoothed"] as? Double == smoothed.last, "\(id)")
    }

    static func summary(_ answer: [String: Any]) -> String {
        let scores = (answer["scores"] as? [String: Double] ?? [:]).sorted { $0.key < $1.key }
            .map { "\($0.key) \(String(format: "%.4f", $0.value))" }.joined(separator: ", ")
        let smoothed = (answer["smoothed"] as? Double).map { String(format: "%.4f", $0) } ?? "none"
        return "\(answer["id"] ?? "?"): \(answer["outcome"] ?? "?") (smoothed \(smoothed); \(scores); "
            + "frames \(answer["frames"] ?? "?"), seq \(answer["first_seq"] ?? "?")–\(answer["last_seq"] ?? "?"))"
    }

    /// Ten transactions on each clip, started at spread-out moments over two runs of the pair (even and odd
    /// offsets, so every start has time for its evidence before the next swipe).
    @Test func doorControllerAgainstTheSharedPair() throws {
        let live = try TestAssets.file(DaemonTests.live).path
        let replay = try TestAssets.file(DaemonTests.replay).path
        let runs = [
            try self.run(offsets: [0.2, 2.0, 3.8, 5.6, 7.4]),
            try self.run(offsets: [1.1, 2.9, 4.7, 6.5, 8.3]),
        ]
        let liveAnswers = runs.flatMap { $0.answers[live] ?? [] }
        let replayAnswers = runs.flatMap { $0.answers[replay] ?? [] }
        #expect(liveAnswers.count == 10 && replayAnswers.count == 10)
        for run in runs {
            for (source, answers) in run.answers {
                for answer in answers {
                    try self.checkAgainstTheStream(answer, decisions: run.decisions[source] ?? [])
                    // Subscribers saw the transaction start and end.
                    let phases = run.transactionEvents.filter { $0["id"] as? String == answer["id"] as? String }
                        .compactMap { $0["phase"] as? String }
                    if answer["type"] as? String == "verify" { #expect(phases == ["started", "ended"], "\(answer)") }
                }
            }
        }
        // The genuine clip opens every time it answers, and answers at least 8 times in 10.
        let answered = liveAnswers.filter { ["live", "spoof"].contains($0["outcome"] as? String) }
        #expect(answered.allSatisfy { $0["outcome"] as? String == "live" }, "\(liveAnswers.map(Self.summary))")
        #expect(answered.count >= 8, "\(liveAnswers.map(Self.summary))")
        // The replay: what opened is reported (the closing notes quote it), not bent into a pass.
        let opened = replayAnswers.filter { $0["outcome"] as? String == "live" }
        print("door controller, live clip: \(answered.count)/10 answered, all open")
        for answer in liveAnswers { print("  " + Self.summary(answer)) }
        print("door controller, replay clip: \(opened.count)/10 opened")
        for answer in replayAnswers { print("  " + Self.summary(answer)) }
    }

    /// `verify.save_failed`: every transaction that did not open leaves its face crop (the ViT's 224² grey
    /// input) as a PNG, at most `save_failed_limit` of them (the oldest go).
    @Test func refusedTransactionsKeepTheirFace() throws {
        let directory = try TestAssets.temporaryDirectory("livenessd-refused")
        let folder = directory.appendingPathComponent("refused")
        let config = directory.appendingPathComponent("livenessd.yaml")
        try "verify:\n  save_failed: \(folder.path)\n  save_failed_limit: 2\n".write(
            to: config, atomically: true, encoding: .utf8)
        let replay = try TestAssets.file(DaemonTests.replay).path
        let detector = try TestAssets.file("models/yunet/face_detection_yunet.onnx").path
        let daemon = try DaemonProcess([
            "--config", config.path, "--pacing", "realtime", "--hold-until-subscribed", "--crop", "detect",
            "--detector", detector, "--source", replay,
        ])
        defer { daemon.signal(SIGTERM) }
        let client = try EventClient(path: daemon.socketPath)
        try client.send(["op": "subscribe", "mode": "changes", "heartbeat_seconds": 3600, "id": "s"])
        // The source starts with the subscription: wait for its first decision before the first swipe.
        while let message = try client.next(seconds: 30), message["type"] as? String != "decision" {}
        var answers: [[String: Any]] = []
        for index in 0..<3 {
            try client.send(["op": "verify", "id": "swipe-\(index)", "timeout_ms": 4000])
            while let message = try client.next(seconds: 30) {
                let type = message["type"] as? String
                if type == "verify" || type == "error" || type == "bye" {
                    answers.append(message)
                    break
                }
            }
        }
        #expect(answers.map { $0["outcome"] as? String } == ["spoof", "spoof", "spoof"], "\(answers)")
        // Written off the inference queue: give the writer a moment.
        let deadline = Date().addingTimeInterval(10)
        var files: [String] = []
        while Date() < deadline {
            files = ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).sorted()
            if files.count == 2 && files.contains(where: { $0.hasSuffix("swipe-2.png") }) { break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect(files.count == 2, "\(files)")
        #expect(files.allSatisfy { $0.hasSuffix(".png") && $0.contains("_spoof_swipe-") }, "\(files)")
        #expect(
            files.last?.hasSuffix("_spoof_swipe-2.png") == true && !files.contains { $0.contains("swipe-0") },
            "\(files)")
        for name in files {
            let png = try Data(contentsOf: folder.appendingPathComponent(name))
            // Signature, then IHDR: width and height (big-endian) at bytes 16 and 20, 8-bit grey (colour type 0).
            #expect(png.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]))
            let width = png[16..<20].reduce(0) { $0 << 8 | Int($1) }
            let height = png[20..<24].reduce(0) { $0 << 8 | Int($1) }
            #expect(width == 224 && height == 224 && png[24] == 8 && png[25] == 0, "\(name)")
        }
        #expect(daemon.log.contains("saved the face of a refused transaction"))
    }
}
