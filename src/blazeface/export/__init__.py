"""Deployment exports: ONNX (one self-contained file, dynamic batch/height/width, simplified, named outputs,
prior configuration in its metadata) and ncnn (``.param``/``.bin`` through pnnx, dynamic input size).

Both need optional packages: ``pip install 'blazeface[onnx]'`` and ``pip install 'blazeface[ncnn]'``.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import BlazefaceError
from .metadata import OUTPUT_NAMES, model_metadata

FORMATS = ("onnx", "ncnn")

__all__ = ["FORMATS", "OUTPUT_NAMES", "export_model", "model_metadata"]


def export_model(model_name: str, weights, out: str | Path, fmt: str = "onnx", *, fp16: bool = False) -> list[Path]:
    """Build ``model_name`` with ``weights`` (None: the shipped ones) and export it; returns the files written."""
    from ..models import create_model
    from ..models.registry import SHIPPED
    from .metadata import file_sha256

    if fmt not in FORMATS:
        raise BlazefaceError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if fp16 and fmt != "ncnn":
        raise BlazefaceError("--fp16 applies to ncnn exports (fp16 weights); ONNX exports are fp32")
    out = Path(out)
    if fmt == "ncnn" and out.suffix != ".param":
        raise BlazefaceError(f"{out}: an ncnn export is named by its .param (the .bin is written beside it)")
    model = create_model(model_name, weights=SHIPPED if weights is None else weights)
    digest = None
    if weights is not None and Path(weights).is_file():
        digest = file_sha256(weights)
    if fmt == "onnx":
        from .onnx import export_onnx

        return [export_onnx(model, out, weights_sha256=digest)]
    from .metadata import sidecar_path
    from .ncnn import export_ncnn

    param, bin_path = export_ncnn(model, out, fp16=fp16, weights_sha256=digest)
    return [param, bin_path, sidecar_path(param)]
