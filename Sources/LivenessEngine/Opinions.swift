import Foundation

/// The opinions in use and their fusion: what turns a located face into scores.
///
/// `prepare` is pure (any thread: the pipeline runs it on each source's lane, beside detection);
/// `score` runs the models and is not thread-safe (each model owns its scratch): one queue only.
public final class Opinions {
    public let vit: LivenessViT?
    public let pair: MiniFASNetPair?
    public let fusion: ScoreFusion
    public let preprocessor = Preprocessor()

    /// The kinds in use, in `OpinionKind` order.
    public var kinds: [OpinionKind] {
        OpinionKind.allCases.filter { $0 == .vit ? self.vit != nil : self.pair != nil }
    }

    /// Spoof iff the fused probability ≥ this, when both opinions judge with equal weights. From
    /// `livenessd eval` + `calibrate` (every attack species' presentation-level APCER ≤ 5 %) on the
    /// shared sample manifest (94 presentations: 59 bona fide, 35 attacks in 4 species): calibrate
    /// proposes 0.298221, 6·10⁻⁷ below the lowest attack (a phone replay whose face fills the view,
    /// presentation score 0.2982221). Shipped a step lower, at 0.28: the same BPCER there (28/59; no
    /// bona fide presentation scores in [0.28, 0.2982)), and a margin of 0.018 against that replay so
    /// that the last bits of another CPU's BLAS kernels cannot let it in. The ViT alone at its own
    /// threshold for the same target: BPCER 37/59. docs/ARCHITECTURE.md has the whole table; fitted on
    /// the material it is reported on: calibrate on your own clips before a door depends on it.
    public static let fusedThreshold = 0.28

    public init(vit: LivenessViT?, pair: MiniFASNetPair?, fusion: ScoreFusion = ScoreFusion()) {
        precondition(vit != nil || pair != nil, "at least one opinion")
        self.vit = vit
        self.pair = pair
        self.fusion = fusion
    }

    /// What every model in use needs of one face, made from the frame the detector saw.
    public struct FaceInput: Sendable {
        /// The ViT's 224² grey crop (empty without the ViT).
        public var luma: [UInt8]
        /// The pair's two 80×80×3 BGR crops back to back, V2 (2.7×) then V1SE (4.0×) (empty without the pair).
        public var pair: [UInt8]
        /// The pair's crop rectangles in frame pixels (inclusive corners), for reports.
        public var pairRects: [MiniFASNetCrop.Rect]

        public init(luma: [UInt8] = [], pair: [UInt8] = [], pairRects: [MiniFASNetCrop.Rect] = []) {
            self.luma = luma
            self.pair = pair
            self.pairRects = pairRects
        }
    }

    /// Bytes of one face's pair input.
    public static let pairInputLength = 2 * MiniFASNetCrop.side * MiniFASNetCrop.side * 3

    /// The inputs for a face. `image` is the frame as RGB24; `region` is what the ViT judges (the crop
    /// policy's square, or the whole frame); `box` is the pair's face box as the reference gives it
    /// (nil: the whole frame, as `--crop full` judges it).
    public func prepare(image: PixelSource, region: PixelRect, box: MiniFASNetCrop.Box?) throws -> FaceInput {
        var input = FaceInput()
        try self.prepare(image: image, region: region, box: box, into: &input, scratch: Preprocessor.Scratch())
        return input
    }

    /// The same inputs written into `input`'s arrays, which keep their memory: a pipeline lane hands back
    /// the inputs it had scored, so that with `scratch` (one per thread) nothing is allocated per face.
    public func prepare(
        image: PixelSource, region: PixelRect, box: MiniFASNetCrop.Box?, into input: inout FaceInput,
        scratch: Preprocessor.Scratch
    ) throws {
        input.pairRects.removeAll(keepingCapacity: true)
        if self.vit != nil {
            let side = self.preprocessor.outputSide
            if input.luma.count != side * side { input.luma = [UInt8](repeating: 0, count: side * side) }
            input.luma.withUnsafeMutableBufferPointer {
                self.preprocessor.lumaCrop(image.cropped(to: region), into: $0.baseAddress!, scratch: scratch)
            }
        } else {
            input.luma.removeAll(keepingCapacity: true)
        }
        guard self.pair != nil else {
            input.pair.removeAll(keepingCapacity: true)
            return
        }
        let box = box ?? MiniFASNetCrop.Box(x: 0, y: 0, width: image.width, height: image.height)
        if input.pair.count != Self.pairInputLength { input.pair = [UInt8](repeating: 0, count: Self.pairInputLength) }
        let one = Self.pairInputLength / 2
        try input.pair.withUnsafeMutableBufferPointer { pair in
            for (index, scale) in MiniFASNetPair.scales.enumerated() {
                let rect = try MiniFASNetCrop.crop(
                    image: image, box: box, scale: scale, into: pair.baseAddress! + index * one)
                input.pairRects.append(rect)
            }
        }
    }

    /// Scratch for batched scoring (grows to the largest batch seen).
    private var lumaBatch: [UInt8] = []
    private var v2Batch: [UInt8] = []
    private var v1seBatch: [UInt8] = []
    private var logits: [Float] = []
    private var pairLogits: [Float] = []
    private var v1seLogits: [Float] = []

    /// Scores faces in batches of at most `maximumBatch`: per opinion, then fused.
    public func score(_ inputs: [FaceInput], maximumBatch: Int = 8) -> [OpinionScores] {
        var scores: [OpinionScores] = []
        self.score(inputs, maximumBatch: maximumBatch, into: &scores)
        return scores
    }

    /// The same into `scores` (replaced; its memory is kept). A batch of one is read where it lies; larger
    /// ones are gathered back to back first. `concurrently`: with both opinions, the ViT and the pair score
    /// each batch at the same time on two threads (see `run`).
    public func score(
        _ inputs: [FaceInput], maximumBatch: Int = 8, concurrently: Bool = false, into scores: inout [OpinionScores]
    ) {
        scores.removeAll(keepingCapacity: true)
        for _ in inputs.indices { scores.append(OpinionScores()) }
        var start = 0
        while start < inputs.count {
            let end = min(start + max(1, maximumBatch), inputs.count)
            self.scoreChunk(inputs[start..<end], concurrently: concurrently, into: &scores, offset: start)
            start = end
        }
    }

    public func score(_ input: FaceInput) -> OpinionScores { self.score([input])[0] }

    /// The fused spoof probability of `scores` (nil: no finite opinion).
    public func fused(_ scores: OpinionScores) -> Double? { self.fusion.fuse(scores) }

    private func scoreChunk(
        _ chunk: ArraySlice<FaceInput>, concurrently: Bool, into scores: inout [OpinionScores], offset: Int
    ) {
        let side = self.preprocessor.outputSide * self.preprocessor.outputSide
        let one = Self.pairInputLength / 2
        if chunk.count == 1, let input = chunk.first {
            precondition(self.vit == nil || input.luma.count == side, "ViT input of \(input.luma.count) bytes")
            precondition(self.pair == nil || input.pair.count == 2 * one, "pair input of \(input.pair.count) bytes")
            input.luma.withUnsafeBufferPointer { luma in
                input.pair.withUnsafeBufferPointer { pair in
                    self.run(
                        batch: 1, luma: luma.baseAddress, v2: pair.baseAddress, v1se: pair.baseAddress.map { $0 + one },
                        concurrently: concurrently, into: &scores, offset: offset)
                }
            }
            return
        }
        if self.vit != nil { Self.gather(chunk.lazy.map(\.luma), length: side, into: &self.lumaBatch) }
        if self.pair != nil {
            Self.gather(chunk.lazy.map { $0.pair.prefix(one) }, length: one, into: &self.v2Batch)
            Self.gather(chunk.lazy.map { $0.pair.suffix(one) }, length: one, into: &self.v1seBatch)
        }
        self.lumaBatch.withUnsafeBufferPointer { luma in
            self.v2Batch.withUnsafeBufferPointer { v2 in
                self.v1seBatch.withUnsafeBufferPointer { v1se in
                    self.run(
                        batch: chunk.count, luma: luma.baseAddress, v2: v2.baseAddress, v1se: v1se.baseAddress,
                        concurrently: concurrently, into: &scores, offset: offset)
                }
            }
        }
    }

    /// Runs each opinion in use on `batch` faces whose inputs lie back to back at `luma` (224² grey each),
    /// `v2` and `v1se` (80×80×3 BGR each), and writes their spoof probabilities from `offset` on. With both
    /// opinions and `concurrently`, the ViT and the pair run at the same time on two threads
    /// (`concurrentPerform`: the caller and one worker, or the caller alone when no worker is free): each
    /// model has its own scratch and its own logits here, so the scores are the same bits as one after the
    /// other, and a batch takes the longer of the two instead of their sum. The pipeline asks for it when
    /// faces wait (a batch of two or more): its one inference queue was the bottleneck of an unpaced replay
    /// (frames waited there ≈ 20 ms at p50). Not for a lone face: waking the second thread costs about
    /// 1 ms of CPU a frame (a 30 fps camera: 30–31 → 33–34 % of a core), more than it saves.
    private func run(
        batch: Int, luma: UnsafePointer<UInt8>?, v2: UnsafePointer<UInt8>?, v1se: UnsafePointer<UInt8>?,
        concurrently: Bool, into scores: inout [OpinionScores], offset: Int
    ) {
        if self.logits.count < batch * 3 {
            self.logits = [Float](repeating: 0, count: batch * 3)
            self.pairLogits = [Float](repeating: 0, count: batch * 3)
            self.v1seLogits = [Float](repeating: 0, count: batch * 3)
        }
        let vit = luma != nil ? self.vit : nil
        let pair = v2 != nil && v1se != nil ? self.pair : nil
        self.logits.withUnsafeMutableBufferPointer { vitLogits in
            self.pairLogits.withUnsafeMutableBufferPointer { v2Logits in
                self.v1seLogits.withUnsafeMutableBufferPointer { v1seLogits in
                    // Each part touches only its own model, inputs and logits (and OpenBLAS, which is
                    // thread-safe): nothing is shared between the two threads, so these captures, which the
                    // compiler cannot check, are safe. TSan runs this path in the pipeline tests.
                    nonisolated(unsafe) let vit = vit
                    nonisolated(unsafe) let pair = pair
                    nonisolated(unsafe) let vitOut = vitLogits.baseAddress!
                    nonisolated(unsafe) let v2Out = v2Logits.baseAddress!
                    nonisolated(unsafe) let v1seOut = v1seLogits.baseAddress!
                    nonisolated(unsafe) let (luma, v2, v1se) = (luma, v2, v1se)
                    @Sendable func runViT() { vit?.logits(lumaCrops: luma!, batch: batch, into: vitOut) }
                    @Sendable func runPair() {
                        guard let pair else { return }
                        pair.v2.logits(bgrCrops: v2!, batch: batch, into: v2Out)
                        pair.v1se.logits(bgrCrops: v1se!, batch: batch, into: v1seOut)
                    }
                    if concurrently && vit != nil && pair != nil {
                        DispatchQueue.concurrentPerform(iterations: 2) { part in part == 0 ? runViT() : runPair() }
                    } else {
                        runViT()
                        runPair()
                    }
                }
            }
        }
        for slot in 0..<batch {
            if vit != nil {
                self.logits.withUnsafeBufferPointer {
                    scores[offset + slot].vit = LivenessViT.spoofProbability(logits: $0.baseAddress! + 2 * slot)
                }
            }
            if pair != nil {
                self.pairLogits.withUnsafeBufferPointer { v2 in
                    self.v1seLogits.withUnsafeBufferPointer { v1se in
                        scores[offset + slot].minifasnet = MiniFASNetPair.spoofProbability(
                            v2Logits: v2.baseAddress! + 3 * slot, v1seLogits: v1se.baseAddress! + 3 * slot)
                    }
                }
            }
        }
    }

    /// Copies equally long inputs back to back into `buffer` (grown when needed).
    private static func gather<Items: Collection>(_ items: Items, length: Int, into buffer: inout [UInt8])
    where Items.Element: Collection, Items.Element.Element == UInt8 {
        if buffer.count < items.count * length { buffer = [UInt8](repeating: 0, count: items.count * length) }
        buffer.withUnsafeMutableBufferPointer { target in
            for (slot, item) in items.enumerated() {
                precondition(item.count == length, "an opinion's input has \(item.count) bytes, expected \(length)")
                _ = UnsafeMutableBufferPointer(rebasing: target[(slot * length)..<((slot + 1) * length)]).initialize(
                    from: item)
            }
        }
    }
}

extension MiniFASNetPair {
    /// The published file names, V2 then V1SE.
    public static var fileNames: [String] { [Self.v2FileName, Self.v1seFileName] }
}
