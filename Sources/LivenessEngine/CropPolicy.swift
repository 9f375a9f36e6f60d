/// A face box in frame pixels, as the detector gives it (fractional, may reach outside the frame).
public struct FaceBox: Sendable, Equatable {
    public var x, y, width, height: Double

    public init(x: Double, y: Double, width: Double, height: Double) {
        self.x = x
        self.y = y
        self.width = width
        self.height = height
    }

    public var centreX: Double { self.x + self.width / 2 }
    public var centreY: Double { self.y + self.height / 2 }

    /// Whether every coordinate is a finite number (a detector fed NaN weights or a bad frame may say otherwise).
    public var isFinite: Bool {
        self.x.isFinite && self.y.isFinite && self.width.isFinite && self.height.isFinite
    }

    /// The whole pixels the box covers inside a `frameWidth` × `frameHeight` frame (nil when none, or when
    /// the box is not finite). Clamped in floating point first, so a 1e300 box cannot trap the conversion.
    public func pixels(inFrameWidth frameWidth: Int, height frameHeight: Int) -> PixelRect? {
        guard self.isFinite, frameWidth > 0, frameHeight > 0 else { return nil }
        let x0 = Int(bounded(self.x.rounded(.down), 0, Double(frameWidth)))
        let y0 = Int(bounded(self.y.rounded(.down), 0, Double(frameHeight)))
        let x1 = Int(bounded((self.x + self.width).rounded(.up), 0, Double(frameWidth)))
        let y1 = Int(bounded((self.y + self.height).rounded(.up), 0, Double(frameHeight)))
        guard x1 > x0, y1 > y0 else { return nil }
        return PixelRect(x: x0, y: y0, width: x1 - x0, height: y1 - y0)
    }
}

/// `value` limited to `low...high`; NaN becomes `low` (Swift's min and max pass NaN through).
private func bounded(_ value: Double, _ low: Double, _ high: Double) -> Double {
    guard value >= low else { return low }
    return value <= high ? value : high
}

/// Which part of the frame the model judges for a detected face: a square centred on the face box,
/// `scale` × the box's longer side, kept inside the frame.
///
/// The model was trained on face-centred photos and its eval transform centre-crops the short side,
/// so the crop stays square. At a frame edge the square is shifted inward (`.shift`, the default)
/// rather than cut (`.clamp`, which makes it oblong and lets the centre crop cut the face again);
/// padding is not offered: the model never saw padded borders in training. docs/CROP_POLICY.md
/// has the measurement behind the default scale and edge handling.
public struct CropPolicy: Sendable, Equatable {
    public enum EdgeHandling: String, Sendable, Equatable {
        /// Keep the square and move it inside the frame (shrunk to the frame's short side if larger).
        case shift
        /// Intersect the square with the frame.
        case clamp
    }

    /// Crop side / longer side of the face box. Chosen by measurement (docs/CROP_POLICY.md).
    public static let defaultScale = 2.0

    public var scale: Double
    public var edges: EdgeHandling

    public init(scale: Double = CropPolicy.defaultScale, edges: EdgeHandling = .shift) {
        self.scale = scale
        self.edges = edges
    }

    /// The crop for `face` in a `frameWidth` × `frameHeight` frame; never empty, always inside the frame.
    public func crop(for face: FaceBox, frameWidth: Int, frameHeight: Int) -> PixelRect {
        precondition(frameWidth > 0 && frameHeight > 0, "empty frame")
        // A box that is not finite says nothing about where the face is: judge the whole frame instead.
        let face =
            face.isFinite
            ? face : FaceBox(x: 0, y: 0, width: Double(frameWidth), height: Double(frameHeight))
        // Every Double is clamped to a few frame sides before it becomes an Int (1e300 would trap).
        let limit = 4 * Double(max(frameWidth, frameHeight))
        let wanted = Int(bounded((self.scale * max(face.width, face.height)).rounded(), 1, limit))
        let centreX = bounded(face.centreX, -limit, limit)
        let centreY = bounded(face.centreY, -limit, limit)
        switch self.edges {
        case .shift:
            let side = min(wanted, frameWidth, frameHeight)
            let x = Int((centreX - Double(side) / 2).rounded())
            let y = Int((centreY - Double(side) / 2).rounded())
            return PixelRect(
                x: min(max(x, 0), frameWidth - side), y: min(max(y, 0), frameHeight - side), width: side, height: side)
        case .clamp:
            let x = Int((centreX - Double(wanted) / 2).rounded())
            let y = Int((centreY - Double(wanted) / 2).rounded())
            let x0 = min(max(x, 0), frameWidth - 1)
            let y0 = min(max(y, 0), frameHeight - 1)
            let x1 = min(max(x + wanted, x0 + 1), frameWidth)
            let y1 = min(max(y + wanted, y0 + 1), frameHeight)
            return PixelRect(x: x0, y: y0, width: x1 - x0, height: y1 - y0)
        }
    }
}
