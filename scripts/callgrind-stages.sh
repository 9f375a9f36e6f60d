#!/usr/bin/env bash
# Instructions per frame by pipeline stage, counted by callgrind (issue 14). Valgrind counts
# instructions, not seconds, so the numbers hold on shared, noisy machines where timings do not.
#
#   scripts/callgrind-stages.sh [LIVENESSD] [CLIP] [N]
#
#   LIVENESSD  a non-stripped livenessd binary (default .build/release/livenessd)
#   CLIP       a video (default /tmp/livenessd-bench/h264_640x480.mp4, from scripts/make_bench_clips.sh)
#   N          frames (default 15): runs `livenessd bench pipeline --pacing fast --models both` under
#              callgrind on the first N and the first 2N frames of CLIP (cut by ffmpeg, stream copy), and
#              reports (cost of 2N - cost of N) / (frames decided in 2N - in N).
#
# The model environment is the caller's: LIVENESSD_MODEL, LIVENESSD_MINIFASNET, LIVENESSD_DETECTOR (or
# the binary's own defaults). CALLGRIND_KEEP=DIR keeps the callgrind profiles and annotations there;
# CALLGRIND_REUSE=DIR re-annotates such a DIR instead of running anything (same N).
# Needs Debian's valgrind (valgrind, callgrind_annotate), ffmpeg, python3, cc and objcopy (binutils).
# A binary whose `bench pipeline` has --analysis-fps gets `--analysis-fps 0` (every frame analysed,
# like older binaries without the option), so before/after compare the same work.
#
# Start-up is not counted: model loading, stream probing, the first frame's lazy set-up (swscale
# contexts, buffers) and the end-of-stream flush are the same in the N and 2N runs and cancel in the
# difference, stage by stage. (A zero- or one-frame baseline would not: FFmpeg probes more frames of a
# longer clip, and the first frame's set-up would land in the per-frame figures; --toggle-collect
# would miss work outside the toggled functions, such as dispatch and thread hand-offs.) The two runs
# go side by side (each valgrind runs one thread at a time).
#
# Stages are inclusive costs from `callgrind_annotate --inclusive=yes --tree=calling` (Swift names
# mangled; matched by pattern, see `stages` in the Python below), chosen so none contains another:
#   decode       avcodec_send_packet + avcodec_receive_frame + av_read_frame (FFmpeg decoding, demuxing;
#                decoder threads = 1, the default)
#   RGB          MediaDecoder.attachingRGB (swscale to RGB24 on the source thread), plus any
#                PixelConverter.convert called by LivenessPipeline.prepare (when no RGB came attached)
#   detection    calls from DetectorLocator.analyse (and its detect, where not inlined) into PixelConverter
#                (the BGR picture at width 320) and FaceDetector/ONNXGraph (YuNet network, decode, NMS)
#   gates+crops  the rest of DetectorLocator.analyse (quality gates: box luma, blur; geometry; where a
#                build tracks boxes between detections, its luma-grid check) plus Opinions.prepare (ViT
#                224² grey crop, MiniFASNet 80² BGR crops)
#   ViT          calls from the Opinions scoring functions (score, scoreChunk, run) and
#                LivenessPipeline.process/drain into LivenessViT (its normalisation included)
#   MiniFASNet   the same into MiniFASNet / MiniFASNetPair (both networks, planar conversion, heads)
#   rest         total minus the above: fusion, decision machine, events, queues and dispatch,
#                frame pools, decoder glue, malloc
# The "roots" lines show that the per-frame total is nearly all under the three pipeline threads'
# roots (MediaDecoder.run, LivenessPipeline.prepare, LivenessPipeline.drain).
#
# Valgrind 3.19 specifics handled here: it cannot read Swift 6's DWARF 5 ("unhandled dwarf2 abbrev
# form code 0x25 ... I can't recover"), so the binary runs as an `objcopy --strip-debug` copy (its
# symbol table is kept: functions keep their names); and it crashes in rt_sigsuspend when the mask lies
# in read-only memory, which is where libdispatch's main thread parks after dispatch_main (static const
# sigset_t), so a tiny LD_PRELOAD shim passes sigsuspend a copy of the mask. Valgrind does not emulate
# AVX-512: OPENBLAS_CORETYPE=Haswell (AVX2) is set unless given. livenessd re-executes itself only when
# OpenBLAS picked generic kernels and OPENBLAS_CORETYPE is unset (BLASRuntime.decide): with the variable
# set it keeps the core, so no exec escapes valgrind (checked: the run must report the core it was
# given and must have scored frames under callgrind).
#
# Example, N = 15 on h264_640x480.mp4, both opinions, every frame analysed, Ir per frame (2 cores shared
# with a Swift build: 26-28 min wall, 9-11 min CPU per script run):
#   stage                5454007 (before)   main (after, tracking 0.1 s)
#   decode                      3,796,035      3,793,833
#   RGB conversion             15,344,024     15,344,141
#   detection                  32,726,861     13,093,755   (6 of 15 frames detected, 9 tracked)
#   gates+crops                 7,846,059      7,850,777
#   ViT forward                19,592,928     19,298,921   (mean batch 1.50 vs 2.14)
#   MiniFASNet forward         37,324,372     37,244,856
#   decision/rest                 726,249        245,440
#   total                     117,356,527     96,871,723   (named stages 99.4% / 99.7% of it)
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
    echo "callgrind-stages: $*" >&2
    exit 2
}
BINARY="${1:-.build/release/livenessd}"
CLIP="${2:-/tmp/livenessd-bench/h264_640x480.mp4}"
N="${3:-15}"
if [ -z "${CALLGRIND_REUSE:-}" ]; then
    [ -x "$BINARY" ] || die "no livenessd binary at $BINARY"
    [ -r "$CLIP" ] || die "no clip at $CLIP (make one with scripts/make_bench_clips.sh)"
fi
[[ "$N" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive number of frames, not '$N'"
for tool in valgrind callgrind_annotate; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing: apt-get install valgrind"
done
command -v ffmpeg >/dev/null 2>&1 || die "ffmpeg is missing: apt-get install ffmpeg"
command -v python3 >/dev/null 2>&1 || die "python3 is missing"
command -v objcopy >/dev/null 2>&1 || die "objcopy is missing: apt-get install binutils"
CC="${CC:-cc}"
command -v "$CC" >/dev/null 2>&1 || die "no C compiler ($CC) for the sigsuspend shim: apt-get install gcc"

work=$(mktemp -d "${TMPDIR:-/tmp}/callgrind-stages.XXXXXX")
trap 'rm -rf "$work"' EXIT
started=$(date +%s)

if [ -n "${CALLGRIND_REUSE:-}" ]; then
    for frames in "$N" $((2 * N)); do
        for file in "callgrind.$frames" "bench.$frames.txt"; do
            cp "$CALLGRIND_REUSE/$file" "$work/" 2>/dev/null || die "no $file in $CALLGRIND_REUSE"
        done
    done
    export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Haswell}"
    echo "# callgrind-stages: the profiles in $CALLGRIND_REUSE, frames 1-$N vs 1-$((2 * N))"
    for frames in "$N" $((2 * N)); do
        callgrind_annotate --inclusive=yes --tree=calling --threshold=100 "$work/callgrind.$frames" \
            >"$work/annotate.$frames.txt" 2>/dev/null || die "callgrind_annotate failed on the $frames-frame profile"
    done
else
    # The binary without DWARF (symbols kept), and the shim.
    objcopy --strip-debug "$BINARY" "$work/livenessd" || die "objcopy --strip-debug $BINARY failed"
    # Valgrind 3.19 writes to the mask it is given (sanitising it); libdispatch's is static const.
    printf '%s\n' '#define _GNU_SOURCE' '#include <signal.h>' '#include <sys/syscall.h>' '#include <unistd.h>' \
        'int sigsuspend(const sigset_t *mask) {' '    sigset_t copy = *mask;' \
        '    return (int)syscall(SYS_rt_sigsuspend, &copy, _NSIG / 8);' '}' >"$work/sigsuspend_shim.c"
    "$CC" -O2 -shared -fPIC -o "$work/sigsuspend_shim.so" "$work/sigsuspend_shim.c" || die "cannot build the shim"

    # The clips: the first N and 2N frames, same bitstream.
    for frames in "$N" $((2 * N)); do
        ffmpeg -v error -y -i "$CLIP" -map 0:v:0 -frames:v "$frames" -c copy "$work/clip$frames.mp4" ||
            die "ffmpeg could not cut $frames frames of $CLIP"
    done

    arguments=(bench pipeline --pacing fast --models both)
    if "$work/livenessd" bench pipeline --help 2>&1 | grep -q -- '--analysis-fps'; then
        arguments+=(--analysis-fps 0)
    fi
    export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Haswell}"
    unset LIVENESSD_BLAS_RESTARTED
    echo "# callgrind-stages: $BINARY, $(basename "$CLIP"), frames 1-$N vs 1-$((2 * N)); livenessd ${arguments[*]}; OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE"

    run() {
        local frames=$1
        LD_PRELOAD="$work/sigsuspend_shim.so${LD_PRELOAD:+:$LD_PRELOAD}" valgrind --tool=callgrind \
            --callgrind-out-file="$work/callgrind.$frames" --log-file="$work/valgrind.$frames.log" \
            "$work/livenessd" "${arguments[@]}" "$work/clip$frames.mp4" >"$work/bench.$frames.txt" 2>"$work/stderr.$frames.txt"
    }
    status=0
    run "$N" &
    first=$!
    run $((2 * N)) || status=$?
    wait "$first" || status=$?
    for frames in "$N" $((2 * N)); do
        if [ "$status" -ne 0 ] || ! grep -q '^total: ' "$work/bench.$frames.txt"; then
            cat "$work/bench.$frames.txt" "$work/stderr.$frames.txt" "$work/valgrind.$frames.log" >&2 || true
            die "the run on $frames frames failed"
        fi
        callgrind_annotate --inclusive=yes --tree=calling --threshold=100 "$work/callgrind.$frames" \
            >"$work/annotate.$frames.txt" 2>/dev/null || die "callgrind_annotate failed on the $frames-frame profile"
    done
fi
if [ -n "${CALLGRIND_KEEP:-}" ] && [ -z "${CALLGRIND_REUSE:-}" ]; then
    mkdir -p "$CALLGRIND_KEEP" && cp "$work"/callgrind.* "$work"/annotate.* "$work"/bench.* "$CALLGRIND_KEEP"/
fi

DEMANGLE=$(command -v swift-demangle || command -v /opt/swift/usr/bin/swift-demangle || true)
python3 - "$work" "$N" "$OPENBLAS_CORETYPE" "$DEMANGLE" <<'PY'
import re, subprocess, sys

work, n, wanted_core, demangler = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
line = re.compile(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+([*>])\s+(\S*?):(.*?)(?: \((\d+)x\))?(?: \[[^\]]*\])?\s*$")


def load(frames):
    """inclusive cost by function, calls (cost, count) by (caller, callee), program total, frames decided."""
    incl, arcs, total, current = {}, {}, None, None
    for text in open(f"{work}/annotate.{frames}.txt", errors="replace"):
        if total is None and "PROGRAM TOTALS" in text:
            total = int(text.split()[0].replace(",", ""))
            continue
        match = line.match(text)
        if not match:
            continue
        cost, kind, name, count = int(match[1].replace(",", "")), match[2], match[4], int(match[5] or 0)
        if kind == "*":
            current = name
            incl[name] = incl.get(name, 0) + cost
        elif current is not None:
            old = arcs.get((current, name), (0, 0))
            arcs[(current, name)] = (old[0] + cost, old[1] + count)
    bench = open(f"{work}/bench.{frames}.txt").read()
    decided = int(re.search(r"^total: (\d+) frames decided", bench, re.M)[1])
    core = re.search(r"OpenBLAS core (\S+?),", bench)
    return dict(incl=incl, arcs=arcs, total=total, decided=decided, core=core[1] if core else "?")


# Patterns on (mangled) names. LivenessViT mangles as LivenessEngine0A3ViT; MiniFASNetCrop (a crop, in
# gates+crops) as 14MiniFASNetCropV, so the MiniFASNet patterns name the classes exactly.
DECODE = r"^(avcodec_send_packet|avcodec_receive_frame|av_read_frame)$"
ATTACH = r"^\$s10CaptureKit12MediaDecoderC12attachingRGB[0-9_A-F]*LL2toAA5FrameCSgAH_tF$"
CONVERT = r"^\$s10CaptureKit14PixelConverterC"
PREPARE = r"^\$s13FramePipeline08LivenessB0C7prepare[0-9_A-F]*LL_4lane[^ ]*tF$"
ANALYSE = r"^\$s13FramePipeline15DetectorLocatorC7analyse5image5frame[^ ]*tF$"
DETECTING = r"^\$s13FramePipeline15DetectorLocatorC(7analyse|6detect)"
YUNET = r"^\$s14LivenessEngine(12FaceDetectorC|9ONNXGraphC)"
CROPS = r"^\$s14LivenessEngine8OpinionsC7prepare5image6region3box4into7scratch[^ ]*tKF$"
SCORING = r"^\$s(14LivenessEngine8OpinionsC(5score|10scoreChunk|3run)|13FramePipeline08LivenessB0C(7process|5drain))"
VIT = r"^\$s14LivenessEngine0A3ViTC"
PAIR = r"^\$s14LivenessEngine(10MiniFASNetC|14MiniFASNetPairC)"
ROOTS = {
    "source thread (MediaDecoder.run)": r"^\$s10CaptureKit12MediaDecoderC3run7handler[^ ]*tF$",
    "prepare (LivenessPipeline.prepare)": PREPARE,
    "inference (LivenessPipeline.drain)": r"^\$s13FramePipeline08LivenessB0C5drain[0-9_A-F]*LLyyF$",
}


def inclusive(profile, pattern):
    """Inclusive cost of the functions matching `pattern`, less their calls into each other (no nesting)."""
    names = [f for f in profile["incl"] if re.search(pattern, f)]
    inner = sum(c for (a, b), (c, _) in profile["arcs"].items() if a in names and b in names)
    return sum(profile["incl"][f] for f in names) - inner, names


def calls(profile, callers, callees):
    """Inclusive cost (and count) of calls from functions matching `callers` into ones matching `callees`."""
    found = [(a, b, c, k) for (a, b), (c, k) in profile["arcs"].items() if re.search(callers, a) and re.search(callees, b)]
    return sum(c for *_, c, _ in found), sum(k for *_, k in found), found


def stages(p):
    out, used = {}, {}
    out["decode"], used["decode"] = inclusive(p, DECODE)
    attach, names = inclusive(p, ATTACH)
    fallback, _, arcs = calls(p, PREPARE, CONVERT)
    out["RGB conversion"], used["RGB conversion"] = attach + fallback, names + [b for _, b, *_ in arcs]
    analyse, analyse_names = inclusive(p, ANALYSE)
    bgr, _, bgr_arcs = calls(p, DETECTING, CONVERT)
    yunet, _, yunet_arcs = calls(p, DETECTING, YUNET)
    out["detection"], used["detection"] = bgr + yunet, [b for _, b, *_ in bgr_arcs + yunet_arcs]
    crops, crop_names = inclusive(p, CROPS)
    out["gates+crops"], used["gates+crops"] = analyse - bgr - yunet + crops, analyse_names + crop_names
    vit, vit_calls, vit_arcs = calls(p, SCORING, VIT)
    out["ViT forward"], used["ViT forward"] = vit, sorted({b for _, b, *_ in vit_arcs})
    pair, _, pair_arcs = calls(p, SCORING, PAIR)
    out["MiniFASNet forward"], used["MiniFASNet forward"] = pair, sorted({b for _, b, *_ in pair_arcs})
    roots = {label: inclusive(p, pattern)[0] for label, pattern in ROOTS.items()}
    return out, used, roots, vit_calls


small, large = load(n), load(2 * n)
for profile, frames in ((small, n), (large, 2 * n)):
    if profile["core"] != wanted_core:
        sys.exit(f"callgrind-stages: the {frames}-frame run used OpenBLAS core {profile['core']}, not {wanted_core}")
    if profile["total"] is None:
        sys.exit(f"callgrind-stages: no PROGRAM TOTALS in the {frames}-frame annotation")
frames = large["decided"] - small["decided"]
if frames <= 0:
    sys.exit(f"callgrind-stages: {large['decided']} frames decided on {2 * n}, {small['decided']} on {n}: no difference")
(s_stage, _, s_roots, s_vit), (l_stage, used, l_roots, l_vit) = stages(small), stages(large)
if l_stage["ViT forward"] == 0 or l_stage["decode"] == 0:
    sys.exit("callgrind-stages: no decoding or no ViT under callgrind (re-executed outside valgrind, or symbols renamed?)")
total = (large["total"] - small["total"]) / frames
rows = [(name, (l_stage[name] - s_stage[name]) / frames) for name in l_stage]
named = sum(v for _, v in rows)
rows.append(("decision/rest", total - named))

print(f"# OpenBLAS core {large['core']}; frames decided {small['decided']} and {large['decided']}: "
      f"per frame = difference / {frames}; ViT forward calls {l_vit - s_vit} (mean batch {frames / max(1, l_vit - s_vit):.2f})")
print(f"{'stage':<20} {'Ir/frame':>14} {'share':>7}")
for name, value in rows:
    print(f"{name:<20} {value:>14,.0f} {100 * value / total:>6.1f}%")
print(f"{'total':<20} {total:>14,.0f} {100.0:>6.1f}%")
print(f"# named stages {named:,.0f} = {100 * named / total:.1f}% of the total; they are disjoint (no root calls another)")
rooted = 0
for label in ROOTS:
    value = (l_roots[label] - s_roots[label]) / frames
    rooted += value
    print(f"# roots: {label:<36} {value:>14,.0f}")
print(f"# roots: {'three pipeline threads together':<36} {rooted:>14,.0f} = {100 * rooted / total:.1f}% of the total")


def demangle(names):
    if not demangler or not names:
        return names
    try:
        result = subprocess.run([demangler, "--simplified"], input="\n".join(names), capture_output=True, text=True)
        out = result.stdout.splitlines()
        return out if len(out) == len(names) else names
    except OSError:
        return names


print("# functions behind each stage (demangled, simplified):")
for name in l_stage:
    shown = demangle(sorted(set(used[name])))
    print(f"#   {name}: " + ("; ".join(s[:110] for s in shown) or "(none)"))
PY
echo "# wall time $(($(date +%s) - started)) s"
