"""Typed configuration: one ``ModelConfig`` per registered model carries its priors,
preprocessing and training defaults, so no caller needs to know per-model magic keys."""
from __future__ import annotations

from dataclasses import dataclass, field

from .defaults import LONG_SIDE

MEAN_BGR = (104.0, 117.0, 123.0)


@dataclass(frozen=True)
class PriorConfig:
    """Anchor layout: one entry of ``min_sizes`` (in input pixels) per detection level."""

    min_sizes: tuple[tuple[float, ...], ...]
    steps: tuple[int, ...]
    variances: tuple[float, float] = (0.1, 0.2)

    def __post_init__(self):
        if len(self.min_sizes) != len(self.steps):
            raise ValueError("min_sizes and steps need one entry per detection level")

    @property
    def priors_per_cell(self) -> tuple[int, ...]:
        return tuple(len(m) for m in self.min_sizes)


@dataclass(frozen=True)
class TrainConfig:
    """Per-model training defaults; every field can be overridden from ``blazeface train``."""

    input_size: int = 320
    batch_size: int = 32
    epochs: int = 250
    optimizer: str = "sgd"  # sgd | rmsprop | adamw
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    cls_loss: str = "ohem"  # ohem (hard-negative mining) | focal
    neg_pos_ratio: int = 7
    loc_weight: float = 2.0
    cls_weight: float = 1.0
    landm_weight: float = 1.0
    # Matching (matching.py): S3FD's scale compensation. A face with fewer positive priors than this takes its
    # best further ones down to IoU compensation_iou; ground truth and the per-prior teachers' candidate faces
    # alike. Faces under ~12 input pixels otherwise get one prior each, faces over 24 pixels eight to ten.
    # 0: off (the originals' rule).
    min_positives: int = 0
    compensation_iou: float = 0.1
    # Labels' box and class terms: a face with fewer positive priors than this has each weighted floor / count
    # (matching.py), so a tiny face's one prior does not count a tenth of a large face's ten. 0: off.
    face_weight_floor: float = 0.0
    # Augmentation ("small-faces" preset, data/transforms.py build_preset): the chance of a zoom-out and its
    # largest factor, then the square crop's side as a fraction of the short side.
    zoom_out_p: float = 0.3
    max_zoom_out: float = 2.5
    crop_scale: tuple[float, float] = (0.3, 1.0)
    # The chance of turning a photo first, and the largest angle either way in degrees (data/transforms.py
    # RandomRotate): tilted, lying and upside-down heads, which the originals' recipe never shows.
    rotate_p: float = 0.0
    max_rotation: float = 30.0
    mosaic_p: float = 0.0  # chance of tiling an exhaustively labelled photo with three others first
    # The last epochs see no mosaics (YOLOX, ultralytics' close_mosaic): photos as they come, at the end of the
    # schedule, repay what the tiles cost large faces.
    close_mosaic: int = 0
    # bfloat16 autocast: faster for slim/rfb/mnet on CPUs with AVX-512 BF16, slower for blaze (its 5x5
    # depthwise kernels): measured with benchmarks/bench_train_step.py. The trainer ignores this default on
    # CPUs without native bf16 (AVX2 only), where autocast emulates it at a fraction of the speed.
    bf16: bool = False
    # Distillation (``blazeface train --teacher``). Dense, same-architecture teachers: the weight of each
    # per-prior term (see training/loss.py DenseDistillationLoss) and the softmax temperature. The landmark
    # term is ~4x the size of the others at equal weight, hence 0.1.
    kd_cls_weight: float = 1.0
    kd_loc_weight: float = 2.0
    kd_landm_weight: float = 0.1
    kd_temperature: float = 1.0
    # Detection teachers (other architectures): how their faces enter the targets (training/teachers.py
    # TeacherTargets): used from this score, a positive from this score when no label covers the face.
    teacher_min_score: float = 0.5
    teacher_positive_score: float = 0.7
    teacher_landmark_weight: float = 0.5
    # Per-prior teachers: a prior the ground truth calls background but the teacher calls a face with at least
    # this probability is left out of the hard-negative mining (its class is then taught by the teacher alone),
    # so the two losses do not pull one prior opposite ways: an unlabelled face, or a face's neighbour prior
    # that the label's box misses and the teacher's reaches. None: mined as any background prior.
    teacher_ignore_score: float | None = None
    # The other disagreement: a prior matched to a labelled face to which the per-prior teacher gives a face
    # probability below this (a face the teacher misses: tiny, turned away, occluded) is left out of the class
    # distillation, so the label alone teaches it instead of the teacher pulling it to background. None: off.
    kd_ignore_labelled_below: float | None = None
    # The first disagreement settled the labels' way: a prior the labels call background (an exhaustively
    # labelled photo) to which the per-prior teacher gives at least this face probability is left out of the
    # class distillation, so the mined labels alone teach it. Such priors are mostly a labelled face's neighbours
    # that the teacher's box reaches and the label's does not, the rest faces WIDER's annotators left out, which
    # its evaluation counts as false positives; taught both ways, the student scores them in between. Measured
    # (docs/MODELS.md, session 45): fewer background false positives, but the faces' scores fall with them and
    # easy AP with those. None: off.
    kd_ignore_background_above: float | None = None
    # Feature teacher (``train --feature-teacher``): the weight of the feature imitation term
    # (training/feature_distillation.py), about the share of the teacher's head-input features the student
    # does not reproduce. At 5 its gradient on slim is about the labels' class term's (benchmarks/
    # loss_gradients.py); 600 steps at 5 tied their control, at 25 lost 0.008 hard AP (docs/MODELS.md).
    kd_feature_weight: float = 5.0


@dataclass(frozen=True)
class ModelConfig:
    name: str
    description: str
    priors: PriorConfig
    mean_bgr: tuple[float, float, float] = MEAN_BGR
    # Input height and width are padded (bottom/right) up to this multiple before the forward pass.
    size_multiple: int = 1
    long_side: int = LONG_SIDE
    # CPU inference in channels-last memory format: ~1.5x faster for the depthwise-heavy models, slower for
    # mnet's dense 3x3 FPN/SSH convolutions (measured with benchmarks/bench_peers.py, torch backend).
    channels_last: bool = True
    # File name of the weights shipped in ``blazeface/weights`` (None: ``<name>.pth``).
    weights_file: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
