// Kernels the CNN interpreter needs around its GEMMs, on NCHW planes (batch 1). SIMD8 for the
// loops that dominate (depthwise 3×3, bias + ReLU); plain loops for the small ones.

/// Geometry of one 2-D convolution or pooling window (dilation 1).
struct WindowGeometry: Equatable {
    var kernelHeight, kernelWidth: Int
    var strideY, strideX: Int
    var padTop, padLeft, padBottom, padRight: Int

    func outputSize(height: Int, width: Int, ceilMode: Bool = false) -> (height: Int, width: Int) {
        func size(_ input: Int, _ pads: Int, _ kernel: Int, _ stride: Int) -> Int {
            let span = input + pads - kernel
            guard span >= 0 else { return 0 }
            return (ceilMode ? (span + stride - 1) / stride : span / stride) + 1
        }
        return (
            size(height, self.padTop + self.padBottom, self.kernelHeight, self.strideY),
            size(width, self.padLeft + self.padRight, self.kernelWidth, self.strideX)
        )
    }
}

enum ConvolutionKernels {
    /// Unfolds `channels` planes into rows of (channel, ky, kx) × output pixels, zero outside the image:
    /// the convolution is then one GEMM per group.
    static func im2col(
        _ input: UnsafePointer<Float>, channels: Int, height: Int, width: Int, geometry g: WindowGeometry,
        outputHeight: Int, outputWidth: Int, into columns: UnsafeMutablePointer<Float>
    ) {
        let outputArea = outputHeight * outputWidth
        var row = columns
        for channel in 0..<channels {
            let plane = input + channel * height * width
            for ky in 0..<g.kernelHeight {
                for kx in 0..<g.kernelWidth {
                    for oy in 0..<outputHeight {
                        let line = row + oy * outputWidth
                        let iy = oy * g.strideY - g.padTop + ky
                        guard iy >= 0 && iy < height else {
                            line.update(repeating: 0, count: outputWidth)
                            continue
                        }
                        let source = plane + iy * width
                        for ox in 0..<outputWidth {
                            let ix = ox * g.strideX - g.padLeft + kx
                            line[ox] = ix >= 0 && ix < width ? source[ix] : 0
                        }
                    }
                    row += outputArea
                }
            }
        }
    }

    /// data[c][i] = f(data[c][i] + bias[c]) over `channels` planes of `area` values; f = ReLU or identity.
    static func addBias(_ data: UnsafeMutablePointer<Float>, channels: Int, area: Int, bias: UnsafePointer<Float>, relu: Bool) {
        let vectors = area / 8
        let step = 8 * MemoryLayout<Float>.stride
        for channel in 0..<channels {
            let plane = data + channel * area
            let raw = UnsafeMutableRawPointer(plane)
            let b = bias[channel]
            let shift = SIMD8<Float>(repeating: b)
            if relu {
                let zero = SIMD8<Float>(repeating: 0)
                for vector in 0..<vectors {
                    let value = raw.loadUnaligned(fromByteOffset: vector * step, as: SIMD8<Float>.self) + shift
                    raw.storeBytes(of: value.replacing(with: zero, where: value .< zero), toByteOffset: vector * step, as: SIMD8<Float>.self)
                }
                for index in (vectors * 8)..<area { plane[index] = max(plane[index] + b, 0) }
            } else {
                for vector in 0..<vectors {
                    let value = raw.loadUnaligned(fromByteOffset: vector * step, as: SIMD8<Float>.self) + shift
                    raw.storeBytes(of: value, toByteOffset: vector * step, as: SIMD8<Float>.self)
                }
                for index in (vectors * 8)..<area { plane[index] += b }
            }
        }
    }

    /// Depthwise 3×3, stride 1, padding 1 (one filter per channel), bias and optional ReLU fused.
    /// Direct loops: as a GEMM each channel would be a 1 × 9 by 9 × area product, all overhead.
    static func depthwise3x3(
        _ input: UnsafePointer<Float>, channels: Int, height: Int, width: Int, weights: UnsafePointer<Float>,
        bias: UnsafePointer<Float>, relu: Bool, zeroRow: UnsafePointer<Float>, into output: UnsafeMutablePointer<Float>
    ) {
        let area = height * width
        let lastVectorStart = width - 1 - 8  // interior columns 1 ..< width − 1, 8 at a time
        for channel in 0..<channels {
            let plane = input + channel * area
            let w = weights + channel * 9
            let b = bias[channel]
            let w0 = SIMD8<Float>(repeating: w[0]), w1 = SIMD8<Float>(repeating: w[1]), w2 = SIMD8<Float>(repeating: w[2])
            let w3 = SIMD8<Float>(repeating: w[3]), w4 = SIMD8<Float>(repeating: w[4]), w5 = SIMD8<Float>(repeating: w[5])
            let w6 = SIMD8<Float>(repeating: w[6]), w7 = SIMD8<Float>(repeating: w[7]), w8 = SIMD8<Float>(repeating: w[8])
            let shift = SIMD8<Float>(repeating: b)
            let zero = SIMD8<Float>(repeating: 0)
            for y in 0..<height {
                // Rows outside the image read a row of zeros: one code path for every output row.
                let top = y > 0 ? plane + (y - 1) * width : zeroRow
                let middle = plane + y * width
                let bottom = y + 1 < height ? plane + (y + 1) * width : zeroRow
                let out = output + channel * area + y * width
                @inline(__always) func scalar(_ x: Int) -> Float {
                    func tap(_ row: UnsafePointer<Float>, _ x: Int) -> Float { x >= 0 && x < width ? row[x] : 0 }
                    var sum = b
                    sum += w[0] * tap(top, x - 1) + w[1] * tap(top, x) + w[2] * tap(top, x + 1)
                    sum += w[3] * tap(middle, x - 1) + w[4] * tap(middle, x) + w[5] * tap(middle, x + 1)
                    sum += w[6] * tap(bottom, x - 1) + w[7] * tap(bottom, x) + w[8] * tap(bottom, x + 1)
                    return relu ? max(sum, 0) : sum
                }
                out[0] = scalar(0)
                var x = 1
                if lastVectorStart >= 1 {
                    let t = UnsafeRawPointer(top), m = UnsafeRawPointer(middle), d = UnsafeRawPointer(bottom)
                    let o = UnsafeMutableRawPointer(out)
                    while x <= lastVectorStart {
                        let offset = x * 4
                        var sum = shift
                        sum += w0 * t.loadUnaligned(fromByteOffset: offset - 4, as: SIMD8<Float>.self)
                        sum += w1 * t.loadUnaligned(fromByteOffset: offset, as: SIMD8<Float>.self)
                        sum += w2 * t.loadUnaligned(fromByteOffset: offset + 4, as: SIMD8<Float>.self)
                        sum += w3 * m.loadUnaligned(fromByteOffset: offset - 4, as: SIMD8<Float>.self)
                        sum += w4 * m.loadUnaligned(fromByteOffset: offset, as: SIMD8<Float>.self)
                        sum += w5 * m.loadUnaligned(fromByteOffset: offset + 4, as: SIMD8<Float>.self)
                        sum += w6 * d.loadUnaligned(fromByteOffset: offset - 4, as: SIMD8<Float>.self)
                        sum += w7 * d.loadUnaligned(fromByteOffset: offset, as: SIMD8<Float>.self)
                        sum += w8 * d.loadUnaligned(fromByteOffset: offset + 4, as: SIMD8<Float>.self)
                        if relu { sum = sum.replacing(with: zero, where: sum .< zero) }
                        o.storeBytes(of: sum, toByteOffset: offset, as: SIMD8<Float>.self)
                        x += 8
                    }
                }
                while x < width {
                    out[x] = scalar(x)
                    x += 1
                }
            }
        }
    }

    /// Max over each window; positions outside the image are ignored (ONNX MaxPool padding).
    static func maxPool(
        _ input: UnsafePointer<Float>, channels: Int, height: Int, width: Int, geometry g: WindowGeometry,
        outputHeight: Int, outputWidth: Int, into output: UnsafeMutablePointer<Float>
    ) {
        for channel in 0..<channels {
            let plane = input + channel * height * width
            var out = output + channel * outputHeight * outputWidth
            for oy in 0..<outputHeight {
                let y0 = max(oy * g.strideY - g.padTop, 0)
                let y1 = min(oy * g.strideY - g.padTop + g.kernelHeight, height)
                for ox in 0..<outputWidth {
                    let x0 = max(ox * g.strideX - g.padLeft, 0)
                    let x1 = min(ox * g.strideX - g.padLeft + g.kernelWidth, width)
                    var best = -Float.infinity
                    for y in y0..<y1 {
                        for x in x0..<x1 { best = max(best, plane[y * width + x]) }
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
