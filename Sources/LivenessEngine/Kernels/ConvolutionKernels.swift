import CLivenessKernels
import Foundation

// Kernels the CNN interpreter needs, on NCHW planes (batch 1). SIMD for the loops that dominate
// (depthwise 3×3, bias + ReLU), the depthwise 3×3 and the pointwise 1×1 in C (AVX2 + FMA, AVX-512
// for 1×1) where the CPU has it; plain loops for the small ones.

/// Geometry of one 2-D convolution or pooling window (dilation 1).
struct WindowGeometry: Equatable {
    var kernelHeight, kernelWidth: Int
    var strideY, strideX: Int
    var padTop, padLeft, padBottom, padRight: Int

    func outputSize(height: Int, width: Int) -> (height: Int, width: Int) {
        func size(_ input: Int, _ pads: Int, _ kernel: Int, _ stride: Int) -> Int {
            input + pads < kernel ? 0 : (input + pads - kernel) / stride + 1
        }
        return (
            size(height, self.padTop + self.padBottom, self.kernelHeight, self.strideY),
            size(width, self.padLeft + self.padRight, self.kernelWidth, self.strideX)
        )
    }
}

enum ConvolutionKernels {
    /// Unfolds `channels` planes into rows of (channel, ky, kx) × output pixels, zero outside the image:
    /// the convolution is then one GEMM per group. With a horizontal stride s, each input row is first
    /// split into its s phases (columns j·s + r) in `phases` (height · s · ⌈width / s⌉ floats), so every
    /// line becomes a contiguous copy: the strided gather straight from the image measured 2–3× slower.
    static func im2col(
        _ input: UnsafePointer<Float>, channels: Int, height: Int, width: Int, geometry g: WindowGeometry,
        outputHeight: Int, outputWidth: Int, phases: UnsafeMutablePointer<Float>,
        into columns: UnsafeMutablePointer<Float>
    ) {
        let s = g.strideX
        let phaseWidth = (width + s - 1) / s
        let outputArea = outputHeight * outputWidth
        var row = columns
        for channel in 0..<channels {
            var plane = input + channel * height * width
            var planeWidth = width
            if s > 1 {
                for iy in 0..<height {
                    let source = plane + iy * width
                    let target = phases + iy * s * phaseWidth
                    for phase in 0..<s {
                        let line = target + phase * phaseWidth
                        var x = phase
                        for j in 0..<phaseWidth where x < width {
                            line[j] = source[x]
                            x += s
                        }
                    }
                }
                plane = UnsafePointer(phases)
                planeWidth = s * phaseWidth
            }
            for ky in 0..<g.kernelHeight {
                for kx in 0..<g.kernelWidth {
                    // Output columns whose input column ix = ox·s + shift lies inside the image;
                    // ix = (ox + q)·s + r, so they are phase r from column q on.
                    let shift = kx - g.padLeft
                    let first = min(max((-shift + s - 1) / s, 0), outputWidth)
                    let end = width - 1 - shift < 0 ? first : min(max((width - 1 - shift) / s + 1, first), outputWidth)
                    let r = (shift % s + s) % s
                    let q = (shift - r) / s
                    for oy in 0..<outputHeight {
                        let line = row + oy * outputWidth
                        let iy = oy * g.strideY - g.padTop + ky
                        guard iy >= 0 && iy < height else {
                            line.update(repeating: 0, count: outputWidth)
                            continue
                        }
                        let source = plane + iy * planeWidth + r * phaseWidth + q
                        line.update(repeating: 0, count: first)
                        (line + first).update(from: source + first, count: end - first)
                        (line + end).update(repeating: 0, count: outputWidth - end)
                    }
                    row += outputArea
                }
            }
        }
    }

    /// data[c][…] = bias[c] over `channels` planes of `area` values: the GEMM then accumulates onto it
    /// (beta = 1), which spares OpenBLAS's separate pass that zeroes C for beta = 0.
    static func fillBias(_ data: UnsafeMutablePointer<Float>, channels: Int, area: Int, bias: UnsafePointer<Float>) {
        for channel in 0..<channels { (data + channel * area).update(repeating: bias[channel], count: area) }
    }

    /// data = max(data, 0), eight lanes at a time (Swift's scalar max orders NaNs, at a cost).
    static func relu(_ data: UnsafeMutablePointer<Float>, count: Int) {
        let vectors = count / 8
        let raw = UnsafeMutableRawPointer(data)
        let zero = SIMD8<Float>(repeating: 0)
        for vector in 0..<vectors {
            let value = raw.loadUnaligned(fromByteOffset: vector * 32, as: SIMD8<Float>.self)
            raw.storeBytes(
                of: value.replacing(with: zero, where: value .< zero), toByteOffset: vector * 32, as: SIMD8<Float>.self)
        }
        for index in (vectors * 8)..<count where !(data[index] > 0) { data[index] = 0 }
    }

    /// Which depthwise 3×3 kernel runs. `automatic` is what the interpreter uses; tests name the other
    /// two to compare them on the same inputs.
    enum DepthwiseKernel {
        /// `avx512` when `depthwiseUsesAVX512`, else `avx2FMA` when `depthwiseUsesAVX2FMA`, else `portable`.
        case automatic
        /// The Swift kernel below (SSE2 on x86-64, NEON on arm64).
        case portable
        /// `clk_depthwise3x3_avx2_fma` in CLivenessKernels; only where `avx2FMAAvailable`.
        case avx2FMA
        /// `clk_depthwise3x3_avx512` (the AVX2 kernel in 16 lanes, the same results bit for bit; rows under 16
        /// wide go to the AVX2 one); only where `avx512Available`.
        case avx512
    }

    /// Whether this CPU and OS run AVX2 + FMA code (always false off x86-64): asked once.
    static let avx2FMAAvailable = clk_avx2_fma_available()

    /// Whether `depthwise3x3` takes the C kernel, decided once: where AVX2 + FMA are available and
    /// `LIVENESSD_PORTABLE_KERNELS` is not `1` (which forces the Swift kernel, to compare or rule it out).
    static let depthwiseUsesAVX2FMA =
        Self.avx2FMAAvailable && ProcessInfo.processInfo.environment["LIVENESSD_PORTABLE_KERNELS"] != "1"

    /// Whether it takes the AVX-512 one among those: where AVX-512F is available and the pointwise kernel is
    /// AVX-512 too (`LIVENESSD_PORTABLE_KERNELS=avx2` keeps both at AVX2).
    static let depthwiseUsesAVX512 = Self.depthwiseUsesAVX2FMA && Self.pointwiseChoice == .avx512

    /// Depthwise 3×3, stride 1, padding 1 (one filter per channel), bias and optional ReLU fused.
    /// Direct loops: as a GEMM each channel would be a 1 × 9 by 9 × area product, all overhead.
    /// Two output rows per pass share the loads of their two common input rows. On x86-64 with AVX2
    /// and FMA this runs the C kernel (8 lanes, fused multiply-add; see docs/ARCHITECTURE.md), else the
    /// Swift one, where SIMD4 keeps the nine weights in registers on the SSE2 baseline (SIMD8 weights
    /// alone would take 18 of its 16). `zeroRow` (width zeros) stands in for rows above and below the
    /// image, `spareRow` (width floats) takes the unused second row when the height is odd. `output`
    /// must not overlap `input`.
    static func depthwise3x3(
        _ input: UnsafePointer<Float>, channels: Int, height: Int, width: Int, weights: UnsafePointer<Float>,
        bias: UnsafePointer<Float>, relu: Bool, zeroRow: UnsafePointer<Float>, spareRow: UnsafeMutablePointer<Float>,
        into output: UnsafeMutablePointer<Float>, kernel: DepthwiseKernel = .automatic
    ) {
        let choice: DepthwiseKernel =
            kernel != .automatic
            ? kernel : self.depthwiseUsesAVX512 ? .avx512 : self.depthwiseUsesAVX2FMA ? .avx2FMA : .portable
        switch choice {
        case .avx512:
            precondition(self.avx512Available, "the AVX-512 depthwise kernel needs a CPU with AVX-512F")
            clk_depthwise3x3_avx512(input, channels, height, width, weights, bias, relu, zeroRow, spareRow, output)
            return
        case .avx2FMA:
            precondition(self.avx2FMAAvailable, "the AVX2 + FMA depthwise kernel needs a CPU with AVX2 and FMA")
            clk_depthwise3x3_avx2_fma(input, channels, height, width, weights, bias, relu, zeroRow, spareRow, output)
            return
        case .portable, .automatic:
            break
        }
        let area = height * width
        let floor: Float = relu ? 0 : -.infinity
        for channel in 0..<channels {
            let plane = input + channel * area
            let w = weights + channel * 9
            let b = bias[channel]
            func row(_ y: Int) -> UnsafePointer<Float> { y >= 0 && y < height ? plane + y * width : zeroRow }
            var y = 0
            while y < height {
                let rows = (row(y - 1), row(y), row(y + 1), row(y + 2))
                let first = output + channel * area + y * width
                let second = y + 1 < height ? first + width : spareRow
                if width >= 6 {
                    self.depthwiseRowPair(rows, width: width, w: w, bias: b, floor: floor, first, second)
                } else {
                    for x in 0..<width {
                        var upper = b
                        var lower = b
                        for dx in -1...1 where x + dx >= 0 && x + dx < width {
                            let i = x + dx
                            upper += w[dx + 1] * rows.0[i] + w[dx + 4] * rows.1[i] + w[dx + 7] * rows.2[i]
                            lower += w[dx + 1] * rows.1[i] + w[dx + 4] * rows.2[i] + w[dx + 7] * rows.3[i]
                        }
                        first[x] = upper > floor ? upper : floor
                        second[x] = lower > floor ? lower : floor
                    }
                }
                y += 2
            }
        }
    }

    /// Output rows y and y + 1 from input rows y − 1 … y + 2 (`rows`), width ≥ 6.
    @inline(__always)
    private static func depthwiseRowPair(
        _ rows: (UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>), width: Int,
        w: UnsafePointer<Float>, bias b: Float, floor: Float, _ first: UnsafeMutablePointer<Float>,
        _ second: UnsafeMutablePointer<Float>
    ) {
        let (r0, r1, r2, r3) = rows
        let last = width - 1
        // The edge columns, where the window leaves the image.
        func edge(_ x: Int, _ a: Int, _ c: Int, _ ka: Int, _ kc: Int) {
            let upper =
                b + w[ka] * r0[a] + w[kc] * r0[c] + w[ka + 3] * r1[a] + w[kc + 3] * r1[c] + w[ka + 6] * r2[a]
                + w[kc + 6] * r2[c]
            let lower =
                b + w[ka] * r1[a] + w[kc] * r1[c] + w[ka + 3] * r2[a] + w[kc + 3] * r2[c] + w[ka + 6] * r3[a]
                + w[kc + 6] * r3[c]
            first[x] = upper > floor ? upper : floor
            second[x] = lower > floor ? lower : floor
        }
        edge(0, 0, 1, 1, 2)
        edge(last, last - 1, last, 0, 1)
        let w0 = SIMD4<Float>(repeating: w[0])
        let w1 = SIMD4<Float>(repeating: w[1])
        let w2 = SIMD4<Float>(repeating: w[2])
        let w3 = SIMD4<Float>(repeating: w[3])
        let w4 = SIMD4<Float>(repeating: w[4])
        let w5 = SIMD4<Float>(repeating: w[5])
        let w6 = SIMD4<Float>(repeating: w[6])
        let w7 = SIMD4<Float>(repeating: w[7])
        let w8 = SIMD4<Float>(repeating: w[8])
        let shift = SIMD4<Float>(repeating: b)
        let lowest = SIMD4<Float>(repeating: floor)
        let p0 = UnsafeRawPointer(r0)
        let p1 = UnsafeRawPointer(r1)
        let p2 = UnsafeRawPointer(r2)
        let p3 = UnsafeRawPointer(r3)
        let o0 = UnsafeMutableRawPointer(first)
        let o1 = UnsafeMutableRawPointer(second)
        // Columns 1 … width − 2, four at a time; the last block overlaps the one before it. Each input
        // row is loaded once and feeds both outputs at once (measured 10–20 % faster than loading all first).
        var x = 1
        while true {
            let offset = x * 4
            var left = p0.loadUnaligned(fromByteOffset: offset - 4, as: SIMD4<Float>.self)
            var centre = p0.loadUnaligned(fromByteOffset: offset, as: SIMD4<Float>.self)
            var right = p0.loadUnaligned(fromByteOffset: offset + 4, as: SIMD4<Float>.self)
            var upper = shift + w0 * left + w1 * centre + w2 * right
            left = p1.loadUnaligned(fromByteOffset: offset - 4, as: SIMD4<Float>.self)
            centre = p1.loadUnaligned(fromByteOffset: offset, as: SIMD4<Float>.self)
            right = p1.loadUnaligned(fromByteOffset: offset + 4, as: SIMD4<Float>.self)
            upper += w3 * left + w4 * centre + w5 * right
            var lower = shift + w0 * left + w1 * centre + w2 * right
            left = p2.loadUnaligned(fromByteOffset: offset - 4, as: SIMD4<Float>.self)
            centre = p2.loadUnaligned(fromByteOffset: offset, as: SIMD4<Float>.self)
            right = p2.loadUnaligned(fromByteOffset: offset + 4, as: SIMD4<Float>.self)
            upper += w6 * left + w7 * centre + w8 * right
            lower += w3 * left + w4 * centre + w5 * right
            left = p3.loadUnaligned(fromByteOffset: offset - 4, as: SIMD4<Float>.self)
            centre = p3.loadUnaligned(fromByteOffset: offset, as: SIMD4<Float>.self)
            right = p3.loadUnaligned(fromByteOffset: offset + 4, as: SIMD4<Float>.self)
            lower += w6 * left + w7 * centre + w8 * right
            o0.storeBytes(
                of: upper.replacing(with: lowest, where: upper .< lowest), toByteOffset: offset, as: SIMD4<Float>.self)
            o1.storeBytes(
                of: lower.replacing(with: lowest, where: lower .< lowest), toByteOffset: offset, as: SIMD4<Float>.self)
            if x == width - 5 { break }
            x = min(x + 4, width - 5)
        }
    }

    /// Which pointwise (1×1) kernel runs. `automatic` is what the models use; tests name the others to
    /// compare them on the same inputs.
    enum PointwiseKernel {
        /// `avx512` when `pointwiseChoice` says so, else `avx2FMA`, else `portable`.
        case automatic
        /// OpenBLAS sgemm onto the bias (or residual + bias), then the activation as a separate pass.
        case portable
        /// `clk_pointwise_avx2_fma`; only where `avx2FMAAvailable`.
        case avx2FMA
        /// `clk_pointwise_avx512`; only where `avx512Available`.
        case avx512
    }

    /// Whether this CPU and OS run AVX-512F code (always false off x86-64): asked once.
    static let avx512Available = clk_avx512_available()

    /// What `automatic` means for `pointwise`, decided once: the widest C kernel the CPU runs, unless
    /// `LIVENESSD_PORTABLE_KERNELS` is `1` (then OpenBLAS, as for the depthwise kernel) or `avx2` (at most
    /// the AVX2 kernel: what a CPU without AVX-512 runs, to measure it on one that has it).
    static let pointwiseChoice: PointwiseKernel = {
        let setting = ProcessInfo.processInfo.environment["LIVENESSD_PORTABLE_KERNELS"]
        guard setting != "1" else { return .portable }
        if Self.avx512Available && setting != "avx2" { return .avx512 }
        return Self.avx2FMAAvailable ? .avx2FMA : .portable
    }()

    /// Pointwise (1×1) convolution, or any GEMM whose right operand is NCHW planes (im2col columns):
    /// output[c][i] = act(Σₚ weights[c][p]·input[p][i] + bias[c] (+ residual[c][i])), c < `outputs`,
    /// p < `inputs`, i < `area`; `weights` row-major outputs × inputs. act: PReLU with `slopes[c]` when
    /// given, else ReLU when `relu`. On x86-64 a C kernel (AVX-512 or AVX2 + FMA) that reads the planes
    /// as they are, where OpenBLAS would first pack them, and applies bias, residual and activation
    /// while the sums are still in registers: 2–4× faster than sgemm plus the passes around it on the
    /// networks' shapes. Elsewhere (and with `LIVENESSD_PORTABLE_KERNELS=1`) OpenBLAS. Both sum over p
    /// from zero and add (residual + bias) last. `output` must not overlap `input`; it may be `residual`.
    static func pointwise(
        weights: UnsafePointer<Float>, outputs: Int, inputs: Int, input: UnsafePointer<Float>, area: Int,
        bias: UnsafePointer<Float>, residual: UnsafePointer<Float>? = nil, slopes: UnsafePointer<Float>? = nil,
        relu: Bool = false, into output: UnsafeMutablePointer<Float>, kernel: PointwiseKernel = .automatic
    ) {
        switch kernel == .automatic ? self.pointwiseChoice : kernel {
        case .avx512:
            precondition(self.avx512Available, "the AVX-512 pointwise kernel needs a CPU with AVX-512F")
            clk_pointwise_avx512(weights, outputs, inputs, input, area, bias, residual, slopes, relu, output)
        case .avx2FMA:
            precondition(self.avx2FMAAvailable, "the AVX2 + FMA pointwise kernel needs a CPU with AVX2 and FMA")
            clk_pointwise_avx2_fma(weights, outputs, inputs, input, area, bias, residual, slopes, relu, output)
        case .portable, .automatic:
            if let residual {
                MobileKernels.addBias(residual, channels: outputs, area: area, bias: bias, into: output)
            } else {
                self.fillBias(output, channels: outputs, area: area, bias: bias)
            }
            BLAS.gemm(
                m: outputs, n: area, k: inputs, a: weights, lda: inputs, b: input, ldb: area, beta: 1, c: output,
                ldc: area)
            if let slopes {
                MobileKernels.prelu(output, channels: outputs, area: area, slopes: slopes)
            } else if relu {
                self.relu(output, count: outputs * area)
            }
        }
    }

    /// Where `convolveInPlace` keeps a convolution's input: each input row split into its `stride`
    /// column phases (columns r, r + s, r + 2s … for phase r), each phase row `rowLength` floats with
    /// `lead` zeros before the first value and zeros after the last, so that every tap of every output
    /// pixel reads a float of the row (padding included) one float after its left neighbour's.
    struct PhaseLayout: Equatable {
        let stride, lead, rowLength: Int

        init(width: Int, geometry g: WindowGeometry, outputWidth: Int) {
            let s = g.strideX
            // Tap kx of output column ox reads input column ox·s + shift = (ox + q)·s + r: phase r, index ox + q.
            let offsets = (0..<g.kernelWidth).map { kx -> Int in
                let shift = kx - g.padLeft
                return (shift - (shift % s + s) % s) / s
            }
            self.stride = s
            self.lead = max(0, -(offsets.min() ?? 0))
            self.rowLength = self.lead + max((width + s - 1) / s, outputWidth + max(0, offsets.max() ?? 0))
        }

        /// Floats for `channels` planes of `height` rows.
        func floats(channels: Int, height: Int) -> Int { channels * height * self.stride * self.rowLength }
    }

    /// Whether `convolveInPlace` runs on this CPU (it needs one of the C pointwise kernels); else im2col
    /// and `pointwise` do the same work.
    static var convolvesInPlace: Bool { self.pointwiseChoice != .portable }

    /// A convolution with one group (any kernel, stride and padding `im2col` takes), output row by output
    /// row through the C pointwise kernel with one row pointer per tap, instead of im2col's columns: the
    /// input is split into its stride phases once (`planes`, `PhaseLayout.floats`), and padding reads
    /// `zeroRow` (`PhaseLayout.rowLength` zeros). The taps are summed in im2col's order (input channel,
    /// kernel row, kernel column) by the same kernel, so the output is bit for bit `im2col` + `pointwise`
    /// on this CPU; what goes is the k × area column matrix (2.2 MB for YuNet's first layer at 320 × 256,
    /// written and read back; that layer went from 0.61 to ≈ 0.47 ms per frame, see ARCHITECTURE.md).
    static func convolveInPlace(
        _ input: UnsafePointer<Float>, channels: Int, height: Int, width: Int, geometry g: WindowGeometry,
        outputHeight: Int, outputWidth: Int, weights: UnsafePointer<Float>, outputs: Int, bias: UnsafePointer<Float>,
        slopes: UnsafePointer<Float>? = nil, relu: Bool = false, planes: UnsafeMutablePointer<Float>,
        zeroRow: UnsafePointer<Float>, into output: UnsafeMutablePointer<Float>, kernel: PointwiseKernel = .automatic
    ) {
        let choice = kernel == .automatic ? self.pointwiseChoice : kernel
        precondition(choice == .avx512 || choice == .avx2FMA, "convolveInPlace needs a C pointwise kernel")
        precondition(choice != .avx512 || self.avx512Available, "the AVX-512 kernel needs AVX-512F")
        precondition(choice != .avx2FMA || self.avx2FMAAvailable, "the AVX2 + FMA kernel needs AVX2 and FMA")
        let layout = PhaseLayout(width: width, geometry: g, outputWidth: outputWidth)
        let (s, lead, rowLength) = (layout.stride, layout.lead, layout.rowLength)
        for channel in 0..<channels {
            for iy in 0..<height {
                let source = input + (channel * height + iy) * width
                let rows = planes + (channel * height + iy) * s * rowLength
                for phase in 0..<s {
                    let row = rows + phase * rowLength
                    row.update(repeating: 0, count: lead)
                    let count = phase < width ? (width - phase + s - 1) / s : 0
                    (row + lead + count).update(repeating: 0, count: rowLength - lead - count)
                }
                if s == 1 {
                    (rows + lead).update(from: source, count: width)
                } else if s == 2 {
                    // Eight of each phase from sixteen values at a time (a shuffle), then the rest one by one.
                    let even = rows + lead
                    let odd = rows + rowLength + lead
                    let raw = UnsafeRawPointer(source)
                    var j = 0
                    while 2 * j + 16 <= width {
                        let values = raw.loadUnaligned(fromByteOffset: 8 * j, as: SIMD16<Float>.self)
                        UnsafeMutableRawPointer(even + j).storeBytes(of: values.evenHalf, as: SIMD8<Float>.self)
                        UnsafeMutableRawPointer(odd + j).storeBytes(of: values.oddHalf, as: SIMD8<Float>.self)
                        j += 8
                    }
                    for x in (2 * j)..<width { (x % 2 == 0 ? even : odd)[x / 2] = source[x] }
                } else {
                    for x in 0..<width { rows[(x % s) * rowLength + lead + x / s] = source[x] }
                }
            }
        }
        let taps = channels * g.kernelHeight * g.kernelWidth
        let area = outputHeight * outputWidth
        withUnsafeTemporaryAllocation(of: UnsafePointer<Float>.self, capacity: taps) { pointers in
            let pointers = pointers.baseAddress!
            for oy in 0..<outputHeight {
                var p = 0
                for channel in 0..<channels {
                    for ky in 0..<g.kernelHeight {
                        let iy = oy * g.strideY - g.padTop + ky
                        let rows =
                            iy >= 0 && iy < height
                            ? UnsafePointer(planes + (channel * height + iy) * s * rowLength) : nil
                        for kx in 0..<g.kernelWidth {
                            let shift = kx - g.padLeft
                            let phase = (shift % s + s) % s
                            let offset = lead + (shift - phase) / s
                            pointers[p] = rows.map { $0 + phase * rowLength + offset } ?? zeroRow + offset
                            p += 1
                        }
                    }
                }
                if choice == .avx512 {
                    clk_convolution_rows_avx512(
                        weights, outputs, taps, pointers, outputWidth, bias, slopes, relu, area,
                        output + oy * outputWidth)
                } else {
                    clk_convolution_rows_avx2_fma(
                        weights, outputs, taps, pointers, outputWidth, bias, slopes, relu, area,
                        output + oy * outputWidth)
                }
            }
        }
    }

    /// Max over each window; positions outside the image are ignored (ONNX MaxPool padding).
    static func maxPool(
        _ input: UnsafePointer<Float>, channels: Int, height: Int, width: Int, geometry g: WindowGeometry,
        outputHeight: Int, outputWidth: Int, into output: UnsafeMutablePointer<Float>
    ) {
        // `a > b ? a : b` rather than max(): Swift's max orders NaNs, which costs several instructions.
        @inline(__always) func larger(_ a: Float, _ b: Float) -> Float { a > b ? a : b }
        let plain2x2 =
            g
            == WindowGeometry(
                kernelHeight: 2, kernelWidth: 2, strideY: 2, strideX: 2, padTop: 0, padLeft: 0, padBottom: 0,
                padRight: 0)
        for channel in 0..<channels {
            let plane = input + channel * height * width
            var out = output + channel * outputHeight * outputWidth
            for oy in 0..<outputHeight {
                if plain2x2 {
                    let upper = plane + 2 * oy * width
                    let lower = upper + width
                    // Eight outputs from sixteen values of each row at a time, with the same comparisons in the
                    // same order as the scalar loop (`replacing(with:where:)` is `a > b ? a : b` per lane).
                    var ox = 0
                    @inline(__always) func larger8(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
                        b.replacing(with: a, where: a .> b)
                    }
                    while ox + 8 <= outputWidth && 2 * ox + 16 <= width {
                        let top = UnsafeRawPointer(upper + 2 * ox).loadUnaligned(as: SIMD16<Float>.self)
                        let bottom = UnsafeRawPointer(lower + 2 * ox).loadUnaligned(as: SIMD16<Float>.self)
                        let value = larger8(
                            larger8(top.evenHalf, top.oddHalf), larger8(bottom.evenHalf, bottom.oddHalf))
                        UnsafeMutableRawPointer(out + ox).storeBytes(of: value, as: SIMD8<Float>.self)
                        ox += 8
                    }
                    for ox in ox..<outputWidth {
                        out[ox] = larger(
                            larger(upper[2 * ox], upper[2 * ox + 1]), larger(lower[2 * ox], lower[2 * ox + 1]))
                    }
                    out += outputWidth
                    continue
                }
                let y0 = max(oy * g.strideY - g.padTop, 0)
                let y1 = min(oy * g.strideY - g.padTop + g.kernelHeight, height)
                for ox in 0..<outputWidth {
                    let x0 = max(ox * g.strideX - g.padLeft, 0)
                    let x1 = min(ox * g.strideX - g.padLeft + g.kernelWidth, width)
                    var best = -Float.infinity
                    for y in y0..<y1 {
                        for x in x0..<x1 { best = larger(plane[y * width + x], best) }
                    }
                    out[ox] = best
                }
                out += outputWidth
            }
        }
    }

    /// out[c][y][x] = in[c][rows[y]][columns[x]]: nearest-neighbour resampling with precomputed sources.
    static func gather(
        _ input: UnsafePointer<Float>, channels: Int, height: Int, width: Int, rows: [Int], columns: [Int],
        into output: UnsafeMutablePointer<Float>
    ) {
        var out = output
        for channel in 0..<channels {
            let plane = input + channel * height * width
            for sourceRow in rows {
                let line = plane + sourceRow * width
                for (x, sourceColumn) in columns.enumerated() { out[x] = line[sourceColumn] }
                out += columns.count
            }
        }
    }

    /// General transpose of a tensor of rank ≤ 4: output axis i is input axis `permutation[i]`.
    static func transpose(
        _ input: UnsafePointer<Float>, shape: [Int], permutation: [Int], into output: UnsafeMutablePointer<Float>
    ) {
        let padding = 4 - shape.count
        let dims = [Int](repeating: 1, count: padding) + shape
        let perm = (0..<padding).map { $0 } + permutation.map { $0 + padding }
        var strides = [Int](repeating: 1, count: 4)
        for axis in stride(from: 2, through: 0, by: -1) { strides[axis] = strides[axis + 1] * dims[axis + 1] }
        let (d0, d1, d2, d3) = (dims[perm[0]], dims[perm[1]], dims[perm[2]], dims[perm[3]])
        let (s0, s1, s2, s3) = (strides[perm[0]], strides[perm[1]], strides[perm[2]], strides[perm[3]])
        var out = output
        for i0 in 0..<d0 {
            for i1 in 0..<d1 {
                for i2 in 0..<d2 {
                    let base = input + i0 * s0 + i1 * s1 + i2 * s2
                    for i3 in 0..<d3 { out[i3] = base[i3 * s3] }
                    out += d3
                }
            }
        }
    }
}
