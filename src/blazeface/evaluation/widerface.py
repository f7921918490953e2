"""WIDER FACE validation: the official easy / medium / hard AP protocol in plain numpy.

The protocol matches wondervictor/WiderFace-Evaluation to the last bit, without its
compiled extension and about a hundred times faster:

1. Scores are min-max normalised over every prediction of the evaluated images (the reference starts its
   running minimum at 1 and its maximum at 0, so scores already in [0, 1] use their true min and max).
2. Images whose ground truth holds no face are skipped (their predictions only count for step 1).
3. Per image, each prediction in FILE ORDER takes the ground-truth face of highest IoU (``x2 = x + w``, the
   +1 pixel convention). IoU >= 0.5 with a face outside the setting's keep list: the prediction is
   ignored. With a kept face: a true positive the first time, a false positive after. IoU < 0.5: a false
   positive.
4. For 1000 thresholds ``1 - t/1000``: proposals = non-ignored predictions up to the LAST one whose score
   passes, true positives = kept faces recalled by then; summed over images. Recall divides by the kept
   faces of every evaluated image.
5. AP = VOC all-point interpolated area under the precision-recall curve.

Prediction folders use the standard layout: ``<root>/<event>/<name>.txt`` holding the image name, the
number of boxes, then one ``x y w h score`` line per box by descending score.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import BlazefaceError
from ..geometry import box_iou_pixel
from ..io import IMAGE_SUFFIXES, read_image

SETTINGS = ("easy", "medium", "hard")
# The official per-face labels of wider_face_val.mat and what their codes mean.
ATTRIBUTES = {"blur": ("clear", "normal", "heavy"), "occlusion": ("none", "partial", "heavy"),
              "pose": ("typical", "atypical"), "illumination": ("normal", "extreme"),
              "expression": ("typical", "exaggerated")}
GT_FILES = ("wider_face_val.mat", "wider_easy_val.mat", "wider_medium_val.mat", "wider_hard_val.mat")
IOU_THRESHOLD = 0.5
NUM_THRESHOLDS = 1000
IMAGE_SUFFIX = ".jpg"
# Sub-pixel box precision and enough score digits for 1000 thresholds; the evaluated numbers are exactly
# the written ones (see :func:`faces_to_rows`), so a saved folder re-evaluates to the same APs.
BOX_DECIMALS = 2
SCORE_DECIMALS = 6


# --------------------------------------------------------------------------------------------------
# Ground truth


@dataclass
class GroundTruth:
    """Faces of the evaluated images; image ``i`` is ``events[i]/names[i]`` (name without extension)."""

    events: list[str]
    names: list[str]
    boxes: list[np.ndarray]  # per image (n, 4) float64 x y w h
    keep: dict[str, list[np.ndarray]]  # setting -> per image 0-based indices of the faces it keeps
    # WIDER's per-face labels (ATTRIBUTES: name -> per image (n,) int codes), where the ground truth has them;
    # the protocol never reads them, the diagnostics do (benchmarks/recall_by_size.py --by).
    attributes: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.names)
        if len(self.events) != n or len(self.boxes) != n:
            raise ValueError("events, names and boxes need one entry per image")
        for setting in SETTINGS:
            if len(self.keep.get(setting, ())) != n:
                raise ValueError(f"keep[{setting!r}] needs one entry per image")
        for name, codes in self.attributes.items():
            if len(codes) != n:
                raise ValueError(f"attributes[{name!r}] needs one entry per image")

    def __len__(self) -> int:
        return len(self.names)

    def key(self, i: int) -> str:
        return f"{self.events[i]}/{self.names[i]}"

    @property
    def keys(self) -> list[str]:
        return [self.key(i) for i in range(len(self))]

    @cached_property
    def index(self) -> dict[str, int]:
        """``"event/name"`` -> image index."""
        return {self.key(i): i for i in range(len(self))}

    @property
    def num_faces(self) -> int:
        return sum(len(b) for b in self.boxes)

    def kept_faces(self, setting: str) -> int:
        return sum(len(k) for k in self.keep[setting])


def _mat_cells(array) -> list:
    """A MATLAB cell column (n, 1) of objects -> a list of its n entries."""
    return [array[i][0] for i in range(len(array))]


def load_ground_truth(gt_dir: str | Path) -> GroundTruth:
    """Read the official ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat``."""
    from scipy.io import loadmat

    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise BlazefaceError(f"{gt_dir}: no such folder (expected the WIDER FACE ground_truth folder with "
                             f"{', '.join(GT_FILES)})")
    mats = {}
    for name in GT_FILES:
        path = gt_dir / name
        if not path.is_file():
            raise BlazefaceError(f"{path}: no such file (the WIDER FACE ground truth needs {', '.join(GT_FILES)})")
        try:
            mats[name] = loadmat(str(path))
        except Exception as exc:  # scipy raises several types for corrupt files
            raise BlazefaceError(f"{path}: not a readable .mat file ({exc})") from None
    try:
        main = mats["wider_face_val.mat"]
        event_cells = _mat_cells(main["event_list"])
        file_cells = _mat_cells(main["file_list"])
        box_cells = _mat_cells(main["face_bbx_list"])
        events: list[str] = []
        names: list[str] = []
        boxes: list[np.ndarray] = []
        for event, files, event_boxes in zip(event_cells, file_cells, box_cells):
            event = str(event[0])
            for j in range(len(files)):
                events.append(event)
                names.append(str(files[j][0][0]))
                boxes.append(np.asarray(event_boxes[j][0], dtype=np.float64).reshape(-1, 4))
        keep: dict[str, list[np.ndarray]] = {}
        for setting in SETTINGS:
            cells = _mat_cells(mats[f"wider_{setting}_val.mat"]["gt_list"])
            if [len(c) for c in cells] != [len(f) for f in file_cells]:
                raise BlazefaceError(f"{gt_dir / f'wider_{setting}_val.mat'}: its image lists differ from "
                                     f"wider_face_val.mat")
            keep[setting] = [np.asarray(c[j][0], dtype=np.int64).reshape(-1) - 1
                             for c in cells for j in range(len(c))]
        attributes = {}
        for name in ATTRIBUTES:
            if f"{name}_label_list" in main:
                cells = _mat_cells(main[f"{name}_label_list"])
                attributes[name] = [np.asarray(c[j][0], dtype=np.int64).reshape(-1) for c in cells for j in range(len(c))]
                if [len(a) for a in attributes[name]] != [len(b) for b in boxes]:
                    raise ValueError(f"{name}_label_list does not label every face")
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise BlazefaceError(f"{gt_dir}: not the official WIDER FACE ground truth "
                             f"({type(exc).__name__}: {exc})") from None
    for setting in SETTINGS:
        for i, k in enumerate(keep[setting]):
            if len(k) and (k.min() < 0 or k.max() >= len(boxes[i])):
                raise BlazefaceError(f"{gt_dir}: wider_{setting}_val.mat keeps face {k.max() + 1} of "
                                     f"{events[i]}/{names[i]}, which has {len(boxes[i])}")
    return GroundTruth(events, names, boxes, keep, attributes)


def read_image_list(list_file: str | Path, gt: GroundTruth) -> list[str]:
    """A ``wider_val.txt``-style list (``/event/name.jpg`` per line) -> ground-truth keys, in file order."""
    path = Path(list_file)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise BlazefaceError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BlazefaceError(f"{path}: cannot read the image list ({exc})") from None
    keys: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.strip("/").split("/")
        if len(parts) != 2 or not all(parts):
            raise BlazefaceError(f"{path}:{lineno}: expected /event/name.jpg, got {text[:80]!r}")
        event, name = parts
        if Path(name).suffix.lower() in IMAGE_SUFFIXES:
            name = Path(name).stem
        key = f"{event}/{name}"
        if key not in gt.index:
            raise BlazefaceError(f"{path}:{lineno}: {text} is not an image of the WIDER FACE val ground truth")
        if key in seen:
            raise BlazefaceError(f"{path}:{lineno}: {text} is listed twice (first on line {seen[key]})")
        seen[key] = lineno
        keys.append(key)
    if not keys:
        raise BlazefaceError(f"{path}: lists no image")
    return keys


# --------------------------------------------------------------------------------------------------
# Prediction folders


def prediction_path(root: str | Path, key: str) -> Path:
    """``<root>/<event>/<name>.txt`` for the image ``"event/name"``."""
    return Path(root) / f"{key}.txt"


def image_path(images_dir: str | Path, key: str) -> Path:
    return Path(images_dir) / f"{key}{IMAGE_SUFFIX}"


def _parse_row(line: str, source: Path, lineno: int) -> list[float]:
    parts = line.split()
    if len(parts) < 5:
        raise BlazefaceError(f"{source}:{lineno}: expected x y w h score, got {line.strip()[:80]!r}")
    try:
        values = [float(p) for p in parts[:5]]
    except ValueError:
        raise BlazefaceError(f"{source}:{lineno}: not a number in {line.strip()[:80]!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise BlazefaceError(f"{source}:{lineno}: non-finite value (nan or inf) in {line.strip()[:80]!r}")
    return values


def parse_predictions(text: str, source: str | Path = "<predictions>") -> np.ndarray:
    """The text of one prediction file -> ``(n, 5)`` float64 ``x y w h score`` rows, in file order."""
    source = Path(source)
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) < 2:
        raise BlazefaceError(f"{source}: expected the image name, the number of boxes, then x y w h score lines")
    try:
        count = int(lines[1].strip())
    except ValueError:
        raise BlazefaceError(f"{source}:2: expected the number of boxes, got {lines[1].strip()[:80]!r}") from None
    body = lines[2:]
    if count != len(body):
        raise BlazefaceError(f"{source}:2: says {count} boxes but {len(body)} box lines follow")
    if not body:
        return np.zeros((0, 5), np.float64)
    try:  # fast path: every line holds exactly five numbers
        rows = np.array([line.split() for line in body], dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != 5 or not np.isfinite(rows).all():
            raise ValueError
        return rows
    except ValueError:  # slow path: extra columns are allowed, anything else is named by line
        return np.array([_parse_row(line, source, k + 3) for k, line in enumerate(body)], dtype=np.float64)


def read_prediction_file(path: str | Path) -> np.ndarray:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except FileNotFoundError:
        raise BlazefaceError(f"{path}: no such prediction file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BlazefaceError(f"{path}: cannot read the prediction file ({exc})") from None
    return parse_predictions(text, path)


def find_prediction_keys(root: str | Path, gt: GroundTruth) -> list[str]:
    """Ground-truth images that have a prediction file under ``root``, in ground-truth order."""
    root = Path(root)
    return [k for k in gt.keys if prediction_path(root, k).is_file()]


def find_image_keys(images_dir: str | Path, gt: GroundTruth) -> list[str]:
    """Ground-truth images present under ``images_dir`` (``<event>/<name>.jpg``), in ground-truth order."""
    return [k for k in gt.keys if image_path(images_dir, k).is_file()]


def read_predictions(root: str | Path, keys: Sequence[str], allow_missing: bool = False
                     ) -> tuple[dict[str, np.ndarray], list[str]]:
    """Read ``<root>/<key>.txt`` for every key -> (predictions by key, keys whose file was missing).

    A missing file is an error naming it, or with ``allow_missing`` counts as no detections.
    """
    root = Path(root)
    if not root.is_dir():
        raise BlazefaceError(f"{root}: no such predictions folder")
    predictions: dict[str, np.ndarray] = {}
    missing: list[str] = []
    for key in keys:
        path = prediction_path(root, key)
        if not path.is_file():
            if not allow_missing:
                raise BlazefaceError(f"{path}: no prediction file for listed image {key} "
                                     f"(allow_missing=True counts it as no detections)")
            missing.append(key)
            predictions[key] = np.zeros((0, 5), np.float64)
            continue
        predictions[key] = read_prediction_file(path)
    return predictions, missing


def format_predictions(name: str, rows: np.ndarray) -> str:
    """One prediction file: the image name, the count, then ``x y w h score`` lines (rows in given order)."""
    lines = [name, str(len(rows))]
    b, s = BOX_DECIMALS, SCORE_DECIMALS
    lines += [f"{x:.{b}f} {y:.{b}f} {w:.{b}f} {h:.{b}f} {score:.{s}f}" for x, y, w, h, score in np.asarray(rows)[:, :5]]
    return "\n".join(lines) + "\n"


def write_predictions(root: str | Path, predictions: Mapping[str, np.ndarray]) -> None:
    """Write ``<root>/<event>/<name>.txt`` for every ``"event/name"`` key."""
    root = Path(root)
    for key, rows in predictions.items():
        path = prediction_path(root, key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(format_predictions(key.rsplit("/", 1)[-1], rows), encoding="utf-8")
        except OSError as exc:
            raise BlazefaceError(f"{path}: cannot write ({exc.strerror or exc})") from None


def faces_to_rows(faces) -> np.ndarray:
    """Detected faces (``Face`` with x1 y1 x2 y2 boxes) -> ``(n, 5)`` ``x y w h score`` rows by descending
    score, rounded exactly as :func:`format_predictions` writes them."""
    faces = sorted(faces, key=lambda f: -float(f.score))
    if not faces:
        return np.zeros((0, 5), np.float64)
    boxes = np.array([f.box for f in faces], np.float64).reshape(-1, 4)
    scores = np.array([f.score for f in faces], np.float64)
    rows = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2], scores])
    return parse_predictions(format_predictions("x", rows))


# --------------------------------------------------------------------------------------------------
# Running a detector over a folder


def detect_grouped(detector, paths: Sequence[str | Path], batch_size: int = 1, progress: bool = True,
                   desc: str = "detect", max_pending: int = 64) -> list[list]:
    """``detector.detect_batch`` over image files, batching only images of the same network input size.

    Images of one batch then need no padding, so every image gets exactly what single-image inference
    gives it. Images wait in per-size buckets (at most ``max_pending`` decoded images in all); results come
    back in the order of ``paths``.
    """
    from tqdm import tqdm

    results: list = [None] * len(paths)
    buckets: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = defaultdict(list)
    pending = 0
    # disable=None: a bar only on a terminal.
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=None if progress else True, leave=False)

    def flush(size):
        nonlocal pending
        items = buckets.pop(size)
        for (index, _), faces in zip(items, detector.detect_batch([im for _, im in items], batch_size=len(items))):
            results[index] = faces
        pending -= len(items)
        bar.update(len(items))

    try:
        for index, path in enumerate(paths):
            image = read_image(path)
            size = detector.letterbox(image.shape[1], image.shape[0]).input_size
            buckets[size].append((index, image))
            pending += 1
            if len(buckets[size]) >= batch_size:
                flush(size)
            elif pending >= max_pending:
                flush(max(buckets, key=lambda s: len(buckets[s])))
        for size in list(buckets):
            flush(size)
    finally:
        bar.close()
    return results


def predict_folder(detector, images_dir: str | Path, image_names: Sequence[str], batch_size: int = 1,
                   progress: bool = True) -> dict[str, np.ndarray]:
    """Run ``detector`` (a :class:`~blazeface.inference.FaceDetector`) over ``<images_dir>/<event>/<name>.jpg``
    for every ``"event/name"`` -> ``x y w h score`` rows by image, as :func:`write_predictions` writes them."""
    paths = [image_path(images_dir, key) for key in image_names]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise BlazefaceError(f"{missing[0]}: no such image{more}")
    faces = detect_grouped(detector, paths, batch_size=batch_size, progress=progress, desc="WIDER FACE")
    return {key: faces_to_rows(f) for key, f in zip(image_names, faces)}


# --------------------------------------------------------------------------------------------------
# The protocol


@dataclass
class PRCurve:
    """Dataset precision and recall at each threshold (``thresholds`` descending)."""

    thresholds: np.ndarray  # (T,)
    precision: np.ndarray  # (T,), nan where no prediction passes
    recall: np.ndarray  # (T,)
    proposals: np.ndarray  # (T,) int: non-ignored predictions counted
    true_positives: np.ndarray  # (T,) int
    faces: int  # kept faces, the recall denominator


@dataclass
class WiderFaceResult:
    easy: float
    medium: float
    hard: float
    images: int  # evaluated images (including any without a face)
    curves: dict[str, PRCurve] = field(default_factory=dict)
    predictions: int = 0

    def ap(self, setting: str) -> float:
        return {"easy": self.easy, "medium": self.medium, "hard": self.hard}[setting]

    def to_dict(self) -> dict:
        clean = lambda v: None if math.isnan(v) else float(v)  # noqa: E731
        return {"easy": clean(self.easy), "medium": clean(self.medium), "hard": clean(self.hard),
                "images": self.images}


def box_overlaps(pred_xywh: np.ndarray, gt_xywh: np.ndarray) -> np.ndarray:
    """``(P, G)`` IoU of ``x y w h`` boxes, +1 pixel convention, same float operations as the reference
    (which turns ``x y w h`` into corners as ``x2 = x + w``)."""
    p = np.asarray(pred_xywh, np.float64).reshape(-1, 4)
    g = np.asarray(gt_xywh, np.float64).reshape(-1, 4)
    return box_iou_pixel(np.concatenate([p[:, :2], p[:, :2] + p[:, 2:]], 1),
                         np.concatenate([g[:, :2], g[:, :2] + g[:, 2:]], 1))


def _best_matches(pred_xywh: np.ndarray, gt_xywh: np.ndarray, chunk: int = 1 << 21) -> tuple[np.ndarray, np.ndarray]:
    """Per prediction: highest IoU over the faces and the (first) face reaching it."""
    rows = max(1, chunk // max(1, len(gt_xywh)))
    best_iou = np.empty(len(pred_xywh))
    best_gt = np.empty(len(pred_xywh), np.int64)
    for start in range(0, len(pred_xywh), rows):
        iou = box_overlaps(pred_xywh[start:start + rows], gt_xywh)
        arg = iou.argmax(axis=1)
        best_gt[start:start + rows] = arg
        best_iou[start:start + rows] = iou[np.arange(len(arg)), arg]
    return best_iou, best_gt


def normalize_scores(scores: np.ndarray) -> np.ndarray:
    """The reference's min-max normalisation over all predictions (running min from 1, max from 0).

    All-equal scores (an empty range) map to 1: every prediction passes every threshold.
    """
    scores = np.asarray(scores, np.float64)
    if scores.size == 0:
        return scores.copy()
    lo = min(1.0, float(scores.min()))
    hi = max(0.0, float(scores.max()))
    if hi - lo <= 0:
        return np.ones_like(scores)
    return (scores - lo) / (hi - lo)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point interpolated AP (precision envelope, summed where recall changes)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def thresholds(num: int = NUM_THRESHOLDS) -> np.ndarray:
    """``1 - t/num`` for t = 1..num, descending (the same doubles the reference computes)."""
    return 1 - np.arange(1, num + 1) / num


@dataclass(frozen=True)
class ImageMatches:
    """One image's predictions matched to its faces (steps 2-3): all the protocol needs of the image, so that a
    resampled set of images (benchmarks/compare_ap.py draws them with replacement) is counted without
    matching again."""

    scores: np.ndarray  # (n,) raw scores in file order
    best_iou: np.ndarray  # (n,) highest IoU over the image's faces; empty when it has none
    best_face: np.ndarray  # (n,) the (first) face reaching it
    keep: Mapping[str, np.ndarray]  # setting -> indices of the faces kept in it
    faces: int


def match_images(predictions: Mapping[str, np.ndarray], gt: GroundTruth) -> list[ImageMatches]:
    """``"event/name"`` -> ``(n, 5)`` ``x y w h score`` rows in file order, each matched to the image's faces
    of ``gt``; an image without detections maps to an empty array."""
    indices = []
    for key in predictions:
        if key not in gt.index:
            raise BlazefaceError(f"{key}: not an image of the ground truth")
        indices.append(gt.index[key])
    if len(set(indices)) != len(indices):
        raise BlazefaceError("an image is given twice")
    matches = []
    for key, i in zip(predictions, indices):
        rows = np.asarray(predictions[key], np.float64)
        if rows.size == 0:
            rows = rows.reshape(0, 5)
        if rows.ndim != 2 or rows.shape[1] < 5:
            raise BlazefaceError(f"{key}: predictions must be (n, 5) x y w h score rows, got shape {rows.shape}")
        faces = gt.boxes[i]
        if len(faces) and len(rows):
            best_iou, best_face = _best_matches(rows[:, :4], faces)
        else:
            best_iou, best_face = np.zeros(0), np.zeros(0, np.int64)
        matches.append(ImageMatches(rows[:, 4].copy(), best_iou, best_face,
                                    {s: gt.keep[s][i] for s in SETTINGS}, len(faces)))
    return matches


def evaluate_predictions(predictions: Mapping[str, np.ndarray], gt: GroundTruth,
                         iou_threshold: float = IOU_THRESHOLD, num_thresholds: int = NUM_THRESHOLDS
                         ) -> WiderFaceResult:
    """Easy / medium / hard AP of ``predictions`` (``"event/name"`` -> ``(n, 5)`` ``x y w h score`` rows in
    file order) over exactly those images of ``gt``; an image without detections maps to an empty array."""
    return evaluate_matches(match_images(predictions, gt), iou_threshold, num_thresholds)


def evaluate_matches(matches: Sequence[ImageMatches], iou_threshold: float = IOU_THRESHOLD,
                     num_thresholds: int = NUM_THRESHOLDS) -> WiderFaceResult:
    """Easy / medium / hard AP of matched images (:func:`match_images`); an image may appear more than once,
    each time counted as an image of its own."""
    # 1. Normalise over every prediction of the evaluated images.
    counts = np.array([len(m.scores) for m in matches], np.int64)
    all_scores = normalize_scores(np.concatenate([m.scores for m in matches]) if matches else np.zeros(0))
    offsets = np.concatenate(([0], np.cumsum(counts)))

    # 3. Each prediction's best face (shared by the three settings). Predictions of images without faces (2.)
    # are dropped here; faces get global indices.
    face_offsets = np.concatenate(([0], np.cumsum([m.faces for m in matches]))).astype(np.int64)
    sel_img, sel_pred, sel_iou, sel_gt = [], [], [], []
    for n, m in enumerate(matches):
        if len(m.best_iou) == 0:
            continue
        sel_img.append(np.full(len(m.best_iou), n, np.int64))
        sel_pred.append(np.arange(offsets[n], offsets[n + 1]))
        sel_iou.append(m.best_iou)
        sel_gt.append(m.best_face + face_offsets[n])
    cat = lambda parts, dtype: np.concatenate(parts) if parts else np.zeros(0, dtype)  # noqa: E731
    img_of = cat(sel_img, np.int64)
    scores = all_scores[cat(sel_pred, np.int64)]
    best_iou = cat(sel_iou, np.float64)
    best_gt = cat(sel_gt, np.int64)
    matched = best_iou >= iou_threshold

    # 4. The last prediction of each image passing each threshold (index into the selected predictions).
    ths = thresholds(num_thresholds)
    first_t = num_thresholds - np.searchsorted(ths[::-1], scores, side="right")  # first threshold passed
    passing = first_t < num_thresholds
    last = np.full((len(matches), num_thresholds), -1, np.int64)
    np.maximum.at(last, (img_of[passing], first_t[passing]), np.flatnonzero(passing))
    last = np.maximum.accumulate(last, axis=1)
    valid = last >= 0
    upto = np.where(valid, last + 1, 0)  # predictions counted: cumulative sums below end at upto
    # Cumulative counts restart at each image: subtract the count before the image's first prediction.
    image_start = np.full(len(matches), 0, np.int64)
    if len(img_of):
        starts = np.flatnonzero(np.r_[True, img_of[1:] != img_of[:-1]])
        image_start[img_of[starts]] = starts

    curves: dict[str, PRCurve] = {}
    aps: dict[str, float] = {}
    for setting in SETTINGS:
        kept = np.zeros(int(face_offsets[-1]), bool)
        for n, m in enumerate(matches):
            kept[face_offsets[n] + m.keep[setting]] = True
        num_faces = sum(len(m.keep[setting]) for m in matches)  # the reference counts list lengths
        hit_kept = matched & kept[best_gt]
        proposal = ~(matched & ~hit_kept)  # a match to a face outside the setting is ignored
        candidates = np.flatnonzero(hit_kept)
        first_hit = np.zeros(len(scores), bool)
        first_hit[candidates[np.unique(best_gt[candidates], return_index=True)[1]]] = True
        cum_tp = np.concatenate(([0], np.cumsum(first_hit)))
        cum_prop = np.concatenate(([0], np.cumsum(proposal)))
        base = image_start[:, None]
        tp = np.where(valid, cum_tp[upto] - cum_tp[base], 0).sum(axis=0)
        prop = np.where(valid, cum_prop[upto] - cum_prop[base], 0).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = tp / prop
            recall = tp / num_faces if num_faces else np.full(num_thresholds, np.nan)
        aps[setting] = voc_ap(recall, np.where(prop > 0, precision, 0.0)) if num_faces else float("nan")
        curves[setting] = PRCurve(ths, precision, recall, prop, tp, num_faces)
    return WiderFaceResult(aps["easy"], aps["medium"], aps["hard"], images=len(matches), curves=curves,
                           predictions=int(counts.sum()))
