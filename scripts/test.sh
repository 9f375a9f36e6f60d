#!/usr/bin/env bash
# The project's test command (README step 2): every Swift test, built optimised with testing enabled
# (the pipeline tests replay whole clips through the model: ~25 s optimised, minutes in debug).
# Its own build folder (.build-test) keeps the release product in .build from being rebuilt.
# Extra arguments go to `swift test` (e.g. --filter MediaSourceTests).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
export LIVENESSD_TEST_ASSETS="${LIVENESSD_TEST_ASSETS:-../shared}"
swift test --scratch-path .build-test -c release -Xswiftc -enable-testing "$@"
