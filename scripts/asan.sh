#!/usr/bin/env bash
# AddressSanitizer over the tests of the code that reads untrusted bytes (issue 15): the model loaders
# (zip and legacy checkpoints, pickles, ONNX) and the event server's request handling. Built optimised
# with testing enabled, as scripts/test.sh does, in its own scratch path (every module is rebuilt
# instrumented). CI runs it after the tests; any ASan report fails the run.
#
#   scripts/asan.sh                  the default suites below
#   scripts/asan.sh 'RegexA' ...     these `swift test --filter` regexes instead
#
# The allocation-counting test is skipped by itself under ASan (ASan owns malloc).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
export LIVENESSD_TEST_ASSETS="${LIVENESSD_TEST_ASSETS:-../shared}"

filters=("$@")
if [ ${#filters[@]} -eq 0 ]; then
    filters=(
        'LivenessEngineTests\.(Checkpoint|LegacyCheckpoint|CheckpointHardening|YuNet|FileDigest)'
        'LivenessServerTests'
    )
fi
filterArguments=()
for filter in "${filters[@]}"; do filterArguments+=(--filter "$filter"); done

flags=(--sanitize=address --scratch-path .build-asan -c release -Xswiftc -enable-testing)
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:${ASAN_OPTIONS:-}"
export SWIFT_BACKTRACE=enable=no
started=$(date +%s)
swift build --build-tests "${flags[@]}" 2>&1 | grep -v "Cannot export local symbol"
built=$(date +%s)
status=0
swift test --skip-build "${flags[@]}" "${filterArguments[@]}" || status=$?
echo "asan: build $((built - started)) s, tests $(($(date +%s) - built)) s, exit status $status"
exit "$status"
