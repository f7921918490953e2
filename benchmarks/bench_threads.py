#!/usr/bin/env python
"""Which thread count to default to: per-image latency of single images and of batches, 1..N threads.

    python benchmarks/bench_threads.py --models slim,blaze --backends onnx,torch --batches 1,8

Every configuration (model, backend, threads, batch) is timed interleaved with the others in shuffled
rounds, so load from other processes falls on all alike; reported: the median ms per image and its ratio to
one thread. A video is a stream of single images (detect/blur/align run one frame at a time), so the batch-1
row is its figure too. The thread policy (src/blazeface/threads.py) takes its default from this.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402


def main() -> int:
    from blazeface.benchmarking import bench_image
    from blazeface.inference import letterbox_size, preprocess
    from blazeface.models import get_config
    from blazeface.backends import make_runner
    from blazeface.threads import cpu_count

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="slim,blaze")
    p.add_argument("--backends", default="onnx,torch")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--threads", default=None, help="comma list (default: 1 .. cores)")
    p.add_argument("--size", default="640x480")
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args()
    import torch

    threads = [int(t) for t in args.threads.split(",")] if args.threads else list(range(1, cpu_count() + 1))
    size = tuple(int(v) for v in args.size.split("x"))
    configs = []
    for model in args.models.split(","):
        config = get_config(model)
        image = bench_image(size)
        box = letterbox_size(size[0], size[1], 0, config.size_multiple)
        one = preprocess(image, box, config.mean_bgr)
        for backend in args.backends.split(","):
            for n in threads:
                runner = make_runner(backend, model, threads=n)
                for batch in (int(b) for b in args.batches.split(",")):
                    x = np.ascontiguousarray(np.repeat(one[None], batch, axis=0))
                    configs.append({"key": (model, backend, batch, n), "runner": runner, "x": x, "times": []})
    for c in configs:  # warm up
        torch.set_num_threads(c["key"][3])
        c["runner"](c["x"])
    for _ in range(args.rounds):
        random.shuffle(configs)
        for c in configs:
            torch.set_num_threads(c["key"][3])  # process-wide in torch; ONNX Runtime sessions hold their own
            start = time.perf_counter()
            c["runner"](c["x"])
            c["times"].append((time.perf_counter() - start) * 1000 / len(c["x"]))
    print(f"{args.size}, {args.rounds} rounds, {cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; ms per image (median) and ratio to 1 thread")
    base = {c["key"]: statistics.median(c["times"]) for c in configs}
    print("| model | backend | batch | threads | ms / image | vs 1 thread |\n|---|---|---:|---:|---:|---:|")
    for key in sorted(base):
        model, backend, batch, n = key
        print(f"| {model} | {backend} | {batch} | {n} | {base[key]:.2f} | "
              f"{base[(model, backend, batch, threads[0])] / base[key]:.2f}x |")
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
