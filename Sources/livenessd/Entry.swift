import Foundation
import ArgumentParser
import LivenessEngine
import Logging
import LivenessServer

@main
enum Entry {
    static func main() async {
        // At most two malloc arenas (glibc's default is 8 per core): the decode, prepare and
        // inference threads each grew their own, and the pages they touched stayed resident.
        // Measured at 30 fps with both opinions: peak RSS 81.2 → 79.5 MB. A user's own
        // MALLOC_ARENA_MAX wins (glibc reads it at start-up, before this call; we leave it alone).
        if ProcessInfo.processInfo.environment["MALLOC_ARENA_MAX"] == nil { _ = mallopt(mallocArenaMaximum, 2) }
        let level = Logger.Level(environment: "LIVENESSD_LOG_LEVEL") ?? .notice
        let journal = ProcessInfo.processInfo.environment["JOURNAL_STREAM"] != nil
        LoggingSystem.bootstrap { label in
            if journal { return JournaldLogHandler(label: label, logLevel: level) }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        // Before any model is loaded: OpenBLAS picks its kernels once, when the library initialises.
        // The daemon records the fix in its log; other commands say it only at info (LIVENESSD_LOG_LEVEL=info).
        let daemon = CommandLine.arguments.dropFirst().first == "run"
        BLASRuntime.ensureOptimisedCore(logger: Logger(label: "livenessd.blas"), fixedLevel: daemon ? .notice : .info)
        await Livenessd.main()
    }
}

struct Livenessd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "livenessd",
        abstract: "Face liveness (presentation-attack) detection for kiosks and door terminals.",
        discussion: """
            Two opinions judge each face: the face-liveness ViT (--model, $LIVENESSD_MODEL, `model:` in the \
            config file, models/face-liveness-vit/model.pt, /usr/local/share/livenessd, /usr/share/livenessd) and the MiniFASNet \
            pair (--minifasnet, $LIVENESSD_MINIFASNET, `minifasnet:`, models/silent-face, \
            /usr/local/share/livenessd/silent-face, /usr/share/livenessd/silent-face); --models vit or minifasnet judges with one. Config file: \
            --config, default /etc/livenessd/livenessd.yaml.
            """,
        version: LivenessdVersion.string,
        subcommands: [
            Run.self, Watch.self, Classify.self, Eval.self, Calibrate.self, Probe.self, Bench.self, Config.self,
        ]
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

/// glibc's `mallopt` and M_ARENA_MAX (from <malloc.h>, which the Glibc module does not export).
@_silgen_name("mallopt")
private func mallopt(_ parameter: Int32, _ value: Int32) -> Int32
private let mallocArenaMaximum: Int32 = -8
