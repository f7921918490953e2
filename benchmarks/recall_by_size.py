"""Recall of the WIDER FACE hard-setting faces by face size, several models side by side: where AP is lost.

    python benchmarks/recall_by_size.py --predictions ours=DIR --predictions original=DIR2 --markdown
    python benchmarks/recall_by_size.py --setting easy --by pose --false-positives 100 --predictions ... --markdown

Each DIR is a predictions folder of ``blazeface evaluate widerface ... --save-predictions DIR`` (so the
numbers belong to the same detections as that command's AP). A face's size is sqrt(w * h) of its box after
the image is letterboxed to --long-side, the size the detector saw. A face counts as found at threshold t
when a prediction of score >= t overlaps it with IoU >= 0.5 (the protocol's IoU, +1 pixel convention), each
prediction finding at most its best-overlapping face; predictions overlapping no face that well are false
positives. ``--by ATTRIBUTE`` groups the faces by one of WIDER's own per-face labels instead of by size (blur,
occlusion, pose, illumination, expression). ``--false-positive-kinds`` also sorts each column's false positives by
their best overlap with any face: mislocalised (IoU 0.3-0.5: a face found, its box off), near a face (0.1-0.3), or
background (under 0.1: nothing labelled there; on WIDER often a face its annotators left out). Needs
../shared/data (the dev split's images and ground truth).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from blazeface.evaluation import widerface as wf

REPO = Path(__file__).resolve().parents[1]
WIDER = REPO.parent / "shared" / "data" / "widerface"
EDGES = (0, 8, 12, 16, 24, 32, 64)
IOU = 0.5
# A false positive's kind by its best IoU with any face: at least the first bound, else the next, ...
FP_KINDS = (("mislocalised", 0.3), ("near a face", 0.1), ("background", 0.0))


def face_sizes(gt: wf.GroundTruth, keys: list[str], images: Path, long_side: int) -> dict[str, np.ndarray]:
    """sqrt(w * h) of every face, in pixels of the image letterboxed to ``long_side``."""
    sizes = {}
    for key in keys:
        i = gt.index[key]
        image = cv2.imread(str(wf.image_path(images, key)))
        if image is None:
            raise SystemExit(f"{wf.image_path(images, key)}: unreadable")
        h, w = image.shape[:2]
        boxes = gt.boxes[i]
        sizes[key] = np.sqrt(boxes[:, 2] * boxes[:, 3]) * (long_side / max(h, w) if long_side else 1.0)
    return sizes


def best_matches(pred: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per prediction, the face it finds (its best overlap, IoU >= 0.5) or -1, and that best IoU: computed once
    per image, so that any threshold is a filter on the scores."""
    if len(pred) == 0 or len(boxes) == 0:
        return np.full(len(pred), -1, np.int64), np.zeros(len(pred))
    iou = wf.box_overlaps(pred[:, :4], boxes)
    best = iou.argmax(1)
    overlap = iou[np.arange(len(pred)), best]
    return np.where(overlap >= IOU, best, -1), overlap


def false_positive_kinds(scores: np.ndarray, matches: np.ndarray, overlaps: np.ndarray, threshold: float
                         ) -> list[int]:
    """The false positives at ``threshold`` counted by kind (FP_KINDS' order)."""
    missed = overlaps[(scores >= threshold) & (matches < 0)]
    counts, taken = [], np.zeros(len(missed), bool)
    for _, bound in FP_KINDS:
        kind = (missed >= bound) & ~taken
        counts.append(int(kind.sum()))
        taken |= kind
    return counts


def found_faces(scores: np.ndarray, matches: np.ndarray, threshold: float) -> tuple[set[int], int]:
    """(indices of the faces found at ``threshold``, false positives)."""
    kept = matches[scores >= threshold]
    return set(kept[kept >= 0].tolist()), int((kept < 0).sum())


def threshold_at(matched: dict[str, tuple[np.ndarray, ...]], count: int) -> float:
    """The lowest score threshold at which the predictions make at most ``count`` false positives."""
    lo, hi = 0.0, 1.0
    for _ in range(30):  # bisection: false positives fall as the threshold rises
        mid = (lo + hi) / 2
        fp = sum(found_faces(scores, matches, mid)[1] for scores, matches, _ in matched.values())
        lo, hi = (lo, mid) if fp <= count else (mid, hi)
    return hi


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--images", type=Path, default=WIDER / "val" / "images")
    parser.add_argument("--gt", type=Path, default=WIDER / "ground_truth")
    parser.add_argument("--list", type=Path, default=WIDER / "val" / "wider_val.txt")
    parser.add_argument("--setting", default="hard", choices=["easy", "medium", "hard"])
    parser.add_argument("--by", default="size", choices=["size", *wf.ATTRIBUTES],
                        help="group the faces by size (default) or by one of WIDER's per-face labels")
    parser.add_argument("--long-side", type=int, default=640, help="the --long-side the predictions were made at")
    parser.add_argument("--thresholds", default="0.1,0.5", help="score thresholds, comma-separated")
    parser.add_argument("--false-positives", type=int, default=None, metavar="N",
                        help="instead of fixed thresholds: each model at the threshold where it makes N false "
                             "positives over the images (models whose scores are calibrated differently then "
                             "compare at one operating point)")
    parser.add_argument("--false-positive-kinds", action="store_true",
                        help="also count each column's false positives by kind (mislocalised, near a face, "
                             "background)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    runs = dict(spec.split("=", 1) for spec in args.predictions)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    gt = wf.load_ground_truth(args.gt)
    keys = wf.read_image_list(args.list, gt)
    if args.by == "size":
        sizes = face_sizes(gt, keys, args.images, args.long_side)
        bins = {key: np.digitize(s, EDGES) - 1 for key, s in sizes.items()}
        labels = [f"{lo}-{hi}" for lo, hi in zip(EDGES, EDGES[1:])] + [f">= {EDGES[-1]}"]
    else:
        if args.by not in gt.attributes:
            raise SystemExit(f"{args.gt}: the ground truth has no {args.by} labels")
        bins = {key: gt.attributes[args.by][gt.index[key]] for key in keys}
        labels = list(wf.ATTRIBUTES[args.by])
    totals = np.zeros(len(labels), np.int64)
    for key in keys:
        np.add.at(totals, bins[key][gt.keep[args.setting][gt.index[key]]], 1)
    matched = {}  # name -> key -> (scores, matched face or -1)
    for name, folder in runs.items():
        predictions = wf.read_predictions(folder, keys)[0]
        matched[name] = {key: (p[:, 4], *best_matches(p, gt.boxes[gt.index[key]])) for key, p in predictions.items()}
    if args.false_positives is not None:
        thresholds = ["fp"]
    found = {(name, t): np.zeros(len(labels), np.int64) for name in runs for t in thresholds}
    false_positives = {(name, t): 0 for name in runs for t in thresholds}
    kinds = {(name, t): np.zeros(len(FP_KINDS), np.int64) for name in runs for t in thresholds}
    chosen = {}
    for name in runs:
        for t in thresholds:
            score = threshold_at(matched[name], args.false_positives) if t == "fp" else t
            chosen[name, t] = score
            for key in keys:
                i = gt.index[key]
                scores, matches, overlaps = matched[name][key]
                hits, fp = found_faces(scores, matches, score)
                if args.false_positive_kinds:
                    kinds[name, t] += false_positive_kinds(scores, matches, overlaps, score)
                kept_hits = [k for k in gt.keep[args.setting][i] if k in hits]
                np.add.at(found[name, t], bins[key][kept_hits], 1)
                false_positives[name, t] += fp
    columns = [(name, t) for t in thresholds for name in runs]
    rows = [[label, int(totals[b]), *(found[c][b] / max(1, totals[b]) for c in columns)] for b, label in enumerate(labels)]
    rows.append(["all", int(totals.sum()), *(found[c].sum() / max(1, totals.sum()) for c in columns)])
    if not args.markdown:
        print(json.dumps({"setting": args.setting, "by": args.by, "long_side": args.long_side, "bins": labels,
                          "faces": totals.tolist(),
                          "recall": {f"{n}@{t}": (found[n, t] / np.maximum(1, totals)).round(4).tolist()
                                     for n, t in columns},
                          "false_positives": {f"{n}@{t}": false_positives[n, t] for n, t in columns},
                          **({"false_positive_kinds": {f"{n}@{t}": dict(zip((k for k, _ in FP_KINDS),
                                                                           kinds[n, t].tolist()))
                                                      for n, t in columns}} if args.false_positive_kinds else {}),
                          "thresholds": {f"{n}@{t}": chosen[n, t] for n, t in columns}}))
        return 0
    grouping = (f"size (sqrt(w h), pixels at long side {args.long_side})" if args.by == "size"
                else f"WIDER's {args.by} label")
    print(f"{args.setting} faces of {len(keys)} images by {grouping}; recall at score >= t, IoU >= {IOU}\n")
    print(f"| {'size (px)' if args.by == 'size' else args.by} | faces | " + " | ".join(f"{n} @{chosen[n, t]:.3g}" for n, t in columns) + " |")
    print("|---|---:|" + "---:|" * len(columns))
    for row in rows:
        print(f"| {row[0]} | {row[1]} | " + " | ".join(f"{v:.3f}" for v in row[2:]) + " |")
    print("| false positives | | " + " | ".join(str(false_positives[c]) for c in columns) + " |")
    if args.false_positive_kinds:
        for k, (kind, bound) in enumerate(FP_KINDS):
            print(f"| ... {kind} (best IoU >= {bound}) | | " + " | ".join(str(kinds[c][k]) for c in columns) + " |")
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
