#!/usr/bin/env python3
"""Single-thread CPU forward-pass timing of the face-liveness ViT in PyTorch and ONNX Runtime.

Both engines run the SAME checkpoint in the SAME process, so their numbers (and a ratio against
the Swift engine measured on the same machine) can be quoted side by side. The model
architecture is imported from $LIVENESSD_TEST_ASSETS/reference/liveness_reference.py (not copied).

What is measured: the model's forward pass only (input tensor already prepared; no image
decoding, preprocessing or softmax), with one thread in every library, for batch 1 and batch 8.
Each case gets 20 warm-up iterations, then --iters timed iterations; the wall time of each
iteration is divided by the batch size and reported as ms/frame (median, p10, p90).
The model is exported to ONNX (opset 17, dynamic batch axis) in a temporary directory, and
ONNX Runtime's logits must match PyTorch's within 1e-4 before anything is timed.

Run (venv with torch, onnxruntime, onnx, numpy; see scripts/requirements-bench.txt):
    /tmp/ref/bin/python scripts/bench_reference.py [--model PATH] [--iters N] [--batch 1 8] [--json]
Default model: $LIVENESSD_TEST_ASSETS/models/face-liveness-vit/model.pt, where
LIVENESSD_TEST_ASSETS defaults to ../shared next to the repository root.
"""
import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

# One thread everywhere: must be set before torch / numpy load their BLAS and OpenMP runtimes.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ASSETS = Path(os.environ.get("LIVENESSD_TEST_ASSETS", REPO.parent / "shared"))
sys.path.insert(0, str(ASSETS / "reference"))
import liveness_reference  # noqa: E402

WARMUP = 20
TOLERANCE = 1e-4


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def torch_backend_info():
    """One line from torch.__config__.show(): the BLAS, oneDNN and SIMD level actually in use."""
    cfg = torch.__config__.show()
    blas = next((p.split("=", 1)[1] for p in cfg.replace(",", "\n").split() if p.startswith("BLAS_INFO=")), "?")
    return (f"BLAS={blas} mkl={torch.backends.mkl.is_available()} "
            f"oneDNN={torch.backends.mkldnn.is_available()} "
            f"openmp={torch.backends.openmp.is_available()} "
            f"cpu_capability={torch.backends.cpu.get_cpu_capability()}")


def export_onnx(model, path):
    """Export with a dynamic batch axis; fall back to the TorchScript exporter if dynamo fails."""
    example = torch.randn(1, 3, 224, 224)
    kwargs = dict(input_names=["input"], output_names=["logits"], opset_version=17,
                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    try:
        torch.onnx.export(model, (example,), str(path), **kwargs)
        return "torch.onnx.export default"
    except Exception as err:  # e.g. onnxscript missing, or an unsupported op in torch.export
        print(f"# dynamo exporter failed ({type(err).__name__}: {str(err).splitlines()[0][:100]});"
              " using dynamo=False", file=sys.stderr)
        with warnings.catch_warnings():  # the legacy exporter's DeprecationWarning
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (example,), str(path), dynamo=False, **kwargs)
        return "torchscript (dynamo=False)"


def ort_session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def time_it(step, batch, iters):
    for _ in range(WARMUP):
        step()
    times = np.empty(iters)
    for i in range(iters):
        t0 = time.perf_counter()
        step()
        times[i] = time.perf_counter() - t0
    per_frame_ms = times * 1e3 / batch
    p10, median, p90 = np.percentile(per_frame_ms, [10, 50, 90])
    return median, p10, p90


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ASSETS / "models/face-liveness-vit/model.pt")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    model, _ = liveness_reference.load(args.model)

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        exporter = export_onnx(model, onnx_path)
        sess = ort_session(onnx_path)  # the file may go once the session is built

    # Parity: ORT logits must match PyTorch on random input, at every batch size timed.
    inputs = {b: torch.randn(b, 3, 224, 224) for b in args.batch}
    max_diff = 0.0
    with torch.inference_mode():
        for b, x in inputs.items():
            ref = model(x).numpy()
            got = sess.run(None, {"input": x.numpy()})[0]
            max_diff = max(max_diff, float(np.abs(ref - got).max()))
    if max_diff > TOLERANCE:
        sys.exit(f"ONNX Runtime logits differ from PyTorch by {max_diff:.3g} (> {TOLERANCE})")

    results = []
    with torch.inference_mode():
        for b in args.batch:
            x, xn = inputs[b], inputs[b].numpy()
            results.append(("pytorch", b, *time_it(lambda: model(x), b, args.iters)))
            results.append(("onnxruntime", b, *time_it(lambda: sess.run(None, {"input": xn}), b, args.iters)))

    if args.json:
        for engine, b, med, p10, p90 in results:
            print(json.dumps({"engine": engine, "batch": b, "ms_per_frame_median": round(med, 4),
                              "ms_per_frame_p10": round(p10, 4), "ms_per_frame_p90": round(p90, 4),
                              "iters": args.iters, "threads": 1}))
        return

    print(f"# model:       {args.model}")
    print(f"# cpu:         {cpu_model()} ({os.cpu_count()} logical CPUs visible)")
    print(f"# torch:       {torch.__version__}  {torch_backend_info()}")
    print(f"# onnxruntime: {ort.__version__}  providers={sess.get_providers()}  exporter={exporter}, opset 17")
    print(f"# threads:     torch intra={torch.get_num_threads()} interop={torch.get_num_interop_threads()}; "
          f"ort intra=1 inter=1; OMP/MKL/OPENBLAS_NUM_THREADS=1")
    print(f"# OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    print(f"# parity:      max |logit diff| ORT vs PyTorch = {max_diff:.2e} (tolerance {TOLERANCE})")
    print(f"# timing:      forward only, {WARMUP} warm-up + {args.iters} timed iterations, ms per frame")
    print(f"{'engine':<12} {'batch':>5} {'median':>9} {'p10':>9} {'p90':>9}")
    for engine, b, med, p10, p90 in results:
        print(f"{engine:<12} {b:>5} {med:>9.3f} {p10:>9.3f} {p90:>9.3f}")


if __name__ == "__main__":
    main()
