import Foundation

/// A face found by YuNet, in the pixels of the image given to `FaceDetector.detect`.
public struct DetectedFace: Sendable, Equatable {
    /// Top-left corner and size of the box; it may reach outside the image.
    public var x, y, width, height: Float
    /// Right eye, left eye, nose tip, right and left mouth corner (the subject's right and left),
    /// in OpenCV's order.
    public var landmarks: [SIMD2<Float>]
    /// sqrt(cls · obj), 0…1.
    public var score: Float

    /// The row OpenCV's FaceDetectorYN gives: x, y, w, h, 5 × (x, y), score.
    public var openCVRow: [Float] {
        [self.x, self.y, self.width, self.height] + self.landmarks.flatMap { [$0.x, $0.y] } + [self.score]
    }
}

/// The YuNet face detector (OpenCV Zoo `face_detection_yunet`, the 2023 model with cls/obj/bbox/kps
/// heads at strides 8, 16 and 32), run by `ONNXGraph`, with OpenCV FaceDetectorYN's pre- and
/// post-processing: zero padding right and bottom to a multiple of 32, BGR 0…255 without
/// normalisation, decode, score threshold, NMS. Resizing the picture is the caller's business;
/// YuNet was trained around 320-pixel-wide inputs.
///
/// Not thread-safe: one instance per inference thread.
public final class FaceDetector {
    public struct Configuration: Sendable, Equatable {
        /// Faces scoring below are dropped. OpenCV's default.
        public var scoreThreshold: Float = 0.9
        /// Boxes overlapping a better one by more than this IoU are dropped.
        public var nmsThreshold: Float = 0.3
        /// At most this many candidates enter NMS.
        public var topK = 5000

        public init(scoreThreshold: Float = 0.9, nmsThreshold: Float = 0.3, topK: Int = 5000) {
            self.scoreThreshold = scoreThreshold
            self.nmsThreshold = nmsThreshold
            self.topK = topK
        }
    }

    public static let strides = [8, 16, 32]
    public static let headNames = ["cls", "obj", "bbox", "kps"].flatMap { head in strides.map { "\(head)_\($0)" } }

    public var configuration: Configuration
    let graph: ONNXGraph
    /// Index in the graph outputs of cls_8, cls_16, cls_32, obj_8, …, kps_32.
    let headIndices: [Int]

    public convenience init(contentsOf url: URL, configuration: Configuration = Configuration()) throws {
        try self.init(model: try ONNXModel(contentsOf: url), configuration: configuration)
    }

    public init(model: ONNXModel, configuration: Configuration = Configuration()) throws {
        self.graph = try ONNXGraph(model: model)
        self.configuration = configuration
        let names = self.graph.outputNames
        self.headIndices = try Self.headNames.map { name in
            guard let index = names.firstIndex(of: name) else {
                throw ONNXError(
                    code: .missingValue, path: model.path, node: nil,
                    message: "not a YuNet model: output \(name) is missing (outputs: \(names.joined(separator: ", ")))")
            }
            return index
        }
        // Shape problems show at load time, not on the first frame.
        try self.graph.prepare(inputShape: [1, 3, 32, 32])
    }

    /// Network input size for an image: each side rounded up to a multiple of 32, as OpenCV pads.
    public static func paddedSize(width: Int, height: Int) -> (width: Int, height: Int) {
        (max(1, (width + 31) / 32) * 32, max(1, (height + 31) / 32) * 32)
    }

    /// Faces in an 8-bit BGR image (3 bytes per pixel, `rowStride` bytes per row), best first.
    public func detect(bgr: UnsafePointer<UInt8>, width: Int, height: Int, rowStride: Int) throws -> [DetectedFace] {
        guard width > 0, height > 0 else { return [] }
        precondition(rowStride >= 3 * width, "row stride \(rowStride) is shorter than \(width) BGR pixels")
        try self.forward(bgr: bgr, width: width, height: height, rowStride: rowStride)
        return try self.decode()
    }

    /// The twelve raw outputs (`headNames`) for the image, for checks against ONNX Runtime.
    public func heads(bgr: UnsafePointer<UInt8>, width: Int, height: Int, rowStride: Int) throws -> [String: Tensor] {
        precondition(width > 0 && height > 0 && rowStride >= 3 * width, "bad image geometry")
        try self.forward(bgr: bgr, width: width, height: height, rowStride: rowStride)
        var heads: [String: Tensor] = [:]
        for (name, index) in zip(Self.headNames, self.headIndices) {
            let (data, shape) = self.graph.output(index)
            heads[name] = Tensor(
                shape: shape, values: Array(UnsafeBufferPointer(start: data, count: shape.reduce(1, *))))
        }
        return heads
    }

    /// Pads, converts to planar float (channel order kept: YuNet takes BGR) and runs the network.
    func forward(bgr: UnsafePointer<UInt8>, width: Int, height: Int, rowStride: Int) throws {
        let padded = Self.paddedSize(width: width, height: height)
        try self.graph.prepare(inputShape: [1, 3, padded.height, padded.width])
        let input = self.graph.inputBuffer
        let plane = padded.width * padded.height
        for channel in 0..<3 {
            let destination = input + channel * plane
            for y in 0..<height {
                let row = bgr + y * rowStride + channel
                let line = destination + y * padded.width
                for x in 0..<width { line[x] = Float(row[3 * x]) }
                (line + width).update(repeating: 0, count: padded.width - width)
            }
            (destination + height * padded.width).update(repeating: 0, count: (padded.height - height) * padded.width)
        }
        self.graph.execute()
    }

    /// OpenCV FaceDetectorYN's postProcess on the last forward pass.
    func decode() throws -> [DetectedFace] {
        let shape = self.graph.inputShape
        let (paddedHeight, paddedWidth) = (shape[2], shape[3])
        let threshold = self.configuration.scoreThreshold
        var faces: [DetectedFace] = []
        for (level, stride) in Self.strides.enumerated() {
            let (rows, columns) = (paddedHeight / stride, paddedWidth / stride)
            let count = Self.strides.count
            let cls = self.head(level, rows * columns, 1)
            let obj = self.head(level + count, rows * columns, 1)
            let bbox = self.head(level + 2 * count, rows * columns, 4)
            let kps = self.head(level + 3 * count, rows * columns, 10)
            guard let cls, let obj, let bbox, let kps else {
                throw ONNXError(
                    code: .badShape, path: self.graph.path, node: nil,
                    message: "the stride-\(stride) heads do not hold \(rows) × \(columns) anchors")
            }
            let scale = Float(stride)
            for row in 0..<rows {
                for column in 0..<columns {
                    let index = row * columns + column
                    let score = (min(max(cls[index], 0), 1) * min(max(obj[index], 0), 1)).squareRoot()
                    guard score >= threshold else { continue }
                    let box = bbox + index * 4
                    let centreX = (Float(column) + box[0]) * scale
                    let centreY = (Float(row) + box[1]) * scale
                    let width = Foundation.exp(box[2]) * scale
                    let height = Foundation.exp(box[3]) * scale
                    let points = kps + index * 10
                    let landmarks = (0..<5).map {
                        SIMD2((points[2 * $0] + Float(column)) * scale, (points[2 * $0 + 1] + Float(row)) * scale)
                    }
                    faces.append(
                        DetectedFace(
                            x: centreX - width / 2, y: centreY - height / 2, width: width, height: height,
                            landmarks: landmarks, score: score))
                }
            }
        }
        // OpenCV runs NMS only when there is more than one candidate.
        guard faces.count > 1 else { return faces }
        return Self.nonMaximumSuppression(
            faces, scoreThreshold: threshold, nmsThreshold: self.configuration.nmsThreshold,
            topK: self.configuration.topK)
    }

    private func head(_ index: Int, _ anchors: Int, _ width: Int) -> UnsafePointer<Float>? {
        let (data, shape) = self.graph.output(self.headIndices[index])
        return shape.reduce(1, *) == anchors * width ? data : nil
    }

    /// cv::dnn::NMSBoxes on integer boxes, as FaceDetectorYN calls it: candidates scoring strictly above
    /// the threshold, by descending score (stable), the best `topK`; a box is kept when its IoU with every
    /// kept box is ≤ `nmsThreshold`. Boxes are truncated to integers (`Rect2i`) first, as OpenCV does.
    static func nonMaximumSuppression(
        _ faces: [DetectedFace], scoreThreshold: Float, nmsThreshold: Float, topK: Int
    ) -> [DetectedFace] {
        func truncated(_ value: Float) -> Int {
            let limit: Float = 1_073_741_824  // 2³⁰: keeps areas from overflowing; NaN goes to 0
            return value.isNaN ? 0 : Int(max(min(value, limit), -limit))
        }
        let boxes = faces.map { face in
            (x: truncated(face.x), y: truncated(face.y), width: truncated(face.width), height: truncated(face.height))
        }
        var order = faces.indices.filter { faces[$0].score > scoreThreshold }
        order.sort { faces[$0].score != faces[$1].score ? faces[$0].score > faces[$1].score : $0 < $1 }
        if topK > 0 && topK < order.count { order.removeLast(order.count - topK) }
        func overlap(_ a: Int, _ b: Int) -> Float {
            let (p, q) = (boxes[a], boxes[b])
            let areas = p.width * p.height + q.width * q.height
            guard areas > 0 else { return 1 }  // OpenCV: two empty boxes have Jaccard distance 0
            let width = min(p.x + p.width, q.x + q.width) - max(p.x, q.x)
            let height = min(p.y + p.height, q.y + q.height) - max(p.y, q.y)
            let intersection = width > 0 && height > 0 ? Double(width * height) : 0
            return 1 - Float(1 - intersection / (Double(areas) - intersection))  // 1 − jaccardDistance
        }
        var kept: [Int] = []
        for candidate in order where kept.allSatisfy({ overlap(candidate, $0) <= nmsThreshold }) {
            kept.append(candidate)
        }
        return kept.map { faces[$0] }
    }
}
