"""Aligned face crops for recognition models (what insightface's ``norm_crop`` does).

Each face's five landmarks are mapped onto the standard ArcFace 112x112 five-point template by the
similarity transform (rotation, uniform scale, translation) that fits them best in the least-squares
sense; other crop sizes use the template scaled by ``size / 112``.

>>> crop = align_face(image, face)                                  # (112, 112, 3) BGR
>>> crop, matrix = align_face(image, face, size=224, return_transform=True)
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from .errors import BlazefaceError

# The ArcFace (insightface) template for 112x112 crops: left eye, right eye, nose tip, left and right
# mouth corner, in crop pixels ("left" = smaller x), the same order as the detectors' landmarks.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                             [70.7299, 92.2041]], np.float64)
ARCFACE_SIZE = 112


def template(size: int = ARCFACE_SIZE) -> np.ndarray:
    """The five template points for a ``size`` x ``size`` crop (the 112 template scaled by size/112)."""
    if size <= 0:
        raise BlazefaceError(f"crop size must be positive, got {size}")
    return ARCFACE_TEMPLATE * (size / ARCFACE_SIZE)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The ``(2, 3)`` similarity ``[[a, -b, tx], [b, a, ty]]`` minimising the squared distances from the
    mapped ``src`` points to ``dst`` (``(N, 2)`` each, N >= 2; no reflection)."""
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    if len(src) != len(dst) or len(src) < 2:
        raise BlazefaceError(f"need as many source as target points, at least 2 (got {len(src)} and {len(dst)})")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise BlazefaceError("landmarks hold non-finite values")
    if ((src - src.mean(axis=0)) ** 2).sum() < 1e-12:
        raise BlazefaceError("landmarks are degenerate (all at one point)")
    n = len(src)
    # x' = a x - b y + tx ; y' = b x + a y + ty: linear in (a, b, tx, ty).
    rows = np.zeros((2 * n, 4))
    rows[0::2] = np.column_stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)])
    rows[1::2] = np.column_stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)])
    (a, b, tx, ty), *_ = np.linalg.lstsq(rows, dst.reshape(-1), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a ``(2, 3)`` affine matrix to ``(N, 2)`` points."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    return points @ np.asarray(matrix, np.float64)[:, :2].T + np.asarray(matrix, np.float64)[:, 2]


def face_landmarks(face) -> np.ndarray:
    """``(5, 2)`` landmarks of a ``Face`` (``.landmarks``), a dict with ``"landmarks"`` or an array."""
    if hasattr(face, "landmarks"):
        points = face.landmarks
    elif isinstance(face, dict):
        points = face.get("landmarks")
        if points is None:
            raise BlazefaceError("face record has no landmarks")
    else:
        points = face
    points = np.asarray(points, np.float64)
    if points.size != 10:
        raise BlazefaceError(f"need five (x, y) landmarks, got an array of shape {points.shape}")
    return points.reshape(5, 2)


def alignment_transform(face, size: int = ARCFACE_SIZE) -> np.ndarray:
    """The ``(2, 3)`` matrix mapping image pixels to crop pixels for ``face``."""
    return similarity_transform(face_landmarks(face), template(size))


def align_face(image, face, size: int = ARCFACE_SIZE, *, return_transform: bool = False,
               border_value: Sequence[int] = (0, 0, 0)):
    """The aligned ``size`` x ``size`` BGR crop of ``face`` from ``image`` (path, BGR array or PIL image).

    ``face``: a ``Face``, a dict with ``"landmarks"`` or a ``(5, 2)`` array (left eye, right eye, nose,
    left and right mouth corner). With ``return_transform``: ``(crop, matrix)``, ``matrix`` the ``(2, 3)``
    image-to-crop similarity. Outside the image the crop is ``border_value``.
    """
    from .io import as_bgr

    matrix = alignment_transform(face, size)
    crop = cv2.warpAffine(as_bgr(image), matrix, (int(size), int(size)), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(int(v) for v in border_value))
    return (crop, matrix) if return_transform else crop
