#!/usr/bin/env python3
"""Single-thread ONNX Runtime timing of the YuNet face detector, to set beside `livenessd bench detect`.

What is measured: session.run on the padded network input (each side rounded up to a multiple of
32, as FaceDetectorYN pads), one intra-op and one inter-op thread, 20 warm-up then --iters timed
runs; median, p10, p90 in ms. Decoding and NMS are not included (they cost microseconds for the
few candidates above threshold), nor is converting the image to float.

Run (venv with onnxruntime and numpy; see scripts/requirements-bench.txt):
    /tmp/ref/bin/python scripts/bench_detect_reference.py [--model PATH] [--iters N] [--size 320x240 640x480]
Default model: $LIVENESSD_TEST_ASSETS/models/yunet/face_detection_yunet.onnx, where
LIVENESSD_TEST_ASSETS defaults to ../shared next to the repository root.
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ASSETS / "models/yunet/face_detection_yunet.onnx"))
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--size", nargs="+", default=["320x240", "640x480"])
    args = parser.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    print(f"# onnxruntime {ort.__version__}, 1 thread; model {args.model}")
    print("size        network   ms/frame median      p10      p90")
    for size in args.size:
        width, height = (int(v) for v in size.lower().split("x"))
        padded_w, padded_h = (width + 31) // 32 * 32, (height + 31) // 32 * 32
        blob = np.random.default_rng(0).integers(0, 256, (1, 3, padded_h, padded_w)).astype(np.float32)
        for _ in range(20):
            session.run(None, {"input": blob})
        samples = []
        for _ in range(args.iters):
            start = time.perf_counter()
            session.run(None, {"input": blob})
            samples.append((time.perf_counter() - start) * 1e3)
        samples.sort()
        q = lambda p: samples[min(len(samples) - 1, int(p * len(samples)))]  # noqa: E731
        print(f"{size:<11} {f'{padded_w}x{padded_h}':<9} {q(0.5):16.3f} {q(0.1):8.3f} {q(0.9):8.3f}")


if __name__ == "__main__":
    main()
