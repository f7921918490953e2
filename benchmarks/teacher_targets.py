"""What detection teachers add to the training targets, counted over real augmented crops.

    python benchmarks/teacher_targets.py --model blaze --teacher yunet:../shared/data/teachers/yunet_n_dynamic.onnx

Builds the training data as ``blazeface train --teacher`` does (same data flags, seed and crops) and runs the
first ``--crops`` items of epoch 0: labelled faces in the crops, faces the teachers add (no label covers them,
score >= the positive score), ignore regions (doubtful or partly covered teacher faces), labelled faces whose
landmarks came from a teacher, the teachers' share of the positive priors' loss weight, and the teachers'
time per crop. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
WIDER_HEAVY_MIX = ("widerface/train:4000", "facemask:400", "mtfl/train:600")  # docs/MODELS.md's runs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="blaze")
    p.add_argument("--teacher", action="append", required=True, metavar="SPEC")
    p.add_argument("--data", action="append", default=None, metavar="DIR[:WEIGHT]",
                   help="default: the WIDER-heavier mix of docs/MODELS.md")
    p.add_argument("--crops", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found", file=sys.stderr)
        return 0
    from blazeface.data.dataset import build_training_data
    from blazeface.data.transforms import build_preset
    from blazeface.models import get_config
    from blazeface.training.teachers import TeacherLabelling, TeacherTargets, load_teacher

    cfg = get_config(args.model)
    train = cfg.train
    labelling = TeacherLabelling(build_preset("small-faces", train.input_size, cfg.mean_bgr),
                                 [load_teacher(spec) for spec in args.teacher],
                                 TeacherTargets.from_train_config(train))
    data = args.data or [f"{DATA}/{source}" for source in WIDER_HEAVY_MIX]
    dataset, mixer = build_training_data(data, cfg, preset=labelling, seed=args.seed)
    indices, seeds = mixer.epoch_items(0)
    weight_all = weight_teacher = 0.0
    priors_all = priors_teacher = 0
    for index, seed in zip(indices[:args.crops].tolist(), seeds[:args.crops].tolist()):
        _, targets = dataset[(index, seed)]
        weight = targets["pos_weight"][targets["labels"] == 1]
        weight_all += float(weight.sum())
        weight_teacher += float(weight[weight < 1].sum())
        priors_all += int(weight.numel())
        priors_teacher += int((weight < 1).sum())
    stats = dict(labelling.stats)
    crops = stats["crops"]
    print(json.dumps({
        "teachers": args.teacher, "crops": crops,
        "labelled_faces_per_crop": stats["labelled"] / crops,
        "teacher_faces_added_per_crop": stats["added"] / crops,
        "ignore_regions_per_crop": stats["ignore_regions"] / crops,
        "landmarks_filled_per_crop": stats["landmarks_filled"] / crops,
        "teacher_share_of_positive_priors": priors_teacher / max(priors_all, 1),
        "teacher_share_of_positive_weight": weight_teacher / max(weight_all, 1e-9),
        "teacher_ms_per_crop": 1000 * stats["teacher_seconds"] / crops,
    }, indent=2))
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
