"""Target-aware augmentation in the style of torchvision's detection references.

Every transform is a callable ``t(image, target, rng=None) -> (image, target)``: ``image`` is an
``(H, W, 3)`` uint8 BGR array, ``target`` a dict holding per-face arrays in pixels (``boxes`` (N, 4)
``x1 y1 x2 y2``, ``landmarks`` (N, 5, 2), ``has_landmarks`` (N,), optionally ``landmark_weight`` (N,)) and
the flag ``ignore_background`` (the photo may hold unlabelled faces: no negatives away from labelled ones).
It may also hold a teacher's candidate faces of the photo (``teacher_boxes`` (K, 4), ``teacher_points``
(K, 5, 2), ``teacher_scores`` (K,), computed once on the whole photo): they move with every geometric step as
the labels do, and a crop keeps those whose centre it holds, so they describe the crop as the labels do.
Geometry and pixels change in the same call, so boxes and landmarks cannot drift from their faces.
``rng`` is a ``numpy.random.Generator``; pass one for reproducible augmentation (the training dataset
seeds one per sample), leave it out for fresh randomness.

Coordinates are continuous: pixel column ``i`` covers ``[i, i + 1)``, so a box ``x1 x2`` maps to
``W - x2, W - x1`` under a mirror and scales by exactly ``S / W`` under a resize.

Presets (:func:`build_preset`): ``"retinaface"`` is the originals' recipe (docs/ARCHITECTURE.md, "train");
``"small-faces"`` adds a zoom-out before the crop so large faces also appear small; ``"plain"`` only pads
to a square and resizes (validation).
"""
from __future__ import annotations

from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from ..config import MEAN_BGR
from ..errors import BlazefaceError

# Keys of per-face arrays: every transform that drops faces drops them from all of these together.
PER_FACE_KEYS = ("boxes", "landmarks", "has_landmarks", "landmark_weight")
# A teacher's candidate faces, when the target carries them: another set of boxes and points, never labels.
TEACHER_KEYS = ("teacher_boxes", "teacher_points", "teacher_scores")
# (boxes, points) pairs of the per-face and the teacher set: what geometry moves.
_GEOMETRY = (("boxes", "landmarks"), ("teacher_boxes", "teacher_points"))
# Landmark order after a mirror: the left eye becomes the right eye, likewise the mouth corners.
MIRROR_ORDER = np.array([1, 0, 2, 4, 3])
INTERPOLATIONS = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA, cv2.INTER_NEAREST, cv2.INTER_LANCZOS4)

Transform = Callable[..., tuple]


def _generator(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng()


def make_target(boxes, landmarks=None, has_landmarks=None, landmark_weight=None,
                ignore_background: bool = False) -> dict:
    """A target dict with the right dtypes and shapes (landmarks default to "none"). The arrays are copies,
    so no transform can ever write into a cached ``Sample``."""
    boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    n = boxes.shape[0]
    landmarks = (np.full((n, 5, 2), -1, np.float32) if landmarks is None
                 else np.array(landmarks, dtype=np.float32).reshape(n, 5, 2))
    has_landmarks = (np.zeros(n, bool) if has_landmarks is None
                     else np.array(has_landmarks, dtype=bool).reshape(n))
    weight = (np.ones(n, np.float32) if landmark_weight is None
              else np.array(landmark_weight, dtype=np.float32).reshape(n))
    return {"boxes": boxes, "landmarks": landmarks, "has_landmarks": has_landmarks, "landmark_weight": weight,
            "ignore_background": bool(ignore_background)}


def select_faces(target: dict, keep: np.ndarray) -> dict:
    """A copy of ``target`` holding only the faces where ``keep`` (bool mask or indices)."""
    out = dict(target)
    for key in PER_FACE_KEYS:
        if key in out:
            out[key] = out[key][keep]
    return out


def select_teacher_candidates(target: dict, keep: np.ndarray) -> dict:
    """A copy of ``target`` holding only the teacher candidates where ``keep`` (a target without any: itself)."""
    if "teacher_boxes" not in target:
        return target
    out = dict(target)
    for key in TEACHER_KEYS:
        out[key] = out[key][keep]
    return out


def shift_and_scale(target: dict, dx: float = 0.0, dy: float = 0.0, sx: float = 1.0, sy: float = 1.0) -> dict:
    """Map every coordinate ``x -> (x + dx) * sx``, ``y -> (y + dy) * sy`` (new arrays, float32)."""
    out = dict(target)
    offset = np.array([dx, dy], np.float32)
    scale = np.array([sx, sy], np.float32)
    for boxes, points in _GEOMETRY:
        if boxes in target:
            out[boxes] = ((target[boxes].reshape(-1, 2, 2) + offset) * scale).reshape(-1, 4)
            out[points] = (target[points] + offset) * scale
    return out


def mosaic(tiles: Sequence[tuple[np.ndarray, dict]], fill: Sequence[float] = MEAN_BGR) -> tuple[np.ndarray, dict]:
    """Four photos side by side on one canvas, a 2x2 grid (YOLOv4's mosaic without its cut): photo ``i`` sits in
    cell ``i`` (row-major), pushed against the canvas centre, the rest mean-filled. Nothing is cut, so every face
    and teacher candidate keeps its box, shifted with its photo; the crop that follows decides what stays.

    Before a crop of 0.3-1.0 of the short side, a mosaic shows its faces at about half the scale a single photo
    would: a zoom-out whose canvas holds other photos' faces and background instead of a flat colour. The photos
    must be exhaustively labelled (a photo with unlabelled faces would make the others' background ignored)."""
    if len(tiles) != 4:
        raise ValueError(f"a mosaic takes 4 photos, got {len(tiles)}")
    (h0, w0), (h1, w1), (h2, w2), (h3, w3) = (image.shape[:2] for image, _ in tiles)
    left, right, top, bottom = max(w0, w2), max(w1, w3), max(h0, h1), max(h2, h3)
    canvas = np.full((top + bottom, left + right, 3), np.round(fill), np.uint8)
    corners = ((left - w0, top - h0), (left, top - h1), (left - w2, top), (left, top))
    moved = []
    for (image, target), (x, y) in zip(tiles, corners):
        h, w = image.shape[:2]
        canvas[y:y + h, x:x + w] = image
        moved.append(shift_and_scale(target, dx=x, dy=y))
    if any(t.keys() != moved[0].keys() for t in moved):
        raise ValueError("the mosaic's photos carry different target entries")
    out = {key: np.concatenate([t[key] for t in moved]) for key in PER_FACE_KEYS + TEACHER_KEYS if key in moved[0]}
    out["ignore_background"] = any(t["ignore_background"] for t in moved)
    return canvas, out


class Compose:
    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, image, target, rng=None):
        rng = _generator(rng)
        for t in self.transforms:
            image, target = t(image, target, rng)
        return image, target

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


class RandomZoomOut:
    """With probability ``p``, place the image at a random spot of a canvas ``r`` times larger
    (``r ~ U(1, max_ratio)``) filled with the mean colour: every face shrinks by ``r`` relative to the
    frame, which gives a small training set the small faces it lacks."""

    def __init__(self, p: float = 0.3, max_ratio: float = 2.5, fill: Sequence[float] = MEAN_BGR):
        if max_ratio < 1:
            raise ValueError("max_ratio must be >= 1")
        self.p, self.max_ratio, self.fill = p, max_ratio, tuple(float(f) for f in fill)

    def __call__(self, image, target, rng=None):
        rng = _generator(rng)
        if self.p <= 0 or rng.random() >= self.p:
            return image, target
        h, w = image.shape[:2]
        ratio = rng.uniform(1.0, self.max_ratio)
        canvas_w, canvas_h = int(w * ratio), int(h * ratio)
        left = int(rng.integers(0, canvas_w - w + 1))
        top = int(rng.integers(0, canvas_h - h + 1))
        # One C call allocates and fills the canvas around the image.
        image = cv2.copyMakeBorder(image, top, canvas_h - h - top, left, canvas_w - w - left,
                                   cv2.BORDER_CONSTANT, value=self.fill)
        return image, shift_and_scale(target, left, top)

    def __repr__(self) -> str:
        return f"RandomZoomOut(p={self.p}, max_ratio={self.max_ratio})"


class RandomRotate:
    """With probability ``p``, turn the photo by an angle drawn from ``U(-max_degrees, max_degrees)`` about its
    centre, onto a canvas just large enough to hold all of it (the corners mean-filled), so that no face is cut.

    WIDER's "atypical pose" faces (heads tilted, lying, upside down, profiles) are the easy faces the students
    miss most, and the originals' recipe never turns a photo (what a turn changed: docs/MODELS.md, session 29).
    Landmarks turn exactly. A box is taken as the face's inscribed ellipse, whose turned extent is the new box:
    the annotators' box of a tilted head, where the turned box's corners would overstate it by up to 41 %."""

    def __init__(self, p: float = 0.0, max_degrees: float = 30.0, fill: Sequence[float] = MEAN_BGR):
        if not 0 <= max_degrees <= 180:
            raise ValueError(f"max_degrees must lie in [0, 180], got {max_degrees:g}")
        self.p, self.max_degrees, self.fill = p, float(max_degrees), tuple(float(f) for f in fill)

    def __call__(self, image, target, rng=None):
        rng = _generator(rng)
        if self.p <= 0 or rng.random() >= self.p:
            return image, target
        return rotate(image, target, rng.uniform(-self.max_degrees, self.max_degrees), self.fill)

    def __repr__(self) -> str:
        return f"RandomRotate(p={self.p}, max_degrees={self.max_degrees})"


def rotate(image: np.ndarray, target: dict, degrees: float, fill: Sequence[float] = MEAN_BGR
           ) -> tuple[np.ndarray, dict]:
    """The deterministic turn behind :class:`RandomRotate`: counter-clockwise on screen by ``degrees``."""
    h, w = image.shape[:2]
    theta = np.deg2rad(degrees)
    cos, sin = np.cos(theta), np.sin(theta)
    # Image rows grow downwards, so a counter-clockwise turn on screen is x' = c x + s y, y' = -s x + c y.
    turn = np.array([[cos, sin], [-sin, cos]])
    new_w = int(np.ceil(abs(w * cos) + abs(h * sin) - 1e-6))
    new_h = int(np.ceil(abs(w * sin) + abs(h * cos) - 1e-6))
    centre, new_centre = np.array([w / 2, h / 2]), np.array([new_w / 2, new_h / 2])
    # Continuous coordinates (pixel i covers [i, i + 1)) to OpenCV's pixel-centre ones: shift by half a pixel.
    matrix = np.hstack([turn, (turn @ (0.5 - centre) + new_centre - 0.5)[:, None]])
    image = cv2.warpAffine(image, matrix, (new_w, new_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=tuple(fill))
    def move(xy: np.ndarray) -> np.ndarray:  # (..., 2) points, turned about the old centre onto the new one
        return (xy.astype(np.float64) - centre) @ turn.T + new_centre

    out = dict(target)
    for boxes_key, points_key in _GEOMETRY:
        if boxes_key not in target:
            continue
        boxes = target[boxes_key]
        mid = move((boxes[:, :2] + boxes[:, 2:]) / 2)
        extent = np.sqrt(((boxes[:, 2:] - boxes[:, :2]) / 2) ** 2 @ turn.T ** 2)  # the ellipse's half-extents
        out[boxes_key] = np.concatenate([mid - extent, mid + extent], 1).astype(np.float32)
        out[points_key] = move(target[points_key]).astype(np.float32)
    return image, out


class PadToSquare:
    """Pad bottom and right with the mean colour to a square (coordinates unchanged)."""

    def __init__(self, fill: Sequence[float] = MEAN_BGR):
        self.fill = tuple(float(f) for f in fill)

    def __call__(self, image, target, rng=None):
        h, w = image.shape[:2]
        side = max(h, w)
        if h == w:
            return image, target
        image = cv2.copyMakeBorder(image, 0, side - h, 0, side - w, cv2.BORDER_CONSTANT, value=self.fill)
        return image, target

    def __repr__(self) -> str:
        return "PadToSquare()"


class RandomSquareCrop:
    """Random square crop of side ``U(scale) * short side``, as the originals: keep the faces whose
    centre lies inside (boxes clipped to the crop, landmarks shifted but never clipped: a point of a cut
    face may lie outside), accepting a crop only when at least one face lies fully inside. When
    ``target["ignore_background"]`` is set (unlabelled faces may be around) EVERY labelled face must lie
    fully inside, so no labelled face is ever cut. ``max_tries`` candidates are drawn at once and checked
    vectorised; when none is acceptable the whole image is padded to a square instead."""

    def __init__(self, scale: tuple[float, float] = (0.3, 1.0), max_tries: int = 50,
                 fill: Sequence[float] = MEAN_BGR):
        self.scale, self.max_tries = scale, max_tries
        self.fallback = PadToSquare(fill)

    def __call__(self, image, target, rng=None):
        rng = _generator(rng)
        h, w = image.shape[:2]
        short = min(h, w)
        sides = np.maximum((rng.uniform(*self.scale, self.max_tries) * short).astype(np.int64), 1)
        lefts = (rng.random(self.max_tries) * (w - sides + 1)).astype(np.int64)
        tops = (rng.random(self.max_tries) * (h - sides + 1)).astype(np.int64)
        rois = np.stack([lefts, tops, lefts + sides, tops + sides], 1).astype(np.float32)  # (T, 4)
        boxes = target["boxes"]
        if boxes.shape[0] == 0:
            accepted = 0
        else:
            b = boxes[None]
            r = rois[:, None]
            inside = ((b[..., 0] >= r[..., 0]) & (b[..., 1] >= r[..., 1])
                      & (b[..., 2] <= r[..., 2]) & (b[..., 3] <= r[..., 3]))  # (T, N) fully inside
            ok = inside.all(1) if target.get("ignore_background") else inside.any(1)
            hits = np.flatnonzero(ok)
            if hits.size == 0:
                return self.fallback(image, target, rng)
            accepted = int(hits[0])
        x1, y1, x2, y2 = (int(v) for v in rois[accepted])

        def centred_inside(found: np.ndarray) -> np.ndarray:
            centres = (found[:, :2] + found[:, 2:]) / 2
            return (centres[:, 0] >= x1) & (centres[:, 0] < x2) & (centres[:, 1] >= y1) & (centres[:, 1] < y2)

        target = select_faces(target, centred_inside(boxes))
        if "teacher_boxes" in target:
            target = select_teacher_candidates(target, centred_inside(target["teacher_boxes"]))
        target = shift_and_scale(target, -x1, -y1)
        side = x2 - x1
        for key in ("boxes", "teacher_boxes"):
            if key in target:
                np.clip(target[key], 0, side, out=target[key])
        return image[y1:y2, x1:x2], target

    def __repr__(self) -> str:
        return f"RandomSquareCrop(scale={self.scale}, max_tries={self.max_tries})"


class RandomMirror:
    """Horizontal flip with probability ``p``; landmarks swap left/right eye and mouth corner."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image, target, rng=None):
        rng = _generator(rng)
        if rng.random() >= self.p:
            return image, target
        return mirror(image, target)

    def __repr__(self) -> str:
        return f"RandomMirror(p={self.p})"


def mirror(image: np.ndarray, target: dict) -> tuple[np.ndarray, dict]:
    """The deterministic flip behind :class:`RandomMirror` (its own inverse)."""
    w = image.shape[1]
    out = dict(target)
    for boxes_key, points_key in _GEOMETRY:
        if boxes_key not in target:
            continue
        boxes = target[boxes_key]
        out[boxes_key] = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1).astype(np.float32)
        points = target[points_key][:, MIRROR_ORDER].copy()
        points[..., 0] = w - points[..., 0]
        out[points_key] = points
    return cv2.flip(image, 1), out


class RandomResize:
    """Resize to ``size x size`` with an interpolation drawn from ``interpolations`` (a square input
    keeps its aspect ratio; any other is stretched, boxes and landmarks with it)."""

    def __init__(self, size: int, interpolations: Sequence[int] = INTERPOLATIONS):
        self.size, self.interpolations = int(size), tuple(interpolations)

    def __call__(self, image, target, rng=None):
        rng = _generator(rng)
        h, w = image.shape[:2]
        interpolation = self.interpolations[int(rng.integers(len(self.interpolations)))]
        image = cv2.resize(image, (self.size, self.size), interpolation=interpolation)
        return image, shift_and_scale(target, sx=self.size / w, sy=self.size / h)

    def __repr__(self) -> str:
        return f"RandomResize({self.size})"


class PhotometricDistort:
    """The originals' distortion, each part with probability ``p``: brightness ``+-brightness``,
    contrast ``U(contrast)`` (before or after the HSV part, at random), saturation ``U(saturation)``,
    hue ``+-hue`` in OpenCV units (0..180). Per-pixel maps are folded into 256-entry lookup tables, so
    the whole distortion costs at most two ``cv2.LUT`` calls and one HSV round trip."""

    def __init__(self, p: float = 0.5, brightness: float = 32, contrast=(0.5, 1.5), saturation=(0.5, 1.5),
                 hue: int = 18):
        self.p, self.brightness, self.contrast, self.saturation, self.hue = p, brightness, contrast, saturation, hue

    def __call__(self, image, target, rng=None):
        rng = _generator(rng)
        values = np.arange(256, dtype=np.float32)
        lut = values
        if rng.random() < self.p:
            lut = np.clip(lut + rng.uniform(-self.brightness, self.brightness), 0, 255)
        alpha = rng.uniform(*self.contrast) if rng.random() < self.p else None
        contrast_first = rng.random() < 0.5
        if alpha is not None and contrast_first:
            lut = np.clip(lut * alpha, 0, 255)
        if lut is not values:
            image = cv2.LUT(image, np.rint(lut).astype(np.uint8))
        saturation = rng.uniform(*self.saturation) if rng.random() < self.p else None
        hue = int(rng.integers(-self.hue, self.hue + 1)) if rng.random() < self.p else None
        if saturation is not None or hue is not None:
            table = np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], 3, axis=2)  # (256, 1, 3)
            if hue is not None:
                table[:180, 0, 0] = (np.arange(180) + hue) % 180
            if saturation is not None:
                table[:, 0, 1] = np.rint(np.clip(values * saturation, 0, 255)).astype(np.uint8)
            hsv = cv2.LUT(cv2.cvtColor(image, cv2.COLOR_BGR2HSV), table)
            image = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        if alpha is not None and not contrast_first:
            image = cv2.LUT(image, np.rint(np.clip(values * alpha, 0, 255)).astype(np.uint8))
        return image, target

    def __repr__(self) -> str:
        return f"PhotometricDistort(p={self.p})"


class ToTensor:
    """Final step: ``(3, H, W)`` float32 tensor with the mean subtracted; boxes ``(N, 4)`` and landmarks
    ``(N, 5, 2)`` divided by the image width/height (so ``[0, 1]`` inside the image) as float32 tensors,
    ``has_landmarks``/``landmark_weight`` as tensors (teacher candidates likewise); ``ignore_background`` stays a
    bool."""

    def __init__(self, mean: Sequence[float] = MEAN_BGR):
        self.mean = np.asarray(mean, np.float32)

    def __call__(self, image, target, rng=None):
        h, w = image.shape[:2]
        chw = np.empty((3, h, w), np.float32)
        for c, plane in enumerate(cv2.split(image)):  # planar copies: 4x faster than a strided transpose
            np.subtract(plane, self.mean[c], out=chw[c], dtype=np.float32)
        target = shift_and_scale(target, sx=1.0 / w, sy=1.0 / h)
        out = {k: (torch.from_numpy(np.ascontiguousarray(target[k])) if k in PER_FACE_KEYS + TEACHER_KEYS else v)
               for k, v in target.items()}
        return torch.from_numpy(chw), out

    def __repr__(self) -> str:
        return "ToTensor()"


PRESETS = ("small-faces", "retinaface", "plain")


def build_preset(name: str, size: int, mean: Sequence[float] = MEAN_BGR, zoom_out_p: float = 0.3,
                 max_zoom_out: float = 2.5, crop_scale: tuple[float, float] = (0.3, 1.0), rotate_p: float = 0.0,
                 max_rotation: float = 30.0) -> Compose:
    """The named augmentation policy ending in :class:`ToTensor` at ``size x size``.

    - ``"retinaface"``: square crop -> mirror -> resize (random interpolation) -> photometric distortion.
      The distortion runs after the resize so its cost is fixed at ``size**2`` pixels (it then also tints
      the mean-filled padding, which the model gains nothing from telling apart anyway).
    - ``"small-faces"`` (default for training): the same preceded by :class:`RandomZoomOut`
      (probability ``zoom_out_p``, canvas up to ``max_zoom_out`` times larger).
    - Either training preset turns the photo first (:class:`RandomRotate`) with probability ``rotate_p``
      (default 0: never), by up to ``max_rotation`` degrees either way.
    - ``"plain"``: pad to square -> resize (bilinear); no randomness.
    """
    if name == "plain":
        return Compose([PadToSquare(mean), RandomResize(size, (cv2.INTER_LINEAR,)), ToTensor(mean)])
    if name not in PRESETS:
        raise BlazefaceError(f"unknown augmentation preset {name!r}; choose one of: {', '.join(PRESETS)}")
    steps: list[Transform] = []
    if rotate_p > 0:
        steps.append(RandomRotate(rotate_p, max_rotation, mean))
    if name == "small-faces" and zoom_out_p > 0:
        steps.append(RandomZoomOut(zoom_out_p, max_zoom_out, mean))
    steps += [RandomSquareCrop(crop_scale, fill=mean), RandomMirror(), RandomResize(size), PhotometricDistort(),
              ToTensor(mean)]
    return Compose(steps)
