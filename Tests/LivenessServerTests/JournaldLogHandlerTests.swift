import Logging
import Testing

import LivenessServer

@Suite struct JournaldLogHandlerTests {
    @Test func journaldLinesCarryThePriority() {
        let line = JournaldLogHandler.line(
            level: .warning, label: "livenessd", message: "camera gone", metadata: ["capture.device": "/dev/video0"])
        #expect(line == "<4>livenessd: camera gone capture.device=/dev/video0\n")
        #expect(JournaldLogHandler.priority(.info) == 6 && JournaldLogHandler.priority(.error) == 3)
    }
}
