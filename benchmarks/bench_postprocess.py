"""Time the numpy post-processing on one core: the whole ``postprocess()`` at display settings, and
``nms()`` on a detector's low-confidence candidates (the evaluation load), against the classic loop.

    python benchmarks/bench_postprocess.py            # table
    python benchmarks/bench_postprocess.py --json     # one JSON object

Needs the reference BlazeFace checkpoint and a facemask image from ../shared/data (skips otherwise).
Medians of many runs; on a shared machine also look at p10, which other processes disturb less.
"""
from __future__ import annotations

import os

# One thread everywhere, set before numpy/torch load their thread pools: the requirement is per core,
# and on a small shared machine extra threads only add noise.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
             "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"

from blazeface.postprocess import greedy_nms as reference_nms  # noqa: E402  (the seed's loop: the baseline)


def timed(fn, repeats: int, warmup: int = 3) -> dict:
    for _ in range(warmup):
        fn()
    times = np.empty(repeats)
    for k in range(repeats):
        t0 = time.perf_counter()
        fn()
        times[k] = time.perf_counter() - t0
    times *= 1e3
    return {"median_ms": float(np.median(times)), "p10_ms": float(np.percentile(times, 10)),
            "min_ms": float(times.min()), "runs": repeats}


def raw_outputs(model, image: np.ndarray, long_side: int):
    """(loc, conf, landm) of one image without the batch dimension, and the priors and input size."""
    import torch

    from blazeface.priors import prior_boxes

    from blazeface.inference import letterbox_size, preprocess

    box = letterbox_size(image.shape[1], image.shape[0], long_side, model.config.size_multiple)
    net_input = preprocess(image, box, model.config.mean_bgr)
    width, height = box.input_size
    with torch.inference_mode():
        loc, conf, landm = (t[0].numpy() for t in model(torch.from_numpy(net_input)[None]))
    priors = prior_boxes(model.config.priors, height, width)
    return loc, conf, landm, priors, (width, height)


def candidates(loc, conf, priors, size, min_score: float, top_k: int):
    """The boxes (input pixels) and scores postprocess hands to NMS at this confidence."""
    from blazeface.box_coding import decode_boxes

    scores = conf[:, 1]
    idx = np.flatnonzero(scores > min_score)
    idx = idx[np.argsort(-scores[idx], kind="stable")][:top_k]
    width, height = size
    boxes = decode_boxes(loc[idx].astype(np.float32), priors[idx]) * np.array([width, height, width, height],
                                                                              np.float32)
    return boxes, scores[idx]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=DATA / "reference_weights" / "Blaze_Final_640.pth")
    parser.add_argument("--image", type=Path, default=DATA / "facemask" / "images" / "maksssksksss240.jpg")
    parser.add_argument("--long-side", type=int, default=640)
    parser.add_argument("--conf", type=float, default=0.5, help="display confidence for postprocess (a)")
    parser.add_argument("--nms", type=float, default=0.4, help="display NMS threshold for postprocess (a)")
    parser.add_argument("--eval-conf", type=float, default=0.01, help="confidence of the NMS load (b)")
    parser.add_argument("--eval-nms", type=float, default=0.5, help="NMS threshold of the NMS load (b)")
    parser.add_argument("--top-k", type=int, default=5000)
    parser.add_argument("--stress", action=argparse.BooleanOptionalAction, default=True,
                        help="also time NMS on the top-k candidates at any confidence (always top_k boxes)")
    parser.add_argument("--repeats", type=int, default=300, help="runs per fast measurement")
    parser.add_argument("--reference-repeats", type=int, default=15, help="runs of the classic loop")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)

    missing = [str(p) for p in (args.weights, args.image) if not p.is_file()]
    if missing:
        message = f"skipped: not found: {', '.join(missing)}"
        print(json.dumps({"skipped": message}) if args.json else message)
        return 0

    import cv2
    import torch

    torch.set_num_threads(1)
    from blazeface import create_model
    from blazeface.postprocess import PostprocessConfig, nms, postprocess

    model = create_model("blaze", weights=str(args.weights)).eval()
    image = cv2.imread(str(args.image))
    loc, conf, landm, priors, size = raw_outputs(model, image, args.long_side)
    variances = model.config.priors.variances

    rows = []
    for vote in (PostprocessConfig.landmark_vote, None):  # the default, then each face's own landmarks
        display = PostprocessConfig(conf=args.conf, nms=args.nms, top_k=args.top_k, landmark_vote=vote)
        dets = postprocess(loc, conf, landm, priors, size, display, variances)
        rows.append({"case": f"postprocess conf {args.conf:g} nms {args.nms:g}" + ("" if vote else " no vote"),
                     "boxes_in": int((conf[:, 1] > args.conf).sum()), "kept": len(dets),
                     **timed(lambda: postprocess(loc, conf, landm, priors, size, display, variances), args.repeats)})

    loads = [(f"nms conf {args.eval_conf:g} top {args.top_k} thr {args.eval_nms:g}", args.eval_conf)]
    if args.stress:
        loads.append((f"nms any conf top {args.top_k} thr {args.eval_nms:g} (stress)", -np.inf))
    for name, min_score in loads:
        boxes, scores = candidates(loc, conf, priors, size, min_score, args.top_k)
        keep = nms(boxes, scores, args.eval_nms)
        ref_keep = reference_nms(boxes, scores, args.eval_nms)
        row = {"case": name, "boxes_in": len(boxes), "kept": len(keep),
               "exact": bool(np.array_equal(keep, ref_keep)),
               **timed(lambda: nms(boxes, scores, args.eval_nms), args.repeats)}
        ref = timed(lambda: reference_nms(boxes, scores, args.eval_nms), args.reference_repeats, warmup=1)
        row["reference_median_ms"] = ref["median_ms"]
        row["speedup"] = ref["median_ms"] / row["median_ms"]
        rows.append(row)

    result = {"image": args.image.name, "input_size": list(size), "numpy": np.__version__,
              "python": platform.python_version(), "machine": platform.machine(), "threads": 1, "rows": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.image.name} at {size[0]}x{size[1]}, numpy {np.__version__}, one thread")
    print(f"{'case':<44} {'boxes':>6} {'kept':>5} {'median':>9} {'p10':>9} {'loop':>10} {'speedup':>8}")
    for r in rows:
        loop = f"{r['reference_median_ms']:8.2f}ms" if "reference_median_ms" in r else f"{'':>10}"
        speed = f"{r['speedup']:7.1f}x" if "speedup" in r else f"{'':>8}"
        print(f"{r['case']:<44} {r['boxes_in']:>6} {r['kept']:>5} {r['median_ms']:7.3f}ms {r['p10_ms']:7.3f}ms "
              f"{loop} {speed}")
    if not all(r.get("exact", True) for r in rows):
        print("MISMATCH: nms differs from the classic loop", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
