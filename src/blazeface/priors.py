"""Prior (anchor) boxes, cached per configuration and input size."""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .config import PriorConfig


def feature_map_sizes(priors: PriorConfig, height: int, width: int) -> list[tuple[int, int]]:
    return [(math.ceil(height / s), math.ceil(width / s)) for s in priors.steps]


def num_priors(priors: PriorConfig, height: int, width: int) -> int:
    return sum(h * w * len(m) for (h, w), m in zip(feature_map_sizes(priors, height, width), priors.min_sizes))


@lru_cache(maxsize=64)
def _prior_boxes(priors: PriorConfig, height: int, width: int) -> np.ndarray:
    levels = []
    for (fh, fw), step, sizes in zip(feature_map_sizes(priors, height, width), priors.steps, priors.min_sizes):
        cy, cx = np.meshgrid((np.arange(fh) + 0.5) * step / height, (np.arange(fw) + 0.5) * step / width,
                             indexing="ij")
        k = len(sizes)
        level = np.empty((fh, fw, k, 4), dtype=np.float64)
        level[..., 0] = cx[..., None]
        level[..., 1] = cy[..., None]
        level[..., 2] = np.asarray(sizes, dtype=np.float64) / width
        level[..., 3] = np.asarray(sizes, dtype=np.float64) / height
        levels.append(level.reshape(-1, 4))
    out = np.concatenate(levels).astype(np.float32)
    out.setflags(write=False)  # shared through the cache
    return out


def prior_boxes(priors: PriorConfig, height: int, width: int) -> np.ndarray:
    """(P, 4) float32 priors ``(cx, cy, w, h)`` normalised by the input size: level by level, cell by cell
    (row-major), min-size by min-size. Read-only (cached)."""
    return _prior_boxes(priors, int(height), int(width))


def prior_size_groups(priors: PriorConfig, height: int, width: int) -> np.ndarray:
    """(P,) int64: each prior's size group, numbered over the layout (level 0's sizes first, then level 1's,
    ...; ``len(sum(min_sizes, ()))`` groups), in :func:`prior_boxes`' order."""
    groups, first = [], 0
    for (fh, fw), sizes in zip(feature_map_sizes(priors, height, width), priors.min_sizes):
        groups.append(np.tile(np.arange(first, first + len(sizes)), fh * fw))
        first += len(sizes)
    return np.concatenate(groups).astype(np.int64)
