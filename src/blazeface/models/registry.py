"""Model registry: every family registers a builder with its ``ModelConfig``;
``create_model(name)`` builds it and loads weights."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

from torch import nn

from .. import defaults
from ..checkpoint import load_weights, weights_metadata
from ..config import ModelConfig
from ..errors import BlazefaceError

_BUILDERS: dict[str, Callable[[ModelConfig], nn.Module]] = {}
_CONFIGS: dict[str, ModelConfig] = {}

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
SHIPPED = "shipped"


def register_model(config: ModelConfig):
    """Decorator: ``@register_model(ModelConfig(name="blaze", ...))`` on a builder ``fn(config) -> nn.Module``."""

    def wrap(builder: Callable[[ModelConfig], nn.Module]):
        if config.name in _BUILDERS:
            raise ValueError(f"model {config.name!r} registered twice")
        _BUILDERS[config.name] = builder
        _CONFIGS[config.name] = config
        return builder

    return wrap


def list_models() -> list[str]:
    return list(_BUILDERS)


def get_config(name: str) -> ModelConfig:
    try:
        return _CONFIGS[name]
    except KeyError:
        raise BlazefaceError(f"unknown model {name!r}; choose one of: {', '.join(_BUILDERS)}") from None


def shipped_weights(name: str) -> Path:
    """Path of the weights this project trained and ships for ``name``."""
    cfg = get_config(name)
    path = WEIGHTS_DIR / (cfg.weights_file or f"{name}.pth")
    if not path.is_file():
        raise BlazefaceError(f"{path}: the package is missing the shipped weights of {name!r} (reinstall it)")
    return path


def resolve_weights(name: str, weights: str | Path | None) -> Path:
    """The weights file to load for model ``name``: ``None`` or ``"shipped"`` -> the shipped weights,
    anything else -> that path, which must exist."""
    if weights is None or (isinstance(weights, str) and weights == SHIPPED):
        return shipped_weights(name)
    path = Path(weights)
    if not path.is_file():
        raise BlazefaceError(f"{path}: weights file not found")
    return path


def model_name_for(model: str | None, weights: str | Path | None = None) -> str:
    """``model`` when given (it must be registered), else the model a weights file names (a trained
    ``weights.pth`` or training checkpoint says), else the default (blaze)."""
    if model is not None:
        get_config(model)
        return model
    if weights is None or (isinstance(weights, str) and weights == SHIPPED):
        return defaults.MODEL
    stated = weights_metadata(resolve_weights(defaults.MODEL, weights)).get("model")
    if isinstance(stated, str) and stated in _CONFIGS:
        return stated
    return defaults.MODEL


def create_model(name: str, weights: str | Path | None = SHIPPED, **config_overrides) -> nn.Module:
    """Build a registered model.

    ``weights``: ``"shipped"`` (the default) loads the weights trained by this project and shipped in the
    package; a path loads that checkpoint (this project's or an original repository's; strict key and
    shape check); ``None`` leaves the random initialisation (training from scratch). Note that
    :class:`~blazeface.FaceDetector` and :func:`~blazeface.export.export_model`, which only make sense with
    trained weights, read ``weights=None`` as the shipped ones.
    The returned module carries its configuration as ``model.config``.
    """
    cfg = get_config(name)
    if config_overrides:
        cfg = replace(cfg, **config_overrides)
    model = _BUILDERS[name](cfg)
    model.config = cfg
    if weights is None:
        return model
    load_weights(model, resolve_weights(name, weights))
    return model
