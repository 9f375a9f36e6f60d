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

    func run() throws {
        let descriptor = Foundation.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw CommandError("cannot create a socket") }
        guard let connected = withUnixSocketAddress(self.socket, { connect(descriptor, $0, $1) }) else {
            throw CommandError("socket path too long: \(self.socket)")
        }
        guard connected == 0 else {
            let reason = String(cString: strerror(errno))
            FileHandle.standardError.write(
                Data("livenessd: cannot connect to \(self.socket): \(reason)\(Self.hint(errno, self.socket))\n".utf8))
            throw ExitCode(2)
        }
        let handle = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
        var request: [String: Any] =
            self.status ? ["op": "status"] : ["op": "subscribe", "mode": self.changes ? "changes" : "frames"]
        if !self.source.isEmpty { request["sources"] = self.source }
        handle.write(try JSONSerialization.data(withJSONObject: request) + Data("\n".utf8))
        var pending = Data()
        while true {
            let chunk = handle.availableData
            if chunk.isEmpty { return }
            pending.append(chunk)
            while let newline = pending.firstIndex(of: 0x0A) {
                let line = pending[pending.startIndex..<newline]
                pending.removeSubrange(pending.startIndex...newline)
                print(String(decoding: line, as: UTF8.self))
                // Each event as it comes, also into a pipe or a file (stdout is block-buffered there: a
                // `watch > events.log` killed later lost everything it had received).
                fflush(nil)
                if self.status { return }
            }
        }
    }
}
