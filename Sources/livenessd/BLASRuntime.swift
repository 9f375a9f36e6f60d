import Foundation
import LivenessEngine
import Logging

/// Makes sure OpenBLAS runs the kernels this CPU can use.
///
/// Debian 12's OpenBLAS 0.3.21 does not recognise some current CPUs (seen: AMD EPYC under a
/// hypervisor) and falls back to its generic "Prescott" SSE3 kernels: sgemm at ~15 GFLOP/s instead
/// of ~100 at the model's shapes. OpenBLAS reads OPENBLAS_CORETYPE only while the library
/// initialises, before `main`, so the fix is to set it and re-execute this same binary once.
enum BLASRuntime {
    static let coreTypeVariable = "OPENBLAS_CORETYPE"
    static let restartMarker = "LIVENESSD_BLAS_RESTARTED"

    /// Kernel sets OpenBLAS falls back to when it cannot identify the CPU.
    static let genericCores: Set<String> = [
        "Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom", "Katmai", "Coppermine", "Northwood",
        "Banias", "Opteron", "Opteron_SSE3", "Barcelona", "Generic", "generic", "Unknown", "unknown",
    ]

    /// The best OpenBLAS core for a set of /proc/cpuinfo flags, or nil when SSE kernels are all it has.
    static func recommendedCore(cpuFlags flags: Set<String>) -> String? {
        if ["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"].allSatisfy(flags.contains) { return "SkylakeX" }
        if ["avx2", "fma"].allSatisfy(flags.contains) { return "Haswell" }
        if flags.contains("avx") { return "Sandybridge" }
        return nil
    }

    static func cpuFlags() -> Set<String> {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
        else { return [] }
        return Set(line.split(separator: ":").last?.split(separator: " ").map(String.init) ?? [])
    }

    static func ensureOptimisedCore(logger: Logger) {
        let core = BLAS.coreName
        let environment = ProcessInfo.processInfo.environment
        if environment[Self.restartMarker] != nil {
            logger.notice(
                "OpenBLAS core after restart",
                metadata: ["blas.core": "\(core)", "blas.coretype": "\(environment[Self.coreTypeVariable] ?? "")"])
            return
        }
        guard Self.genericCores.contains(core), environment[Self.coreTypeVariable] == nil else {
            logger.debug("OpenBLAS core", metadata: ["blas.core": "\(core)"])
            return
        }
        let flags = Self.cpuFlags()
        guard let target = Self.recommendedCore(cpuFlags: flags) else {
            logger.debug("OpenBLAS generic core on a CPU without AVX", metadata: ["blas.core": "\(core)"])
            return
        }
        logger.notice(
            "OpenBLAS chose its generic \(core) kernels on a CPU that has \(target == "SkylakeX" ? "AVX-512" : "AVX2/FMA"); restarting with \(Self.coreTypeVariable)=\(target)",
            metadata: ["blas.core": "\(core)", "blas.coretype": "\(target)"])
        setenv(Self.coreTypeVariable, target, 1)
        setenv(Self.restartMarker, "1", 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // Only reached when exec failed: carry on, slower but correct.
        logger.warning(
            "could not re-execute with \(Self.coreTypeVariable)=\(target) (\(String(cString: strerror(errno)))); set it in the environment to get full speed",
            metadata: ["blas.core": "\(core)"])
        unsetenv(Self.restartMarker)
    }
}
