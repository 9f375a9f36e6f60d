// Element-wise kernels the transformer needs between GEMMs. Written with SIMD8 so the compiler
// emits vector code on any x86-64/arm64 baseline; BLAS has no softmax, layer norm or exp.

/// exp for eight lanes: Cephes-style range reduction (x = n·ln2 + r) and a degree-6 polynomial,
/// within 2 ulp of `expf` on [-87, 88]; inputs below -87 give 0 (what softmax needs).
@inline(__always)
func exp8(_ input: SIMD8<Float>) -> SIMD8<Float> {
    let x = input.clamped(lowerBound: SIMD8(repeating: -87.0), upperBound: SIMD8(repeating: 88.0))
    let n = (x * 1.442_695_04).rounded(.toNearestOrEven)
    var r = x - n * 0.693_359_375
    r = r + n * 2.121_944_4e-4
    var p = SIMD8<Float>(repeating: 1.987_569_1e-4)
    p = p * r + 1.398_199_9e-3
    p = p * r + 8.333_452e-3
    p = p * r + 4.166_579_6e-2
    p = p * r + 1.666_666_5e-1
    p = p * r + 5.000_000_1e-1
    p = p * (r * r) + r + 1
    let exponent = (SIMD8<Int32>(n, rounding: .toNearestOrEven) &+ 127) &<< 23
    let scaled = p * unsafeBitCast(exponent, to: SIMD8<Float>.self)
    return scaled.replacing(with: 0, where: input .< -87.0)
}

enum VectorKernels {
    /// Softmax over each of `rows` rows of length `count` (row stride `stride`), in place.
    static func softmaxRows(_ data: UnsafeMutablePointer<Float>, rows: Int, count: Int, stride: Int) {
        for row in 0..<rows {
            self.softmax(data + row * stride, count: count)
        }
    }

    static func softmax(_ row: UnsafeMutablePointer<Float>, count: Int) {
        var maximum = -Float.infinity
        for index in 0..<count { maximum = max(maximum, row[index]) }
        let vectors = count / 8
        var sums = SIMD8<Float>(repeating: 0)
        let shift = SIMD8<Float>(repeating: maximum)
        let raw = UnsafeMutableRawPointer(row)
        for vector in 0..<vectors {
            let offset = vector * 8 * MemoryLayout<Float>.stride
            let value = exp8(raw.loadUnaligned(fromByteOffset: offset, as: SIMD8<Float>.self) - shift)
            raw.storeBytes(of: value, toByteOffset: offset, as: SIMD8<Float>.self)
            sums += value
        }
        var sum = sums.sum()
        if vectors * 8 < count {
            var tail = SIMD8<Float>(repeating: -Float.infinity)
            for index in (vectors * 8)..<count { tail[index - vectors * 8] = row[index] - maximum }
            let value = exp8(tail)
            for index in (vectors * 8)..<count {
                row[index] = value[index - vectors * 8]
                sum += value[index - vectors * 8]
            }
        }
        let scale = 1 / sum
        for index in 0..<count { row[index] *= scale }
    }

    /// out[r] = LayerNorm(input[r]) · gamma + beta for each row of width `width`.
    static func layerNormRows(
        _ input: UnsafePointer<Float>, _ output: UnsafeMutablePointer<Float>, rows: Int, width: Int,
        gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, epsilon: Float
    ) {
        let inverseWidth = 1 / Float(width)
        for row in 0..<rows {
            let source = input + row * width
            let destination = output + row * width
            var sum: Float = 0
            for index in 0..<width { sum += source[index] }
            let mean = sum * inverseWidth
            var squares: Float = 0
            for index in 0..<width {
                let centred = source[index] - mean
                squares += centred * centred
            }
            let inverseDeviation = 1 / (squares * inverseWidth + epsilon).squareRoot()
            for index in 0..<width {
                destination[index] = (source[index] - mean) * inverseDeviation * gamma[index] + beta[index]
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
