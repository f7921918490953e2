"""Prior matching: one image's ground truth -> per-prior training targets (docs/ARCHITECTURE.md, "Conventions").

Runs per image in the DataLoader workers (the training size is fixed, so the priors are too) and is fully
vectorised over priors and faces (an ``(N, P)`` IoU matrix; no Python loop).

Rules:
- A prior whose best IoU with any face is >= ``pos_iou`` (0.35) is positive for that face.
- Every face is also forced onto its best prior unless that IoU is < ``forced_min_iou`` (0.2), so faces
  between 0.2 and 0.35 still get one positive. When two faces force the same prior, the face with the
  higher IoU on it wins (deterministic, unlike the originals' loop order).
- ``min_positives`` (S3FD's scale compensation, off at 0): a face left with fewer positive priors than this
  (a face under ~12 pixels gets one, a 32-pixel face eight) takes its best remaining priors down to IoU
  ``compensation_iou`` (0.1) until it has that many; a prior two faces take goes to the higher IoU.
- Non-positive priors with IoU in between are plain background, as in the originals; ``ignore_iou`` turns
  priors with best IoU in ``[ignore_iou, pos_iou)`` into "ignore" instead (off by default).
- ``ignore_unmatched``: a face too small for any prior (no positive at all) would otherwise teach the
  priors sitting on it that a face is background; priors covering at least half of such a face are
  ignored instead.
- ``ignore_background`` (non-exhaustive photos, e.g. MTFL): only priors near a labelled face may be
  negatives: centre inside the face box grown by ``background_margin`` of its size on every side;
  everything else is ignored, so no negative is mined on a face nobody labelled.
- ``ignore_boxes`` (e.g. faces only a teacher saw): background priors centred inside one are ignored.
- ``face_weight`` (per face, default 1): the weight of that face's positive priors in the box and class
  losses (``pos_weight``), e.g. a teacher's confidence in a face no label covers.
- ``face_weight_floor`` (off at 0): a face with fewer positive priors than this has each of them weighted
  ``face_weight_floor / count``, so that its positives together weigh as much as that many. A face under
  ~12 pixels trains on one prior and a 32-pixel face on ten, so by default the losses give a tiny face a tenth
  of a large one's say; unlike ``min_positives`` this adds no prior at a poor IoU, it only weighs the good one.

Labels: 1 face, 0 background, -1 ignore.
"""
from __future__ import annotations

import numpy as np
import torch

from .box_coding import encode_boxes, encode_landmarks
from .config import PriorConfig
from .errors import BlazefaceError
from .geometry import box_area, box_columns, box_iou, intersection, iou_from_intersection, paired_iou
from .priors import feature_map_sizes


def priors_to_corners(priors: torch.Tensor) -> torch.Tensor:
    """(P, 4) ``cx cy w h`` -> (P, 4) ``x1 y1 x2 y2``."""
    return torch.cat([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], 1)


__all__ = ["COMPENSATION_IOU", "FORCED_MIN_IOU", "POS_IOU", "PriorMatcher", "box_iou", "match", "prior_pairs", "priors_to_corners"]

def prior_pairs(boxes: torch.Tensor, priors: PriorConfig, height: int, width: int, corners: torch.Tensor,
                min_iou: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every (box, prior) pair whose IoU is at least ``min_iou`` (> 0), found without the dense ``(K, P)`` IoU
    matrix: for each level and anchor size, only the boxes whose area is within a factor ``min_iou`` of the
    anchor's (an IoU is at most the smaller area over the larger), and for each of them only the cells of the
    window its box overlaps. Hundreds of a teacher's candidate faces against thousands of priors then cost a few
    thousand IoUs.

    ``boxes`` (K, 4) ``x1 y1 x2 y2`` normalised; ``corners`` the priors of ``prior_boxes(priors, height, width)``
    as corners (:func:`priors_to_corners`), whose IoUs (:func:`~blazeface.geometry.paired_iou`) are exactly the
    dense matrix's. -> ``(box index, prior index, IoU)`` (M,) each, grouped by level and anchor size, each group
    by box, then row, then column."""
    device = boxes.device
    # The windows are index bookkeeping on a few dozen numbers per anchor size: numpy does it in a fraction of
    # torch's per-operation overhead (this runs once per training crop in the data workers). The IoUs that
    # decide are torch's, in one call over every pair.
    scale = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=device)
    x1, y1, x2, y2 = (boxes * scale).cpu().numpy().T
    area = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    found_box, found_prior = [], []
    offset = 0
    for (rows, cols), step, sizes in zip(feature_map_sizes(priors, height, width), priors.steps, priors.min_sizes):
        for anchor, size in enumerate(sizes):
            near = size * size
            k = np.flatnonzero(np.minimum(area, near) >= (min_iou - 1e-6) * np.maximum(area, near))
            if k.size == 0:
                continue
            # Cell j's prior spans (j + 0.5) * step +- size / 2: it overlaps [x1, x2] for j in this range (one
            # cell of margin each side; the exact IoU decides).
            first_col = np.clip(np.floor((x1[k] - size / 2) / step - 1.5), 0, cols - 1).astype(np.int64)
            last_col = np.clip(np.ceil((x2[k] + size / 2) / step + 0.5), 0, cols - 1).astype(np.int64)
            first_row = np.clip(np.floor((y1[k] - size / 2) / step - 1.5), 0, rows - 1).astype(np.int64)
            last_row = np.clip(np.ceil((y2[k] + size / 2) / step + 0.5), 0, rows - 1).astype(np.int64)
            col = first_col[:, None, None] + np.arange(int((last_col - first_col).max()) + 1)[None, None, :]
            row = first_row[:, None, None] + np.arange(int((last_row - first_row).max()) + 1)[None, :, None]
            inside = (col <= last_col[:, None, None]) & (row <= last_row[:, None, None])  # (K', R, C)
            found_box.append(np.broadcast_to(k[:, None, None], inside.shape)[inside])
            found_prior.append((offset + (row * cols + col) * len(sizes) + anchor)[inside])
        offset += rows * cols * len(sizes)
    if not found_box:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty, torch.zeros(0, dtype=boxes.dtype, device=device)
    which = torch.from_numpy(np.concatenate(found_box)).to(device)
    index = torch.from_numpy(np.concatenate(found_prior)).to(device)
    iou = paired_iou(boxes[which], corners[index])
    keep = iou >= min_iou
    return which[keep], index[keep], iou[keep]


# The matching rule's thresholds (the module docstring); training.teachers.PriorMapping applies the same rule.
POS_IOU = 0.35
FORCED_MIN_IOU = 0.2
COMPENSATION_IOU = 0.1  # S3FD's second stage: how far below FORCED_MIN_IOU a face with too few priors reaches


def compensated(iou: torch.Tensor, taken: torch.Tensor, need: torch.Tensor, min_iou: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """S3FD's scale compensation: face ``i`` (a row of the ``(N, P)`` ``iou``) takes its ``need[i]`` best priors
    that are not ``taken`` and have IoU >= ``min_iou``; a prior two faces take goes to the higher IoU (the lower
    face index among equals). -> ``(prior mask (P,), face index per prior (P,))``."""
    k = int(min(int(need.max()), iou.shape[1]))
    free = iou.masked_fill(taken[None, :] | (iou < min_iou), -1.0)
    values, priors = free.topk(k, dim=1)  # (N, k), best first
    take = (values >= min_iou) & (torch.arange(k)[None, :] < need[:, None])
    faces = torch.arange(iou.shape[0])[:, None].expand_as(priors)
    chosen = torch.full_like(iou, -1.0)
    chosen[faces[take], priors[take]] = values[take]
    best, face = chosen.max(0)
    return best >= 0, face


class PriorMatcher:
    """:func:`match` with the priors' geometry computed once (the Dataset keeps one per training size).

    Options as :func:`match`; call it with one image's faces."""

    def __init__(self, priors: torch.Tensor, *, pos_iou: float = POS_IOU, forced_min_iou: float = FORCED_MIN_IOU,
                 ignore_iou: float | None = None, ignore_unmatched: bool = True, background_margin: float = 0.5,
                 variances: tuple[float, float] = (0.1, 0.2), min_positives: int = 0,
                 compensation_iou: float = COMPENSATION_IOU, face_weight_floor: float = 0.0):
        if face_weight_floor < 0:
            raise BlazefaceError(f"face_weight_floor must be >= 0, got {face_weight_floor:g}")
        self.priors = torch.as_tensor(priors, dtype=torch.float32).contiguous()
        self.corners = box_columns(priors_to_corners(self.priors))  # split once, used for every image
        self.cx, self.cy = (c.contiguous() for c in self.priors[:, :2].unbind(1))
        self.prior_area = box_area(self.corners)
        self.pos_iou, self.forced_min_iou, self.ignore_iou = pos_iou, forced_min_iou, ignore_iou
        self.ignore_unmatched, self.background_margin = ignore_unmatched, background_margin
        self.variances = tuple(variances)
        self.min_positives, self.compensation_iou = int(min_positives), float(compensation_iou)
        self.face_weight_floor = float(face_weight_floor)

    def __call__(self, boxes, landmarks, has_landmarks, landmark_weight=None,
                 ignore_background: bool = False, face_weight=None, ignore_boxes=None) -> dict[str, torch.Tensor]:
        num_priors = self.priors.shape[0]
        boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        n = boxes.shape[0]
        loc_t = torch.zeros(num_priors, 4)
        landm_t = torch.zeros(num_priors, 10)
        landm_weight = torch.zeros(num_priors)
        pos_weight = torch.zeros(num_priors)
        if n == 0:
            labels = torch.full((num_priors,), -1 if ignore_background else 0, dtype=torch.int64)
            self._ignore_regions(labels, ignore_boxes)
            return {"loc_t": loc_t, "labels": labels, "landm_t": landm_t,
                    "landm_mask": torch.zeros(num_priors, dtype=torch.bool), "landm_weight": landm_weight,
                    "pos_weight": pos_weight}
        landmarks = torch.as_tensor(landmarks, dtype=torch.float32).reshape(-1, 10)
        has_landmarks = torch.as_tensor(has_landmarks, dtype=torch.bool).reshape(-1)
        weight = (torch.ones(n) if landmark_weight is None
                  else torch.as_tensor(landmark_weight, dtype=torch.float32).reshape(-1))

        bx1, by1, bx2, by2 = (c[:, None] for c in boxes.unbind(1))
        inter = intersection(boxes, self.corners)  # (N, P)
        face_area = box_area(boxes)[:, None]  # (N, 1)
        iou = iou_from_intersection(inter, face_area, self.prior_area)

        best_face_iou, best_face = iou.max(0)  # per prior
        best_prior_iou, best_prior = iou.max(1)  # per face
        forcible = torch.nonzero(best_prior_iou >= self.forced_min_iou).squeeze(1)
        # Forced priors; where two faces force one prior, the face with the higher IoU on it wins.
        forced_iou = torch.full_like(iou, -1.0)
        forced_iou[forcible, best_prior[forcible]] = best_prior_iou[forcible]
        forced_best, forced_face = forced_iou.max(0)
        forced_any = forced_best >= 0
        assigned = torch.where(forced_any, forced_face, best_face)  # (P,) face index per prior
        positive = forced_any | (best_face_iou >= self.pos_iou)
        if self.min_positives > 0:
            need = (self.min_positives - torch.bincount(assigned[positive], minlength=n)).clamp(min=0)
            if bool(need.any()):
                extra, extra_face = compensated(iou, positive, need, self.compensation_iou)
                assigned = torch.where(extra, extra_face, assigned)
                positive = positive | extra

        labels = positive.long()
        negative = ~positive
        if self.ignore_iou is not None:
            labels.masked_fill_(negative & (best_face_iou >= self.ignore_iou), -1)
        if self.ignore_unmatched:
            matched = torch.zeros(n, dtype=torch.bool)
            matched[assigned[positive]] = True
            if not bool(matched.all()):
                unmatched = ~matched
                covers_half = (inter[unmatched] >= 0.5 * face_area[unmatched]).any(0)
                labels.masked_fill_(negative & covers_half, -1)
        if ignore_background:
            gw, gh = (bx2 - bx1) * self.background_margin, (by2 - by1) * self.background_margin
            near = ((self.cx >= bx1 - gw) & (self.cx < bx2 + gw)
                    & (self.cy >= by1 - gh) & (self.cy < by2 + gh)).any(0)
            labels.masked_fill_(negative & ~near, -1)
        self._ignore_regions(labels, ignore_boxes)

        # Encode only where a target is used: positives are a few dozen of thousands of priors.
        pos_idx = torch.nonzero(positive).squeeze(1)
        faces = assigned[pos_idx]
        pos_priors = self.priors[pos_idx]
        loc_t[pos_idx] = encode_boxes(boxes[faces], pos_priors, self.variances)
        with_points = has_landmarks[faces]
        landm_mask = torch.zeros(num_priors, dtype=torch.bool)
        landm_mask[pos_idx[with_points]] = True
        landm_t[pos_idx[with_points]] = encode_landmarks(landmarks[faces[with_points]], pos_priors[with_points],
                                                         self.variances)
        landm_weight[pos_idx[with_points]] = weight[faces[with_points]]
        pos_weight[pos_idx] = (1.0 if face_weight is None
                               else torch.as_tensor(face_weight, dtype=torch.float32).reshape(-1)[faces])
        if self.face_weight_floor > 0:
            count = torch.bincount(faces, minlength=n).float()
            pos_weight[pos_idx] *= (self.face_weight_floor / count[faces]).clamp(min=1.0)
        return {"loc_t": loc_t, "labels": labels, "landm_t": landm_t, "landm_mask": landm_mask,
                "landm_weight": landm_weight, "pos_weight": pos_weight}

    def _ignore_regions(self, labels: torch.Tensor, ignore_boxes) -> None:
        """Background priors centred inside an ignore region (e.g. a face only a teacher saw) become -1."""
        if ignore_boxes is None or len(ignore_boxes) == 0:
            return
        regions = torch.as_tensor(ignore_boxes, dtype=torch.float32).reshape(-1, 4)
        x1, y1, x2, y2 = (c[:, None] for c in regions.unbind(1))
        inside = ((self.cx >= x1) & (self.cx < x2) & (self.cy >= y1) & (self.cy < y2)).any(0)
        labels.masked_fill_((labels == 0) & inside, -1)


def match(priors: torch.Tensor, boxes: torch.Tensor, landmarks: torch.Tensor, has_landmarks: torch.Tensor,
          landmark_weight: torch.Tensor | None = None, ignore_background: bool = False, *,
          pos_iou: float = POS_IOU, forced_min_iou: float = FORCED_MIN_IOU, ignore_iou: float | None = None,
          ignore_unmatched: bool = True, background_margin: float = 0.5,
          variances: tuple[float, float] = (0.1, 0.2), min_positives: int = 0,
          compensation_iou: float = COMPENSATION_IOU, face_weight_floor: float = 0.0) -> dict[str, torch.Tensor]:
    """Encode one image's faces against the priors (see the module docstring for the rules).

    ``priors`` (P, 4) ``cx cy w h`` and ``boxes`` (N, 4) ``x1 y1 x2 y2`` share one normalised frame;
    ``landmarks`` (N, 10) ``x0 y0 .. x4 y4`` (or (N, 5, 2)); ``has_landmarks`` (N,) bool;
    ``landmark_weight`` (N,) per-face landmark weight (default 1). N may be 0.

    Returns ``loc_t`` (P, 4) float32, ``labels`` (P,) int64 (1 face, 0 background, -1 ignore),
    ``landm_t`` (P, 10) float32, ``landm_mask`` (P,) bool (positive and labelled) and ``landm_weight``
    (P,) float32 (the matched face's landmark weight where ``landm_mask``, else 0), ``pos_weight`` (P,)
    float32 (the matched face's weight where positive, times the face_weight_floor factor; else 0). Targets outside their
    mask are 0. For many images against the same priors, build one :class:`PriorMatcher` instead.
    """
    matcher = PriorMatcher(priors, pos_iou=pos_iou, forced_min_iou=forced_min_iou, ignore_iou=ignore_iou,
                           ignore_unmatched=ignore_unmatched, background_margin=background_margin,
                           variances=variances, min_positives=min_positives, compensation_iou=compensation_iou,
                           face_weight_floor=face_weight_floor)
    return matcher(boxes, landmarks, has_landmarks, landmark_weight, ignore_background)
