"""Edit a JPEG without a generation of loss: only the MCUs (16x16 pixels at 4:2:0, 8x8 at 4:4:4) that touch
an edit are re-encoded, with the file's own quantisation tables and chroma subsampling; every other block
keeps its DCT coefficients, so every pixel outside the re-encoded MCUs decodes bit-identically (with a
decoder's chroma "fancy upsampling", a pixel touching a re-encoded MCU may move by a level or two: that
filter mixes in the neighbouring chroma sample) and the file keeps about its size. ``jpeglib`` reads and
writes the coefficients; markers (EXIF, ICC) are kept.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .errors import BlazefaceError

# Each EXIF orientation as the transform stored -> upright, for arrays indexed [y, x, ...].
_ORIENTATIONS = (
    lambda a: a,
    lambda a: a[:, ::-1],
    lambda a: a[::-1, ::-1],
    lambda a: a[::-1],
    lambda a: a.swapaxes(0, 1),
    lambda a: a.swapaxes(0, 1)[:, ::-1],
    lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    lambda a: a.swapaxes(0, 1)[::-1],
)


def _require_jpeglib():
    try:
        import jpeglib
    except ImportError:
        raise BlazefaceError("editing JPEGs block by block needs jpeglib: pip install jpeglib") from None
    return jpeglib


def read_jpeg(path: str | Path) -> tuple[np.ndarray, int]:
    """(the upright BGR image, which of the 8 orientations maps the stored pixels onto it)."""
    from .io import decode_image

    upright = decode_image(path, cv2.IMREAD_COLOR)
    stored = decode_image(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    for k, turn in enumerate(_ORIENTATIONS):
        view = turn(stored)
        if view.shape == upright.shape and np.array_equal(view, upright):
            return upright, k
    raise BlazefaceError(f"{path}: cannot match the stored pixels to the upright image")


def _to_stored(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The inverse of ``_ORIENTATIONS[orientation]``."""
    for turn in _ORIENTATIONS:  # the inverse is the one whose composition is the identity
        probe = np.arange(12).reshape(3, 4)
        if np.array_equal(_ORIENTATIONS[orientation](turn(probe)), probe):
            return np.ascontiguousarray(turn(upright))
    raise AssertionError("unreachable: the orientations form a group")


def _ycbcr(bgr: np.ndarray) -> np.ndarray:
    """BGR uint8 -> JFIF Y, Cb, Cr planes as float64 (H, W, 3)."""
    b, g, r = (bgr[..., k].astype(np.float64) for k in range(3))
    return np.stack([0.299 * r + 0.587 * g + 0.114 * b,
                     -0.168736 * r - 0.331264 * g + 0.5 * b + 128,
                     0.5 * r - 0.418688 * g - 0.081312 * b + 128], axis=-1)


def _dct8(blocks: np.ndarray) -> np.ndarray:
    """Orthonormal 2-D DCT-II of (..., 8, 8) blocks: JPEG's forward DCT."""
    from scipy.fft import dctn

    return dctn(blocks, axes=(-2, -1), norm="ortho")


def write_jpeg_blocks(src: str | Path, dst: str | Path, upright: np.ndarray, changed: np.ndarray,
                      orientation: int = 0) -> int:
    """Write ``dst``: the JPEG ``src`` with the MCUs that touch ``changed`` (an upright (H, W) bool mask)
    re-encoded from ``upright`` (the edited upright BGR image). -> the number of MCUs re-encoded.
    Raises ``BlazefaceError`` for JPEGs this cannot edit (CMYK, 12-bit)."""
    jpeglib = _require_jpeglib()
    src, dst = Path(src), Path(dst)
    try:
        jpeg = jpeglib.read_dct(str(src))
    except Exception as exc:  # jpeglib raises its own types for libjpeg errors
        raise BlazefaceError(f"{src}: cannot read the JPEG's coefficients ({str(exc).splitlines()[0][:120]})") from None
    space = str(jpeg.jpeg_color_space)
    if not (space.endswith("YCbCr") or space.endswith("GRAYSCALE")):
        raise BlazefaceError(f"{src}: a {space} JPEG cannot be edited block by block "
                             f"(--jpeg-quality max re-encodes it whole)")
    image = _to_stored(upright, orientation)
    mask = _to_stored(changed, orientation)
    height, width = image.shape[:2]
    if (height, width) != (jpeg.height, jpeg.width):
        raise BlazefaceError(f"{src}: decoded {width}x{height}, the JPEG says {jpeg.width}x{jpeg.height}")
    factors = np.asarray(jpeg.samp_factor).reshape(-1, 2)  # per component (v, h): jpeglib's order
    vmax, hmax = int(factors[:, 0].max()), int(factors[:, 1].max())
    mcu_w, mcu_h = 8 * hmax, 8 * vmax
    rows, cols = -(-height // mcu_h), -(-width // mcu_w)
    padded = np.zeros((rows * mcu_h, cols * mcu_w), bool)
    padded[:height, :width] = mask
    touched = padded.reshape(rows, mcu_h, cols, mcu_w).any(axis=(1, 3))
    if not touched.any():
        jpeg.write_dct(str(dst))
        return 0
    # The encoder pads the image by repeating its last row and column: do the same.
    full = np.pad(image, ((0, rows * mcu_h - height), (0, cols * mcu_w - width), (0, 0)), mode="edge")
    planes = _ycbcr(full)
    components = [jpeg.Y] + ([jpeg.Cb, jpeg.Cr] if jpeg.Cb is not None else [])
    tables = np.asarray(jpeg.qt, np.float64)
    for c, coefficients in enumerate(components):
        v, h = int(factors[c, 0]), int(factors[c, 1])
        sx, sy = hmax // h, vmax // v
        plane = planes[..., 0 if len(components) == 1 else c]
        plane = plane.reshape(plane.shape[0] // sy, sy, plane.shape[1] // sx, sx).mean(axis=(1, 3))
        table = tables[int(np.asarray(jpeg.quant_tbl_no)[c])]
        bh, bw = coefficients.shape[:2]
        # Component blocks of each touched MCU (v rows x h columns of them), inside the stored arrays.
        mcu_r, mcu_c = np.nonzero(touched)
        br = (mcu_r[:, None] * v + np.arange(v)[None, :])[:, :, None].repeat(h, axis=2).ravel()
        bc = (mcu_c[:, None] * h + np.arange(h)[None, :])[:, None, :].repeat(v, axis=1).ravel()
        keep = (br < bh) & (bc < bw)
        br, bc = br[keep], bc[keep]
        blocks = np.stack([plane[8 * r:8 * r + 8, 8 * q:8 * q + 8] for r, q in zip(br, bc)]) - 128.0
        coefficients[br, bc] = np.clip(np.round(_dct8(blocks) / table), -2047, 2047).astype(coefficients.dtype)
    try:
        jpeg.write_dct(str(dst))
    except Exception as exc:
        raise BlazefaceError(f"{dst}: cannot write ({str(exc).splitlines()[0][:120]})") from None
    return int(touched.sum())
