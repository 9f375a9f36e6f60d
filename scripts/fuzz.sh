#!/usr/bin/env bash
# Coverage-guided fuzzing of everything livenessd reads from files or peers (issue 15; targets and what
# each covers: Tests/Fuzz/LivenessFuzz.swift). Builds the libFuzzer binary (swiftc -sanitize=fuzzer,address,
# optimised, in .build-fuzz), makes the seed corpora from the real files (scripts/fuzz_corpus.py), then
# fuzzes each target for SECONDS and fails on any finding (crash, ASan report, leak, allocation above
# 2 GiB, an input running over 30 s).
#
#   scripts/fuzz.sh [SECONDS] [TARGET ...]     default: 60 s each for every target (what CI runs)
#   scripts/fuzz.sh 0 request crash-file       run one input once (a finding's reproduction)
#
# The corpus grows in .build-fuzz/corpus/<target> and is kept between runs; findings are written to
# .build-fuzz/findings/<target>/. The summary line per target gives executions, corpus size and findings.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
export LIVENESSD_TEST_ASSETS="${LIVENESSD_TEST_ASSETS:-../shared}"
seconds="${1:-60}"
shift || true
all=(pickle legacy checkpoint onnx request config)

LIVENESSD_FUZZ=1 swift build --scratch-path .build-fuzz -c release --product livenessd-fuzz \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -enable-testing 2>&1 | grep -v "Cannot export local symbol" >&2
binary="$(LIVENESSD_FUZZ=1 swift build --scratch-path .build-fuzz -c release --show-bin-path)/livenessd-fuzz"
# swift-backtrace would wait on a crash; libFuzzer's own report is the one wanted.
export SWIFT_BACKTRACE=enable=no
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}"

if [ "$seconds" = 0 ]; then
    # Replay: TARGET FILE...
    target="$1"
    shift
    LIVENESSD_FUZZ_TARGET="$target" "$binary" "$@"
    exit
fi

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
seeds=.build-fuzz/seeds
rm -rf "$seeds"
python3 scripts/fuzz_corpus.py "$seeds" >&2
status=0
for target in "${targets[@]}"; do
    corpus=".build-fuzz/corpus/$target"
    findings=".build-fuzz/findings/$target"
    mkdir -p "$corpus" "$findings"
    log=".build-fuzz/$target.log"
    # -fork would use both cores, but its summary counts differently; one process keeps the figures plain.
    set +e
    LIVENESSD_FUZZ_TARGET="$target" "$binary" "$corpus" "$seeds/$target" \
        -max_total_time="$seconds" -timeout=30 -rss_limit_mb=3072 -malloc_limit_mb=2048 -max_len=262144 \
        -artifact_prefix="$findings/" -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    runs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
    found=$(find "$findings" -type f | wc -l)
    echo "fuzz: $target: ${runs:-?} executions in ${seconds} s, corpus $(find "$corpus" -type f | wc -l) files," \
        "findings $found (exit $rc)"
    if [ "$rc" != 0 ] || [ "$found" != 0 ]; then
        status=1
        grep -E 'ERROR|SUMMARY|Fatal error|==[0-9]+==' "$log" | head -20 >&2 || true
        echo "fuzz: $target: reproduce with scripts/fuzz.sh 0 $target $findings/<file>; log $log" >&2
    fi
done
exit $status
