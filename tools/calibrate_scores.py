#!/usr/bin/env python
"""Fit one face-logit offset per prior size on training photos, so that scores rank alike across sizes.

    python tools/calibrate_scores.py RUN/weights.pth --model slim --write RUN/calibrated.pth   # ~20 min, one thread
    python tools/ship_weights.py RUN/calibrated.pth --model slim

WIDER AP pools every detection of every photo into one ranking, so a model whose large priors give false
faces higher scores than its small priors give true ones loses AP that no single threshold recovers. The
training loss never sees that ranking (hard negatives are mined per photo and per prior), and the shipped
weights' biases showed it: on the dev split, lowering the stride-8 priors' logits by 0.5 raised slim's easy AP
by 0.012 and cost hard 0.009; raising them did the reverse. This tool adds ``offsets[level][size]`` to the
face logits (:meth:`~blazeface.models.detector.FaceDetectorNet.shift_face_logits`, a change of the class
heads' biases: the same network, file and speed on every backend) chosen by coordinate search on a sample of
the WIDER *training* photos, evaluated with the protocol's own code. The search maximises ``--gain-weights``
(easy, medium, hard) times the AP gains and takes no step that lowers any of the three on those photos.

The dev split is never used to fit; it is evaluated before and after, as the check. The model has seen the
fitting photos, so it is surer of their tiny faces than of a new photo's: an objective that lets hard AP fall
there lets it fall further on new photos (slim with equal weights and no hold: training photos hard -0.004, dev
-0.013), which is why hard counts twice and nothing may fall.

The training photos are WIDER val originals stored at long side 640; the official ground truth is in the
originals' pixels (1024 wide), so predictions are scaled by 1024 / width, checked on each photo against its
labels (a photo whose labels do not line up is left out, with a line saying so). Needs ../shared/data.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from blazeface.cli.validate import int_at_least
from blazeface.data.labels import image_size, read_retinaface
from blazeface.evaluation import widerface as wf
from blazeface.inference import FaceDetector, Letterbox, to_faces
from blazeface.models import create_model
from blazeface.postprocess import PostprocessConfig, postprocess
from blazeface.priors import prior_boxes, prior_size_groups
from blazeface.training.checkpointing import save_atomic

REPO = Path(__file__).resolve().parents[1]
WIDER = REPO.parent / "shared" / "data" / "widerface"
ORIGINAL_WIDTH = 1024.0  # every WIDER FACE photo
LONG_SIDE = 640  # the protocol's evaluation size (docs/MODELS.md)
# The protocol's post-processing (evaluate widerface --conf 0.01 --nms 0.4).
PROTOCOL = PostprocessConfig(conf=0.01, nms=0.4)
# Priors kept per photo: any whose score could pass 0.01 after an offset up to +4.5.
KEEP_ABOVE = 1e-4
STEPS = ((-0.6, -0.3, 0.3, 0.6), (-0.15, 0.15))  # the coordinate search's rounds


@dataclass
class PhotoOutputs:
    """One photo's raw outputs, reduced to the priors that can matter."""

    key: str
    loc: np.ndarray
    logit: np.ndarray  # face logit of each kept prior
    group: np.ndarray
    priors: np.ndarray
    letterbox: Letterbox
    input_size: tuple[int, int]
    scale: float  # detections -> ground-truth pixels


def training_photos(gt: wf.GroundTruth, count: int | None, seed: int) -> list[tuple[str, Path, float]]:
    """The training split, or a seeded sample of ``count`` photos: (key, path, scale to the originals' pixels)."""
    samples = read_retinaface(WIDER / "train" / "label.txt")
    count = len(samples) if count is None else min(count, len(samples))
    picks = np.random.default_rng(seed).choice(len(samples), count, replace=False)
    photos = []
    for i in sorted(picks):
        sample = samples[i]
        key = sample.image_path.relative_to(WIDER / "train" / "images").with_suffix("").as_posix()
        width, _ = image_size(sample.image_path)
        scale = ORIGINAL_WIDTH / width
        boxes = np.column_stack([sample.boxes[:, :2], sample.boxes[:, 2:] - sample.boxes[:, :2]]) * scale
        if not _lines_up(boxes, gt.boxes[gt.index[key]]):
            print(f"{sample.image_path}: its labels do not line up with the ground truth at "
                  f"{ORIGINAL_WIDTH:g} / {width}; left out", file=sys.stderr)
            continue
        photos.append((key, sample.image_path, scale))
    return photos


def _lines_up(boxes: np.ndarray, truth: np.ndarray, tolerance: float = 2.0) -> bool:
    """Every labelled box (x y w h) is within ``tolerance`` pixels of a ground-truth box."""
    if not len(boxes):
        return True
    if not len(truth):
        return False
    gap = np.abs(boxes[:, None, :] - truth[None, :, :]).max(-1).min(1)
    return bool(gap.max() <= tolerance)


def raw_outputs(detector: FaceDetector, photos) -> list[PhotoOutputs]:
    cfg = detector.config
    out = []
    for key, path, scale in photos:
        batch, (box,) = detector.input_batch([cv2.imread(str(path))], LONG_SIDE)
        height, width = batch.shape[2:]
        loc, conf, _ = detector.runner(batch)
        score = conf[0][:, 1]
        keep = np.flatnonzero(score > KEEP_ABOVE)
        p = np.clip(score[keep].astype(np.float64), 1e-12, 1 - 1e-12)
        out.append(PhotoOutputs(key, loc[0][keep], np.log(p) - np.log1p(-p),
                                prior_size_groups(cfg.priors, height, width)[keep],
                                prior_boxes(cfg.priors, height, width)[keep], box, (width, height), scale))
    return out


def average_precision(photos: list[PhotoOutputs], offsets: np.ndarray, gt: wf.GroundTruth,
                      variances: tuple[float, float]) -> np.ndarray:
    """(easy, medium, hard) AP of the photos with ``offsets`` (one per size group) added to the logits."""
    predictions = {}
    for photo in photos:
        scores = (1 / (1 + np.exp(-(photo.logit + offsets[photo.group])))).astype(np.float32)
        dets = postprocess(photo.loc, scores, np.zeros((len(scores), 10), np.float32), photo.priors,
                           photo.input_size, PROTOCOL, variances)
        faces = to_faces(dets, photo.letterbox)
        boxes = faces.boxes.astype(np.float64) * photo.scale
        predictions[photo.key] = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2], faces.scores])
    result = wf.evaluate_predictions(predictions, gt)
    return np.array([result.easy, result.medium, result.hard])


def fit(photos, gt, variances, gain_weights, groups, log=print) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (offsets, AP before, AP after) on ``photos``."""
    offsets = np.zeros(len(groups))
    base = average_precision(photos, offsets, gt, variances)
    log(f"fitting photos: AP {base.round(4).tolist()}")

    def gain(ap):  # no step may lower any of the three
        d = ap - base
        return float(gain_weights @ d) if d.min() >= 0 else -np.inf

    best, best_ap = 0.0, base
    for steps in STEPS:
        for g in range(len(groups)):
            for step in steps:
                trial = offsets.copy()
                trial[g] += step
                ap = average_precision(photos, trial, gt, variances)
                if gain(ap) > best + 1e-4:
                    best, best_ap, offsets = gain(ap), ap, trial
                    log(f"  size {groups[g]}: offset {offsets[g]:+.2f} -> AP {ap.round(4).tolist()}")
    return offsets, base, best_ap


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", type=Path, help="a run's weights.pth or a shipped weights file")
    p.add_argument("--model", required=True)
    p.add_argument("--photos", type=int_at_least(20), default=None,
                   help="fit on a seeded sample of this many training photos (default: all of them; a sample of 800 "
                        "takes a third of the time and can miss the best offsets)")
    p.add_argument("--seed", type=int, default=0, help="the sample's seed, with --photos (default 0)")
    p.add_argument("--gain-weights", type=float, nargs=3, default=(1.0, 1.0, 2.0), metavar=("EASY", "MEDIUM", "HARD"),
                   help="what the search maximises: these times the AP gains (default 1 1 2)")
    p.add_argument("--write", type=Path, help="write the calibrated weights here (a state dict)")
    args = p.parse_args()
    if args.write is not None and args.write.exists() and args.write.resolve() == args.weights.resolve():
        raise SystemExit(f"{args.write}: would replace the input weights; choose another file")

    detector = FaceDetector(args.model, args.weights, backend="torch", threads=1)
    cfg = detector.config
    groups = [s for level in cfg.priors.min_sizes for s in level]
    gt = wf.load_ground_truth(WIDER / "ground_truth")
    train = raw_outputs(detector, training_photos(gt, args.photos, args.seed))
    dev_keys = wf.read_image_list(WIDER / "val" / "wider_val.txt", gt)
    dev = raw_outputs(detector, [(k, wf.image_path(WIDER / "val" / "images", k), 1.0) for k in dev_keys])
    offsets, *train_ap = fit(train, gt, cfg.priors.variances, np.asarray(args.gain_weights), groups)
    dev_ap = [average_precision(dev, o, gt, cfg.priors.variances) for o in (np.zeros(len(groups)), offsets)]
    for name, (before, after) in ((f"training photos ({len(train)})", train_ap), (f"dev split ({len(dev)})", dev_ap)):
        print(f"{name}: easy / medium / hard {' / '.join(f'{v:.3f}' for v in before)} -> "
              f"{' / '.join(f'{v:.3f}' for v in after)}")
    per_level, first = [], 0
    for level in cfg.priors.min_sizes:
        per_level.append([round(float(v), 2) for v in offsets[first:first + len(level)]])
        first += len(level)
    print(f"offsets by level and size: {per_level}")

    if args.write is not None:
        model = create_model(args.model, weights=args.weights)
        model.shift_face_logits(per_level)
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_atomic(state, args.write)
        print(f"{args.weights} + offsets -> {args.write}")
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
