import Foundation
import Testing

@testable import LivenessEngine

/// The pointwise (1×1) kernels: portable (OpenBLAS), AVX2 + FMA C and AVX-512 C, each against a
/// double-precision reference on the same random inputs. Every (outputs, inputs, area) the two models
/// run (YuNet at 320 × 256, MiniFASNetV2 / V1SE at 80 × 80, conv1s as im2col GEMMs) plus odd sizes:
/// channel counts around the register blocks (6 and 8 rows), areas around the vector and block
/// widths (8 / 16 and 16 / 32 lanes) with masked tails; no activation, ReLU, PReLU, a residual in
/// another buffer and in the output itself.
@Suite struct PointwiseKernelTests {
    /// (outputs, inputs, area) of every 1×1 convolution and im2col GEMM in YuNet and the MiniFASNet pair.
    static let modelShapes: [(Int, Int, Int)] = [
        // YuNet, 320 × 256 input: conv head (3×3 stride 2 as im2col, k = 27), then 160×128 … 10×8 maps.
        (16, 27, 20480), (16, 16, 20480), (16, 16, 5120), (32, 16, 5120), (32, 32, 5120), (64, 32, 5120),
        (64, 64, 1280), (64, 64, 320), (64, 64, 80), (1, 64, 1280), (4, 64, 1280), (10, 64, 1280), (1, 64, 320),
        (4, 64, 320), (10, 64, 320), (1, 64, 80), (4, 64, 80), (10, 64, 80),
        // MiniFASNet (V2 and V1SE): conv1 (im2col, k = 27), the blocks' expand / project, conv_6_sep.
        (32, 27, 1600), (103, 32, 1600), (64, 103, 400), (13, 64, 400), (64, 13, 400), (231, 64, 400),
        (128, 231, 100), (26, 128, 100), (128, 26, 100), (308, 128, 100), (128, 308, 25), (26, 128, 25),
        (128, 26, 25), (512, 128, 25), (64, 16, 400), (16, 64, 400), (26, 64, 400), (64, 26, 400), (52, 64, 400),
        (64, 52, 400), (52, 128, 100), (128, 52, 100), (32, 128, 100), (128, 32, 100), (154, 128, 25),
        (128, 154, 25), (77, 128, 100), (128, 77, 100), (52, 128, 25), (128, 52, 25),
    ]

    /// Odd sizes around the blocks and vector widths, and one channel / one pixel.
    static let oddShapes: [(Int, Int, Int)] = {
        var shapes: [(Int, Int, Int)] = []
        for outputs in [1, 2, 5, 6, 7, 8, 9, 13, 17] {
            for area in [1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 49, 63, 65] {
                shapes.append((outputs, [1, 3, 27][(outputs + area) % 3], area))
            }
        }
        return shapes
    }()

    enum Epilogue: CaseIterable {
        case none, relu, prelu, residual, residualInPlace, preluResidual
    }

    struct Problem {
        var outputs, inputs, area: Int
        var epilogue: Epilogue
        var weights, input, bias, slopes, residual: [Float]

        init(_ shape: (Int, Int, Int), _ epilogue: Epilogue) {
            (self.outputs, self.inputs, self.area) = shape
            self.epilogue = epilogue
            var generator = DepthwiseKernelTests.SeededGenerator(
                state: UInt64(shape.0 * 1_000_003 + shape.1 * 1009 + shape.2 * 7)
                    &+ UInt64(Epilogue.allCases.firstIndex(of: epilogue)!))
            func values(_ count: Int, _ range: ClosedRange<Float> = -1...1) -> [Float] {
                (0..<count).map { _ in Float.random(in: range, using: &generator) }
            }
            self.weights = values(self.outputs * self.inputs)
            self.input = values(self.inputs * self.area, -4...4)
            self.bias = values(self.outputs)
            self.slopes = values(self.outputs, 0...0.5)
            self.residual = values(self.outputs * self.area, -4...4)
        }

        var usesSlopes: Bool { self.epilogue == .prelu || self.epilogue == .preluResidual }
        var usesResidual: Bool { [.residual, .residualInPlace, .preluResidual].contains(self.epilogue) }

        /// Output of `kernel`. Canaries after the output must survive (no write past the planes).
        func run(_ kernel: ConvolutionKernels.PointwiseKernel) -> [Float] {
            let count = self.outputs * self.area
            let canary: Float = 12345
            var output = [Float](repeating: .nan, count: count + 40)
            for index in count..<output.count { output[index] = canary }
            if self.epilogue == .residualInPlace { output.replaceSubrange(0..<count, with: self.residual) }
            output.withUnsafeMutableBufferPointer { out in
                self.slopes.withUnsafeBufferPointer { slopes in
                    self.residual.withUnsafeBufferPointer { residual in
                        let target = out.baseAddress!
                        let residualPointer: UnsafePointer<Float>? =
                            switch self.epilogue {
                            case .residual, .preluResidual: residual.baseAddress!
                            case .residualInPlace: UnsafePointer(target)
                            default: nil
                            }
                        ConvolutionKernels.pointwise(
                            weights: self.weights, outputs: self.outputs, inputs: self.inputs, input: self.input,
                            area: self.area, bias: self.bias, residual: residualPointer,
                            slopes: self.usesSlopes ? slopes.baseAddress! : nil, relu: self.epilogue == .relu,
                            into: target, kernel: kernel)
                    }
                }
            }
            #expect(output[count...].allSatisfy { $0 == canary }, "wrote past the output (\(self.label))")
            return Array(output[..<count])
        }

        /// Double-precision result and the sum of the absolute terms (the scale of rounding errors).
        func reference() -> (values: [Float], scales: [Float]) {
            var values = [Float](repeating: 0, count: self.outputs * self.area)
            var scales = values
            for c in 0..<self.outputs {
                for i in 0..<self.area {
                    var sum = Double(self.bias[c])
                    var scale = abs(sum)
                    if self.usesResidual {
                        sum += Double(self.residual[c * self.area + i])
                        scale += abs(Double(self.residual[c * self.area + i]))
                    }
                    for p in 0..<self.inputs {
                        let term = Double(self.weights[c * self.inputs + p]) * Double(self.input[p * self.area + i])
                        sum += term
                        scale += abs(term)
                    }
                    if self.usesSlopes, sum < 0 { sum *= Double(self.slopes[c]) }
                    if self.epilogue == .relu { sum = max(sum, 0) }
                    values[c * self.area + i] = Float(sum)
                    scales[c * self.area + i] = Float(max(scale, 1e-30))
                }
            }
            return (values, scales)
        }

        /// Worst-case bound of float summation over the terms, relative to the sum of their magnitudes.
        var tolerance: Float { Float(self.inputs + 3) * Float.ulpOfOne }

        var label: String { "\(self.outputs)×\(self.inputs)×\(self.area), \(self.epilogue)" }
    }

    static var kernels: [ConvolutionKernels.PointwiseKernel] {
        var kernels: [ConvolutionKernels.PointwiseKernel] = [.portable]
        if ConvolutionKernels.avx2FMAAvailable { kernels.append(.avx2FMA) }
        if ConvolutionKernels.avx512Available { kernels.append(.avx512) }
        return kernels
    }

    static func check(_ shapes: [(Int, Int, Int)], epilogues: [Epilogue]) {
        for shape in shapes {
            for epilogue in epilogues {
                let problem = Problem(shape, epilogue)
                let reference = problem.reference()
                for kernel in Self.kernels {
                    let error = DepthwiseKernelTests.relativeError(
                        problem.run(kernel), reference.values, scales: reference.scales)
                    #expect(error <= problem.tolerance, "\(kernel) \(problem.label): relative error \(error)")
                }
            }
        }
    }

    @Test func modelShapesMatchReference() {
        Self.check(Self.modelShapes, epilogues: [.none, .relu, .prelu, .residual])
    }

    @Test(arguments: Epilogue.allCases)
    func oddShapesMatchReference(epilogue: Epilogue) {
        Self.check(Self.oddShapes, epilogues: [epilogue])
    }

    /// What the models run: the widest C kernel the CPU allows, unless overridden.
    @Test func automaticChoiceFollowsTheCPU() {
        #if arch(x86_64)
            if ProcessInfo.processInfo.environment["LIVENESSD_PORTABLE_KERNELS"] != "1" {
                let expected: ConvolutionKernels.PointwiseKernel =
                    ConvolutionKernels.avx512Available
                    ? .avx512 : ConvolutionKernels.avx2FMAAvailable ? .avx2FMA : .portable
                #expect(ConvolutionKernels.pointwiseChoice == expected)
            } else {
                #expect(ConvolutionKernels.pointwiseChoice == .portable)
            }
        #else
            #expect(!ConvolutionKernels.avx512Available)
            #expect(ConvolutionKernels.pointwiseChoice == .portable)
        #endif
    }
}
