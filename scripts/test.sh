#!/usr/bin/env bash
# The project's test command (README step 2):
#  1. every Swift test, built optimised with testing enabled (the pipeline and daemon tests replay
#     whole clips through the model: ~1 min optimised, many minutes in debug), in .build-test so the
#     release product in .build is not rebuilt;
#  2. the real-camera tests: `livenessd probe` against the kernel's vivid driver in throw-away QEMU
#     VMs (scripts/v4l2-vm-tests.sh; MJPEG through v4l2loopback with V4L2VM_MJPEG=1, the default here).
# Extra arguments go to `swift test` (e.g. --filter MediaSourceTests); LIVENESSD_SKIP_VM=1 skips step 2.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
export LIVENESSD_TEST_ASSETS="${LIVENESSD_TEST_ASSETS:-../shared}"
swift test --scratch-path .build-test -c release -Xswiftc -enable-testing "$@"
if [ $# -eq 0 ] && [ "${LIVENESSD_SKIP_VM:-0}" != 1 ]; then
    CONFIGURATION=release V4L2VM_MJPEG="${V4L2VM_MJPEG:-1}" scripts/v4l2-vm-tests.sh
fi
