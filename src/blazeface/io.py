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


COLOR_ORDERS = ("bgr", "rgb")


def as_bgr(image, color: str = "bgr") -> np.ndarray:
    """An image -> contiguous BGR uint8 array (H, W, 3).

    Accepts a path, a PIL image, or a uint8 numpy array: (H, W, 3) in ``color`` channel order ("bgr",
    OpenCV's, or "rgb"), (H, W, 4) with alpha (BGRA / RGBA) or (H, W) grayscale. Anything else (float
    arrays, channels-first (3, H, W), empty arrays, other types) is a one-line error saying what is
    expected: a silent conversion would quietly find fewer or no faces.
    """
    if color not in COLOR_ORDERS:
        raise BlazefaceError(f"color must be 'bgr' or 'rgb', got {color!r}")
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, np.ndarray):
        return _array_to_bgr(image, color)
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image without importing PIL
        rgb = np.asarray(image.convert("RGB"))
        if rgb.size == 0:
            raise BlazefaceError(f"image is empty ({image.size[0]}x{image.size[1]} pixels)")
        return np.ascontiguousarray(rgb[:, :, ::-1])
    raise BlazefaceError(f"cannot read an image from {type(image).__name__}: pass a path, a PIL image or a "
                         "uint8 numpy array (H, W, 3)")


def _array_to_bgr(image: np.ndarray, color: str) -> np.ndarray:
    expected = "expected a uint8 array (H, W, 3) with values 0..255"
    if image.dtype != np.uint8:
        hint = (" (for a float image in 0..1 pass (image * 255).round().astype(np.uint8))"
                if image.dtype.kind == "f" else "")
        raise BlazefaceError(f"image array has dtype {image.dtype}: {expected}{hint}")
    if image.size == 0:
        raise BlazefaceError(f"image array is empty (shape {image.shape}): {expected}")
    if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[2] not in (1, 3, 4):
        raise BlazefaceError(f"image array has shape {image.shape}, which looks channels-first: {expected}, "
                             "e.g. image.transpose(1, 2, 0)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise BlazefaceError(f"image array has shape {image.shape}: {expected} (or (H, W) grayscale, "
                             "(H, W, 4) with alpha)")
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2BGR if color == "rgb" else cv2.COLOR_BGRA2BGR)
    if color == "rgb":
        return np.ascontiguousarray(image[:, :, ::-1])
    return np.ascontiguousarray(image)


def find_files(root: Path, suffixes: set[str]) -> list[Path]:
    """Files under ``root`` (recursive) with one of ``suffixes``, sorted."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
