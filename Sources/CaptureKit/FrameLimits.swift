/// The largest pictures capture accepts. A camera or a clip never comes near them; a crafted file does
/// (an 8 KB PNG of 1x32,768 pixels once drove `classify` past 6 GiB), so they are refused before
/// any pixel buffer is allocated for them.
public enum FrameLimits {
    /// Pixels on either side.
    public static let maximumSide = 16_384
    /// Pixels in all (about 9,000x9,000).
    public static let maximumPixels = 80_000_000
    /// Long side over short side.
    public static let maximumAspect = 16

    /// Why a `width`x`height` picture is refused, or nil when it is within the limits.
    public static func problem(width: Int, height: Int) -> String? {
        guard width > 0, height > 0 else { return "picture has an invalid size \(width)x\(height)" }
        if width > Self.maximumSide || height > Self.maximumSide {
            return "picture is \(width)x\(height) pixels; the limit is \(Self.maximumSide) on either side"
        }
        if width * height > Self.maximumPixels {
            return "picture is \(width)x\(height) pixels (\(width * height / 1_000_000) megapixels); the limit is "
                + "\(Self.maximumPixels / 1_000_000) megapixels"
        }
        if max(width, height) / min(width, height) > Self.maximumAspect {
            return "picture is \(width)x\(height) pixels; the longest side may be at most \(Self.maximumAspect) "
                + "times the shortest"
        }
        return nil
    }
}
