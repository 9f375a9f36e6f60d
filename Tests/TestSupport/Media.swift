import Foundation

/// Runs a program and returns its standard output; throws (with the end of its standard error)
/// when it exits non-zero.
public enum Program {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    @discardableResult
    public static func output(
        _ path: String, _ arguments: [String], environment: [String: String]? = nil
    ) throws -> Data {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        if let environment { process.environment = environment }
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        let errorText = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Failure(
                description:
                    "\(path) \(arguments.joined(separator: " ")) exited \(process.terminationStatus): \(errorText.suffix(400))"
            )
        }
        return data
    }

    @discardableResult
    public static func run(_ path: String, _ arguments: [String], environment: [String: String]? = nil) throws -> String
    {
        String(decoding: try Self.output(path, arguments, environment: environment), as: UTF8.self)
    }
}

/// FFmpeg's command-line tools (Debian's `ffmpeg` package), to make or inspect test media.
public enum FFmpegTool {
    public typealias Failure = Program.Failure

    /// Runs `/usr/bin/<tool>` with `arguments`; returns standard output.
    @discardableResult
    public static func run(_ tool: String, _ arguments: [String]) throws -> Data {
        try Program.output("/usr/bin/\(tool)", arguments)
    }

    /// Frames in the first video stream, counted by decoding (`ffprobe -count_frames`).
    public static func countFrames(_ path: String) throws -> Int {
        let text = String(
            decoding: try Self.run(
                "ffprobe",
                [
                    "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames",
                    "-of",
                    "csv=p=0", path,
                ]), as: UTF8.self)
        // Rotated clips add a side-data column ("267,"): the count is the first field.
        let field = text.split(whereSeparator: { $0 == "," || $0 == "\n" }).first.map(String.init) ?? ""
        guard let count = Int(field.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw Failure(description: "ffprobe gave no frame count for \(path): \(text)")
        }
        return count
    }
}

/// Loopback servers started by tests.
public enum Loopback {
    /// Waits until something listens on TCP `port` (read from /proc/net/tcp, without connecting:
    /// `ffmpeg -listen 1` serves exactly one client, and a probe connection would be it).
    @discardableResult
    public static func waitForListener(port: Int, seconds: Double = 20) -> Bool {
        let wanted = String(format: ":%04X", port)
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let table = (try? String(contentsOfFile: "/proc/net/tcp", encoding: .utf8)) ?? ""
            for line in table.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ")
                if fields.count > 3, fields[1].hasSuffix(wanted), fields[3] == "0A" { return true }
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return false
    }
}
