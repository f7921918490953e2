#!/usr/bin/env python
"""Initial weights for a smaller-kernel model from a trained larger-kernel one (blaze -> blazelite), by the
layer-by-layer least-squares fit of blazeface.training.shrink, over calibration photos.

    python tools/shrink_kernels.py --teacher blaze --student blazelite \\
        --images ../shared/data/widerface/train/images --count 48 --out /tmp/blazelite_init.pth

then train from it under the teacher (dense: the two share priors):

    blazeface train --model blazelite --init-weights /tmp/blazelite_init.pth --teacher blaze:WEIGHTS ...

Photos: --count drawn at random (--seed) from the folder, resized so the long side cycles through
--long-sides (several scales, as training sees), padded to the model's size multiple. --held-out N draws N
more that no fit sees: a refit that does not lower its layer's error on them is undone (the layer keeps the
teacher's weights); slim's stride-64 heads, for one, fit 48 photos exactly and new ones badly.

A narrower student (slimlite: conv2 with 16 of slim's 32 channels) keeps the teacher's channels that the next
1x1 convolution rebuilds its output from best, and that convolution is refitted:

    python tools/shrink_kernels.py --teacher slim --student slimlite --count 48 --held-out 12 \
        --images ../shared/data/widerface/train/images --out /tmp/slimlite_init.pth

blazelite narrows blaze's stride-2 residual stream (stem, conv2) to 16 channels as well as shrinking its
kernels and dropping conv3, all in one shrink from blaze (the default arguments; add --held-out 12).
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

from blazeface.training.checkpointing import save_atomic
from blazeface.checkpoint import with_metadata
from blazeface.io import IMAGE_SUFFIXES, find_files, read_image
from blazeface.letterbox import letterbox_size, preprocess
from blazeface.models import create_model
from blazeface.models.registry import SHIPPED
from blazeface.training.shrink import shrink_kernels


def calibration_images(folder: Path, count: int, long_sides: list[int], multiple: int, mean_bgr, seed: int):
    paths = find_files(folder, IMAGE_SUFFIXES)
    if not paths:
        raise SystemExit(f"shrink_kernels: {folder}: no images")
    paths = random.Random(seed).sample(paths, min(count, len(paths)))
    for i, path in enumerate(paths):
        image = read_image(path)
        box = letterbox_size(image.shape[1], image.shape[0], long_sides[i % len(long_sides)], multiple)
        yield torch.from_numpy(preprocess(image, box, mean_bgr))[None]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="blaze", help="MODEL or MODEL:WEIGHTS (default weights: shipped)")
    parser.add_argument("--student", default="blazelite")
    parser.add_argument("--images", type=Path, required=True, help="folder of calibration photos (recursive)")
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--held-out", type=int, default=0, help="photos that check each fit (default: none)")
    parser.add_argument("--long-sides", type=int, nargs="+", default=[640, 512, 384, 320])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    name, _, weights = args.teacher.partition(":")
    teacher = create_model(name, weights=weights or SHIPPED)
    student = create_model(args.student, weights=None)
    if student.config.priors != teacher.config.priors:
        print(f"shrink_kernels: note: {args.student} and {name} have different priors; the heads are fitted "
              "anyway, but a dense teacher will not apply", file=sys.stderr)
    cfg = student.config
    images = list(calibration_images(args.images, args.count + args.held_out, args.long_sides, cfg.size_multiple,
                                     cfg.mean_bgr, args.seed))
    images, held_out = images[:args.count], images[args.count:]
    start = time.perf_counter()

    def report(fit):
        held = ("" if fit.held_before is None else
                f", held-out {fit.held_before:.4f} -> {fit.held_after:.4f}{'' if fit.kept else ' (undone)'}")
        print(f"{fit.name:24s} relative error {fit.error_before:.4f} -> {fit.error_after:.4f}{held}"
              f"  ({time.perf_counter() - start:.0f} s)", flush=True)

    shrink_kernels(teacher, student, images, held_out=held_out, progress=report)
    state = {k: v.detach().contiguous() for k, v in student.state_dict().items()}
    save_atomic(with_metadata(state, student.config), args.out)  # the file names its model
    print(f"shrink_kernels: wrote {args.out} ({args.student}, from {args.teacher}, {len(images)} photos"
          f"{f', {len(held_out)} held out' if held_out else ''})")
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
