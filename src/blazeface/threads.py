"""One thread policy per process: how many CPU threads torch, ONNX Runtime, ncnn and OpenCV may use.

The CLI calls :func:`configure` once, from ``--threads`` (every command has it); runners built afterwards
without an explicit ``threads`` take :func:`current`. Library users who never call it get each library's
own default, as before.

Default: one thread. Measured with ``benchmarks/bench_threads.py`` (ONNX Runtime, 640x480, 2-core VM with a
training run busy on both cores): a second thread made single images of blaze 1.4x slower and of slim no
faster, and batches of 8 at most 1.09x faster; with torch, 2 threads (its default here) made ``blur`` run at
4.3 frames/s against 10.9 with one beside another busy process. Video is a stream of single images. One
thread per process is also what scales: run one process per core for throughput.
"""
from __future__ import annotations

import os

DEFAULT_THREADS = 1

_configured: int | None = None


def cpu_count() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def resolve(threads: int | None) -> int:
    """``threads`` (None or 0: the default), never more than the cores available."""
    if threads is not None and threads < 0:
        from .errors import BlazefaceError

        raise BlazefaceError(f"--threads must be >= 0 (0: the default), not {threads}")
    return min(threads or DEFAULT_THREADS, cpu_count())


def configure(threads: int | None = None) -> int:
    """Set the thread count for the whole process (torch, OpenCV now; ONNX Runtime and ncnn runners made
    later read :func:`current`). Returns the count set."""
    global _configured
    count = resolve(threads)
    import cv2
    import torch

    cv2.setNumThreads(count)
    torch.set_num_threads(count)
    try:
        torch.set_num_interop_threads(count)
    except RuntimeError:  # only settable before torch's first parallel work; intra-op is what matters
        pass
    # OpenMP pools started later (ncnn's, onnxruntime's optional ones) read this.
    os.environ["OMP_NUM_THREADS"] = str(count)
    _configured = count
    return count


def current() -> int | None:
    """The count set by :func:`configure`, or None when it was never called (libraries keep their default)."""
    return _configured
