"""The training loop behind ``blazeface train``: resumable, EMA, warm-up + cosine, torchrun-ready.

Position is counted in optimiser steps over fixed-size global batches; epoch ``e`` is the mixer's seeded
order of items, so (seed, step) pins down exactly which images and crops come next. That is what makes
``--resume`` continue where a run stopped, bit for bit, and what lets N processes split every global
batch between them.
"""
from __future__ import annotations

import json
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..backends import default_backend
from ..config import ModelConfig, TrainConfig
from ..data.dataset import build_training_data, collate, worker_init
from ..data.transforms import build_preset
from ..errors import BlazefaceError
from ..io import check_folder_free, exclusive_folder, same_file
from ..models import create_model, get_config
from ..checkpoint import with_metadata
from .checkpointing import (load_checkpoint, remove_stale_temporaries, rng_state, save_atomic, set_rng_state,
                            truncate_metrics)
from .distributed import World, all_reduce_sum, barrier, cleanup, init_distributed
from .ema import ModelEMA
from .feature_distillation import build_feature_imitation
from .loss import DenseDistillationLoss, MultiBoxLoss
from .teacher_cache import CARRIED_KEYS, CarriedCandidates, PhotoCandidates, photo_candidates_for_run
from .teachers import (DenseTeachers, GridTeacher, ModelTeacher, PriorMapping, TeacherLabelling, TeacherTargets,
                       load_teacher, mean_dense_outputs, teaches_per_prior)
from .optim import build_optimizer, parameter_groups, warmup_cosine


# TrainConfig settings that only a kind of teacher reads: the per-prior ones (dense or carried, the distillation
# loss and the label/teacher disagreement) and the detection teachers' (their faces merged into the labels).
DISAGREEMENT_FIELDS = ("teacher_ignore_score", "kd_ignore_labelled_below", "kd_ignore_background_above")
PER_PRIOR_TEACHER_FIELDS = ("kd_cls_weight", "kd_loc_weight", "kd_landm_weight", "kd_temperature") + DISAGREEMENT_FIELDS
DETECTION_TEACHER_FIELDS = ("teacher_min_score", "teacher_positive_score", "teacher_landmark_weight")
FEATURE_TEACHER_FIELDS = ("kd_feature_weight",)
TEACHER_FIELDS = PER_PRIOR_TEACHER_FIELDS + DETECTION_TEACHER_FIELDS + FEATURE_TEACHER_FIELDS


@dataclass
class TrainOptions:
    model: str
    data: list[str]
    out: Path = Path("runs/train")
    # Overrides of the model's TrainConfig (None: the model's default).
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    input_size: int | None = None
    optimizer: str | None = None
    weight_decay: float | None = None
    cls_loss: str | None = None
    neg_pos_ratio: int | None = None
    loc_weight: float | None = None
    cls_weight: float | None = None
    landm_weight: float | None = None
    min_positives: int | None = None
    compensation_iou: float | None = None
    face_weight_floor: float | None = None
    warmup_epochs: float | None = None
    zoom_out_p: float | None = None
    max_zoom_out: float | None = None
    crop_scale: list[float] | None = None
    rotate_p: float | None = None
    max_rotation: float | None = None
    mosaic_p: float | None = None
    close_mosaic: int | None = None
    kd_cls_weight: float | None = None
    kd_loc_weight: float | None = None
    kd_landm_weight: float | None = None
    kd_temperature: float | None = None
    teacher_min_score: float | None = None
    teacher_positive_score: float | None = None
    teacher_ignore_score: float | None = None
    kd_ignore_labelled_below: float | None = None
    kd_ignore_background_above: float | None = None
    teacher_landmark_weight: float | None = None
    kd_feature_weight: float | None = None
    # Distillation teachers, ``KIND:PATH`` each (see training/teachers.py); empty: ground truth only.
    teachers: list[str] = field(default_factory=list)
    # Model teachers with other priors than the student's, and YuNet, teach per prior too, their candidate faces
    # carried onto the student's priors (training.teachers.PriorMapping), instead of as detection teachers in the
    # data workers.
    map_teacher_priors: bool = False
    # A model teacher, ``MODEL:WEIGHTS``, whose head-input feature maps the student's imitate at the strides both
    # have (training/feature_distillation.py), beside whatever the teachers above teach; None: no feature term.
    feature_teacher: str | None = None
    # A per-prior YuNet teacher also runs on the batch enlarged by each of these factors (training.teachers.
    # YuNetTeacher): at 2x it finds the faces under ~10 pixels that it misses at the student's scale.
    yunet_scales: list[float] = field(default_factory=lambda: [1.0])
    # A per-prior CenterFace teacher likewise runs at each of these factors (below 1 for the large faces).
    centerface_scales: list[float] = field(default_factory=lambda: [1.0])
    # Per-prior grid teachers (YuNet, CenterFace) run once on every whole training photo (at each of their scales
    # times its size) instead of on every batch; their candidate faces, pooled, follow each crop's geometry
    # (training.teacher_cache).
    cache_teacher: bool = False
    # Processes that compute those candidates when the run folder has none (default: threads + workers).
    cache_processes: int | None = None
    # A folder shared by runs where those candidates are kept by what they depend on (teacher, scales, photos), so a
    # second run of the same mix links them instead of computing them again (None: the run folder only).
    teacher_cache: Path | None = None
    # Where the per-prior teachers run: "auto" is ONNX Runtime on a CPU when the onnx extra is installed (its
    # forward pass takes half of PyTorch's there), else PyTorch; "torch" or "onnx" force one.
    teacher_runtime: str = "auto"
    epoch_size: int | None = None  # items per epoch (default: the sum of the sources' sizes)
    resume: Path | None = None
    init_weights: Path | None = None  # start from these weights (fine-tuning), not from scratch
    seed: int = 0
    workers: int = 1
    cache_images: bool = False  # keep decoded photos in each data worker (GPU runs: decoding bounds the step)
    threads: int | None = None
    device: str = "cpu"
    channels_last: bool = True
    bf16: bool | None = None  # None: the model's TrainConfig default
    # Keep BatchNorm statistics fixed (eval mode): fine-tuning with tiny per-process batches on CPUs,
    # where SyncBatchNorm is unavailable. On GPUs, several processes use SyncBatchNorm instead.
    freeze_bn: bool = False
    ema_decay: float = 0.9998
    # Updates over which the EMA's decay ramps up to ema_decay (1 - exp(-updates / ema_warmup)): with 2,000 a
    # run of a few thousand steps ends with a decay of 0.8-0.9, i.e. weights close to the raw model's.
    ema_warmup: int = 2000
    checkpoint_minutes: float = 5.0
    eval_every: int = 5  # epochs between dev evaluations (0: never)
    val_images: Path | None = None
    val_gt: Path | None = None
    val_list: Path | None = None
    val_long_side: int = 320
    max_steps: int | None = None  # stop (with a checkpoint) after this global step: smoke runs, tests
    log_every: int = 10
    progress: bool = True

    def train_config(self, base: ModelConfig):
        overrides = {k: getattr(self, k) for k in ("epochs", "batch_size", "lr", "input_size", "optimizer",
                                                      "weight_decay", "cls_loss", "neg_pos_ratio", "loc_weight",
                                                      "cls_weight",
                                                      "landm_weight", "min_positives", "compensation_iou", "face_weight_floor",
                                                      "warmup_epochs", "bf16",
                                                      "zoom_out_p", "max_zoom_out", "rotate_p", "max_rotation",
                                                      "mosaic_p", "close_mosaic",
                                                      *TEACHER_FIELDS)
                     if getattr(self, k) is not None}
        if self.crop_scale is not None:
            overrides["crop_scale"] = tuple(self.crop_scale)
        return replace(base.train, **overrides)

    def to_json(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


TEACHER_RUNTIMES = ("auto", "torch", "onnx")


def teacher_runtime(requested: str, device: str) -> str:
    """The runtime the per-prior teachers and the feature teacher get: ``requested``, with "auto" resolved as
    inference resolves its default backend (ONNX Runtime on a CPU when the onnx extra is installed, else
    PyTorch). ONNX Runtime on a GPU is not supported here."""
    if requested not in TEACHER_RUNTIMES:
        raise BlazefaceError(f"teacher runtime {requested!r}: expected one of {', '.join(TEACHER_RUNTIMES)}")
    on_cpu = device.split(":")[0] == "cpu"
    if requested == "onnx" and not on_cpu:
        raise BlazefaceError(f"--teacher-runtime onnx runs on the CPU only, not on --device {device}")
    if requested != "auto":
        return requested
    return "onnx" if on_cpu and default_backend() == "onnx" else "torch"


@dataclass
class StopFlag:
    """Set by SIGINT/SIGTERM: the loop finishes the current step, checkpoints and exits."""

    requested: bool = False
    signal_name: str = ""
    _previous: dict = field(default_factory=dict)

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        self.requested = True
        self.signal_name = signal.Signals(signum).name


class RankBatches:
    """Batch sampler over the run's remaining steps: step ``s`` is global batch ``s mod steps_per_epoch``
    of epoch ``s // steps_per_epoch``, i.e. items ``[b*B, (b+1)*B)`` of that epoch's mixer order (the
    last partial batch of an epoch is dropped); this rank takes its contiguous share. One sampler for all
    epochs keeps one set of data workers for the whole run: rebuilding them at every epoch cost 12-25 s
    per epoch on a GPU machine (imports and teacher loading in each new worker), half its time."""

    def __init__(self, epoch_items: Callable[[int], tuple[np.ndarray, np.ndarray]], steps_per_epoch: int,
                 global_batch: int, world: World, start: int, end: int):
        self.epoch_items = epoch_items
        self.steps_per_epoch = steps_per_epoch
        self.global_batch = global_batch
        self.local = global_batch // world.size
        self.rank = world.rank
        self.start, self.end = start, end

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def __iter__(self):
        epoch, items = None, []
        for step in range(self.start, self.end):
            e, b = divmod(step, self.steps_per_epoch)
            if e != epoch:
                indices, seeds = self.epoch_items(e)
                epoch, items = e, list(zip(indices.tolist(), seeds.tolist()))
            first = b * self.global_batch + self.rank * self.local
            yield items[first:first + self.local]


def check_teacher_settings(options: TrainOptions, per_prior: bool, detection: bool, feature: bool = False) -> None:
    """A teacher setting given with no teacher of the kind that reads it is a one-line error, not a run that
    silently trains without it."""
    unused = [f for f in PER_PRIOR_TEACHER_FIELDS if not per_prior and getattr(options, f) is not None]
    unused += [f for f in DETECTION_TEACHER_FIELDS if not detection and getattr(options, f) is not None]
    unused += [f for f in FEATURE_TEACHER_FIELDS if not feature and getattr(options, f) is not None]
    if unused:
        flags = ", ".join("--" + f.replace("_", "-") for f in unused)
        raise BlazefaceError(f"{flags}: no teacher of this run reads {'it' if len(unused) == 1 else 'them'} "
                             "(--kd-*, --teacher-ignore-score and --kd-ignore-* need a teacher that "
                             "teaches per prior: the student's priors, or --map-teacher-priors; --teacher-min-score, "
                             "--teacher-positive-score and --teacher-landmark-weight a detection teacher; --kd-feature-weight "
                             "a --feature-teacher)")


def labels_and_teacher_disagree(labels: torch.Tensor, teacher_logits: torch.Tensor, cfg: TrainConfig
                                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Where the matched labels (B, P) and a per-prior teacher's class (``teacher_logits`` (B, P, 2): logits or
    the log-probabilities of a carried teacher, both softmax to its probabilities) disagree, settle it one way:
    a background prior (0) the teacher calls a face with probability >= ``teacher_ignore_score`` becomes ignore
    (-1), never mined as a negative (the teacher's way); or, with ``kd_ignore_background_above``, such a prior
    leaves the class distillation instead (the labels' way). A labelled-face prior (1) the teacher gives less than
    ``kd_ignore_labelled_below`` leaves the class distillation too. Returns the labels and the mask of priors the
    class distillation skips (None: none). Settings at None leave their side as it was."""
    face = teacher_logits.float().softmax(-1)[..., 1]
    if cfg.teacher_ignore_score is not None:
        labels = torch.where((labels == 0) & (face >= cfg.teacher_ignore_score), torch.full_like(labels, -1), labels)
    skipped = None
    if cfg.kd_ignore_labelled_below is not None:
        skipped = (labels == 1) & (face < cfg.kd_ignore_labelled_below)
    if cfg.kd_ignore_background_above is not None:
        unlabelled = (labels == 0) & (face >= cfg.kd_ignore_background_above)
        skipped = unlabelled if skipped is None else skipped | unlabelled
    return labels, skipped


def native_bf16(device: str) -> bool:
    """Whether bfloat16 autocast runs natively: any CUDA device, or a CPU with AVX-512 BF16 or AMX."""
    if not device.startswith("cpu"):
        return True
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def check_run_folder(out: Path, resume: str | Path | None) -> None:
    """A run never writes over another run: ``out`` may hold a checkpoint only when it is the one resumed
    (hours of training are one mistyped ``--out`` away otherwise)."""
    last, weights = out / "last.pth", out / "weights.pth"
    if last.exists() and not (resume is not None and same_file(last, resume)):
        raise BlazefaceError(f"--out {out}: holds another run (last.pth); continue it with --resume {last}, or "
                             f"choose another --out")
    if weights.exists() and not last.exists():
        raise BlazefaceError(f"--out {out}: holds a run's weights.pth; choose another --out")


class Trainer:
    def __init__(self, options: TrainOptions, evaluate_fn: Callable | None = None):
        self.opt = options
        self.world = init_distributed(options.device)
        if options.threads:
            torch.set_num_threads(options.threads)
        base = get_config(options.model)
        self.train_cfg = options.train_config(base)
        self.precision = "bf16 autocast" if self.train_cfg.bf16 else "fp32"  # said in the run's first line
        if options.bf16 is None and self.train_cfg.bf16 and not native_bf16(options.device):
            # The model's bf16 default was measured on CPUs with bf16 instructions; elsewhere autocast
            # emulates bf16 and a step is many times slower (an AVX2-only CPU: ~30x for slim).
            self.train_cfg = replace(self.train_cfg, bf16=False)
            self.precision = "fp32 (bf16 is the model's default, but this CPU has no native bf16)"
        if self.train_cfg.batch_size % self.world.size:
            raise BlazefaceError(f"batch size {self.train_cfg.batch_size} does not split over {self.world.size} "
                                 "processes")
        self.model_cfg = replace(base, train=self.train_cfg)
        check_run_folder(Path(options.out), options.resume)
        if self.world.is_main:
            check_folder_free(options.out)  # a live run in --out fails here, before minutes of set-up
        # Teachers load before anything else is built, so a broken teacher file fails in a second.
        teachers = [load_teacher(spec, yunet_scales=options.yunet_scales, centerface_scales=options.centerface_scales)
                    for spec in options.teachers]
        imitated = self._load_feature_teacher(options.feature_teacher)  # the model whose feature maps are imitated
        self._check_not_teacher_weights(teachers + ([imitated] if imitated else []))
        per_prior = [t for t in teachers if teaches_per_prior(t, options.model, options.map_teacher_priors)]
        cached = [t for t in per_prior if isinstance(t, GridTeacher)] if options.cache_teacher else []
        if options.cache_teacher and not cached:
            raise BlazefaceError("--cache-teacher needs a YuNet or CenterFace teacher that teaches per prior "
                                 "(--teacher yunet:PATH --map-teacher-priors)")
        compensation = {"min_positives": self.train_cfg.min_positives,
                        "compensation_iou": self.train_cfg.compensation_iou}
        self.dense_teachers = DenseTeachers([t for t in per_prior if t not in cached], options.model, **compensation)
        detection_teachers = [t for t in teachers if t not in per_prior]
        check_teacher_settings(options, bool(per_prior), bool(detection_teachers), imitated is not None)
        cfg = self.train_cfg
        if cfg.teacher_ignore_score is not None and cfg.kd_ignore_background_above is not None:
            raise BlazefaceError("--teacher-ignore-score and --kd-ignore-background-above settle the same priors "
                                 "opposite ways (the teacher's, the labels'): choose one")
        if cfg.crop_scale[0] > cfg.crop_scale[1]:
            raise BlazefaceError(f"--crop-scale {cfg.crop_scale[0]:g} {cfg.crop_scale[1]:g}: MIN must not exceed MAX")
        preset = build_preset("small-faces", cfg.input_size, self.model_cfg.mean_bgr, zoom_out_p=cfg.zoom_out_p,
                              max_zoom_out=cfg.max_zoom_out, crop_scale=cfg.crop_scale, rotate_p=cfg.rotate_p,
                              max_rotation=cfg.max_rotation)
        if detection_teachers:
            preset = TeacherLabelling(preset, detection_teachers, TeacherTargets.from_train_config(cfg))
        if cached:
            carrier = PriorMapping(None, self.model_cfg.priors, **compensation)
            preset = CarriedCandidates(preset, carrier)
        self.dataset, self.mixer = build_training_data(options.data, self.model_cfg, self.train_cfg.input_size,
                                                       preset=preset, seed=options.seed,
                                                       epoch_size=options.epoch_size,
                                                       cache_images=options.cache_images,
                                                       mosaic_p=cfg.mosaic_p, face_weight_floor=cfg.face_weight_floor,
                                                       **compensation)
        if cached:
            self.dataset.set_teacher_candidates(self._photo_candidates(cached, carrier.min_probability))
        self.steps_per_epoch = self.mixer.epoch_size // self.train_cfg.batch_size
        if self.steps_per_epoch == 0:
            raise BlazefaceError(f"an epoch of {self.mixer.epoch_size} images is smaller than one batch of "
                                 f"{self.train_cfg.batch_size}")
        self.total_steps = self.steps_per_epoch * self.train_cfg.epochs
        if cfg.mosaic_p > 0 and cfg.close_mosaic >= cfg.epochs:
            raise BlazefaceError(f"--close-mosaic {cfg.close_mosaic} leaves none of the {cfg.epochs} epochs with "
                                 "mosaics")

        torch.manual_seed(options.seed)  # same initial weights on every rank and every run
        # A resumed run takes its weights from the checkpoint: the file it was first started from (named in
        # the checkpoint's options) is not read again, and may be gone (a checkpoint committed elsewhere).
        model = create_model(options.model, weights=None if options.resume else options.init_weights,
                             train=self.train_cfg)
        self.memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
        model = model.to(options.device, memory_format=self.memory_format)
        self.ema = ModelEMA(model, decay=options.ema_decay, warmup_updates=options.ema_warmup)
        self.optimizer = build_optimizer(model, self.train_cfg)
        self.student_tap = self.feature_teacher = self.feature_loss_fn = None
        if imitated is not None:
            teacher_model = imitated.model().to(options.device, memory_format=self.memory_format)
            self.student_tap, self.feature_teacher, self.feature_loss_fn = build_feature_imitation(
                model, self.model_cfg.priors.steps, teacher_model, get_config(imitated.name).priors.steps,
                self.train_cfg.kd_feature_weight, self.train_cfg.input_size,
                reduce=lambda t: all_reduce_sum(t, self.world))
            self.feature_loss_fn.to(options.device)
            # The adapters train with the student (and are checkpointed with it), then are thrown away.
            for group in parameter_groups(self.feature_loss_fn, self.train_cfg.weight_decay):
                self.optimizer.add_param_group(group)
        warmup = round(self.train_cfg.warmup_epochs * self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(self.total_steps, warmup))
        if self.world.distributed:
            if options.device.startswith("cuda") and not options.freeze_bn:
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            model = torch.nn.parallel.DistributedDataParallel(model)
        self.model = model
        self.loss_fn = MultiBoxLoss(self.train_cfg)
        self.kd_loss_fn = DenseDistillationLoss(self.train_cfg)
        if teacher_runtime(options.teacher_runtime, options.device) == "onnx":
            self.dense_teachers.use_onnx_runtime(threads=torch.get_num_threads())
            if self.feature_teacher is not None:
                self.feature_teacher.use_onnx_runtime(threads=torch.get_num_threads())
        else:
            self.dense_teachers.to(options.device, memory_format=self.memory_format)
        self.step = 0
        self.evaluate_fn = evaluate_fn
        self.out = Path(options.out)
        self.metrics_path = self.out / "metrics.jsonl"
        if options.resume:
            self._resume(Path(options.resume))

    def _photo_candidates(self, teachers: list[GridTeacher], min_probability: float) -> PhotoCandidates:
        """The teachers' candidates of every training photo: computed (or read back) by the main process, then
        read by the others."""
        onnx = teacher_runtime(self.opt.teacher_runtime, self.opt.device) == "onnx"
        if onnx:
            for teacher in teachers:
                teacher.use_onnx_runtime(threads=torch.get_num_threads())
        paths = [sample.image_path for sample in self.dataset.samples]
        args = (teachers, paths, self.model_cfg.mean_bgr, min_probability, Path(self.opt.out))
        # Before training starts the run's compute threads and data workers are idle: by default as many pool
        # processes compute the candidates.
        processes = self.opt.cache_processes or torch.get_num_threads() + self.opt.workers
        found = (photo_candidates_for_run(*args, processes=processes, onnx=onnx, shared=self.opt.teacher_cache)
                 if self.world.is_main else None)
        barrier(self.world)
        return found if found is not None else photo_candidates_for_run(*args)

    @staticmethod
    def _load_feature_teacher(spec: str | None) -> ModelTeacher | None:
        if spec is None:
            return None
        teacher = load_teacher(spec)
        if not isinstance(teacher, ModelTeacher):
            raise BlazefaceError(f"--feature-teacher {spec}: needs MODEL:WEIGHTS of a registered model (its feature "
                                 "maps are read), not a yunet or centerface file")
        return teacher

    def _check_not_teacher_weights(self, teachers: list) -> None:
        """A student never starts from a teacher's weights."""
        init = self.opt.init_weights
        if init is None:
            return
        for teacher in teachers:
            if Path(init).resolve() == Path(teacher.path).resolve():
                raise BlazefaceError(f"--init-weights {init} is a teacher's file: a student starts from this "
                                     "project's own weights or from scratch")

    # -- checkpoints -------------------------------------------------------------------------------
    def checkpoint_state(self) -> dict:
        return {
            "model": unwrap(self.model).state_dict(),
            "ema": self.ema.module.state_dict(),
            "ema_updates": self.ema.updates,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            "position": {"step": self.step, "epoch": self.step // self.steps_per_epoch,
                         "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps},
            "model_name": self.opt.model,
            "options": json.dumps(self.opt.to_json()),
            **({"feature_adapters": self.feature_loss_fn.state_dict()} if self.feature_loss_fn is not None else {}),
        }

    def save(self, name: str = "last.pth") -> Path:
        path = self.out / name
        if self.world.is_main:
            save_atomic(self.checkpoint_state(), path)
            # The shippable artefact: EMA weights only, a few hundred KB.
            # Plus one string entry naming the model and its configuration (blazeface.checkpoint.META_KEY),
            # so loading it needs no --model.
            # CPU tensors whatever the training device, so the file loads anywhere without map_location.
            weights = {k: v.detach().cpu() for k, v in self.ema.module.state_dict().items()}
            save_atomic(with_metadata(weights, self.model_cfg), self.out / "weights.pth")
        barrier(self.world)
        return path

    def _resume(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        if ckpt.get("model_name") != self.opt.model:
            raise BlazefaceError(f"{path}: checkpoint is for model {ckpt.get('model_name')!r}, not {self.opt.model!r}")
        pos = ckpt["position"]
        if pos["steps_per_epoch"] != self.steps_per_epoch:
            raise BlazefaceError(f"{path}: checkpoint has {pos['steps_per_epoch']} steps per epoch, this run "
                                 f"{self.steps_per_epoch}: same data and batch size are needed to resume")
        if (self.feature_loss_fn is not None) != ("feature_adapters" in ckpt):
            raise BlazefaceError(f"{path}: checkpoint of a run {'without' if self.feature_loss_fn else 'with'} a "
                                 "feature teacher; start a new run with --init-weights from its weights.pth instead")
        unwrap(self.model).load_state_dict(ckpt["model"])
        if self.feature_loss_fn is not None:
            self.feature_loss_fn.load_state_dict(ckpt["feature_adapters"])
        self.ema.module.load_state_dict(ckpt["ema"])
        self.ema.updates = int(ckpt["ema_updates"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
        self.step = int(pos["step"])
        if self.world.is_main:  # the steps after the checkpoint are trained (and logged) again
            truncate_metrics(self.metrics_path, self.step)
        # The learning rate is a function of the step: derive it from this run's schedule instead of trusting
        # the saved one. Identical when --epochs is unchanged; with a different --epochs the cosine is
        # re-planned from this step (the rate moves once, then decays smoothly to the new end), which is how
        # a run is shortened to fit the machine time left, or extended after it ended.
        for group, base, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs,
                                       self.scheduler.lr_lambdas):
            group["lr"] = base * factor(self.scheduler.last_epoch)
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]  # for get_last_lr()
        if pos["total_steps"] != self.total_steps and self.world.is_main:
            print(f"blazeface train: schedule re-planned from {pos['total_steps']} to {self.total_steps} steps "
                  f"({self.train_cfg.epochs} epochs) at step {self.step}", file=sys.stderr)

    # -- the loop ----------------------------------------------------------------------------------
    def loader(self, start_step: int, end_step: int) -> DataLoader:
        """The batches of steps ``[start_step, end_step)``, over as many epochs as that spans."""
        batches = RankBatches(self.mixer.epoch_items, self.steps_per_epoch, self.train_cfg.batch_size, self.world,
                              start_step, end_step)
        # Workers come from a fork server, not a fork of this process: after the dev evaluation this process
        # holds live OpenCV/OpenMP thread pools, and a child forked from it deadlocks on their locks.
        workers = self.opt.workers
        return DataLoader(self.dataset, batch_sampler=batches, collate_fn=collate, num_workers=workers,
                          worker_init_fn=worker_init if workers else None,
                          multiprocessing_context="forkserver" if workers else None,
                          persistent_workers=False, prefetch_factor=4 if workers else None)

    def batches(self, start_step: int, end_step: int):
        """The batches of steps ``[start_step, end_step)``: mosaics until the last ``close_mosaic`` epochs, then
        none (a fresh loader, so its workers receive the dataset without them); the switch depends on the step
        alone, so a resumed run switches where a straight one does."""
        switch = self.total_steps - self.train_cfg.close_mosaic * self.steps_per_epoch
        mosaic_p = self.train_cfg.mosaic_p
        for first, last, p in ((start_step, min(end_step, switch), mosaic_p), (max(start_step, switch), end_step, 0.0)):
            if first < last:
                self.dataset.mosaic_p = p
                yield from self.loader(first, last)

    def loss_parts(self, images: torch.Tensor, targets: dict) -> dict[str, torch.Tensor]:
        """Every part of the loss on one batch (the ground truth's and each teacher's, weighted), as
        :meth:`train_step` sums them."""
        images = images.to(self.opt.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        targets = {k: v.to(self.opt.device, non_blocking=True) for k, v in targets.items()}
        carried = tuple(targets.pop(k) for k in CARRIED_KEYS) if CARRIED_KEYS[0] in targets else None
        # Normalise by the counts of the GLOBAL batch, so N processes compute the same gradient as one.
        counts = {k: all_reduce_sum(v, self.world) / self.world.size for k, v in self.loss_fn.counts(targets).items()}
        with torch.autocast(self.opt.device.split(":")[0], dtype=torch.bfloat16, enabled=self.train_cfg.bf16):
            loc, conf, landm = self.model(images)
            teacher = self.dense_teacher_outputs(images)
            if self.feature_teacher is not None:
                student_maps, teacher_maps = self.student_tap.take(), self.feature_teacher(images)
        if carried is not None:
            teacher = carried if teacher is None else mean_dense_outputs([teacher, carried])
        cls_mask = None
        cfg = self.train_cfg
        if teacher is not None and any(getattr(cfg, k) is not None for k in DISAGREEMENT_FIELDS):
            labels, skipped = labels_and_teacher_disagree(targets["labels"], teacher[1], cfg)
            targets["labels"], cls_mask = labels, None if skipped is None else ~skipped
        parts = self.loss_fn(loc.float(), conf.float(), landm.float(), targets, normalizers=counts)
        if teacher is not None:
            parts.update(self.kd_loss_fn((loc.float(), conf.float(), landm.float()), teacher, counts["positives"],
                                         cls_mask=cls_mask))
        if self.feature_teacher is not None:
            parts["kd_feature"] = self.feature_loss_fn(student_maps, teacher_maps)
        return parts

    def train_step(self, images: torch.Tensor, targets: dict) -> dict[str, float]:
        parts = self.loss_parts(images, targets)
        loss = sum(parts.values())
        if not torch.isfinite(loss):
            raise BlazefaceError(f"loss is not finite at step {self.step}: "
                                 + ", ".join(f"{k}={v.item():.4g}" for k, v in parts.items()))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.feature_loss_fn is not None and self.world.distributed:  # DDP averages only the model's gradients
            for p in self.feature_loss_fn.parameters():
                p.grad = all_reduce_sum(p.grad, self.world) / self.world.size
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update(unwrap(self.model))
        return {"loss": loss.item(), **{k: v.item() for k, v in parts.items()}}

    def dense_teacher_outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
        """The per-prior teachers' raw outputs on exactly this batch, on the student's priors (None without)."""
        if not len(self.dense_teachers):
            return None
        return self.dense_teachers(images)

    def log(self, record: dict) -> None:
        if self.world.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            with open(self.metrics_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")

    def run(self) -> Path:
        # One run writes a folder at a time (io.exclusive_folder); the main process holds it for all of them.
        with exclusive_folder(self.out) if self.world.is_main else nullcontext():
            return self._run()

    def _run(self) -> Path:
        stop = StopFlag()
        stop.install()
        self.out.mkdir(parents=True, exist_ok=True)
        if self.world.is_main:
            remove_stale_temporaries(self.out)  # left by a run killed while saving
            (self.out / "options.json").write_text(json.dumps(self.opt.to_json(), indent=2))
            # options.json holds what was asked (None: the model's default); this file holds what runs, which
            # can differ between machines (bf16 falls back to fp32 on a CPU without it).
            (self.out / "train_config.json").write_text(json.dumps(asdict(self.train_cfg), indent=2))
            print(f"blazeface train: {self.opt.model} on {self.opt.device}, {self.precision}, step {self.step:,} of "
                  f"{self.total_steps:,}; recipe in {self.out / 'train_config.json'}", file=sys.stderr)
        last_save = time.monotonic()
        end = self.total_steps if self.opt.max_steps is None else min(self.total_steps, self.opt.max_steps)
        self.set_train_mode()
        bar = tqdm(total=end, initial=self.step, unit="step", disable=not (self.opt.progress and self.world.is_main),
                   dynamic_ncols=True)
        window: list[dict] = []
        tick, seen = time.monotonic(), 0
        try:
            for images, targets in self.batches(self.step, end):
                parts = self.train_step(images, targets)
                self.step += 1
                seen += images.shape[0] * self.world.size
                window.append(parts)
                if self.step % self.opt.log_every == 0 or self.step == end:
                    elapsed = time.monotonic() - tick
                    mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                    rate = seen / max(elapsed, 1e-9)
                    self.log({"step": self.step, "epoch": self.step / self.steps_per_epoch,
                              "lr": self.scheduler.get_last_lr()[0], "img_per_s": rate, **mean,
                              "time": time.time()})
                    bar.set_postfix(loss=f"{mean['loss']:.3f}", img_s=f"{rate:.1f}",
                                    epoch=(self.step - 1) // self.steps_per_epoch)
                    window, tick, seen = [], time.monotonic(), 0
                bar.update(1)
                if self.step % self.steps_per_epoch == 0:
                    self.end_epoch(self.step // self.steps_per_epoch)
                    last_save = time.monotonic()
                elif time.monotonic() - last_save > self.opt.checkpoint_minutes * 60:
                    self.save()
                    last_save = time.monotonic()
                if stop.requested:
                    break
            path = self.save()
            self.plot()
            if stop.requested and self.world.is_main:
                print(f"blazeface train: {stop.signal_name} at step {self.step}; checkpoint {path}; continue with "
                      f"--resume {path}", file=sys.stderr)
            return path
        finally:
            bar.close()
            stop.restore()
            cleanup(self.world)

    def end_epoch(self, epoch: int) -> None:
        """Checkpoint, plot and (every ``eval_every`` epochs) evaluate after ``epoch`` epochs."""
        self.save()
        self.plot()
        if self.evaluate_fn and self.opt.eval_every and epoch % self.opt.eval_every == 0:
            self.evaluate(epoch)
            self.set_train_mode()

    def set_train_mode(self) -> None:
        self.model.train()
        if self.opt.freeze_bn:
            for module in self.model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def evaluate(self, epoch: int) -> None:
        if self.world.is_main:
            result = self.evaluate_fn(self.ema.module)
            self.log({"step": self.step, "epoch": epoch, "eval": result, "time": time.time()})
            tqdm.write(f"epoch {epoch}: dev " + " ".join(f"{k} {v:.4f}" for k, v in result.items()
                                                         if isinstance(v, float)))
        barrier(self.world)

    def plot(self) -> None:
        if self.world.is_main and self.metrics_path.is_file():
            from .plots import plot_metrics

            plot_metrics(self.metrics_path, self.out / "loss.png")
