"""How the labels' positive priors and their loss weight fall on faces of each size, over real augmented crops.

    python benchmarks/positives_by_size.py --model rfb                          # the originals' matching rule
    python benchmarks/positives_by_size.py --model rfb --face-weight-floor 4    # tiny faces' priors weighted up
    python benchmarks/positives_by_size.py --model rfb --min-positives 3        # S3FD's scale compensation

Builds the labelled training data as ``blazeface train`` does (the small-faces preset at the model's training
size, the same data flags and seed; no teacher) and matches the first ``--crops`` crops of epoch 0. For each band
of face side (pixels at training scale) it prints the share of the faces, the positive priors per face, the
share of faces with none, and the band's share of the positive priors' weight (``pos_weight``, what the box and
class terms sum). Each prior's face is the matcher's own assignment (read back by matching once more with each
face's weight set to its index). Prints a markdown table.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
LABELLED_MIX = ("widerface/train:4000", "facemask:400")  # the exhaustively labelled part of docs/MODELS.md's mix
BANDS = (0, 4, 8, 12, 16, 24, 32, float("inf"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="rfb")
    p.add_argument("--data", action="append", default=None, metavar="DIR[:WEIGHT]",
                   help="default: WIDER and the crowd photos, as weighted in docs/MODELS.md's runs")
    p.add_argument("--crops", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--face-weight-floor", type=float, default=0.0)
    p.add_argument("--min-positives", type=int, default=0)
    args = p.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found", file=sys.stderr)
        return 0
    from blazeface.data.dataset import build_training_data
    from blazeface.data.transforms import build_preset
    from blazeface.matching import PriorMatcher
    from blazeface.models import get_config

    cfg = get_config(args.model)
    preset = build_preset("small-faces", cfg.train.input_size, cfg.mean_bgr)
    crops = []

    def keep_crop(image, target, rng):  # the preset, recording each crop's faces as the matcher receives them
        tensor, target = preset(image, target, rng)
        crops.append(target)
        return tensor, target

    data = args.data or [f"{DATA}/{source}" for source in LABELLED_MIX]
    dataset, mixer = build_training_data(data, cfg, preset=keep_crop, seed=args.seed,
                                         face_weight_floor=args.face_weight_floor, min_positives=args.min_positives)
    owners = PriorMatcher(dataset.priors, min_positives=args.min_positives)  # no floor: pos_weight = face index + 1
    indices, seeds = mixer.epoch_items(0)
    faces = np.zeros(len(BANDS) - 1)
    positives = np.zeros(len(BANDS) - 1)
    without = np.zeros(len(BANDS) - 1)
    weight = np.zeros(len(BANDS) - 1)
    for index, seed in zip(indices[:args.crops].tolist(), seeds[:args.crops].tolist()):
        _, targets = dataset[(index, seed)]
        target = crops[-1]  # the crop this item matched (an unreadable photo is replaced by the next one)
        crops.clear()
        boxes = torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4)
        if len(boxes) == 0:
            continue
        owner = owners(boxes, target["landmarks"], target["has_landmarks"], face_weight=torch.arange(1, len(boxes) + 1))
        positive = targets["labels"] == 1
        face = owner["pos_weight"][positive].long() - 1
        side = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sqrt().numpy() * dataset.size
        band = np.digitize(side, BANDS) - 1
        count = np.bincount(face.numpy(), minlength=len(boxes))
        np.add.at(faces, band, 1)
        np.add.at(positives, band, count)
        np.add.at(without, band, count == 0)
        np.add.at(weight, band[face.numpy()], targets["pos_weight"][positive].numpy())
    print(f"{args.model}, {args.crops} crops, face weight floor {args.face_weight_floor:g}, "
          f"min positives {args.min_positives}\n")
    print("| face side at training scale (px) | share of faces | positive priors per face | share with none "
          "| share of the positive weight |")
    print("|---|---:|---:|---:|---:|")
    for k, (low, high) in enumerate(zip(BANDS[:-1], BANDS[1:])):
        name = f"{low}-{high}" if high != float("inf") else f"{low} and up"
        n = max(faces[k], 1)
        print(f"| {name} | {faces[k] / faces.sum():.0%} | {positives[k] / n:.1f} | {without[k] / n:.0%} "
              f"| {weight[k] / weight.sum():.1%} |")
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
