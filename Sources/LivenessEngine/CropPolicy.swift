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

    /// The whole pixels the box covers inside a `frameWidth` × `frameHeight` frame (nil when none).
    public func pixels(inFrameWidth frameWidth: Int, height frameHeight: Int) -> PixelRect? {
        let x0 = max(0, Int(self.x.rounded(.down)))
        let y0 = max(0, Int(self.y.rounded(.down)))
        let x1 = min(frameWidth, Int((self.x + self.width).rounded(.up)))
        let y1 = min(frameHeight, Int((self.y + self.height).rounded(.up)))
        guard x1 > x0, y1 > y0 else { return nil }
        return PixelRect(x: x0, y: y0, width: x1 - x0, height: y1 - y0)
    }
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
        let wanted = max(1, Int((self.scale * max(face.width, face.height)).rounded()))
        switch self.edges {
        case .shift:
            let side = min(wanted, frameWidth, frameHeight)
            let x = Int((face.centreX - Double(side) / 2).rounded())
            let y = Int((face.centreY - Double(side) / 2).rounded())
            return PixelRect(
                x: min(max(x, 0), frameWidth - side), y: min(max(y, 0), frameHeight - side), width: side, height: side)
        case .clamp:
            let x = Int((face.centreX - Double(wanted) / 2).rounded())
            let y = Int((face.centreY - Double(wanted) / 2).rounded())
            let x0 = min(max(x, 0), frameWidth - 1)
            let y0 = min(max(y, 0), frameHeight - 1)
            let x1 = min(max(x + wanted, x0 + 1), frameWidth)
            let y1 = min(max(y + wanted, y0 + 1), frameHeight)
            return PixelRect(x: x0, y: y0, width: x1 - x0, height: y1 - y0)
        }
    }
}
