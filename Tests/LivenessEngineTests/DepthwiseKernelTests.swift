import Foundation
import Testing

@testable import LivenessEngine

/// The two depthwise 3×3 kernels (portable Swift, AVX2 + FMA C) on the same random inputs, each
/// against a double-precision reference, and against each other. Heights odd and even (the spare
/// row), widths 1 … 40 (the C kernel's scalar path below 10, one and several overlapping 8-lane
/// blocks above), ReLU on and off.
@Suite struct DepthwiseKernelTests {
    static let heights = [1, 2, 3, 4, 5, 7, 8, 13]
    static let widths = Array(1...40)
    static let channels = 3

    /// SplitMix64: the same inputs on every run and machine.
    struct SeededGenerator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            self.state &+= 0x9E37_79B9_7F4A_7C15
            var z = self.state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    struct Problem {
        var height, width: Int
        var relu: Bool
        var input, weights, bias: [Float]

        init(height: Int, width: Int, relu: Bool) {
            var generator = SeededGenerator(state: UInt64(height * 1000 + width * 2 + (relu ? 1 : 0)))
            func values(_ count: Int) -> [Float] {
                (0..<count).map { _ in Float.random(in: -1...1, using: &generator) }
            }
            (self.height, self.width, self.relu) = (height, width, relu)
            self.input = values(DepthwiseKernelTests.channels * height * width)
            self.weights = values(DepthwiseKernelTests.channels * 9)
            self.bias = values(DepthwiseKernelTests.channels)
        }

        /// Output of `kernel`. Canaries after the output must survive (no write past the planes).
        func run(_ kernel: ConvolutionKernels.DepthwiseKernel) -> [Float] {
            let count = DepthwiseKernelTests.channels * self.height * self.width
            let canary: Float = 12345
            var output = [Float](repeating: .nan, count: count + 16)
            for index in count..<output.count { output[index] = canary }
            let zeroRow = [Float](repeating: 0, count: self.width)
            var spareRow = [Float](repeating: 0, count: self.width)
            output.withUnsafeMutableBufferPointer { out in
                spareRow.withUnsafeMutableBufferPointer { spare in
                    ConvolutionKernels.depthwise3x3(
                        self.input, channels: DepthwiseKernelTests.channels, height: self.height, width: self.width,
                        weights: self.weights, bias: self.bias, relu: self.relu, zeroRow: zeroRow,
                        spareRow: spare.baseAddress!, into: out.baseAddress!, kernel: kernel)
                }
            }
            #expect(output[count...].allSatisfy { $0 == canary }, "wrote past the output (\(self.label))")
            return Array(output[..<count])
        }

        /// Double-precision result and the sum of the absolute terms (the scale of rounding errors).
        func reference() -> (values: [Float], scales: [Float]) {
            var values: [Float] = []
            var scales: [Float] = []
            for c in 0..<DepthwiseKernelTests.channels {
                for y in 0..<self.height {
                    for x in 0..<self.width {
                        var sum = Double(self.bias[c])
                        var scale = abs(Double(self.bias[c]))
                        for ky in 0..<3 {
                            for kx in 0..<3 {
                                let (iy, ix) = (y + ky - 1, x + kx - 1)
                                guard iy >= 0, iy < self.height, ix >= 0, ix < self.width else { continue }
                                let term =
                                    Double(self.weights[c * 9 + ky * 3 + kx])
                                    * Double(self.input[(c * self.height + iy) * self.width + ix])
                                sum += term
                                scale += abs(term)
                            }
                        }
                        values.append(Float(self.relu ? max(sum, 0) : sum))
                        scales.append(Float(max(scale, 1e-30)))
                    }
                }
            }
            return (values, scales)
        }

        var label: String { "\(self.height)×\(self.width), relu \(self.relu)" }
    }

    /// Largest |a − b| / scale: the error relative to the size of the terms summed.
    static func relativeError(_ a: [Float], _ b: [Float], scales: [Float]) -> Float {
        zip(zip(a, b), scales).reduce(0) { max($0, abs($1.0.0 - $1.0.1) / $1.1) }
    }

    @Test(arguments: [false, true])
    func portableKernelMatchesReference(relu: Bool) {
        for height in Self.heights {
            for width in Self.widths {
                let problem = Problem(height: height, width: width, relu: relu)
                let reference = problem.reference()
                let error = Self.relativeError(problem.run(.portable), reference.values, scales: reference.scales)
                #expect(error <= 1e-5, "\(problem.label): relative error \(error)")
            }
        }
    }

    @Test(
        .enabled(if: ConvolutionKernels.avx2FMAAvailable, "needs an x86-64 CPU with AVX2 and FMA"),
        arguments: [false, true])
    func avx2KernelMatchesPortableKernel(relu: Bool) {
        for height in Self.heights {
            for width in Self.widths {
                let problem = Problem(height: height, width: width, relu: relu)
                let reference = problem.reference()
                let portable = problem.run(.portable)
                let avx2 = problem.run(.avx2FMA)
                let error = Self.relativeError(avx2, portable, scales: reference.scales)
                #expect(error <= 1e-5, "\(problem.label): AVX2 vs Swift, relative error \(error)")
                let referenceError = Self.relativeError(avx2, reference.values, scales: reference.scales)
                #expect(referenceError <= 1e-5, "\(problem.label): AVX2 vs reference, relative error \(referenceError)")
            }
        }
    }

    /// The AVX-512 kernel is the AVX2 one in 16 lanes: the same floats bit for bit, at every width (under 16
    /// it hands the rows to the AVX2 kernel), with and without ReLU; on widths up to 40 here and on the
    /// models' own maps (YuNet's 160 × 128 … MiniFASNet's 40 × 40).
    @Test(
        .enabled(if: ConvolutionKernels.avx512Available, "needs an x86-64 CPU with AVX-512F"), arguments: [false, true])
    func avx512KernelEqualsAVX2KernelBitForBit(relu: Bool) {
        let sizes =
            Self.heights.flatMap { h in Self.widths.map { (h, $0) } } + [(128, 160), (64, 80), (32, 40), (40, 40)]
        for (height, width) in sizes {
            let problem = Problem(height: height, width: width, relu: relu)
            let avx2 = problem.run(.avx2FMA)
            let avx512 = problem.run(.avx512)
            let differing = zip(avx2, avx512).filter { $0.bitPattern != $1.bitPattern }.count
            #expect(differing == 0, "\(problem.label): \(differing) values differ between AVX-512 and AVX2")
        }
    }

    /// What the interpreter runs: the C kernel wherever the CPU allows it, unless overridden.
    @Test func automaticChoiceFollowsTheCPU() {
        #if arch(x86_64)
            if ProcessInfo.processInfo.environment["LIVENESSD_PORTABLE_KERNELS"] != "1" {
                #expect(ConvolutionKernels.depthwiseUsesAVX2FMA == ConvolutionKernels.avx2FMAAvailable)
                let capped = ProcessInfo.processInfo.environment["LIVENESSD_PORTABLE_KERNELS"] == "avx2"
                #expect(ConvolutionKernels.depthwiseUsesAVX512 == (ConvolutionKernels.avx512Available && !capped))
            }
        #else
            #expect(!ConvolutionKernels.avx2FMAAvailable)
            #expect(!ConvolutionKernels.depthwiseUsesAVX2FMA)
        #endif
    }
}
