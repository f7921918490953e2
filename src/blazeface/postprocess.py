"""The one post-processing path every backend (PyTorch, ONNX Runtime, ncnn) feeds:
confidence threshold -> top-k -> decode -> NMS -> keep-top-k.

The browser's JavaScript port (web/) mirrors this file and is tested against it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .box_coding import decode_boxes, decode_landmarks


@dataclass(frozen=True)
class PostprocessConfig:
    conf: float = 0.5  # keep candidates with face score > conf
    nms: float = 0.4  # suppress boxes whose IoU with a better kept box is > nms
    top_k: int = 5000  # best candidates entering NMS
    keep_top_k: int = 750  # detections kept after NMS


@dataclass
class Detections:
    """Detections of one image, sorted by descending score."""

    boxes: np.ndarray  # (K, 4) float32 x1 y1 x2 y2
    scores: np.ndarray  # (K,) float32
    landmarks: np.ndarray  # (K, 5, 2) float32

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))


def nms_pairs(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs (i, j), i != j, of boxes that intersect (pixel convention, +1), each pair once.

    A sweep over boxes sorted by x1: two boxes intersect in x exactly when the later-starting one starts
    inside the other, so each box only meets the boxes whose x1 lies in its own x-range. On real
    detections that is a small fraction of all n^2 pairs, which keeps NMS exact and fast.
    """
    n = len(boxes)
    order = np.argsort(boxes[:, 0], kind="stable")
    x1 = boxes[order, 0]
    # +1 convention: widths are x2 - x1 + 1, so boxes overlap in x while x1_j <= x2_i.
    end = np.searchsorted(x1, boxes[order, 2], side="right")
    start = np.arange(1, n + 1)
    counts = np.maximum(end - start, 0)
    total = int(counts.sum())
    if total == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty
    first = np.repeat(np.arange(n), counts)
    offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    second = np.repeat(start, counts) + offsets
    i, j = order[first], order[second]
    overlap_y = (np.minimum(boxes[i, 3], boxes[j, 3]) - np.maximum(boxes[i, 1], boxes[j, 1])) >= -1
    return i[overlap_y], j[overlap_y]


def pair_iou(boxes: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """IoU of boxes[i] and boxes[j] with the originals' +1 pixel convention."""
    a, b = boxes[i], boxes[j]
    iw = np.maximum(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + 1, 0)
    ih = np.maximum(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + 1, 0)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    return inter / (area_a + area_b - inter)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Exact greedy NMS: indices of kept boxes, by descending score.

    Same result as the classic loop (take the best box, drop every remaining box with IoU > threshold,
    repeat; ties broken by index), computed without a Python loop over boxes: the overlap graph is
    built once (:func:`nms_pairs`), then resolved in rounds. A box none of whose better neighbours is
    still undecided is decided: kept if no better neighbour was kept. Each round settles every such
    box at once; the rounds needed equal the longest chain of suppressions, a handful in practice.
    """
    n = len(boxes)
    if n == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((np.arange(n), -scores))  # descending score, stable
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    boxes = boxes.astype(np.float32, copy=False)
    i, j = nms_pairs(boxes)
    if len(i):
        hit = pair_iou(boxes, i, j) > threshold
        i, j = rank[i[hit]], rank[j[hit]]
    # Orient every edge from the better box (lower rank) to the worse one.
    better, worse = np.minimum(i, j), np.maximum(i, j)
    state = np.zeros(n, np.int8)  # 0 undecided, 1 kept, -1 suppressed (indexed by rank)
    while True:
        undecided_better = state[better] == 0
        blocked = np.zeros(n, bool)
        blocked[worse[undecided_better]] = True
        suppressed = np.zeros(n, bool)
        suppressed[worse[state[better] == 1]] = True
        ready = (state == 0) & ~blocked
        if not ready.any():
            break
        state[ready & suppressed] = -1
        state[ready & ~suppressed] = 1
        # Drop edges that can no longer matter (both ends decided).
        live = (state[better] == 0) | (state[worse] == 0)
        better, worse = better[live], worse[live]
    return order[np.flatnonzero(state == 1)]


def postprocess(loc: np.ndarray, conf: np.ndarray, landm: np.ndarray, priors: np.ndarray,
                input_size: tuple[int, int], config: PostprocessConfig = PostprocessConfig(),
                variances: tuple[float, float] = (0.1, 0.2)) -> Detections:
    """Raw outputs of one image -> detections in network-input pixels.

    ``loc (P, 4)``, ``conf (P, 2)`` softmax (or ``(P,)`` face scores), ``landm (P, 10)``;
    ``priors (P, 4)`` normalised; ``input_size`` = (width, height) of the network input.
    """
    scores = conf[:, 1] if conf.ndim == 2 else conf
    candidates = np.flatnonzero(scores > config.conf)
    if len(candidates) == 0:
        return Detections.empty()
    cand_scores = scores[candidates]
    best = np.argsort(-cand_scores, kind="stable")[: config.top_k]
    candidates, cand_scores = candidates[best], cand_scores[best]
    width, height = input_size
    scale = np.array([width, height, width, height], np.float32)
    p = priors[candidates]
    boxes = decode_boxes(loc[candidates].astype(np.float32), p, variances) * scale
    points = decode_landmarks(landm[candidates].astype(np.float32), p, variances).reshape(-1, 5, 2) * scale[:2]
    keep = nms(boxes, cand_scores, config.nms)[: config.keep_top_k]
    return Detections(boxes[keep].astype(np.float32), cand_scores[keep].astype(np.float32),
                      points[keep].astype(np.float32))
