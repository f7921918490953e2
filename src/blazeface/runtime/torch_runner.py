"""PyTorch backend."""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..denormals import flush_module


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a Conv2d (consecutive children of one module, or the
    ``conv``/``bn`` pair of a block) into the convolution. Eval-mode only; outputs unchanged to float
    rounding; blaze ~7 % faster on one CPU thread."""
    for parent in model.modules():
        names = list(parent._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = parent._modules[first], parent._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                parent._modules[first] = fuse_conv_bn_eval(conv, bn)
                parent._modules[second] = nn.Identity()
    return model


def optimize_for_inference(model: nn.Module, channels_last: bool) -> nn.Module:
    """A fused, eval-mode copy of ``model`` in the memory format its config prefers (the original is left
    untouched: the trainer hands its EMA model to the dev evaluator)."""
    fast = fuse_conv_bn(copy.deepcopy(model).eval())
    flush_module(fast)  # subnormal weights are slow on CPUs and change no output (blazeface.denormals)
    return fast.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


class TorchRunner:
    """PyTorch backend: (N, 3, H, W) float32 numpy batch -> (loc, conf, landm) numpy arrays.

    ``threads`` sets torch's intra-op thread count, which is process-wide.
    """

    name = "torch"

    def __init__(self, model: nn.Module, device: str = "cpu", threads: int | None = None):
        if threads:
            torch.set_num_threads(int(threads))
        config = getattr(model, "config", None)
        self.memory_format = (torch.channels_last if config is None or config.channels_last
                              else torch.contiguous_format)
        self.model = optimize_for_inference(model, self.memory_format == torch.channels_last).to(device)
        self.device = device

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray):
        x = torch.from_numpy(batch).to(self.device).contiguous(memory_format=self.memory_format)
        loc, conf, landm = self.model(x)
        return loc.cpu().numpy(), conf.cpu().numpy(), landm.cpu().numpy()
