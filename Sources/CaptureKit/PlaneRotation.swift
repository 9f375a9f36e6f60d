/// Turns 8-bit planes upright (90° steps and mirrors), for phone clips with display-matrix
/// rotation and EXIF-oriented pictures. Written by hand: swscale does not rotate, and libavfilter's
/// transpose would pull a filter graph into every decode for a copy loop.
enum PlaneRotation {
    /// Output size of a `width` × `height` plane after `orientation`.
    static func size(width: Int, height: Int, orientation: Orientation) -> (width: Int, height: Int) {
        switch orientation {
        case .leftMirrored, .right, .rightMirrored, .left: return (height, width)
        default: return (width, height)
        }
    }

    /// Copies a plane of `bytesPerPixel`-byte pixels from `source` to `destination`, upright.
    static func apply(
        _ orientation: Orientation, source: UnsafePointer<UInt8>, sourceStride: Int, width: Int, height: Int,
        bytesPerPixel: Int, destination: UnsafeMutablePointer<UInt8>, destinationStride: Int
    ) {
        let out = Self.size(width: width, height: height, orientation: orientation)
        if orientation == .up {
            for y in 0..<height {
                (destination + y * destinationStride).update(
                    from: source + y * sourceStride, count: width * bytesPerPixel)
            }
            return
        }
        for y in 0..<out.height {
            let row = destination + y * destinationStride
            for x in 0..<out.width {
                // Source coordinate of upright pixel (x, y), as in Orientation.apply(to:).
                let (sx, sy): (Int, Int)
                switch orientation {
                case .up: (sx, sy) = (x, y)
                case .upMirrored: (sx, sy) = (width - 1 - x, y)
                case .down: (sx, sy) = (width - 1 - x, height - 1 - y)
                case .downMirrored: (sx, sy) = (x, height - 1 - y)
                case .leftMirrored: (sx, sy) = (y, x)
                case .right: (sx, sy) = (y, height - 1 - x)
                case .rightMirrored: (sx, sy) = (width - 1 - y, height - 1 - x)
                case .left: (sx, sy) = (width - 1 - y, x)
                }
                let from = source + sy * sourceStride + sx * bytesPerPixel
                for byte in 0..<bytesPerPixel { row[x * bytesPerPixel + byte] = from[byte] }
            }
        }
    }
}
