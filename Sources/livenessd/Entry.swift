import Foundation
import ArgumentParser
import Logging

@main
enum Entry {
    static func main() {
        let level = Logger.Level(environment: "LIVENESSD_LOG_LEVEL") ?? .notice
        let journal = ProcessInfo.processInfo.environment["JOURNAL_STREAM"] != nil
        LoggingSystem.bootstrap { label in
            if journal { return JournaldLogHandler(label: label, logLevel: level) }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        // Before any model is loaded: OpenBLAS picks its kernels once, when the library initialises.
        BLASRuntime.ensureOptimisedCore(logger: Logger(label: "livenessd.blas"))
        Livenessd.main()
    }
}

struct Livenessd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "livenessd",
        abstract: "Face liveness (presentation-attack) detection for kiosks and door terminals.",
        discussion: """
            The model is found through --model, then $LIVENESSD_MODEL, then `model:` in the config file \
            (--config, default /etc/livenessd/livenessd.yaml), then models/face-liveness-vit/model.pt \
            under the current directory and /usr/local/share/livenessd.
            """,
        version: LivenessdVersion.string,
        subcommands: [Run.self, Watch.self, Classify.self, Eval.self, Calibrate.self, Probe.self, Bench.self]
    )
}

enum LivenessdVersion {
    static let string = "0.1.0"
}

extension Logger.Level {
    init?(environment name: String) {
        guard let raw = ProcessInfo.processInfo.environment[name]?.lowercased() else { return nil }
        self.init(rawValue: raw)
    }
}
