#!/usr/bin/env python3
"""Single-thread ONNX Runtime timing of the MiniFASNet pair, to set beside `livenessd bench minifasnet`.

What is measured: session.run on a float32 NCHW batch of random 80x80 BGR crops (values 0..255, as
the models take them), one intra-op and one inter-op thread, --warmup untimed then --iters timed runs;
median, p10, p90 in ms per frame. Converting the crops to float is not included.
The .onnx files are the shipped conversions of the same weights ($LIVENESSD_TEST_ASSETS/models/silent-face,
made by torch.onnx.export with batch norm folded); the product reads the .pth files.

Run (venv with onnxruntime and numpy; see scripts/requirements-bench.txt):
    /tmp/ref/bin/python scripts/bench_minifasnet_reference.py [--iters N] [--batch 1 8]
"""
import argparse
import os
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ASSETS = Path(os.environ.get("LIVENESSD_TEST_ASSETS", REPO.parent / "shared"))
NAMES = ("2.7_80x80_MiniFASNetV2", "4_0_0_80x80_MiniFASNetV1SE")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default=str(ASSETS / "models/silent-face"))
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sessions = [ort.InferenceSession(str(Path(args.folder) / (n + ".onnx")), options, providers=["CPUExecutionProvider"])
                for n in NAMES]
    print(f"# onnxruntime {ort.__version__}, 1 thread; {args.folder}")
    print("case                   batch   ms/frame median      p10      p90")
    rng = np.random.default_rng(0)
    for batch in args.batch:
        blob = rng.integers(0, 256, (batch, 3, 80, 80)).astype(np.float32)
        cases = (("MiniFASNetV2", sessions[:1]), ("MiniFASNetV1SE", sessions[1:]), ("pair", sessions))
        for name, chosen in cases:
            def body():
                for session in chosen:
                    session.run(None, {"input": blob})
            for _ in range(args.warmup):
                body()
            samples = []
            for _ in range(args.iters):
                start = time.perf_counter()
                body()
                samples.append((time.perf_counter() - start) * 1e3 / batch)
            samples.sort()
            q = lambda p: samples[min(len(samples) - 1, int(p * len(samples)))]  # noqa: E731
            print(f"{name:<22} {batch:5d} {q(0.5):17.3f} {q(0.1):8.3f} {q(0.9):8.3f}")


if __name__ == "__main__":
    main()
