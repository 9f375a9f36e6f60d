import Foundation

// Kernels for the MobileFaceNet-style CNNs (MiniFASNet) beyond what ConvolutionKernels has: a
// depthwise k × k with any stride and padding, per-channel PReLU, and the squeeze-excitation gate.
// NCHW planes, one image at a time.

enum MobileKernels {
    /// Depthwise convolution (one k × k filter per channel, `weights` [channels, k, k]), any stride,
    /// symmetric zero padding, plus `bias[c]`. Each output row is built by k² shifted multiply-adds
    /// over its valid columns, so the window never tests bounds in the inner loop; stride 2 first
    /// splits each input row into its even and odd columns (`phases`, width + 1 floats) so the
    /// inner loop reads contiguously and vectorises. `output` must not overlap `input`.
    static func depthwise(
        _ input: UnsafePointer<Float>, channels: Int, height: Int, width: Int, kernel k: Int, stride s: Int,
        padding p: Int, weights: UnsafePointer<Float>, bias: UnsafePointer<Float>, phases: UnsafeMutablePointer<Float>,
        into output: UnsafeMutablePointer<Float>
    ) {
        let outputHeight = (height + 2 * p - k) / s + 1
        let outputWidth = (width + 2 * p - k) / s + 1
        let area = height * width
        let outputArea = outputHeight * outputWidth
        let phaseWidth = (width + s - 1) / s
        // Valid output columns for each kx: ix = ox·s − p + kx must lie in 0..<width.
        var firstColumn = [Int](repeating: 0, count: k)
        var endColumn = [Int](repeating: 0, count: k)
        for kx in 0..<k {
            let shift = kx - p
            firstColumn[kx] = min(max((-shift + s - 1) / s, 0), outputWidth)
            endColumn[kx] = width - 1 - shift < 0 ? firstColumn[kx] : min((width - 1 - shift) / s + 1, outputWidth)
            endColumn[kx] = max(endColumn[kx], firstColumn[kx])
        }
        for channel in 0..<channels {
            let plane = input + channel * area
            let w = weights + channel * k * k
            let target = output + channel * outputArea
            target.update(repeating: bias[channel], count: outputArea)
            for oy in 0..<outputHeight {
                let line = target + oy * outputWidth
                for ky in 0..<k {
                    let iy = oy * s - p + ky
                    guard iy >= 0 && iy < height else { continue }
                    var row = plane + iy * width
                    var rowPhaseWidth = 0
                    if s > 1 {
                        for phase in 0..<s {
                            var x = phase
                            var j = 0
                            while x < width {
                                phases[phase * phaseWidth + j] = row[x]
                                x += s
                                j += 1
                            }
                        }
                        row = UnsafePointer(phases)
                        rowPhaseWidth = phaseWidth
                    }
                    for kx in 0..<k {
                        let weight = w[ky * k + kx]
                        let first = firstColumn[kx]
                        let end = endColumn[kx]
                        guard first < end else { continue }
                        // ix = ox·s + shift = (ox + q)·s + r: phase r, column ox + q of that phase.
                        let shift = kx - p
                        let source: UnsafePointer<Float>
                        if s > 1 {
                            let r = (shift % s + s) % s
                            let q = (shift - r) / s
                            source = row + r * rowPhaseWidth + q
                        } else {
                            source = row + shift
                        }
                        for ox in first..<end { line[ox] += weight * source[ox] }
                    }
                }
            }
        }
    }

    /// x = x > 0 ? x : slope[c]·x over `channels` planes of `area` values, eight lanes at a time.
    static func prelu(_ data: UnsafeMutablePointer<Float>, channels: Int, area: Int, slopes: UnsafePointer<Float>) {
        let vectors = area / 8
        let zero = SIMD8<Float>(repeating: 0)
        for channel in 0..<channels {
            let plane = data + channel * area
            let raw = UnsafeMutableRawPointer(plane)
            let slope = slopes[channel]
            let slopeVector = SIMD8<Float>(repeating: slope)
            for vector in 0..<vectors {
                let value = raw.loadUnaligned(fromByteOffset: vector * 32, as: SIMD8<Float>.self)
                raw.storeBytes(
                    of: value.replacing(with: value * slopeVector, where: value .< zero), toByteOffset: vector * 32,
                    as: SIMD8<Float>.self)
            }
            for index in (vectors * 8)..<area where plane[index] < 0 { plane[index] *= slope }
        }
    }

    /// Squeeze-excitation on `channels` planes, in place: mean of each plane → fc1 (+ folded bn1) →
    /// ReLU → fc2 (+ folded bn2) → sigmoid → each plane times its gate. `pooled` takes channels floats,
    /// `hidden` reduced floats.
    static func squeezeExcite(
        _ data: UnsafeMutablePointer<Float>, channels: Int, area: Int, reduced: Int,
        fc1: UnsafePointer<Float>, bias1: UnsafePointer<Float>, fc2: UnsafePointer<Float>, bias2: UnsafePointer<Float>,
        pooled: UnsafeMutablePointer<Float>, hidden: UnsafeMutablePointer<Float>
    ) {
        let inverseArea = 1 / Float(area)
        for channel in 0..<channels {
            let plane = data + channel * area
            var sum: Float = 0
            for index in 0..<area { sum += plane[index] }
            pooled[channel] = sum * inverseArea
        }
        hidden.update(from: bias1, count: reduced)
        BLAS.gemv(m: reduced, n: channels, a: fc1, lda: channels, x: pooled, beta: 1, y: hidden)
        for index in 0..<reduced where !(hidden[index] > 0) { hidden[index] = 0 }
        pooled.update(from: bias2, count: channels)
        BLAS.gemv(m: channels, n: reduced, a: fc2, lda: reduced, x: hidden, beta: 1, y: pooled)
        for channel in 0..<channels {
            let gate = 1 / (1 + Foundation.exp(-pooled[channel]))
            let plane = data + channel * area
            for index in 0..<area { plane[index] *= gate }
        }
    }

    /// a += b over `count` floats.
    static func add(_ a: UnsafeMutablePointer<Float>, _ b: UnsafePointer<Float>, count: Int) {
        for index in 0..<count { a[index] += b[index] }
    }

    /// data[c][…] = input[c][…] + bias[c]: the residual, onto which the project GEMM accumulates.
    static func addBias(
        _ input: UnsafePointer<Float>, channels: Int, area: Int, bias: UnsafePointer<Float>,
        into data: UnsafeMutablePointer<Float>
    ) {
        for channel in 0..<channels {
            let source = input + channel * area
            let target = data + channel * area
            let b = bias[channel]
            for index in 0..<area { target[index] = source[index] + b }
        }
    }
}
