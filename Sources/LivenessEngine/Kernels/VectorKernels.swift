import CLivenessKernels

// Element-wise kernels the transformer needs between GEMMs. Written with SIMD8 so the compiler
// emits vector code on any x86-64/arm64 baseline; BLAS has no softmax, layer norm or exp.

/// exp for eight lanes of x ≤ 0 (softmax after subtracting the row maximum): Cephes-style range
/// reduction (x = n·ln2 + r) and a degree-6 polynomial, within 2 ulp of `expf`; x < -87 gives 0.
/// n is rounded with the 1.5·2²³ "magic number" so it never goes through a float→int conversion
/// (the generic SIMD conversion initialisers are not specialised and cost more than the exp).
@inline(__always)
func expNonPositive8(_ input: SIMD8<Float>) -> SIMD8<Float> {
    let magic = SIMD8<Float>(repeating: 12_582_912.0)
    // No clamp: lanes below -87 are replaced by 0 at the end (SIMD clamped() is not specialised).
    let x = input
    let shifted = x * 1.442_695_04 + magic  // low mantissa bits now hold round(x·log2 e)
    let n = shifted - magic
    var r = x - n * 0.693_359_375
    r = r + n * 2.121_944_4e-4
    var p = SIMD8<Float>(repeating: 1.987_569_1e-4)
    p = p * r + 1.398_199_9e-3
    p = p * r + 8.333_452e-3
    p = p * r + 4.166_579_6e-2
    p = p * r + 1.666_666_5e-1
    p = p * r + 5.000_000_1e-1
    p = p * (r * r) + r + 1
    let integer = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- unsafeBitCast(magic, to: SIMD8<Int32>.self)
    let scale = unsafeBitCast((integer &+ 127) &<< 23, to: SIMD8<Float>.self)
    return (p * scale).replacing(with: 0, where: input .< -87.0)
}

enum VectorKernels {
    /// exp(x − max) over each of `rows` rows of length `count` (row stride `stride`), in place,
    /// writing 1 / Σ per row to `inverseSums`. The caller applies that scale to the (narrower)
    /// product P·V instead of to P: softmax(S)·V = diag(1/Σ)·(exp(S − max)·V).
    static func exponentiateRows(
        _ data: UnsafeMutablePointer<Float>, rows: Int, count: Int, stride: Int,
        inverseSums: UnsafeMutablePointer<Float>
    ) {
        for row in 0..<rows {
            inverseSums[row] = 1 / self.exponentiate(data + row * stride, count: count)
        }
    }

    /// Multiplies each of `rows` rows (`width` values, `stride` apart) by its factor.
    static func scaleRows(
        _ data: UnsafeMutablePointer<Float>, rows: Int, width: Int, stride: Int, factors: UnsafePointer<Float>
    ) {
        for row in 0..<rows {
            let line = data + row * stride
            let factor = factors[row]
            for index in 0..<width { line[index] *= factor }
        }
    }

    static func softmax(_ row: UnsafeMutablePointer<Float>, count: Int) {
        let scale = 1 / self.exponentiate(row, count: count)
        for index in 0..<count { row[index] *= scale }
    }

    /// row[i] = exp(row[i] − max(row)); returns the sum. The exponentials of whole groups of eight run in
    /// the C kernel of the pointwise convolution's instruction set (AVX-512 or AVX2, same results bit for bit:
    /// ExponentialAVX.c), else in Swift; `kernel` names one for tests.
    static func exponentiate(
        _ row: UnsafeMutablePointer<Float>, count: Int, kernel: ConvolutionKernels.PointwiseKernel = .automatic
    ) -> Float {
        let vectors = count / 8
        let tailStart = vectors * 8
        let raw = UnsafeMutableRawPointer(row)
        let step = 8 * MemoryLayout<Float>.stride
        var maxima = SIMD8<Float>(repeating: -.infinity)
        for vector in 0..<vectors {
            let value = raw.loadUnaligned(fromByteOffset: vector * step, as: SIMD8<Float>.self)
            maxima = maxima.replacing(with: value, where: value .> maxima)
        }
        var maximum = maxima.max()
        for index in tailStart..<count { maximum = max(maximum, row[index]) }
        var sums = SIMD8<Float>(repeating: 0)
        switch kernel == .automatic ? ConvolutionKernels.pointwiseChoice : kernel {
        case .avx512:
            withUnsafeMutablePointer(to: &sums) {
                $0.withMemoryRebound(to: Float.self, capacity: 8) { clk_exp_shifted_avx512(row, vectors, maximum, $0) }
            }
        case .avx2FMA:
            withUnsafeMutablePointer(to: &sums) {
                $0.withMemoryRebound(to: Float.self, capacity: 8) {
                    clk_exp_shifted_avx2_fma(row, vectors, maximum, $0)
                }
            }
        case .portable, .automatic:
            let shift = SIMD8<Float>(repeating: maximum)
            for vector in 0..<vectors {
                let value = expNonPositive8(
                    raw.loadUnaligned(fromByteOffset: vector * step, as: SIMD8<Float>.self) - shift)
                raw.storeBytes(of: value, toByteOffset: vector * step, as: SIMD8<Float>.self)
                sums += value
            }
        }
        var sum = sums.sum()
        if tailStart < count {
            var tail = SIMD8<Float>(repeating: -.infinity)
            for index in tailStart..<count { tail[index - tailStart] = row[index] - maximum }
            let value = expNonPositive8(tail)
            for index in tailStart..<count {
                row[index] = value[index - tailStart]
                sum += value[index - tailStart]
            }
        }
        return sum
    }

    /// out[r] = LayerNorm(input[r]) · gamma + beta for each row of width `width`.
    static func layerNormRows(
        _ input: UnsafePointer<Float>, _ output: UnsafeMutablePointer<Float>, rows: Int, width: Int,
        gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, epsilon: Float
    ) {
        let inverseWidth = 1 / Float(width)
        let vectors = width / 8
        let step = 8 * MemoryLayout<Float>.stride
        let gammaRaw = UnsafeRawPointer(gamma)
        let betaRaw = UnsafeRawPointer(beta)
        for row in 0..<rows {
            let source = UnsafeRawPointer(input + row * width)
            let destination = UnsafeMutableRawPointer(output + row * width)
            var sums = SIMD8<Float>(repeating: 0)
            for vector in 0..<vectors {
                sums += source.loadUnaligned(fromByteOffset: vector * step, as: SIMD8<Float>.self)
            }
            var sum = sums.sum()
            for index in (vectors * 8)..<width { sum += input[row * width + index] }
            let mean = sum * inverseWidth
            let meanVector = SIMD8<Float>(repeating: mean)
            var squareSums = SIMD8<Float>(repeating: 0)
            for vector in 0..<vectors {
                let centred = source.loadUnaligned(fromByteOffset: vector * step, as: SIMD8<Float>.self) - meanVector
                squareSums += centred * centred
            }
            var squares = squareSums.sum()
            for index in (vectors * 8)..<width {
                let centred = input[row * width + index] - mean
                squares += centred * centred
            }
            let inverseDeviation = 1 / (squares * inverseWidth + epsilon).squareRoot()
            let scale = SIMD8<Float>(repeating: inverseDeviation)
            for vector in 0..<vectors {
                let offset = vector * step
                let value = source.loadUnaligned(fromByteOffset: offset, as: SIMD8<Float>.self)
                let normalised =
                    (value - meanVector) * scale
                    * gammaRaw.loadUnaligned(fromByteOffset: offset, as: SIMD8<Float>.self)
                    + betaRaw.loadUnaligned(fromByteOffset: offset, as: SIMD8<Float>.self)
                destination.storeBytes(of: normalised, toByteOffset: offset, as: SIMD8<Float>.self)
            }
            for index in (vectors * 8)..<width {
                output[row * width + index] =
                    (input[row * width + index] - mean) * inverseDeviation * gamma[index] + beta[index]
            }
        }
    }

    /// Writes `bias` into every row: the GEMM that follows accumulates onto it (beta = 1).
    static func fillRows(
        _ data: UnsafeMutablePointer<Float>, rows: Int, width: Int, stride: Int, bias: UnsafePointer<Float>
    ) {
        for row in 0..<rows {
            (data + row * stride).update(from: bias, count: width)
        }
    }

    /// out[r] = input[r] + bias: the residual branch, onto which a GEMM then accumulates.
    static func addRows(
        _ input: UnsafePointer<Float>, inputStride: Int, bias: UnsafePointer<Float>,
        _ output: UnsafeMutablePointer<Float>, rows: Int, width: Int
    ) {
        for row in 0..<rows {
            let source = input + row * inputStride
            let destination = output + row * width
            for index in 0..<width { destination[index] = source[index] + bias[index] }
        }
    }

    static func relu(_ data: UnsafeMutablePointer<Float>, count: Int) {
        for index in 0..<count { data[index] = max(data[index], 0) }
    }
}
