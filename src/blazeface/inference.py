"""``FaceDetector``: the Python API for running a detector on images.

Pipeline: letterbox (resize the long side, keep the aspect ratio, pad bottom/right to the multiple the
network needs) -> backend forward -> the shared :func:`postprocess` -> map back to input pixels.
"""
from __future__ import annotations

import time
from dataclasses import replace
from numbers import Integral, Real
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from . import defaults
from .backends import make_runner
from .config import ModelConfig
from .errors import BlazefaceError
from .letterbox import Letterbox, letterbox_size, preprocess  # noqa: F401  (part of this module's API)
from .io import COLOR_ORDERS, as_bgr
from .models import get_config
from .postprocess import PostprocessConfig, postprocess
from .priors import prior_boxes
from .results import Detections, Face

__all__ = ["Detections", "Face", "FaceDetector", "Letterbox", "letterbox_size", "preprocess", "to_faces"]


def to_faces(dets: Detections, box: Letterbox) -> Detections:
    """Network-input pixels -> image pixels, boxes clipped to the image; sorted by descending score."""
    sx, sy = box.scale
    scale = np.array([sx, sy, sx, sy], np.float32)
    w, h = box.image_size
    boxes = dets.boxes / scale
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)
    points = dets.landmarks / np.array([sx, sy], np.float32)
    return Detections(boxes, dets.scores, points)


def _number(name: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not low <= value <= high:
        raise BlazefaceError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def _count(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        raise BlazefaceError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


class _Validated:
    """A detector setting checked when set: ``check(name, value)`` raises ``BlazefaceError`` or returns
    the value to store."""

    def __init__(self, check):
        self.check = check

    def __set_name__(self, owner, name):
        self.name, self.slot = name, "_" + name

    def __get__(self, obj, owner=None):
        return self if obj is None else getattr(obj, self.slot)

    def __set__(self, obj, value):
        setattr(obj, self.slot, self.check(self.name, value))


STAGES = ("preprocess", "inference", "postprocess", "total")


class FaceDetector:
    """Detect faces and five landmarks.

    >>> detector = FaceDetector()                              # blaze with the shipped weights
    >>> faces = detector.detect("photo.jpg")                   # path, BGR array or PIL image
    >>> faces[0].box, faces[0].score, faces[0].landmarks       # the best face
    >>> faces.boxes, faces.scores, faces.landmarks             # (N, 4), (N,), (N, 5, 2) arrays
    >>> detector.conf = 0.3                                    # thresholds are attributes
    >>> detector(["a.jpg", "b.jpg"])                           # calling it: one image or a list of them

    ``conf``, ``nms``, ``long_side``, ``top_k``, ``keep_top_k``, ``landmark_vote`` and ``color`` are attributes,
    validated when set; ``detect(image, conf=...)`` overrides one for a single call.
    """

    def __init__(self, model: str | None = None, weights: str | Path | None = None, *, backend: str | None = None,
                 long_side: int | None = None, conf: float = defaults.CONF, nms: float = defaults.NMS,
                 top_k: int = defaults.TOP_K, keep_top_k: int = defaults.KEEP_TOP_K,
                 landmark_vote: float | None = defaults.LANDMARK_VOTE, color: str = "bgr",
                 device: str = "cpu", runner=None, threads: int | None = None):
        """``model``: "blaze", "blazelite", "slim", "slimlite", "rfb" or "mnet"; None: the one ``weights`` names (default blaze).
        ``weights``: None (the shipped weights), a checkpoint (.pth), an exported ``.onnx`` or an ncnn
        ``.param`` (its ``.bin`` beside it). ``backend``: "torch", "onnx" or "ncnn"; None: the one the
        weights file's suffix names (torch for a checkpoint); with onnx or ncnn a checkpoint is exported
        on first use and cached. ``long_side``: resize the image's long side to this (0: keep its size;
        None: the model's default). ``landmark_vote``: each face's landmarks are the score-weighted mean
        over the candidates scoring > 0.5 whose box overlaps its box by IoU > this (None: its own prior's
        only). ``color``: channel order of numpy inputs, "bgr" (OpenCV) or "rgb".
        ``threads``: the backend's thread count (None: its default). ``runner``: any callable batch ->
        (loc, conf, landm), used instead of building one (``model`` then names its model)."""
        if runner is None:
            runner = make_runner(backend, model, weights, threads=threads, device=device)
            self.config: ModelConfig = runner.config
        else:
            self.config = get_config(model or "blaze")
        self.runner = runner
        self.long_side = self.config.long_side if long_side is None else long_side
        self.conf, self.nms, self.top_k, self.keep_top_k = conf, nms, top_k, keep_top_k
        self.landmark_vote = landmark_vote
        self.color = color
        # Milliseconds per stage of the last detect / detect_batch call (what `blazeface bench` reports).
        self.timings: dict[str, float] = {}

    # -- validated settings --------------------------------------------------------------------------
    conf = _Validated(lambda name, value: _number(name, value, 0.0, 1.0))
    nms = _Validated(lambda name, value: _number(name, value, 0.0, 1.0))
    long_side = _Validated(lambda name, value: _count(name, value, 0))
    top_k = _Validated(lambda name, value: _count(name, value, 1))
    keep_top_k = _Validated(lambda name, value: _count(name, value, 1))
    landmark_vote = _Validated(lambda name, value: None if value is None else _number(name, value, 0.0, 1.0))

    @property
    def color(self) -> str:
        return self._color

    @color.setter
    def color(self, value: str) -> None:
        if value not in COLOR_ORDERS:
            raise BlazefaceError(f"color must be 'bgr' or 'rgb', got {value!r}")
        self._color = value

    @property
    def postprocess_config(self) -> PostprocessConfig:
        return PostprocessConfig(conf=self.conf, nms=self.nms, top_k=self.top_k, keep_top_k=self.keep_top_k,
                                 landmark_vote=self.landmark_vote)

    @property
    def model_name(self) -> str:
        return self.config.name

    def letterbox(self, width: int, height: int, long_side: int | None = None) -> Letterbox:
        side = self.long_side if long_side is None else long_side
        return letterbox_size(width, height, side, self.config.size_multiple)

    def __repr__(self) -> str:
        return (f"FaceDetector(model={self.model_name!r}, runner={type(self.runner).__name__}, conf={self.conf:g}, "
                f"nms={self.nms:g}, long_side={self.long_side})")

    # -- detection -----------------------------------------------------------------------------------
    def __call__(self, source, **overrides):
        """``detector(image)`` is :meth:`detect`; ``detector([image, ...])`` (a list, tuple or iterator of
        images) is :meth:`detect_batch`, as a model is called in ultralytics."""
        if isinstance(source, (list, tuple, Iterator)):
            return self.detect_batch(source, **overrides)
        return self.detect(source, **overrides)

    def stream(self, source, batch_size: int = defaults.BATCH_SIZE):
        """Every frame of a video file (path) or camera (index) with its faces: yields
        ``StreamFrame(index, timestamp, image, faces)`` (unpackable as a tuple), ``faces`` as
        :meth:`detect` returns them. A video cut short raises ``BlazefaceError`` after its last frame."""
        from .video import stream_faces

        return stream_faces(self, source, batch_size)

    def detect(self, image, *, conf: float | None = None, nms: float | None = None,
               long_side: int | None = None, color: str | None = None) -> Detections:
        """Faces in one image (a path, a numpy array or a PIL image), by descending score.

        The keyword arguments override the detector's settings for this call only."""
        return self.detect_batch([image], conf=conf, nms=nms, long_side=long_side, color=color)[0]

    def detect_batch(self, images: Iterable, batch_size: int = defaults.BATCH_SIZE, *, conf: float | None = None,
                     nms: float | None = None, long_side: int | None = None,
                     color: str | None = None) -> list[Detections]:
        """Faces for many images. Images of one batch are padded to a common input size (bottom/right)."""
        batch_size = _count("batch_size", batch_size, 1)
        post = replace(self.postprocess_config, conf=self.conf if conf is None else _number("conf", conf, 0.0, 1.0),
                       nms=self.nms if nms is None else _number("nms", nms, 0.0, 1.0))
        side = self.long_side if long_side is None else _count("long_side", long_side, 0)
        color = self.color if color is None else color
        clock = time.perf_counter_ns
        totals = dict.fromkeys(STAGES, 0)
        results: list[Detections] = []
        chunk: list[np.ndarray] = []

        def flush():
            results.extend(self._detect_arrays(chunk, post, side, totals))
            chunk.clear()

        start = clock()
        for image in images:
            t = clock()
            chunk.append(as_bgr(image, color))
            totals["preprocess"] += clock() - t
            if len(chunk) == batch_size:
                flush()
        if chunk:
            flush()
        totals["total"] = clock() - start
        self.timings = {stage: ns / 1e6 for stage, ns in totals.items()}
        return results

    def input_batch(self, images: list[np.ndarray], long_side: int | None = None
                    ) -> tuple[np.ndarray, list[Letterbox]]:
        """BGR images -> the network's input batch (N, 3, H, W), each image letterboxed into its top-left corner,
        and each image's :class:`Letterbox` (what ``self.runner(batch)`` then :meth:`detect_raw` need)."""
        boxes = [self.letterbox(im.shape[1], im.shape[0], long_side) for im in images]
        width = max(b.input_size[0] for b in boxes)
        height = max(b.input_size[1] for b in boxes)
        batch = np.zeros((len(images), 3, height, width), np.float32)
        for k, (im, box) in enumerate(zip(images, boxes)):
            w, h = box.input_size
            preprocess(im, box, self.config.mean_bgr, out=batch[k, :, :h, :w])
        return batch, boxes

    def _detect_arrays(self, images: list[np.ndarray], post: PostprocessConfig, long_side: int,
                       totals: dict[str, int]) -> list[Detections]:
        clock = time.perf_counter_ns
        t0 = clock()
        batch, boxes = self.input_batch(images, long_side)
        t1 = clock()
        outputs = self.runner(batch)
        t2 = clock()
        out = self.detect_raw(outputs, boxes, (batch.shape[3], batch.shape[2]), post)
        totals["preprocess"] += t1 - t0
        totals["inference"] += t2 - t1
        totals["postprocess"] += clock() - t2
        return out

    def detect_raw(self, outputs, boxes: list[Letterbox], input_size: tuple[int, int],
                   post: PostprocessConfig | None = None) -> list[Detections]:
        """Raw backend outputs of a batch -> detections per image (the step every backend shares)."""
        loc, conf, landm = outputs
        priors = prior_boxes(self.config.priors, input_size[1], input_size[0])
        if loc.shape[1] != len(priors):
            raise BlazefaceError(
                f"backend produced {loc.shape[1]} priors for a {input_size[0]}x{input_size[1]} input, "
                f"model {self.config.name!r} needs {len(priors)}: wrong model for these weights?")
        post = post or self.postprocess_config
        return [to_faces(postprocess(loc[k], conf[k], landm[k], priors, input_size, post,
                                     self.config.priors.variances), box)
                for k, box in enumerate(boxes)]
