"""``blazeface train``: train a registered model on RetinaFace/MTFL-format folders (resumable)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..defaults import MODELS
from .validate import float_in, non_negative_float, non_negative_int, positive_float, positive_int, probability


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a detector (resumable; torchrun for several processes)",
                       description="Train a model. Defaults come from the model's config; every flag below "
                                   "overrides one. Checkpoints go to OUT/last.pth (atomically, every few minutes, "
                                   "at every epoch end and on Ctrl-C/SIGTERM); OUT/weights.pth holds the EMA "
                                   "weights to ship. Several processes: torchrun --nproc_per_node=N -m blazeface "
                                   "train ...")
    p.add_argument("--model", default=None, help=f"{' | '.join(MODELS)} (default: blaze, or the --resume run's)")
    p.add_argument("--data", action="append", default=None, metavar="DIR[:WEIGHT]",
                   help="a folder with images/ and label.txt (RetinaFace) or labels.txt (MTFL); repeatable; "
                        "WEIGHT = relative share of each epoch (default: its size); required unless --resume")
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: runs/train)")
    p.add_argument("--resume", type=Path, default=None, metavar="CKPT",
                   help="continue from this checkpoint (OUT/last.pth, or a copy packed by tools/pack_checkpoint.py); "
                        "model, data and options come from it, flags given here override them")
    p.add_argument("--init-weights", type=Path, default=None, help="start from these weights (fine-tuning)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="global batch (split over processes)")
    p.add_argument("--lr", type=positive_float, default=None)
    p.add_argument("--input-size", type=positive_int, default=None, help="square training crop size")
    p.add_argument("--optimizer", choices=["sgd", "rmsprop", "adamw"], default=None)
    p.add_argument("--weight-decay", type=non_negative_float, default=None)
    p.add_argument("--cls-loss", choices=["ohem", "focal"], default=None)
    p.add_argument("--neg-pos-ratio", type=positive_int, default=None, metavar="N",
                   help="--cls-loss ohem: background priors mined per positive (default 7)")
    p.add_argument("--warmup-epochs", type=non_negative_float, default=None)
    p.add_argument("--epoch-size", type=positive_int, default=None, help="images per epoch (default: all sources' sizes)")
    p.add_argument("--seed", type=int, default=None, help="(default: 0)")
    p.add_argument("--workers", type=non_negative_int, default=None, help="data-loading processes (default: 1)")
    p.add_argument("--threads", type=int, default=None, help="torch compute threads per process")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cpu)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false", default=None)
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bfloat16 autocast (default: the model's; on for slim/rfb/mnet, off for blaze)")
    p.add_argument("--teacher", dest="teachers", action="append", default=None, metavar="SPEC",
                   help="distil from this detector (repeatable: an ensemble): MODEL:WEIGHTS for a registered "
                        "model (same priors as --model: per-prior distillation; other priors: its detections, or per "
                        "prior with --map-teacher-priors), "
                        "yunet:PATH.onnx (OpenCV FaceDetectorYN; per prior with --map-teacher-priors) or "
                        "centerface:PATH.onnx (ONNX Runtime)")
    p.add_argument("--map-teacher-priors", action="store_true", default=None,
                   help="MODEL:WEIGHTS teachers of another prior layout (e.g. slim's original for blaze) and YuNet "
                        "teach per prior too: each of their candidate faces goes to the student's priors that its "
                        "matching rule would give it, with the teacher's probability (default: they are detection "
                        "teachers)")
    p.add_argument("--feature-teacher", default=None, metavar="MODEL:WEIGHTS",
                   help="imitate this model's feature maps (those its heads read) at the strides both models have, "
                        "each student map through a learnt 1x1 adapter; beside any --teacher (default: none)")
    p.add_argument("--kd-feature-weight", type=non_negative_float, default=None,
                   help="feature teacher: weight of the imitation term (default 5)")
    p.add_argument("--yunet-scales", type=positive_float, nargs="+", default=None, metavar="S",
                   help="YuNet per prior: run it on the batch at each of these scales and offer every scale's "
                        "faces to the student's priors (default: 1; 1 2 adds the faces under ~10 pixels that "
                        "YuNet finds only enlarged; slim's CPU step then takes 2.1x as long)")
    p.add_argument("--centerface-scales", type=positive_float, nargs="+", default=None, metavar="S",
                   help="CenterFace per prior: run it at each of these scales, as --yunet-scales (default: 1; below "
                        "1 for faces larger than its training crops)")
    p.add_argument("--zoom-out-p", type=probability, default=None,
                   help="augmentation: the chance that a photo is first shrunk onto a larger mean-coloured canvas "
                        "(more small faces; default 0.3)")
    p.add_argument("--max-zoom-out", type=float_in(1.0), default=None,
                   help="augmentation: the largest such canvas, as a factor of the photo (default 2.5)")
    p.add_argument("--crop-scale", type=float_in(0.0, 1.0, open_low=True), nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="augmentation: the square crop's side, drawn uniformly as a fraction of the short side "
                        "(default 0.3 1.0)")
    p.add_argument("--rotate-p", type=probability, default=None,
                   help="augmentation: the chance that a photo is first turned about its centre (tilted, lying "
                        "and upside-down heads; default 0)")
    p.add_argument("--max-rotation", type=float_in(0.0, 180.0), default=None, metavar="DEGREES",
                   help="augmentation: the largest such turn either way (default 30)")
    p.add_argument("--mosaic-p", type=probability, default=None,
                   help="augmentation: the chance that a fully labelled photo is first tiled 2x2 with three others "
                        "(its faces then appear at about half their size, beside other photos'; default 0)")
    p.add_argument("--close-mosaic", type=non_negative_int, default=None, metavar="EPOCHS",
                   help="train the last EPOCHS epochs without mosaics (default 0)")
    p.add_argument("--cache-teacher", action="store_true", default=None,
                   help="YuNet and CenterFace per prior: run them once on every whole training photo (at each of "
                        "their --yunet-scales / --centerface-scales factors of the photo) instead of on every batch; "
                        "their candidate faces follow each crop's geometry, and the step no longer waits for them")
    p.add_argument("--cache-processes", type=positive_int, default=None,
                   help="processes that compute those candidates when the run folder has none yet (default: "
                        "--threads + --workers; one per core on a machine of its own)")
    p.add_argument("--teacher-cache", type=Path, default=None, metavar="DIR",
                   help="a folder runs share for those candidates, kept by teacher, scales and photos: a run of a mix "
                        "whose candidates are there links them into its folder instead of computing them (minutes)")
    p.add_argument("--teacher-runtime", choices=["auto", "torch", "onnx"], default=None,
                   help="where the teachers that teach per prior and the feature teacher run (default: auto, "
                        "ONNX Runtime on a CPU when the onnx extra is installed, a third to a half of PyTorch's "
                        "time there; else PyTorch)")
    p.add_argument("--loc-weight", type=non_negative_float, default=None,
                   help="labels: weight of the box term (default: the model's, 2)")
    p.add_argument("--cls-weight", type=non_negative_float, default=None,
                   help="labels: weight of the face/background term (default: the model's, 1)")
    p.add_argument("--landm-weight", type=non_negative_float, default=None,
                   help="labels: weight of the landmark term (default: the model's, 1; more trades box and class "
                        "accuracy for landmarks)")
    p.add_argument("--min-positives", type=non_negative_int, default=None, metavar="N",
                   help="matching: a face with fewer positive priors than N takes its best further ones down to IoU "
                        "--compensation-iou (S3FD's scale compensation for tiny faces; default 0: off)")
    p.add_argument("--compensation-iou", type=probability, default=None,
                   help="matching: the lowest IoU --min-positives reaches down to (default 0.1)")
    p.add_argument("--face-weight-floor", type=non_negative_float, default=None, metavar="K",
                   help="labels: a face with fewer than K positive priors has them weighted K / count in the box "
                        "and class terms, so tiny faces (one prior) count like larger ones (default 0: off)")
    p.add_argument("--kd-cls-weight", type=non_negative_float, default=None, help="per-prior teacher: class KL weight")
    p.add_argument("--kd-loc-weight", type=non_negative_float, default=None, help="per-prior teacher: box term weight")
    p.add_argument("--kd-landm-weight", type=non_negative_float, default=None,
                   help="per-prior teacher: landmark term weight")
    p.add_argument("--kd-temperature", type=positive_float, default=None, help="per-prior teacher: softmax T")
    p.add_argument("--teacher-min-score", type=probability, default=None,
                   help="detection teachers: faces below this score are not used")
    p.add_argument("--teacher-positive-score", type=probability, default=None,
                   help="detection teachers: an unlabelled face at this score or more becomes a positive "
                        "(below: never a negative)")
    p.add_argument("--teacher-ignore-score", type=probability, default=None,
                   help="per-prior teachers: a background prior the teacher calls a face with at least this "
                        "probability is never mined as a negative (default: off)")
    p.add_argument("--kd-ignore-labelled-below", type=probability, default=None,
                   help="per-prior teachers: a labelled face's prior the teacher gives less than this face "
                        "probability is left out of the class distillation (default: off)")
    p.add_argument("--kd-ignore-background-above", type=probability, default=None,
                   help="per-prior teachers: a prior the labels call background that the teacher calls a face "
                        "with at least this probability is left out of the class distillation, so the labels "
                        "alone teach it (not with --teacher-ignore-score; default: off)")
    p.add_argument("--teacher-landmark-weight", type=non_negative_float, default=None,
                   help="detection teachers: weight of teacher landmarks (times the teacher's score)")
    p.add_argument("--cache-images", action="store_true", default=None,
                   help="keep decoded photos in memory in each data worker (about 3.5 GB each for the shared "
                        "data; for GPU runs, where decoding bounds the step)")
    p.add_argument("--freeze-bn", action="store_true", default=None,
                   help="keep BatchNorm statistics fixed (fine-tuning with small per-process batches on CPUs)")
    p.add_argument("--ema-decay", type=float_in(0.0, 1.0, open_high=True), default=None,
                   help="the shipped weights are this exponential moving average of the trained ones (default: "
                        "0.9998)")
    p.add_argument("--ema-warmup", type=positive_int, default=None,
                   help="updates over which the average's decay ramps up to --ema-decay (default: 2000; a run "
                        "much shorter than that ships nearly its raw weights)")
    p.add_argument("--checkpoint-minutes", type=positive_float, default=None, help="(default: 5)")
    p.add_argument("--eval-every", type=non_negative_int, default=None, help="epochs between dev evaluations (0: never; default: 5)")
    p.add_argument("--val-images", type=Path, default=None, help="WIDER val images folder for dev evaluation")
    p.add_argument("--val-gt", type=Path, default=None, help="WIDER ground_truth folder (.mat files)")
    p.add_argument("--val-list", type=Path, default=None, help="wider_val.txt list of the dev images")
    p.add_argument("--val-long-side", type=non_negative_int, default=None, help="(default: 320)")
    p.add_argument("--max-steps", type=non_negative_int, default=None, help="stop after this step (with a checkpoint)")
    p.add_argument("--log-every", type=positive_int, default=None, help="(default: 10)")
    p.set_defaults(func=run)


def train_options(args: argparse.Namespace):
    """``TrainOptions`` from the flags given (the rest keep TrainOptions' defaults, defined there once); with
    ``--resume``, the checkpoint's options overridden by the flags given."""
    from ..errors import BlazefaceError
    from ..training.checkpointing import saved_options
    from ..training.trainer import TrainOptions

    fields = TrainOptions.__dataclass_fields__
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if args.resume is not None:
        saved = {k: (Path(v) if isinstance(v, str) and "Path" in str(fields[k].type) else v)
                 for k, v in saved_options(args.resume).items() if k in fields}
        given = {**saved, **given}
    if not given.get("data"):
        raise BlazefaceError("--data is required (or --resume OUT/last.pth to continue a run)")
    given["model"] = given.get("model") or "blaze"
    return TrainOptions(**given)


def run(args: argparse.Namespace) -> int:
    from ..training.trainer import Trainer
    from ..training.dev_eval import make_dev_evaluator

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = train_options(args)
    evaluate_fn = None
    if options.val_images and options.val_gt and options.eval_every:
        evaluate_fn = make_dev_evaluator(options.model, options.val_images, options.val_gt, options.val_list,
                                         options.val_long_side)
    trainer = Trainer(options, evaluate_fn)
    trainer.run()
    return 0
