"""Exponential moving average of model weights (evaluated and shipped instead of the raw weights)."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    """EMA with a warm-up of the decay (timm/YOLO style): early updates follow the model closely, so the
    average is useful from the first epoch instead of being dominated by the random initialisation. The decay
    and its ramp have their defaults in one place, the trainer's options (``ema_decay``, ``ema_warmup``)."""

    def __init__(self, model: nn.Module, decay: float, warmup_updates: int):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.warmup_updates = warmup_updates
        self.updates = 0

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.warmup_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        model_state = model.state_dict()
        for name, value in self.module.state_dict().items():
            src = model_state[name].detach()
            if value.dtype.is_floating_point:
                value.mul_(d).add_(src, alpha=1 - d)
            else:
                value.copy_(src)
