import ArgumentParser
import Foundation
import LivenessServer

struct Watch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Connect to a running daemon and print its events (JSON lines, docs/PROTOCOL.md).")

    @Option(
        help: """
            The daemon's socket (default: /run/livenessd/livenessd.sock as root, \
            $XDG_RUNTIME_DIR/livenessd/livenessd.sock otherwise, as `run` does).
            """)
    var socket = Configuration.defaultSocketPath()

    @Flag(help: "Only state changes, source news and heartbeats (default: every decided frame).")
    var changes = false

    @Option(help: "Source ids to follow (repeatable; default all).")
    var source: [String] = []

    @Flag(help: "Print the daemon's status once and exit.")
    var status = false

    /// What to do about a failed connect: permissions name the socket's mode, owner and group, and who we
    /// are; a missing socket or a refused connection mean no daemon is listening there.
    static func hint(_ error: Int32, _ path: String) -> String {
        switch error {
        case EACCES, EPERM:
            var info = stat()
            let target = stat(path, &info) == 0 ? path : (path as NSString).deletingLastPathComponent
            guard stat(target, &info) == 0 else { return "" }
            let owner = getpwuid(info.st_uid).map { String(cString: $0.pointee.pw_name) } ?? "\(info.st_uid)"
            let group = getgrgid(info.st_gid).map { String(cString: $0.pointee.gr_name) } ?? "\(info.st_gid)"
            let mode = String(info.st_mode & 0o7777, radix: 8)
            return
                " (\(target) is mode \(String(repeating: "0", count: max(0, 4 - mode.count)) + mode), owner \(owner), "
                + "group \(group); you are uid \(getuid()): join that group, or set socket.mode / socket.group in the "
                + "daemon's config)"
        case ENOENT, ECONNREFUSED:
            return " (no daemon is listening there: is it running, and with this --socket?)"
        default:
            return ""
        }
    }

    @Flag(help: "One readable line per event (time, source, state, scores, box) instead of JSON.")
    var text = false

    @Flag(help: "Exit when the daemon closes the connection instead of reconnecting (every 1-5 s) until it is back.")
    var noReconnect = false

    /// Connects, or says why not: nil and the reason. The descriptor is read with `recv` and written with
    /// `send`, not through FileHandle: FileHandle traps on a read error, and a daemon that stops while this
    /// connection still waits in its backlog resets it (ECONNRESET), which killed `watch` instead of letting
    /// it reconnect; a plain `write` to a closed socket raises SIGPIPE, which killed it too.
    func openConnection() -> (Int32?, String) {
        let descriptor = Foundation.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return (nil, "cannot create a socket") }
        guard let connected = withUnixSocketAddress(self.socket, { connect(descriptor, $0, $1) }) else {
            close(descriptor)
            return (nil, "socket path too long: \(self.socket)")
        }
        guard connected == 0 else {
            let code = errno
            close(descriptor)
            return (
                nil,
                "cannot connect to \(self.socket): \(String(cString: strerror(code)))\(Self.hint(code, self.socket))"
            )
        }
        return (descriptor, "")
    }

    func run() throws {
        var request: [String: Any] =
            self.status ? ["op": "status"] : ["op": "subscribe", "mode": self.changes ? "changes" : "frames"]
        if !self.source.isEmpty { request["sources"] = self.source }
        let requestLine = try JSONSerialization.data(withJSONObject: request) + Data("\n".utf8)
        var everConnected = false
        var attempt = 0
        while true {
            let (connection, failure) = self.openConnection()
            guard let descriptor = connection else {
                // The first connection must work (a wrong path is an error, exit 2); after that a daemon that
                // went away (restart, upgrade) is waited for.
                guard everConnected, !self.noReconnect, !self.status else {
                    FileHandle.standardError.write(Data("livenessd: \(failure)\n".utf8))
                    throw ExitCode(2)
                }
                if attempt == 0 {
                    FileHandle.standardError.write(Data("livenessd watch: \(failure); retrying\n".utf8))
                }
                attempt += 1
                Thread.sleep(forTimeInterval: min(5, Double(attempt)))
                continue
            }
            if everConnected {
                FileHandle.standardError.write(Data("livenessd watch: reconnected to \(self.socket)\n".utf8))
            }
            everConnected = true
            attempt = 0
            defer { close(descriptor) }
            var pending = Data()
            var chunk = [UInt8](repeating: 0, count: 64 * 1024)
            let sent = Self.send(requestLine, to: descriptor)
            reading: while sent {
                // 0: the daemon closed the connection; below 0: it reset it (or another error): reconnect.
                let count = chunk.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
                if count < 0 && errno == EINTR { continue }
                if count <= 0 { break reading }
                pending.append(contentsOf: chunk[0..<count])
                while let newline = pending.firstIndex(of: 0x0A) {
                    let line = pending[pending.startIndex..<newline]
                    pending.removeSubrange(pending.startIndex...newline)
                    print(self.text ? Self.readable(line) : String(decoding: line, as: UTF8.self))
                    // Each event as it comes, also into a pipe or a file (stdout is block-buffered there: a
                    // `watch > events.log` killed later lost everything it had received).
                    fflush(nil)
                    if self.status { return }
                }
            }
            if self.noReconnect || self.status { return }
            FileHandle.standardError.write(
                Data("livenessd watch: the daemon closed the connection; reconnecting\n".utf8))
        }
    }

    /// Writes all of `data`; false when the connection is gone (MSG_NOSIGNAL: an error, not SIGPIPE).
    static func send(_ data: Data, to descriptor: Int32) -> Bool {
        data.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = Foundation.send(
                    descriptor, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
                if written < 0 && errno == EINTR { continue }
                guard written > 0 else { return false }
                offset += written
            }
            return true
        }
    }

    /// One event as a line for people: `HH:MM:SS.mmm SOURCE what …`.
    static func readable(_ line: Data) -> String {
        guard let event = try? JSONSerialization.jsonObject(with: line) as? [String: Any] else {
            return String(decoding: line, as: UTF8.self)
        }
        let time = (event["time"] as? Double).map { Self.clock($0) } ?? Self.clock(Date().timeIntervalSince1970)
        let source = (event["source"] as? String) ?? ""
        func figure(_ key: String, in object: [String: Any] = event) -> String? {
            (object[key] as? Double).map { String(format: "%.4f", $0) }
        }
        func scores() -> String {
            guard let scores = event["scores"] as? [String: Double], !scores.isEmpty else { return "" }
            return " ("
                + scores.sorted { $0.key < $1.key }.map { String(format: "%@ %.4f", $0.key, $0.value) }
                .joined(separator: ", ") + ")"
        }
        func box(_ value: Any?) -> String {
            guard let box = value as? [String: Int], let x = box["x"], let y = box["y"], let w = box["w"],
                let h = box["h"]
            else { return "" }
            return " face \(w)x\(h)+\(x)+\(y)"
        }
        switch event["type"] as? String {
        case "decision":
            let state = event["state"] as? String ?? "?"
            let smoothed = figure("smoothed").map { " smoothed \($0)" } ?? ""
            let reason = (event["reason"] as? String).map { " — \($0)" } ?? ""
            let mark = event["changed"] as? Bool == true ? "*" : " "
            return "\(time) \(source) \(mark)\(state)\(smoothed)\(scores())\(box(event["box"]))"
                + " #\(event["seq"] ?? "?")\(reason)"
        case "source":
            let reason = (event["reason"] as? String).map { ": \($0)" } ?? ""
            return "\(time) \(source) \(event["kind"] ?? "?")\(reason)"
        case "transaction", "verify":
            let id = event["id"] as? String ?? "?"
            if event["phase"] as? String == "started" {
                return "\(time) \(source) transaction \(id) started (timeout \(event["timeout_ms"] ?? "?") ms)"
            }
            let outcome = (event["outcome"] as? String ?? "?").uppercased()
            let smoothed = figure("smoothed").map { " smoothed \($0)" } ?? ""
            let reason = (event["reason"] as? String).map { " — \($0)" } ?? ""
            return "\(time) \(source) transaction \(id) \(outcome)\(smoothed)\(scores()), "
                + "\(event["frames"] ?? "?") frames in \(event["elapsed_ms"] ?? "?") ms\(reason)"
        case "heartbeat":
            let sources = (event["sources"] as? [String: [String: Any]] ?? [:]).sorted { $0.key < $1.key }.map {
                "\($0.key) \($0.value["state"] ?? "?")" + (figure("smoothed", in: $0.value).map { " \($0)" } ?? "")
            }
            return "\(time) heartbeat: " + (sources.isEmpty ? "no source yet" : sources.joined(separator: "; "))
        case "bye", "error":
            return "\(time) daemon: \(event["type"] ?? "") — \(event["error"] ?? "")"
        case "ok":
            return "\(time) subscribed (\(event["op"] ?? ""))"
        default:
            return String(decoding: line, as: UTF8.self)
        }
    }

    /// Local wall-clock time of day, to the millisecond.
    static func clock(_ seconds: Double) -> String {
        var whole = time_t(seconds.rounded(.down))
        var parts = tm()
        localtime_r(&whole, &parts)
        let milliseconds = Int((seconds - seconds.rounded(.down)) * 1000)
        return String(format: "%02d:%02d:%02d.%03d", parts.tm_hour, parts.tm_min, parts.tm_sec, milliseconds)
    }
}
