#!/usr/bin/env bash
# The project's test command (README step 2):
#  1. every Swift test, built optimised with testing enabled (the pipeline and daemon tests replay
#     whole clips through the model: ~1 min optimised, many minutes in debug), in .build-test so the
#     release product in .build is not rebuilt;
#  2. the Debian package (issue 13): scripts/package-deb.sh from setup.sh's release binary, then
#     scripts/deb-tests.sh (lintian, install, use, upgrade, remove, purge, file lists compared; it
#     installs packages, so root only: CI is root);
#  3. the real-camera tests: `livenessd probe` against the kernel's vivid driver in throw-away QEMU
#     VMs (scripts/v4l2-vm-tests.sh; MJPEG through v4l2loopback with V4L2VM_MJPEG=1, the default here),
#     then the systemd boot test (scripts/systemd-boot-test.sh: the .deb under a real systemd; root).
# Extra arguments go to `swift test` (e.g. --filter MediaSourceTests) and skip steps 2 and 3;
# LIVENESSD_SKIP_DEB=1 skips step 2, LIVENESSD_SKIP_VM=1 step 3.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
export LIVENESSD_TEST_ASSETS="${LIVENESSD_TEST_ASSETS:-../shared}"
swift test --scratch-path .build-test -c release -Xswiftc -enable-testing "$@"
if [ $# -eq 0 ] && [ "${LIVENESSD_SKIP_DEB:-0}" != 1 ]; then
    DEB_XZ_LEVEL="${DEB_XZ_LEVEL:-1}" scripts/package-deb.sh
    if [ "$(id -u)" -eq 0 ]; then scripts/deb-tests.sh; else echo "scripts/deb-tests.sh skipped (it needs root)"; fi
fi
if [ $# -eq 0 ] && [ "${LIVENESSD_SKIP_VM:-0}" != 1 ]; then
    CONFIGURATION=release V4L2VM_MJPEG="${V4L2VM_MJPEG:-1}" scripts/v4l2-vm-tests.sh
    # Issue 13: step 2's .deb installed in a Debian 12 guest booted with systemd as PID 1 (QEMU; socket
    # activation, READY=1, the watchdog, restart and reload, a fatal config error in the journal).
    if [ "$(id -u)" -eq 0 ]; then
        deb="$(ls -t dist/livenessd_*.deb 2>/dev/null | head -n 1)"
        scripts/systemd-boot-test.sh ${deb:+"$deb"}
    else
        echo "scripts/systemd-boot-test.sh skipped (it needs root)"
    fi
fi
