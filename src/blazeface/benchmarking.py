"""Latency measurement of the detection pipeline, stage by stage (what ``blazeface bench`` reports).

One :class:`BenchSession` times one configuration (model, backend, image size, threads) on one image
with the stage times :class:`~blazeface.inference.FaceDetector` measures itself (``detector.timings``):

* preprocess: input check, letterbox size, batch buffer, resize (none when the image already has the
  input size), mean subtraction, HWC -> CHW;
* inference: the backend runner;
* postprocess: the shared :func:`~blazeface.postprocess.postprocess` (threshold, top-k, decode, NMS,
  keep-top-k) and the mapping back to image pixels;
* total: the whole span, measured as one interval (its median is not the sum of the stage medians).

Several sessions are timed interleaved (:func:`bench_many`): a round runs a few repeats of each in
turn, so load from other processes falls on all of them alike. Reported numbers are medians in ms.
"""
from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import defaults
from .inference import STAGES, FaceDetector

SAMPLE = Path(__file__).resolve().parent / "assets" / "sample.jpg"


def bench_image(size: tuple[int, int], image=None) -> np.ndarray:
    """The benchmark image: ``image`` (a path or BGR array; default the bundled CC0 sample) resized to
    exactly ``size`` (width, height), so the detector's input is that size with no resize step."""
    import cv2

    from .io import as_bgr

    bgr = as_bgr(SAMPLE if image is None else image)
    if (bgr.shape[1], bgr.shape[0]) != tuple(size):
        bgr = cv2.resize(bgr, tuple(size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(bgr)


def set_threads(threads: int | None) -> None:
    """Thread count for the libraries every backend shares (OpenCV, PyTorch); runners set their own."""
    if not threads:
        return
    import cv2
    import torch

    cv2.setNumThreads(int(threads))
    torch.set_num_threads(int(threads))


@dataclass
class BenchResult:
    model: str
    backend: str
    size: tuple[int, int]
    threads: int | None
    samples: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    faces: int = 0

    @property
    def repeats(self) -> int:
        return len(self.samples["total"])

    def medians(self) -> dict[str, float]:
        """``{"preprocess", "inference", "postprocess", "total"}``: medians in ms."""
        return {s: round(statistics.median(v), 3) if v else float("nan") for s, v in self.samples.items()}

    def to_dict(self) -> dict:
        return {"model": self.model, "backend": self.backend, "size": f"{self.size[0]}x{self.size[1]}",
                "threads": self.threads, "repeats": self.repeats, "faces": self.faces, **self.medians()}


class BenchSession:
    """A detector configuration ready to be timed; ``once()`` runs the pipeline and returns stage times."""

    def __init__(self, model: str | None, weights=None, backend: str | None = None,
                 size: tuple[int, int] = (640, 480), threads: int | None = 1, image=None, conf: float = defaults.CONF,
                 nms: float = defaults.NMS, top_k: int = defaults.TOP_K, keep_top_k: int = defaults.KEEP_TOP_K):
        set_threads(threads)
        self.image = bench_image(size, image)
        # long side = the image's: the network input is the image itself (padded for blaze if needed).
        self.detector = FaceDetector(model, weights, backend=backend, long_side=max(size), conf=conf, nms=nms,
                                     top_k=top_k, keep_top_k=keep_top_k, threads=threads)
        self.result = BenchResult(self.detector.model_name, self.detector.runner.name, tuple(size), threads)

    def once(self) -> dict[str, float]:
        faces = self.detector.detect(self.image)
        self.result.faces = len(faces)
        return dict(self.detector.timings)

    def warmup(self, n: int) -> None:
        for _ in range(n):
            self.once()

    def run(self, n: int) -> dict[str, list[float]]:
        """Time ``n`` runs; the samples are also added to ``self.result``."""
        out = {s: [] for s in STAGES}
        for _ in range(n):
            for stage, ms in self.once().items():
                out[stage].append(ms)
                self.result.samples[stage].append(ms)
        return out


def bench_many(sessions: list[BenchSession], repeats: int = 50, warmup: int = 5, per_round: int = 5,
               seed: int = 0) -> list[BenchResult]:
    """Time several sessions interleaved: rounds of ``per_round`` runs each, in a shuffled order per round,
    until each has ``repeats`` runs. Returns their results (medians via ``result.medians()``)."""
    for s in sessions:
        s.warmup(warmup)
    rng = random.Random(seed)
    done = 0
    while done < repeats:
        n = min(per_round, repeats - done)
        order = list(sessions)
        rng.shuffle(order)
        for s in order:
            s.run(n)
        done += n
    return [s.result for s in sessions]


def bench(model: str | None, weights=None, backend: str | None = None, size: tuple[int, int] = (640, 480),
          threads: int | None = 1, repeats: int = 50, warmup: int = 5, image=None,
          conf: float = defaults.CONF) -> BenchResult:
    """Median latency of one configuration (see the module docstring for what each stage holds)."""
    session = BenchSession(model, weights, backend, size, threads, image, conf=conf)
    return bench_many([session], repeats=repeats, warmup=warmup)[0]


def format_table(results: list[BenchResult]) -> str:
    rows = [("model", "backend", "size", "threads", "preprocess", "inference", "postprocess", "total", "faces")]
    for r in results:
        m = r.medians()
        rows.append((r.model, r.backend, f"{r.size[0]}x{r.size[1]}", str(r.threads or "default"),
                     *(f"{m[s]:.2f}" for s in STAGES), str(r.faces)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = set(range(3, 9))
    return "\n".join("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     .rstrip() for row in rows)
