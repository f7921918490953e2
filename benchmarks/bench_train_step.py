"""Training throughput: images/s of the WHOLE training step (loading, augmentation, matching, forward,
backward, optimiser, EMA) per model and setting, through the real Trainer on the real training data.

    python benchmarks/bench_train_step.py --models blaze slim --steps 12 --threads 2
    python benchmarks/bench_train_step.py --models blaze --settings fp32-channels-last \
        --teacher yunet:../shared/data/teachers/yunet_n_dynamic.onnx        # the cost of a teacher
    python benchmarks/bench_train_step.py --models blaze --settings fp32-channels-last --map-teacher-priors \
        --teacher slim:../shared/data/reference_weights/slim_Final.pth --teacher rfb:...RBF_Final.pth
    python benchmarks/bench_train_step.py --models slim --settings fp32-channels-last --threads 1 \
        --teacher slim:...slim_Final.pth --teacher rfb:...RBF_Final.pth --teacher-runtime torch onnx
    python benchmarks/bench_train_step.py --models slim --settings fp32-channels-last --threads 1 \
        --teacher yunet:...yunet_n_dynamic.onnx --map-teacher-priors --yunet-scales 1 2 --cache-teacher
    python benchmarks/bench_train_step.py --models slim --settings fp32-channels-last --threads 1 \
        --teacher yunet:...yunet_n_dynamic.onnx --map-teacher-priors --yunet-scales 1 2 --cache-teacher \
        --feature-teacher slim:...slim_Final.pth                              # the cost of feature imitation
    python benchmarks/bench_train_step.py --models blaze --settings fp32-channels-last --threads 1 \
        --teacher yunet:...yunet_n_dynamic.onnx --map-teacher-priors --yunet-scales 1 2 --cache-teacher \
        --feature-teacher mnet:...mobilenet0.25_Final.pth --teacher-runtime torch onnx   # where it runs

Each setting runs ``--steps`` steps; the first ``--warmup`` are dropped (worker start-up, allocator). With
``--teacher`` (repeatable: an ensemble) every setting runs twice, without and with the teachers, interleaved
``--rounds`` times, and the with/without ratio of the whole step's images/s is printed; with several
``--teacher-runtime`` values, one taught arm per runtime of the per-prior teachers. ``--cache-teacher`` adds an
arm with YuNet's candidates computed once per photo (``train --cache-teacher``; computed before the first cached
arm's steps, which is not timed, and reused by the later rounds). ``--feature-teacher`` adds an arm with the
teachers (cached when ``--cache-teacher``) and the feature teacher, whose ratio to the plain arm is printed too;
with several ``--teacher-runtime`` values beside it, one feature arm per runtime (the feature teacher's and the
per-prior teachers'), and no live-teacher arms.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from blazeface.defaults import MODELS  # torch-free: the registered models

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"

SETTINGS = {
    "fp32": dict(channels_last=False, bf16=False),
    "fp32-channels-last": dict(channels_last=True, bf16=False),
    "bf16-channels-last": dict(channels_last=True, bf16=True),
}


def measure(model: str, setting: str, steps: int, warmup: int, threads: int, workers: int, batch: int,
            teachers: list[str] | None = None, map_teacher_priors: bool = False,
            teacher_runtime: str = "auto", yunet_scales: list[float] | None = None,
            candidates: Path | None = None, feature_teacher: str | None = None) -> float:
    """``candidates``: train --cache-teacher, the photos' candidates kept in this file (made on first use)."""
    from blazeface.training.checkpointing import TEACHER_CANDIDATES_FILE
    from blazeface.training.trainer import Trainer, TrainOptions

    with tempfile.TemporaryDirectory() as out:
        cached = Path(out) / TEACHER_CANDIDATES_FILE
        if candidates is not None and candidates.is_file():
            shutil.copy(candidates, cached)
        opts = TrainOptions(model=model, data=[str(DATA / "widerface" / "train"), str(DATA / "facemask")],
                            out=Path(out), batch_size=batch, workers=workers, threads=threads, eval_every=0,
                            max_steps=steps, log_every=1, progress=False, checkpoint_minutes=1e9,
                            teachers=list(teachers or []), map_teacher_priors=map_teacher_priors,
                            teacher_runtime=teacher_runtime, yunet_scales=list(yunet_scales or [1.0]),
                            cache_teacher=candidates is not None, feature_teacher=feature_teacher,
                            **SETTINGS[setting])
        Trainer(opts).run()
        if candidates is not None and not candidates.is_file():
            shutil.copy(cached, candidates)
        rates = [json.loads(line)["img_per_s"] for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    timed = rates[warmup:]
    # Harmonic mean of per-step rates = total images / total time.
    return len(timed) / sum(1 / r for r in timed)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--teacher", action="append", default=[], metavar="SPEC",
                   help="also measure with this teacher (as blazeface train --teacher)")
    p.add_argument("--map-teacher-priors", action="store_true", help="as blazeface train --map-teacher-priors")
    p.add_argument("--teacher-runtime", nargs="+", default=["auto"], choices=["auto", "torch", "onnx"],
                   help="with --teacher: where per-prior teachers run; several: one arm each")
    p.add_argument("--yunet-scales", type=float, nargs="+", default=[1.0], help="as blazeface train --yunet-scales")
    p.add_argument("--cache-teacher", action="store_true",
                   help="with a YuNet --teacher: also an arm with its candidates cached per photo")
    p.add_argument("--feature-teacher", metavar="SPEC",
                   help="also an arm with this feature teacher beside the teachers (as blazeface train "
                        "--feature-teacher)")
    p.add_argument("--rounds", type=int, default=2, help="with --teacher: interleaved repetitions")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found", file=sys.stderr)
        return 0
    results = {}
    scratch = tempfile.mkdtemp(prefix="bench_train_step_")
    for model in args.models:
        for setting in args.settings:
            if not args.teacher and not args.feature_teacher:
                rate = measure(model, setting, args.steps, args.warmup, args.threads, args.workers, args.batch_size)
                results[f"{model}/{setting}"] = rate
                if not args.json:
                    print(f"{model:6s} {setting:20s} {rate:7.1f} img/s", flush=True)
                continue
            # Interleaved, so a busy machine slows both arms alike; the ratio is what to read.
            # Each arm: the measure() arguments that make it what it is.
            cache = Path(scratch) / f"{model}.npz" if args.cache_teacher else None
            arms = {"plain": {}}
            runtimes = args.teacher_runtime
            if args.teacher and not args.feature_teacher:
                arms.update({runtime: dict(teachers=args.teacher, teacher_runtime=runtime) for runtime in runtimes})
            if args.cache_teacher:
                arms["cached"] = dict(teachers=args.teacher, candidates=cache)
            if args.feature_teacher:  # the runtimes are the feature teacher's then
                arms.update({"features" if len(runtimes) == 1 else f"features/{runtime}":
                             dict(teachers=args.teacher, candidates=cache, feature_teacher=args.feature_teacher,
                                  teacher_runtime=runtime) for runtime in runtimes})
            rates = {arm: [] for arm in arms}
            for _ in range(args.rounds):
                for arm, chosen in arms.items():
                    rates[arm].append(measure(model, setting, args.steps, args.warmup, args.threads, args.workers,
                                              args.batch_size, map_teacher_priors=args.map_teacher_priors,
                                              yunet_scales=args.yunet_scales, **chosen))
            plain = float(np.median(rates["plain"]))
            results[f"{model}/{setting}"] = plain
            if not args.json:
                print(f"{model:6s} {setting:20s} {plain:7.1f} img/s", flush=True)
            for arm in arms:
                if arm == "plain":
                    continue
                taught = float(np.median(rates[arm]))
                suffix = "" if len(arms) == 2 else f"/{arm}"
                results[f"{model}/{setting}+teacher{suffix}"] = taught
                results[f"{model}/{setting}/teacher_ratio{suffix}"] = taught / plain
                if arm.startswith("features"):
                    runtime = arm.partition("/")[2]
                    how = f"feature teacher {args.feature_teacher}" + (f", runtime {runtime}" if runtime else "")
                else:
                    how = "cached per photo" if arm == "cached" else f"teacher runtime {arm}"
                if not args.json:
                    print(f"{'':6s} {'':20s} {taught:7.1f} img/s with {'+'.join(args.teacher) or '-'} ({how}): "
                          f"{taught / plain:.2f}x", flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
