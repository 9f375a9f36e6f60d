import Foundation
import Synchronization
import TestSupport
import Testing

/// A datagram socket standing in for systemd's NOTIFY_SOCKET: records what the daemon says, when.
final class FakeNotifySocket: @unchecked Sendable {
    let path: String
    let descriptor: Int32
    final class Log: Sendable {
        let entries = Mutex<[(time: Date, text: String)]>([])
    }

    let log = Log()
    private let thread: Thread

    init(directory: URL) throws {
        let path = directory.appendingPathComponent("notify.sock").path
        let descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0 else { throw EventClient.Failure(description: "cannot bind \(path)") }
        self.path = path
        self.descriptor = descriptor
        let log = self.log
        self.thread = Thread {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
                if poll(&poller, 1, 100) <= 0 { continue }
                let count = recv(descriptor, &buffer, buffer.count, 0)
                if count <= 0 { return }
                let text = String(decoding: buffer[..<count], as: UTF8.self)
                log.entries.withLock { $0.append((Date(), text)) }
            }
        }
        self.thread.start()
    }

    func lines(containing fragment: String) -> [Date] {
        self.log.entries.withLock { $0.filter { $0.text.contains(fragment) }.map(\.time) }
    }

    deinit { shutdown(self.descriptor, Int32(SHUT_RDWR)) }
}

@Suite(.serialized) struct SystemdTests {
    /// The unit files as shipped, pointed at the built binary, pass `systemd-analyze verify`.
    @Test func unitsVerify() throws {
        let directory = try TestAssets.temporaryDirectory()
        let binary = try #require(Binary.url).path
        for unit in ["livenessd.service", "livenessd.socket"] {
            let text = try String(
                contentsOf: TestAssets.packageRoot.appendingPathComponent("systemd/\(unit)"), encoding: .utf8)
            try text.replacingOccurrences(of: "/usr/local/bin/livenessd", with: binary)
                .write(to: directory.appendingPathComponent(unit), atomically: true, encoding: .utf8)
        }
        let (status, output) = try Self.systemdAnalyze(
            ["verify", "livenessd.service", "livenessd.socket"], in: directory)
        #expect(status == 0, "\(output)")
        #expect(!output.contains("Unknown key"), "\(output)")
    }

    /// Runs `systemd-analyze` (colours off); its exit status and everything it printed.
    static func systemdAnalyze(_ arguments: [String], in directory: URL? = nil) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/systemd-analyze")
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = directory }
        var environment = ProcessInfo.processInfo.environment
        environment["SYSTEMD_COLORS"] = "0"
        process.environment = environment
        let output = Pipe()
        process.standardError = output
        process.standardOutput = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, text)
    }

    /// The shipped service stays hardened: `systemd-analyze security` rates its exposure 2.5 ("OK") or
    /// lower (it was 6.5 MEDIUM before issue 12). `--threshold=25` (tenths) makes the tool itself exit 1
    /// above 2.5, without saying why; the parsed score says by how much.
    @Test func unitSecurityScore() throws {
        let unit = TestAssets.packageRoot.appendingPathComponent("systemd/livenessd.service").path
        let (status, output) = try Self.systemdAnalyze([
            "security", "--offline=true", "--no-pager", "--threshold=25", unit,
        ])
        // "→ Overall exposure level for livenessd.service: 1.7 OK 🙂". Colours, and the OSC 8 link systemd
        // wraps around the unit name, are removed should SYSTEMD_COLORS be overridden somewhere.
        let plain = output.replacing(/\x1B\[[0-9;?]*[A-Za-z]|\x1B\][^\x07\x1B]*(?:\x07|\x1B\\)/, with: "")
        let line = plain.firstMatch(of: /Overall exposure level for livenessd\.service:\s*([0-9]+(?:\.[0-9]+)?)/)
        let match = try #require(line, "no overall exposure line: \(output.suffix(2000))")
        let exposure = try #require(Double(match.1))
        #expect(exposure <= 2.5, "exposure \(exposure), above 2.5: \(plain.suffix(4000))")
        #expect(status == 0, "systemd-analyze exited \(status): \(output.suffix(2000))")
    }

    /// READY=1 after the first decided frame; WATCHDOG=1 while frames flow and not after they stop
    /// (a live stream whose server went away: the daemon is up but sees nothing).
    @Test func readyThenWatchdogOnlyWhileFramesFlow() throws {
        let directory = try TestAssets.temporaryDirectory()
        let notify = try FakeNotifySocket(directory: directory)
        let port = Int.random(in: 40_000..<50_000)
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/ffmpeg")
        server.arguments = [
            "-v", "error", "-re", "-i", try TestAssets.file("samples/live/gen-facerec__short_hamilton_clip.mp4").path,
            "-t", "3", "-c:v", "copy", "-an", "-f", "mpegts", "-listen", "1", "http://127.0.0.1:\(port)/live.ts",
        ]
        server.standardError = FileHandle.nullDevice
        try server.run()
        defer { server.terminate() }
        #expect(Loopback.waitForListener(port: port))
        let started = Date()
        let daemon = try DaemonProcess(
            ["--source", "http://127.0.0.1:\(port)/live.ts"],
            environment: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"])
        server.waitUntilExit()  // the stream is over: frames stop
        let streamEnded = Date()
        Thread.sleep(forTimeInterval: 2.5)
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit(seconds: 15) == 0, "\(daemon.log.suffix(1500))")

        let ready = notify.lines(containing: "READY=1")
        let watchdogs = notify.lines(containing: "WATCHDOG=1")
        #expect(ready.count == 1, "\(notify.log.entries.withLock { $0.map(\.text) })")
        #expect(watchdogs.count >= 3, "\(watchdogs.count) watchdog pings while streaming")
        #expect(watchdogs.allSatisfy { $0 > ready[0] })
        // 0.2 s ticks: at most a couple of ticks after the last frame, then silence.
        let late = watchdogs.filter { $0 > streamEnded.addingTimeInterval(1.0) }
        #expect(
            late.isEmpty, "watchdog still fed \(late.map { $0.timeIntervalSince(streamEnded) }) s after frames stopped")
        #expect(!notify.lines(containing: "STATUS=").isEmpty)
        #expect(!notify.lines(containing: "STOPPING=1").isEmpty)
        #expect(ready[0].timeIntervalSince(started) < 10)
    }

    /// Issue 12: a camera missing at start is waited for, not a start-up failure: the daemon stays up,
    /// says READY (so systemd's start timeout does not kill it), keeps the watchdog fed while nothing has
    /// been delivered yet, reports `waiting` in `status`, and stops cleanly. (The camera appearing later is
    /// scripts/v4l2-vm-tests.sh's `late_camera`.)
    @Test func aMissingCameraIsWaitedFor() throws {
        let directory = try TestAssets.temporaryDirectory()
        let notify = try FakeNotifySocket(directory: directory)
        let device = "/dev/v4l/by-id/livenessd-test-no-such-camera"
        let daemon = try DaemonProcess(
            ["--device", device], environment: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"])
        let client = try EventClient(path: daemon.socketPath)
        let deadline = Date().addingTimeInterval(30)
        while notify.lines(containing: "READY=1").isEmpty && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        #expect(notify.lines(containing: "READY=1").count == 1, "\(daemon.log.suffix(1500))")
        try client.send(["op": "status", "id": "q"])
        let status = try #require(try client.next())
        let sources = status["sources"] as? [String: [String: Any]] ?? [:]
        #expect(sources[device]?["state"] as? String == "waiting", "\(status)")
        let before = notify.lines(containing: "WATCHDOG=1").count
        Thread.sleep(forTimeInterval: 1.5)
        #expect(notify.lines(containing: "WATCHDOG=1").count >= before + 3, "the watchdog starved while waiting")
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit(seconds: 15) == 0, "\(daemon.log.suffix(1500))")
        #expect(daemon.log.contains("camera not there: waiting for it"), "\(daemon.log.suffix(1500))")
        #expect(daemon.log.contains("\(device) does not exist"))
    }

    /// Socket activation: systemd-socket-activate holds the socket and starts the daemon on the
    /// first connection, passing it as fd 3; the daemon serves on it.
    @Test func socketActivation() throws {
        let directory = try TestAssets.temporaryDirectory()
        let socketPath = directory.appendingPathComponent("activated.sock").path
        let clip = try TestAssets.file("samples/live/pad-tdreal__621f74a8_live_video.MOV").path
        let daemon = try DaemonProcess(
            ["--source", clip],
            launcher: [
                "/usr/bin/systemd-socket-activate", "-l", socketPath, "-E", "LIVENESSD_LOG_LEVEL=info",
                "-E", "LIVENESSD_MINIFASNET=\(Binary.pairFolder ?? "")",
            ], socketPath: "/nonexistent/unused.sock")
        let client = try EventClient(path: socketPath)
        try client.send(["op": "status", "id": "activated"])
        let reply = try #require(try client.next(seconds: 30))
        #expect(reply["type"] as? String == "status" && reply["id"] as? String == "activated")
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit(seconds: 15) == 0)
        #expect(daemon.log.contains("listening on the socket systemd passed"), "\(daemon.log)")
        #expect(!FileManager.default.fileExists(atPath: "/nonexistent/unused.sock"))
    }
}
