import CLivenessKernels
import Testing
import TestSupport

@testable import LivenessEngine

/// The AVX2 resampling kernels (ResampleAVX.c) against the Swift ones they replace, byte for byte, on
/// seeded random pixels: the horizontal pass (grey and RGB; widths odd and even; downscales from 1 to
/// about 3.5 and upscales; windows at the left edge, inside and at the right edge), the vertical pass
/// (line lengths 1 … 40 and whole crop rows), Pillow's RGB → L, and whole `lumaCrop`s through both paths.
@Suite(.enabled(if: ConvolutionKernels.avx2FMAAvailable, "needs an x86-64 CPU with AVX2"))
struct ResampleKernelTests {
    static func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
        var generator = SeededRandom(seed: seed)
        return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }

    /// Input size → output size pairs: scale factors 0.3 … 3.6, odd and even sizes.
    static let horizontalSizes: [(input: Int, output: Int)] = [
        (1, 5), (2, 7), (3, 3), (7, 20), (13, 40), (50, 61), (100, 255), (200, 255), (255, 255), (256, 255),
        (257, 255), (299, 255), (300, 255), (333, 255), (400, 255), (401, 255), (450, 255), (500, 255),
        (511, 255), (640, 255), (700, 255), (777, 255), (893, 255), (900, 250), (31, 9), (64, 17), (45, 13),
    ]

    /// Windows of up to `side` outputs: from 0, centred, ending at the last output, and a one-output one.
    static func windows(output: Int, side: Int) -> [Range<Int>] {
        let length = min(side, output)
        let centre = (output - length) / 2
        return [0..<length, centre..<(centre + length), (output - length)..<output, (output - 1)..<output]
    }

    /// The horizontal C kernels the CPU runs.
    static var horizontalKernels: [Preprocessor.Kernel] {
        Preprocessor.avx512BWAvailable ? [.avx2, .avx512] : [.avx2]
    }

    @Test(arguments: [1, 3])
    func horizontalMatchesSwift(channels: Int) {
        for kernel in Self.horizontalKernels { self.horizontalMatchesSwift(channels: channels, kernel: kernel) }
    }

    func horizontalMatchesSwift(channels: Int, kernel pass: Preprocessor.Kernel) {
        for (index, size) in Self.horizontalSizes.enumerated() {
            // The row alone in its own allocation, so a read past it would be a read past the buffer.
            let row = Self.randomBytes(size.input * channels, seed: UInt64(index * 10 + channels))
            for window in Self.windows(output: size.output, side: 224) {
                let kernel = ResampleKernel(inputSize: size.input, outputSize: size.output, window: window)
                let outputs = window.count
                let length = outputs * channels
                let canary: UInt8 = 0xA5
                var swift = [UInt8](repeating: canary, count: length + 8)
                var simd = swift
                var packed = [Int16](repeating: 0, count: clk_resample_packed_length(outputs, kernel.taps, channels))
                kernel.weights.withUnsafeBufferPointer { weights in
                    packed.withUnsafeMutableBufferPointer {
                        clk_resample_pack_horizontal(
                            weights.baseAddress!, outputs, kernel.taps, channels, $0.baseAddress!)
                    }
                }
                row.withUnsafeBufferPointer { source in
                    swift.withUnsafeMutableBufferPointer {
                        kernel.resampleLine(source.baseAddress!, into: $0.baseAddress!, channels: channels)
                    }
                    simd.withUnsafeMutableBufferPointer {
                        let function = pass == .avx512 ? clk_resample_horizontal_avx512 : clk_resample_horizontal_avx2
                        function(
                            source.baseAddress!, size.input, channels, kernel.starts, kernel.counts, kernel.weights,
                            kernel.taps, packed, outputs, $0.baseAddress!)
                    }
                }
                let label = "\(size.input) → \(size.output), window \(window), channels \(channels), \(pass)"
                #expect(simd == swift, "\(label)")
                #expect(simd[length...].allSatisfy { $0 == canary }, "wrote past the line (\(label))")
            }
        }
    }

    @Test func verticalMatchesSwift() {
        let sizes: [(input: Int, output: Int)] = [(3, 11), (60, 255), (255, 255), (300, 255), (500, 255), (893, 255)]
        for (index, size) in sizes.enumerated() {
            for lineLength in Array(1...40) + [224, 672] {
                for window in Self.windows(output: size.output, side: 224) {
                    let kernel = ResampleKernel(inputSize: size.input, outputSize: size.output, window: window)
                    let rows = kernel.inputRange
                    let input = Self.randomBytes(rows.count * lineLength, seed: UInt64(index * 1000 + lineLength))
                    var sums = [Int32](repeating: 0, count: lineLength)
                    for row in [0, window.count / 2, window.count - 1] {
                        let canary: UInt8 = 0x5A
                        var swift = [UInt8](repeating: canary, count: lineLength + 8)
                        var avx2 = swift
                        input.withUnsafeBufferPointer { input in
                            sums.withUnsafeMutableBufferPointer { sums in
                                swift.withUnsafeMutableBufferPointer {
                                    kernel.resampleRow(
                                        row, input.baseAddress!, firstRow: rows.lowerBound, lineLength: lineLength,
                                        sums: sums, into: $0.baseAddress!)
                                }
                            }
                            kernel.weights.withUnsafeBufferPointer { weights in
                                avx2.withUnsafeMutableBufferPointer {
                                    clk_resample_vertical_avx2(
                                        input.baseAddress! + (kernel.starts[row] - rows.lowerBound) * lineLength,
                                        lineLength, weights.baseAddress! + row * kernel.taps, kernel.counts[row],
                                        $0.baseAddress!)
                                }
                            }
                        }
                        let label = "\(size.input) → \(size.output), window \(window), row \(row), line \(lineLength)"
                        #expect(avx2 == swift, "\(label)")
                        #expect(avx2[lineLength...].allSatisfy { $0 == canary }, "wrote past the row (\(label))")
                    }
                }
            }
        }
    }

    @Test func lumaMatchesPillow() {
        for pixels in Array(1...70) + [224, 255] {
            let rgb = Self.randomBytes(3 * pixels, seed: UInt64(pixels))
            // Pillow's L on the extremes too: white, black, and each channel alone.
            let extremes: [UInt8] = [255, 255, 255, 0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]
            let input = pixels >= 5 ? extremes + rgb[15...] : rgb
            var luma = [UInt8](repeating: 0xEE, count: pixels + 8)
            clk_rgb_to_luma_avx2(input, pixels, &luma)
            let expected = (0..<pixels).map { pixel in
                let (r, g, b) = (UInt32(input[3 * pixel]), UInt32(input[3 * pixel + 1]), UInt32(input[3 * pixel + 2]))
                return UInt8((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16)
            }
            #expect(Array(luma[..<pixels]) == expected, "\(pixels) pixels")
            #expect(luma[pixels...].allSatisfy { $0 == 0xEE }, "wrote past the row (\(pixels) pixels)")
        }
    }

    /// Whole crops, RGB and luma, through both paths; one scratch per path reused across sizes and
    /// layouts (the packed weights must follow both), rows with padding, crops of a larger frame.
    @Test func lumaCropMatchesSwift() {
        let preprocessor = Preprocessor()
        let portableScratch = Preprocessor.Scratch()
        let simdScratches = Self.horizontalKernels.map { _ in Preprocessor.Scratch() }
        let sizes: [(width: Int, height: Int)] = [
            (224, 224), (255, 255), (400, 400), (500, 500), (333, 517), (517, 333), (101, 77), (60, 300),
            (899, 260), (260, 899), (640, 480), (445, 451), (400, 400),
        ]
        for (index, size) in sizes.enumerated() {
            for layout in [PixelSource.Layout.rgb24, .luma8] {
                let channels = layout == .rgb24 ? 3 : 1
                let stride = size.width * channels + (index % 3) * 5
                let frame = Self.randomBytes(stride * size.height, seed: UInt64(index * 2 + channels))
                frame.withUnsafeBufferPointer { frame in
                    let whole = PixelSource(
                        base: frame.baseAddress!, width: size.width, height: size.height, rowStride: stride,
                        layout: layout)
                    let crops = [
                        whole,
                        whole.cropped(to: PixelRect(x: 3, y: 1, width: size.width - 3, height: size.height - 1)),
                        whole.cropped(to: PixelRect(x: 0, y: 0, width: size.width / 2 + 1, height: size.height)),
                    ]
                    for (number, crop) in crops.enumerated() {
                        var portable = [UInt8](repeating: 0, count: 224 * 224)
                        preprocessor.lumaCrop(crop, into: &portable, scratch: portableScratch, kernel: .portable)
                        for (kernel, scratch) in zip(Self.horizontalKernels, simdScratches) {
                            var simd = [UInt8](repeating: 1, count: 224 * 224)
                            preprocessor.lumaCrop(crop, into: &simd, scratch: scratch, kernel: kernel)
                            #expect(
                                simd == portable, "\(size.width)×\(size.height) \(layout), crop \(number), \(kernel)")
                        }
                    }
                }
            }
        }
    }
}
