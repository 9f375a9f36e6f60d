import CLivenessKernels
import Foundation

/// A rectangle of whole pixels (a crop of a frame), origin top-left.
public struct PixelRect: Sendable, Equatable, CustomStringConvertible {
    public var x: Int
    public var y: Int
    public var width: Int
    public var height: Int

    public init(x: Int, y: Int, width: Int, height: Int) {
        self.x = x
        self.y = y
        self.width = width
        self.height = height
    }

    public var description: String { "\(self.width)x\(self.height)+\(self.x)+\(self.y)" }
}

/// 8-bit pixels the preprocessor reads: packed RGB24 or a single luma plane, with a row stride.
public struct PixelSource {
    public enum Layout: Sendable { case rgb24, luma8 }

    public var base: UnsafePointer<UInt8>
    public var width: Int
    public var height: Int
    public var rowStride: Int
    public var layout: Layout

    public init(base: UnsafePointer<UInt8>, width: Int, height: Int, rowStride: Int, layout: Layout) {
        self.base = base
        self.width = width
        self.height = height
        self.rowStride = rowStride
        self.layout = layout
    }

    var channels: Int { self.layout == .rgb24 ? 3 : 1 }

    /// The same pixels restricted to `rect` (clamped to the image), as `PIL.Image.crop` would give.
    public func cropped(to rect: PixelRect) -> PixelSource {
        let x0 = min(max(rect.x, 0), self.width - 1)
        let y0 = min(max(rect.y, 0), self.height - 1)
        let x1 = min(max(rect.x + rect.width, x0 + 1), self.width)
        let y1 = min(max(rect.y + rect.height, y0 + 1), self.height)
        return PixelSource(
            base: self.base + y0 * self.rowStride + x0 * self.channels, width: x1 - x0, height: y1 - y0,
            rowStride: self.rowStride, layout: self.layout)
    }
}

/// The training-time evaluation transform, reproduced bit for bit on 8-bit pixels:
///
///     Resize(255)            short side → 255, PIL bilinear with antialiasing (fixed-point, two passes)
///     CenterCrop(224)        offsets rounded half-to-even, as Python's round()
///     Grayscale(3)           PIL 'L' = (19595·R + 38470·G + 7471·B + 2¹⁵) >> 16, replicated ×3
///     ToTensor, Normalize    L/255, then (v − mean[c]) / std[c] with ImageNet mean/std
///
/// Only the 224 × 224 output window is computed: the crop comes after the resize, so pixels
/// outside it are never needed. A luma plane (camera Y, or an image's own L) can be fed directly;
/// then resizing happens on luma instead of RGB, which differs from the reference only by the
/// rounding of the intermediate 8-bit images (≤ 1 grey level).
public struct Preprocessor: Sendable {
    public var shortSide = 255
    public var outputSide = 224
    public static let mean: [Float] = [0.485, 0.456, 0.406]
    public static let standardDeviation: [Float] = [0.229, 0.224, 0.225]

    /// normalised[c][L] for every 8-bit luma value: the exact float32 arithmetic torchvision does.
    let normalisation: [[Float]]

    public init() {
        self.normalisation = (0..<3).map { channel in
            (0..<256).map { level in
                (Float(level) / 255 - Self.mean[channel]) / Self.standardDeviation[channel]
            }
        }
    }

    /// Floats in one output tensor: 3 × 224 × 224.
    public var tensorLength: Int { 3 * self.outputSide * self.outputSide }

    /// Output size of torchvision's Resize(shortSide) for an input of `width` × `height`.
    public func resizedSize(width: Int, height: Int) -> (width: Int, height: Int) {
        if width <= height {
            return (self.shortSide, Int(Double(self.shortSide * height) / Double(width)))
        }
        return (Int(Double(self.shortSide * width) / Double(height)), self.shortSide)
    }

    /// The 224 × 224 window the centre crop takes from the resized image.
    public func cropOrigin(resizedWidth: Int, resizedHeight: Int) -> (x: Int, y: Int) {
        let x = (Double(resizedWidth - self.outputSide) / 2).rounded(.toNearestOrEven)
        let y = (Double(resizedHeight - self.outputSide) / 2).rounded(.toNearestOrEven)
        return (Int(x), Int(y))
    }

    /// What `lumaCrop(_:into:scratch:)` keeps between calls: the resampling kernels (recomputed only when
    /// the crop's size changes) and the intermediate rows. One per thread (a pipeline lane owns one).
    public final class Scratch {
        var horizontal = ResampleKernel()
        var vertical = ResampleKernel()
        var intermediate: [UInt8] = []
        var sums: [Int32] = []
        var rgbRow: [UInt8] = []
        /// `horizontal`'s weights as the AVX2 kernel reads them, for `packedChannels` (0: none yet).
        var packed: [Int16] = []
        var packedChannels = 0

        public init() {}
    }

    /// Which resampling code `lumaCrop` runs. `automatic` is what the pipeline uses; tests name the
    /// other two to compare them on the same inputs.
    enum Kernel {
        /// `avx2` when `usesAVX2`, else `portable`.
        case automatic
        /// `ResampleKernel`'s Swift loops and the scalar RGB → L below: the reference.
        case portable
        /// The C kernels of ResampleAVX.c (the same bytes); only where `ConvolutionKernels.avx2FMAAvailable`.
        case avx2
        /// `avx2` with RGB's horizontal pass four outputs at a time in AVX-512 (the same bytes); only where
        /// `avx512BWAvailable`.
        case avx512
    }

    /// Whether this CPU and OS run AVX-512F + BW code (always false off x86-64): asked once.
    static let avx512BWAvailable = clk_avx512bw_available()

    /// What `automatic` means, decided once: the widest C kernels the CPU runs, unless
    /// `LIVENESSD_PORTABLE_KERNELS` is `1` (the Swift code, as for the convolutions) or `avx2` (at most AVX2).
    static let kernelChoice: Kernel = {
        let setting = ProcessInfo.processInfo.environment["LIVENESSD_PORTABLE_KERNELS"]
        guard setting != "1", ConvolutionKernels.avx2FMAAvailable else { return .portable }
        return Self.avx512BWAvailable && setting != "avx2" ? .avx512 : .avx2
    }()

    /// The 224 × 224 grey image the model sees (before normalisation), row-major.
    public func lumaCrop(_ source: PixelSource) -> [UInt8] {
        var luma = [UInt8](repeating: 0, count: self.outputSide * self.outputSide)
        luma.withUnsafeMutableBufferPointer { self.lumaCrop(source, into: $0.baseAddress!, scratch: Scratch()) }
        return luma
    }

    /// The 224 × 224 grey image the model sees, written into `output` (`outputSide`² bytes, row-major);
    /// nothing is allocated once `scratch` has seen a crop of this size. Each resized RGB row is turned
    /// grey as soon as it is made (the same bytes as resizing the whole crop first, one buffer fewer).
    public func lumaCrop(_ source: PixelSource, into output: UnsafeMutablePointer<UInt8>, scratch: Scratch) {
        self.lumaCrop(source, into: output, scratch: scratch, kernel: .automatic)
    }

    /// `lumaCrop(_:into:scratch:)` through `kernel`.
    func lumaCrop(
        _ source: PixelSource, into output: UnsafeMutablePointer<UInt8>, scratch: Scratch, kernel: Kernel
    ) {
        let side = self.outputSide
        let resized = self.resizedSize(width: source.width, height: source.height)
        let origin = self.cropOrigin(resizedWidth: resized.width, resizedHeight: resized.height)
        if scratch.horizontal.prepare(
            inputSize: source.width, outputSize: resized.width, window: origin.x..<(origin.x + side))
        {
            scratch.packedChannels = 0
        }
        scratch.vertical.prepare(
            inputSize: source.height, outputSize: resized.height, window: origin.y..<(origin.y + side))
        let channels = source.channels
        let lineLength = side * channels
        // Horizontal pass over the input rows the vertical pass will read, into 8-bit (as PIL does).
        let rowRange = scratch.vertical.inputRange
        if scratch.intermediate.count < rowRange.count * lineLength {
            scratch.intermediate = [UInt8](repeating: 0, count: rowRange.count * lineLength)
        }
        if scratch.sums.count < lineLength { scratch.sums = [Int32](repeating: 0, count: lineLength) }
        if scratch.rgbRow.count < lineLength { scratch.rgbRow = [UInt8](repeating: 0, count: lineLength) }
        switch kernel == .automatic ? Self.kernelChoice : kernel {
        case .avx512:
            precondition(Self.avx512BWAvailable, "the AVX-512 resampling kernel needs a CPU with AVX-512F and BW")
            self.resampleAVX(source, into: output, scratch: scratch, avx512: true)
            return
        case .avx2:
            precondition(ConvolutionKernels.avx2FMAAvailable, "the AVX2 resampling kernels need a CPU with AVX2")
            self.resampleAVX(source, into: output, scratch: scratch, avx512: false)
            return
        case .portable, .automatic:
            break
        }
        let horizontal = scratch.horizontal
        let vertical = scratch.vertical
        scratch.intermediate.withUnsafeMutableBufferPointer { buffer in
            for (row, inputRow) in rowRange.enumerated() {
                horizontal.resampleLine(
                    source.base + inputRow * source.rowStride, into: buffer.baseAddress! + row * lineLength,
                    channels: channels)
            }
        }
        // Vertical pass, a whole output row at a time; RGB rows are turned grey (Pillow's L) one by one.
        scratch.intermediate.withUnsafeBufferPointer { input in
            scratch.sums.withUnsafeMutableBufferPointer { sums in
                scratch.rgbRow.withUnsafeMutableBufferPointer { rgbRow in
                    for row in 0..<side {
                        let line = channels == 3 ? rgbRow.baseAddress! : output + row * side
                        vertical.resampleRow(
                            row, input.baseAddress!, firstRow: rowRange.lowerBound, lineLength: lineLength, sums: sums,
                            into: line)
                        guard channels == 3 else { continue }
                        let luma = output + row * side
                        for pixel in 0..<side {
                            let r = UInt32(line[3 * pixel])
                            let g = UInt32(line[3 * pixel + 1])
                            let b = UInt32(line[3 * pixel + 2])
                            luma[pixel] = UInt8((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16)
                        }
                    }
                }
            }
        }
    }

    /// Both passes and the RGB → L in the C kernels (ResampleAVX.c), on kernels `lumaCrop` prepared; the
    /// horizontal pass in AVX-512 when `avx512`.
    private func resampleAVX(
        _ source: PixelSource, into output: UnsafeMutablePointer<UInt8>, scratch: Scratch, avx512: Bool
    ) {
        let side = self.outputSide
        let channels = source.channels
        let lineLength = side * channels
        let horizontal = scratch.horizontal
        let vertical = scratch.vertical
        let outputs = horizontal.starts.count
        if scratch.packedChannels != channels {
            let length = clk_resample_packed_length(outputs, horizontal.taps, channels)
            if scratch.packed.count < length { scratch.packed = [Int16](repeating: 0, count: length) }
            horizontal.weights.withUnsafeBufferPointer { weights in
                scratch.packed.withUnsafeMutableBufferPointer {
                    clk_resample_pack_horizontal(
                        weights.baseAddress!, outputs, horizontal.taps, channels, $0.baseAddress!)
                }
            }
            scratch.packedChannels = channels
        }
        let rowRange = vertical.inputRange
        horizontal.starts.withUnsafeBufferPointer { starts in
            horizontal.counts.withUnsafeBufferPointer { counts in
                horizontal.weights.withUnsafeBufferPointer { weights in
                    scratch.packed.withUnsafeBufferPointer { packed in
                        scratch.intermediate.withUnsafeMutableBufferPointer { buffer in
                            let pass = avx512 ? clk_resample_horizontal_avx512 : clk_resample_horizontal_avx2
                            for (row, inputRow) in rowRange.enumerated() {
                                pass(
                                    source.base + inputRow * source.rowStride, source.width, channels,
                                    starts.baseAddress!, counts.baseAddress!, weights.baseAddress!, horizontal.taps,
                                    packed.baseAddress!, outputs, buffer.baseAddress! + row * lineLength)
                            }
                        }
                    }
                }
            }
        }
        vertical.weights.withUnsafeBufferPointer { weights in
            scratch.intermediate.withUnsafeBufferPointer { input in
                scratch.rgbRow.withUnsafeMutableBufferPointer { rgbRow in
                    for row in 0..<side {
                        let line = channels == 3 ? rgbRow.baseAddress! : output + row * side
                        clk_resample_vertical_avx2(
                            input.baseAddress! + (vertical.starts[row] - rowRange.lowerBound) * lineLength, lineLength,
                            weights.baseAddress! + row * vertical.taps, vertical.counts[row], line)
                        if channels == 3 { clk_rgb_to_luma_avx2(line, side, output + row * side) }
                    }
                }
            }
        }
    }

    /// Writes the normalised 3 × 224 × 224 tensor (NCHW, one image) for a 224 × 224 luma crop.
    public func normalise(lumaCrop: [UInt8], into output: UnsafeMutablePointer<Float>) {
        let plane = self.outputSide * self.outputSide
        precondition(lumaCrop.count == plane, "luma crop has \(lumaCrop.count) pixels, expected \(plane)")
        for channel in 0..<3 {
            let table = self.normalisation[channel]
            let destination = output + channel * plane
            for index in 0..<plane { destination[index] = table[Int(lumaCrop[index])] }
        }
    }

    /// The model input for an image (RGB or luma), written into `output` (`tensorLength` floats).
    public func tensor(_ source: PixelSource, into output: UnsafeMutablePointer<Float>) {
        self.normalise(lumaCrop: self.lumaCrop(source), into: output)
    }

    public func tensor(_ source: PixelSource) -> [Float] {
        var output = [Float](repeating: 0, count: self.tensorLength)
        output.withUnsafeMutableBufferPointer { self.tensor(source, into: $0.baseAddress!) }
        return output
    }
}

/// PIL's antialiased bilinear resampling along one axis (Pillow `Resample.c`: `precompute_coeffs`
/// and `normalize_coeffs_8bpc`), restricted to a window of output positions. Coefficients are
/// computed in Double and converted to 22-bit fixed point exactly as Pillow does, so the 8-bit
/// results are identical.
struct ResampleKernel {
    static let precisionBits = 32 - 8 - 2

    /// For each output position in the window: first input index and tap count.
    var starts: [Int] = []
    var counts: [Int] = []
    /// `taps` fixed-point weights per output position.
    var weights: [Int32] = []
    var taps = 0
    /// Input positions the window reads.
    private(set) var inputRange = 0..<0
    /// What the kernel was computed for (nil: nothing yet).
    private var parameters: (inputSize: Int, outputSize: Int, window: Range<Int>)?

    init() {}

    init(inputSize: Int, outputSize: Int, window: Range<Int>) {
        self.prepare(inputSize: inputSize, outputSize: outputSize, window: window)
    }

    /// Computes the kernel for these sizes unless it already has them, reusing its arrays' memory; true
    /// when it computed.
    @discardableResult
    mutating func prepare(inputSize: Int, outputSize: Int, window: Range<Int>) -> Bool {
        if let parameters = self.parameters, parameters.inputSize == inputSize, parameters.outputSize == outputSize,
            parameters.window == window
        {
            return false
        }
        self.parameters = (inputSize, outputSize, window)
        self.starts.removeAll(keepingCapacity: true)
        self.counts.removeAll(keepingCapacity: true)
        self.weights.removeAll(keepingCapacity: true)
        let scale = Double(inputSize) / Double(outputSize)
        let filterScale = max(scale, 1.0)
        let support = 1.0 * filterScale  // bilinear support is 1
        self.taps = Int(support.rounded(.up)) * 2 + 1
        let inverseFilterScale = 1.0 / filterScale
        var lower = Int.max
        var upper = Int.min
        withUnsafeTemporaryAllocation(of: Double.self, capacity: self.taps) { kernel in
            for position in window {
                let centre = (Double(position) + 0.5) * scale
                var first = Int(centre - support + 0.5)  // C (int) truncates toward zero
                if first < 0 { first = 0 }
                var last = Int(centre + support + 0.5)
                if last > inputSize { last = inputSize }
                let count = last - first
                var total = 0.0
                for tap in 0..<self.taps {
                    guard tap < count else {
                        kernel[tap] = 0
                        continue
                    }
                    let distance = abs((Double(tap + first) - centre + 0.5) * inverseFilterScale)
                    let weight = distance < 1 ? 1 - distance : 0
                    kernel[tap] = weight
                    total += weight
                }
                for tap in 0..<self.taps {
                    var weight = kernel[tap]
                    if total != 0 && tap < count { weight /= total }
                    let fixed = weight * Double(1 << Self.precisionBits)
                    self.weights.append(Int32(fixed < 0 ? fixed - 0.5 : fixed + 0.5))
                }
                self.starts.append(first)
                self.counts.append(count)
                lower = min(lower, first)
                upper = max(upper, first + count)
            }
        }
        self.inputRange = window.isEmpty ? 0..<0 : lower..<upper
        return true
    }

    /// Resamples one line of packed pixels (`channels` bytes each) at the window's positions.
    func resampleLine(_ source: UnsafePointer<UInt8>, into destination: UnsafeMutablePointer<UInt8>, channels: Int) {
        let rounding = Int32(1) << Int32(Self.precisionBits - 1)
        self.weights.withUnsafeBufferPointer { weights in
            for output in 0..<self.starts.count {
                let count = self.counts[output]
                let kernel = weights.baseAddress! + output * self.taps
                var pixel = source + self.starts[output] * channels
                if channels == 3 {
                    // RGB: the three channels share the taps; one pass with three sums.
                    var red = rounding
                    var green = rounding
                    var blue = rounding
                    for tap in 0..<count {
                        let weight = kernel[tap]
                        red &+= Int32(pixel[0]) &* weight
                        green &+= Int32(pixel[1]) &* weight
                        blue &+= Int32(pixel[2]) &* weight
                        pixel += 3
                    }
                    destination[3 * output] = Self.clip8(red)
                    destination[3 * output + 1] = Self.clip8(green)
                    destination[3 * output + 2] = Self.clip8(blue)
                } else {
                    var sum = rounding
                    for tap in 0..<count { sum &+= Int32(pixel[tap]) &* kernel[tap] }
                    destination[output] = Self.clip8(sum)
                }
            }
        }
    }

    /// Resamples columns: output row i blends input rows starts[i]..<starts[i]+counts[i]
    /// (`input` holds rows from `firstRow` on, `lineLength` bytes each).
    func resampleRows(
        _ input: UnsafePointer<UInt8>, firstRow: Int, lineLength: Int, into output: UnsafeMutablePointer<UInt8>
    ) {
        var sums = [Int32](repeating: 0, count: lineLength)
        sums.withUnsafeMutableBufferPointer { sums in
            for row in 0..<self.starts.count {
                self.resampleRow(
                    row, input, firstRow: firstRow, lineLength: lineLength, sums: sums, into: output + row * lineLength)
            }
        }
    }

    /// Output row `row` of `resampleRows`, summed in `sums` (at least `lineLength` values).
    func resampleRow(
        _ row: Int, _ input: UnsafePointer<UInt8>, firstRow: Int, lineLength: Int,
        sums: UnsafeMutableBufferPointer<Int32>, into destination: UnsafeMutablePointer<UInt8>
    ) {
        let rounding = Int32(1) << Int32(Self.precisionBits - 1)
        let accumulator = UnsafeMutableBufferPointer(rebasing: sums[0..<lineLength])
        self.weights.withUnsafeBufferPointer { weights in
            accumulator.update(repeating: rounding)
            let kernel = weights.baseAddress! + row * self.taps
            for tap in 0..<self.counts[row] {
                let weight = kernel[tap]
                let line = input + (self.starts[row] + tap - firstRow) * lineLength
                for index in 0..<lineLength { accumulator[index] &+= Int32(line[index]) &* weight }
            }
            for index in 0..<lineLength { destination[index] = Self.clip8(accumulator[index]) }
        }
    }

    /// Pillow's clip8: the sum is 22-bit fixed point; out-of-range results saturate.
    @inline(__always)
    static func clip8(_ sum: Int32) -> UInt8 {
        UInt8(clamping: sum >> Int32(Self.precisionBits))
    }
}
