import ArgumentParser
import Foundation
import LivenessServer

struct Watch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Connect to a running daemon and print its events (JSON lines, docs/PROTOCOL.md).")

    @Option(help: "The daemon's socket.")
    var socket = "/run/livenessd/livenessd.sock"

    @Flag(help: "Only state changes, source news and heartbeats (default: every decided frame).")
    var changes = false

    @Option(help: "Source ids to follow (repeatable; default all).")
    var source: [String] = []

    @Flag(help: "Print the daemon's status once and exit.")
    var status = false

    func run() throws {
        let descriptor = Foundation.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw CommandError("cannot create a socket") }
        guard let connected = withUnixSocketAddress(self.socket, { connect(descriptor, $0, $1) }) else {
            throw CommandError("socket path too long: \(self.socket)")
        }
        guard connected == 0 else {
            FileHandle.standardError.write(
                Data(
                    "livenessd: cannot connect to \(self.socket): \(String(cString: strerror(errno))) (is the daemon running?)\n"
                        .utf8))
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
                if self.status { return }
            }
        }
    }
}
