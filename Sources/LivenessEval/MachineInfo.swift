import Foundation
import LivenessEngine

/// Where and on what a run happened, for reports.
public enum MachineInfo {
    public static func current() -> EvalReport.RunInfo.Machine {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let cpu =
            cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { $0.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "" }
            ?? "unknown"
        let release = (try? String(contentsOfFile: "/etc/os-release", encoding: .utf8)) ?? ""
        let os =
            release.split(separator: "\n").first { $0.hasPrefix("PRETTY_NAME=") }
            .map { String($0.dropFirst("PRETTY_NAME=".count)).trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
            ?? "unknown"
        var name = utsname()
        uname(&name)
        let kernel = withUnsafeBytes(of: &name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return EvalReport.RunInfo.Machine(
            cpu: cpu, logicalCPUs: ProcessInfo.processInfo.activeProcessorCount, os: os, kernel: kernel,
            openBLASCore: BLAS.coreName)
    }
}

/// The source commit this binary was built from: `livenessd.buildinfo` beside the executable
/// (written by scripts/setup.sh) or in ../share/livenessd/ (scripts/install.sh), else $LIVENESSD_COMMIT.
public enum BuildInfo {
    public static var commit: String {
        let executable =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let folder = (executable as NSString).deletingLastPathComponent
        for file in [folder + "/livenessd.buildinfo", folder + "/../share/livenessd/livenessd.buildinfo"] {
            if let text = try? String(contentsOfFile: file, encoding: .utf8) {
                let value = text.trimmingCharacters(in: .whitespacesAndNewlines)
                if !value.isEmpty { return value }
            }
        }
        return ProcessInfo.processInfo.environment["LIVENESSD_COMMIT"] ?? "unknown"
    }
}
