"""Image and video input with one-line errors that name the file."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .errors import BlazefaceError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as a BGR uint8 array (H, W, 3)."""
    path = Path(path)
    if not path.exists():
        raise BlazefaceError(f"{path}: no such file")
    if path.is_dir():
        raise BlazefaceError(f"{path}: is a folder, not an image")
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        raise BlazefaceError(f"{path}: empty file")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise BlazefaceError(f"{path}: not a readable image (corrupt or unsupported format)")
    return image


def as_bgr(image) -> np.ndarray:
    """Path, BGR numpy array (H, W, 3) / grayscale (H, W), or PIL image -> contiguous BGR uint8 array."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        if image.ndim == 3 and image.shape[2] == 4:
            return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        if image.ndim != 3 or image.shape[2] != 3:
            raise BlazefaceError(f"image array must be (H, W, 3) BGR, got shape {image.shape}")
        if image.dtype != np.uint8:
            image = np.clip(image, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(image)
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image without importing PIL
        rgb = np.asarray(image.convert("RGB"))
        return np.ascontiguousarray(rgb[:, :, ::-1])
    raise BlazefaceError(f"cannot read an image from {type(image).__name__}; pass a path, a BGR array or a PIL image")


def find_files(root: Path, suffixes: set[str]) -> list[Path]:
    """Files under ``root`` (recursive) with one of ``suffixes``, sorted."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
