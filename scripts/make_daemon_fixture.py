#!/usr/bin/env python3
"""Expected final verdicts for the daemon integration test, from the PyTorch reference.

For each clip: every frame is decoded upright by the ffmpeg CLI (autorotation on) as RGB24, scored
with $LIVENESSD_TEST_ASSETS/reference/liveness_reference.py on the whole frame (the crop the daemon
uses with its default whole-frame locator), and fed through the same decision rules as livenessd's
DecisionMachine with the defaults of samples/livenessd.yaml (mean over 15 frames / 2 s, 5 frames
minimum, hysteresis 0.05 around the checkpoint threshold). Writes Tests/Fixtures/daemon_expected.json.

    /tmp/ref/bin/python scripts/make_daemon_fixture.py
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
ASSETS = Path(os.environ.get("LIVENESSD_TEST_ASSETS", REPO.parent / "shared"))
sys.path.insert(0, str(ASSETS / "reference"))
from liveness_reference import load, spoof_probability  # noqa: E402

CLIPS = ["samples/live/pad-tdreal__621f74a8_live_video.MOV", "samples/spoof/pad-tdreplay__630b6ba7_replay_video.mp4"]
RULES = dict(window_frames=15, window_seconds=2.0, min_frames=5, hysteresis=0.05)


def frames(path):
    """(pts seconds, RGB PIL image) for every frame, upright."""
    probe = json.loads(subprocess.check_output([
        "ffprobe", "-v", "error", "-select_streams", "v:0", "-show_frames", "-show_entries",
        "frame=best_effort_timestamp_time,width,height", "-of", "json", path]))["frames"]
    rotated = subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-frames:v", "1", "-f", "image2pipe", "-vcodec",
                              "ppm", "-"], capture_output=True, check=True).stdout
    width, height = Image.open(__import__("io").BytesIO(rotated)).size
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    size = width * height * 3
    times = [float(f["best_effort_timestamp_time"]) for f in probe]
    start = times[0]
    for index in range(len(raw) // size):
        pixels = np.frombuffer(raw[index * size:(index + 1) * size], np.uint8).reshape(height, width, 3)
        yield times[index] - start, Image.fromarray(pixels, "RGB")


def decide(scores, threshold):
    """livenessd's DecisionMachine for scored frames only (mean smoothing)."""
    window, state, history = [], "deciding", []
    for time, probability in scores:
        window.append((time, probability))
        window = [w for w in window if w[0] >= time - RULES["window_seconds"]][-RULES["window_frames"]:]
        if len(window) >= RULES["min_frames"]:
            smoothed = sum(p for _, p in window) / len(window)
            if smoothed >= threshold + RULES["hysteresis"]:
                state = "spoof"
            elif smoothed < threshold - RULES["hysteresis"]:
                state = "live"
            elif state not in ("live", "spoof"):
                state = "deciding"
        history.append(state)
    return history


def main():
    model, checkpoint = load(str(ASSETS / "models/face-liveness-vit/model.pt"))
    threshold = checkpoint["threshold"]
    result = {"generated_by": "scripts/make_daemon_fixture.py", "rules": RULES, "threshold": threshold, "clips": {}}
    for clip in CLIPS:
        scores = [(t, spoof_probability(model, image)) for t, image in frames(str(ASSETS / clip))]
        states = decide(scores, threshold)
        tail = [p for _, p in scores[-RULES["window_frames"]:]]
        result["clips"][clip] = {
            "frames": len(scores), "final_state": states[-1], "final_smoothed": sum(tail) / len(tail),
            "first_verdict_frame": next((i for i, s in enumerate(states) if s != "deciding"), None),
            "median_probability": float(np.median([p for _, p in scores])),
        }
        print(clip, result["clips"][clip], file=sys.stderr)
    out = REPO / "Tests/Fixtures/daemon_expected.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print("wrote", out, file=sys.stderr)


if __name__ == "__main__":
    main()
