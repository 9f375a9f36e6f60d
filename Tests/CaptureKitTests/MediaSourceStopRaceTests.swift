import Foundation
import Synchronization
import TestSupport
import Testing

@testable import CaptureKit

/// Issue 10: `stop()` read the source's pools while the decode thread replaced them (a new pool for
/// each picture size, and the RGB pool). Here sources are stopped again and again at random points:
/// right after start (while the first pools are made), right after a frame (the thread goes on with
/// the next one, often a pool swap: the clip changes size every three frames) and while the reader
/// waits for a buffer the consumer holds. Whatever the interleaving, `stop` returns, `.ended` comes
/// once and last, and no pool is left open: a reader waiting on one would never wake.
@Suite struct MediaSourceStopRaceTests {
    /// What one run of a source delivered, as its handler saw it.
    final class Recorder: Sendable {
        struct State {
            var sequences: [UInt64] = []
            var ends: [SourceEnd] = []
            /// Events delivered after `.ended` (must stay 0).
            var afterEnd = 0
            /// Every pool a frame's pixels (or its RGB twin) came from.
            var pools: [ObjectIdentifier: FramePool] = [:]
            /// Frames the consumer keeps until the source is stopped (the reader runs out of buffers).
            var held: [Frame] = []
        }

        let state = Mutex(State())
        /// Signalled when the chosen frame arrived (or the source ended before it): time to stop.
        let due = DispatchSemaphore(value: 0)

        func handler(hold: Bool, stopAfter frames: Int) -> @Sendable (SourceEvent) -> Void {
            { event in
                let due = self.state.withLock { state -> Bool in
                    if !state.ends.isEmpty { state.afterEnd += 1 }
                    switch event {
                    case .frame(let frame):
                        state.sequences.append(frame.sequence)
                        for buffer in [frame.buffer, frame.rgb].compactMap({ $0 }) {
                            state.pools[ObjectIdentifier(buffer.pool)] = buffer.pool
                        }
                        if hold { state.held.append(frame) }
                        return state.sequences.count == frames
                    case .ended(let end):
                        state.ends.append(end)
                        return true
                    case .skipped, .disconnected, .reconnected, .waiting:
                        return false
                    }
                }
                if due { self.due.signal() }
            }
        }
    }

    /// A raw H.264 stream whose picture size changes every three frames (160×120, 192×144, six times):
    /// each change makes the decode thread replace its frame pool and its RGB pool.
    static func sizeChangingClip() throws -> String {
        let directory = try TestAssets.temporaryDirectory()
        var segments: [Data] = []
        for size in ["160x120", "192x144"] {
            segments.append(
                try FFmpegTool.run(
                    "ffmpeg",
                    [
                        "-v", "error", "-f", "lavfi", "-i", "testsrc=size=\(size):rate=25", "-frames:v", "3", "-c:v",
                        "libx264", "-pix_fmt", "yuv420p", "-f", "h264", "-",
                    ]))
        }
        let clip = directory.appendingPathComponent("sizes.h264")
        try Data((0..<6).flatMap { segments[$0 % 2] }).write(to: clip)
        return clip.path
    }

    @Test func stopRacesThePoolSwaps() throws {
        let clip = try Self.sizeChangingClip()
        for iteration in 0..<150 {
            var options = MediaSource.Options()
            options.attachRGB24 = true
            options.poolCapacity = Int.random(in: 1...3)
            let hold = Bool.random()
            // A consumer that holds its frames gets `poolCapacity` of them before the reader waits for
            // a buffer: stopping after more would never come.
            let stopAfter = Int.random(in: 0...(hold ? options.poolCapacity : 8))
            let context =
                "iteration \(iteration): capacity \(options.poolCapacity), hold \(hold), stop after \(stopAfter)"
            let source = MediaSource(location: clip, options: options)
            let recorder = Recorder()
            try source.start(handler: recorder.handler(hold: hold, stopAfter: stopAfter))
            if stopAfter > 0 {
                // A bound against a hang, not a measurement.
                try #require(recorder.due.wait(timeout: .now() + 60) == .success, "no frame \(stopAfter): \(context)")
            }
            // Stopped from another thread, so that a stop that never returns fails the test instead of
            // hanging it.
            let stopped = DispatchSemaphore(value: 0)
            DispatchQueue.global().async {
                source.stop()
                stopped.signal()
            }
            try #require(stopped.wait(timeout: .now() + 60) == .success, "stop did not return: \(context)")
            let state = recorder.state.withLock { recorded in
                (
                    sequences: recorded.sequences, ends: recorded.ends, afterEnd: recorded.afterEnd,
                    pools: Array(recorded.pools.values)
                )
            }
            #expect(state.ends.count == 1, "\(context): ended \(state.ends)")
            #expect(state.ends.allSatisfy { $0 == .stopped || $0 == .endOfFile }, "\(context): ended \(state.ends)")
            #expect(state.afterEnd == 0, "\(context): \(state.afterEnd) events after the end")
            #expect(state.sequences == Array(0..<UInt64(state.sequences.count)), "\(context)")
            for pool in state.pools + source.currentPools {
                #expect(pool.isClosed, "\(context): a pool of \(pool.bufferSize) bytes left open")
            }
            recorder.state.withLock { $0.held.removeAll() }
        }
    }
}
