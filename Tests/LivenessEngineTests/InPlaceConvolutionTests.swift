import Foundation
import Testing

@testable import LivenessEngine

/// `ConvolutionKernels.convolveInPlace` (a convolution read through row pointers into phase-split planes)
/// against what it replaces, im2col + the same C pointwise kernel: bit for bit, on the two models' first
/// layers (YuNet 3 → 16 at 320 × 256, MiniFASNet 3 → 32 at 80 × 80, both 3 × 3 stride 2 padding 1) and on
/// odd geometries (stride 1 and 3, 5 × 5 and 1 × 3 kernels, asymmetric and zero padding, sizes around the
/// vector widths), with no activation, ReLU and PReLU. And the AVX exponentials of the softmax against the
/// Swift ones, bit for bit.
@Suite struct InPlaceConvolutionTests {
    struct Case: CustomStringConvertible {
        var channels, height, width, outputs: Int
        var geometry: WindowGeometry
        var description: String {
            "\(self.channels)×\(self.height)×\(self.width) → \(self.outputs), k\(self.geometry.kernelHeight)×"
                + "\(self.geometry.kernelWidth) s\(self.geometry.strideY),\(self.geometry.strideX) pads "
                + "\(self.geometry.padTop),\(self.geometry.padLeft),\(self.geometry.padBottom),\(self.geometry.padRight)"
        }
    }

    static func geometry(
        _ kh: Int, _ kw: Int, _ sy: Int, _ sx: Int, _ t: Int, _ l: Int, _ b: Int, _ r: Int
    )
        -> WindowGeometry
    {
        WindowGeometry(
            kernelHeight: kh, kernelWidth: kw, strideY: sy, strideX: sx, padTop: t, padLeft: l, padBottom: b,
            padRight: r)
    }

    static let cases: [Case] = [
        Case(channels: 3, height: 256, width: 320, outputs: 16, geometry: geometry(3, 3, 2, 2, 1, 1, 1, 1)),
        Case(channels: 3, height: 80, width: 80, outputs: 32, geometry: geometry(3, 3, 2, 2, 1, 1, 1, 1)),
        Case(channels: 3, height: 17, width: 33, outputs: 9, geometry: geometry(3, 3, 2, 2, 1, 1, 1, 1)),
        Case(channels: 2, height: 9, width: 7, outputs: 5, geometry: geometry(3, 3, 1, 1, 1, 1, 1, 1)),
        Case(channels: 4, height: 20, width: 47, outputs: 17, geometry: geometry(5, 5, 2, 2, 2, 2, 2, 2)),
        Case(channels: 1, height: 31, width: 65, outputs: 8, geometry: geometry(3, 3, 3, 3, 0, 2, 1, 0)),
        Case(channels: 3, height: 12, width: 16, outputs: 6, geometry: geometry(1, 3, 1, 2, 0, 0, 0, 1)),
        Case(channels: 2, height: 5, width: 3, outputs: 3, geometry: geometry(3, 3, 2, 2, 0, 0, 0, 0)),
    ]

    enum Activation: CaseIterable { case none, relu, prelu }

    static var kernels: [ConvolutionKernels.PointwiseKernel] {
        (ConvolutionKernels.avx2FMAAvailable ? [.avx2FMA] : []) + (ConvolutionKernels.avx512Available ? [.avx512] : [])
    }

    @Test(arguments: cases)
    func inPlaceEqualsIm2colBitForBit(_ c: Case) throws {
        try #require(!Self.kernels.isEmpty, "no C pointwise kernel on this CPU: nothing to compare")
        var generator = DepthwiseKernelTests.SeededGenerator(state: UInt64(c.channels * 7919 + c.width * 31 + c.height))
        let input = (0..<(c.channels * c.height * c.width)).map { _ in Float.random(in: -4...4, using: &generator) }
        let depth = c.channels * c.geometry.kernelHeight * c.geometry.kernelWidth
        let weights = (0..<(c.outputs * depth)).map { _ in Float.random(in: -1...1, using: &generator) }
        let bias = (0..<c.outputs).map { _ in Float.random(in: -1...1, using: &generator) }
        let slopes = (0..<c.outputs).map { _ in Float.random(in: 0...0.5, using: &generator) }
        let size = c.geometry.outputSize(height: c.height, width: c.width)
        let area = size.height * size.width
        let layout = ConvolutionKernels.PhaseLayout(width: c.width, geometry: c.geometry, outputWidth: size.width)
        for kernel in Self.kernels {
            for activation in Activation.allCases {
                let canary: Float = 12345
                var expected = [Float](repeating: .nan, count: area * c.outputs)
                var actual = [Float](repeating: .nan, count: area * c.outputs + 40)
                for index in expected.count..<actual.count { actual[index] = canary }
                var columns = [Float](repeating: .nan, count: depth * area)
                var phases = [Float](repeating: .nan, count: c.height * c.geometry.strideX * (c.width + 2))
                var planes = [Float](repeating: .nan, count: layout.floats(channels: c.channels, height: c.height))
                let zeros = [Float](repeating: 0, count: layout.rowLength)
                slopes.withUnsafeBufferPointer { slopes in
                    let slopePointer = activation == .prelu ? slopes.baseAddress! : nil
                    ConvolutionKernels.im2col(
                        input, channels: c.channels, height: c.height, width: c.width, geometry: c.geometry,
                        outputHeight: size.height, outputWidth: size.width, phases: &phases, into: &columns)
                    ConvolutionKernels.pointwise(
                        weights: weights, outputs: c.outputs, inputs: depth, input: columns, area: area, bias: bias,
                        slopes: slopePointer, relu: activation == .relu, into: &expected, kernel: kernel)
                    ConvolutionKernels.convolveInPlace(
                        input, channels: c.channels, height: c.height, width: c.width, geometry: c.geometry,
                        outputHeight: size.height, outputWidth: size.width, weights: weights, outputs: c.outputs,
                        bias: bias, slopes: slopePointer, relu: activation == .relu, planes: &planes, zeroRow: zeros,
                        into: &actual, kernel: kernel)
                }
                let differing = (0..<expected.count).filter {
                    expected[$0].bitPattern != actual[$0].bitPattern
                }
                #expect(differing.isEmpty, "\(c), \(kernel), \(activation): \(differing.count) values differ")
                #expect(actual[expected.count...].allSatisfy { $0 == canary }, "\(c): wrote past the output")
                // And the sums are right (not just equal to im2col's): spot-check in Double.
                if activation == .none {
                    let g = c.geometry
                    for (channel, oy, ox) in [(0, 0, 0), (c.outputs - 1, size.height - 1, size.width - 1)] {
                        var sum = 0.0
                        var p = 0
                        for ic in 0..<c.channels {
                            for ky in 0..<g.kernelHeight {
                                for kx in 0..<g.kernelWidth {
                                    let iy = oy * g.strideY - g.padTop + ky
                                    let ix = ox * g.strideX - g.padLeft + kx
                                    if iy >= 0 && iy < c.height && ix >= 0 && ix < c.width {
                                        sum +=
                                            Double(weights[channel * depth + p])
                                            * Double(input[(ic * c.height + iy) * c.width + ix])
                                    }
                                    p += 1
                                }
                            }
                        }
                        sum += Double(bias[channel])
                        let value = Double(actual[channel * area + oy * size.width + ox])
                        #expect(abs(value - sum) <= 1e-4 * max(1, abs(sum)), "\(c): (\(channel), \(oy), \(ox))")
                    }
                }
            }
        }
    }

    @Test func exponentialsEqualTheSwiftOnesBitForBit() throws {
        try #require(!Self.kernels.isEmpty, "no C kernel on this CPU: nothing to compare")
        var generator = DepthwiseKernelTests.SeededGenerator(state: 197)
        for count in [1, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 197] {
            // Scores as attention makes them, plus values that underflow (< −87 after the shift) and a NaN.
            var row = (0..<count).map { _ in Float.random(in: -30...30, using: &generator) }
            if count > 3 { row[1] = -200 }
            if count > 9 { row[9] = .nan }  // (the sum is NaN then, in every kernel)
            var reference = row
            let referenceSum = VectorKernels.exponentiate(&reference, count: count, kernel: .portable)
            for kernel in Self.kernels {
                var values = row
                let sum = VectorKernels.exponentiate(&values, count: count, kernel: kernel)
                // NaN stays NaN (its payload is not compared).
                func same(_ a: Float, _ b: Float) -> Bool { a.bitPattern == b.bitPattern || (a.isNaN && b.isNaN) }
                #expect(same(sum, referenceSum), "\(count), \(kernel): sum")
                #expect(zip(values, reference).allSatisfy { same($0, $1) }, "\(count), \(kernel): values")
            }
            // And they are exponentials: within 2 ulp-ish of Foundation's.
            let maximum = row.filter { !$0.isNaN }.max()!
            for (index, value) in reference.enumerated() where !row[index].isNaN && row[index] - maximum > -80 {
                let exact = Foundation.exp(Double(row[index] - maximum))
                #expect(abs(Double(value) - exact) <= 4e-7 * exact, "\(count): exp(\(row[index] - maximum))")
            }
        }
    }

    /// YuNet's 2 × 2 stride 2 max pooling, eight outputs at a time, against its scalar definition
    /// (`a > b ? a : b`, which also fixes what a NaN gives) on widths around the vector width.
    @Test func maxPool2x2MatchesItsScalarDefinition() {
        let geometry = Self.geometry(2, 2, 2, 2, 0, 0, 0, 0)
        var generator = DepthwiseKernelTests.SeededGenerator(state: 2)
        for (height, width) in [(2, 2), (4, 14), (6, 16), (4, 17), (8, 34), (128, 160), (3, 33)] {
            var input = (0..<(2 * height * width)).map { _ in Float.random(in: -4...4, using: &generator) }
            input[width / 2] = .nan
            let outputHeight = height / 2
            let outputWidth = width / 2
            var output = [Float](repeating: 12345, count: 2 * outputHeight * outputWidth + 8)
            ConvolutionKernels.maxPool(
                input, channels: 2, height: height, width: width, geometry: geometry, outputHeight: outputHeight,
                outputWidth: outputWidth, into: &output)
            func larger(_ a: Float, _ b: Float) -> Float { a > b ? a : b }
            for channel in 0..<2 {
                for oy in 0..<outputHeight {
                    for ox in 0..<outputWidth {
                        let at = { (y: Int, x: Int) in input[(channel * height + y) * width + x] }
                        let expected = larger(
                            larger(at(2 * oy, 2 * ox), at(2 * oy, 2 * ox + 1)),
                            larger(at(2 * oy + 1, 2 * ox), at(2 * oy + 1, 2 * ox + 1)))
                        let value = output[(channel * outputHeight + oy) * outputWidth + ox]
                        #expect(
                            value.bitPattern == expected.bitPattern || (value.isNaN && expected.isNaN),
                            "\(height)×\(width): (\(channel), \(oy), \(ox))")
                    }
                }
            }
            #expect(output[(2 * outputHeight * outputWidth)...].allSatisfy { $0 == 12345 }, "wrote past the output")
        }
    }
}
