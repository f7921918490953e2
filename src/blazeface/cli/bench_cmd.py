"""``blazeface bench``: median latency per stage (preprocess, inference, postprocess, total)."""
from __future__ import annotations

import argparse
import json
import sys

from . import parse_size
from ..defaults import BACKENDS, MODELS



def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "bench", help="time the detection pipeline per stage",
        description="Median latency in ms of preprocess, inference, postprocess and total over repeated runs "
                    "on one image of --size (the bundled sample, resized), at detect's display settings "
                    "(conf 0.5). Several models or backends are timed interleaved, so machine load hits all "
                    "alike.")
    p.add_argument("--model", default="blaze", help=f"{' | '.join(MODELS)}, a comma list, or all (default: blaze)")
    p.add_argument("--weights", default=None,
                   help="torch: a checkpoint; onnx: an exported .onnx; ncnn: a .param (.bin beside it). A checkpoint "
                        "with onnx/ncnn is exported and cached. Default: the shipped weights")
    p.add_argument("--backend", default="torch", help="torch | onnx | ncnn, a comma list, or all (default: torch)")
    p.add_argument("--size", type=parse_size, default=(640, 480), metavar="WxH", help="image size (default: 640x480)")
    p.add_argument("--threads", type=int, default=1, help="threads per backend (default: 1; 0: library default)")
    p.add_argument("--repeats", type=int, default=50, help="timed runs per configuration (default: 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first (default: 5)")
    p.add_argument("--image", default=None, help="image to time on (default: the bundled sample), resized to --size")
    p.add_argument("--json", action="store_true",
                   help='print {"preprocess", "inference", "postprocess", "total"} (medians, ms); with several '
                        "configurations a list of such objects with model, backend, size and threads")
    p.set_defaults(func=run)
    return p


def _names(text: str, every: tuple[str, ...] | list[str], what: str) -> list[str]:
    from ..errors import BlazefaceError

    names = list(every) if text == "all" else [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in every]
    if unknown or not names:
        raise BlazefaceError(f"unknown {what} {', '.join(unknown) or text!r}; choose from: {', '.join(every)}, all")
    return names


def run(args) -> int:
    from ..benchmarking import BenchSession, bench_many, format_table
    from ..errors import BlazefaceError
    from ..models import list_models

    models = _names(args.model, list_models(), "model")
    backends = _names(args.backend, BACKENDS, "backend")
    if args.weights and len(models) * len(backends) > 1:
        raise BlazefaceError("--weights names one model file: give one --model and one --backend with it")
    if args.repeats < 1 or args.warmup < 0 or args.threads < 0:
        raise BlazefaceError("--repeats must be >= 1, --warmup and --threads >= 0")
    threads = args.threads or None
    sessions = [BenchSession(m, args.weights, b, args.size, threads, args.image) for m in models for b in backends]
    results = bench_many(sessions, repeats=args.repeats, warmup=args.warmup)
    if args.json:
        if len(results) == 1:
            print(json.dumps(results[0].medians()))
        else:
            print(json.dumps([{k: v for k, v in r.to_dict().items() if k not in ("repeats", "faces")} | r.medians()
                              for r in results]))
        return 0
    print(format_table(results))
    print(f"medians in ms of {args.repeats} runs after {args.warmup} warm-up runs, one {args.size[0]}x{args.size[1]} "
          f"image, {args.threads or 'default'} thread(s)", file=sys.stderr)
    return 0
