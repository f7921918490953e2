"""``blazeface profile``: parameters, MACs, MFLOPs and priors of a model at an input size."""
from __future__ import annotations

import argparse
import json
import sys

from . import parse_size
from ..defaults import MODELS


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "profile", help="count parameters, MACs, MFLOPs and priors of a model",
        description="Count a model's parameters, multiply-accumulates (MACs, millions), MFLOPs (the seed's "
                    "thop convention: MACs + biases + 4 per BatchNorm output, millions) and priors at an "
                    "input size, by hooking a real forward pass.")
    p.add_argument("--model", default="blaze", help=f"{' | '.join(MODELS)} | all (default: blaze)")
    p.add_argument("--size", type=parse_size, default=(320, 240), metavar="WxH",
                   help="input width x height (default: 320x240); padded up to the model's size multiple")
    p.add_argument("--json", action="store_true",
                   help='print {"params", "macs", "mflops", "priors"} (with --model all: one per model name)')
    p.add_argument("--layers", action="store_true", help="also list every counted layer call")
    p.set_defaults(func=run)
    return p


def _layers_table(prof) -> list[str]:
    rows = [("layer", "type", "output", "params", "MACs", "FLOPs")]
    for layer in prof.layers:
        rows.append((layer.name, layer.kind, "x".join(map(str, layer.output_shape)), f"{layer.params:,}",
                     f"{layer.macs:,}", f"{layer.flops:,}"))
    return _format(rows, right=(3, 4, 5))


def _format(rows, right=()) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in rows]


def run(args) -> int:
    from ..models import get_config, list_models
    from ..profiling import profile

    names = list_models() if args.model == "all" else [args.model]
    for name in names:
        get_config(name)  # unknown name -> BlazefaceError before any work
    width, height = args.size
    profiles = {name: profile(name, width, height) for name in names}

    for name, prof in profiles.items():
        if prof.padded:
            print(f"note: {name} needs multiples of {get_config(name).size_multiple}: {width}x{height} padded "
                  f"to {prof.width}x{prof.height}", file=sys.stderr)

    if args.json:
        if args.model == "all":
            out = {name: prof.summary() for name, prof in profiles.items()}
        else:
            out = profiles[args.model].summary()
            if args.layers:
                out["layers"] = [vars(layer) for layer in profiles[args.model].layers]
        print(json.dumps(out))
        return 0

    rows = [("model", "size", "params", "MACs (M)", "MFLOPs", "priors")]
    for name, prof in profiles.items():
        rows.append((name, f"{prof.width}x{prof.height}", f"{prof.params:,}", f"{prof.macs:.1f}",
                     f"{prof.mflops:.1f}", "-" if prof.priors is None else str(prof.priors)))
    print("\n".join(_format(rows, right=(2, 3, 4, 5))))
    if args.layers:
        for name, prof in profiles.items():
            print(f"\n{name}:")
            print("\n".join(_layers_table(prof)))
    return 0
