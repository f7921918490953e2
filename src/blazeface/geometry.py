"""Box geometry: areas, intersections and IoU, in the two conventions the project uses, and rounding up to
a multiple. The one home of box IoU in the package.

* Continuous (``x2 - x1`` is the width): prior matching in training, tracking in ``blur``, landmark
  evaluation. Works on numpy arrays and torch tensors alike.
* Pixel, "+1" (``x2 - x1 + 1`` is the width, as if x1 and x2 were both inclusive pixel indices): what the
  original implementations' NMS and the WIDER FACE evaluation code use. Kept exactly (same float operations)
  so that our NMS and AP reproduce theirs bit for bit.

Boxes are ``x1 y1 x2 y2`` rows.
"""
from __future__ import annotations

import numpy as np
import torch


def round_up(value: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``value`` (``multiple`` >= 1)."""
    return -(-int(value) // int(multiple)) * int(multiple)


def box_columns(boxes):
    """Four contiguous (N,) columns x1, y1, x2, y2 (contiguous rows keep (A, B) broadcasts cheap). Every
    function here also takes such a tuple in place of an (N, 4) array: callers that compare many box sets
    against one fixed set (prior matching) split it once."""
    if isinstance(boxes, tuple):
        return boxes
    if isinstance(boxes, torch.Tensor):
        return tuple(c.contiguous() for c in boxes.reshape(-1, 4).unbind(1))
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return tuple(np.ascontiguousarray(boxes[:, k]) for k in range(4))


def box_area(boxes, *, pixel: bool = False):
    """(N,) areas of (N, 4) boxes; ``pixel=True``: the +1 convention."""
    x1, y1, x2, y2 = box_columns(boxes)
    one = 1 if pixel else 0
    return (x2 - x1 + one) * (y2 - y1 + one)


def intersection(a, b):
    """(A, B) intersection areas of (A, 4) and (B, 4) boxes, continuous coordinates."""
    ax1, ay1, ax2, ay2 = (c[:, None] for c in box_columns(a))
    bx1, by1, bx2, by2 = box_columns(b)
    if isinstance(ax1, torch.Tensor):
        iw = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp_(min=0)
        ih = (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp_(min=0)
    else:
        iw = np.clip(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0, None)
        ih = np.clip(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0, None)
    return iw * ih


def iou_from_intersection(inter, area_a, area_b):
    """IoU from an (A, B) intersection and the areas of both sides ((A, 1) or (A,), and (B,)); 0 where
    the union is empty. For callers that need the intersection too (prior matching)."""
    if area_a.ndim == 1:
        area_a = area_a[:, None]
    union = area_a + area_b - inter
    if isinstance(inter, torch.Tensor):
        return torch.nan_to_num_(inter / union, nan=0.0)  # 0 / 0 (two empty boxes) -> 0
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of row ``i`` of ``a`` with row ``i`` of ``b`` (same shape ``(..., 4)``), continuous coordinates, with
    :func:`box_iou`'s float operations in its order: the same value as its ``(i, i)`` entry, bit for bit."""
    ax1, ay1, ax2, ay2 = a.unbind(-1)
    bx1, by1, bx2, by2 = b.unbind(-1)
    iw = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp_(min=0)
    ih = (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp_(min=0)
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return torch.nan_to_num_(inter / union, nan=0.0)


def box_iou(a, b):
    """(A, B) IoU of ``x1 y1 x2 y2`` boxes in continuous coordinates (no +1); 0 where a union is empty.
    numpy in (float64 out) or torch in (torch out)."""
    return iou_from_intersection(intersection(a, b), box_area(a), box_area(b))


def box_iou_pixel(a, b) -> np.ndarray:
    """(A, B) IoU with the +1 pixel convention, in float64, with the WIDER FACE evaluation code's
    operations (its ``bbox_overlaps``): the AP it produces is the reference's to the last digit."""
    ax1, ay1, ax2, ay2 = (c[:, None] for c in box_columns(a))
    bx1, by1, bx2, by2 = box_columns(b)
    area_b = (bx2 - bx1 + 1) * (by2 - by1 + 1)
    area_a = (ax2 - ax1 + 1) * (ay2 - ay1 + 1)
    iw = np.minimum(ax2, bx2) - np.maximum(ax1, bx1) + 1
    ih = np.minimum(ay2, by2) - np.maximum(ay1, by1) + 1
    inter = iw * ih
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (area_a + area_b - inter)
    return np.where((iw > 0) & (ih > 0), iou, 0.0)


def paired_iou_pixel(x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray, areas: np.ndarray,
                     i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """IoU of box pairs (i[k], j[k]) with the +1 pixel convention in float32, given the boxes' columns and
    their +1 ``areas``: the original NMS loop's formula, operand for operand, so NMS keeps the same boxes.

    This is NMS's per-pair hot path (min, max and + are commutative, so which box of a pair comes first
    does not matter): gathers go into three reused buffers rather than a dozen fresh temporaries."""
    iou = np.take(x2, i)
    a = np.take(x2, j)
    b = np.empty_like(a)
    np.minimum(iou, a, out=iou)
    np.maximum(np.take(x1, i, out=a), np.take(x1, j, out=b), out=a)
    iou -= a
    iou += 1
    np.maximum(iou, 0, out=iou)  # intersection width
    np.minimum(np.take(y2, i, out=a), np.take(y2, j, out=b), out=a)
    np.maximum(np.take(y1, i, out=b), np.take(y1, j), out=b)
    a -= b
    a += 1
    np.maximum(a, 0, out=a)  # intersection height
    iou *= a  # intersection
    np.add(np.take(areas, i, out=a), np.take(areas, j, out=b), out=a)
    a -= iou  # union
    iou /= a
    return iou
