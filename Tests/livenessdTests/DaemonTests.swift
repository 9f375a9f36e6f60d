import Foundation
import TestSupport
import Testing

/// The real daemon on real clips with real socket clients.
@Suite(.serialized) struct DaemonTests {
    static let live = "samples/live/pad-tdreal__621f74a8_live_video.MOV"
    static let replay = "samples/spoof/pad-tdreplay__630b6ba7_replay_video.mp4"

    static func clipArguments() throws -> [String] {
        [try TestAssets.file(Self.live).path, try TestAssets.file(Self.replay).path].flatMap { ["--source", $0] }
    }

    static func decisions(_ messages: [[String: Any]], source: String) -> [[String: Any]] {
        messages.filter { $0["type"] as? String == "decision" && $0["source"] as? String == source }
    }

    /// Event stream of both clips replayed without drops: schema, ordering, a deciding period, then
    /// verdicts; the final verdicts equal the PyTorch reference's (Tests/Fixtures/daemon_expected.json,
    /// made by scripts/make_daemon_fixture.py with the same whole-frame crop and window).
    @Test func eventStreamMatchesTheReference() throws {
        // The fixture judges whole frames with the ViT, so this run does too (the default is face
        // detection and both opinions).
        let daemon = try DaemonProcess(
            ["--pacing", "fast", "--hold-until-subscribed", "--crop", "full", "--models", "vit"] + Self.clipArguments())
        let client = try EventClient(path: daemon.socketPath)
        try client.send(["op": "subscribe", "mode": "frames", "id": "s"])
        let messages = try client.readToEnd(seconds: 120)
        #expect(daemon.waitForExit(seconds: 10) == 0, "\(daemon.log.suffix(2000))")

        #expect(messages.allSatisfy { $0["schema"] as? Int == 2 && $0["type"] is String })
        #expect(messages.first?["type"] as? String == "ok" && messages.first?["id"] as? String == "s")
        #expect(messages.last?["type"] as? String == "bye")
        let events = messages.compactMap { $0["event"] as? Int }
        #expect(events == events.sorted() && Set(events).count == events.count)

        let fixtureURL = TestAssets.packageRoot.appendingPathComponent("Tests/Fixtures/daemon_expected.json")
        let fixture = try JSONSerialization.jsonObject(with: Data(contentsOf: fixtureURL)) as? [String: Any] ?? [:]
        let clips = fixture["clips"] as? [String: [String: Any]] ?? [:]
        for clip in [Self.live, Self.replay] {
            let path = try TestAssets.file(clip).path
            let decided = Self.decisions(messages, source: path)
            let expected = try #require(clips[clip])
            #expect(decided.count == expected["frames"] as? Int)
            #expect(decided.compactMap { $0["seq"] as? Int } == Array(0..<decided.count))
            let states = decided.compactMap { $0["state"] as? String }
            #expect(states.first == "deciding")
            let firstVerdict = try #require(states.firstIndex { $0 == "live" || $0 == "spoof" })
            #expect(states[..<firstVerdict].allSatisfy { $0 == "deciding" })
            #expect(states.last == expected["final_state"] as? String, "\(clip): \(states.suffix(5))")
            let ended = messages.first { $0["type"] as? String == "source" && $0["source"] as? String == path }
            #expect(ended?["kind"] as? String == "ended" && ended?["reason"] as? String == "end of file")
        }
    }

    /// Both opinions (the default): every scored frame carries each opinion's probability, and the
    /// decision's `raw` is their fusion (mean of the logits, recomputed here); `status` lists the
    /// three model files with their published SHA-256.
    @Test func decisionsCarryEveryOpinionAndTheFusedScore() throws {
        let daemon = try DaemonProcess([
            "--pacing", "fast", "--hold-until-subscribed", "--source", try TestAssets.file(Self.live).path,
        ])
        let client = try EventClient(path: daemon.socketPath)
        try client.send(["op": "status", "id": "st"])
        try client.send(["op": "subscribe", "mode": "frames", "id": "s"])
        let messages = try client.readToEnd(seconds: 300)
        #expect(daemon.waitForExit(seconds: 10) == 0, "\(daemon.log.suffix(2000))")
        let status = try #require(messages.first { $0["type"] as? String == "status" })
        let models = try #require(status["models"] as? [[String: Any]])
        #expect(models.compactMap { $0["kind"] as? String } == ["vit", "minifasnet", "minifasnet"])
        #expect(models.last?["sha256"] as? String == "84ee1d37d96894d5e82de5a57df044ef80a58be2b218b5ed7cdfd875ec2f5990")
        let scored = messages.filter { $0["type"] as? String == "decision" && $0["raw"] != nil }
        #expect(scored.count > 200)
        func logit(_ p: Double) -> Double { min(16, max(-16, log(p) - log1p(-p))) }
        for message in scored {
            let scores = try #require(message["scores"] as? [String: Double], "\(message)")
            let vit = try #require(scores["vit"])
            let pair = try #require(scores["minifasnet"])
            let fused = 1 / (1 + exp(-(logit(vit) + logit(pair)) / 2))
            #expect(abs((message["raw"] as? Double ?? -1) - fused) < 1e-9)
        }
        // Frames without a face carry no scores.
        #expect(
            messages.filter { $0["type"] as? String == "decision" && $0["raw"] == nil }.allSatisfy {
                $0["scores"] == nil
            })
    }

    /// One client stops reading: it is dropped with a reason, the other gets every frame, and the
    /// pipeline decides as many frames as without it.
    /// A client that stops reading never holds up decisions: replayed with `--pacing fast` (a replay
    /// never drops frames, so the figures do not depend on how loaded the machine is), every frame is
    /// decided and reaches the reading client, and the stuck client is disconnected at its queue limit.
    /// Were publishing to wait for the stuck client, the replay would stall and nothing would end.
    /// (The queue limit itself, without a process: LivenessServerTests.EventServerChannelTests.)
    @Test func slowClientIsDroppedWithoutHoldingUpDecisions() throws {
        let config = try TestAssets.temporaryDirectory().appendingPathComponent("livenessd.yaml")
        try "socket:\n  client_queue_limit: 8\n".write(to: config, atomically: true, encoding: .utf8)
        let daemon = try DaemonProcess(
            [
                "--config", config.path, "--pacing", "fast", "--crop", "full", "--models", "vit",
                "--hold-until-subscribed",
            ]
                + Self.clipArguments())
        // The reader subscribes first (that starts the sources), the stuck client right after.
        let reader = try EventClient(path: daemon.socketPath)
        try reader.send(["op": "subscribe", "mode": "frames"])
        let stuck = try EventClient(path: daemon.socketPath)
        try stuck.send(["op": "subscribe", "mode": "frames"])
        let received = try reader.readToEnd(seconds: 300)
        #expect(daemon.waitForExit(seconds: 10) == 0)
        // 267 + 357 frames, every one decided and delivered, in order per source.
        let decisions = received.filter { $0["type"] as? String == "decision" }
        let stopped = daemon.log.components(separatedBy: "frames.processed=").last?.prefix(while: \.isNumber) ?? ""
        #expect(Int(stopped) == 624, "processed \(stopped) of 624")
        #expect(decisions.count == 624, "reader got \(decisions.count) decisions")
        for source in Set(decisions.compactMap { $0["source"] as? String }) {
            let sequence = decisions.filter { $0["source"] as? String == source }.compactMap { $0["seq"] as? Int }
            #expect(sequence == sequence.sorted(), "\(source) out of order")
        }
        // The stuck client now reads: what the kernel still held, then end of stream, long before the
        // other client's 624 events. Its `bye` line was queued behind the data it never read, so the
        // reason is in the daemon's log (an in-band bye reaches clients that are merely slow).
        let backlog = try stuck.readToEnd(seconds: 10)
        #expect(backlog.count < 300, "the stuck client was not disconnected: \(backlog.count) messages")
        #expect(daemon.log.contains("client.reason=client too slow: 8 messages waiting to be read"))
    }

    /// A second uid, not on the allow-list, gets one error line and is closed; root is served.
    @Test func peerCredentialsAreChecked() throws {
        let user = "livenessd-test-\(Int.random(in: 1000...9999))"
        guard (try? Program.run("/usr/sbin/useradd", ["--system", "--no-create-home", user])) != nil else {
            Issue.record("cannot create a test user (needs root)")
            return
        }
        defer { _ = try? Program.run("/usr/sbin/userdel", [user]) }
        let config = try TestAssets.temporaryDirectory().appendingPathComponent("livenessd.yaml")
        try "socket:\n  mode: \"0666\"\naccess:\n  allow_uids: [4242]\n".write(
            to: config, atomically: true, encoding: .utf8)
        let daemon = try DaemonProcess(["--config", config.path, "--pacing", "realtime"] + Self.clipArguments())
        defer { daemon.signal(SIGTERM) }
        chmod(daemon.directory.path, 0o755)  // let the other user reach the socket file itself
        let root = try EventClient(path: daemon.socketPath)
        try root.send(["op": "status", "id": "r"])
        #expect(try root.next()?["type"] as? String == "status")
        // The same request from the other user, through setpriv.
        // The daemon may refuse before the request is even written (EPIPE): read what it said.
        let script = """
            import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
            try: s.sendall(b'{"op":"status"}\\n')
            except OSError: pass
            print(s.makefile().read())
            """
        let output = try Program.run(
            "/usr/bin/setpriv",
            ["--reuid", user, "--regid", user, "--clear-groups", "/usr/bin/python3", "-c", script, daemon.socketPath])
        let lines = output.split(separator: "\n").filter { !$0.isEmpty }
        #expect(lines.count == 1, "\(output)")
        #expect(lines.first?.contains("access denied for uid") == true, "\(output)")
        #expect(!output.contains("\"status\""))
    }

    /// Issue 12: the README's quick start as an ordinary user (CI runs as root, so a user is made here):
    /// `classify samples/astronaut.png` prints the README's line, and `run` without `--socket` binds
    /// `$XDG_RUNTIME_DIR/livenessd/livenessd.sock` (it failed on /run before), where `watch --status` finds it.
    @Test(.enabled(if: getuid() == 0 && FileManager.default.fileExists(atPath: "/usr/sbin/useradd")))
    func readmeQuickStartAsAnOrdinaryUser() throws {
        let user = "livenessd-qs-\(Int.random(in: 1000...9999))"
        try Program.run("/usr/sbin/useradd", ["--system", "--no-create-home", "--user-group", user])
        defer { _ = try? Program.run("/usr/sbin/userdel", [user]) }
        let runtime = try TestAssets.temporaryDirectory("livenessd-xdg")
        let uid = try #require(getpwnam(user)?.pointee.pw_uid)
        let gid = try #require(getpwnam(user)?.pointee.pw_gid)
        #expect(chown(runtime.path, uid, gid) == 0 && chmod(runtime.path, 0o700) == 0)
        let binary = try #require(Binary.url).path
        // What a user's session has, and the models where setup.sh's models/ would give them.
        let environment = [
            "PATH=/usr/bin:/bin", "HOME=\(runtime.path)", "XDG_RUNTIME_DIR=\(runtime.path)",
            "LIVENESSD_MODEL=\(try TestAssets.modelURL.path)", "LIVENESSD_MINIFASNET=\(Binary.pairFolder ?? "")",
            "LIVENESSD_DETECTOR=\(try TestAssets.file("models/yunet/face_detection_yunet.onnx").path)",
        ]
        func asUser(_ arguments: [String]) -> Process {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            process.arguments =
                ["--reuid", user, "--regid", user, "--init-groups", "/usr/bin/env", "-i"] + environment + [binary]
                + arguments
            process.currentDirectoryURL = TestAssets.packageRoot
            return process
        }
        func output(_ arguments: [String]) throws -> (Int32, String) {
            let process = asUser(arguments)
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = pipe
            try process.run()
            let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            return (process.terminationStatus, text)
        }
        let (classified, line) = try output(["classify", "samples/astronaut.png"])
        #expect(classified == 0, "\(line)")
        #expect(line.hasPrefix("samples/astronaut.png\t0.016294\tLIVE\tvit 0.004248 minifasnet 0.060426"), "\(line)")

        let daemon = asUser(["run", "--source", try TestAssets.file(Self.live).path, "--pacing", "realtime"])
        let log = Pipe()
        daemon.standardOutput = log
        daemon.standardError = log
        try daemon.run()
        defer {
            if daemon.isRunning { kill(daemon.processIdentifier, SIGTERM) }
            daemon.waitUntilExit()
        }
        let socket = runtime.appendingPathComponent("livenessd/livenessd.sock").path
        let deadline = Date().addingTimeInterval(30)
        while !FileManager.default.fileExists(atPath: socket) && daemon.isRunning && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect(FileManager.default.fileExists(atPath: socket), "no socket at \(socket)")
        var owner = stat()
        #expect(stat(socket, &owner) == 0 && owner.st_uid == uid)
        let (watched, status) = try output(["watch", "--status"])
        #expect(watched == 0 && status.contains("\"type\":\"status\""), "\(status)")
        kill(daemon.processIdentifier, SIGTERM)
        daemon.waitUntilExit()
        #expect(daemon.terminationStatus == 0)
    }

    /// Issue 12: `cameras:` in the config names its sources; events, status and verify use the name, and
    /// status tells where it comes from.
    @Test func namedCamerasCarryTheirName() throws {
        let clip = try TestAssets.file(Self.live).path
        let config = try TestAssets.temporaryDirectory().appendingPathComponent("livenessd.yaml")
        try "cameras:\n  - name: front-door\n    url: \(clip)\n".write(to: config, atomically: true, encoding: .utf8)
        let daemon = try DaemonProcess(["--config", config.path, "--pacing", "realtime", "--hold-until-subscribed"])
        defer { daemon.signal(SIGTERM) }
        let client = try EventClient(path: daemon.socketPath)
        try client.send(["op": "subscribe", "mode": "frames", "id": "s"])
        var decision: [String: Any]?
        while let message = try client.next(seconds: 30) {
            if message["type"] as? String == "decision" {
                decision = message
                break
            }
        }
        #expect(decision?["source"] as? String == "front-door", "\(String(describing: decision))")
        let asker = try EventClient(path: daemon.socketPath)
        try asker.send(["op": "status", "id": "q"])
        let status = try #require(try asker.next())
        let sources = status["sources"] as? [String: [String: Any]] ?? [:]
        #expect(Array(sources.keys) == ["front-door"] && sources["front-door"]?["location"] as? String == clip)
        try asker.send(["op": "verify", "id": "v", "source": "front-door", "timeout_ms": 3000])
        var answer: [String: Any]?
        while let message = try asker.next(seconds: 30) {
            if message["type"] as? String == "verify" || message["type"] as? String == "error" {
                answer = message
                break
            }
        }
        #expect(
            answer?["type"] as? String == "verify" && answer?["source"] as? String == "front-door", "\(answer ?? [:])")
    }

    /// Issue 14: `analysis_fps` from the config (top level, and a camera's own 0 for every frame). The
    /// camera at 5 fps is decided about one frame in 0.2 s of its frame time, the rest are counted as
    /// `dropped_rate` in status, and its window holds a sixth as many frames as the other's.
    @Test func analysisRateFromTheConfig() throws {
        let clip = try TestAssets.file(Self.live).path
        let config = try TestAssets.temporaryDirectory().appendingPathComponent("livenessd.yaml")
        try """
        analysis_fps: 5
        cameras:
          - name: door
            url: \(clip)
          - name: all
            url: \(clip)
            analysis_fps: 0
        """.write(to: config, atomically: true, encoding: .utf8)
        let daemon = try DaemonProcess(
            ["--config", config.path, "--models", "vit", "--pacing", "realtime", "--hold-until-subscribed"],
            analysisFPS: nil)
        defer { daemon.signal(SIGTERM) }
        let client = try EventClient(path: daemon.socketPath)
        try client.send(["op": "subscribe", "mode": "frames", "id": "s"])
        var decisions: [String: [[String: Any]]] = [:]
        let until = Date().addingTimeInterval(60)
        while decisions["door", default: []].count < 12, Date() < until, let message = try client.next(seconds: 30) {
            guard message["type"] as? String == "decision", let source = message["source"] as? String else { continue }
            decisions[source, default: []].append(message)
        }
        let door = decisions["door", default: []]
        let all = decisions["all", default: []]
        #expect(door.count >= 12, "\(door.count) decisions at 5 fps")
        let times = door.compactMap { $0["pts"] as? Double }
        let gaps = zip(times.dropFirst(), times).map { $0 - $1 }
        #expect(gaps.allSatisfy { $0 > 0.15 }, "\(gaps)")
        #expect(all.count > 3 * door.count, "\(all.count) at every frame, \(door.count) at 5 fps")
        #expect(door.compactMap { $0["window"] as? Int }.max() == 3, "the window holds 15 × 5/30 frames")
        #expect((all.compactMap { $0["window"] as? Int }.max() ?? 0) > 5)
        let asker = try EventClient(path: daemon.socketPath)
        try asker.send(["op": "status", "id": "q"])
        let status = try #require(try asker.next())
        let sources = status["sources"] as? [String: [String: Any]] ?? [:]
        let rateDropped = sources["door"]?["dropped_rate"] as? Int ?? 0
        let framesIn = sources["door"]?["frames_in"] as? Int ?? 0
        #expect(rateDropped > 0 && rateDropped >= framesIn * 2 / 3, "\(sources["door"] ?? [:])")
        #expect(sources["all"]?["dropped_rate"] as? Int == 0, "\(sources["all"] ?? [:])")
    }

    /// SIGTERM mid-stream: exit 0, and the client received every decision the daemon made.
    @Test func sigtermDrainsAndLosesNothing() throws {
        let daemon = try DaemonProcess(["--pacing", "realtime", "--hold-until-subscribed"] + Self.clipArguments())
        let client = try EventClient(path: daemon.socketPath)
        try client.send(["op": "subscribe", "mode": "frames"])
        Thread.sleep(forTimeInterval: 3)
        daemon.signal(SIGTERM)
        let messages = try client.readToEnd(seconds: 30)
        let status = daemon.waitForExit(seconds: 15)
        #expect(status == 0)
        let decided = messages.filter { $0["type"] as? String == "decision" }.count
        let processed = daemon.log.components(separatedBy: "frames.processed=").last?.prefix(while: \.isNumber) ?? ""
        #expect(decided > 20 && Int(processed) == decided, "client \(decided), daemon \(processed)")
        #expect(messages.last?["type"] as? String == "bye" && messages.last?["error"] as? String == "daemon stopping")
        let ends = messages.filter { $0["type"] as? String == "source" && $0["kind"] as? String == "ended" }
        #expect(ends.count == 2 && ends.allSatisfy { $0["reason"] as? String == "stopped" })
    }

    /// M4: stopping while frames are still inside the models (drain timeout 0, frames replayed as fast
    /// as possible, both opinions) once crashed at exit (OpenBLAS unmapped its buffers under a running
    /// sgemm: SIGSEGV). Now the daemon says so and leaves with status 0, every time.
    @Test func stopWithFramesInFlightExitsCleanly() throws {
        for attempt in 1...3 {
            let daemon = try DaemonProcess(
                ["--pacing", "fast", "--drain-timeout", "0", "--hold-until-subscribed"] + Self.clipArguments())
            let client = try EventClient(path: daemon.socketPath)
            try client.send(["op": "subscribe", "mode": "frames"])
            var decided = 0
            while decided < 5, let message = try client.next(seconds: 60) {
                if message["type"] as? String == "decision" { decided += 1 }
            }
            daemon.signal(SIGTERM)
            _ = try client.readToEnd(seconds: 30)
            let status = daemon.waitForExit(seconds: 30)
            #expect(
                status == 0, "attempt \(attempt): exit \(String(describing: status)); log: \(daemon.log.suffix(800))")
        }
    }

    /// The same source twice is refused with a message and status 2 (it crashed the daemon: SIGILL).
    @Test func aSourceGivenTwiceIsRefused() throws {
        let clip = try TestAssets.file(Self.live).path
        let model = try TestAssets.file("models/face-liveness-vit/model.pt").path
        let run = try Binary.run([
            "run", "--models", "vit", "--model", model, "--socket", "/tmp/livenessd-twice-\(getpid()).sock",
            "--source", clip, "--source", clip,
        ])
        #expect(run.status == 2, "\(run.standardError)")
        #expect(run.standardError.contains("is given twice as a source"))
    }

    /// SIGHUP before the sources start (--hold-until-subscribed) is handled, not lost: the daemon
    /// answers `status` with the reloaded threshold; SIGTERM still drains and removes the socket.
    @Test func signalsWhileHoldingAreHandled() throws {
        let config = try TestAssets.temporaryDirectory().appendingPathComponent("livenessd.yaml")
        try "threshold: 0.2\n".write(to: config, atomically: true, encoding: .utf8)
        let daemon = try DaemonProcess(
            ["--config", config.path, "--pacing", "realtime", "--hold-until-subscribed"] + Self.clipArguments())
        let client = try EventClient(path: daemon.socketPath)
        try "threshold: 0.7\n".write(to: config, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        var threshold: Double?
        for _ in 0..<50 where threshold != 0.7 {
            try client.send(["op": "status", "id": "s"])
            while let message = try client.next(seconds: 20), message["type"] as? String != "status" {}
            threshold = daemon.log.contains("configuration reloaded") ? 0.7 : nil
        }
        try client.send(["op": "status", "id": "t"])
        var status: [String: Any]?
        while status == nil, let message = try client.next(seconds: 20) {
            if message["type"] as? String == "status" { status = message }
        }
        #expect(status?["threshold"] as? Double == 0.7, "\(String(describing: status)) log: \(daemon.log.suffix(800))")
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit(seconds: 15) == 0)
        #expect(!FileManager.default.fileExists(atPath: daemon.socketPath))
    }

    /// A daemon replaying both clips in real time with `threshold:` from its config file, and a client
    /// subscribed to every frame (the SIGHUP tests rewrite the file).
    static func subscribedDaemon(threshold: Double) throws -> (config: URL, daemon: DaemonProcess, client: EventClient)
    {
        let config = try TestAssets.temporaryDirectory().appendingPathComponent("livenessd.yaml")
        try "threshold: \(threshold)\n".write(to: config, atomically: true, encoding: .utf8)
        let daemon = try DaemonProcess(
            ["--config", config.path, "--pacing", "realtime", "--hold-until-subscribed"] + Self.clipArguments())
        let client = try EventClient(path: daemon.socketPath)
        try client.send(["op": "subscribe", "mode": "frames"])
        return (config, daemon, client)
    }

    /// SIGHUP: the new threshold from the config file applies to the next decisions; the client stays.
    @Test func sighupReloadsTheThreshold() throws {
        let (config, daemon, client) = try Self.subscribedDaemon(threshold: 0.2)
        var before: [Double] = []
        while before.count < 10, let message = try client.next() {
            if let threshold = message["threshold"] as? Double { before.append(threshold) }
        }
        try "threshold: 0.7\n".write(to: config, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        var after: Double?
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline, let message = try client.next() {
            if let threshold = message["threshold"] as? Double, threshold != 0.2 {
                after = threshold
                break
            }
        }
        #expect(before.allSatisfy { $0 == 0.2 })
        #expect(after == 0.7)
        try client.send(["op": "status", "id": "after"])
        var status: [String: Any]?
        while let message = try client.next(), status == nil {
            if message["type"] as? String == "status" { status = message }
        }
        #expect(status?["threshold"] as? Double == 0.7)
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit(seconds: 15) == 0)
        #expect(daemon.log.contains("configuration reloaded"))
    }

    /// SIGHUP with a broken config file (a misspelt key, then a value out of range) keeps the running
    /// settings, logs why, and keeps serving; a good file afterwards is taken.
    @Test func sighupWithABrokenFileKeepsServing() throws {
        let (config, daemon, client) = try Self.subscribedDaemon(threshold: 0.2)
        func status() throws -> Double? {
            try client.send(["op": "status", "id": "s"])
            while let message = try client.next(seconds: 20) {
                if message["type"] as? String == "status" { return message["threshold"] as? Double }
            }
            return nil
        }
        func reload(_ text: String, until expected: String, count: Int) throws {
            try text.write(to: config, atomically: true, encoding: .utf8)
            daemon.signal(SIGHUP)
            for _ in 0..<100 where daemon.log.components(separatedBy: expected).count - 1 < count {
                _ = try? client.next(seconds: 1)
            }
        }
        try reload("treshold: 0.7\n", until: "reload failed, keeping the running configuration", count: 1)
        #expect(daemon.log.contains("unknown key 'treshold' (did you mean 'threshold'?)"), "\(daemon.log.suffix(800))")
        #expect(try status() == 0.2)
        try reload("threshold: 7\n", until: "reload failed, keeping the running configuration", count: 2)
        #expect(daemon.log.contains("threshold must be between 0 and 1, got 7"), "\(daemon.log.suffix(800))")
        #expect(try status() == 0.2)
        try reload("threshold: 0.7\n", until: "configuration reloaded", count: 1)
        #expect(try status() == 0.7)
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit(seconds: 15) == 0)
    }

    @Test func startupFailsFastWithClearMessages() throws {
        let missing = try DaemonProcess(["--source", "/nonexistent/clip.mp4"])
        #expect(missing.waitForExit(seconds: 20) == 2)
        #expect(missing.log.contains("/nonexistent/clip.mp4: no such file"))
        // A socket a running daemon holds is refused; a stale socket file is replaced.
        let first = try DaemonProcess(["--pacing", "realtime"] + Self.clipArguments())
        _ = try EventClient(path: first.socketPath)
        let second = Process()
        second.executableURL = Binary.url
        second.arguments =
            try ["run", "--model", TestAssets.modelURL.path, "--socket", first.socketPath] + Self.clipArguments()
        second.environment = ProcessInfo.processInfo.environment.merging(
            ["LIVENESSD_MINIFASNET": Binary.pairFolder ?? ""]) { _, new in new }
        let pipe = Pipe()
        second.standardError = pipe
        try second.run()
        let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        second.waitUntilExit()
        #expect(second.terminationStatus == 2)
        #expect(text.contains("in use by a running livenessd"), "\(text)")
        first.signal(SIGKILL)
        _ = first.waitForExit(seconds: 5)
        #expect(FileManager.default.fileExists(atPath: first.socketPath))  // stale file left by the killed daemon
        let third = try DaemonProcess(["--pacing", "realtime"] + Self.clipArguments(), socketPath: first.socketPath)
        defer { third.signal(SIGTERM) }
        let client = try EventClient(path: first.socketPath)
        try client.send(["op": "status"])
        #expect(try client.next()?["type"] as? String == "status")
    }
}
