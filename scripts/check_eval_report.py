#!/usr/bin/env python3
"""Recompute the figures of a `livenessd eval` report with scikit-learn and SciPy, independently of
livenessd's Swift code, and compare.

    python3 scripts/check_eval_report.py eval-report/        # needs scikit-learn, scipy, numpy

Recomputed from report.json's per-presentation scores and from frames.jsonl's per-frame scores:
APCER per species / pooled / worst, BPCER, ACER at the configured threshold; EER, AUC and
BPCER at APCER 1/5/10 % from sklearn.metrics.roc_curve / roc_auc_score; Clopper–Pearson intervals
from scipy.stats.beta; the presentation scores themselves from the frames' smoothed scores.
Exit status 0 when everything agrees within 1e-9 (1e-6 for interval bounds), else 1.
"""
import json
import math
import sys
from collections import defaultdict

import numpy as np
from scipy.stats import beta
from sklearn.metrics import roc_auc_score, roc_curve

EVAL_SPLITS = {"eval", "test", "evaluation"}
DEV_SPLITS = {"dev", "devel", "development", "val", "validation", "calibration"}

failures = []


def close(name, ours, theirs, tol=1e-9):
    if ours is None and theirs is None:
        return
    if ours is None or theirs is None or abs(ours - theirs) > tol:
        failures.append(f"{name}: report {ours} vs recomputed {theirs}")


def clopper_pearson(k, n):
    lower = 0.0 if k == 0 else beta.ppf(0.025, k, n - k + 1)
    upper = 1.0 if k == n else beta.ppf(0.975, k + 1, n - k)
    return lower, upper


def check_proportion(name, prop, errors, total):
    close(name + ".errors", prop["errors"], errors, 0)
    close(name + ".total", prop["total"], total, 0)
    if total:
        close(name + ".value", prop["value"], errors / total)
        lo, hi = clopper_pearson(errors, total)
        close(name + ".ci95[0]", prop["ci95"][0], lo, 1e-6)
        close(name + ".ci95[1]", prop["ci95"][1], hi, 1e-6)


def check_level(name, level, scores, labels, species, threshold):
    scores = np.asarray(scores, dtype=float)
    attack = np.asarray([l == "attack" for l in labels])
    point = level["at_configured_threshold"]
    # APCER per species and pooled, BPCER, ACER.
    by_species = defaultdict(lambda: [0, 0])
    for s, a, sp in zip(scores, attack, species):
        if a:
            by_species[sp][1] += 1
            by_species[sp][0] += int(s < threshold)
    for sp, (errors, total) in by_species.items():
        check_proportion(f"{name}.apcer[{sp}]", point["apcer_by_species"][sp], errors, total)
    check_proportion(f"{name}.apcer_pooled", point["apcer_pooled"], int(np.sum(scores[attack] < threshold)), int(attack.sum()))
    check_proportion(f"{name}.bpcer", point["bpcer"], int(np.sum(scores[~attack] >= threshold)), int((~attack).sum()))
    worst = max(errors / total for errors, total in by_species.values())
    close(f"{name}.apcer_worst", point["apcer_worst"]["value"], worst)
    close(f"{name}.acer", point["acer"]["value"], (worst + int(np.sum(scores[~attack] >= threshold)) / (~attack).sum()) / 2)
    # Curves: positive class = attack, predicted attack iff score >= threshold (sklearn's rule).
    fpr, tpr, thresholds = roc_curve(attack.astype(int), scores, drop_intermediate=False)
    apcer = 1 - tpr
    bpcer = fpr
    gap = np.abs(apcer - bpcer)
    best = int(np.argmin(gap))  # first minimum, thresholds from +inf downwards
    # livenessd sweeps thresholds upwards and keeps the first minimum: take the last minimum here.
    best = int(np.flatnonzero(gap == gap.min())[-1])
    close(f"{name}.eer", level["curve"]["eer"]["value"], (apcer[best] + bpcer[best]) / 2)
    close(f"{name}.auc", level["curve"]["auc"]["value"], roc_auc_score(attack.astype(int), scores))
    for entry in level["curve"]["bpcer_at_apcer"]:
        target = entry["target_apcer"]
        allowed = np.flatnonzero(apcer <= target + 1e-12)
        # Among thresholds with APCER <= target, the lowest BPCER (the highest threshold).
        i = allowed[np.argmin(bpcer[allowed])] if len(allowed) else None
        close(f"{name}.bpcer@apcer{target}", entry["bpcer"]["value"], float(bpcer[i]))


def main():
    folder = sys.argv[1] if len(sys.argv) > 1 else "eval-report"
    report = json.load(open(folder + "/report.json"))
    threshold = report["run"]["threshold"]
    hysteresis = report["run"]["decisions"]["hysteresis"]
    minimum = report["run"]["decisions"]["minimum_scored_frames"]
    presentations = [p for p in report["presentations"] if not p["interrupted"]]
    splits = {p.get("split") for p in presentations}
    has_dev = any(s in DEV_SPLITS for s in splits if s)
    has_eval = any(s in EVAL_SPLITS for s in splits if s)
    subset = [p for p in presentations if p.get("split") in EVAL_SPLITS] if has_dev and has_eval else presentations

    # Presentation scores from the frames (frames.jsonl): min smoothed over frames with a full
    # window, plus the hysteresis; else the mean raw score.
    frames = defaultdict(list)
    for line in open(folder + "/frames.jsonl"):
        record = json.loads(line)
        frames[record["path"]].append(record)
    for p in presentations:
        if p.get("score") is None:
            continue
        records = frames[p["path"]]
        windowed = [r["smoothed"] for r in records if r.get("raw") is not None and r["window"] >= minimum]
        raws = [r["raw"] for r in records if r.get("raw") is not None]
        expected = min(windowed) + hysteresis if windowed else sum(raws) / len(raws)
        close(f"score[{p['path']}]", p.get("score"), expected, 1e-12)
        reached_live = any(r["state"] == "live" for r in records)
        if p.get("rule") == "window":
            close(f"door[{p['path']}]", float(reached_live), float(p.get("score") < threshold), 0)

    acquired = [p for p in subset if p.get("score") is not None]
    metrics = report["metrics"]
    check_level(
        "presentation", metrics["presentation"], [p.get("score") for p in acquired], [p["label"] for p in acquired],
        [p.get("species") for p in acquired], threshold)
    check_proportion("presentation.non_response", metrics["presentation"]["non_response"],
                     len(subset) - len(acquired), len(subset))
    fs, fl, fsp = [], [], []
    decoded = 0
    for p in acquired:
        records = frames[p["path"]]
        decoded += len(records)
        for r in records:
            if r.get("raw") is not None:
                fs.append(r["raw"])
                fl.append(p["label"])
                fsp.append(p.get("species"))
    check_level("frame", metrics["frame"], fs, fl, fsp, threshold)
    check_proportion("frame.non_response", metrics["frame"]["non_response"], decoded - len(fs), decoded)

    checked = len(acquired)
    if failures:
        print(f"MISMATCH ({len(failures)}):")
        for f in failures:
            print("  " + f)
        sys.exit(1)
    print(f"report agrees with scikit-learn/SciPy: {checked} presentations, {len(fs)} frames, threshold {threshold}")


if __name__ == "__main__":
    main()
