"""The detector's training loss: boxes, face/background classification and landmarks, as named parts.

``MultiBoxLoss(train_config)(loc, conf, landm, targets)`` returns ``{"loc", "cls", "landm"}``, each ALREADY
multiplied by its weight (``loc_weight``, ``cls_weight``, ``landm_weight`` of :class:`TrainConfig`), so the
trainer's total is simply ``sum(parts.values())`` and every logged part is what the optimiser sees.

Targets come from :func:`blazeface.matching.match`, stacked over the batch (``labels`` 1 face,
0 background, -1 ignore). Normalisation (as the originals): box and class sums are divided by the number of
positive priors in the batch, the landmark sum by the number of positives with landmarks (each at least 1).

Classification (``train_config.cls_loss``):
- ``"ohem"``: cross-entropy over the positives plus the hardest negatives, ``neg_pos_ratio`` per positive
  in each image (at least ``min_negatives`` per image, so photos without a face still teach "background";
  the originals used none there). Hard negatives are picked for the whole batch at once with the
  sort-of-sort rank trick; ignored priors and positives are never picked.
- ``"focal"``: softmax focal loss (alpha for the face class, 1 - alpha for background, ``gamma``) summed over
  every prior not ignored.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainConfig
from ..errors import BlazefaceError

CLS_LOSSES = ("ohem", "focal")


class MultiBoxLoss(nn.Module):
    def __init__(self, train_config: TrainConfig, *, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 min_negatives: int | None = None, smooth_l1_beta: float = 1.0):
        super().__init__()
        if train_config.cls_loss not in CLS_LOSSES:
            raise BlazefaceError(f"unknown cls_loss {train_config.cls_loss!r}; choose one of: "
                                 f"{', '.join(CLS_LOSSES)}")
        self.cls_loss = train_config.cls_loss
        self.neg_pos_ratio = train_config.neg_pos_ratio
        self.min_negatives = train_config.neg_pos_ratio if min_negatives is None else min_negatives
        self.loc_weight = train_config.loc_weight
        self.cls_weight = train_config.cls_weight
        self.landm_weight = train_config.landm_weight
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.beta = smooth_l1_beta

    def forward(self, loc: torch.Tensor, conf: torch.Tensor, landm: torch.Tensor,
                targets: dict[str, torch.Tensor], normalizers: dict[str, torch.Tensor] | None = None
                ) -> dict[str, torch.Tensor]:
        """``loc`` (B, P, 4), ``conf`` (B, P, 2) logits, ``landm`` (B, P, 10); ``targets`` holds ``loc_t``,
        ``labels``, ``landm_t``, ``landm_mask`` and optionally ``landm_weight`` (per-prior landmark weight,
        e.g. a teacher's score), all (B, P, ...). Returns the weighted parts.

        ``normalizers`` (``{"positives", "landmarks"}``) replace this batch's counts of positive priors and
        of positives with landmarks; data-parallel training passes the global counts divided by the number
        of processes, so the averaged gradient equals the single-process one."""
        labels = targets["labels"]
        positive = labels == 1
        counts = normalizers or self.counts(targets)
        num_pos = counts["positives"].clamp(min=1).to(loc.dtype)

        # Positives count with their face's weight: 1 for labels, a teacher's confidence for faces only a
        # teacher saw (``pos_weight`` from the matcher).
        pos_weight = targets.get("pos_weight")
        loc_per_prior = F.smooth_l1_loss(loc[positive], targets["loc_t"][positive], reduction="none",
                                         beta=self.beta).sum(-1)
        if pos_weight is not None:
            loc_per_prior = loc_per_prior * pos_weight[positive]
        loc_loss = loc_per_prior.sum()

        if self.cls_loss == "ohem":
            cls_loss = self._ohem(conf, labels, positive, pos_weight)
        else:
            cls_loss = self._focal(conf, labels, pos_weight)

        mask = targets["landm_mask"]
        per_prior = F.smooth_l1_loss(landm[mask], targets["landm_t"][mask], reduction="none",
                                     beta=self.beta).sum(-1)
        if "landm_weight" in targets:
            per_prior = per_prior * targets["landm_weight"][mask]
        landm_loss = per_prior.sum() / counts["landmarks"].clamp(min=1).to(loc.dtype)

        return {"loc": self.loc_weight * loc_loss / num_pos,
                "cls": self.cls_weight * cls_loss / num_pos,
                "landm": self.landm_weight * landm_loss}

    @staticmethod
    def counts(targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The loss normalisers of a batch: positive priors, and positive priors with landmarks."""
        return {"positives": (targets["labels"] == 1).sum().float(), "landmarks": targets["landm_mask"].sum().float()}

    @staticmethod
    def per_prior_cross_entropy(conf: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, P) cross-entropy of every prior against its label (ignored priors against background)."""
        return F.cross_entropy(conf.reshape(-1, conf.shape[-1]), labels.clamp(min=0).reshape(-1),
                               reduction="none").view(labels.shape)

    @torch.no_grad()
    def hard_negatives(self, ce: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, P) bool: the background priors the mining picks, the highest ``ce`` first, ``neg_pos_ratio`` per
        positive in each image (at least ``min_negatives``)."""
        candidate = labels == 0
        mining = torch.where(candidate, ce, torch.full_like(ce, -1.0))  # CE >= 0: non-candidates rank last
        wanted = (self.neg_pos_ratio * (labels == 1).sum(1)).clamp(min=self.min_negatives)
        num_neg = torch.minimum(wanted, candidate.sum(1))
        order = mining.argsort(1, descending=True)
        rank = order.argsort(1)  # rank[b, p]: position of prior p in image b's hardest-first order
        return rank < num_neg[:, None]

    def _ohem(self, conf: torch.Tensor, labels: torch.Tensor, positive: torch.Tensor,
              pos_weight: torch.Tensor | None = None) -> torch.Tensor:
        ce = self.per_prior_cross_entropy(conf, labels)
        negative = self.hard_negatives(ce, labels)
        if pos_weight is None:
            return ce[positive | negative].sum()
        return (ce[positive] * pos_weight[positive]).sum() + ce[negative].sum()

    def _focal(self, conf: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor | None = None
               ) -> torch.Tensor:
        valid = labels >= 0
        logits, target = conf[valid], labels[valid]
        log_p = F.log_softmax(logits, -1).gather(1, target[:, None]).squeeze(1)
        alpha = torch.where(target == 1, self.focal_alpha, 1.0 - self.focal_alpha)
        if pos_weight is not None:
            alpha = alpha * torch.where(target == 1, pos_weight[valid], 1.0)
        return (-alpha * (1.0 - log_p.exp()).pow(self.focal_gamma) * log_p).sum()


class DenseDistillationLoss(nn.Module):
    """Per-prior distillation from a teacher with the student's priors (its own architecture, or one laid
    out alike).

    - ``kd_cls``: ``T^2 * KL(teacher || student)`` of the face/background softmax at temperature ``T``,
      summed over every prior;
    - ``kd_loc`` / ``kd_landm``: smooth L1 between the encoded boxes / landmarks, each prior weighted by the
      teacher's face probability (background priors' regressions mean nothing).

    Each is divided by the batch's positive-prior count (as the ground-truth parts) and multiplied by its
    weight (``kd_cls_weight``, ``kd_loc_weight``, ``kd_landm_weight`` of :class:`TrainConfig`). All three are
    exactly 0 when the student's outputs are the teacher's."""

    def __init__(self, train_config: TrainConfig, smooth_l1_beta: float = 1.0):
        super().__init__()
        self.cls_weight = train_config.kd_cls_weight
        self.loc_weight = train_config.kd_loc_weight
        self.landm_weight = train_config.kd_landm_weight
        self.temperature = train_config.kd_temperature
        if self.temperature <= 0:
            raise BlazefaceError(f"kd_temperature must be > 0, not {self.temperature}")
        self.beta = smooth_l1_beta

    def forward(self, student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...],
                num_pos: torch.Tensor, cls_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``cls_mask`` (B, P) bool: the priors whose class is distilled (None: all)."""
        (loc, conf, landm), (t_loc, t_conf, t_landm) = student, teacher
        t = self.temperature
        num_pos = num_pos.clamp(min=1).to(loc.dtype)
        t_log_p = F.log_softmax(t_conf / t, -1)
        kl_per_prior = (t_log_p.exp() * (t_log_p - F.log_softmax(conf / t, -1))).sum(-1)
        kl = (kl_per_prior if cls_mask is None else kl_per_prior[cls_mask]).sum()
        face_p = F.softmax(t_conf, -1)[..., 1]
        loc_d = (F.smooth_l1_loss(loc, t_loc, reduction="none", beta=self.beta).sum(-1) * face_p).sum()
        landm_d = (F.smooth_l1_loss(landm, t_landm, reduction="none", beta=self.beta).sum(-1) * face_p).sum()
        return {"kd_cls": self.cls_weight * t * t * kl / num_pos,
                "kd_loc": self.loc_weight * loc_d / num_pos,
                "kd_landm": self.landm_weight * landm_d / num_pos}
