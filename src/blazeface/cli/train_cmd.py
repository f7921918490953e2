"""``blazeface train``: train a registered model on RetinaFace/MTFL-format folders (resumable)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .validate import non_negative_float, non_negative_int, positive_float, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a detector (resumable; torchrun for several processes)",
                       description="Train a model. Defaults come from the model's config; every flag below "
                                   "overrides one. Checkpoints go to OUT/last.pth (atomically, every few minutes, "
                                   "at every epoch end and on Ctrl-C/SIGTERM); OUT/weights.pth holds the EMA "
                                   "weights to ship. Several processes: torchrun --nproc_per_node=N -m blazeface "
                                   "train ...")
    p.add_argument("--model", default="blaze", help="blaze | slim | rfb | mnet")
    p.add_argument("--data", action="append", required=True, metavar="DIR[:WEIGHT]",
                   help="a folder with images/ and label.txt (RetinaFace) or labels.txt (MTFL); repeatable; "
                        "WEIGHT = relative share of each epoch (default: its size)")
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--out", type=Path, default=Path("runs/train"))
    p.add_argument("--resume", type=Path, default=None, metavar="CKPT", help="continue from this checkpoint")
    p.add_argument("--init-weights", type=Path, default=None, help="start from these weights (fine-tuning)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="global batch (split over processes)")
    p.add_argument("--lr", type=positive_float, default=None)
    p.add_argument("--input-size", type=positive_int, default=None, help="square training crop size")
    p.add_argument("--optimizer", choices=["sgd", "rmsprop", "adamw"], default=None)
    p.add_argument("--weight-decay", type=non_negative_float, default=None)
    p.add_argument("--cls-loss", choices=["ohem", "focal"], default=None)
    p.add_argument("--warmup-epochs", type=non_negative_float, default=None)
    p.add_argument("--epoch-size", type=positive_int, default=None,
                   help="images per epoch (default: all sources' sizes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=non_negative_int, default=1, help="data-loading processes")
    p.add_argument("--threads", type=int, default=None, help="torch compute threads per process")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bfloat16 autocast (default: the model's; on for slim/rfb/mnet, off for blaze)")
    p.add_argument("--freeze-bn", action="store_true",
                   help="keep BatchNorm statistics fixed (fine-tuning with small per-process batches on CPUs)")
    p.add_argument("--checkpoint-minutes", type=positive_float, default=5.0)
    p.add_argument("--eval-every", type=non_negative_int, default=5, help="epochs between dev evaluations (0: never)")
    p.add_argument("--val-images", type=Path, default=None, help="WIDER val images folder for dev evaluation")
    p.add_argument("--val-gt", type=Path, default=None, help="WIDER ground_truth folder (.mat files)")
    p.add_argument("--val-list", type=Path, default=None, help="wider_val.txt list of the dev images")
    p.add_argument("--val-long-side", type=non_negative_int, default=320)
    p.add_argument("--max-steps", type=non_negative_int, default=None, help="stop after this step (with a checkpoint)")
    p.add_argument("--log-every", type=positive_int, default=10)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..training.trainer import Trainer, TrainOptions
    from ..training.dev_eval import make_dev_evaluator

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    fields = TrainOptions.__dataclass_fields__
    options = TrainOptions(**{k: v for k, v in vars(args).items() if k in fields})
    evaluate_fn = None
    if args.val_images and args.val_gt and args.eval_every:
        evaluate_fn = make_dev_evaluator(args.model, args.val_images, args.val_gt, args.val_list, args.val_long_side)
    trainer = Trainer(options, evaluate_fn)
    trainer.run()
    return 0
