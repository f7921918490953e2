"""Loading weights: this project's checkpoints and the original repositories' state dicts.

A ``weights.pth`` written by the trainer is a plain state dict (safe to read with weights_only loading)
plus one string entry, :data:`META_KEY`, holding JSON that names the model and its
configuration, so the file says which model it is. Loading strips that entry.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from .errors import BlazefaceError


META_KEY = "__blazeface__"
# What ONNX and ncnn exports are named (an ncnn model is its .param and .bin).
EXPORT_SUFFIXES = (".onnx", ".param", ".bin")


def with_metadata(state: dict[str, torch.Tensor], config) -> dict:
    """``state`` plus the :data:`META_KEY` entry describing ``config`` (a :class:`ModelConfig`)."""
    meta = {"model": config.name, "config": asdict(config)}
    return {**state, META_KEY: json.dumps(meta)}


def _load(path: Path):
    if not path.is_file():
        raise BlazefaceError(f"{path}: weights file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, pickle with objects, truncated file...
        if path.suffix.lower() in EXPORT_SUFFIXES:
            raise BlazefaceError(f"{path}: an exported model, not PyTorch weights; this needs the .pth checkpoint "
                                 f"it was exported from") from None
        raise BlazefaceError(f"{path}: not a readable PyTorch weights file ({_load_problem(exc)})") from None


def _load_problem(exc: Exception) -> str:
    """torch.load's error in a few words (its weights_only messages run to a paragraph of advice)."""
    text = str(exc).strip()
    unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if unsafe:
        return f"it pickles a Python object, {unsafe.group(1)}; only tensors and plain containers are loaded"
    if re.search(r"Unsupported operand|invalid load key", text):
        return "neither a torch.save archive nor a pickle"
    return text.splitlines()[0].split(". ")[0].rstrip(".") if text else type(exc).__name__


def weights_metadata(path: str | Path) -> dict:
    """What a weights file says about itself: ``{"model": name, "config": {...}}``, or {} when nothing
    (an original repository's checkpoint, or one written before files described themselves)."""
    obj = _load(Path(path))
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):  # a training checkpoint
        name = obj.get("model_name")
        return {"model": name} if isinstance(name, str) else {}
    text = obj.get(META_KEY) if isinstance(obj, dict) else None
    try:
        meta = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        raise BlazefaceError(f"{path}: unreadable {META_KEY} entry") from None
    return meta if isinstance(meta, dict) else {}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` (tensors only: ``weights_only=True``).

    Accepts a bare state dict (with or without the :data:`META_KEY` entry), a training checkpoint (its
    ``ema`` weights, else ``model``), and strips a DataParallel ``module.`` prefix.
    """
    path = Path(path)
    obj = _load(path)
    if isinstance(obj, dict):
        obj = {k: v for k, v in obj.items() if k != META_KEY}
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj.get("ema") or obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BlazefaceError(f"{path}: does not hold a state dict of tensors")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Strictly load ``path`` into ``model``; a missing, unexpected or mis-shaped key is a one-line error."""
    state = read_state_dict(path)
    own = model.state_dict()
    name = getattr(getattr(model, "config", None), "name", type(model).__name__)
    stated = weights_metadata(path).get("model")
    if stated and stated != name:
        raise BlazefaceError(f"{path} holds model {stated!r}, not {name!r}: pass model={stated!r}")
    for key, value in own.items():
        if key not in state:
            raise BlazefaceError(f"{path}: checkpoint does not match model {name!r}: missing key {key!r}")
        if state[key].shape != value.shape:
            raise BlazefaceError(
                f"{path}: checkpoint does not match model {name!r}: {key!r} has shape "
                f"{tuple(state[key].shape)}, the model needs {tuple(value.shape)}")
    extra = [k for k in state if k not in own]
    if extra:
        raise BlazefaceError(f"{path}: checkpoint does not match model {name!r}: unexpected key {extra[0]!r}")
    model.load_state_dict(state, strict=True)
