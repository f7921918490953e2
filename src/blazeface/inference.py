"""``FaceDetector``: the Python API for running a detector on images.

Pipeline: letterbox (resize the long side, keep the aspect ratio, pad bottom/right to the multiple the
network needs) -> backend forward -> the shared :func:`postprocess` -> map back to input pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from .config import ModelConfig
from .errors import BlazefaceError
from .io import as_bgr
from .models import get_config
from .postprocess import Detections, PostprocessConfig, postprocess
from .priors import prior_boxes
from .runtime.torch_runner import TorchRunner  # noqa: F401  (re-exported: its old home)


@dataclass
class Face:
    """One detected face, in input-image pixels."""

    box: np.ndarray  # (4,) x1 y1 x2 y2
    score: float
    landmarks: np.ndarray  # (5, 2): left eye, right eye, nose, left mouth corner, right mouth corner

    def to_dict(self) -> dict:
        return {"box": [round(float(v), 2) for v in self.box], "score": round(float(self.score), 5),
                "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks]}


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
    pad = lambda v: -(-v // multiple) * multiple  # noqa: E731  (ceil to multiple)
    return Letterbox((width, height), (rw, rh), (pad(rw), pad(rh)))


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


def to_faces(dets: Detections, box: Letterbox) -> list[Face]:
    """Network-input pixels -> image pixels, boxes clipped to the image; sorted by descending score."""
    sx, sy = box.scale
    scale = np.array([sx, sy, sx, sy], np.float32)
    w, h = box.image_size
    boxes = dets.boxes / scale
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)
    points = dets.landmarks / np.array([sx, sy], np.float32)
    return [Face(boxes[k], float(dets.scores[k]), points[k]) for k in range(len(dets))]


class FaceDetector:
    """Detect faces and five landmarks.

    >>> detector = FaceDetector("blaze")                       # the shipped weights
    >>> faces = detector.detect("photo.jpg")                   # path, BGR array or PIL image
    >>> faces[0].box, faces[0].score, faces[0].landmarks
    """

    def __init__(self, model: str = "blaze", weights: str | Path | None = None, *, backend: str = "torch",
                 long_side: int | None = None, conf: float = 0.5, nms: float = 0.4, top_k: int = 5000,
                 keep_top_k: int = 750, device: str = "cpu", runner=None, threads: int | None = None):
        """``backend``: "torch" (``weights`` a checkpoint), "onnx" (an exported ``.onnx``) or "ncnn" (a
        ``.param``, its ``.bin`` beside it); for onnx and ncnn, None (the shipped weights) or a checkpoint
        is exported on first use and cached. ``threads``: the backend's thread count (None: its default).
        ``runner``: any callable batch -> (loc, conf, landm), used instead of building one."""
        self.config: ModelConfig = get_config(model)
        if runner is None:
            from .runtime import make_runner

            runner = make_runner(backend, model, weights, threads=threads, device=device)
        self.runner = runner
        self.long_side = self.config.long_side if long_side is None else long_side
        self.postprocess_config = PostprocessConfig(conf=conf, nms=nms, top_k=top_k, keep_top_k=keep_top_k)

    def letterbox(self, width: int, height: int) -> Letterbox:
        return letterbox_size(width, height, self.long_side, self.config.size_multiple)

    def detect(self, image) -> list[Face]:
        """Faces in one image (a path, a BGR numpy array or a PIL image), by descending score."""
        return self.detect_batch([image])[0]

    def stream(self, source, batch_size: int = 8):
        """Every frame of a video file (path) or camera (index) with its faces: yields
        ``StreamFrame(index, timestamp, image, faces)`` (unpackable as a tuple), ``faces`` as
        :meth:`detect` returns them. A video cut short raises ``BlazefaceError`` after its last frame."""
        from .video import stream_faces

        return stream_faces(self, source, batch_size)

    def detect_batch(self, images: Iterable, batch_size: int = 8) -> list[list[Face]]:
        """Faces for many images. Images of one batch are padded to a common input size (bottom/right)."""
        results: list[list[Face]] = []
        chunk: list[np.ndarray] = []
        for image in images:
            chunk.append(as_bgr(image))
            if len(chunk) == batch_size:
                results.extend(self._detect_arrays(chunk))
                chunk = []
        if chunk:
            results.extend(self._detect_arrays(chunk))
        return results

    def _detect_arrays(self, images: list[np.ndarray]) -> list[list[Face]]:
        boxes = [self.letterbox(im.shape[1], im.shape[0]) for im in images]
        width = max(b.input_size[0] for b in boxes)
        height = max(b.input_size[1] for b in boxes)
        batch = np.zeros((len(images), 3, height, width), np.float32)
        for k, (im, box) in enumerate(zip(images, boxes)):
            w, h = box.input_size
            preprocess(im, box, self.config.mean_bgr, out=batch[k, :, :h, :w])
        return self.detect_raw(self.runner(batch), boxes, (width, height))

    def detect_raw(self, outputs, boxes: list[Letterbox], input_size: tuple[int, int]) -> list[list[Face]]:
        """Raw backend outputs of a batch -> faces per image (the step every backend shares)."""
        loc, conf, landm = outputs
        priors = prior_boxes(self.config.priors, input_size[1], input_size[0])
        if loc.shape[1] != len(priors):
            raise BlazefaceError(
                f"backend produced {loc.shape[1]} priors for a {input_size[0]}x{input_size[1]} input, "
                f"model {self.config.name!r} needs {len(priors)}: wrong model for these weights?")
        out = []
        for k, box in enumerate(boxes):
            dets = postprocess(loc[k], conf[k], landm[k], priors, input_size, self.postprocess_config,
                               self.config.priors.variances)
            out.append(to_faces(dets, box))
        return out
