import CaptureKit
import Foundation
import LivenessEngine

/// Finds the face with YuNet, checks the quality gates and picks the crop by the `CropPolicy`.
///
/// The frame is converted to BGR24 at `detectionWidth` (height by aspect) for the detector; the
/// largest face is judged and mapped back to frame pixels; the gates read the face box's luma
/// (Pillow's L) from the RGB24 picture the pipeline already made.
///
/// Not thread-safe (keeps the detector's buffers and a swscale context): one per source lane.
public final class DetectorLocator: FaceLocator {
    public struct Configuration: Sendable, Equatable {
        /// YuNet was trained around 320-pixel-wide inputs (OpenCV Zoo's demo size).
        public var detectionWidth = 320
        /// As the golden files (`../shared/golden/yunet`): catches turned and dim faces that the
        /// OpenCV default 0.9 misses; the gates judge them afterwards.
        public var scoreThreshold: Float = 0.6
        public var nmsThreshold: Float = 0.3
        public var crop = CropPolicy()
        public var gates = QualityGates()
        /// Detect less, track between (issue 14): after a detection that found a face, the next frames up
        /// to this much frame time later reuse its face box instead of running YuNet again, as long as the
        /// face stays where it was (`trackingMotionLimit`); the gates and crops still read each frame's own
        /// pixels. 0: detect on every analysed frame. At the daemon's default analysis rate (5 fps, 0.2 s
        /// apart) every analysed frame is detected anyway; it saves YuNet on fast streams and in `eval`.
        /// The box is not moved between detections (the motion check sends a moving face back to YuNet).
        public var trackingSeconds = 0.0
        /// What the commands use when neither a flag nor the config says: off. Measured on the shared clips
        /// (docs/ARCHITECTURE.md, "Detect less, track between"): at 0.1 s a third of the detections are
        /// saved at every frame, and one bona fide clip 0.003 under the threshold moves above it, so the
        /// decisions are not the same; at the daemon's default 5 fps analysis rate it would never apply.
        public static let defaultTrackingSeconds = 0.0
        /// Largest mean absolute luma difference (0–255) between the face box now and at its detection,
        /// sampled on a 16×16 grid, for the box to be reused; beyond it the frame is detected again.
        public var trackingMotionLimit = 6.0

        public init(crop: CropPolicy = CropPolicy(), gates: QualityGates = QualityGates()) {
            self.crop = crop
            self.gates = gates
        }
    }

    /// What the detector and the gates found in one frame.
    public struct Analysis: Sendable, Equatable {
        /// Faces found, in frame pixels, best score first.
        public var faces: [FaceBox]
        /// The face judged (the largest), if any.
        public var face: FaceBox?
        /// Its luma statistics, when it passed the geometric gates.
        public var measurements: QualityGates.Measurements?
        /// Why it cannot be judged; nil when it can.
        public var rejection: QualityGates.Reason?
        /// A failure of conversion or detection (then `rejection` is nil and nothing is judged).
        public var error: String?
        /// The judged face as the MiniFASNet reference gives it to its crop (whole pixels, from the
        /// detector's own float32 box and the reference's arithmetic).
        public var referenceBox: MiniFASNetCrop.Box?
    }

    public let configuration: Configuration
    private let detector: FaceDetector
    private let converter = PixelConverter()
    private let bgr = PaddedPicture()
    private var luma: [UInt8] = []
    /// The last analysis's faces; its memory is reused by the next one.
    private var faces: [FaceBox] = []
    /// The last detection that found a judgeable box, its frame time and the box's luma grid (tracking).
    private var tracked: (analysis: Analysis, time: Double, frameWidth: Int, frameHeight: Int)?
    private var trackedGrid = [UInt8](repeating: 0, count: DetectorLocator.gridSide * DetectorLocator.gridSide)
    private var grid = [UInt8](repeating: 0, count: DetectorLocator.gridSide * DetectorLocator.gridSide)
    /// Frames located from a tracked box, and by running the detector (for benchmarks and tests).
    public private(set) var trackedFrames = 0
    public private(set) var detectedFrames = 0

    public init(detector: FaceDetector, configuration: Configuration = Configuration()) {
        self.configuration = configuration
        detector.configuration.scoreThreshold = configuration.scoreThreshold
        detector.configuration.nmsThreshold = configuration.nmsThreshold
        self.detector = detector
    }

    public convenience init(modelURL: URL, configuration: Configuration = Configuration()) throws {
        try self.init(detector: FaceDetector(contentsOf: modelURL), configuration: configuration)
    }

    public func locate(image: PixelSource, frame: Frame) -> FaceLocation {
        let analysis = self.analyse(image: image, frame: frame)
        return self.location(
            for: analysis, frameWidth: image.width, frameHeight: image.height, crop: self.configuration.crop)
    }

    /// The pipeline's answer for an analysis under `crop`.
    public func location(for analysis: Analysis, frameWidth: Int, frameHeight: Int, crop: CropPolicy) -> FaceLocation {
        if let error = analysis.error { return .unusable(reason: error, box: nil) }
        guard let face = analysis.face else { return .noFace }
        if let rejection = analysis.rejection {
            return .unusable(
                reason: rejection.rawValue, box: face.pixels(inFrameWidth: frameWidth, height: frameHeight))
        }
        return .face(
            crop.crop(for: face, frameWidth: frameWidth, frameHeight: frameHeight), faceCount: analysis.faces.count,
            box: analysis.referenceBox)
    }

    /// Long side over short side beyond which a frame is not searched for faces.
    static let maximumAspect = 8

    /// Detect (or reuse a tracked box: `Configuration.trackingSeconds`), pick the largest face, run the
    /// gates. `image` is the frame as RGB24.
    public func analyse(image: PixelSource, frame: Frame) -> Analysis {
        if let analysis = self.trackedAnalysis(image: image, frame: frame) {
            self.trackedFrames += 1
            return analysis
        }
        self.detectedFrames += 1
        let analysis = self.detect(image: image, frame: frame)
        self.tracked = nil
        if self.configuration.trackingSeconds > 0, analysis.error == nil, let face = analysis.face,
            let box = face.pixels(inFrameWidth: image.width, height: image.height)
        {
            Self.sampleGrid(image, box: box, into: &self.trackedGrid)
            self.tracked = (analysis, frame.presentationTimeSeconds, image.width, image.height)
        }
        return analysis
    }

    /// The last detection's face on this frame, when it is recent enough and the face has not moved: its
    /// box, with the luma gates measured on this frame's pixels. Nil: detect.
    private func trackedAnalysis(image: PixelSource, frame: Frame) -> Analysis? {
        guard let tracked = self.tracked, tracked.frameWidth == image.width, tracked.frameHeight == image.height,
            case let elapsed = frame.presentationTimeSeconds - tracked.time,
            // (1 ms of slack: a 30 fps frame 0.1 s later has a time 0.0999… later.)
            elapsed >= 0, elapsed + 0.001 < self.configuration.trackingSeconds,
            let face = tracked.analysis.face, let box = face.pixels(inFrameWidth: image.width, height: image.height)
        else { return nil }
        Self.sampleGrid(image, box: box, into: &self.grid)
        var difference = 0
        for index in self.grid.indices {
            difference += abs(Int(self.grid[index]) - Int(self.trackedGrid[index]))
        }
        guard Double(difference) / Double(self.grid.count) <= self.configuration.trackingMotionLimit else {
            return nil
        }
        var analysis = tracked.analysis
        // The geometry is the detection's; the light is this frame's.
        if analysis.measurements != nil {
            let measurements = self.measure(image.cropped(to: box))
            analysis.measurements = measurements
            analysis.rejection = self.configuration.gates.checkLuma(measurements)
        }
        return analysis
    }

    /// Side of the luma grid a tracked box is compared on.
    static let gridSide = 16

    /// Luma (Pillow's L) at the centres of a `gridSide`² grid over `box`.
    static func sampleGrid(_ image: PixelSource, box: PixelRect, into grid: inout [UInt8]) {
        let side = Self.gridSide
        for row in 0..<side {
            let y = box.y + (2 * row + 1) * box.height / (2 * side)
            for column in 0..<side {
                let x = box.x + (2 * column + 1) * box.width / (2 * side)
                if image.layout == .luma8 {
                    grid[row * side + column] = image.base[y * image.rowStride + x]
                } else {
                    grid.withUnsafeMutableBufferPointer {
                        PixelConverter.pillowLuma(
                            rgb: image.base + y * image.rowStride + 3 * x, pixels: 1,
                            into: $0.baseAddress! + row * side + column)
                    }
                }
            }
        }
    }

    /// Detect, pick the largest face, run the gates.
    private func detect(image: PixelSource, frame: Frame) -> Analysis {
        var analysis = Analysis(faces: [])
        let width = self.configuration.detectionWidth
        // The detection height follows the aspect ratio; beyond 1:8 no face can be found anyway, and a
        // 1x16,384 frame would otherwise ask for a 320x5,242,880 buffer.
        guard frame.width > 0, frame.height > 0,
            max(frame.width, frame.height) <= Self.maximumAspect * min(frame.width, frame.height)
        else {
            analysis.error =
                "frame is \(frame.width)x\(frame.height) pixels: too narrow or too wide for face detection "
                + "(the longest side may be at most \(Self.maximumAspect) times the shortest)"
            return analysis
        }
        let height = max(1, Int((Double(width) * Double(frame.height) / Double(frame.width)).rounded()))
        var detected: [DetectedFace] = []
        do {
            // Straight from swscale into the padded picture YuNet reads (no scratch picture, no row copy).
            try self.converter.convert(frame, to: .bgr24, width: width, height: height, into: self.bgr)
            detected = try self.detector.detect(
                bgr: self.bgr.pointer, width: width, height: height, rowStride: self.bgr.rowStride)
            let scaleX = Double(frame.width) / Double(width)
            let scaleY = Double(frame.height) / Double(height)
            // Into the previous analysis's memory (it was dropped with the frame it described).
            self.faces.removeAll(keepingCapacity: true)
            var finite = 0
            for face in detected {
                let box = FaceBox(
                    x: Double(face.x) * scaleX, y: Double(face.y) * scaleY, width: Double(face.width) * scaleX,
                    height: Double(face.height) * scaleY)
                // A box that is not finite (NaN weights, a bad frame) locates nothing: judged as no face.
                // The detections are kept in step with the boxes, so an index names the same face in both.
                guard box.isFinite else { continue }
                self.faces.append(box)
                detected[finite] = face
                finite += 1
            }
            detected.removeLast(detected.count - finite)
            analysis.faces = self.faces
        } catch {
            analysis.error = "face detection failed: \(error)"
            return analysis
        }
        guard
            let chosen = analysis.faces.indices.max(by: {
                analysis.faces[$0].width * analysis.faces[$0].height < analysis.faces[$1].width
                    * analysis.faces[$1].height
            })
        else {
            analysis.rejection = .noFace
            return analysis
        }
        let face = analysis.faces[chosen]
        analysis.face = face
        analysis.referenceBox = try? MiniFASNetCrop.referenceBox(
            detected: detected[chosen], frameWidth: frame.width, detectionWidth: width)
        let gates = self.configuration.gates
        if let reason = gates.checkGeometry(face, frameWidth: image.width, frameHeight: image.height) {
            analysis.rejection = reason
            return analysis
        }
        guard let box = face.pixels(inFrameWidth: image.width, height: image.height) else {
            analysis.rejection = .faceCutByEdge
            return analysis
        }
        let measurements = self.measure(image.cropped(to: box))
        analysis.measurements = measurements
        analysis.rejection = gates.checkLuma(measurements)
        return analysis
    }

    /// Luma statistics of the face box, from RGB24 (Pillow's L) or a luma plane.
    private func measure(_ box: PixelSource) -> QualityGates.Measurements {
        if box.layout == .luma8 {
            return QualityGates.measure(luma: box.base, width: box.width, height: box.height, rowStride: box.rowStride)
        }
        let count = box.width * box.height
        if self.luma.count < count { self.luma = [UInt8](repeating: 0, count: count) }
        return self.luma.withUnsafeMutableBufferPointer { luma in
            for row in 0..<box.height {
                PixelConverter.pillowLuma(
                    rgb: box.base + row * box.rowStride, pixels: box.width, into: luma.baseAddress! + row * box.width)
            }
            return QualityGates.measure(
                luma: luma.baseAddress!, width: box.width, height: box.height, rowStride: box.width)
        }
    }
}
