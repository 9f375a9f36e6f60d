#!/usr/bin/env bash
# ThreadSanitizer over the tests of the code that shares state between threads (issue 10): the
# capture and pipeline suites by default. Built optimised with testing enabled, as scripts/test.sh
# does (the pipeline tests replay clips through the models: far too slow in debug, slower still under
# TSan), in its own scratch path, since every module is rebuilt instrumented.
#
#   scripts/tsan.sh                          CaptureKitTests, FramePipelineTests and LivenessServerTests
#   scripts/tsan.sh 'LivenessServerTests'    these `swift test --filter` regexes instead
#   TSAN_FILTERS='A B' scripts/tsan.sh       the same, from the environment (blank-separated)
#
# Tests that measure wall-clock pace cannot hold at TSan's speed and are skipped (TSAN_SKIP, a
# `swift test --skip` regex; empty skips nothing).
#
# Any data race report fails the run (TSan exits 66 when it reported one). Suppressions, each with
# its justification, live in scripts/tsan.supp: for third-party and system code only.
#
# Why the shared state sits behind swift-nio's NIOLockedValueBox (a pthread mutex) and not
# Synchronization.Mutex (Swift 6.3.1, Linux): TSan does not see a Mutex hand the lock over when it
# is contended (the futex slow paths `_lockSlow`/`_unlockSlow` live in the uninstrumented stdlib),
# so it reported accesses inside `withLock` of one Mutex as racing (four threads appending to one
# `Mutex<[Int]>` reproduce it). pthread_mutex is intercepted, so TSan sees every hand-over. The two
# Mutexes left are never contended (a decoder handed to its thread once; one queue's encoder).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
export LIVENESSD_TEST_ASSETS="${LIVENESSD_TEST_ASSETS:-../shared}"

filters=("$@")
if [ ${#filters[@]} -eq 0 ]; then
    read -r -a filters <<< "${TSAN_FILTERS:-CaptureKitTests FramePipelineTests LivenessServerTests}"
fi
filterArguments=()
for filter in "${filters[@]}"; do filterArguments+=(--filter "$filter"); done
skip="${TSAN_SKIP-realTimePacingHoldsTheClipRate|liveSourceDropsStaleFramesWithoutBlocking}"
if [ -n "$skip" ]; then filterArguments+=(--skip "$skip"); fi

flags=(--sanitize=thread --scratch-path .build-tsan -c release -Xswiftc -enable-testing)
export TSAN_OPTIONS="suppressions=$PWD/scripts/tsan.supp second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
started=$(date +%s)
swift build --build-tests "${flags[@]}"
built=$(date +%s)
status=0
swift test --skip-build "${flags[@]}" "${filterArguments[@]}" || status=$?
echo "tsan: build $((built - started)) s, tests $(($(date +%s) - built)) s, exit status $status"
exit "$status"
