"""Inference backends behind one interface: ``runner(batch (N, 3, H, W) float32) -> (loc, conf, landm)``.

Every runner feeds the one post-processing path (:func:`blazeface.postprocess.postprocess`).

=========  =======================  ===================================================================
backend    ``weights``              needs
=========  =======================  ===================================================================
torch      a checkpoint (.pth)      (core)
onnx       an exported ``.onnx``    ``pip install 'blazeface[onnx]'`` (onnxruntime; onnx + onnxslim to export)
ncnn       an ncnn ``.param``       ``pip install 'blazeface[ncnn]'`` (ncnn; pnnx to export)
=========  =======================  ===================================================================

For onnx and ncnn, ``weights=None`` (the shipped model) or a checkpoint is exported on first use and
cached under ``~/.cache/blazeface/exports`` (``$BLAZEFACE_CACHE`` or ``$XDG_CACHE_HOME`` move it), keyed
by model name, weights hash, package version, export revision and export settings.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import BlazefaceError
from .torch_runner import TorchRunner

BACKENDS = ("torch", "onnx", "ncnn")

__all__ = ["BACKENDS", "TorchRunner", "cache_dir", "default_backend", "exported_model", "make_runner"]


def default_backend(weights=None) -> str:
    """The backend to use when none is named: the one an exported ``weights`` file is for, else onnx when
    ONNX Runtime (and onnx + onnxslim, to export the checkpoint on first use) is installed, else torch.

    Why onnx: on one CPU thread it runs every model 1.6-3x faster than PyTorch end to end (README, Latency)
    with the same outputs (within 1e-4); the export costs a few seconds once and is cached."""
    import importlib.util

    suffix = Path(weights).suffix if weights is not None else ""
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".param", ".bin"):
        return "ncnn"
    if all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx", "onnxslim")):
        return "onnx"
    return "torch"


def cache_dir() -> Path:
    if os.environ.get("BLAZEFACE_CACHE"):
        return Path(os.environ["BLAZEFACE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "blazeface"


def _checkpoint(model_name: str, weights) -> Path:
    from ..models.registry import SHIPPED, shipped_weights

    if weights is None or (isinstance(weights, str) and weights == SHIPPED):
        path = shipped_weights(model_name)
        if path is None:
            raise BlazefaceError(
                f"no trained weights are shipped for {model_name!r} yet; pass --weights with an exported model "
                "or a checkpoint (e.g. an original one)")
        return path
    path = Path(weights)
    if not path.is_file():
        raise BlazefaceError(f"{path}: weights file not found")  # as the torch backend says it
    return path


def exported_model(backend: str, model_name: str, weights=None, *, fp16: bool = False) -> Path:
    """The exported file to run for ``backend``: ``weights`` itself when it is one (.onnx / .param),
    else the checkpoint (``None``: the shipped one) exported on first use and cached."""
    from .. import __version__
    from ..export.metadata import EXPORT_REVISION, file_sha256
    from ..models import get_config

    get_config(model_name)  # unknown names fail before any work
    suffix = {"onnx": ".onnx", "ncnn": ".param"}[backend]
    if weights is not None and Path(weights).suffix in (".onnx", ".param", ".bin"):
        path = Path(weights)
        if path.suffix == ".bin" and backend == "ncnn":
            path = path.with_suffix(".param")
        if path.suffix != suffix:
            other = "onnx" if path.suffix == ".onnx" else "ncnn"
            raise BlazefaceError(f"{path} is an {other} model: use --backend {other}")
        if not path.is_file():
            raise BlazefaceError(f"{path}: no such file")
        return path
    checkpoint = _checkpoint(model_name, weights)
    digest = file_sha256(checkpoint)
    if backend == "onnx":
        from ..export.onnx import OPSET

        name = f"{model_name}-{digest[:16]}-v{__version__}r{EXPORT_REVISION}-opset{OPSET}.onnx"
    else:
        name = f"{model_name}-{digest[:16]}-v{__version__}r{EXPORT_REVISION}-{'fp16' if fp16 else 'fp32'}.param"
    target = cache_dir() / "exports" / name
    if target.is_file() and (backend == "onnx" or target.with_suffix(".bin").is_file()):
        return target
    from ..models import create_model

    model = create_model(model_name, weights=checkpoint)
    target.parent.mkdir(parents=True, exist_ok=True)
    if backend == "onnx":
        from ..export.onnx import export_onnx

        partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        export_onnx(model, partial, weights_sha256=digest)
        os.replace(partial, target)  # atomic: a concurrent reader sees the whole file or none
    else:
        from ..export.ncnn import export_ncnn

        export_ncnn(model, target, fp16=fp16, weights_sha256=digest)  # writes .bin first, .param last
    return target


def make_runner(backend: str, model_name: str, weights=None, *, threads: int | None = None,
                device: str = "cpu", precise: bool = False):
    """A runner for ``model_name`` on ``backend`` ("torch", "onnx" or "ncnn"; None: :func:`default_backend`).

    ``weights``: torch: a checkpoint (None: the shipped weights); onnx: an ``.onnx`` file; ncnn: a
    ``.param`` (its ``.bin`` beside it). For onnx and ncnn, None or a checkpoint is exported and cached.
    ``threads``: intra-op threads of the backend (None: its default). ``precise``: ncnn without
    Winograd and fp16 (for parity checks).
    """
    from ..models import get_config

    if backend is None:
        backend = default_backend(weights)
    if backend not in BACKENDS:
        raise BlazefaceError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    config = get_config(model_name)
    if backend == "torch":
        from ..models import create_model
        from ..models.registry import SHIPPED

        if weights is not None and Path(weights).suffix in (".onnx", ".param"):
            raise BlazefaceError(f"{weights} is an exported model: use --backend "
                                 f"{'onnx' if Path(weights).suffix == '.onnx' else 'ncnn'}")
        net = create_model(model_name, weights=SHIPPED if weights is None else weights)
        return TorchRunner(net, device, threads=threads)
    if device != "cpu":
        raise BlazefaceError(f"the {backend} backend runs on the CPU here; device {device!r} is for torch")
    from ..export.onnx import require

    require("onnxruntime" if backend == "onnx" else "ncnn", backend)  # before any export work
    path = exported_model(backend, model_name, weights)
    if backend == "onnx":
        from .onnx_runner import OnnxRunner

        return OnnxRunner(path, threads=threads, config=config)
    from .ncnn_runner import NcnnRunner

    return NcnnRunner(path, threads=threads, config=config, precise=precise)
