"""The training dataset (augment + match in the worker) and the seeded mixer over several sources.

Typical use by the trainer::

    dataset, sampler = build_training_data(["../shared/data/widerface/train", "../shared/data/mtfl/train:0.2"],
                                           get_config("blaze"), seed=0)
    loader = DataLoader(dataset, batch_size=32, sampler=sampler, num_workers=8, collate_fn=collate,
                        worker_init_fn=worker_init, drop_last=True)
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch, start=batches_done * 32 if epoch == start_epoch else 0)
        for images, targets in loader: ...

The sampler yields ``(index, sample_seed)`` pairs; the dataset seeds the augmentation of that item from the
pair, so a run resumed at (epoch, position) sees exactly the images AND the crops it would have seen.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..config import ModelConfig
from ..errors import BlazefaceError
from ..priors import prior_boxes
from ..matching import PriorMatcher
from .labels import Sample, clip_to_images, load_source
from .transforms import build_preset, make_target, mosaic

log = logging.getLogger(__name__)

# Distinct first words of the seed sequences, so the per-source, per-epoch and per-sample streams never
# coincide for one user seed.
_SOURCE_STREAM, _ORDER_STREAM, _SAMPLE_STREAM, _AUGMENT_STREAM = 1, 2, 3, 4
MAX_SKIPS = 100  # unreadable images skipped in a row before giving up on a data set


class FaceTrainingDataset(Dataset):
    """``dataset[i]`` or ``dataset[(i, sample_seed)]`` -> ``(image (3, S, S) float32, targets)`` where
    ``targets`` are :func:`~blazeface.matching.match`'s per-prior tensors against
    ``prior_boxes(model_config.priors, S, S)`` (``match_options`` go to its
    :class:`~blazeface.matching.PriorMatcher`).

    ``size`` defaults to ``model_config.train.input_size``; ``preset`` is a preset name of
    :func:`~blazeface.data.transforms.build_preset` (``preset_options`` go to it, e.g.
    ``{"zoom_out_p": 0.5}``) or any ``(image, target, rng) -> (tensor, target)`` callable ending in
    ``ToTensor``. A plain integer index augments with fresh randomness; a pair seeds it (``seed`` mixes in,
    so two runs with different seeds differ). An unreadable image is skipped with one warning line naming
    it and the next sample is used instead (deterministically).

    ``cache_images`` keeps every decoded photo in this process (each data worker holds its own copy, filled in
    the first epoch: about 3.5 GB for WIDER train + facemask + MTFL): decoding is a third of a sample's CPU
    time, which is what bounds a GPU run. Off by default (a 2-core machine's step is bound by the model).

    ``mosaic_p``: the chance that an exhaustively labelled photo is first tiled with three others drawn from
    the exhaustively labelled ones (:func:`~blazeface.data.transforms.mosaic`) before the augmentation; photos
    with unlabelled faces (MTFL) are never tiled.

    :meth:`set_teacher_candidates`: for each sample index, a teacher's candidate faces of the whole photo as a
    dict of :data:`~blazeface.data.transforms.TEACHER_KEYS` arrays in pixels; they join the target before the
    augmentation, which moves them with the crop. Target entries the preset adds whose names start with
    ``prior_`` are per-prior tensors already (a teacher's targets on the student's priors): they are returned
    beside the matcher's.
    """

    def __init__(self, samples: Sequence[Sample], model_config: ModelConfig, size: int | None = None,
                 preset: str | Callable = "small-faces", seed: int = 0, preset_options: dict | None = None,
                 cache_images: bool = False, mosaic_p: float = 0.0, **match_options):
        self.samples = list(samples)
        if not 0 <= mosaic_p <= 1:
            raise BlazefaceError(f"the mosaic probability must lie in [0, 1], got {mosaic_p:g}")
        self.mosaic_p = float(mosaic_p)
        self.exhaustive = np.flatnonzero([s.exhaustive for s in self.samples])
        self.fill = tuple(model_config.mean_bgr)
        self.teacher_candidates: Sequence[dict] | None = None
        self.size = int(size or model_config.train.input_size)
        if self.size % max(model_config.size_multiple, 1):
            raise BlazefaceError(f"training size {self.size} is not a multiple of {model_config.size_multiple}, "
                                 f"which {model_config.name} needs")
        self.priors = torch.from_numpy(prior_boxes(model_config.priors, self.size, self.size).copy())
        match_options.setdefault("variances", tuple(model_config.priors.variances))
        self.matcher = PriorMatcher(self.priors, **match_options)
        self.transform = (build_preset(preset, self.size, model_config.mean_bgr, **(preset_options or {}))
                          if isinstance(preset, str) else preset)
        self.seed = int(seed)
        self._warned: set[Path] = set()
        self._cache: dict[int, np.ndarray] | None = {} if cache_images else None
        self.owner_pid = os.getpid()  # the training process; DataLoader workers watch it (worker_init)

    def __len__(self) -> int:
        return len(self.samples)

    def set_teacher_candidates(self, candidates: Sequence[dict] | None) -> None:
        if candidates is not None and len(candidates) != len(self.samples):
            raise BlazefaceError(f"teacher candidates for {len(candidates)} photos, {len(self.samples)} "
                                 "training photos")
        self.teacher_candidates = candidates

    def __getitem__(self, item):
        index, sample_seed = item if isinstance(item, tuple) else (item, None)
        index = int(index)
        rng = (np.random.default_rng() if sample_seed is None
               else np.random.default_rng([self.seed, _AUGMENT_STREAM, int(sample_seed)]))
        exhaustive, image, target = self._photo(index)
        # (No draw at all when mosaics are off: the augmentation stream stays what it was before they existed.)
        if self.mosaic_p > 0 and exhaustive and rng.random() < self.mosaic_p:
            tiles = [(image, target)] + [self._photo(int(k))[1:] for k in rng.choice(self.exhaustive, 3)]
            image, target = mosaic([tiles[i] for i in rng.permutation(4)], self.fill)
        tensor, target = self.transform(image, target, rng)
        targets = self.matcher(target["boxes"], target["landmarks"], target["has_landmarks"],
                               target["landmark_weight"], target["ignore_background"],
                               face_weight=target.get("face_weight"), ignore_boxes=target.get("ignore_boxes"))
        targets.update({key: value for key, value in target.items() if key.startswith("prior_")})
        return tensor, targets

    def _photo(self, index: int) -> tuple[bool, np.ndarray, dict]:
        """The first readable sample at or after ``index``: whether it is exhaustively labelled, its photo, and its
        target (copies of its labels and, when set, its photo's teacher candidates, in pixels)."""
        k, sample, image = self._read_from(index)
        target = make_target(sample.boxes, sample.landmarks, sample.has_landmarks, sample.landmark_weight,
                             ignore_background=not sample.exhaustive)
        if self.teacher_candidates is not None:
            target.update(self.teacher_candidates[k])
        return sample.exhaustive, image, target

    def _read_from(self, index: int) -> tuple[int, Sample, np.ndarray]:
        """The first readable image at or after ``index`` (wrapping), with its index."""
        for step in range(min(MAX_SKIPS, len(self.samples))):
            k = (index + step) % len(self.samples)
            sample = self.samples[k]
            image = self._cache.get(k) if self._cache is not None else None
            if image is None:
                image = cv2.imread(str(sample.image_path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
                if image is not None and self._cache is not None:
                    image.setflags(write=False)  # a transform writing into its input would corrupt the cache
                    self._cache[k] = image
            if image is not None:
                return k, sample, image
            if sample.image_path not in self._warned:
                self._warned.add(sample.image_path)
                log.warning("skipping unreadable training image %s", sample.image_path)
        raise BlazefaceError(f"{self.samples[index].image_path}: this and the next {MAX_SKIPS - 1} training images "
                             f"are unreadable")


def collate(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stack images to (B, 3, S, S) and every target to (B, P, ...)."""
    images = torch.stack([image for image, _ in batch])
    keys = batch[0][1].keys()
    return images, {k: torch.stack([t[k] for _, t in batch]) for k in keys}


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one thread per worker (the workers are the parallelism; OpenCV's
    own pool would oversubscribe the cores and can hang after fork), and a watchdog that ends the worker
    when the training process is gone (killed with SIGKILL, it cannot stop its workers itself; they come
    from a fork server, so torch's own check of the parent process watches the fork server instead)."""
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    info = torch.utils.data.get_worker_info()
    owner = getattr(info.dataset, "owner_pid", None) if info is not None else None
    if owner and owner != os.getpid():
        threading.Thread(target=_exit_when_gone, args=(owner,), name="owner-watchdog", daemon=True).start()


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (not Linux): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _exit_when_gone(pid: int, interval: float = 1.0) -> None:
    while process_alive(pid):
        time.sleep(interval)
    os._exit(0)  # the owner is gone: nobody reads this worker's batches


@dataclass(frozen=True)
class DataSpec:
    path: Path
    weight: float | None = None  # relative share of each epoch; None = the source's size


def parse_data_spec(spec: str | DataSpec) -> DataSpec:
    """``"DIR"`` or ``"DIR:WEIGHT"`` (the part after the last colon counts as a weight only when it is a
    number, so paths with colons still work)."""
    if isinstance(spec, DataSpec):
        return spec
    head, sep, tail = str(spec).rpartition(":")
    if sep and head:
        try:
            weight = float(tail)
        except ValueError:
            return DataSpec(Path(spec))
        if not np.isfinite(weight) or weight < 0:
            raise BlazefaceError(f"data={spec!r}: the weight must be a number >= 0")
        return DataSpec(Path(head), weight)
    return DataSpec(Path(spec))


def _split_counts(shares: np.ndarray, total: int) -> np.ndarray:
    """Integers proportional to ``shares`` summing to ``total`` (largest remainder)."""
    exact = shares / shares.sum() * total
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]] += 1
    return counts


class MixedSampler(Sampler):
    """Draws every epoch ``counts[i]`` items from source ``i`` (proportional to its weight; an epoch is
    ``epoch_size`` items, default the total size), interleaved at random, as ``(index, sample_seed)``.

    Deterministic given ``seed`` and the epoch: each source is read through an endless chain of seeded
    permutations, epoch ``e`` taking the next ``counts[i]`` of them, so over epochs every image of a source
    is used equally often even when its share is smaller or larger than its size. ``set_epoch(epoch,
    start)`` selects the epoch and skips its first ``start`` items (resuming mid-epoch)."""

    def __init__(self, source_sizes: Sequence[int], weights: Sequence[float | None] | None = None,
                 epoch_size: int | None = None, seed: int = 0):
        self.sizes = np.asarray(source_sizes, dtype=np.int64)
        if self.sizes.ndim != 1 or self.sizes.size == 0:
            raise BlazefaceError("the sampler needs at least one data source")
        weights = [None] * len(self.sizes) if weights is None else list(weights)
        if len(weights) != len(self.sizes):
            raise BlazefaceError("one weight per data source, please")
        shares = np.array([float(n) if w is None else float(w) for w, n in zip(weights, self.sizes)])
        if shares.sum() <= 0:
            raise BlazefaceError("the data weights add up to 0: nothing to train on")
        for i, (n, share) in enumerate(zip(self.sizes, shares)):
            if n == 0 and share > 0:
                raise BlazefaceError(f"data source {i} has no images but a weight of {share:g}")
        self.epoch_size = int(epoch_size if epoch_size is not None else self.sizes.sum())
        self.counts = _split_counts(shares, self.epoch_size)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.seed = int(seed)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        if not 0 <= start <= self.epoch_size:
            raise BlazefaceError(f"start {start} is outside the epoch of {self.epoch_size} items")
        self.epoch, self.start = int(epoch), int(start)

    def _source_draws(self, source: int, epoch: int) -> np.ndarray:
        n, count = int(self.sizes[source]), int(self.counts[source])
        if count == 0:
            return np.empty(0, np.int64)
        first, last = epoch * count, (epoch + 1) * count  # positions in the source's endless chain
        blocks = range(first // n, (last - 1) // n + 1)
        chain = np.concatenate([np.random.default_rng([self.seed, _SOURCE_STREAM, source, k]).permutation(n)
                                for k in blocks])
        begin = first - blocks.start * n
        return chain[begin: begin + count] + self.offsets[source]

    def epoch_items(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices, sample seeds) of a whole epoch, in order."""
        indices = np.concatenate([self._source_draws(i, epoch) for i in range(len(self.sizes))])
        indices = indices[np.random.default_rng([self.seed, _ORDER_STREAM, epoch]).permutation(indices.size)]
        seeds = np.random.default_rng([self.seed, _SAMPLE_STREAM, epoch]).integers(0, 2**62, indices.size)
        return indices, seeds

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices, seeds = self.epoch_items(self.epoch)
        return iter(zip(indices[self.start:].tolist(), seeds[self.start:].tolist()))

    def __len__(self) -> int:
        return self.epoch_size - self.start


def build_training_data(specs: Sequence[str | DataSpec], model_config: ModelConfig, size: int | None = None,
                        preset: str | Callable = "small-faces", seed: int = 0, epoch_size: int | None = None,
                        preset_options: dict | None = None, cache_images: bool = False, mosaic_p: float = 0.0,
                        **match_options
                        ) -> tuple[FaceTrainingDataset, MixedSampler]:
    """Load every ``DIR[:WEIGHT]`` source and return the dataset over all of them with its mixer."""
    parsed = [parse_data_spec(s) for s in specs]
    sources = [load_source(spec.path) for spec in parsed]
    for spec, samples in zip(parsed, sources):
        clip_to_images(samples)
        dropped = ", ".join(f"{n} {why}" for why, n in samples.dropped.items())
        log.info("data %s: %d images, %d faces%s%s", spec.path, len(samples), samples.num_faces,
                 f", {samples.clipped} boxes clipped to their image" if samples.clipped else "",
                 f" (left out {dropped})" if dropped else "")
    samples = [s for source in sources for s in source]
    dataset = FaceTrainingDataset(samples, model_config, size, preset, seed, preset_options, cache_images,
                                  mosaic_p, **match_options)
    sampler = MixedSampler([len(s) for s in sources], [spec.weight for spec in parsed], epoch_size, seed)
    return dataset, sampler
