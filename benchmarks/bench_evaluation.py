"""Time the WIDER FACE protocol and the label parser on the real files (what tests must not assert).

    python benchmarks/bench_evaluation.py            # table
    python benchmarks/bench_evaluation.py --json     # one JSON object

Needs ../shared/data (the WIDER FACE val ground truth and training labels). The protocol is timed on the
ground truth itself as predictions (39,708 boxes over 3,226 images); medians of --repeats runs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from blazeface.data.labels import load_source
from blazeface.evaluation import widerface as wf

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    gt_dir, train = DATA / "widerface" / "ground_truth", DATA / "widerface" / "train"
    if not gt_dir.is_dir() or not train.is_dir():
        print(f"needs {gt_dir} and {train}", file=sys.stderr)
        return 1
    gt = wf.load_ground_truth(gt_dir)
    rng = np.random.default_rng(0)
    perfect = {k: np.c_[gt.boxes[gt.index[k]], rng.uniform(0.1, 1, len(gt.boxes[gt.index[k]]))] for k in gt.keys}
    result = {
        "protocol_s": round(median_s(lambda: wf.evaluate_predictions(perfect, gt), args.repeats), 3),
        "parse_widerface_train_labels_s": round(median_s(lambda: load_source(train), args.repeats), 3),
        "images": len(gt.keys), "predictions": int(sum(len(p) for p in perfect.values())),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:32s} {value}")
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
