"""Letterboxing: how an image is resized (long side, aspect kept) and padded (bottom/right, to the multiple the
network needs) into the network input, and the BGR -> float CHW conversion. Shared by :mod:`blazeface.inference`
and the int8 export's calibration, so both prepare images identically."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from .geometry import round_up


@dataclass(frozen=True)
class Letterbox:
    """How an image was mapped onto the network input: ``input = image * scale`` per axis, then padded."""

    image_size: tuple[int, int]  # (width, height) of the original image
    resized_size: tuple[int, int]  # (width, height) after resizing, before padding
    input_size: tuple[int, int]  # (width, height) of the padded network input

    @property
    def scale(self) -> tuple[float, float]:
        return (self.resized_size[0] / self.image_size[0], self.resized_size[1] / self.image_size[1])


def letterbox_size(width: int, height: int, long_side: int, multiple: int) -> Letterbox:
    """Sizes for resizing (width, height) so the long side is ``long_side`` (0: keep), padded to ``multiple``."""
    if long_side and long_side > 0:
        ratio = long_side / max(width, height)
        rw, rh = max(1, round(width * ratio)), max(1, round(height * ratio))
    else:
        rw, rh = width, height
    return Letterbox((width, height), (rw, rh), (round_up(rw, multiple), round_up(rh, multiple)))


def preprocess(image: np.ndarray, box: Letterbox, mean_bgr: Sequence[float], out: np.ndarray | None = None) -> np.ndarray:
    """BGR uint8 image -> (3, H, W) float32 network input, mean subtracted, zero (= mean colour) padding."""
    if box.resized_size != box.image_size:
        image = cv2.resize(image, box.resized_size, interpolation=cv2.INTER_LINEAR)
    w, h = box.input_size
    if out is None:
        out = np.empty((3, h, w), np.float32)
    rw, rh = box.resized_size
    # One channel at a time straight into the CHW buffer: ~5x faster than a float HWC copy + transpose.
    for c in range(3):
        np.subtract(image[:, :, c], np.float32(mean_bgr[c]), out=out[c, :rh, :rw], dtype=np.float32)
    out[:, rh:, :] = 0
    out[:, :rh, rw:] = 0
    return out
