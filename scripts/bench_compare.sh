#!/usr/bin/env bash
# Times livenessd, ONNX Runtime and PyTorch on the same checkpoint, one thread, back to back in one
# invocation, and prints livenessd's forward time as a ratio of each (the machines are shared and
# noisy: only ratios from the same run are worth quoting).
#
#   python3 -m venv /tmp/ref && /tmp/ref/bin/pip install -r scripts/requirements-bench.txt
#   scripts/bench_compare.sh [PYTHON]        # PYTHON defaults to /tmp/ref/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${1:-/tmp/ref/bin/python}"
ASSETS="${LIVENESSD_TEST_ASSETS:-../shared}"
MODEL="${LIVENESSD_MODEL:-$ASSETS/models/face-liveness-vit/model.pt}"
[ -x .build/release/livenessd ] || swift build -c release --static-swift-stdlib
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$PYTHON" scripts/bench_reference.py --model "$MODEL" --json > "$out/reference.jsonl"
.build/release/livenessd bench --model "$MODEL" --json > "$out/livenessd.jsonl"
python3 - "$out/reference.jsonl" "$out/livenessd.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for f in sys.argv[1:] for l in open(f) if l.startswith("{")]
ref = {(r["engine"], r["batch"]): r["ms_per_frame_median"] for r in rows if r["engine"] != "livenessd"}
ours = {(r["case"], r["batch"]): r for r in rows if r["engine"] == "livenessd"}
core = next(iter(ours.values()))["blas_core"]
print(f"# livenessd OpenBLAS core: {core}; one thread everywhere; ms/frame medians")
print(f"{'batch':>5} {'livenessd':>10} {'onnxruntime':>12} {'pytorch':>9} {'vs ORT':>7} {'vs torch':>9} {'livenessd pre+fwd':>18}")
for batch in sorted({b for _, b in ours}):
    mine = ours[("forward", batch)]["ms_per_frame_median"]
    ort, pt = ref.get(("onnxruntime", batch)), ref.get(("pytorch", batch))
    full = ours.get(("preprocess+forward", batch), {}).get("ms_per_frame_median", float("nan"))
    print(f"{batch:>5} {mine:>10.3f} {ort:>12.3f} {pt:>9.3f} {mine / ort:>7.2f} {mine / pt:>9.2f} {full:>18.3f}")
PY
