/// Checks that decide whether a detected face can be judged at all. A face that fails one is
/// "unusable" with the gate's reason: never a verdict. Pure: works on the 8-bit luma (PIL's L) of
/// the face box and the box's geometry. The limits' reasons are in docs/CROP_POLICY.md.
public struct QualityGates: Sendable, Equatable {
    /// Why a frame cannot be judged; the raw values are what `classify` and events report.
    public enum Reason: String, Sendable, Equatable, CaseIterable {
        case noFace = "no_face"
        case faceTooSmall = "face_too_small"
        case faceCutByEdge = "face_cut_by_edge"
        case tooDark = "too_dark"
        case tooBright = "too_bright"
        case tooBlurred = "too_blurred"
    }

    /// Luma statistics of a face box.
    public struct Measurements: Sendable, Equatable {
        /// Mean luma, 0…255.
        public var meanLuma: Double
        /// Variance of the 3×3 Laplacian (4-neighbour) over the box resampled to `sharpnessSide`.
        public var sharpness: Double

        public init(meanLuma: Double, sharpness: Double) {
            self.meanLuma = meanLuma
            self.sharpness = sharpness
        }
    }

    /// Faces whose box's longer side is shorter than this (frame pixels) are too small.
    public var minimumFaceSide: Double
    /// Mean luma of the face box below this is too dark, above `maximumMeanLuma` too bright.
    public var minimumMeanLuma: Double
    public var maximumMeanLuma: Double
    /// Laplacian variance below this is too blurred.
    public var minimumSharpness: Double
    /// The box may reach outside the frame by at most this fraction of its own width/height per side.
    public var edgeMarginFraction: Double

    /// The box is area-averaged down to this side before the Laplacian, so sharpness does not depend
    /// on how many pixels the face covers (a sharp 2000-pixel selfie face has a tiny per-pixel
    /// Laplacian). Boxes already smaller are used as they are.
    public static let sharpnessSide = 128

    public init(
        minimumFaceSide: Double = 40, minimumMeanLuma: Double = 30, maximumMeanLuma: Double = 220,
        minimumSharpness: Double = 12, edgeMarginFraction: Double = 0.15
    ) {
        self.minimumFaceSide = minimumFaceSide
        self.minimumMeanLuma = minimumMeanLuma
        self.maximumMeanLuma = maximumMeanLuma
        self.minimumSharpness = minimumSharpness
        self.edgeMarginFraction = edgeMarginFraction
    }

    /// The geometric gates (size, frame edge): they need no pixels. First failing reason, or nil.
    public func checkGeometry(_ face: FaceBox, frameWidth: Int, frameHeight: Int) -> Reason? {
        if max(face.width, face.height) < self.minimumFaceSide { return .faceTooSmall }
        let marginX = self.edgeMarginFraction * face.width
        let marginY = self.edgeMarginFraction * face.height
        if face.x < -marginX || face.y < -marginY || face.x + face.width > Double(frameWidth) + marginX
            || face.y + face.height > Double(frameHeight) + marginY
        {
            return .faceCutByEdge
        }
        return nil
    }

    /// The luma gates on the box's measurements. First failing reason, or nil.
    public func checkLuma(_ measurements: Measurements) -> Reason? {
        if measurements.meanLuma < self.minimumMeanLuma { return .tooDark }
        if measurements.meanLuma > self.maximumMeanLuma { return .tooBright }
        if measurements.sharpness < self.minimumSharpness { return .tooBlurred }
        return nil
    }

    /// Mean luma and Laplacian variance of a luma image (`rowStride` bytes per row).
    public static func measure(luma: UnsafePointer<UInt8>, width: Int, height: Int, rowStride: Int) -> Measurements {
        precondition(width > 0 && height > 0 && rowStride >= width, "bad luma geometry")
        var sum = 0
        for y in 0..<height {
            let row = luma + y * rowStride
            for x in 0..<width { sum += Int(row[x]) }
        }
        let mean = Double(sum) / Double(width * height)
        // Area-average to at most sharpnessSide per side (each output pixel: the mean of its input cell).
        let outWidth = min(width, Self.sharpnessSide)
        let outHeight = min(height, Self.sharpnessSide)
        var small = [Float](repeating: 0, count: outWidth * outHeight)
        for oy in 0..<outHeight {
            let y0 = oy * height / outHeight
            let y1 = max(y0 + 1, (oy + 1) * height / outHeight)
            for ox in 0..<outWidth {
                let x0 = ox * width / outWidth
                let x1 = max(x0 + 1, (ox + 1) * width / outWidth)
                var cell = 0
                for y in y0..<y1 {
                    let row = luma + y * rowStride
                    for x in x0..<x1 { cell += Int(row[x]) }
                }
                small[oy * outWidth + ox] = Float(cell) / Float((y1 - y0) * (x1 - x0))
            }
        }
        return Measurements(
            meanLuma: mean, sharpness: Self.laplacianVariance(small, width: outWidth, height: outHeight))
    }

    /// Variance of [[0,1,0],[1,-4,1],[0,1,0]] over the interior pixels (OpenCV's `Laplacian` ksize 1).
    static func laplacianVariance(_ image: [Float], width: Int, height: Int) -> Double {
        guard width >= 3, height >= 3 else { return 0 }
        var sum = 0.0
        var squares = 0.0
        for y in 1..<(height - 1) {
            for x in 1..<(width - 1) {
                let i = y * width + x
                let value = Double(image[i - 1] + image[i + 1] + image[i - width] + image[i + width] - 4 * image[i])
                sum += value
                squares += value * value
            }
        }
        let count = Double((width - 2) * (height - 2))
        let mean = sum / count
        return max(0, squares / count - mean * mean)
    }
}
