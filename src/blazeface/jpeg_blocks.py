"""Edit a JPEG without a generation of loss: only the MCUs (16x16 pixels at 4:2:0, 8x8 at 4:4:4) that touch
an edit are re-encoded, with the file's own quantisation tables and chroma subsampling; every other block
keeps its DCT coefficients, and the file keeps about its size. ``jpeglib`` reads and writes the
coefficients; markers (EXIF, ICC) are kept.

Which pixels can change (``edit_region``): the re-encoded MCUs and, where chroma is subsampled, the ring of
MCUs around them (along the subsampled axes only: none at 4:4:4 or grey, left and right at 4:2:2, all eight
neighbours at 4:2:0). A decoder's default chroma "fancy upsampling" (libjpeg-turbo's, so OpenCV's, PIL's,
Chromium's and Firefox's) interpolates each pixel's chroma from the nearest chroma sample and its neighbour,
so the outermost pixel row or column of an untouched MCU reads the edge samples of a re-encoded neighbour and
moves with it. The ring cannot be avoided without a privacy hole: keeping those edge samples would mean
keeping the chroma of every MCU at the edge of a mask (a small face may lie entirely in such MCUs) unblurred.
The ring MCUs keep their coefficients (re-encoding them would only add loss), so only that one pixel row or
column of theirs next to a re-encoded MCU changes; every pixel outside the region decodes bit-identically,
with or without fancy upsampling.
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


def _grid(jpeg, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(per-component sampling factors (v, h), the MCUs that ``mask`` (stored (H, W) bool) touches, the MCU's
    (height, width) in pixels)."""
    factors = np.asarray(jpeg.samp_factor).reshape(-1, 2)  # per component (v, h): jpeglib's order
    mcu_h, mcu_w = 8 * int(factors[:, 0].max()), 8 * int(factors[:, 1].max())
    height, width = mask.shape
    rows, cols = -(-height // mcu_h), -(-width // mcu_w)
    padded = np.zeros((rows * mcu_h, cols * mcu_w), bool)
    padded[:height, :width] = mask
    return factors, padded.reshape(rows, mcu_h, cols, mcu_w).any(axis=(1, 3)), (mcu_h, mcu_w)


def _with_ring(touched: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """``touched`` MCUs and their neighbours along the axes where some component is subsampled (the MCUs
    whose pixels a decoder's chroma upsampling lets a re-encoded MCU reach)."""
    grow_y = int((factors[:, 0] < factors[:, 0].max()).any())
    grow_x = int((factors[:, 1] < factors[:, 1].max()).any())
    padded = np.pad(touched, ((grow_y, grow_y), (grow_x, grow_x)))
    rows, cols = touched.shape
    return np.logical_or.reduce([padded[dy:dy + rows, dx:dx + cols]
                                 for dy in range(2 * grow_y + 1) for dx in range(2 * grow_x + 1)])


def _read_dct(src: Path):
    jpeglib = _require_jpeglib()
    try:
        return jpeglib.read_dct(str(src))
    except Exception as exc:  # jpeglib raises its own types for libjpeg errors
        raise BlazefaceError(f"{src}: cannot read the JPEG's coefficients ({str(exc).splitlines()[0][:120]})") from None


def edit_region(src: str | Path, changed: np.ndarray, orientation: int | None = None) -> np.ndarray:
    """The upright (H, W) bool mask of the pixels that ``write_jpeg_blocks(src, ..., changed, orientation)``
    may change: the MCUs touching ``changed`` (an upright (H, W) bool mask) and, where chroma is subsampled,
    the ring of MCUs around them (see the module's docstring). Every pixel outside it decodes
    bit-identically. ``orientation`` as ``read_jpeg`` returns it (read from the file when None)."""
    if orientation is None:
        orientation = read_jpeg(src)[1]
    mask = _to_stored(changed, orientation)
    factors, touched, (mcu_h, mcu_w) = _grid(_read_dct(Path(src)), mask)
    region = np.kron(_with_ring(touched, factors), np.ones((mcu_h, mcu_w), bool))[:mask.shape[0], :mask.shape[1]]
    return np.ascontiguousarray(_ORIENTATIONS[orientation](region))


def write_jpeg_blocks(src: str | Path, dst: str | Path, upright: np.ndarray, changed: np.ndarray,
                      orientation: int = 0) -> int:
    """Write ``dst``: the JPEG ``src`` with the MCUs that touch ``changed`` (an upright (H, W) bool mask)
    re-encoded, luma and chroma, from ``upright`` (the edited upright BGR image); the pixels that may change
    are ``edit_region(src, changed, orientation)``. -> the number of MCUs re-encoded.
    Raises ``BlazefaceError`` for JPEGs this cannot edit (CMYK, 12-bit)."""
    src, dst = Path(src), Path(dst)
    jpeg = _read_dct(src)
    space = str(jpeg.jpeg_color_space)
    if not (space.endswith("YCbCr") or space.endswith("GRAYSCALE")):
        raise BlazefaceError(f"{src}: a {space} JPEG cannot be edited block by block "
                             f"(--jpeg-quality max re-encodes it whole)")
    image = _to_stored(upright, orientation)
    mask = _to_stored(changed, orientation)
    height, width = image.shape[:2]
    if (height, width) != (jpeg.height, jpeg.width):
        raise BlazefaceError(f"{src}: decoded {width}x{height}, the JPEG says {jpeg.width}x{jpeg.height}")
    factors, touched, (mcu_h, mcu_w) = _grid(jpeg, mask)
    rows, cols = touched.shape
    vmax, hmax = mcu_h // 8, mcu_w // 8
    if not touched.any():
        jpeg.write_dct(str(dst))
        return 0
    # The encoder pads the image by repeating its last row and column: do the same. Colour conversion only
    # over the touched MCUs' bounding rectangle (a face in a 24-megapixel photo need not convert all of it).
    full = np.pad(image, ((0, rows * mcu_h - height), (0, cols * mcu_w - width), (0, 0)), mode="edge")
    mcu_r, mcu_c = np.nonzero(touched)
    r0, c0 = int(mcu_r.min()), int(mcu_c.min())
    planes = _ycbcr(full[r0 * mcu_h:(int(mcu_r.max()) + 1) * mcu_h, c0 * mcu_w:(int(mcu_c.max()) + 1) * mcu_w])
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
        br = (mcu_r[:, None] * v + np.arange(v)[None, :])[:, :, None].repeat(h, axis=2).ravel()
        bc = (mcu_c[:, None] * h + np.arange(h)[None, :])[:, None, :].repeat(v, axis=1).ravel()
        keep = (br < bh) & (bc < bw)
        br, bc = br[keep], bc[keep]
        # `plane` starts at MCU (r0, c0): block (r, q) of the component sits at (r - r0 * v, q - c0 * h) in it.
        pr, pc = br - r0 * v, bc - c0 * h
        blocks = np.stack([plane[8 * r:8 * r + 8, 8 * q:8 * q + 8] for r, q in zip(pr, pc)]) - 128.0
        coefficients[br, bc] = np.clip(np.round(_dct8(blocks) / table), -2047, 2047).astype(coefficients.dtype)
    try:
        jpeg.write_dct(str(dst))
    except Exception as exc:
        raise BlazefaceError(f"{dst}: cannot write ({str(exc).splitlines()[0][:120]})") from None
    return int(touched.sum())
