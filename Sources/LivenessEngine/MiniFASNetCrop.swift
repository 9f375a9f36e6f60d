/// The 80 × 80 BGR crop the MiniFASNet models (Silent-Face-Anti-Spoofing) were trained on, reproduced
/// bit for bit (docs/MINIFASNET.md, "The crop the models were trained on"):
///
///     box      YuNet's (x, y, w, h) as the reference feeds it: (int(x), int(y), int(w) + 1, int(h) + 1)
///     rect     upstream's CropImage._get_new_box: box × scale centred on the box, shifted inside the frame,
///              corners truncated, inclusive
///     resize   cv2.resize(bgr[top:bottom + 1, left:right + 1], (80, 80)): OpenCV's INTER_LINEAR on
///              8-bit pixels, fixed-point
///
/// The golden files are `../shared/golden/silentface/<case>.json` and `<case>.<model>.crop.bgr`.
public struct MiniFASNetCrop: Sendable, Equatable {
    /// The models' input side.
    public static let side = 80

    /// A face box in whole pixels, as the reference passes it to `crop_box` (x, y, w, h; may start
    /// outside the frame).
    public typealias Box = PixelRect

    /// A crop with inclusive corners: rows `top…bottom`, columns `left…right`.
    public struct Rect: Sendable, Equatable, CustomStringConvertible {
        public var left: Int
        public var top: Int
        public var right: Int
        public var bottom: Int

        public init(left: Int, top: Int, right: Int, bottom: Int) {
            self.left = left
            self.top = top
            self.right = right
            self.bottom = bottom
        }

        public var width: Int { self.right - self.left + 1 }
        public var height: Int { self.bottom - self.top + 1 }
        public var pixelRect: PixelRect { PixelRect(x: self.left, y: self.top, width: self.width, height: self.height) }
        public var description: String { "[\(self.left), \(self.top), \(self.right), \(self.bottom)]" }
    }

    /// Why no crop could be made (nothing here traps on odd input).
    public struct Failure: Error, Sendable, Equatable, CustomStringConvertible {
        public var reason: String
        public var description: String { "MiniFASNet crop: \(self.reason)" }

        init(_ reason: String) { self.reason = reason }
    }

    /// The crop's corners in the frame.
    public var rect: Rect
    /// `side` × `side` × 3 bytes, BGR, row-major (HWC), as the models take them.
    public var bgr: [UInt8]

    /// The crop for `box` at `scale` (2.7 for MiniFASNetV2, 4.0 for MiniFASNetV1SE) from an RGB24 frame.
    public init(image: PixelSource, box: Box, scale: Double) throws {
        var bgr = [UInt8](repeating: 0, count: Self.side * Self.side * 3)
        self.rect = try bgr.withUnsafeMutableBufferPointer {
            try Self.crop(image: image, box: box, scale: scale, into: $0.baseAddress!)
        }
        self.bgr = bgr
    }

    /// The same crop written into `output` (`side` × `side` × 3 bytes, BGR): the pipeline's way, into a
    /// buffer it reuses, with nothing allocated. Returns the crop's corners.
    @discardableResult
    public static func crop(
        image: PixelSource, box: Box, scale: Double, into output: UnsafeMutablePointer<UInt8>
    ) throws -> Rect {
        guard image.layout == .rgb24 else { throw Failure("the frame must be RGB24, not \(image.layout)") }
        let rect = try Self.cropRect(frameWidth: image.width, frameHeight: image.height, box: box, scale: scale)
        try Self.resizeLinear(source: image, rect: rect, outputSide: Self.side, swapRB: true, into: output)
        return rect
    }

    // MARK: - The box

    /// The box the reference gives the models for a YuNet face (x, y, w, h in frame pixels):
    /// `(int(x), int(y), int(w) + 1, int(h) + 1)`, int() truncating toward zero.
    public static func referenceBox(x: Double, y: Double, width: Double, height: Double) throws -> Box {
        func sane(_ value: Double) -> Bool { value.isFinite && abs(value) < 1e15 }
        guard sane(x), sane(y), sane(width), sane(height) else {
            throw Failure("face box \([x, y, width, height]) is not finite")
        }
        return Box(x: Int(x), y: Int(y), width: Int(width) + 1, height: Int(height) + 1)
    }

    /// The reference's box for the pipeline's face box (`DetectorLocator` maps the detector's Float box to
    /// frame pixels in Double; the reference divides in float32, so a coordinate within one float32 ulp of
    /// an integer may truncate differently: use `referenceBox(detected:…)` when the detector's face is at hand).
    public static func referenceBox(_ face: FaceBox) throws -> Box {
        try Self.referenceBox(x: face.x, y: face.y, width: face.width, height: face.height)
    }

    /// The reference's box for a face YuNet found on the frame scaled to `detectionWidth` pixels wide,
    /// with the reference's arithmetic: `v / s`, `s = detectionWidth / frameWidth`, where `v` is float32
    /// and NumPy 2 (NEP 50) keeps the quotient in float32.
    public static func referenceBox(detected face: DetectedFace, frameWidth: Int, detectionWidth: Int) throws -> Box {
        guard frameWidth > 0, detectionWidth > 0 else {
            throw Failure("frame width \(frameWidth) and detection width \(detectionWidth) must be positive")
        }
        let s = Float(Double(detectionWidth) / Double(frameWidth))
        return try Self.referenceBox(
            x: Double(face.x / s), y: Double(face.y / s), width: Double(face.width / s),
            height: Double(face.height / s))
    }

    // MARK: - The crop rectangle

    /// Upstream's `CropImage._get_new_box` (the reference's `crop_box`), in Double as Python floats:
    /// the scale is capped so the crop fits the frame, the crop is centred on the box, a side that leaves
    /// the frame is moved back with the opposite side following, and the corners are truncated toward zero.
    public static func cropRect(frameWidth: Int, frameHeight: Int, box: Box, scale: Double) throws -> Rect {
        guard frameWidth > 0, frameHeight > 0 else { throw Failure("empty frame \(frameWidth)×\(frameHeight)") }
        guard box.width > 0, box.height > 0 else { throw Failure("empty face box \(box)") }
        guard scale.isFinite, scale > 0 else { throw Failure("scale \(scale) is not a positive number") }
        let (w, h) = (Double(frameWidth), Double(frameHeight))
        let (x, y, bw, bh) = (Double(box.x), Double(box.y), Double(box.width), Double(box.height))
        // min((frame_h - 1) / bh, min((frame_w - 1) / bw, scale))
        let scale = min((h - 1) / bh, min((w - 1) / bw, scale))
        let (nw, nh) = (bw * scale, bh * scale)
        let (cx, cy) = (bw / 2 + x, bh / 2 + y)
        var (left, top, right, bottom) = (cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2)
        if left < 0 {
            right -= left
            left = 0
        }
        if top < 0 {
            bottom -= top
            top = 0
        }
        if right > w - 1 {
            left -= right - w + 1
            right = w - 1
        }
        if bottom > h - 1 {
            top -= bottom - h + 1
            bottom = h - 1
        }
        func sane(_ value: Double) -> Bool { value.isFinite && abs(value) < 1e15 }
        guard sane(left), sane(top), sane(right), sane(bottom) else {
            throw Failure("crop corners \([left, top, right, bottom]) are not finite")
        }
        let rect = Rect(left: Int(left), top: Int(top), right: Int(right), bottom: Int(bottom))
        // Always true for a positive box (the scale cap keeps the crop inside); checked rather than trusted.
        guard rect.left >= 0, rect.top >= 0, rect.right < frameWidth, rect.bottom < frameHeight,
            rect.width > 0, rect.height > 0
        else { throw Failure("crop \(rect) for box \(box) is not inside the \(frameWidth)×\(frameHeight) frame") }
        return rect
    }

    // MARK: - OpenCV's bilinear resize

    /// OpenCV 4.x/5.x `cv::resize(src, dst, (side, side))` (default `INTER_LINEAR`) on an 8-bit 3-channel
    /// crop, bit for bit; `swapRB` writes the channels reversed (RGB in, BGR out: each channel is resized on
    /// its own, so the order does not matter to the arithmetic).
    ///
    /// What is matched (modules/imgproc/src/resize.cpp):
    /// - same size: a plain copy (`cv::resize` returns `src.copyTo(dst)`);
    /// - exactly 2× down in both directions: `INTER_AREA`'s fast path, `(a + b + c + d + 2) >> 2`
    ///   (hal::resize switches to it; it gives the same bytes as the linear path would);
    /// - otherwise, per output column: `fx = float((dx + 0.5)·scale_x − 0.5)`, `sx = floor(fx)`, `fx −= sx`,
    ///   clamped to the first/last column with weight (1, 0); coefficients `saturate_cast<short>(w · 2048)`
    ///   (round half to even, from float); per output row the same, but only the row indices are clamped,
    ///   not the weights; horizontal pass `S[sx]·a0 + S[sx+1]·a1` in int32, vertical pass as the SIMD
    ///   `VResizeLinearVec_32s8u` (it covers all 240 bytes of an 80-pixel row):
    ///   `(((S0 >> 4)·b0 >> 16) + ((S1 >> 4)·b1 >> 16) + 2) >> 2`.
    public static func resizeLinear(
        source: PixelSource, rect: Rect, outputSide: Int = MiniFASNetCrop.side, swapRB: Bool,
        into output: UnsafeMutablePointer<UInt8>
    ) throws {
        guard source.layout == .rgb24 else { throw Failure("the source must have 3 channels, not \(source.layout)") }
        guard outputSide > 0 else { throw Failure("output side \(outputSide) must be positive") }
        guard rect.width > 0, rect.height > 0 else { throw Failure("empty crop \(rect)") }
        guard rect.left >= 0, rect.top >= 0, rect.right < source.width, rect.bottom < source.height else {
            throw Failure("crop \(rect) is not inside the \(source.width)×\(source.height) source")
        }
        let base = source.base + rect.top * source.rowStride + rect.left * 3
        let (sw, sh, stride, side) = (rect.width, rect.height, source.rowStride, outputSide)
        let (c0, c1, c2) = swapRB ? (2, 1, 0) : (0, 1, 2)
        // Output channel c reads source channel order(c).
        func order(_ c: Int) -> Int { c == 0 ? c0 : c == 1 ? c1 : c2 }

        if sw == side && sh == side {
            for y in 0..<side {
                let s = base + y * stride
                let d = output + y * side * 3
                for x in 0..<side {
                    d[3 * x] = s[3 * x + c0]
                    d[3 * x + 1] = s[3 * x + c1]
                    d[3 * x + 2] = s[3 * x + c2]
                }
            }
            return
        }
        if sw == 2 * side && sh == 2 * side {
            for y in 0..<side {
                let s0 = base + 2 * y * stride
                let s1 = s0 + stride
                let d = output + y * side * 3
                for x in 0..<side {
                    for c in 0..<3 {
                        let i = 6 * x + order(c)
                        let sum = Int(s0[i]) + Int(s0[i + 3]) + Int(s1[i]) + Int(s1[i + 3])
                        d[3 * x + c] = UInt8((sum + 2) >> 2)
                    }
                }
            }
            return
        }

        // Column offsets (in bytes of a source row) and weights, as resize()'s xofs/ialpha, and two rows of
        // the horizontal pass: on the stack (each under the 1 KiB that Swift puts there without asking the
        // system for the stack's bounds, for the 80-pixel side), so a crop allocates nothing.
        let scaleX = 1.0 / (Double(side) / Double(sw))
        withUnsafeTemporaryAllocation(of: Int32.self, capacity: 2 * side) { offsets in
            withUnsafeTemporaryAllocation(of: Int32.self, capacity: 2 * side) { alphas in
                withUnsafeTemporaryAllocation(of: Int32.self, capacity: 3 * side) { row0 in
                    withUnsafeTemporaryAllocation(of: Int32.self, capacity: 3 * side) { row1 in
                        Self.resizeRows(
                            base: base, stride: stride, sw: sw, sh: sh, side: side, scaleX: scaleX,
                            xOffset: offsets.baseAddress!, xNext: offsets.baseAddress! + side,
                            alpha0: alphas.baseAddress!, alpha1: alphas.baseAddress! + side, row0: row0, row1: row1,
                            order: (c0, c1, c2), into: output)
                    }
                }
            }
        }
    }

    /// The general case of `resizeLinear`, with its tables in memory the caller provides.
    private static func resizeRows(
        base: UnsafePointer<UInt8>, stride: Int, sw: Int, sh: Int, side: Int, scaleX: Double,
        xOffset: UnsafeMutablePointer<Int32>, xNext: UnsafeMutablePointer<Int32>, alpha0: UnsafeMutablePointer<Int32>,
        alpha1: UnsafeMutablePointer<Int32>, row0: UnsafeMutableBufferPointer<Int32>,
        row1: UnsafeMutableBufferPointer<Int32>, order channels: (Int, Int, Int),
        into output: UnsafeMutablePointer<UInt8>
    ) {
        @inline(__always) func order(_ c: Int) -> Int { c == 0 ? channels.0 : c == 1 ? channels.1 : channels.2 }
        for dx in 0..<side {
            var fx = Float((Double(dx) + 0.5) * scaleX - 0.5)
            var sx = Int(fx.rounded(.down))
            fx -= Float(sx)
            if sx < 0 {
                fx = 0
                sx = 0
            }
            if sx >= sw - 1 {
                // HResizeLinear's tail (dx ≥ xmax): S[sx]·2048, no second tap.
                sx = sw - 1
                xOffset[dx] = Int32(3 * sx)
                xNext[dx] = Int32(3 * sx)
                alpha0[dx] = 2048
                alpha1[dx] = 0
                continue
            }
            xOffset[dx] = Int32(3 * sx)
            xNext[dx] = Int32(3 * (sx + 1))
            alpha0[dx] = Self.coefficient(1 - fx)
            alpha1[dx] = Self.coefficient(fx)
        }

        let scaleY = 1.0 / (Double(side) / Double(sh))
        // The horizontal pass for source row `sy`, channels in source order.
        func horizontal(_ sy: Int, into row: UnsafeMutableBufferPointer<Int32>) {
            let s = base + sy * stride
            for dx in 0..<side {
                let p = s + Int(xOffset[dx])
                let q = s + Int(xNext[dx])
                let (a0, a1) = (alpha0[dx], alpha1[dx])
                for c in 0..<3 {
                    row[3 * dx + c] = Int32(p[c]) * a0 + Int32(q[c]) * a1
                }
            }
        }
        var loaded = (-1, -1)
        for dy in 0..<side {
            var fy = Float((Double(dy) + 0.5) * scaleY - 0.5)
            let sy = Int(fy.rounded(.down))
            fy -= Float(sy)
            let b0 = Self.coefficient(1 - fy)
            let b1 = Self.coefficient(fy)
            let y0 = min(max(sy, 0), sh - 1)
            let y1 = min(max(sy + 1, 0), sh - 1)
            if loaded.0 != y0 { horizontal(y0, into: row0) }
            if loaded.1 != y1 { horizontal(y1, into: row1) }
            loaded = (y0, y1)
            let d = output + dy * side * 3
            for dx in 0..<side {
                for c in 0..<3 {
                    let i = 3 * dx + order(c)
                    d[3 * dx + c] = Self.vertical(row0[i], row1[i], b0, b1)
                }
            }
        }
    }

    /// `saturate_cast<short>(w * INTER_RESIZE_COEF_SCALE)` on a float: round half to even, as cvRound.
    @inline(__always)
    static func coefficient(_ weight: Float) -> Int32 {
        Int32(min(max((weight * 2048).rounded(.toNearestOrEven), -32768), 32767))
    }

    /// One output byte of `VResizeLinearVec_32s8u`: v_pack(S >> 4) to int16 (saturating), v_mul_hi with
    /// the int16 weight, saturating int16 add, then v_rshr_pack_u<2> (+2, >> 2, saturate to 0…255).
    @inline(__always)
    static func vertical(_ s0: Int32, _ s1: Int32, _ b0: Int32, _ b1: Int32) -> UInt8 {
        let p0 = min(max(s0 >> 4, -32768), 32767)
        let p1 = min(max(s1 >> 4, -32768), 32767)
        let sum = min(max(((p0 * b0) >> 16) + ((p1 * b1) >> 16), -32768), 32767)
        return UInt8(min(max((sum + 2) >> 2, 0), 255))
    }
}
