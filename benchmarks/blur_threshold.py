"""Choose the recall-first default score threshold of ``blazeface blur`` on WIDER FACE val.

A face the detector misses is left readable (a privacy leak); a false alarm only blurs a patch of
background. So the default threshold is chosen for recall, with a ceiling on false alarms:

* the detector runs once at confidence 0.01 (same long side and NMS as ``blur``) over the images of
  ``../shared/data/widerface/val``;
* for every threshold t, a ground-truth face counts as found when some detection with score >= t has
  IoU >= 0.5 with it (recall, per WIDER setting: easy, medium (which includes easy), hard), and a
  detection with score >= t is a false alarm when its IoU with EVERY labelled face (any setting,
  including the tiny ones) is below 0.3;
* the rule: a missed face weighs as much as ``--miss-cost`` (default 20) false alarms; the chosen
  threshold minimises, per image, missed medium faces + false alarms / miss-cost (medium: the faces the
  WIDER protocol deems findable; hard adds the tiny ones, which are not identifiable at 640 px anyway).
  The table shows the whole trade-off.

    python benchmarks/blur_threshold.py                                    # the shipped weights
    python benchmarks/blur_threshold.py --weights ../shared/data/reference_weights/Blaze_Final_640.pth
    python benchmarks/blur_threshold.py ... --cache /tmp/blur_preds.npz    # reuse the detections next time

The chosen value belongs to the weights it was derived from: the script prints their SHA-256 with it,
and ``--write`` puts both into ``src/blazeface/privacy.py`` (``DEFAULT_BLUR_CONF`` and
``DEFAULT_BLUR_CONF_WEIGHTS_SHA256``); tests/test_blur.py fails when the shipped blaze weights no longer
have that hash, i.e. when they changed without a re-derivation. (The README's table is updated by hand.)
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
PRIVACY = REPO / "src" / "blazeface" / "privacy.py"
FOUND_IOU = 0.5
FALSE_ALARM_IOU = 0.3


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="blaze")
    p.add_argument("--weights", default=None, help="checkpoint (default: the shipped weights)")
    p.add_argument("--images", type=Path, default=DATA / "widerface" / "val" / "images")
    p.add_argument("--list", type=Path, default=DATA / "widerface" / "val" / "wider_val.txt")
    p.add_argument("--gt", type=Path, default=DATA / "widerface" / "ground_truth")
    p.add_argument("--long-side", type=int, default=640)
    p.add_argument("--nms", type=float, default=0.4)
    p.add_argument("--thresholds", default=",".join(f"{0.02 * k:.2f}" for k in range(1, 41)),
                   help="comma-separated thresholds to sweep (default 0.02 to 0.80 in steps of 0.02)")
    p.add_argument("--miss-cost", type=float, default=20.0,
                   help="how many false alarms one missed face is worth (default 20)")
    p.add_argument("--cache", type=Path, default=None, help="npz of detections: read if present, else written")
    p.add_argument("--json", action="store_true", help="print the table and the choice as one JSON object")
    p.add_argument("--write", action="store_true",
                   help="write the chosen value and the weights' SHA-256 into src/blazeface/privacy.py "
                        "(only for the shipped blaze weights: the default belongs to them)")
    return p.parse_args(argv)


CACHE_DIGEST = "__weights_sha256__"


def detections(args, keys: list[str], digest: str) -> dict[str, np.ndarray]:
    """``x y w h score`` rows per image at confidence 0.01 (from the cache when it exists and was made
    with the same weights)."""
    if args.cache and args.cache.is_file():
        with np.load(args.cache) as data:
            same = CACHE_DIGEST in data.files and str(data[CACHE_DIGEST]) == digest
            if same and set(keys) <= set(data.files):
                return {k: data[k] for k in keys}
    import torch

    from blazeface import FaceDetector
    from blazeface.evaluation.widerface import predict_folder

    torch.set_num_threads(1)
    detector = FaceDetector(args.model, weights=args.weights, long_side=args.long_side, conf=0.01, nms=args.nms)
    rows = predict_folder(detector, args.images, keys, batch_size=1, progress=True)
    if args.cache:
        np.savez_compressed(args.cache, **rows, **{CACHE_DIGEST: np.array(digest)})
    return rows


def sweep(rows: dict[str, np.ndarray], gt, keys: list[str], thresholds: list[float]) -> list[dict]:
    from blazeface.evaluation.widerface import SETTINGS, box_overlaps

    # Per image: the best score with which each face is found (IoU >= 0.5), and per detection its score
    # and whether it touches any face (IoU >= 0.3).
    found_score = {s: [] for s in SETTINGS}
    alarm_scores = []
    for key in keys:
        i = gt.index[key]
        faces, pred = gt.boxes[i], rows[key]
        if len(faces) == 0:
            continue  # as the WIDER protocol: images without labelled faces are not evaluated
        iou = box_overlaps(pred[:, :4], faces) if len(pred) else np.zeros((0, len(faces)))
        best = np.where(iou >= FOUND_IOU, pred[:, 4:5], -1.0).max(axis=0) if len(pred) else np.full(len(faces), -1.0)
        for s in SETTINGS:
            found_score[s].append(best[gt.keep[s][i]])
        if len(pred):
            alarm_scores.append(pred[iou.max(axis=1) < FALSE_ALARM_IOU, 4])
    found = {s: np.concatenate(v) for s, v in found_score.items()}
    alarms = np.concatenate(alarm_scores) if alarm_scores else np.zeros(0)
    images = sum(1 for k in keys if len(gt.boxes[gt.index[k]]))
    table = []
    for t in thresholds:
        row = {"threshold": t}
        for s in SETTINGS:
            row[f"recall_{s}"] = float((found[s] >= t).mean()) if len(found[s]) else float("nan")
        row["false_alarms_per_image"] = float((alarms >= t).sum() / max(images, 1))
        table.append(row)
    return table, images, {s: len(found[s]) for s in SETTINGS}


def choose(table: list[dict], faces_per_image: float, miss_cost: float) -> float:
    """The threshold minimising missed medium faces + false alarms / miss_cost, per image."""
    cost = lambda r: (1 - r["recall_medium"]) * faces_per_image + r["false_alarms_per_image"] / miss_cost  # noqa: E731
    return min(table, key=cost)["threshold"]


def write_default(chosen: float, digest: str, path: Path = PRIVACY) -> None:
    """Replace the two constants in privacy.py (the value and the hash of the weights it belongs to)."""
    text = path.read_text()
    text, n = re.subn(r"^DEFAULT_BLUR_CONF = .*$", f"DEFAULT_BLUR_CONF = {chosen}", text, flags=re.M)
    text, m = re.subn(r'^DEFAULT_BLUR_CONF_WEIGHTS_SHA256 = .*$', f'DEFAULT_BLUR_CONF_WEIGHTS_SHA256 = "{digest}"',
                      text, flags=re.M)
    if n != 1 or m != 1:
        raise SystemExit(f"{path}: expected one DEFAULT_BLUR_CONF and one DEFAULT_BLUR_CONF_WEIGHTS_SHA256 line")
    path.write_text(text)


def main(argv=None) -> int:
    args = parse_args(argv)
    from blazeface.evaluation.widerface import load_ground_truth, read_image_list
    from blazeface.metadata import file_sha256
    from blazeface.models import resolve_weights

    weights = resolve_weights(args.model, args.weights)
    digest = file_sha256(weights)
    shipped = args.model == "blaze" and weights == resolve_weights("blaze", None)
    if args.write and not shipped:
        raise SystemExit("--write is for the shipped blaze weights (the default belongs to them)")

    gt = load_ground_truth(args.gt)
    keys = read_image_list(args.list, gt)
    thresholds = sorted(float(t) for t in args.thresholds.split(","))
    rows = detections(args, keys, digest)
    table, images, faces = sweep(rows, gt, keys, thresholds)
    chosen = choose(table, faces["medium"] / max(images, 1), args.miss_cost)
    if args.write:
        write_default(chosen, digest)
    if args.json:
        print(json.dumps({"table": table, "images": images, "faces": faces, "chosen": chosen,
                          "weights": str(weights), "weights_sha256": digest}))
        return 0
    print(f"{images} images with faces; faces kept: " + ", ".join(f"{s} {n}" for s, n in faces.items()))
    print(f"{'threshold':>9} {'easy':>7} {'medium':>7} {'hard':>7} {'false alarms/img':>17}")
    for r in table:
        mark = "  <- chosen" if r["threshold"] == chosen else ""
        print(f"{r['threshold']:>9.2f} {r['recall_easy']:>7.3f} {r['recall_medium']:>7.3f} {r['recall_hard']:>7.3f} "
              f"{r['false_alarms_per_image']:>17.2f}{mark}")
    print(f"chosen: {chosen} (fewest missed medium faces + false alarms / {args.miss_cost:g}, per image)")
    print(f"weights: {weights} sha256 {digest}" + (f"; written to {PRIVACY}" if args.write else ""))
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
