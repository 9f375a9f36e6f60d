import Testing

@testable import LivenessEngine

@Suite struct CropPolicyTests {
    @Test func squareCentredOnTheFace() {
        let face = FaceBox(x: 100, y: 120, width: 60, height: 80)
        let crop = CropPolicy(scale: 1.5).crop(for: face, frameWidth: 640, frameHeight: 480)
        #expect(crop == PixelRect(x: 70, y: 100, width: 120, height: 120))
    }

    @Test func shiftedInsideAtTheEdgeKeepingTheSquare() {
        let face = FaceBox(x: -10, y: 400, width: 60, height: 60)
        let crop = CropPolicy(scale: 2).crop(for: face, frameWidth: 640, frameHeight: 480)
        #expect(crop == PixelRect(x: 0, y: 360, width: 120, height: 120))
    }

    @Test func shrunkToTheShortSideWhenTheFrameIsTooSmall() {
        let face = FaceBox(x: 20, y: 30, width: 150, height: 180)
        let crop = CropPolicy(scale: 2.5).crop(for: face, frameWidth: 300, frameHeight: 240)
        #expect(crop == PixelRect(x: 0, y: 0, width: 240, height: 240))
    }

    @Test func clampCutsTheSquare() {
        let face = FaceBox(x: -10, y: 400, width: 60, height: 60)
        let crop = CropPolicy(scale: 2, edges: .clamp).crop(for: face, frameWidth: 640, frameHeight: 480)
        #expect(crop == PixelRect(x: 0, y: 370, width: 80, height: 110))
    }
}

@Suite struct QualityGateTests {
    let gates = QualityGates(
        minimumFaceSide: 40, minimumMeanLuma: 40, maximumMeanLuma: 220, minimumSharpness: 20, edgeMarginFraction: 0.1)

    @Test func geometry() {
        #expect(
            self.gates.checkGeometry(FaceBox(x: 10, y: 10, width: 30, height: 39), frameWidth: 100, frameHeight: 100)
                == .faceTooSmall)
        #expect(
            self.gates.checkGeometry(FaceBox(x: 10, y: 10, width: 50, height: 60), frameWidth: 100, frameHeight: 100)
                == nil)
        // 5 px outside a 50-px box is within the 10 % margin; 6 px is not.
        #expect(
            self.gates.checkGeometry(FaceBox(x: -5, y: 10, width: 50, height: 60), frameWidth: 100, frameHeight: 100)
                == nil)
        #expect(
            self.gates.checkGeometry(FaceBox(x: 56, y: 10, width: 50, height: 60), frameWidth: 100, frameHeight: 100)
                == .faceCutByEdge)
        #expect(
            self.gates.checkGeometry(FaceBox(x: 10, y: 47, width: 50, height: 60), frameWidth: 100, frameHeight: 100)
                == .faceCutByEdge)
    }

    @Test func lumaLimits() {
        #expect(self.gates.checkLuma(.init(meanLuma: 39, sharpness: 100)) == .tooDark)
        #expect(self.gates.checkLuma(.init(meanLuma: 221, sharpness: 100)) == .tooBright)
        #expect(self.gates.checkLuma(.init(meanLuma: 120, sharpness: 19)) == .tooBlurred)
        #expect(self.gates.checkLuma(.init(meanLuma: 120, sharpness: 21)) == nil)
    }

    @Test func measurementsOnAKnownPattern() {
        // A 4×4 checkerboard of 0/100: mean 50; every interior Laplacian is ±400, so variance 160 000.
        let pixels: [UInt8] = (0..<16).map { (($0 / 4) + ($0 % 4)) % 2 == 0 ? 0 : 100 }
        let measured = pixels.withUnsafeBufferPointer {
            QualityGates.measure(luma: $0.baseAddress!, width: 4, height: 4, rowStride: 4)
        }
        #expect(measured.meanLuma == 50)
        #expect(measured.sharpness == 160_000)
        // A flat image has no edges.
        let flat = [UInt8](repeating: 77, count: 300 * 200)
        let flatMeasured = flat.withUnsafeBufferPointer {
            QualityGates.measure(luma: $0.baseAddress!, width: 300, height: 200, rowStride: 300)
        }
        #expect(flatMeasured == .init(meanLuma: 77, sharpness: 0))
    }
}

/// Boxes a detector fed NaN weights or a bad frame may produce (issue 15, M6): no trap, a safe answer.
@Suite struct NonFiniteFaceBoxTests {
    static let absurd: [FaceBox] = [
        FaceBox(x: .nan, y: 10, width: 20, height: 20), FaceBox(x: 10, y: 10, width: .infinity, height: 20),
        FaceBox(x: -.infinity, y: .nan, width: .nan, height: -.infinity),
        FaceBox(x: 1e300, y: 1e300, width: 1e300, height: 1e300),
        FaceBox(x: -1e300, y: -1e300, width: 1e300, height: 1e300), FaceBox(x: 10, y: 10, width: 1e300, height: 1e300),
        FaceBox(x: 1e19, y: -1e19, width: 5, height: 5),
    ]

    @Test(arguments: absurd)
    func pixelsNeverTrap(box: FaceBox) {
        if let rect = box.pixels(inFrameWidth: 640, height: 480) {
            #expect(box.isFinite)
            #expect(rect.x >= 0 && rect.y >= 0 && rect.width > 0 && rect.height > 0)
            #expect(rect.x + rect.width <= 640 && rect.y + rect.height <= 480)
        }
        #expect(FaceBox(x: .nan, y: 0, width: 1, height: 1).pixels(inFrameWidth: 640, height: 480) == nil)
        #expect(
            FaceBox(x: 0, y: 0, width: 1e300, height: 1e300).pixels(inFrameWidth: 640, height: 480)
                == PixelRect(x: 0, y: 0, width: 640, height: 480))
    }

    @Test(arguments: absurd)
    func cropNeverTrapsAndStaysInside(box: FaceBox) {
        for policy in [CropPolicy(), CropPolicy(edges: .clamp), CropPolicy(scale: .nan), CropPolicy(scale: 1e300)] {
            let rect = policy.crop(for: box, frameWidth: 640, frameHeight: 480)
            #expect(rect.x >= 0 && rect.y >= 0 && rect.width > 0 && rect.height > 0)
            #expect(rect.x + rect.width <= 640 && rect.y + rect.height <= 480)
        }
    }
}
