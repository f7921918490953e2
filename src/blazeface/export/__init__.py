"""Deployment exports: ONNX (one self-contained file, dynamic batch/height/width, simplified, named outputs,
prior configuration in its metadata) and ncnn (``.param``/``.bin`` through pnnx, dynamic input size).

Both need optional packages: ``pip install 'blazeface[onnx]'`` and ``pip install 'blazeface[ncnn]'``.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import BlazefaceError
from ..io import same_file
from ..metadata import OUTPUT_NAMES, file_sha256, model_metadata, ncnn_paths, read_sidecar, sidecar_path
from ..optional import require
from ..models import create_model, model_name_for, resolve_weights
from .ncnn import export_ncnn
from .onnx import export_onnx
from .quantize import DEFAULT_CALIBRATION_METHOD

FORMATS = ("onnx", "ncnn")

__all__ = ["FORMATS", "OUTPUT_NAMES", "export_model", "model_metadata"]


def export_model(model_name: str | None, weights, out: str | Path, fmt: str = "onnx", *, fp16: bool = False,
                 int8: bool = False, calibration: str | Path | None = None, calibration_count: int = 300,
                 calibration_method: str = DEFAULT_CALIBRATION_METHOD, long_side: int = 640) -> list[Path]:
    """Build ``model_name`` with ``weights`` (None: the shipped ones) and export it; returns the files written.
    ``model_name`` None: the model the weights file names (default blaze).

    ``int8``: ONNX only, statically quantized (see :mod:`blazeface.export.quantize`), calibrated on
    ``calibration_count`` images of the folder ``calibration`` letterboxed to ``long_side``, activation ranges
    chosen by ``calibration_method`` (percentile, minmax or entropy)."""
    if fmt not in FORMATS:
        raise BlazefaceError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if fp16 and fmt != "ncnn":
        raise BlazefaceError("fp16=True applies to ncnn exports (fp16 weights); ONNX exports are fp32")
    if int8 and fmt != "onnx":
        # ncnn's int8 tools (ncnn2table, ncnn2int8) come only with a source build of ncnn: neither the
        # ncnn nor the pnnx wheel on PyPI nor Debian ships them.
        raise BlazefaceError("int8=True applies to ONNX exports (ncnn's quantization tools are not installable "
                             "from PyPI or Debian)")
    if int8 and calibration is None:
        raise BlazefaceError("int8=True needs calibration=DIR: a folder of photos like the ones to detect on")
    if calibration is not None and not int8:
        raise BlazefaceError("calibration=DIR applies only with int8=True")
    out = Path(out)
    model_name = model_name_for(model_name, weights)
    path = resolve_weights(model_name, weights)
    check_export_targets(out, fmt, path)  # before any work: a refused --out costs nothing
    model = create_model(model_name, weights=path)
    digest = file_sha256(path)
    if fmt == "onnx" and int8:
        import tempfile

        from .quantize import calibration_images, quantize_onnx

        images = calibration_images(calibration, calibration_count)  # a bad folder fails before any work
        with tempfile.TemporaryDirectory(prefix="blazeface-export-") as tmp:
            fp32 = export_onnx(model, Path(tmp) / "fp32.onnx", weights_sha256=digest)
            quantize_onnx(fp32, out, images, long_side=long_side, method=calibration_method,
                          source=f"{len(images)} images of {Path(calibration).name}/")
        return [out]
    if fmt == "onnx":
        return [export_onnx(model, out, weights_sha256=digest)]
    param, bin_path = export_ncnn(model, out, fp16=fp16, weights_sha256=digest)
    return [param, bin_path, sidecar_path(param)]


def check_export_targets(out: Path, fmt: str, weights: Path) -> None:
    """Check the files an export to ``out`` writes: named for its format, not the weights being
    exported, and either new or an earlier blazeface export (replaced). Anything else there, a photo, another
    project's model, a JSON file that is not an export's metadata, is refused rather than overwritten."""
    suffix = ".onnx" if fmt == "onnx" else ".param"
    if out.suffix.lower() != suffix:
        raise BlazefaceError(f"{out}: an {'ONNX' if fmt == 'onnx' else 'ncnn'} export's name ends in {suffix}"
                             f"{'' if fmt == 'onnx' else ' (the .bin and .json are written beside it)'}")
    targets = [out] if fmt == "onnx" else [*ncnn_paths(out), sidecar_path(out)]
    for target in targets:
        if target.is_dir():
            raise BlazefaceError(f"{target}: is a folder; the export writes a file there")
        if target.exists() and same_file(target, weights):
            raise BlazefaceError(f"{target}: is the weights file being exported; choose another output name")
    existing = [t for t in targets if t.exists()]
    if existing and not _earlier_export(out, fmt):
        raise BlazefaceError(f"{existing[0]}: exists and is not an earlier blazeface export; choose another "
                             f"output name (or remove the file)")
    return targets


def _earlier_export(out: Path, fmt: str) -> bool:
    """Whether ``out`` (with its ncnn companions) holds what a blazeface export wrote: an ONNX file whose
    producer is blazeface, or an ncnn ``.param`` whose metadata file names a blazeface version."""
    if fmt == "onnx":
        try:
            onnx = require("onnx", "onnx")
            return onnx.load(str(out), load_external_data=False).producer_name == "blazeface"
        except Exception:  # not ONNX at all (a photo, a text file): not ours
            return False
    try:
        meta = read_sidecar(out)
    except BlazefaceError:
        return False
    return out.is_file() and "blazeface_version" in meta
