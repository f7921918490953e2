"""Choosing and building a backend runner (see :mod:`blazeface.runtime`) from a model name and a weights file.

A weights file says what it is: its suffix names the backend (``.onnx`` ONNX Runtime, ``.param`` ncnn,
anything else a PyTorch checkpoint), and the model name is read from the file (a trained ``weights.pth``
carries it, an export's metadata too), so both may be left out.

For onnx and ncnn, a checkpoint (or ``weights=None``, the shipped one) is exported on first use and
cached under ``~/.cache/blazeface/exports`` (``$BLAZEFACE_CACHE`` or ``$XDG_CACHE_HOME`` move it), keyed
by model name, weights hash, package version, export revision and export settings.
"""
from __future__ import annotations

import os
from pathlib import Path

from .defaults import BACKEND, BACKEND_SUFFIXES, BACKENDS
from .defaults import MODEL as DEFAULT_MODEL
from .errors import BlazefaceError
from .export import ncnn as ncnn_export
from .export import onnx as onnx_export
from .metadata import EXPORT_REVISION, check_metadata, file_sha256
from .models import create_model, get_config, model_name_for, resolve_weights
from .models.registry import SHIPPED
from .optional import require
from .runtime import NcnnRunner, OnnxRunner, TorchRunner
from .runtime.probe import check_runner
from .version import __version__

__all__ = ["BACKENDS", "DEFAULT_MODEL", "backend_for", "cache_dir", "default_backend", "exported_model",
           "make_runner"]


def cache_dir() -> Path:
    if os.environ.get("BLAZEFACE_CACHE"):
        return Path(os.environ["BLAZEFACE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "blazeface"


def _is_file_name(weights) -> bool:
    return weights is not None and not (isinstance(weights, str) and weights == SHIPPED)


def default_backend() -> str:
    """The backend when neither the caller nor the weights file names one: onnx when ONNX Runtime (and onnx
    + onnxslim, to export the checkpoint on first use) is installed, else torch.

    Why onnx: on one CPU thread it runs every model 1.6-3x faster than PyTorch end to end (README, Latency)
    with the same outputs (within 1e-4); the export costs a few seconds once and is cached."""
    import importlib.util

    if all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx", "onnxslim")):
        return "onnx"
    return BACKEND


def backend_for(weights, backend: str | None = None) -> str:
    """The backend to run ``weights`` on: ``backend`` when given (it must suit the file), else the one its
    suffix names, else the default."""
    named = BACKEND_SUFFIXES.get(Path(weights).suffix.lower()) if _is_file_name(weights) else None
    if backend is None:
        return named or default_backend()
    if backend not in BACKENDS:
        raise BlazefaceError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if named and named != backend:
        raise BlazefaceError(f"{weights} is an {named} model: pass backend={named!r} (or leave backend out)")
    return backend


def exported_model(backend: str, model_name: str, weights=None, *, fp16: bool = False) -> Path:
    """The exported file to run for ``backend``: ``weights`` itself when it is one (.onnx / .param),
    else the checkpoint (``None``: the shipped one) exported on first use and cached."""
    get_config(model_name)  # unknown names fail before any work
    suffix = {"onnx": ".onnx", "ncnn": ".param"}[backend]
    if _is_file_name(weights) and Path(weights).suffix in BACKEND_SUFFIXES:
        backend_for(weights, backend)
        path = Path(weights).with_suffix(suffix)
        if not path.is_file():
            raise BlazefaceError(f"{path}: no such file")
        return path
    checkpoint = resolve_weights(model_name, weights)
    digest = file_sha256(checkpoint)
    if backend == "onnx":
        name = f"{model_name}-{digest[:16]}-v{__version__}r{EXPORT_REVISION}-opset{onnx_export.OPSET}.onnx"
    else:
        name = f"{model_name}-{digest[:16]}-v{__version__}r{EXPORT_REVISION}-{'fp16' if fp16 else 'fp32'}.param"
    target = cache_dir() / "exports" / name
    if target.is_file() and (backend == "onnx" or target.with_suffix(".bin").is_file()):
        return target
    model = create_model(model_name, weights=checkpoint)
    target.parent.mkdir(parents=True, exist_ok=True)
    if backend == "onnx":
        onnx_export.export_onnx(model, target, weights_sha256=digest)  # atomic: a reader sees all of it or none
    else:
        ncnn_export.export_ncnn(model, target, fp16=fp16, weights_sha256=digest)  # writes .bin first, .param last
    return target


def make_runner(backend: str | None, model_name: str | None, weights=None, *, threads: int | None = None,
                device: str = "cpu", precise: bool = False):
    """A runner for ``weights`` on ``backend``; ``runner.config`` is the model's :class:`ModelConfig`.

    ``backend``: "torch", "onnx" or "ncnn"; None: from the file's suffix, else :func:`default_backend`.
    ``model_name``: None: the one the weights file names (default blaze); given, the file must agree.
    ``weights``: None (the shipped weights of the model), a checkpoint, an ``.onnx`` or an ncnn ``.param``
    (its ``.bin`` beside it). For onnx and ncnn a checkpoint is exported and cached.
    ``threads``: intra-op threads of the backend (None: its default). ``precise``: ncnn without
    Winograd and fp16 (for parity checks).
    """
    backend = backend_for(weights, backend)
    exported = _is_file_name(weights) and Path(weights).suffix.lower() in BACKEND_SUFFIXES
    if backend != "torch" and device != "cpu":
        raise BlazefaceError(f"the {backend} backend runs on the CPU here; device={device!r} is for torch")
    if backend != "torch":
        require("onnxruntime" if backend == "onnx" else "ncnn", backend)  # before any export work
    if exported:
        path = exported_model(backend, model_name or DEFAULT_MODEL, weights)
        if backend == "onnx":
            runner = OnnxRunner(path, threads=threads)
        else:
            runner = NcnnRunner(path, threads=threads, precise=precise)
        stated = runner.metadata.get("model")
        config = get_config(model_name or stated or DEFAULT_MODEL)
        check_metadata(runner.metadata, config, path)
        check_runner(runner, config, path)
        runner.config = config
        return runner
    name = model_name_for(model_name, weights)
    checkpoint = resolve_weights(name, weights)
    config = get_config(name)
    if backend == "torch":
        runner = TorchRunner(create_model(name, weights=checkpoint), device, threads=threads)
    else:
        path = exported_model(backend, name, checkpoint)
        runner = (OnnxRunner(path, threads=threads, config=config) if backend == "onnx"
                  else NcnnRunner(path, threads=threads, config=config, precise=precise))
        check_runner(runner, config, path)
    runner.config = config
    return runner
