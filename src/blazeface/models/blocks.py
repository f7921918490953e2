"""Convolution building blocks shared by the model families.

Module nesting follows the original repositories exactly, because the state-dict keys
(``conv2.conv.0.3.weight``...) are the compatibility contract with their checkpoints.
"""
from __future__ import annotations

from torch import nn


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv (no bias) -> BN -> ReLU, 'same' padding."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def conv_bn(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv (no bias) -> BN, no activation (a linear projection)."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
    )


def separable(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, *,
              depthwise: bool = True, final_relu: bool = True) -> nn.Sequential:
    """Spatial conv -> BN -> ReLU -> 1x1 conv -> BN [-> ReLU].

    ``depthwise=False`` makes the spatial conv a full convolution (BlazeFace's "double" blocks).
    The stride sits on the spatial conv, as in all the originals.
    """
    layers = [
        nn.Conv2d(in_ch, in_ch, kernel, stride, kernel // 2, groups=in_ch if depthwise else 1, bias=False),
        nn.BatchNorm2d(in_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_ch, out_ch, 1, 1, 0, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if final_relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def depthwise_head(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    """Depthwise 3x3 (bias) -> ReLU -> 1x1 (bias): the light prediction head of blaze/slim/rfb."""
    return nn.Sequential(
        nn.Conv2d(in_ch, in_ch, 3, stride, 1, groups=in_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_ch, out_ch, 1),
    )
