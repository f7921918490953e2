"""``blazeface export``: a model -> ONNX (one file, fp32 or int8) or ncnn (.param + .bin)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..export.quantize import CALIBRATION_METHODS, DEFAULT_CALIBRATION_METHOD
from . import add_model_args


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export", help="export a model to ONNX or ncnn",
        description="Export a model for deployment. onnx: one self-contained file with dynamic batch, height "
                    "and width, simplified, outputs named loc/conf/landm and the prior configuration, mean and "
                    "model name in its metadata; --int8 quantizes it (ONNX Runtime static quantization, QDQ, "
                    "per-channel int8 weights) calibrated on photos of --calibration DIR. ncnn: PATH.param and "
                    "PATH.bin (through pnnx, dynamic input size) plus PATH.json with the same metadata.")
    add_model_args(p, backend=False)
    p.add_argument("--format", required=True, choices=["onnx", "ncnn"], help="onnx | ncnn")
    p.add_argument("--out", required=True, type=Path, metavar="PATH",
                   help="output file: model.onnx, or model.param for ncnn (model.bin is written beside it)")
    p.add_argument("--fp16", action="store_true", help="ncnn only: store the weights as fp16 (default fp32)")
    p.add_argument("--int8", action="store_true",
                   help="onnx only: int8 weights and activations, calibrated on --calibration DIR")
    p.add_argument("--calibration", type=Path, default=None, metavar="DIR",
                   help="with --int8: a folder of photos (searched recursively) to calibrate activation ranges on, "
                        "e.g. ../shared/data/widerface/train/images")
    p.add_argument("--calibration-count", type=int, default=300, metavar="N",
                   help="with --int8: how many of the folder's images, spread over its sorted listing (default 300)")
    p.add_argument("--calibration-method", default=DEFAULT_CALIBRATION_METHOD, choices=CALIBRATION_METHODS,
                   help=f"with --int8: how activation ranges are chosen (default {DEFAULT_CALIBRATION_METHOD}: "
                        "each activation's range with its outer 0.001 %% of values clipped; minmax: the whole range)")
    p.add_argument("--long-side", type=int, default=640,
                   help="with --int8: calibration images are letterboxed to this long side (default 640)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..export import export_model

    for path in export_model(args.model, args.weights, args.out, args.format, fp16=args.fp16, int8=args.int8,
                             calibration=args.calibration, calibration_count=args.calibration_count,
                             calibration_method=args.calibration_method, long_side=args.long_side):
        print(path)
    return 0
