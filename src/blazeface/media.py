"""Writing media like their source: images in the input's format (JPEG near-lossless, or with the input's
own quality and chroma subsampling), videos in the input's container, and the input's audio tracks copied
back with the ffmpeg binary that ``imageio-ffmpeg`` ships.
"""
from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np

from .errors import BlazefaceError
from .io import atomic_target

# --------------------------------------------------------------------------------------------------
# Images

# libjpeg's standard luminance quantisation table (natural order), scaled by the quality setting.
_STD_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], np.int64)
# Natural-order index of each zig-zag position (DQT segments store tables in zig-zag order).
_ZIGZAG = np.array([
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7,
    14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46,
    53, 60, 61, 54, 47, 55, 62, 63])
_SAMPLING = {(1, 1): cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444, (2, 1): cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
             (2, 2): cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420, (1, 2): cv2.IMWRITE_JPEG_SAMPLING_FACTOR_440,
             (4, 1): cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411}


def _libjpeg_table(quality: int) -> np.ndarray:
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((_STD_LUMA * scale + 50) // 100, 1, 255)


def jpeg_info(data: bytes) -> dict:
    """What an encoder needs to re-encode a JPEG like its source: ``{"quality", "sampling" (h, v) of the
    luma component, "components", "progressive"}``; ``quality`` is the libjpeg quality whose luminance
    table is nearest the file's (exact for files written by libjpeg and most cameras' software)."""
    info: dict = {"quality": None, "sampling": None, "components": None, "progressive": False}
    pos = 2 if data[:2] == b"\xff\xd8" else len(data)
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        body = data[pos + 4:pos + 2 + length]
        if marker == 0xDB:  # DQT: one or more tables
            k = 0
            while k < len(body):
                precision, table_id = body[k] >> 4, body[k] & 15
                size = 128 if precision else 64
                values = np.frombuffer(body[k + 1:k + 1 + size], ">u2" if precision else np.uint8).astype(np.int64)
                if table_id == 0 and len(values) == 64:
                    natural = np.empty(64, np.int64)
                    natural[_ZIGZAG] = values
                    errors = [np.abs(_libjpeg_table(q) - natural).sum() for q in range(1, 101)]
                    info["quality"] = int(np.argmin(errors)) + 1
                k += 1 + size
        elif marker in (0xC0, 0xC1, 0xC2) and len(body) >= 9:  # SOF: baseline, extended, progressive
            info["components"] = body[5]
            info["sampling"] = (body[7] >> 4, body[7] & 15)
            info["progressive"] = marker == 0xC2
        elif marker == 0xDA:  # start of scan: the header is over
            break
        pos += 2 + length
    return info


def image_write_params(suffix: str, source: str | Path | None = None, jpeg_quality: int | str = "max") -> list[int]:
    """``cv2.imencode`` parameters for ``suffix``. JPEG: ``"max"`` (quality 100 without chroma subsampling:
    every pixel within a few levels of what it was), ``"keep"`` (the quality, chroma subsampling and
    progressive mode of ``source``: about its file size) or a quality 1-100. WebP lossless; PNG, BMP and TIFF
    are lossless as they are."""
    suffix = suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        if jpeg_quality == "max":
            return [cv2.IMWRITE_JPEG_QUALITY, 100,
                    cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
        if jpeg_quality != "keep":
            quality = int(jpeg_quality)
            if not 1 <= quality <= 100:
                raise BlazefaceError(f"JPEG quality must be 1-100, 'max' or 'keep', got {jpeg_quality!r}")
            return [cv2.IMWRITE_JPEG_QUALITY, quality]
        info = _source_jpeg_info(source)
        params = [cv2.IMWRITE_JPEG_QUALITY, info.get("quality") or 95]
        if info.get("sampling") in _SAMPLING:
            params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, _SAMPLING[info["sampling"]]]
        if info.get("progressive"):
            params += [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
        return params
    if suffix == ".webp":
        return [cv2.IMWRITE_WEBP_QUALITY, 101]  # above 100: lossless
    return []


def _source_jpeg_info(source: str | Path | None) -> dict:
    if source is None:
        return {}
    try:
        with open(source, "rb") as f:
            return jpeg_info(f.read(1 << 20))  # the header lies in the first bytes
    except OSError:
        return {}


PNG_GREY_ALPHA = 4  # the IHDR colour type of a grey + alpha PNG


def png_header(path: str | Path) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR chunk, or None for anything that is not a PNG. OpenCV
    decodes grey + alpha (colour type 4) as BGRA; this tells the writer to store it as grey + alpha again."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(26)
    except OSError:
        return None
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def encode_grey_alpha_png(bgra: np.ndarray) -> bytes | None:
    """An 8-bit BGRA image whose colour channels are equal everywhere -> PNG bytes of grey + alpha (Pillow;
    OpenCV writes only 1, 3 or 4 channels), or None when it is not such an image."""
    if bgra.dtype != np.uint8 or bgra.ndim != 3 or bgra.shape[2] != 4:
        return None
    grey = bgra[:, :, 0]
    if not (np.array_equal(grey, bgra[:, :, 1]) and np.array_equal(grey, bgra[:, :, 2])):
        return None
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.dstack([grey, bgra[:, :, 3]]), "LA").save(buffer, format="PNG")
    return buffer.getvalue()


def write_image_like(path: str | Path, image: np.ndarray, source: str | Path | None = None,
                     jpeg_quality: int | str = "max") -> None:
    """Write ``image`` (BGR) to ``path`` in the format its suffix names (see :func:`image_write_params`
    for ``jpeg_quality``). A grey JPEG ``source`` gives a grey JPEG."""
    path = Path(path)
    params = image_write_params(path.suffix, source, jpeg_quality)
    if path.suffix.lower() in (".jpg", ".jpeg") and _source_jpeg_info(source).get("components") == 1:
        image = image[:, :, 0]
    try:
        ok, buffer = cv2.imencode(path.suffix or ".png", image, params)
    except cv2.error:
        ok = False
    if not ok:
        raise BlazefaceError(f"{path}: cannot encode a {path.suffix or 'suffix-less'} image")
    try:
        with atomic_target(path) as partial:
            buffer.tofile(str(partial))
    except OSError as exc:
        raise BlazefaceError(f"{path}: cannot write ({exc.strerror or exc})") from None


# --------------------------------------------------------------------------------------------------
# Videos (the writers live in ``video``; these names stay here for existing callers)

from .video import ffmpeg_exe, mux_audio  # noqa: E402,F401


def has_audio(path: str | Path) -> bool:
    """Whether the media file holds at least one audio stream (ffmpeg's stream listing)."""
    from .video import probe

    return probe(path)["audio"]
