"""Parameter and operation counts of a model, measured on a real forward pass.

Forward hooks on every counted layer record what that layer actually did for the input given (so
strides, dilations, padding and the model's own control flow are whatever the forward pass makes of
them; nothing is looked up in a table). Counted:

* **MACs** (``macs``, pure multiply-accumulates): every convolution (any dimension, groups, dilation and
  stride; transposed convolutions too) and every ``nn.Linear``.
  A convolution's MACs are ``output elements x in_channels / groups x kernel volume``; a transposed
  convolution's ``input elements x out_channels / groups x kernel volume``; a linear layer's
  ``output elements x in_features``.
* **MFLOPs** (``mflops``, the seed's convention, which is thop's count): the MACs, plus one per output
  element of every convolution or linear layer with a bias, plus four per BatchNorm output element.
  Activations, pooling, nearest upsampling, additions, concatenations and the softmax count zero, as in
  thop. (thop itself leaves out the bias of ``nn.Linear``; none of the registered detectors has one, and
  here it counts like a convolution's bias.)

``params`` is the number of elements of ``model.parameters()`` (buffers such as BatchNorm's running
statistics are not parameters).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .errors import BlazefaceError
from .geometry import round_up

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
BN_FLOPS_PER_ELEMENT = 4


@dataclass
class LayerProfile:
    """One call of one counted layer (a layer called twice appears twice)."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int
    flops: int


@dataclass
class ModelProfile:
    """What ``profile_model`` measured. ``macs`` and ``mflops`` are in millions (as ``blazeface profile``
    prints them); ``mac_count`` and ``flop_count`` are the exact integer counts behind them."""

    params: int
    macs: float
    mflops: float
    priors: int | None
    width: int
    height: int
    # The size asked for, when it was padded up to the model's ``size_multiple`` (else None).
    requested_size: tuple[int, int] | None = None
    mac_count: int = 0
    flop_count: int = 0
    layers: list[LayerProfile] = field(default_factory=list)

    @property
    def padded(self) -> bool:
        return self.requested_size is not None

    def summary(self) -> dict:
        """The ``blazeface profile --json`` object: ``{"params", "macs", "mflops", "priors"}``."""
        return {"params": self.params, "macs": self.macs, "mflops": self.mflops, "priors": self.priors}

    def to_dict(self) -> dict:
        return asdict(self)


def padded_size(width: int, height: int, multiple: int) -> tuple[int, int]:
    """``(width, height)`` rounded up to multiples of ``multiple``."""
    multiple = max(int(multiple), 1)
    return round_up(width, multiple), round_up(height, multiple)


def _layer_counts(module: nn.Module, inputs: tuple, output) -> tuple[str, int, int] | None:
    """``(kind, macs, flops)`` of one call of ``module``, or None for a layer that counts zero."""
    if not isinstance(output, torch.Tensor):
        return None
    out = output.numel()
    bias = getattr(module, "bias", None)
    bias_ops = out if isinstance(bias, torch.Tensor) else 0
    if isinstance(module, _CONV):
        macs = out * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    elif isinstance(module, _CONV_T):
        macs = inputs[0].numel() * (module.out_channels // module.groups) * math.prod(module.kernel_size)
    elif isinstance(module, nn.Linear):
        macs = out * module.in_features
    elif isinstance(module, _BN):
        return type(module).__name__, 0, BN_FLOPS_PER_ELEMENT * out
    else:
        return None
    return type(module).__name__, macs, macs + bias_ops


def count_ops(model: nn.Module, example: torch.Tensor) -> tuple[int, int, list[LayerProfile]]:
    """Run ``model(example)`` once (eval mode, no grad) and return ``(macs, flops, layers)``.

    The model's training flag is restored afterwards; the hooks are always removed.
    """
    names = {m: n for n, m in model.named_modules()}
    seen: set[int] = set()
    layers: list[LayerProfile] = []

    def hook(module, inputs, output):
        counts = _layer_counts(module, inputs, output)
        if counts is None:
            return
        kind, macs, flops = counts
        params = 0
        if id(module) not in seen:  # parameters of a layer called twice count once
            seen.add(id(module))
            params = sum(p.numel() for p in module.parameters(recurse=False))
        layers.append(LayerProfile(names.get(module, kind), kind, tuple(output.shape), params, macs, flops))

    counted = _CONV + _CONV_T + _BN + (nn.Linear,)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, counted)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return sum(layer.macs for layer in layers), sum(layer.flops for layer in layers), layers


def profile_model(model: nn.Module, width: int = 320, height: int = 240, *, channels: int = 3,
                  pad: bool = True) -> ModelProfile:
    """Count ``model``'s parameters, MACs and MFLOPs for one ``channels x height x width`` image.

    A model built by ``create_model`` carries ``config``: its ``size_multiple`` applies (a size that is
    not a multiple is padded up, as inference pads the image, and ``requested_size`` records the size
    asked for; ``pad=False`` raises instead) and ``priors`` is counted on the size actually run. Any
    other ``nn.Module`` is run on the size as given and has ``priors=None``.
    """
    width, height = int(width), int(height)
    if width <= 0 or height <= 0:
        raise BlazefaceError(f"size must be positive, not {width}x{height}")
    config = getattr(model, "config", None)
    multiple = int(getattr(config, "size_multiple", 1) or 1)
    requested = None
    run_w, run_h = padded_size(width, height, multiple)
    if (run_w, run_h) != (width, height):
        if not pad:
            raise BlazefaceError(
                f"{getattr(config, 'name', 'this model')} needs a width and height that are multiples of "
                f"{multiple}; {width}x{height} is not (e.g. {run_w}x{run_h})")
        requested = (width, height)

    try:
        ref = next(model.parameters())
        device, dtype = ref.device, ref.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    example = torch.zeros(1, channels, run_h, run_w, device=device, dtype=dtype)
    macs, flops, layers = count_ops(model, example)

    priors = None
    if config is not None and getattr(config, "priors", None) is not None:
        from .priors import num_priors

        priors = num_priors(config.priors, run_h, run_w)
    return ModelProfile(
        params=sum(p.numel() for p in model.parameters()),
        macs=macs / 1e6, mflops=flops / 1e6, priors=priors, width=run_w, height=run_h,
        requested_size=requested, mac_count=macs, flop_count=flops, layers=layers)


def profile(name: str, width: int = 320, height: int = 240, *, pad: bool = True) -> ModelProfile:
    """Profile the registered model ``name`` (random initialisation; counts do not depend on weights)."""
    from .models import create_model

    return profile_model(create_model(name, weights=None), width, height, pad=pad)
