"""Per-prior grid teachers (YuNet, CenterFace) computed once per training photo instead of once per crop
(``train --cache-teacher``).

Run on every crop, YuNet is on each step's critical path, the more so at 2x, where it finds the faces under ~10
pixels: slim distilled live from YuNet at 1x and 2x trains at 0.44x the untaught step's images/s on a CPU thread,
cached at 0.93x (``benchmarks/bench_train_step.py --cache-teacher``). Its candidate faces
(:meth:`~blazeface.training.teachers.GridTeacher.grid_candidates`: boxes, landmarks and score of every grid
cell above the carrier's threshold; several teachers' pooled, as their scales are) are geometry, though: computed
once on the whole photo at each scale, they follow a crop through the augmentation as the labels do
(:mod:`blazeface.data.transforms`) and are carried onto the student's priors in the data worker
(:class:`CarriedCandidates`), so the step pays nothing for the teacher.

What changes against the live teacher: YuNet sees the stored photo (at each of ``scales`` times its size), not
the crop as the student sees it (rescaled, tinted). A crop enlarged 2.5x then asks for the faces YuNet finds at
the photo's scale, and a zoomed-out crop for faces YuNet found before they were shrunk: closer to what a label
asks, which the ablation in docs/MODELS.md measures.

The candidates of a run are written once to ``OUT/teacher_candidates.npz`` (~100 MB for WIDER train + facemask + MTFL at 1x and 2x) and read back on resume
when the teacher, its scales, its threshold and the photos are the same. The file keeps the photos sorted by path
and a run reads them in its own order, so runs that list the same data folders in another order share it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from ..errors import BlazefaceError
from ..io import atomic_target
from .checkpointing import TEACHER_CANDIDATES_FILE
from .teachers import Candidates, GridTeacher, PriorMapping

# The per-prior targets CarriedCandidates adds to a sample (the dataset passes ``prior_*`` entries through).
CARRIED_KEYS = ("prior_kd_loc", "prior_kd_logits", "prior_kd_landm")


class PhotoCandidates:
    """Every training photo's teacher candidates, in pixels of the photo, flat: ``candidates[k]`` is photo
    ``k``'s as the dict the dataset merges into its target (copies: a transform may write into them).
    ``unreadable``: photos whose file could not be read when these were made (their candidates are empty)."""

    def __init__(self, scores: np.ndarray, boxes: np.ndarray, points: np.ndarray, offsets: np.ndarray,
                 unreadable: int = 0):
        self.scores, self.boxes, self.points, self.offsets = scores, boxes, points, offsets
        self.unreadable = unreadable

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, k: int) -> dict:
        a, b = int(self.offsets[k]), int(self.offsets[k + 1])
        return {"teacher_boxes": self.boxes[a:b].copy(), "teacher_points": self.points[a:b].copy(),
                "teacher_scores": self.scores[a:b].copy()}

    def take(self, photos: Sequence[int]) -> PhotoCandidates:
        """These candidates for the photos ``photos`` name, in that order: photo ``j`` of the result is photo
        ``photos[j]`` of these."""
        photos = np.asarray(photos, np.int64)
        starts, ends = self.offsets[:-1][photos], self.offsets[1:][photos]
        counts = ends - starts
        # Each kept candidate's index: its photo's start plus its rank within the photo.
        rank = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        rows = np.repeat(starts, counts) + rank
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return PhotoCandidates(self.scores[rows], self.boxes[rows], self.points[rows], offsets, self.unreadable)


def photo_candidates(teachers: Sequence[GridTeacher], image: np.ndarray, mean_bgr: Sequence[float],
                     min_probability: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One BGR uint8 photo's candidates of each teacher at each of its scales, concatenated, in the photo's
    pixels: ``scores`` (K,), ``boxes`` (K, 4), ``points`` (K, 5, 2)."""
    h, w = image.shape[:2]
    pixels = np.array([w, h], np.float32)
    scores, boxes, points = [], [], []
    for teacher, scale in ((t, s) for t in teachers for s in t.scales):
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        scaled = image if size == (w, h) else cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        batch = torch.from_numpy(scaled.transpose(2, 0, 1)[None].astype(np.float32))
        batch -= torch.tensor(mean_bgr, dtype=torch.float32).view(1, 3, 1, 1)
        found = teacher.grid_candidates(batch, mean_bgr, min_probability)[0]
        # Normalised to the scaled photo, i.e. to the photo: back to the photo's pixels.
        scores.append(found.probability.numpy())
        boxes.append((found.boxes.numpy().reshape(-1, 2, 2) * pixels).reshape(-1, 4))
        points.append(found.points.numpy().reshape(-1, 5, 2) * pixels)
    return (np.concatenate(scores).astype(np.float32), np.concatenate(boxes).astype(np.float32),
            np.concatenate(points).astype(np.float32))


def cache_key(teachers: Sequence[GridTeacher], image_paths: Sequence[Path], min_probability: float) -> str:
    """What the cached candidates depend on: each teacher file (name and size) and its scales, the threshold and
    the photos, sorted by path as the file keeps them (runs that list the same photos in another order share a
    cache). (One teacher's key keeps the form of the caches written before several could be.)"""
    photos = hashlib.sha256("\n".join(sorted(str(p) for p in image_paths)).encode()).hexdigest()
    each = [{"teacher": str(Path(t.path).resolve()), "bytes": Path(t.path).stat().st_size, "scales": list(t.scales)}
            for t in teachers]
    what = each[0] if len(each) == 1 else {"teachers": each}
    return json.dumps({**what, "min_probability": min_probability, "photos": photos, "count": len(image_paths)},
                      sort_keys=True)


_NONE = (np.zeros(0, np.float32), np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32))


def _photo_parts(teachers: Sequence[GridTeacher], path: Path, mean_bgr: Sequence[float],
                 min_probability: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """One photo file's candidates; None for an unreadable one (the dataset skips it)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        return None
    return photo_candidates(teachers, image, mean_bgr, min_probability)


def _chunk_parts(job: tuple) -> list[tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
    """A pool process's share: consecutive photos, on one thread (the pool is the parallelism)."""
    teachers, paths, mean_bgr, min_probability, onnx = job
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    if onnx:
        for teacher in teachers:
            teacher.use_onnx_runtime(threads=1)
    return [_photo_parts(teachers, path, mean_bgr, min_probability) for path in paths]


# Photos per pool task: small enough to balance the processes and report progress, large enough that the
# teacher's pickling and the result's transfer stay negligible.
_CHUNK = 40


def build_photo_candidates(teachers: Sequence[GridTeacher], image_paths: Sequence[Path], mean_bgr: Sequence[float],
                           min_probability: float, progress: bool = True, processes: int = 1,
                           onnx: bool = False) -> PhotoCandidates:
    """Run the teachers on every photo, in ``processes`` processes (each on one thread; the result does not
    depend on their number). ``onnx``: the pool's processes run the teachers in ONNX Runtime, as ``teachers``
    themselves do after ``use_onnx_runtime`` (a session does not pickle)."""
    chunks = [list(image_paths[i:i + _CHUNK]) for i in range(0, len(image_paths), _CHUNK)]
    with contextlib.ExitStack() as stack:
        if processes > 1 and len(chunks) > 1:
            # forkserver, as the data workers: a fork of a process holding OpenCV's and ONNX Runtime's thread
            # pools can deadlock.
            pool = stack.enter_context(multiprocessing.get_context("forkserver").Pool(min(processes, len(chunks))))
            results = pool.imap(_chunk_parts, [(teachers, chunk, tuple(mean_bgr), min_probability, onnx)
                                               for chunk in chunks])
        else:
            results = ([_photo_parts(teachers, path, mean_bgr, min_probability) for path in chunk] for chunk in chunks)
        found: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = []
        start = time.perf_counter()
        for parts in results:
            before = len(found)
            found.extend(parts)
            if progress and len(found) // 500 > before // 500:
                print(f"blazeface train: teacher candidates of {len(found)} / {len(image_paths)} photos "
                      f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    unreadable = sum(part is None for part in found)
    found = [_NONE if part is None else part for part in found]
    scores, boxes, points = (np.concatenate(parts) for parts in zip(_NONE, *found))
    counts = np.cumsum([0] + [len(part[0]) for part in found]).astype(np.int64)
    return PhotoCandidates(scores, boxes, points, counts, unreadable)


def save_photo_candidates(candidates: PhotoCandidates, key: str, path: Path) -> None:
    with atomic_target(path, durable=True) as partial:
        with open(partial, "wb") as fh:
            np.savez(fh, scores=candidates.scores, boxes=candidates.boxes, points=candidates.points,
                     offsets=candidates.offsets, key=np.array(key))


def load_photo_candidates(path: Path, key: str) -> PhotoCandidates | None:
    """The candidates saved at ``path`` when they were made with ``key``; None otherwise."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["key"]) != key:
                return None
            return PhotoCandidates(saved["scores"], saved["boxes"], saved["points"], saved["offsets"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise BlazefaceError(f"{path}: cannot read the cached teacher candidates ({exc}); delete it to "
                             "compute them again") from None


def shared_cache_path(folder: Path, key: str) -> Path:
    """Where a cache folder shared by runs (``train --teacher-cache DIR``) keeps the candidates made with ``key``."""
    return Path(folder) / f"teacher_candidates_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` becomes ``source``'s content: a hard link where the file system allows one (~100 MB saved per
    run), else a copy; either appears whole or not at all."""
    with atomic_target(target, durable=True) as partial:
        try:
            os.link(source, partial)
        except OSError:
            shutil.copyfile(source, partial)


def photo_candidates_for_run(teachers: Sequence[GridTeacher], image_paths: Sequence[Path], mean_bgr: Sequence[float],
                             min_probability: float, out: Path, processes: int = 1,
                             onnx: bool = False, shared: Path | None = None) -> PhotoCandidates:
    """The run folder's cached candidates when they match; else those a folder shared by runs (``shared``) holds
    for the same key, linked into the run folder; else computed now (:func:`build_photo_candidates`) and saved
    in both. Several runs of one data mix and teacher then pay the teachers' minutes once. Candidates made while
    a photo could not be read are used but not kept: the key names the photos, not whether they were there, and a
    later run with every photo in place would read the missing ones' candidates as empty.

    The file keeps the photos sorted by path (the key's order); the result is in ``image_paths``' order."""
    by_path = np.argsort([str(p) for p in image_paths], kind="stable")
    found = _photo_candidates_by_path(teachers, [image_paths[k] for k in by_path], mean_bgr, min_probability,
                                      out, processes, onnx, shared)
    if np.array_equal(by_path, np.arange(len(by_path))):
        return found
    return found.take(np.argsort(by_path))  # the run's photo k is the file's photo argsort(by_path)[k]


def _photo_candidates_by_path(teachers: Sequence[GridTeacher], sorted_paths: Sequence[Path],
                              mean_bgr: Sequence[float], min_probability: float, out: Path, processes: int,
                              onnx: bool, shared: Path | None) -> PhotoCandidates:
    """:func:`photo_candidates_for_run` for photos already in the file's order."""
    key = cache_key(teachers, sorted_paths, min_probability)
    path = Path(out) / TEACHER_CANDIDATES_FILE
    shared_path = shared_cache_path(shared, key) if shared is not None else None
    for source in (path, shared_path):
        found = load_photo_candidates(source, key) if source is not None else None
        if found is not None:
            if source != path:
                _link_or_copy(source, path)
            return found
    found = build_photo_candidates(teachers, sorted_paths, mean_bgr, min_probability, processes=processes,
                                   onnx=onnx)
    if found.unreadable:
        print(f"blazeface train: {found.unreadable} of {len(sorted_paths)} photos could not be read; their teacher "
              "candidates are not kept for later runs", file=sys.stderr)
        return found
    save_photo_candidates(found, key, path)  # atomic_target makes the run folder
    if shared_path is not None:
        _link_or_copy(path, shared_path)
    return found


@dataclass
class CarriedCandidates:
    """An augmentation preset (any ``(image, target, rng) -> (tensor, target)`` ending in ``ToTensor``, e.g. a
    :class:`~blazeface.training.teachers.TeacherLabelling` with detection teachers) followed by the carry of the
    crop's teacher candidates onto the student's priors (:meth:`PriorMapping.carry`): the sample's target gains
    :data:`CARRIED_KEYS`, the per-prior ``(loc, logits, landm)`` a live per-prior teacher would give for this
    crop."""

    preset: Callable
    carrier: PriorMapping

    def __call__(self, image, target, rng=None):
        tensor, target = self.preset(image, target, rng)
        height, width = tensor.shape[-2:]
        found = Candidates(target.pop("teacher_scores"), target.pop("teacher_boxes"),
                           target.pop("teacher_points").reshape(-1, 10))
        carried = self.carrier.carry([found], height, width)
        target.update({key: value[0] for key, value in zip(CARRIED_KEYS, carried)})
        return tensor, target
