import CLivenessKernels
import Foundation

// Kernels for the MobileFaceNet-style CNNs (MiniFASNet) beyond what ConvolutionKernels has: a
// depthwise k × k with any stride and padding, per-channel PReLU, and the squeeze-excitation gate.
// NCHW planes, one image at a time.

enum MobileKernels {
    /// Depthwise convolution (one k × k filter per channel, `weights` [channels, k, k]), any stride,
    /// symmetric zero padding, plus `bias[c]`. Each output row is built by k² shifted multiply-adds
    /// over its valid columns, so the window never tests bounds in the inner loop; stride s first
    /// splits each input row into its s column phases (all rows of the plane at once) so the
    /// inner loop reads contiguously and vectorises (`phases`: height · (width + stride) floats). A
    /// window that covers the whole plane (conv_6_dw: 5 × 5 → 1 × 1) is one dot product per channel.
    /// 3 × 3 stride 2 padding 1 (the downsampling blocks) runs `clk_depthwise3x3s2_avx2_fma` where
    /// `ConvolutionKernels.depthwiseUsesAVX2FMA` (8 output columns per step from two loads per input
    /// row, split into even and odd columns in registers, no phase-split pass); `kernel` chooses as for
    /// `ConvolutionKernels.depthwise3x3`. `output` must not overlap `input`.
    static func depthwise(
        _ input: UnsafePointer<Float>, channels: Int, height: Int, width: Int, kernel k: Int, stride s: Int,
        padding p: Int, weights: UnsafePointer<Float>, bias: UnsafePointer<Float>, phases: UnsafeMutablePointer<Float>,
        into output: UnsafeMutablePointer<Float>, kernel choice: ConvolutionKernels.DepthwiseKernel = .automatic
    ) {
        let outputHeight = (height + 2 * p - k) / s + 1
        let outputWidth = (width + 2 * p - k) / s + 1
        let area = height * width
        let outputArea = outputHeight * outputWidth
        let phaseWidth = (width + s - 1) / s
        if p == 0 && k == height && k == width {
            for channel in 0..<channels {
                let plane = input + channel * area
                let w = weights + channel * area
                var sum: Float = 0
                for index in 0..<area { sum += w[index] * plane[index] }
                output[channel] = bias[channel] + sum
            }
            return
        }
        if s == 2 && k == 3 && p == 1 {
            let useC: Bool
            switch choice {
            case .automatic: useC = ConvolutionKernels.depthwiseUsesAVX2FMA
            case .portable: useC = false
            case .avx2FMA, .avx512:  // (stride 2 has no AVX-512 kernel: the AVX2 one)
                precondition(
                    ConvolutionKernels.avx2FMAAvailable, "the AVX2 + FMA depthwise kernel needs a CPU with AVX2 and FMA"
                )
                useC = true
            }
            if useC {
                // The rows above and below the image: `phases` is free scratch on this path.
                phases.update(repeating: 0, count: width)
                clk_depthwise3x3s2_avx2_fma(input, channels, height, width, weights, bias, phases, output)
                return
            }
        }
        if s == 2 && k == 3 && p == 1 && width % 2 == 0 && height % 2 == 0 {
            self.depthwise3x3Stride2(
                input, channels: channels, height: height, width: width, weights: weights, bias: bias, phases: phases,
                into: output)
            return
        }
        let splitRow = s * phaseWidth
        for channel in 0..<channels {
            var plane = input + channel * area
            if s > 1 {
                for iy in 0..<height {
                    let source = plane + iy * width
                    let target = phases + iy * splitRow
                    for phase in 0..<s {
                        var x = phase
                        var j = 0
                        while x < width {
                            target[phase * phaseWidth + j] = source[x]
                            x += s
                            j += 1
                        }
                    }
                }
                plane = UnsafePointer(phases)
            }
            let rowLength = s > 1 ? splitRow : width
            let w = weights + channel * k * k
            let target = output + channel * outputArea
            target.update(repeating: bias[channel], count: outputArea)
            for oy in 0..<outputHeight {
                let line = target + oy * outputWidth
                for ky in 0..<k {
                    let iy = oy * s - p + ky
                    guard iy >= 0 && iy < height else { continue }
                    let row = plane + iy * rowLength
                    let rowPhaseWidth = phaseWidth
                    for kx in 0..<k {
                        let weight = w[ky * k + kx]
                        // Valid output columns: ix = ox·s + shift must lie in 0..<width.
                        let shift = kx - p
                        let first = min(max((-shift + s - 1) / s, 0), outputWidth)
                        let end = width - 1 - shift < 0 ? first : min((width - 1 - shift) / s + 1, outputWidth)
                        guard first < end else { continue }
                        // ix = (ox + q)·s + r: phase r, column ox + q of that phase.
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

    /// 3 × 3, stride 2, padding 1 on even sides (the MiniFASNet downsampling blocks). Each input row is
    /// split into its even columns E and, after one zero (the left padding), its odd columns O, so
    /// output column x reads O[x − 1], E[x], O[x]: nine full-length multiply-adds per output row with
    /// no edge cases, which the compiler vectorises. `phases`: (height + 1) · (width + 1) floats.
    private static func depthwise3x3Stride2(
        _ input: UnsafePointer<Float>, channels: Int, height: Int, width: Int, weights: UnsafePointer<Float>,
        bias: UnsafePointer<Float>, phases: UnsafeMutablePointer<Float>, into output: UnsafeMutablePointer<Float>
    ) {
        let half = width / 2
        let rowLength = width + 1
        let outputHeight = height / 2
        let zero = phases + height * rowLength
        zero.update(repeating: 0, count: rowLength)
        for channel in 0..<channels {
            let plane = input + channel * height * width
            for iy in 0..<height {
                let source = plane + iy &* width
                let even = phases + iy &* rowLength
                let odd = even + half
                odd[0] = 0
                for j in 0..<half {
                    even[j] = source[2 &* j]
                    odd[j &+ 1] = source[2 &* j &+ 1]
                }
            }
            let w = weights + channel * 9
            let (w0, w1, w2, w3, w4, w5, w6, w7, w8) = (w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8])
            let b = bias[channel]
            let target = output + channel * outputHeight * half
            for oy in 0..<outputHeight {
                let r0 = UnsafePointer(oy == 0 ? zero : phases + (2 * oy - 1) * rowLength)
                let r1 = UnsafePointer(phases + 2 * oy * rowLength)
                let r2 = UnsafePointer(phases + (2 * oy + 1) * rowLength)
                let line = target + oy * half
                for x in 0..<half {
                    var sum = b + w0 * r0[half &+ x] + w1 * r0[x] + w2 * r0[half &+ x &+ 1]
                    sum += w3 * r1[half &+ x] + w4 * r1[x] + w5 * r1[half &+ x &+ 1]
                    sum += w6 * r2[half &+ x] + w7 * r2[x] + w8 * r2[half &+ x &+ 1]
                    line[x] = sum
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
