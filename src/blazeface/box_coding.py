"""SSD-style box and landmark coding against priors (variances 0.1 / 0.2).

Works on numpy arrays and torch tensors alike (only slicing, exp/log and arithmetic), so inference
(numpy) and training (torch) share one definition.
"""
from __future__ import annotations

import numpy as np
import torch


def _ops(x):
    """(exp, log, concatenate-last-axis) for numpy arrays or torch tensors."""
    if isinstance(x, np.ndarray):
        return np.exp, np.log, lambda parts: np.concatenate(parts, -1)
    return torch.exp, torch.log, lambda parts: torch.cat(parts, -1)


def decode_boxes(loc, priors, variances=(0.1, 0.2)):
    """(N, 4) offsets -> (N, 4) corner boxes ``x1 y1 x2 y2`` in the priors' (normalised) units."""
    exp, _, cat = _ops(loc)
    centre = priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:]
    size = priors[:, 2:] * exp(loc[:, 2:] * variances[1])
    return cat([centre - size / 2, centre + size / 2])


def encode_boxes(boxes, priors, variances=(0.1, 0.2)):
    """(N, 4) corner boxes -> offsets; inverse of :func:`decode_boxes`."""
    _, log, cat = _ops(boxes)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = boxes[:, 2:] - boxes[:, :2]
    return cat([(centre - priors[:, :2]) / (variances[0] * priors[:, 2:]),
                log(size / priors[:, 2:]) / variances[1]])


def decode_landmarks(landm, priors, variances=(0.1, 0.2)):
    """(N, 10) offsets -> (N, 10) points ``x0 y0 ... x4 y4``."""
    n = landm.shape[0]
    pts = landm.reshape(n, 5, 2) * (variances[0] * priors[:, None, 2:]) + priors[:, None, :2]
    return pts.reshape(n, 10)


def encode_landmarks(points, priors, variances=(0.1, 0.2)):
    """(N, 10) points -> offsets; inverse of :func:`decode_landmarks`."""
    n = points.shape[0]
    off = (points.reshape(n, 5, 2) - priors[:, None, :2]) / (variances[0] * priors[:, None, 2:])
    return off.reshape(n, 10)
