#!/bin/bash
# Writes Sources/livenessd/link-order.txt: the functions of the livenessd binary that a daemon and a
# bench run execute, for lld's --symbol-ordering-file (Package.swift). Why: the kernel maps a binary's
# code 64 kB at a time (fault-around, large page-cache folios), so a function touched once — at start,
# loading a model, setting up the socket — keeps its whole 64 kB neighbourhood resident. Scattered
# over 25 MB of .text that was 13 MB of resident code; placed together by this list, 6.4 MB
# (docs/ARCHITECTURE.md, "Memory"). A stale list costs only memory: functions it does not name are
# laid out as before, and the linker is told not to warn about names it no longer finds.
#
# usage: scripts/link-order.sh [LIVENESSD [CLIP]]
#   LIVENESSD  a non-stripped release livenessd (default .build/release/livenessd)
#   CLIP       a video with a face (default /tmp/livenessd-bench/h264_640x480.mp4, scripts/make_bench_clips.sh)
# Needs valgrind, ffmpeg, python3, cc, nm and objcopy; the models as for `bench` (LIVENESSD_MODEL,
# LIVENESSD_MINIFASNET, LIVENESSD_DETECTOR, or the defaults). Takes ≈ 7 min (two callgrind runs, side
# by side). Then rebuild: the list is read at link time.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "link-order: $*" >&2; exit 2; }
BINARY="${1:-.build/release/livenessd}"
CLIP="${2:-/tmp/livenessd-bench/h264_640x480.mp4}"
OUT=Sources/livenessd/link-order.txt
[ -x "$BINARY" ] || die "no binary at $BINARY: swift build -c release --static-swift-stdlib"
[ -f "$CLIP" ] || die "no clip at $CLIP: scripts/make_bench_clips.sh"
for tool in valgrind ffmpeg python3 nm objcopy "${CC:-cc}"; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing"
done

work="$(mktemp -d /tmp/livenessd-link-order.XXXXXX)"
trap 'rm -rf "$work"' EXIT
# Valgrind 3.19 cannot read the toolchain's DWARF 5: the binary runs without it (symbols kept).
objcopy --strip-debug "$BINARY" "$work/livenessd"
# Valgrind 3.19 writes to the mask it is given (sanitising it); libdispatch's is static const.
printf '%s\n' '#define _GNU_SOURCE' '#include <signal.h>' '#include <sys/syscall.h>' '#include <unistd.h>' \
    'int sigsuspend(const sigset_t *mask) {' '    sigset_t copy = *mask;' \
    '    return (int)syscall(SYS_rt_sigsuspend, &copy, _NSIG / 8);' '}' >"$work/shim.c"
"${CC:-cc}" -O2 -shared -fPIC -o "$work/shim.so" "$work/shim.c"
ffmpeg -v error -y -i "$CLIP" -map 0:v:0 -frames:v 30 -c copy "$work/clip30.mp4"
ffmpeg -v error -y -i "$CLIP" -map 0:v:0 -frames:v 10 -c copy "$work/clip10.mp4"

# Under valgrind the CPU has no AVX-512: OpenBLAS and the kernels take their AVX2 paths (the AVX-512
# kernels are added by name below). OPENBLAS_CORETYPE set: no restart escapes valgrind.
export OPENBLAS_CORETYPE=Haswell
unset LIVENESSD_BLAS_RESTARTED
profile() {
    local name=$1
    shift
    LD_PRELOAD="$work/shim.so" valgrind --tool=callgrind --demangle=no --dump-instr=no \
        --callgrind-out-file="$work/$name.out" --log-file="$work/$name.log" "$work/livenessd" "$@" \
        >"$work/$name.stdout" 2>&1 || { cat "$work/$name.log" "$work/$name.stdout" >&2; die "$name failed"; }
}
# The daemon (a file source ends the run) and a bench of both opinions.
profile daemon run --socket "$work/livenessd.sock" --analysis-fps 0 --source "$work/clip10.mp4" &
daemon=$!
profile bench bench pipeline --pacing fast --models both --analysis-fps 0 "$work/clip30.mp4"
wait "$daemon"

python3 - "$work" "$OUT" <<'EOF'
import collections, re, subprocess, sys
work, out = sys.argv[1], sys.argv[2]
cost = collections.Counter()
for name in ("daemon", "bench"):
    objects, functions, current_object, current = {}, {}, None, None
    def resolve(table, text):
        match = re.match(r"\((\d+)\)(?: (.*))?", text)
        if not match:
            return text
        if match.group(2):
            table[match.group(1)] = match.group(2)
        return table.get(match.group(1))
    for line in open(f"{work}/{name}.out", errors="replace"):
        if line.startswith("ob="):
            current_object = resolve(objects, line[3:].strip())
        elif line.startswith("fn="):
            function = resolve(functions, line[3:].strip())
            current = function if current_object and current_object.endswith("/livenessd") else None
            if current:
                cost[current] += 0
        elif line.startswith("cob="):
            resolve(objects, line[4:].strip())
        elif line.startswith("cfn="):
            resolve(functions, line[4:].strip())
        elif current and line[:1].isdigit():
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                cost[current] += int(fields[1])
symbols = subprocess.run(["nm", f"{work}/livenessd"], capture_output=True, text=True, check=True).stdout
avx512 = sorted({f.split()[2] for f in symbols.splitlines() if len(f.split()) == 3 and f.split()[1] in "tT"
                 and "avx512" in f.split()[2]} - set(cost))
names = sorted(cost, key=lambda n: -cost[n]) + avx512
with open(out, "w") as file:
    file.write("# The livenessd functions a daemon and a bench run execute, most instructions first, for lld's\n")
    file.write("# --symbol-ordering-file (Package.swift). Written by scripts/link-order.sh; do not edit.\n")
    file.write("\n".join(names) + "\n")
print(f"link-order: {len(names)} functions ({len(avx512)} AVX-512 kernels by name) -> {out}")
EOF
