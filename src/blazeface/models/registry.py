"""Model registry: every family registers a builder with its ``ModelConfig``;
``create_model(name)`` builds it and loads weights."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

from torch import nn

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


def shipped_weights(name: str) -> Path | None:
    """Path of the weights this project trained and ships for ``name``, or None when there are none yet."""
    cfg = get_config(name)
    if cfg.weights_file is None:
        return None
    path = WEIGHTS_DIR / cfg.weights_file
    return path if path.is_file() else None


def create_model(name: str, weights: str | Path | None = SHIPPED, **config_overrides) -> nn.Module:
    """Build a registered model.

    ``weights``: ``"shipped"`` (default) loads the weights trained by this project and shipped in the
    package, ``None`` leaves the random initialisation, a path loads that checkpoint (this project's
    or an original repository's; strict key and shape check).
    The returned module carries its configuration as ``model.config``.
    """
    cfg = get_config(name)
    if config_overrides:
        cfg = replace(cfg, **config_overrides)
    model = _BUILDERS[name](cfg)
    model.config = cfg
    if weights is None:
        return model
    if isinstance(weights, str) and weights == SHIPPED:
        path = shipped_weights(name)
        if path is None:
            raise BlazefaceError(
                f"no trained weights are shipped for {name!r} yet; pass --weights / weights=PATH "
                "(e.g. an original checkpoint)")
        weights = path
    from ..checkpoint import load_weights

    load_weights(model, weights)
    return model
