import Foundation
import Logging

/// Log lines for the systemd journal: when stderr is the journal ($JOURNAL_STREAM is set), each line
/// starts with its syslog priority, `<6>` for info (sd-daemon(3) prefixes), so `journalctl -p`
/// filters by level; metadata follows as dotted key=value pairs. Outside systemd the daemon uses
/// swift-log's StreamLogHandler.
public struct JournaldLogHandler: LogHandler {
    public let label: String
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]

    public init(label: String, logLevel: Logger.Level = .info) {
        self.label = label
        self.logLevel = logLevel
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    public static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }

    public static func line(
        level: Logger.Level, label: String, message: Logger.Message, metadata: Logger.Metadata
    ) -> String {
        let fields = metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        return "<\(Self.priority(level))>\(label): \(message)\(fields.isEmpty ? "" : " " + fields)\n"
    }

    public func log(
        level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String,
        function: String, line: UInt
    ) {
        let merged = self.metadata.merging(metadata ?? [:]) { $1 }
        FileHandle.standardError.write(
            Data(Self.line(level: level, label: self.label, message: message, metadata: merged).utf8))
    }
}
