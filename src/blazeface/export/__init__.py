"""Deployment exports: ONNX (one self-contained file, dynamic batch/height/width, simplified, named outputs,
prior configuration in its metadata) and ncnn (``.param``/``.bin`` through pnnx, dynamic input size).

Both need optional packages: ``pip install 'blazeface[onnx]'`` and ``pip install 'blazeface[ncnn]'``.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import BlazefaceError
from ..metadata import OUTPUT_NAMES, file_sha256, model_metadata, sidecar_path
from ..models import create_model, model_name_for, resolve_weights
from .ncnn import export_ncnn
from .onnx import export_onnx

FORMATS = ("onnx", "ncnn")

__all__ = ["FORMATS", "OUTPUT_NAMES", "export_model", "model_metadata"]


def export_model(model_name: str | None, weights, out: str | Path, fmt: str = "onnx", *, fp16: bool = False) -> list[Path]:
    """Build ``model_name`` with ``weights`` (None: the shipped ones) and export it; returns the files written.
    ``model_name`` None: the model the weights file names (default blaze)."""
    if fmt not in FORMATS:
        raise BlazefaceError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if fp16 and fmt != "ncnn":
        raise BlazefaceError("fp16=True applies to ncnn exports (fp16 weights); ONNX exports are fp32")
    out = Path(out)
    if fmt == "ncnn" and out.suffix != ".param":
        raise BlazefaceError(f"{out}: an ncnn export is named by its .param (the .bin is written beside it)")
    model_name = model_name_for(model_name, weights)
    path = resolve_weights(model_name, weights)
    model = create_model(model_name, weights=path)
    digest = file_sha256(path)
    if fmt == "onnx":
        return [export_onnx(model, out, weights_sha256=digest)]
    param, bin_path = export_ncnn(model, out, fp16=fp16, weights_sha256=digest)
    return [param, bin_path, sidecar_path(param)]
