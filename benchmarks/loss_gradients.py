"""The size of each loss part's pull on the student: the L2 norm of each part's gradient over the student's
parameters, averaged over real training batches, through the real Trainer (its data, augmentation, teachers and
losses). A part's weight sets its value; what it does to training is its gradient, so this is how a new term's
weight is put on the scale of the others before an ablation spends hours on it.

    python benchmarks/loss_gradients.py --model slim --init-weights src/blazeface/weights/slim.pth \\
        --teacher yunet:../shared/data/teachers/yunet_n_dynamic.onnx --map-teacher-priors --yunet-scales 1 2 \\
        --feature-teacher slim:../shared/data/reference_weights/slim_Final.pth --batches 4

Prints each part's value and gradient norm (weights as given; ``--kd-feature-weight`` etc. default to the
model's TrainConfig). The batches are the first of a run with this seed; nothing is trained.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="slim")
    p.add_argument("--init-weights", type=Path)
    p.add_argument("--data", action="append", default=None,
                   help="as blazeface train --data (default: the WIDER train, facemask and MTFL mix of the runs)")
    p.add_argument("--teacher", action="append", default=[], metavar="SPEC")
    p.add_argument("--map-teacher-priors", action="store_true")
    p.add_argument("--yunet-scales", type=float, nargs="+", default=[1.0])
    p.add_argument("--feature-teacher", metavar="SPEC")
    p.add_argument("--kd-feature-weight", type=float)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found", file=sys.stderr)
        return 0

    import torch

    from blazeface.training.trainer import Trainer, TrainOptions, unwrap

    data = args.data or [f"{DATA}/facemask:400", f"{DATA}/mtfl/train:600", f"{DATA}/widerface/train:4000"]
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(TrainOptions(model=args.model, data=data, out=Path(out), epoch_size=3200,
                                       batch_size=args.batch_size, workers=0, threads=args.threads, bf16=False,
                                       teachers=args.teacher, map_teacher_priors=args.map_teacher_priors,
                                       yunet_scales=args.yunet_scales, feature_teacher=args.feature_teacher,
                                       kd_feature_weight=args.kd_feature_weight, init_weights=args.init_weights,
                                       progress=False))
        trainer.set_train_mode()
        params = list(unwrap(trainer.model).parameters())
        values: dict[str, list[float]] = {}
        norms: dict[str, list[float]] = {}
        for images, targets in trainer.batches(0, args.batches):
            parts = trainer.loss_parts(images, targets)
            for name, value in parts.items():
                grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
                norm = torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None))
                values.setdefault(name, []).append(value.item())
                norms.setdefault(name, []).append(float(norm))
    print("| part | value | gradient norm |")
    print("|---|---:|---:|")
    for name in values:
        print(f"| {name} | {sum(values[name]) / len(values[name]):.3f} | {sum(norms[name]) / len(norms[name]):.3f} |")
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
