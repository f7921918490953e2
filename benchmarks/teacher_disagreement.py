"""Where the labels and a per-prior teacher disagree, counted over real training batches.

    python benchmarks/teacher_disagreement.py --model slim [--weights W] [--batches 15] [--threshold 0.5]

Builds the training run of docs/MODELS.md's cached-YuNet recipe (the WIDER-heavier mix, YuNet-n at 1x and 2x
carried onto the student's priors, seed 0; its teacher candidates are computed into --out, ~5 min, or read back
from there) and, for the first ``--batches`` batches, runs the student (the shipped weights by default) as the
loss sees it: which background priors the hard-negative mining picks, and where the teacher calls them faces
(>= ``--threshold``); of those, the ones on a labelled face's neighbourhood (the teacher's box at IoU >= 0.3
with a label) and the ones on a face nobody labelled; and the labelled-face priors the teacher gives less than
the threshold (or its floor: no candidate reaches them). Prints one JSON object. Needs ../shared/data.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
WIDER_HEAVY_MIX = ("facemask:400", "mtfl/train:600", "widerface/train:4000")  # docs/MODELS.md's runs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="slim")
    p.add_argument("--weights", type=Path, default=None, help="the student (default: the shipped weights)")
    p.add_argument("--batches", type=int, default=15)
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--out", type=Path, default=Path("/tmp/teacher_disagreement"),
                   help="where the run's teacher candidates are cached")
    args = p.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found", file=sys.stderr)
        return 0
    import torch

    from blazeface.box_coding import decode_boxes
    from blazeface.geometry import box_iou
    from blazeface.models import shipped_weights
    from blazeface.priors import prior_boxes
    from blazeface.training.teacher_cache import CARRIED_KEYS
    from blazeface.training.trainer import Trainer, TrainOptions

    # Paths relative to the working directory, as the runs' commands give them (the cached candidates are keyed
    # by the photos' paths as written), so a run folder's teacher_candidates.npz copied into --out is read back.
    data = [os.path.relpath(DATA / d) for d in WIDER_HEAVY_MIX]
    opt = TrainOptions(model=args.model, data=data, out=args.out, epochs=1,
                       epoch_size=3200, batch_size=32, workers=0, threads=1, bf16=False, eval_every=0,
                       progress=False, teachers=[f"yunet:{DATA / 'teachers' / 'yunet_n_dynamic.onnx'}"],
                       map_teacher_priors=True, yunet_scales=[1.0, 2.0], cache_teacher=True,
                       init_weights=args.weights or shipped_weights(args.model))
    trainer = Trainer(opt)
    model = trainer.model.eval()
    count = dict(positive_priors=0, mined_negatives=0, mined_where_teacher_sees_a_face=0,
                 of_which_beside_a_label=0, of_which_unlabelled=0, labelled_priors_teacher_below=0,
                 labelled_priors_at_teacher_floor=0)
    for images, targets in trainer.loader(0, args.batches):
        carried = [targets.pop(key) for key in CARRIED_KEYS]
        with torch.no_grad():
            _, probabilities, _ = model(images.contiguous(memory_format=trainer.memory_format))
        conf = torch.log(probabilities.clamp_min(1e-12))  # an eval-mode model gives the softmax; the loss takes logits
        labels = targets["labels"]
        positive = labels == 1
        mined = trainer.loss_fn.hard_negatives(trainer.loss_fn.per_prior_cross_entropy(conf, labels), labels)
        face = carried[1][..., 1].exp()
        count["positive_priors"] += int(positive.sum())
        count["mined_negatives"] += int(mined.sum())
        count["labelled_priors_teacher_below"] += int((positive & (face < args.threshold)).sum())
        count["labelled_priors_at_teacher_floor"] += int((positive & (face < 1e-3)).sum())
        priors = torch.tensor(prior_boxes(trainer.model_cfg.priors, images.shape[-2], images.shape[-1]))
        for b in range(len(labels)):
            conflict = mined[b] & (face[b] >= args.threshold)
            count["mined_where_teacher_sees_a_face"] += int(conflict.sum())
            if not conflict.any():
                continue
            labelled = decode_boxes(targets["loc_t"][b][positive[b]], priors[positive[b]])
            teacher = decode_boxes(carried[0][b][conflict], priors[conflict])
            near = (box_iou(teacher, labelled).max(1).values >= 0.3) if len(labelled) else torch.zeros(len(teacher), dtype=torch.bool)
            count["of_which_beside_a_label"] += int(near.sum())
            count["of_which_unlabelled"] += int((~near).sum())
    count["share_of_mined_where_teacher_sees_a_face"] = round(
        count["mined_where_teacher_sees_a_face"] / max(1, count["mined_negatives"]), 4)
    count["share_of_labelled_priors_teacher_below"] = round(
        count["labelled_priors_teacher_below"] / max(1, count["positive_priors"]), 4)
    print(json.dumps({"model": args.model, "batches": args.batches, "threshold": args.threshold, **count}, indent=1))
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
