import CaptureKit
import Testing

/// H7 (issue 15): the picture sizes capture accepts, at and past each limit.
@Suite struct FrameLimitsTests {
    @Test func sizesAtTheLimitsAreAccepted() {
        #expect(FrameLimits.problem(width: 640, height: 480) == nil)
        #expect(FrameLimits.problem(width: 16_384, height: 1_024) == nil)
        #expect(FrameLimits.problem(width: 8_000, height: 10_000) == nil)  // exactly 80 megapixels
        #expect(FrameLimits.problem(width: 16, height: 256) == nil)  // 1:16
    }

    @Test func sizesPastTheLimitsAreRefusedWithTheLimitNamed() throws {
        let tall = try #require(FrameLimits.problem(width: 1, height: 32_768))
        #expect(tall.contains("1x32768") && tall.contains("16384"))
        let large = try #require(FrameLimits.problem(width: 9_000, height: 9_000))
        #expect(large.contains("81 megapixels") && large.contains("limit is 80"))
        let thin = try #require(FrameLimits.problem(width: 16, height: 272))
        #expect(thin.contains("16 times"))
        #expect(FrameLimits.problem(width: 0, height: 10) != nil)
        #expect(FrameLimits.problem(width: -1, height: -1) != nil)
    }
}
