import Foundation
import Testing

/// `probe` on this machine's paths (no camera here; real capture runs in scripts/v4l2-vm-tests.sh).
@Suite struct ProbeCommandTests {
    /// One line saying what is wrong and what to do, exit status 2, and no model needed.
    @Test func missingCameraIsAClearError() throws {
        let output = try Binary.run(
            ["probe", "--device", "/dev/v4l/by-id/no-such-camera"], environment: ["LIVENESSD_MODEL": "/nonexistent.pt"])
        #expect(output.status == 2)
        #expect(output.standardOutput.isEmpty)
        #expect(
            output.standardError.hasSuffix(
                "livenessd: /dev/v4l/by-id/no-such-camera does not exist: is the camera plugged in? "
                    + "(`v4l2-ctl --list-devices` lists cameras) [realpath: No such file or directory]\n"),
            "\(output.standardError)")
    }

    @Test func notAV4L2DeviceIsNamed() throws {
        let output = try Binary.run(["probe", "--device", "/dev/null"])
        #expect(output.status == 2)
        #expect(output.standardError.contains("livenessd: /dev/null is not a V4L2 device"), "\(output.standardError)")
    }
}
