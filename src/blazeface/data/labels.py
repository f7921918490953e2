"""Label-file readers for the three training formats, all returning :class:`Sample` records.

- RetinaFace ``label.txt`` / ``label_landmarks.txt``: ``# <relpath>`` starts an image, then one line per
  face ``x y w h`` followed by 0, 10, 15 or 16 values: five landmark points as plain ``x y`` pairs (10) or
  as ``x y flag`` triples (15, the original format), optionally followed by a score (16; in
  ``label_landmarks.txt`` the teacher's confidence). All coordinates ``-1`` means "no landmarks".
- Official WIDER ``wider_face_*_bbx_gt.txt``: name, count, then ``x y w h blur expression illumination
  invalid occlusion pose`` per face; a count of 0 is followed by one dummy line. Invalid faces are left out.
- MTFL ``labels.txt``: ``name left top right bottom`` then five ``x y`` points; one line per face. The
  photos may hold unlabelled faces, so these samples are marked non-exhaustive.

Boxes come out as float32 ``x1 y1 x2 y2`` in pixels with ``x2 = x + w`` (continuous coordinates). Boxes
thinner than one pixel are dropped and counted in ``SampleList.dropped``; a malformed line raises
``BlazefaceError("<file>:<line>: <problem>")``.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BlazefaceError

NO_POINTS = [-1.0] * 10
MAX_COORDINATE = 1e6  # pixels; anything larger is a broken label (and overflows float32 sums)
# Preference order when a folder holds several label files (teacher landmarks beat none).
LABEL_FILES = ("label_landmarks.txt", "label.txt", "labels.txt")


@dataclass(repr=False)
class Sample:
    """One photo and its labelled faces (N may be 0: a photo without faces is pure background)."""

    image_path: Path
    boxes: np.ndarray  # (N, 4) float32 x1 y1 x2 y2, pixels
    landmarks: np.ndarray  # (N, 5, 2) float32 x y, pixels (meaningless where not has_landmarks)
    has_landmarks: np.ndarray  # (N,) bool
    landmark_weight: np.ndarray  # (N,) float32: 1.0, or the label file's landmark score
    exhaustive: bool = True  # False: the photo may hold faces nobody labelled (never mine negatives there)

    @property
    def num_faces(self) -> int:
        return int(self.boxes.shape[0])

    def __repr__(self) -> str:
        return (f"Sample({str(self.image_path)!r}, {self.num_faces} faces, "
                f"{int(self.has_landmarks.sum())} with landmarks, exhaustive={self.exhaustive})")


class SampleList(list):
    """A ``list`` of :class:`Sample` that also says where it came from and what the reader left out."""

    def __init__(self, samples=(), source: Path | None = None):
        super().__init__(samples)
        self.source = source
        self.dropped: Counter = Counter()  # reason -> number of faces, e.g. {"degenerate": 12, "invalid": 3}
        self.clipped = 0  # faces whose box reached outside the image and was cut to it (clip_to_images)

    @property
    def num_faces(self) -> int:
        return sum(s.num_faces for s in self)

    def __repr__(self) -> str:
        return (f"SampleList({len(self)} images, {self.num_faces} faces from {self.source}, "
                f"dropped {dict(self.dropped)})")


def _error(path: Path, lineno: int, problem: str) -> BlazefaceError:
    return BlazefaceError(f"{path}:{lineno}: {problem}")


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise BlazefaceError(f"{path}: cannot read label file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise BlazefaceError(f"{path}: not a text label file (not UTF-8)") from None


def _floats(parts: list[str], path: Path, lineno: int) -> list[float]:
    try:
        values = [float(p) for p in parts]
    except ValueError:
        bad = next(p for p in parts if not _is_float(p))
        raise _error(path, lineno, f"not a number: {bad!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise _error(path, lineno, "non-finite value (nan or inf)")
    if any(abs(v) > MAX_COORDINATE for v in values):
        bad = next(p for p, v in zip(parts, values) if abs(v) > MAX_COORDINATE)
        raise _error(path, lineno, f"value {bad} is out of range (|v| > {MAX_COORDINATE:g} pixels)")
    return values


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _make_sample(image_path: Path, rows: list[list[float]], dropped: Counter, exhaustive: bool = True,
                 boxes_are_xywh: bool = True) -> Sample:
    """``rows``: per face ``[box(4), points(10), score]``; drops boxes under one pixel wide or high."""
    table = np.asarray(rows, dtype=np.float32).reshape(-1, 15)
    boxes = table[:, :4].copy()
    if boxes_are_xywh:
        boxes[:, 2:] += boxes[:, :2]
    keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
    if not keep.all():
        dropped["degenerate"] += int((~keep).sum())
        table, boxes = table[keep], boxes[keep]
    points = table[:, 4:14]
    has_landmarks = ~(points == -1).all(axis=1)
    score = table[:, 14]
    # A score in (0, 1] on a face with landmarks is the labeller's confidence; anything else means "trust".
    weight = np.where(has_landmarks & (score > 0) & (score <= 1), score, 1.0).astype(np.float32)
    return Sample(image_path=image_path, boxes=boxes, landmarks=np.ascontiguousarray(points).reshape(-1, 5, 2),
                  has_landmarks=has_landmarks, landmark_weight=weight, exhaustive=exhaustive)


def read_retinaface(label_file: str | Path, images_dir: str | Path | None = None) -> SampleList:
    """RetinaFace-format ``label.txt`` (see the module docstring); images under ``images_dir``
    (default: ``images/`` beside the label file)."""
    path = Path(label_file)
    images = Path(images_dir) if images_dir is not None else path.parent / "images"
    out = SampleList(source=path)
    name: str | None = None
    rows: list[list[float]] = []
    for lineno, line in enumerate(_read_lines(path), 1):
        text = line.strip()
        if not text:
            continue
        if text[0] == "#":
            if name is not None:
                out.append(_make_sample(images / name, rows, out.dropped))
            name, rows = text[1:].strip(), []
            if not name:
                raise _error(path, lineno, "'#' line without an image path")
            continue
        if name is None:
            raise _error(path, lineno, "face line before the first '# <image>' line")
        parts = text.split()
        n = len(parts)
        if n not in (4, 14, 19, 20):
            raise _error(path, lineno, f"expected x y w h followed by 0, 10, 15 or 16 values, got {n} values")
        values = _floats(parts, path, lineno)
        if n >= 19:  # x y flag triples: drop the flags
            points = values[4:19]
            del points[2::3]
        elif n == 14:
            points = values[4:14]
        else:
            points = NO_POINTS
        rows.append(values[:4] + points + [values[19] if n == 20 else 1.0])
    if name is not None:
        out.append(_make_sample(images / name, rows, out.dropped))
    return out


# The official per-face columns after x y w h (wider_face_*_bbx_gt.txt).
WIDER_COLUMNS = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")


def read_wider_faces(gt_file: str | Path) -> dict[str, np.ndarray]:
    """Official WIDER FACE ``wider_face_*_bbx_gt.txt`` -> per image name its faces as ``(n, 10)`` float rows
    ``x y w h`` + :data:`WIDER_COLUMNS` (all faces, invalid ones included; a 4-value line gets zero labels)."""
    path = Path(gt_file)
    out: dict[str, np.ndarray] = {}
    lines = _read_lines(path)
    i = 0
    while i < len(lines):
        name = lines[i].strip()
        i += 1
        if not name:
            continue
        if i >= len(lines):
            raise _error(path, i, f"image {name!r} has no face count line")
        count_text = lines[i].strip()
        i += 1
        if not count_text.isdigit():
            raise _error(path, i, f"expected the face count of {name!r}, got {count_text[:40]!r}")
        count = int(count_text)
        if count == 0:
            # The official files follow a count of 0 with one dummy line of zeros; tolerate its absence.
            if i < len(lines) and lines[i].split() and _is_float(lines[i].split()[0]):
                i += 1
        rows = []
        for _ in range(count):
            if i >= len(lines):
                raise _error(path, i, f"file ends inside the {count} faces of {name!r}")
            parts = lines[i].split()
            i += 1
            if len(parts) not in (4, 10):
                raise _error(path, i, f"expected x y w h [blur expression illumination invalid occlusion "
                                      f"pose], got {len(parts)} values")
            rows.append(_floats(parts, path, i) + [0.0] * (10 - len(parts)))
        out[name] = np.asarray(rows, np.float64).reshape(-1, 10)
    return out


def read_wider(gt_file: str | Path, images_dir: str | Path | None = None) -> SampleList:
    """Official WIDER FACE ``wider_face_*_bbx_gt.txt``; faces flagged invalid are left out (counted)."""
    path = Path(gt_file)
    images = Path(images_dir) if images_dir is not None else path.parent / "images"
    out = SampleList(source=path)
    invalid = 4 + WIDER_COLUMNS.index("invalid")
    for name, faces in read_wider_faces(path).items():
        out.dropped["invalid"] += int((faces[:, invalid] != 0).sum())
        rows = [list(face[:4]) + NO_POINTS + [1.0] for face in faces if face[invalid] == 0]
        out.append(_make_sample(images / name, rows, out.dropped))
    return out


def read_mtfl(label_file: str | Path, images_dir: str | Path | None = None) -> SampleList:
    """MTFL ``labels.txt``: ``name left top right bottom`` + five ``x y`` points, one line per face
    (several lines may name one image). Samples are non-exhaustive."""
    path = Path(label_file)
    images = Path(images_dir) if images_dir is not None else path.parent / "images"
    out = SampleList(source=path)
    faces: dict[str, list[list[float]]] = {}  # insertion-ordered: keeps the file's image order
    for lineno, line in enumerate(_read_lines(path), 1):
        text = line.strip()
        if not text or text[0] == "#":
            continue
        parts = text.split()
        if len(parts) != 15:
            raise _error(path, lineno, f"expected name left top right bottom and 5 x y points (15 fields), "
                                       f"got {len(parts)}")
        values = _floats(parts[1:], path, lineno)
        faces.setdefault(parts[0], []).append(values[:4] + values[4:] + [1.0])
    for name, rows in faces.items():
        out.append(_make_sample(images / name, rows, out.dropped, exhaustive=False, boxes_are_xywh=False))
    return out


def _reader_for(label_file: Path):
    if label_file.name == "labels.txt":
        return read_mtfl
    if label_file.name.endswith("_bbx_gt.txt"):
        return read_wider
    return read_retinaface


def find_label_file(source: str | Path) -> Path:
    """The label file a training folder is read from: ``label_landmarks.txt``, else ``label.txt``
    (RetinaFace), else ``labels.txt`` (MTFL), else ``wider_face_*_bbx_gt.txt``. A file path is returned as is."""
    path = Path(source)
    if path.is_file():
        return path
    if not path.is_dir():
        raise BlazefaceError(f"{path}: no such folder")
    for name in LABEL_FILES:
        if (path / name).is_file():
            return path / name
    official = sorted(path.glob("wider_face_*_bbx_gt.txt"))
    if official:
        return official[0]
    raise BlazefaceError(f"{path}: no label file (label_landmarks.txt, label.txt, labels.txt or "
                         f"wider_face_*_bbx_gt.txt)")


def load_source(source: str | Path) -> SampleList:
    """Read a training folder (``images/`` plus one label file, format picked by
    :func:`find_label_file`) or a label file directly (images in ``images/`` beside it)."""
    label_file = find_label_file(source)
    images = label_file.parent / "images"
    if not images.is_dir():
        raise BlazefaceError(f"{label_file.parent}: no images/ folder beside {label_file.name}")
    samples = _reader_for(label_file)(label_file, images)
    if not samples:
        raise BlazefaceError(f"{label_file}: the label file names no images")
    return samples


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a JPEG's, PNG's or WebP's header (a few bytes read), else by decoding; None when
    the file cannot be read."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return None
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        size = _webp_size(head)
        if size is not None:
            return size
    if head[:2] == b"\xff\xd8":
        pos = 2
        while pos + 9 <= len(head) and head[pos] == 0xFF:
            marker, length = head[pos + 1], int.from_bytes(head[pos + 2:pos + 4], "big")
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                height = int.from_bytes(head[pos + 5:pos + 7], "big")
                width = int.from_bytes(head[pos + 7:pos + 9], "big")
                return width, height  # stored size: the dataset reads images ignoring EXIF orientation
            pos += 2 + length
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return None if image is None else (image.shape[1], image.shape[0])


def _webp_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from a WebP file's first chunk: lossy (VP8), lossless (VP8L) or extended (VP8X)."""
    chunk = head[12:16]
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        return (int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF)
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return None


def clip_to_images(samples: SampleList) -> None:
    """Cut every box to its image (sizes from the files' headers), in place: a box reaching outside is
    clipped and counted in ``samples.clipped``; one left under a pixel wide or high is dropped
    (``samples.dropped["outside"]``). Images that cannot be read are left as they are (the dataset skips
    them with a warning)."""
    for k, sample in enumerate(samples):
        if not sample.num_faces:
            continue
        size = image_size(sample.image_path)
        if size is None:
            continue
        width, height = size
        boxes = sample.boxes
        clipped = boxes.copy()
        clipped[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
        clipped[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
        changed = (clipped != boxes).any(axis=1)
        if not changed.any():
            continue
        keep = ((clipped[:, 2] - clipped[:, 0]) >= 1) & ((clipped[:, 3] - clipped[:, 1]) >= 1)
        samples.clipped += int((changed & keep).sum())
        if not keep.all():
            samples.dropped["outside"] += int((~keep).sum())
        samples[k] = Sample(sample.image_path, clipped[keep], sample.landmarks[keep], sample.has_landmarks[keep],
                            sample.landmark_weight[keep], sample.exhaustive)
