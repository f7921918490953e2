"""The line protocol between benchmarks/bench_peers.py and a driver running in its own environment.

Standard library only: drivers run inside peer virtual environments that do not have blazeface.

The driver prints one JSON line ``{"ready": [names...]}`` once its contenders are loaded and warmed
up, then answers each request line ``{"name": NAME, "n": N}`` with ``{"samples": [{stage: ms}, ...]}``
(N runs). Anything the libraries print goes to stderr: the protocol owns the original stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Callable


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--image", required=True, help=".npy file holding the BGR uint8 image")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--conf", type=float, default=0.5)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--config", default="{}", help="driver-specific JSON")
    return p.parse_args(argv)


def load_image(path: str):
    import numpy as np

    return np.ascontiguousarray(np.load(path))


def _protocol_stream():
    # Keep the real stdout for the protocol; point fd 1 (C libraries' printf, glog, ...) at stderr.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def serve(build: Callable[[], dict[str, Callable[[], dict[str, float]]]], warmup: int = 5) -> None:
    """``build()`` returns {name: run_once}, where run_once() times one detection and returns {stage: ms}."""
    out = _protocol_stream()
    try:
        contenders = build()
        for fn in contenders.values():
            for _ in range(warmup):
                fn()
    except Exception as exc:  # report why, in one line, then leave
        traceback.print_exc()
        out.write(json.dumps({"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}) + "\n")
        return
    out.write(json.dumps({"ready": list(contenders)}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        fn = contenders[request["name"]]
        out.write(json.dumps({"samples": [fn() for _ in range(int(request["n"]))]}) + "\n")


def timed(fn: Callable[[], int]) -> Callable[[], dict[str, float]]:
    """Wrap an end-to-end call (image in, number of faces out) as a run_once reporting "total" (ms) and
    "faces" (the count, a sanity check that the detector found something)."""
    import time

    def once() -> dict[str, float]:
        t0 = time.perf_counter_ns()
        faces = fn()
        return {"total": (time.perf_counter_ns() - t0) / 1e6, "faces": int(faces)}

    return once
