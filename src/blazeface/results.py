"""What a detector returns: :class:`Face` (one face) and :class:`Detections` (the faces of one image).

``Detections`` is a sequence of ``Face`` objects sorted by descending score (``len``, indexing, iteration
work as on a list) and also holds the same results as numpy arrays (``boxes``, ``scores``, ``landmarks``),
with helpers to draw them, crop a face and serialise to JSON. Coordinates are pixels of the image the
detector was given (or of the network input, for the raw result of :func:`blazeface.postprocess.postprocess`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterator, Sequence, overload

import numpy as np

from .draw import draw_faces
from .errors import BlazefaceError


@dataclass(eq=False)
class Face:
    """One detected face, in image pixels."""

    box: np.ndarray  # (4,) x1 y1 x2 y2
    score: float
    landmarks: np.ndarray  # (5, 2): left eye, right eye, nose, left mouth corner, right mouth corner

    def __eq__(self, other) -> bool:
        if not isinstance(other, Face):
            return NotImplemented
        return (np.array_equal(self.box, other.box) and float(self.score) == float(other.score)
                and np.array_equal(self.landmarks, other.landmarks))

    __hash__ = None  # mutable arrays inside

    def to_dict(self) -> dict:
        return {"box": [round(float(v), 2) for v in self.box], "score": round(float(self.score), 5),
                "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks]}


class Detections(Sequence[Face]):
    """The faces found in one image, sorted by descending score.

    >>> dets = detector.detect("photo.jpg")
    >>> len(dets), dets[0].score, dets.boxes.shape     # a sequence of Face, and (N, 4) arrays
    >>> annotated = dets.draw(image)                   # a copy with boxes, scores and landmarks
    >>> face = dets.crop(image, 0)                     # the first (best) face's pixels
    >>> big = dets[dets.widths >= 40]                  # a boolean mask selects faces (still by score)
    """

    __slots__ = ("boxes", "scores", "landmarks")

    def __init__(self, boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray):
        self.boxes = np.asarray(boxes, np.float32).reshape(-1, 4)  # (N, 4) x1 y1 x2 y2
        self.scores = np.asarray(scores, np.float32).reshape(-1)  # (N,)
        self.landmarks = np.asarray(landmarks, np.float32).reshape(-1, 5, 2)  # (N, 5, 2)
        if not len(self.boxes) == len(self.scores) == len(self.landmarks):
            raise ValueError(f"boxes, scores and landmarks disagree on the number of faces: {len(self.boxes)}, "
                             f"{len(self.scores)}, {len(self.landmarks)}")

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def widths(self) -> np.ndarray:
        """(N,) box widths in pixels."""
        return self.boxes[:, 2] - self.boxes[:, 0]

    @property
    def heights(self) -> np.ndarray:
        """(N,) box heights in pixels."""
        return self.boxes[:, 3] - self.boxes[:, 1]

    @overload
    def __getitem__(self, index: int) -> Face: ...

    @overload
    def __getitem__(self, index: slice | np.ndarray) -> Detections: ...

    def __getitem__(self, index):
        """An int: one :class:`Face`; a slice or a boolean mask of one value per face (``dets[dets.scores >
        0.8]``): the :class:`Detections` it selects, still by descending score."""
        if isinstance(index, slice):
            return Detections(self.boxes[index], self.scores[index], self.landmarks[index])
        if isinstance(index, (np.ndarray, list)):
            mask = np.asarray(index)
            if mask.dtype != bool or mask.shape != (len(self),):
                raise BlazefaceError(f"Detections of {len(self)} face(s) take an int, a slice or a boolean mask of "
                                     f"shape ({len(self)},), not an array of {mask.dtype} {mask.shape}")
            return Detections(self.boxes[mask], self.scores[mask], self.landmarks[mask])
        k = range(len(self))[index]  # IndexError for out-of-range, negative indices count from the end
        return Face(self.boxes[k], float(self.scores[k]), self.landmarks[k])

    def __iter__(self) -> Iterator[Face]:
        return (self[k] for k in range(len(self)))

    def __eq__(self, other) -> bool:
        if isinstance(other, Detections):
            return (np.array_equal(self.boxes, other.boxes) and np.array_equal(self.scores, other.scores)
                    and np.array_equal(self.landmarks, other.landmarks))
        if isinstance(other, (list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # mutable arrays inside

    def __repr__(self) -> str:
        best = f", best score {self.scores[0]:.3f}" if len(self) else ""
        return f"<Detections: {len(self)} face{'s' if len(self) != 1 else ''}{best}>"

    def draw(self, image: np.ndarray, thickness: int | None = None) -> np.ndarray:
        """A copy of ``image`` (BGR uint8, the image these detections came from) with every face drawn."""
        return draw_faces(_check_image(image, "draw"), self, thickness)

    def crop(self, image: np.ndarray, index: int = 0, margin: float = 0.0) -> np.ndarray:
        """A copy of face ``index``'s box from ``image``, grown by ``margin`` x its size on each side and
        clipped to the image."""
        image = _check_image(image, "crop")
        if not -len(self) <= index < len(self):
            raise BlazefaceError(f"crop: index {index} is out of range for {len(self)} face(s)")
        if margin < 0:
            raise BlazefaceError(f"crop: margin must be >= 0, got {margin}")
        x1, y1, x2, y2 = (float(v) for v in self.boxes[index])
        mx, my = (x2 - x1) * margin, (y2 - y1) * margin
        h, w = image.shape[:2]
        left, top = max(0, int(np.floor(x1 - mx))), max(0, int(np.floor(y1 - my)))
        right, bottom = min(w, int(np.ceil(x2 + mx))), min(h, int(np.ceil(y2 + my)))
        return image[top:max(top, bottom), left:max(left, right)].copy()

    def to_list(self) -> list[dict]:
        """``[{"box": [x1, y1, x2, y2], "score": s, "landmarks": [[x, y] x 5]}, ...]`` (rounded)."""
        return [face.to_dict() for face in self]

    def to_json(self, **kwargs) -> str:
        """:meth:`to_list` as a JSON string (``kwargs`` go to ``json.dumps``, e.g. ``indent=2``)."""
        return json.dumps(self.to_list(), **kwargs)


def _check_image(image, what: str) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        raise BlazefaceError(f"{what}: image must be a non-empty (H, W, 3) numpy array, got "
                             f"{getattr(image, 'shape', type(image).__name__)}")
    return image


def as_detections(faces: Sequence[Face] | Detections) -> Detections:
    """A list of :class:`Face` (or anything with box/score/landmarks) -> :class:`Detections`."""
    if isinstance(faces, Detections):
        return faces
    faces = list(faces)
    if not faces:
        return Detections.empty()
    return Detections(np.stack([np.asarray(f.box, np.float32) for f in faces]),
                      np.array([f.score for f in faces], np.float32),
                      np.stack([np.asarray(f.landmarks, np.float32).reshape(5, 2) for f in faces]))
