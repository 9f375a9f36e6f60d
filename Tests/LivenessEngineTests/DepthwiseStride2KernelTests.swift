import Foundation
import Testing

@testable import LivenessEngine

/// The depthwise 3 × 3 stride-2 kernels of `MobileKernels.depthwise` (padding 1): the portable Swift
/// ones (the even/odd split for even sides, the general phase path for odd ones) and the AVX2 + FMA C
/// kernel, each against a double-precision reference. Every side 1 … 41 (odd and even, output
/// widths below, at and above 8 lanes, masked tails) and the MiniFASNet downsampling shapes
/// (conv_23 103 × 40 × 40, conv_34 231 × 20 × 20, conv_45 308 × 10 × 10).
@Suite struct DepthwiseStride2KernelTests {
    struct Problem {
        var channels, height, width: Int
        var input, weights, bias: [Float]

        init(channels: Int, height: Int, width: Int) {
            var generator = DepthwiseKernelTests.SeededGenerator(
                state: UInt64(channels * 1_000_000 + height * 1000 + width))
            func values(_ count: Int) -> [Float] {
                (0..<count).map { _ in Float.random(in: -1...1, using: &generator) }
            }
            (self.channels, self.height, self.width) = (channels, height, width)
            self.input = values(channels * height * width)
            self.weights = values(channels * 9)
            self.bias = values(channels)
        }

        var outputHeight: Int { (self.height - 1) / 2 + 1 }
        var outputWidth: Int { (self.width - 1) / 2 + 1 }

        func run(_ kernel: ConvolutionKernels.DepthwiseKernel) -> [Float] {
            let count = self.channels * self.outputHeight * self.outputWidth
            let canary: Float = 12345
            var output = [Float](repeating: .nan, count: count + 16)
            for index in count..<output.count { output[index] = canary }
            var phases = [Float](repeating: .nan, count: (self.height + 1) * (self.width + 2))
            output.withUnsafeMutableBufferPointer { out in
                phases.withUnsafeMutableBufferPointer { phases in
                    MobileKernels.depthwise(
                        self.input, channels: self.channels, height: self.height, width: self.width, kernel: 3,
                        stride: 2, padding: 1, weights: self.weights, bias: self.bias, phases: phases.baseAddress!,
                        into: out.baseAddress!, kernel: kernel)
                }
            }
            #expect(output[count...].allSatisfy { $0 == canary }, "wrote past the output (\(self.label))")
            return Array(output[..<count])
        }

        func reference() -> (values: [Float], scales: [Float]) {
            var values: [Float] = []
            var scales: [Float] = []
            for c in 0..<self.channels {
                for y in 0..<self.outputHeight {
                    for x in 0..<self.outputWidth {
                        var sum = Double(self.bias[c])
                        var scale = abs(sum)
                        for ky in 0..<3 {
                            for kx in 0..<3 {
                                let (iy, ix) = (2 * y + ky - 1, 2 * x + kx - 1)
                                guard iy >= 0, iy < self.height, ix >= 0, ix < self.width else { continue }
                                let term =
                                    Double(self.weights[c * 9 + ky * 3 + kx])
                                    * Double(self.input[(c * self.height + iy) * self.width + ix])
                                sum += term
                                scale += abs(term)
                            }
                        }
                        values.append(Float(sum))
                        scales.append(Float(max(scale, 1e-30)))
                    }
                }
            }
            return (values, scales)
        }

        var label: String { "\(self.channels) × \(self.height) × \(self.width)" }
    }

    static var kernels: [ConvolutionKernels.DepthwiseKernel] {
        ConvolutionKernels.avx2FMAAvailable ? [.portable, .avx2FMA] : [.portable]
    }

    static func check(_ problem: Problem) {
        let reference = problem.reference()
        for kernel in Self.kernels {
            let error = DepthwiseKernelTests.relativeError(
                problem.run(kernel), reference.values, scales: reference.scales)
            #expect(error <= 1e-5, "\(kernel) \(problem.label): relative error \(error)")
        }
    }

    @Test func everySideMatchesReference() {
        for height in 1...41 {
            for width in 1...41 { Self.check(Problem(channels: 2, height: height, width: width)) }
        }
    }

    @Test func miniFASNetShapesMatchReference() {
        for (channels, side) in [(103, 40), (231, 20), (308, 10)] {
            Self.check(Problem(channels: channels, height: side, width: side))
        }
    }
}
