"""fp32 ONNX export -> int8 ONNX by ONNX Runtime's static quantization, calibrated on a folder of photos.

The quantized file is a QDQ graph (QuantizeLinear/DequantizeLinear pairs around each convolution, which
ONNX Runtime's CPU provider fuses into integer QLinearConv kernels): uint8 activations with one scale per
tensor, int8 weights with one scale per output channel. Only convolutions (with their ReLUs, which ONNX
Runtime then folds into the integer kernels), residual adds and pools are quantized, all but the first
convolution (:func:`first_conv`): the heads' reshapes, concatenations and the softmax stay in float, so the
three outputs keep full precision for decoding. Calibration feeds each photo exactly as ``FaceDetector`` does
(letterboxed to ``long_side``, BGR minus the mean), so the activation ranges are those seen at run time.

The output is a drop-in replacement for the fp32 export: same input, outputs and metadata, plus
``precision: int8`` and how it was calibrated (``--backend onnx --weights m_int8.onnx`` runs it).
"""
from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import BlazefaceError
from ..io import atomic_target
from ..metadata import INPUT_NAME
from ..optional import require

# Which calibration methods the CLI offers (onnxruntime.quantization.CalibrationMethod members).
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# Percentile (ONNX Runtime's 99.999: each activation's range with its outer 0.001 % of values clipped) drops
# the rare outliers that minmax spends its 256 levels on. On the dev split, against minmax, it was better or
# within 0.001 on 17 of the 18 model x subset pairs of the six shipped models (rfb's hard: -0.002); the
# largest int8 loss fell from 0.013 to 0.010 (docs/MODELS.md, "int8 exports"). Same kernels, same speed;
# calibrating takes ~3.5x longer.
DEFAULT_CALIBRATION_METHOD = "percentile"
# Graph formats (onnxruntime.quantization.QuantFormat) and weight types. The defaults (QDQ, int8 weights)
# were the fastest on an AVX2 CPU without VNNI; the others are kept for benchmarks/bench_int8.py, which
# measures them (QOperator: QLinearConv nodes written directly; uint8 weights: the u8u8 kernels).
QUANT_FORMATS = ("qdq", "qoperator")
WEIGHT_TYPES = ("int8", "uint8")
DEFAULT_CALIBRATION_COUNT = 300
DEFAULT_LONG_SIDE = 640
# Op types whose inputs/outputs get quantized. Conv is where the time goes; with Relu quantized too ONNX
# Runtime drops the Dequantize/Quantize pair each float ReLU would cost (measured: slim 1.84x -> 1.27x of
# fp32 time on an AVX2 CPU); Add and MaxPool keep blaze's blocks in uint8 between convolutions.
QUANTIZED_OPS = ("Conv", "Relu", "Add", "MaxPool")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def calibration_images(folder: str | Path, count: int = DEFAULT_CALIBRATION_COUNT) -> list[Path]:
    """``count`` images of ``folder`` (recursive), spread evenly over its sorted listing (deterministic)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BlazefaceError(f"{folder}: calibration folder not found")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise BlazefaceError(f"{folder}: no images to calibrate on")
    if count <= 0:
        raise BlazefaceError(f"--calibration-count must be >= 1, not {count}")
    if len(files) <= count:
        return files
    picks = np.linspace(0, len(files) - 1, count).round().astype(int)
    return [files[k] for k in sorted(set(picks.tolist()))]


def calibration_inputs(files: Sequence[Path], mean_bgr: Sequence[float], multiple: int,
                       long_side: int = DEFAULT_LONG_SIDE) -> Iterator[np.ndarray]:
    """(1, 3, H, W) network inputs of ``files``, letterboxed as ``FaceDetector`` does; unreadable files
    are an error naming the file (a calibration set should be clean)."""
    from ..letterbox import letterbox_size, preprocess
    from ..io import as_bgr

    for path in files:
        image = as_bgr(path)
        box = letterbox_size(image.shape[1], image.shape[0], long_side, multiple)
        yield preprocess(image, box, mean_bgr)[None]


def first_conv(proto) -> list[str]:
    """The name of the convolution reading the network input. It stays in float: with 3 input channels its
    int8 kernel is slower than the float one (measured: slim's stem 5.4 ms int8 vs 2.7 ms fp32 at 640x480)
    and the input keeps its full precision."""
    return [n.name for n in proto.graph.node if n.op_type == "Conv" and INPUT_NAME in n.input][:1]


def conv_kinds(proto) -> dict[str, str]:
    """Every convolution's name -> what it is: "stem" (reads 3 channels), "depthwise" (one group per
    channel), "pointwise" (1x1) or "full" (any other kernel). Lets a benchmark quantize only some kinds.
    Also reads the graphs ONNX Runtime optimises to (QLinearConv, FusedConv, its NCHWc Conv)."""
    shapes = {i.name: list(i.dims) for i in proto.graph.initializer}
    kinds = {}
    for node in proto.graph.node:
        weight = node.input[3] if node.op_type == "QLinearConv" else node.input[1] if len(node.input) > 1 else ""
        if not node.op_type.endswith("Conv") or weight not in shapes:
            continue
        out_ch, in_per_group, *kernel = shapes[weight]
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if group > 1 and in_per_group == 1:
            kinds[node.name] = "depthwise"
        elif all(k == 1 for k in kernel):
            kinds[node.name] = "pointwise"
        else:
            kinds[node.name] = "stem" if in_per_group * group == 3 else "full"
    return kinds


def _reader(files, mean_bgr, multiple, long_side):
    quantization = require("onnxruntime.quantization", "onnx")

    class Reader(quantization.CalibrationDataReader):
        """The photos one range at a time (``set_range``, ONNX Runtime's strided calibration): the
        calibrator then holds one photo's activations at a time instead of every photo's."""

        def __init__(self):
            self.set_range(0, len(files))

        def __len__(self):
            return len(files)

        def set_range(self, start_index: int, end_index: int):
            self.inputs = calibration_inputs(files[start_index:end_index], mean_bgr, multiple, long_side)

        def get_next(self):
            batch = next(self.inputs, None)
            return None if batch is None else {INPUT_NAME: batch}

    return Reader()


def quantize_onnx(fp32_path: str | Path, out: str | Path, calibration: str | Path | Sequence[Path], *,
                  count: int = DEFAULT_CALIBRATION_COUNT, long_side: int = DEFAULT_LONG_SIDE,
                  method: str = DEFAULT_CALIBRATION_METHOD, per_channel: bool = True, reduce_range: bool = False,
                  exclude: Sequence[str] | None = None, source: str | None = None, quant_format: str = "qdq",
                  weight_type: str = "int8", op_types: Sequence[str] = QUANTIZED_OPS,
                  only_kinds: Sequence[str] | None = None) -> Path:
    """Quantize the fp32 export ``fp32_path`` to int8 at ``out``.

    ``calibration``: a folder (``count`` of its images are used) or a list of image files.
    ``method``: percentile (default) | minmax | entropy (how activation ranges are chosen from the calibration set).
    ``reduce_range``: 7-bit weights, for CPUs without VNNI whose uint8 x int8 instructions can saturate.
    ``exclude``: node names to leave in float (None: the first convolution, see :func:`first_conv`).
    ``source``: how the calibration set is described in the metadata (default: its size and folder).
    ``quant_format``: "qdq" (default) or "qoperator"; ``weight_type``: "int8" (default) or "uint8";
    ``op_types``: the op types to quantize. ``only_kinds``: quantize only these kinds of convolution
    (:func:`conv_kinds`, e.g. ``["pointwise"]``) with nothing else (``op_types`` is then just Conv): ONNX
    Runtime quantizes a float convolution itself when quantized tensors surround it, so a mixed-precision
    graph must leave the activations around the float convolutions in float.
    """
    onnx = require("onnx", "onnx")
    quantization = require("onnxruntime.quantization", "onnx")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise BlazefaceError(f"unknown calibration method {method!r}; choose one of: {', '.join(CALIBRATION_METHODS)}")
    if quant_format not in QUANT_FORMATS:
        raise BlazefaceError(f"unknown quantization format {quant_format!r}; choose one of: {', '.join(QUANT_FORMATS)}")
    if weight_type not in WEIGHT_TYPES:
        raise BlazefaceError(f"unknown weight type {weight_type!r}; choose one of: {', '.join(WEIGHT_TYPES)}")
    fp32_path, out = Path(fp32_path), Path(out)
    proto = onnx.load(str(fp32_path))
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get("precision", "fp32") != "fp32":
        raise BlazefaceError(f"{fp32_path} is already quantized ({meta['precision']})")
    mean_bgr = json.loads(meta.get("mean_bgr", "[104, 117, 123]"))
    multiple = int(meta.get("size_multiple", "1"))
    if isinstance(calibration, (str, Path)):
        files = calibration_images(calibration, count)
        source = f"{len(files)} images of {Path(calibration).name}/"
    else:
        files = [Path(p) for p in calibration]
        if not files:
            raise BlazefaceError("no images to calibrate on")
        source = source or f"{len(files)} images"
    methods = {"minmax": quantization.CalibrationMethod.MinMax,
               "entropy": quantization.CalibrationMethod.Entropy,
               "percentile": quantization.CalibrationMethod.Percentile}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="blazeface-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference and ORT's graph optimisations first, as ONNX Runtime recommends for static
        # quantization (folds what can be folded so the QDQ pairs land on the fused convolutions).
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)  # blaze: symbolic inference gives up on its pooled shortcuts
        prepared_proto = onnx.load(str(prepared))
        if only_kinds is not None:
            op_types = ("Conv",)
            exclude = [*(exclude or []), *(name for name, kind in conv_kinds(prepared_proto).items()
                                           if kind not in only_kinds)]
        elif exclude is None:
            exclude = first_conv(prepared_proto)
        formats = {"qdq": quantization.QuantFormat.QDQ, "qoperator": quantization.QuantFormat.QOperator}
        weights = {"int8": quantization.QuantType.QInt8, "uint8": quantization.QuantType.QUInt8}
        partial = Path(tmp) / "int8.onnx"
        # ONNX Runtime's histogram calibrators print a progress line per pass (300 with one photo per pass).
        with contextlib.redirect_stdout(io.StringIO()):
            quantization.quantize_static(
                str(prepared), str(partial), _reader(files, mean_bgr, multiple, long_side),
                quant_format=formats[quant_format], op_types_to_quantize=list(op_types),
                per_channel=per_channel, reduce_range=reduce_range,
                activation_type=quantization.QuantType.QUInt8, weight_type=weights[weight_type],
                calibrate_method=methods[method], nodes_to_exclude=list(exclude),
                # One photo per calibration pass: ONNX Runtime's histogram calibrators (entropy, percentile)
                # otherwise keep every photo's activations to the end (5.6 GB for 60 photos at 640) and stack
                # them into one array, which fails on photos of different shapes. Min/max ranges merge
                # exactly (the same file as without strides); histograms merge by ONNX Runtime's re-binning.
                extra_options={"CalibTensorRangeSymmetric": False, "ActivationSymmetric": False,
                               "CalibMovingAverage": False, "CalibStridedMinMax": 1},
                calibration_providers=["CPUExecutionProvider"])
        quantized = onnx.load(str(partial))
    meta.update({"precision": "int8",
                 "quantization": json.dumps({"format": {"qdq": "QDQ", "qoperator": "QOperator"}[quant_format],
                                             "activations": "uint8 per tensor",
                                             "weights": f"{weight_type} per {'channel' if per_channel else 'tensor'}",
                                             "reduce_range": reduce_range, "ops": list(op_types),
                                             "excluded": list(exclude), "calibration": source,
                                             "long_side": long_side, "method": method})})
    del quantized.metadata_props[:]
    for key, value in meta.items():
        entry = quantized.metadata_props.add()
        entry.key, entry.value = key, value
    quantized.producer_name = "blazeface"
    quantized.doc_string = proto.doc_string + " (int8)"
    with atomic_target(out) as partial:
        onnx.save_model(quantized, str(partial), save_as_external_data=False)
    return out
