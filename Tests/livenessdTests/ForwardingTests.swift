import Foundation
import Synchronization
import TestSupport
import Testing

/// Issue 13: the daemon's events on a real Mosquitto broker (Debian's `mosquitto`, started here on a free
/// loopback port; `mosquitto_sub` from `mosquitto-clients` is the subscriber), and its Prometheus endpoint
/// scraped with a real HTTP client (curl) and checked with Prometheus's own `promtool`.
@Suite(.serialized) struct ForwardingTests {
    static let longClip = "samples/live/pad-tranvanluyt__real.mp4"

    /// A free TCP port on loopback (bound, read, released).
    static func freePort() throws -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(descriptor, pointer, length) == 0 && getsockname(descriptor, pointer, &length) == 0
            }
        }
        try #require(bound, "cannot find a free port: \(String(cString: strerror(errno)))")
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// `mosquitto` on 127.0.0.1:`port`, anonymous, without persistence (a restart forgets retained messages:
    /// what the daemon then republishes is its own doing).
    final class Broker {
        let port: Int
        let directory: URL
        var process: Process?

        /// `listener` lines after the first (TLS, passwords) come in `extra`, made in `directory` by `prepare`.
        init(port: Int, prepare: ((URL) throws -> String)? = nil) throws {
            self.port = port
            self.directory = try TestAssets.temporaryDirectory("livenessd-mqtt")
            let extra = try prepare?(self.directory) ?? "allow_anonymous true\n"
            try "listener \(port) 127.0.0.1\npersistence false\n\(extra)".write(
                to: self.directory.appendingPathComponent("mosquitto.conf"), atomically: true, encoding: .utf8)
            try self.start()
        }

        func start() throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/mosquitto")
            process.arguments = ["-c", self.directory.appendingPathComponent("mosquitto.conf").path]
            let log = self.directory.appendingPathComponent("broker.log")
            FileManager.default.createFile(atPath: log.path, contents: nil)
            let handle = try FileHandle(forWritingTo: log)
            handle.seekToEndOfFile()
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
            self.process = process
            // Up once the port takes connections.
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline {
                if Self.accepts(port: self.port) { return }
                Thread.sleep(forTimeInterval: 0.05)
            }
            Issue.record("mosquitto did not start on port \(self.port)")
        }

        static func accepts(port: Int) -> Bool {
            let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(descriptor) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = UInt16(port).bigEndian
            return withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
                }
            }
        }

        /// SIGKILL: a broker that dies (processes started from the test runner's threads inherit a signal mask
        /// that blocks SIGTERM).
        func stop() {
            guard let process = self.process, process.isRunning else { return }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            self.process = nil
        }

        deinit { self.stop() }
    }

    /// `mosquitto_sub` on `topic`, collecting every message (topic, retained flag, payload) as it arrives.
    final class Subscriber: Sendable {
        struct Message: Sendable {
            var topic: String
            var retained: Bool
            var payload: String
            var json: [String: Any]? {
                (try? JSONSerialization.jsonObject(with: Data(self.payload.utf8))) as? [String: Any]
            }
        }

        final class Store: Sendable {
            let messages = Mutex<[Message]>([])
        }

        let process = Process()
        let store = Store()

        init(port: Int, topic: String, options: [String] = []) throws {
            self.process.executableURL = URL(fileURLWithPath: "/usr/bin/mosquitto_sub")
            // Topic, retained flag and payload; our payloads are one line of JSON or a word.
            self.process.arguments =
                ["-h", "127.0.0.1", "-p", "\(port)", "-t", topic, "-F", "%t|%r|%p", "-q", "1"] + options
            let output = Pipe()
            self.process.standardOutput = output
            self.process.standardError = FileHandle.nullDevice
            try self.process.run()
            let reader = output.fileHandleForReading
            let store = self.store
            Thread {
                var pending = Data()
                while true {
                    let chunk = reader.availableData
                    if chunk.isEmpty { return }
                    pending.append(chunk)
                    while let newline = pending.firstIndex(of: 0x0A) {
                        let line = String(decoding: pending[pending.startIndex..<newline], as: UTF8.self)
                        pending.removeSubrange(pending.startIndex...newline)
                        let parts = line.split(separator: "|", maxSplits: 2, omittingEmptySubsequences: false)
                        guard parts.count == 3 else { continue }
                        store.messages.withLock {
                            $0.append(
                                Message(topic: String(parts[0]), retained: parts[1] == "1", payload: String(parts[2])))
                        }
                    }
                }
            }.start()
        }

        /// Waits up to `seconds` for a message that satisfies `match`.
        func wait(seconds: Double, _ match: (Message) -> Bool) -> Message? {
            let deadline = Date().addingTimeInterval(seconds)
            repeat {
                if let found = self.store.messages.withLock({ $0.first(where: match) }) { return found }
                Thread.sleep(forTimeInterval: 0.05)
            } while Date() < deadline
            return nil
        }

        var all: [Message] { self.store.messages.withLock { $0 } }

        func stop() {
            if self.process.isRunning {
                kill(self.process.processIdentifier, SIGKILL)
                self.process.waitUntilExit()
            }
        }

        deinit { self.stop() }
    }

    static func writeConfig(_ text: String) throws -> URL {
        let directory = try TestAssets.temporaryDirectory("livenessd-forwarding")
        let url = directory.appendingPathComponent("livenessd.yaml")
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// What a site's integration relies on: the camera's state retained for late subscribers, the transaction
    /// outcome as the door controller got it, Home Assistant discovery, and `offline` from the broker's last
    /// will when the daemon dies without a word (SIGKILL).
    @Test func retainedStateTransactionsAndTheLastWill() throws {
        let broker = try Broker(port: try Self.freePort())
        let early = try Subscriber(port: broker.port, topic: "door/test/#")
        let config = try Self.writeConfig(
            """
            mqtt:
              host: 127.0.0.1
              port: \(broker.port)
              topic_prefix: door/test
              client_id: door-test
              homeassistant: true
              stats_interval_seconds: 1
            """)
        let live = try TestAssets.file(DaemonTests.live).path
        let detector = try TestAssets.file("models/yunet/face_detection_yunet.onnx").path
        let daemon = try DaemonProcess([
            "--config", config.path, "--pacing", "realtime", "--hold-until-subscribed", "--crop", "detect",
            "--detector", detector, "--source", live,
        ])
        defer { daemon.signal(SIGKILL) }
        let client = try EventClient(path: daemon.socketPath)
        try client.send(["op": "subscribe", "mode": "changes", "heartbeat_seconds": 3600, "id": "s"])
        // The first verdict on the socket, then one swipe.
        var verdict: String?
        while let message = try client.next(seconds: 30) {
            if message["type"] as? String == "decision", let state = message["state"] as? String,
                state == "live" || state == "spoof"
            {
                verdict = state
                break
            }
        }
        let state = try #require(verdict, "no verdict on the socket: \(daemon.log)")
        try client.send(["op": "verify", "id": "badge-1", "timeout_ms": 4000])
        var answer: [String: Any]?
        while let message = try client.next(seconds: 30) {
            if message["type"] as? String == "verify" || message["type"] as? String == "error" {
                answer = message
                break
            }
        }
        let outcome = try #require(answer?["outcome"] as? String, "\(answer ?? [:])")

        let camera = "pad-tdreal__621f74a8_live_video.MOV"
        // The same outcome on the broker, with the transaction's id; its start first.
        let ended = early.wait(seconds: 10) {
            $0.topic == "door/test/\(camera)/transaction" && $0.json?["phase"] as? String == "ended"
        }
        #expect(ended?.json?["id"] as? String == "badge-1", "\(early.all.map(\.topic))")
        #expect(ended?.json?["outcome"] as? String == outcome)
        #expect(ended?.retained == false)
        let topics = early.all.map { "\($0.topic) \($0.json?["phase"] as? String ?? "")" }
        let startedIndex = topics.firstIndex(of: "door/test/\(camera)/transaction started")
        let endedIndex = topics.firstIndex(of: "door/test/\(camera)/transaction ended")
        #expect(startedIndex != nil && endedIndex != nil && startedIndex! < endedIndex!, "\(topics)")
        #expect(early.wait(seconds: 5) { $0.topic == "door/test/stats" }?.json?["mqtt"] != nil)

        // A subscriber that comes late gets the current state (retained), availability and discovery at once.
        let late = try Subscriber(port: broker.port, topic: "#")
        let retainedState = late.wait(seconds: 10) { $0.topic == "door/test/\(camera)/state" }
        #expect(retainedState?.retained == true)
        let current = retainedState?.json?["state"] as? String
        #expect(current == "live" || current == "spoof" || current == "deciding", "\(retainedState?.payload ?? "")")
        #expect(state == "live" || state == "spoof")
        let available = late.wait(seconds: 5) { $0.topic == "door/test/available" }
        #expect(available?.retained == true && available?.payload == "online")
        let discovery = late.wait(seconds: 5) { $0.topic.hasPrefix("homeassistant/binary_sensor/door-test/") }
        #expect(discovery?.retained == true)
        #expect(
            discovery?.json?["state_topic"] as? String == "door/test/\(camera)/state", "\(discovery?.payload ?? "")")
        #expect(discovery?.json?["availability_topic"] as? String == "door/test/available")

        // Killed without a word: the broker publishes the last will.
        daemon.signal(SIGKILL)
        _ = daemon.waitForExit(seconds: 10)
        let offline = early.wait(seconds: 15) { $0.topic == "door/test/available" && $0.payload == "offline" }
        #expect(offline != nil, "no offline after SIGKILL: \(early.all.suffix(5).map { "\($0.topic) \($0.payload)" })")
    }

    /// The broker goes away for seconds in the middle of a real-time replay: decisions go on at the same rate
    /// (the ratio against the seconds before, in the same run), messages made meanwhile beyond the queue's limit
    /// are dropped and counted, and once the broker is back the daemon reconnects, announces itself again,
    /// republishes the camera's state and reports the drops.
    @Test func brokerOutageDoesNotSlowDecisionsAndMessagesResume() throws {
        let broker = try Broker(port: try Self.freePort())
        let config = try Self.writeConfig(
            """
            mqtt:
              host: 127.0.0.1
              port: \(broker.port)
              topic_prefix: door/outage
              stats_interval_seconds: 0.2
              queue_limit: 5
            """)
        let clip = try TestAssets.file(Self.longClip).path
        let daemon = try DaemonProcess([
            "--config", config.path, "--pacing", "realtime", "--hold-until-subscribed", "--models", "vit",
            "--source", clip,
        ])
        defer { daemon.signal(SIGKILL) }
        let client = try EventClient(path: daemon.socketPath)
        try client.send(["op": "subscribe", "mode": "frames", "heartbeat_seconds": 3600, "id": "s"])
        // Decision arrival times (the reader never stops: a stalled reader would be dropped as too slow).
        var arrivals: [Date] = []
        func read(until deadline: Date) {
            Self.readDecisions(client, until: deadline) { arrivals.append($0) }
        }
        while let message = try client.next(seconds: 30), message["type"] as? String != "decision" {}
        let start = Date()
        let subscriber = try Subscriber(port: broker.port, topic: "door/outage/#")
        read(until: start.addingTimeInterval(4))
        broker.stop()
        let down = Date()
        read(until: down.addingTimeInterval(5))
        try broker.start()
        let up = Date()
        // The old subscriber's broker is gone: a new one sees what the daemon republishes.
        let after = try Subscriber(port: broker.port, topic: "door/outage/#")
        read(until: up.addingTimeInterval(6))

        func rate(_ from: Date, _ to: Date) -> Double {
            Double(arrivals.filter { $0 >= from && $0 < to }.count) / to.timeIntervalSince(from)
        }
        let before = rate(start.addingTimeInterval(1), down)
        let during = rate(down.addingTimeInterval(0.5), up)
        print("decisions per second: \(before) with the broker up, \(during) while it was down")
        #expect(before > 5, "too few decisions to compare: \(arrivals.count)")
        // A pipeline that waited on the broker would stall here; the replay's own pace is the same either side.
        #expect(during >= 0.7 * before, "decisions slowed while the broker was down: \(during)/s against \(before)/s")

        let stats = after.wait(seconds: 20) {
            $0.topic == "door/outage/stats" && (($0.json?["mqtt"] as? [String: Any])?["dropped"] as? Int ?? 0) > 0
        }
        let counters = stats?.json?["mqtt"] as? [String: Any]
        #expect((counters?["connections"] as? Int ?? 0) >= 2, "\(stats?.payload ?? "no stats after the restart")")
        #expect((counters?["dropped"] as? Int ?? 0) > 0)
        #expect(after.wait(seconds: 5) { $0.topic == "door/outage/available" && $0.payload == "online" } != nil)
        // The restarted broker kept nothing: a subscriber that comes now gets the state the daemon republished
        // (retained; one already subscribed sees it without the flag, as MQTT delivers live messages).
        let fresh = try Subscriber(port: broker.port, topic: "door/outage/#")
        #expect(fresh.wait(seconds: 5) { $0.topic.hasSuffix("/state") && $0.retained } != nil)
        #expect(daemon.log.contains("MQTT: connection to the broker lost"), "\(daemon.log)")
        #expect(subscriber.all.contains { $0.topic == "door/outage/stats" })

        // A graceful stop says `offline` itself.
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit(seconds: 20) == 0)
        #expect(after.wait(seconds: 5) { $0.topic == "door/outage/available" && $0.payload == "offline" } != nil)
    }

    /// Reads `client` until `deadline` (or until `stop()`), handing each decision's arrival time to `decision`. A
    /// quiet moment is not an error (a loaded machine may leave the last fraction of a window without a message);
    /// the end of the stream ends the reading.
    static func readDecisions(
        _ client: EventClient, until deadline: Date, stop: () -> Bool = { false }, decision: (Date) -> Void
    ) {
        while Date() < deadline && !stop() {
            let message: [String: Any]?
            do {
                message = try client.next(seconds: max(0.05, min(1, deadline.timeIntervalSinceNow)))
            } catch {
                continue  // no message in that moment
            }
            guard let message else { return }
            if message["type"] as? String == "decision" { decision(Date()) }
        }
    }

    /// The daemon with `config` replaying the long clip in real time (ViT, whole frames), subscribed to changes,
    /// once its first decision came.
    static func decidingDaemon(config text: String) throws -> (daemon: DaemonProcess, client: EventClient, clip: String)
    {
        let config = try Self.writeConfig(text)
        let clip = try TestAssets.file(Self.longClip).path
        let daemon = try DaemonProcess([
            "--config", config.path, "--pacing", "realtime", "--models", "vit", "--source", clip,
        ])
        let client = try EventClient(path: daemon.socketPath)
        try client.send(["op": "subscribe", "mode": "changes", "heartbeat_seconds": 3600, "id": "s"])
        while let message = try client.next(seconds: 30), message["type"] as? String != "decision" {}
        return (daemon, client, clip)
    }

    /// A broker that is not there at start is not fatal: the daemon runs, and connects once it appears.
    @Test func brokerDownAtStartIsNotFatal() throws {
        let port = try Self.freePort()
        let (daemon, _, _) = try Self.decidingDaemon(
            config: "mqtt:\n  host: 127.0.0.1\n  port: \(port)\n  topic_prefix: door/late\n")
        defer { daemon.signal(SIGKILL) }
        // The network thread's first attempt may come after the first decision: wait for its complaint.
        let deadline = Date().addingTimeInterval(15)
        while !daemon.log.contains("MQTT: cannot reach the broker") && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.05)
        }
        #expect(daemon.log.contains("MQTT: cannot reach the broker"), "\(daemon.log)")
        let broker = try Broker(port: port)
        let subscriber = try Subscriber(port: broker.port, topic: "door/late/#")
        // Backoff doubles from 1 s: the first attempts are at most a few seconds apart.
        #expect(subscriber.wait(seconds: 20) { $0.topic == "door/late/available" && $0.payload == "online" } != nil)
        #expect(subscriber.wait(seconds: 5) { $0.topic.hasSuffix("/state") } != nil)
        let fresh = try Subscriber(port: broker.port, topic: "door/late/#")
        #expect(fresh.wait(seconds: 5) { $0.topic.hasSuffix("/state") && $0.retained } != nil)
    }

    /// `GET /metrics` while a clip plays: the counters move with the frames, the exposition passes
    /// `promtool check metrics` (Prometheus's own parser and linter), and anything else is a 404.
    @Test func metricsScrapeMovesWithFrames() throws {
        let port = try Self.freePort()
        let (daemon, client, clip) = try Self.decidingDaemon(config: "metrics:\n  listen: 127.0.0.1:\(port)\n")
        defer { daemon.signal(SIGKILL) }
        _ = client  // stays connected: `livenessd_clients` counts it

        func curl(_ path: String) throws -> (status: Int, body: String) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
            process.arguments = ["-s", "-w", "\n%{http_code}", "http://127.0.0.1:\(port)\(path)"]
            let output = Pipe()
            process.standardOutput = output
            try process.run()
            let data = output.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            let text = String(decoding: data, as: UTF8.self)
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
            return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
        }
        /// Sample values by metric name and labels, from the text format.
        func samples(_ body: String) -> [String: Double] {
            var values: [String: Double] = [:]
            for line in body.split(separator: "\n") where !line.hasPrefix("#") {
                guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                    continue
                }
                values[String(line[..<space])] = value
            }
            return values
        }
        let first = try curl("/metrics")
        #expect(first.status == 200, "\(first)")
        Thread.sleep(forTimeInterval: 2)
        let second = try curl("/metrics")
        #expect(second.status == 200)
        let source = "source=\"\(clip)\""
        let decided = "livenessd_frames_decided_total{\(source)}"
        let (a, b) = (samples(first.body), samples(second.body))
        let early = try #require(a[decided], "\(first.body)")
        let late = try #require(b[decided])
        #expect(late > early + 10, "frames decided did not move: \(early) → \(late)")
        #expect((b["livenessd_frames_received_total{\(source)}"] ?? 0) >= late)
        // Every decided frame is counted under its state, and timed by stage.
        let byState = b.filter { $0.key.hasPrefix("livenessd_decisions_total{\(source)") }.values.reduce(0, +)
        #expect(abs(byState - late) <= 2, "decisions by state \(byState), decided \(late)")
        let timed = b["livenessd_stage_duration_seconds_count{\(source),stage=\"total\"}"] ?? 0
        #expect(abs(timed - late) <= 2, "timed \(timed), decided \(late)")
        #expect(b["livenessd_clients"] == 1)
        // Each scored frame's batch run is timed (frames without a usable face are decided unscored).
        let modelRuns = b["livenessd_model_inference_seconds_count{\(source)}"] ?? 0
        #expect(modelRuns > 0 && modelRuns <= late + 2, "model runs \(modelRuns), decided \(late)")
        #expect(second.body.contains("# HELP livenessd_frames_dropped_total "))

        let check = Process()
        check.executableURL = URL(fileURLWithPath: "/usr/bin/promtool")
        check.arguments = ["check", "metrics"]
        let input = Pipe()
        let output = Pipe()
        check.standardInput = input
        check.standardOutput = output
        check.standardError = output
        try check.run()
        input.fileHandleForWriting.write(Data((second.body + "\n").utf8))
        try input.fileHandleForWriting.close()
        let report = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        check.waitUntilExit()
        #expect(check.terminationStatus == 0, "promtool check metrics: \(report)")

        #expect(try curl("/").status == 404)
        #expect(try curl("/metrics/extra").status == 404)
    }

    /// A broker that only speaks TLS (a CA made here with openssl) and wants a user and password: the daemon
    /// verifies the broker's certificate against `ca_file` and logs in with `username` and `password_file`; a
    /// wrong password is refused by the broker, logged at `err` once, and the daemon goes on deciding.
    @Test func tlsAndPasswordLogin() throws {
        func shell(_ arguments: [String], in directory: URL) throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: arguments[0])
            process.arguments = Array(arguments.dropFirst())
            process.currentDirectoryURL = directory
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            process.waitUntilExit()
            try #require(process.terminationStatus == 0, "\(arguments.joined(separator: " ")) failed")
        }
        var secrets: URL?
        let broker = try Broker(port: try Self.freePort()) { directory in
            secrets = directory
            let openssl = "/usr/bin/openssl"
            try shell(
                [
                    openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
                    "-days", "2", "-subj", "/CN=livenessd test CA",
                ], in: directory)
            try shell(
                [
                    openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
                    "-subj", "/CN=127.0.0.1",
                ], in: directory)
            try "subjectAltName=IP:127.0.0.1\n".write(
                to: directory.appendingPathComponent("san.ext"), atomically: true, encoding: .utf8)
            try shell(
                [
                    openssl, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                    "-CAcreateserial",
                    "-out", "server.pem", "-days", "2", "-extfile", "san.ext",
                ], in: directory)
            try shell(["/usr/bin/mosquitto_passwd", "-b", "-c", "passwords", "door", "s3cret"], in: directory)
            try "s3cret\n".write(to: directory.appendingPathComponent("good"), atomically: true, encoding: .utf8)
            try "wrong\n".write(to: directory.appendingPathComponent("bad"), atomically: true, encoding: .utf8)
            // mosquitto drops to its own user: the files it reads must be readable by it.
            for name in ["server.key", "server.pem", "ca.pem", "passwords"] {
                chmod(directory.appendingPathComponent(name).path, 0o644)
            }
            chmod(directory.path, 0o755)
            let path = directory.path
            return """
                allow_anonymous false
                password_file \(path)/passwords
                cafile \(path)/ca.pem
                certfile \(path)/server.pem
                keyfile \(path)/server.key

                """
        }
        let directory = try #require(secrets)
        let clip = try TestAssets.file(Self.longClip).path
        func daemon(password: String) throws -> DaemonProcess {
            let config = try Self.writeConfig(
                """
                mqtt:
                  host: 127.0.0.1
                  port: \(broker.port)
                  ca_file: \(directory.path)/ca.pem
                  username: door
                  password_file: \(directory.path)/\(password)
                  topic_prefix: door/tls-\(password)
                """)
            return try DaemonProcess([
                "--config", config.path, "--pacing", "realtime", "--models", "vit", "--source", clip,
            ])
        }
        let subscriber = try Subscriber(
            port: broker.port, topic: "door/#",
            options: ["--cafile", "\(directory.path)/ca.pem", "-u", "door", "-P", "s3cret"])
        let good = try daemon(password: "good")
        defer { good.signal(SIGKILL) }
        #expect(
            subscriber.wait(seconds: 20) { $0.topic == "door/tls-good/available" && $0.payload == "online" } != nil,
            "\(good.log)")
        #expect(
            subscriber.wait(seconds: 10) { $0.topic.hasPrefix("door/tls-good/") && $0.topic.hasSuffix("/state") } != nil
        )

        let bad = try daemon(password: "bad")
        defer { bad.signal(SIGKILL) }
        let client = try EventClient(path: bad.socketPath)
        try client.send(["op": "subscribe", "mode": "frames", "heartbeat_seconds": 3600, "id": "s"])
        var decided = 0
        let deadline = Date().addingTimeInterval(20)
        let refused = { bad.log.contains("MQTT: the broker refused the connection") }
        Self.readDecisions(client, until: deadline, stop: refused, decision: { _ in decided += 1 })
        #expect(
            bad.log.contains("MQTT: the broker refused the connection: Connection Refused: not authorised"),
            "\(bad.log)")
        // Refused, but still deciding.
        let enough = { decided >= 30 }
        Self.readDecisions(
            client, until: deadline.addingTimeInterval(10), stop: enough, decision: { _ in decided += 1 })
        #expect(decided >= 30)
        #expect(!subscriber.all.contains { $0.topic.hasPrefix("door/tls-bad/") })
    }

    /// `mqtt:` and `metrics:` mistakes are refused at start with the key and what to do.
    @Test func forwardingSettingsAreChecked() throws {
        let cases: [(String, String)] = [
            ("mqtt:\n  port: 1883\n", "mqtt.host is missing"),
            ("mqtt:\n  host: b\n  qos: 3\n", "mqtt.qos must be 0, 1 or 2"),
            ("mqtt:\n  host: b\n  topic_prefix: a/#\n", "mqtt.topic_prefix 'a/#' is not a topic prefix"),
            ("mqtt:\n  host: b\n  password_file: /nonexistent\n  username: u\n", "mqtt.password_file /nonexistent"),
            ("mqtt:\n  host: b\n  hots: c\n", "unknown key 'mqtt.hots'"),
            ("metrics:\n  listen: nowhere\n", "metrics.listen must be HOST:PORT"),
        ]
        for (text, expected) in cases {
            let config = try Self.writeConfig(text)
            let run = try Binary.run(
                ["config", "check", config.path], environment: ["LIVENESSD_MODEL": try TestAssets.modelURL.path])
            #expect(run.status == 2, "\(text)")
            #expect(run.standardError.contains(expected), "\(text): \(run.standardError)")
        }
    }
}
