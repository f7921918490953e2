"""``blazeface export``: a model -> ONNX (one file) or ncnn (.param + .bin)."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import add_model_args


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export", help="export a model to ONNX or ncnn",
        description="Export a model for deployment. onnx: one self-contained file with dynamic batch, height "
                    "and width, simplified, outputs named loc/conf/landm and the prior configuration, mean and "
                    "model name in its metadata. ncnn: PATH.param and PATH.bin (through pnnx, dynamic input "
                    "size) plus PATH.json with the same metadata.")
    add_model_args(p, backend=False)
    p.add_argument("--format", required=True, choices=["onnx", "ncnn"], help="onnx | ncnn")
    p.add_argument("--out", required=True, type=Path, metavar="PATH",
                   help="output file: model.onnx, or model.param for ncnn (model.bin is written beside it)")
    p.add_argument("--fp16", action="store_true", help="ncnn only: store the weights as fp16 (default fp32)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..export import export_model

    for path in export_model(args.model, args.weights, args.out, args.format, fp16=args.fp16):
        print(path)
    return 0
