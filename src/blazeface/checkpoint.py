"""Loading weights: this project's checkpoints and the original repositories' state dicts."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .errors import BlazefaceError


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` (tensors only: ``weights_only=True``).

    Accepts a bare state dict, a training checkpoint (its ``ema`` weights, else ``model``), and strips
    a DataParallel ``module.`` prefix.
    """
    path = Path(path)
    if not path.is_file():
        raise BlazefaceError(f"{path}: weights file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, pickle with objects, truncated file...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BlazefaceError(f"{path}: not a readable PyTorch weights file ({first})") from None
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
