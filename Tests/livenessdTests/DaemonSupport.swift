import Foundation
import TestSupport
import Testing

/// A `livenessd run` process for integration tests.
final class DaemonProcess {
    let process = Process()
    let socketPath: String
    let directory: URL
    let logURL: URL

    /// Starts the built binary with `arguments` after `run`; the socket lives in a fresh temp folder.
    /// `analysisFPS`: the `--analysis-fps` given (nil: none, so the config's or the default rate applies);
    /// every frame unless a test says otherwise, since most tests count decisions against frames.
    init(
        _ arguments: [String], environment: [String: String] = [:], launcher: [String] = [], socketPath: String? = nil,
        analysisFPS: Double? = 0
    ) throws {
        self.directory = try TestAssets.temporaryDirectory("livenessd-daemon")
        self.socketPath = socketPath ?? self.directory.appendingPathComponent("livenessd.sock").path
        self.logURL = self.directory.appendingPathComponent("daemon.log")
        FileManager.default.createFile(atPath: self.logURL.path, contents: nil)
        let binary = try #require(Binary.url, "livenessd binary not found next to the tests").path
        let rate = analysisFPS.map { ["--analysis-fps", "\($0)"] } ?? []
        let daemonArguments =
            ["run", "--model", try TestAssets.modelURL.path, "--socket", self.socketPath] + rate + arguments
        if launcher.isEmpty {
            self.process.executableURL = URL(fileURLWithPath: binary)
            self.process.arguments = daemonArguments
        } else {
            self.process.executableURL = URL(fileURLWithPath: launcher[0])
            self.process.arguments = Array(launcher.dropFirst()) + [binary] + daemonArguments
        }
        var merged = ProcessInfo.processInfo.environment
        merged["LIVENESSD_LOG_LEVEL"] = "info"
        merged["LIVENESSD_MINIFASNET"] = Binary.pairFolder
        for (key, value) in environment { merged[key] = value }
        self.process.environment = merged
        let log = try FileHandle(forWritingTo: self.logURL)
        self.process.standardOutput = log
        self.process.standardError = log
        try self.process.run()
    }

    var log: String { (try? String(contentsOf: self.logURL, encoding: .utf8)) ?? "" }

    func signal(_ number: Int32) { kill(self.process.processIdentifier, number) }

    /// Waits for exit; returns the status, or nil (after killing it) when `seconds` pass.
    func waitForExit(seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while self.process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if self.process.isRunning {
            self.process.terminate()
            self.process.waitUntilExit()
            return nil
        }
        return self.process.terminationStatus
    }

    deinit {
        if self.process.isRunning {
            kill(self.process.processIdentifier, SIGKILL)
            self.process.waitUntilExit()
        }
    }
}

/// A client of the event socket: newline-delimited JSON with timeouts.
final class EventClient {
    let descriptor: Int32
    private var pending: [UInt8] = []

    struct Failure: Error, CustomStringConvertible { var description: String }

    /// Connects, retrying until the daemon has bound the socket (at most `seconds`).
    init(path: String, seconds: Double = 20) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
            }
            let status = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            if status == 0 {
                self.descriptor = descriptor
                return
            }
            close(descriptor)
            if Date() > deadline { throw Failure(description: "cannot connect to \(path)") }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    deinit { close(self.descriptor) }

    func send(_ request: [String: Any]) throws {
        let data = try JSONSerialization.data(withJSONObject: request) + Data("\n".utf8)
        _ = data.withUnsafeBytes { write(self.descriptor, $0.baseAddress, $0.count) }
    }

    /// The next message, nil at end of stream; throws after `seconds` without one.
    func next(seconds: Double = 30) throws -> [String: Any]? {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            if let newline = self.pending.firstIndex(of: 0x0A) {
                let line = Data(self.pending[..<newline])
                self.pending.removeSubrange(...newline)
                guard let object = try JSONSerialization.jsonObject(with: line) as? [String: Any] else {
                    throw Failure(description: "not a JSON object: \(String(decoding: line, as: UTF8.self))")
                }
                return object
            }
            let remaining = deadline.timeIntervalSinceNow
            if remaining <= 0 { throw Failure(description: "no message within \(seconds) s") }
            var poller = pollfd(fd: self.descriptor, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, Int32(min(remaining, 1) * 1000)) > 0 else { continue }
            var chunk = [UInt8](repeating: 0, count: 65_536)
            let count = read(self.descriptor, &chunk, chunk.count)
            if count <= 0 { return nil }
            self.pending += chunk[..<count]
        }
    }

    /// Every message until the daemon closes the connection.
    func readToEnd(seconds: Double = 60) throws -> [[String: Any]] {
        var messages: [[String: Any]] = []
        let deadline = Date().addingTimeInterval(seconds)
        while let message = try self.next(seconds: max(0.1, deadline.timeIntervalSinceNow)) { messages.append(message) }
        return messages
    }
}
