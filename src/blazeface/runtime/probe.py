"""A forward pass at load time, so that a broken exported model is refused before it reports "0 faces"."""
from __future__ import annotations

import numpy as np

from ..config import ModelConfig
from ..errors import BlazefaceError


def check_runner(runner, config: ModelConfig, path) -> None:
    """Run ``runner`` once on a mid-grey input (the mean colour: all zeros) and a gradient, and refuse it
    (``BlazefaceError`` naming ``path``) unless its outputs are finite, shaped for ``config``'s priors, and
    its face scores are probabilities: what weights that do not belong to the file's metadata (random or
    truncated bytes, another model's) fail."""
    from ..priors import prior_boxes

    side = 4 * max(config.size_multiple, 16)
    gradient = np.linspace(-100, 100, side * side, dtype=np.float32).reshape(side, side)
    batch = np.stack([np.zeros((3, side, side), np.float32), np.stack([gradient, gradient.T, -gradient])])
    try:
        loc, conf, landm = runner(batch)
    except BlazefaceError:
        raise
    except Exception as exc:  # the runtimes raise their own types
        raise BlazefaceError(f"{path}: the model fails on a test input ({str(exc).splitlines()[0][:120]})") from None
    priors = len(prior_boxes(config.priors, side, side))
    for name, value, width in (("loc", loc, 4), ("conf", conf, 2), ("landm", landm, 10)):
        value = np.asarray(value)
        if value.shape != (2, priors, width):
            raise BlazefaceError(f"{path}: output {name} has shape {value.shape} for a {side}x{side} input, model "
                                 f"{config.name!r} gives {(2, priors, width)}: weights or model do not match")
        if not np.isfinite(value).all():
            raise BlazefaceError(f"{path}: the model computes non-finite {name} values on a test input: its "
                                 f"weights are damaged or do not belong to this model")
    conf = np.asarray(conf)
    if conf.min() < -1e-3 or conf.max() > 1 + 1e-3 or np.abs(conf.sum(axis=-1) - 1).max() > 1e-2:
        raise BlazefaceError(f"{path}: the model's face scores are not probabilities: its weights are damaged "
                             f"or do not belong to this model")
