#!/usr/bin/env python
"""int8 against fp32 in ONNX Runtime, one thread: which quantization is faster, and where the time goes.

    python benchmarks/bench_int8.py --models slim,blaze --calibration ../shared/data/widerface/train/images \\
        --variants qdq,qoperator,u8u8,pointwise --rounds 30 --profile

For each model: the fp32 export (the cached one ``--backend onnx`` runs) and one int8 file per variant, made
by :func:`blazeface.export.quantize.quantize_onnx` from --calibration-count photos of --calibration (the
ranges do not change which kernels run, so a few dozen photos are enough for timing; the shipped recipe
uses 300). Variants:

  qdq          what ``blazeface export --int8`` makes: QDQ, int8 weights per channel, stem left in float
  qoperator    the same as QLinearConv/QLinearAdd nodes written directly (QOperator format)
  u8u8         QDQ with uint8 weights (ONNX Runtime's u8u8 kernels)
  reduce-range QDQ with 7-bit weights (for CPUs whose u8 x s8 multiply-adds can saturate)
  pointwise    only the 1x1 convolutions in int8, everything else (depthwise, full 5x5, stem) in float
  no-depthwise 1x1 and full convolutions in int8, depthwise convolutions and the stem in float

Extra files join with --onnx LABEL=PATH (for example an fp32 graph rewrite); ``LABEL=PATH@extended``
runs that session at ORT_ENABLE_EXTENDED instead of ORT_ENABLE_ALL (which adds the NCHWc layout).

Timing: the network alone (ONNX Runtime ``run`` on the bundled photo letterboxed to --size), every session
interleaved one run at a time in shuffled rounds, so load from other processes falls on all alike.
Reported: median ms and the median of the per-round ratios to the model's fp32 session (below 1: faster).
--profile adds ONNX Runtime's per-node profiler (sessions interleaved too): median ms per node, summed
by class (fp32 / int8 convolution by kind: stem, depthwise, pointwise, full; every other op type).
"""
from __future__ import annotations

import argparse
import collections
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402

VARIANTS = {
    "qdq": {},
    "qoperator": {"quant_format": "qoperator"},
    "u8u8": {"weight_type": "uint8"},
    "reduce-range": {"reduce_range": True},
    "pointwise": {"only_kinds": ["pointwise"]},
    "no-depthwise": {"only_kinds": ["pointwise", "full"]},
}


def session(path: str, level: str = "all", profile_prefix: str | None = None, optimized: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}[level]
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    if optimized:
        options.optimized_model_filepath = optimized  # the graph ONNX Runtime runs, to classify its nodes
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def node_classes(optimized_path: str) -> dict[str, str]:
    """Node name -> class, read from the graph ONNX Runtime actually runs (after its fusions)."""
    import onnx

    from blazeface.export.quantize import conv_kinds

    proto = onnx.load(optimized_path)
    kinds = conv_kinds(proto)
    classes = {}
    for node in proto.graph.node:
        if node.name in kinds:
            precision = "int8" if node.op_type == "QLinearConv" else "fp32"
            classes[node.name] = f"{precision} conv {kinds[node.name]}"
        else:
            classes[node.name] = node.op_type
    return classes


def profile(entries: list[tuple[str, str, str]], x: np.ndarray, rounds: int, tmp: Path) -> dict[str, dict]:
    """Per-class median kernel ms of each (label, path, level), the sessions run interleaved."""
    sessions = []
    for k, (label, path, level) in enumerate(entries):
        optimized = str(tmp / f"optimized_{k}.onnx")
        s = session(path, level, profile_prefix=str(tmp / f"profile_{k}"), optimized=optimized)
        sessions.append((label, s, node_classes(optimized)))
    for _, s, _ in sessions:
        s.run(None, {s.get_inputs()[0].name: x})
    for _ in range(rounds):
        for _, s, _ in sessions:
            s.run(None, {s.get_inputs()[0].name: x})
    out = {}
    for label, s, classes in sessions:
        times = collections.defaultdict(list)
        ops = {}
        for event in json.loads(Path(s.end_profiling()).read_text()):
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                name = event["name"][: -len("_kernel_time")]
                times[name].append(event["dur"] / 1000)
                ops[name] = event["args"].get("op_name", "?")
        by_class = collections.Counter()
        for name, values in times.items():
            by_class[classes.get(name, ops[name])] += statistics.median(values)
        out[label] = {"total": round(sum(by_class.values()), 2),
                      **{k: round(v, 2) for k, v in by_class.most_common()}}
    return out


def timing(entries: list[tuple[str, str, str]], x: np.ndarray, rounds: int, seed: int) -> dict[str, list[float]]:
    runs = {}
    for label, path, level in entries:
        s = session(path, level)
        runs[label] = lambda s=s: s.run(None, {s.get_inputs()[0].name: x})
    for run in runs.values():
        for _ in range(3):
            run()
    samples = {label: [] for label in runs}
    rng = random.Random(seed)
    for _ in range(rounds):
        order = list(runs)
        rng.shuffle(order)
        for label in order:
            start = time.perf_counter()
            runs[label]()
            samples[label].append((time.perf_counter() - start) * 1e3)
    return samples


def main(argv=None) -> int:
    from blazeface.backends import exported_model
    from blazeface.benchmarking import bench_image
    from blazeface.export.quantize import quantize_onnx
    from blazeface.letterbox import letterbox_size, preprocess
    from blazeface.models import get_config

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="slim,blaze")
    p.add_argument("--calibration", type=Path, default=None, help="folder of photos (needed for --variants)")
    p.add_argument("--calibration-count", type=int, default=50)
    p.add_argument("--variants", default="qdq", help=f"comma list of {', '.join(VARIANTS)} (or none)")
    p.add_argument("--onnx", action="append", default=[], metavar="LABEL=PATH[@extended]",
                   help="also time this ONNX file (of the first model in --models); repeatable")
    p.add_argument("--out-dir", type=Path, default=None, help="keep the int8 files here (default: a temporary folder)")
    p.add_argument("--size", default="640x480")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--profile", action="store_true", help="also ONNX Runtime's per-node profile, by class")
    p.add_argument("--profile-rounds", type=int, default=10)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v and v != "none"]
    for v in variants:
        if v not in VARIANTS:
            p.error(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    if variants and args.calibration is None:
        p.error("--variants needs --calibration DIR")
    log = lambda msg: print(f"[bench_int8] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    w, h = (int(v) for v in args.size.lower().split("x"))
    tmp = tempfile.TemporaryDirectory(prefix="blazeface-int8-")
    out_dir = args.out_dir or Path(tmp.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    models = [m for m in args.models.split(",") if m]
    report = {}
    for n, model in enumerate(models):
        config = get_config(model)
        box = letterbox_size(w, h, max(w, h), config.size_multiple)
        x = np.zeros((1, 3, box.input_size[1], box.input_size[0]), np.float32)
        preprocess(bench_image((w, h)), box, config.mean_bgr, out=x[0])
        fp32 = str(exported_model("onnx", model))
        entries = [("fp32", fp32, "all")]
        for v in variants:
            path = out_dir / f"{model}_int8_{v}.onnx"
            if not path.is_file():
                log(f"{model}: quantizing ({v}) on {args.calibration_count} photos")
                quantize_onnx(fp32, path, args.calibration, count=args.calibration_count, **VARIANTS[v])
            entries.append((f"int8 {v}", str(path), "all"))
        for spec in args.onnx if n == 0 else []:
            label, rest = spec.split("=", 1)
            path, _, level = rest.partition("@")
            entries.append((label, path, level or "all"))
        log(f"{model}: timing {len(entries)} sessions, {args.rounds} interleaved rounds")
        samples = timing(entries, x, args.rounds, args.seed)
        ref = samples["fp32"]
        rows = {label: {"median_ms": round(statistics.median(v), 2),
                        "ratio_to_fp32": round(statistics.median([a / b for a, b in zip(v, ref)]), 3)}
                for label, v in samples.items()}
        report[model] = {"timing": rows}
        print(f"\n{model} at {box.input_size[0]}x{box.input_size[1]}, 1 thread, {args.rounds} interleaved rounds")
        for label, r in rows.items():
            print(f"  {label:22s} {r['median_ms']:8.2f} ms   x{r['ratio_to_fp32']:.3f} of fp32")
        if args.profile:
            log(f"{model}: profiling")
            prof = profile(entries, x, args.profile_rounds, Path(tmp.name))
            report[model]["profile"] = prof
            for label, classes in prof.items():
                print(f"  profile {label}: " + ", ".join(f"{k} {v:.2f}" for k, v in classes.items()))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
