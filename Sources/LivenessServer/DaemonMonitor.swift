import CaptureKit
import FramePipeline
import NIOConcurrencyHelpers
import Synchronization

/// Frame flow as the daemon sees it: for READY, the watchdog, STATUS and fps.
final class DaemonMonitor: Sendable {
    struct State {
        var firstDecision = false
        var processed = 0
        var states: [String: String] = [:]
        var recent: [String: [UInt64]] = [:]  // decision times of the last 2 s, per source
        var ended: Set<String> = []
        /// Sources waiting for their camera that have not delivered a frame yet.
        var waiting: Set<String> = []
        /// Sources that have had a frame decided.
        var delivered: Set<String> = []
    }

    let state = NIOLockedValueBox(State())

    func observe(_ event: PipelineEvent) {
        let now = monotonicNanoseconds()
        self.state.withLockedValue { state in
            switch event {
            case .decision(let decided):
                state.firstDecision = true
                state.waiting.remove(decided.sourceID)
                state.delivered.insert(decided.sourceID)
                state.processed += 1
                state.states[decided.sourceID] = decided.decision.state.rawValue
                var times = state.recent[decided.sourceID, default: []]
                times.append(now)
                times.removeAll { now &- $0 > 2_000_000_000 }
                state.recent[decided.sourceID] = times
            case .source(let id, let sourceEvent):
                if case .ended = sourceEvent { state.ended.insert(id) }
                if case .disconnected = sourceEvent { state.states[id] = "disconnected" }
                if case .waiting = sourceEvent {
                    state.states[id] = "waiting"
                    if !state.delivered.contains(id) { state.waiting.insert(id) }
                }
                if case .ended = sourceEvent { state.waiting.remove(id) }
            case .transaction:
                break
            }
        }
    }

    func fps(_ source: String) -> Double {
        let now = monotonicNanoseconds()
        return self.state.withLockedValue { state in
            let times = (state.recent[source] ?? []).filter { now &- $0 <= 2_000_000_000 }
            return Double(times.count) / 2
        }
    }
}
