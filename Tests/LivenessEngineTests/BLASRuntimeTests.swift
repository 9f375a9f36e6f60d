import Testing

@testable import LivenessEngine

@Suite struct BLASRuntimeTests {
    @Test func blasCoreChoice() {
        #expect(BLASRuntime.recommendedCore(cpuFlags: ["sse2", "avx", "avx2", "fma"]) == "Haswell")
        #expect(
            BLASRuntime.recommendedCore(cpuFlags: [
                "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd",
            ])
                == "SkylakeX")
        #expect(BLASRuntime.recommendedCore(cpuFlags: ["sse2", "sse3"]) == nil)
        #expect(BLASRuntime.genericCores.contains("Prescott"))
        #expect(!BLASRuntime.genericCores.contains("Haswell") && !BLASRuntime.genericCores.contains("Zen"))
        let avx2: Set<String> = ["sse3", "avx", "avx2", "fma"]
        #expect(BLASRuntime.decide(core: "Prescott", environment: [:], cpuFlags: avx2) == .restart(coreType: "Haswell"))
        #expect(BLASRuntime.decide(core: "Zen", environment: [:], cpuFlags: avx2) == .keep)
        // The user's own OPENBLAS_CORETYPE is respected.
        #expect(
            BLASRuntime.decide(core: "Prescott", environment: ["OPENBLAS_CORETYPE": "Prescott"], cpuFlags: avx2)
                == .keep)
        // Never a restart loop: still generic after the restart means give up with a warning.
        #expect(
            BLASRuntime.decide(
                core: "Prescott", environment: ["OPENBLAS_CORETYPE": "Haswell", "LIVENESSD_BLAS_RESTARTED": "1"],
                cpuFlags: avx2) == .generic)
        #expect(BLASRuntime.decide(core: "Prescott", environment: [:], cpuFlags: ["sse2", "sse3"]) == .generic)
    }
}
