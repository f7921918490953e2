"""Landmark accuracy on an MTFL-format folder (``labels.txt`` + ``images/``).

Each labelled face is matched to the highest-scoring detection with score >= 0.5 and IoU >= 0.5 with its
box. NME = mean over matched faces of (mean distance of the five points) / (distance between the two
labelled eyes). The detection rate (matched / labelled faces) always goes with it: an NME over the
easy half of the faces says little on its own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..geometry import box_iou
from ..errors import BlazefaceError

MIN_SCORE = 0.5
MIN_IOU = 0.5


@dataclass
class LandmarkResult:
    nme: float  # mean over matched faces (nan when none matched)
    detected: float  # matched / labelled faces
    faces: int  # labelled faces
    matched: int
    errors: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per matched face NME

    def to_dict(self) -> dict:
        return {"nme": None if math.isnan(self.nme) else float(self.nme), "detected": float(self.detected),
                "faces": self.faces}


@dataclass
class LabelledFace:
    image: Path
    box: np.ndarray  # (4,) x1 y1 x2 y2
    points: np.ndarray  # (5, 2): left eye, right eye, nose, left mouth corner, right mouth corner


def read_faces(data_dir: str | Path) -> list[LabelledFace]:
    """Every labelled face of an MTFL folder, in file order."""
    from ..data.labels import read_mtfl

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise BlazefaceError(f"{data_dir}: no such folder (expected an MTFL folder: labels.txt and images/)")
    labels = data_dir / "labels.txt"
    if not labels.is_file():
        raise BlazefaceError(f"{labels}: no such file (an MTFL folder holds labels.txt and images/)")
    faces = [LabelledFace(s.image_path, s.boxes[k].astype(np.float64), s.landmarks[k].astype(np.float64))
             for s in read_mtfl(labels, data_dir / "images") for k in range(s.num_faces)]
    if not faces:
        raise BlazefaceError(f"{labels}: labels no face")
    for face in faces:
        if not np.linalg.norm(face.points[0] - face.points[1]) > 0:
            raise BlazefaceError(f"{labels}: {face.image.name}: the two labelled eyes coincide (no NME scale)")
    return faces


def match_detection(box: np.ndarray, detections: Sequence, min_score: float = MIN_SCORE,
                    min_iou: float = MIN_IOU):
    """The highest-scoring detection (``Face``) with score >= min_score and IoU >= min_iou, or None."""
    candidates = [f for f in detections if f.score >= min_score]
    if not candidates:
        return None
    iou = box_iou(box, np.array([f.box for f in candidates]))[0]
    ok = np.flatnonzero(iou >= min_iou)
    if len(ok) == 0:
        return None
    return max((candidates[k] for k in ok), key=lambda f: f.score)


def face_nme(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Mean point distance over the five points / distance between the two labelled eyes."""
    predicted = np.asarray(predicted, np.float64).reshape(5, 2)
    truth = np.asarray(truth, np.float64).reshape(5, 2)
    return float(np.linalg.norm(predicted - truth, axis=1).mean() / np.linalg.norm(truth[0] - truth[1]))


def score_landmarks(faces: Sequence[LabelledFace], detections: Sequence[Sequence]) -> LandmarkResult:
    """NME and detection rate of ``detections`` (per face: the detector's faces in its image)."""
    if len(faces) != len(detections):
        raise ValueError("one list of detections per labelled face")
    errors = []
    for face, dets in zip(faces, detections):
        best = match_detection(face.box, dets)
        if best is not None:
            errors.append(face_nme(best.landmarks, face.points))
    errors = np.array(errors, np.float64)
    nme = float(errors.mean()) if len(errors) else float("nan")
    return LandmarkResult(nme=nme, detected=len(errors) / len(faces) if faces else 0.0, faces=len(faces),
                          matched=len(errors), errors=errors)


def evaluate_landmarks(detector, data_dir: str | Path, batch_size: int = 1, progress: bool = True) -> LandmarkResult:
    """Run ``detector`` (a :class:`~blazeface.inference.FaceDetector` whose ``conf`` is below 0.5) over an
    MTFL folder and score its landmarks."""
    from .widerface import detect_grouped

    faces = read_faces(data_dir)
    paths = list(dict.fromkeys(f.image for f in faces))
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise BlazefaceError(f"{missing[0]}: no such image{more}")
    by_path = dict(zip(paths, detect_grouped(detector, paths, batch_size=batch_size, progress=progress,
                                             desc="landmarks")))
    return score_landmarks(faces, [by_path[f.image] for f in faces])
