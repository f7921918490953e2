"""``blazeface evaluate``: WIDER FACE easy / medium / hard AP, and landmark NME on an MTFL folder."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import add_model_args
from .. import defaults
from .validate import non_negative_int, positive_int, probability
from ..errors import BlazefaceError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("evaluate", help="WIDER FACE AP or landmark NME",
                              description="Evaluate a detector: WIDER FACE val easy / medium / hard AP "
                                          "(the official protocol) or landmark NME on an MTFL folder.")
    sub = p.add_subparsers(dest="target", required=True, metavar="TARGET")

    w = sub.add_parser("widerface", help="WIDER FACE val easy / medium / hard AP",
                       description="Easy / medium / hard AP with the official WIDER FACE protocol, either of a "
                                   "model run over an image folder (--images) or of a predictions folder "
                                   "written by any tool (--predictions, <event>/<name>.txt files).")
    w.add_argument("--gt", required=True, type=Path, metavar="DIR",
                   help="folder with wider_face_val.mat and wider_{easy,medium,hard}_val.mat")
    source = w.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, metavar="DIR",
                        help="val images as <event>/<name>.jpg: run --model on them")
    source.add_argument("--predictions", type=Path, metavar="DIR", help="evaluate this predictions folder")
    add_model_args(w)
    w.add_argument("--list", type=Path, metavar="FILE",
                   help="evaluate only these images (wider_val.txt format: /event/name.jpg per line); "
                        "default: every ground-truth image present")
    w.add_argument("--long-side", type=non_negative_int, default=defaults.LONG_SIDE,
                   help=f"test scale: resize the long side to this (0: original size; default {defaults.LONG_SIDE})")
    w.add_argument("--conf", type=probability, default=0.01, help="score threshold (default 0.01: AP needs the low scores)")
    w.add_argument("--nms", type=probability, default=defaults.NMS, help=f"NMS IoU threshold (default {defaults.NMS})")
    w.add_argument("--top-k", type=positive_int, default=defaults.TOP_K,
                   help=f"candidates entering NMS (default {defaults.TOP_K})")
    w.add_argument("--keep-top-k", type=positive_int, default=defaults.KEEP_TOP_K,
                   help=f"detections kept per image after NMS (default {defaults.KEEP_TOP_K})")
    w.add_argument("--batch-size", type=positive_int, default=1,
                   help="images per forward pass, batching same-size images only (default 1: fastest on CPU)")
    w.add_argument("--threads", type=int, default=None, help="backend CPU threads (default: the backend's choice)")
    w.add_argument("--save-predictions", type=Path, metavar="DIR", help="also write the predictions folder here")
    w.add_argument("--plot", type=Path, metavar="PNG", help="write the three precision-recall curves here")
    w.add_argument("--allow-missing", action="store_true",
                   help="a listed image without prediction file (or image) counts as no detections")
    w.add_argument("--json", action="store_true", help='print {"easy", "medium", "hard", "images"}')
    w.set_defaults(func=run)

    m = sub.add_parser("landmarks", help="landmark NME and detection rate on an MTFL folder",
                       description="Match each labelled face to the best detection (score >= 0.5, IoU >= 0.5) "
                                   "and report the NME (mean point error / inter-ocular distance) over the "
                                   "matched faces together with the detection rate.")
    add_model_args(m)
    m.add_argument("--data", required=True, type=Path, metavar="DIR", help="MTFL folder: labels.txt and images/")
    m.add_argument("--long-side", type=non_negative_int, default=0,
                   help="resize the long side to this (default 0: original size)")
    m.add_argument("--batch-size", type=positive_int, default=1,
                   help="images per forward pass, batching same-size images only (default 1: fastest on CPU)")
    m.add_argument("--threads", type=int, default=None, help="backend CPU threads (default: the backend's choice)")
    m.add_argument("--json", action="store_true", help='print {"nme", "detected", "faces"}')
    m.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.long_side < 0:
        raise BlazefaceError(f"--long-side must be >= 0 (0: original size), not {args.long_side}")
    if args.batch_size < 1:
        raise BlazefaceError(f"--batch-size must be >= 1, not {args.batch_size}")
    if args.threads is not None and args.threads < 1:
        raise BlazefaceError(f"--threads must be >= 1, not {args.threads}")
    return run_widerface(args) if args.target == "widerface" else run_landmarks(args)


def _note(args, text: str) -> None:
    """Notes go with the table on stdout; with --json, stdout holds the JSON only."""
    print(text, file=sys.stderr if args.json else sys.stdout)


def _check_thresholds(args) -> None:
    if not 0 <= args.conf < 1:
        raise BlazefaceError(f"--conf must be in [0, 1), not {args.conf}")
    if not 0 < args.nms <= 1:
        raise BlazefaceError(f"--nms must be in (0, 1], not {args.nms}")
    if args.top_k < 1 or args.keep_top_k < 1:
        raise BlazefaceError("--top-k and --keep-top-k must be >= 1")


def run_widerface(args: argparse.Namespace) -> int:
    from ..evaluation import widerface as wf

    if args.predictions is not None:
        if args.model is not None or args.weights is not None:
            raise BlazefaceError("--model/--weights run a detector: give --images, not --predictions")
        if args.save_predictions is not None:
            raise BlazefaceError("--save-predictions needs --images (--predictions is already a predictions folder)")
        if not args.predictions.is_dir():
            raise BlazefaceError(f"{args.predictions}: no such predictions folder")
    else:
        if not args.images.is_dir():
            raise BlazefaceError(f"{args.images}: no such images folder")
        _check_thresholds(args)

    gt = wf.load_ground_truth(args.gt)
    source = args.predictions if args.predictions is not None else args.images
    if args.list is not None:
        keys = wf.read_image_list(args.list, gt)
        scope = f"{len(keys):,} images listed in {args.list}"
    else:
        finder = wf.find_prediction_keys if args.predictions is not None else wf.find_image_keys
        keys = finder(source, gt)
        if not keys:
            layout = "<event>/<name>.txt" if args.predictions is not None else "<event>/<name>.jpg"
            raise BlazefaceError(f"{source}: holds no ground-truth image as {layout}")
        scope = f"{len(keys):,} of the {len(gt):,} ground-truth images (all found under {source})"

    start = time.perf_counter()
    if args.predictions is not None:
        predictions, missing = wf.read_predictions(args.predictions, keys, allow_missing=args.allow_missing)
        what = "prediction file"
    else:
        missing = [k for k in keys if not wf.image_path(args.images, k).is_file()]
        if missing and not args.allow_missing:
            raise BlazefaceError(f"{wf.image_path(args.images, missing[0])}: no such image"
                                 + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                                 + " (--allow-missing counts missing images as no detections)")
        from ..inference import FaceDetector

        detector = FaceDetector(args.model, weights=args.weights, backend=args.backend,
                                threads=args.threads, long_side=args.long_side, conf=args.conf, nms=args.nms,
                                top_k=args.top_k, keep_top_k=args.keep_top_k)
        absent = set(missing)
        found = wf.predict_folder(detector, args.images, [k for k in keys if k not in absent],
                                  batch_size=args.batch_size, progress=True)
        predictions = {k: found[k] if k in found else np.zeros((0, 5)) for k in keys}
        if args.save_predictions is not None:
            wf.write_predictions(args.save_predictions, found)  # missing images get no file
        what = "image"
    read_s = time.perf_counter() - start

    start = time.perf_counter()
    result = wf.evaluate_predictions(predictions, gt)
    eval_s = time.perf_counter() - start

    if args.plot is not None:
        from ..evaluation.plots import plot_pr_curves

        plot_pr_curves(result, args.plot)

    if args.json:
        if missing:
            _note(args, f"note: {len(missing)} of {len(keys)} images had no {what} and count as no detections "
                        f"(--allow-missing)")
        print(json.dumps(result.to_dict()))
        return 0

    print(f"WIDER FACE val: {scope}")
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        print(f"note: {len(missing)} of them had no {what} and count as NO DETECTIONS (--allow-missing): {shown}")
    if args.predictions is None:
        print(f"model {detector.model_name}" + (f" ({args.weights})" if args.weights else "")
              + f", long side {args.long_side or 'original'}, conf {args.conf}, nms {args.nms}, "
                f"top-k {args.top_k}, keep-top-k {args.keep_top_k}")
    rows = [("setting", "AP", "faces")]
    for setting in wf.SETTINGS:
        ap = result.ap(setting)
        rows.append((setting, "n/a" if ap != ap else f"{ap:.4f}", f"{result.curves[setting].faces:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print(f"  {r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}")
    doing = "read predictions" if args.predictions is not None else "detection"
    print(f"{result.predictions:,} predictions; {doing} {read_s:.1f} s, protocol {eval_s:.2f} s")
    if args.save_predictions is not None:
        print(f"predictions written to {args.save_predictions}")
    if args.plot is not None:
        print(f"PR curves written to {args.plot}")
    return 0


def run_landmarks(args: argparse.Namespace) -> int:
    from ..evaluation.landmarks import MIN_SCORE, evaluate_landmarks
    from ..inference import FaceDetector

    # Keep every detection the matching rule can use (score >= 0.5); the rule itself filters exactly.
    detector = FaceDetector(args.model, weights=args.weights, backend=args.backend, threads=args.threads,
                            long_side=args.long_side, conf=MIN_SCORE - 1e-3)
    result = evaluate_landmarks(detector, args.data, batch_size=args.batch_size, progress=True)
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    nme = "n/a (no face detected)" if result.matched == 0 else f"{result.nme:.4f}"
    vote = "off" if detector.landmark_vote is None else f"IoU > {detector.landmark_vote:g}"
    print(f"landmarks on {args.data}: NME {nme} (inter-ocular), detected {result.matched:,} of "
          f"{result.faces:,} faces ({100 * result.detected:.1f} %); landmark vote {vote}")
    return 0
