import Foundation
import Logging

/// Makes sure OpenBLAS runs the kernels this CPU can use.
///
/// Debian 12's OpenBLAS 0.3.21 does not recognise some current CPUs (seen: AMD EPYC under a
/// hypervisor) and falls back to its generic "Prescott" SSE3 kernels: sgemm at ~15 GFLOP/s instead
/// of ~100 at the model's shapes. OpenBLAS reads OPENBLAS_CORETYPE only while the library
/// initialises, before `main`, so the fix is to set it and re-execute this same binary once.
public enum BLASRuntime {
    public static let coreTypeVariable = "OPENBLAS_CORETYPE"
    public static let restartMarker = "LIVENESSD_BLAS_RESTARTED"

    /// Kernel sets OpenBLAS falls back to when it cannot identify the CPU.
    public static let genericCores: Set<String> = [
        "Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom", "Katmai", "Coppermine", "Northwood",
        "Banias", "Opteron", "Opteron_SSE3", "Barcelona", "Generic", "generic", "Unknown", "unknown",
    ]

    /// The best OpenBLAS core for a set of /proc/cpuinfo flags, or nil when SSE kernels are all it has.
    public static func recommendedCore(cpuFlags flags: Set<String>) -> String? {
        if ["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"].allSatisfy(flags.contains) { return "SkylakeX" }
        if ["avx2", "fma"].allSatisfy(flags.contains) { return "Haswell" }
        if flags.contains("avx") { return "Sandybridge" }
        return nil
    }

    public static func cpuFlags() -> Set<String> {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
        else { return [] }
        return Set(line.split(separator: ":").last?.split(separator: " ").map(String.init) ?? [])
    }

    public enum CoreChoice: Equatable {
        /// The core is fine, or the user chose it: nothing to do.
        case keep
        /// Generic kernels on a capable CPU: restart with OPENBLAS_CORETYPE set to this core.
        case restart(coreType: String)
        /// Generic kernels, but the CPU has nothing better (or a restart already happened).
        case generic
    }

    /// What to do about OpenBLAS's `core` on a CPU with `flags`, given the process environment.
    public static func decide(core: String, environment: [String: String], cpuFlags flags: Set<String>) -> CoreChoice {
        guard Self.genericCores.contains(core) else { return .keep }
        if environment[Self.coreTypeVariable] != nil && environment[Self.restartMarker] == nil { return .keep }
        guard environment[Self.restartMarker] == nil, let target = Self.recommendedCore(cpuFlags: flags) else {
            return .generic
        }
        return .restart(coreType: target)
    }

    /// Restarts the process onto the best kernels when OpenBLAS chose generic ones on a capable CPU. One
    /// line says so after the restart, at `fixedLevel` (the daemon logs it at notice, a one-shot command at
    /// info: a fixed problem is not news at every invocation); what cannot be fixed is a warning.
    public static func ensureOptimisedCore(logger: Logger, fixedLevel: Logger.Level = .notice) {
        let core = BLAS.coreName
        let environment = ProcessInfo.processInfo.environment
        switch Self.decide(core: core, environment: environment, cpuFlags: Self.cpuFlags()) {
        case .keep:
            if environment[Self.restartMarker] != nil {
                let coreType = environment[Self.coreTypeVariable] ?? ""
                logger.log(
                    level: fixedLevel,
                    "OpenBLAS chose its generic kernels on this CPU; restarted with \(Self.coreTypeVariable)=\(coreType), it now runs its \(core) kernels",
                    metadata: ["blas.core": "\(core)", "blas.coretype": "\(environment[Self.coreTypeVariable] ?? "")"])
            } else {
                logger.debug("OpenBLAS core", metadata: ["blas.core": "\(core)"])
            }
        case .generic:
            logger.warning(
                "OpenBLAS runs its generic \(core) kernels; inference will be several times slower than this CPU allows",
                metadata: ["blas.core": "\(core)"])
        case .restart(let target):
            logger.debug(
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
}
