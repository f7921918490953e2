"""BlazeFace (zineos/Blazeface layout): 5x5 BlazeBlocks, two detection levels at strides 8 and 16; and
blazelite, the same network with 3x3 BlazeBlocks up to stride 8, one block instead of two at stride 2 and 16
channels there instead of 24 (about half the network time, same priors and heads)."""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ..config import ModelConfig, PriorConfig, TrainConfig
from .blocks import conv_bn_relu, depthwise_head, separable
from .detector import FaceDetectorNet
from .registry import register_model


class BlazeBlock(nn.Module):
    """ReLU(branch(x) + shortcut(x)).

    Single block: depthwise 5x5 -> pointwise. Double block (``mid_ch`` given): that, ReLU, then a full
    5x5 conv -> pointwise, ReLU. At stride 2 the shortcut is MaxPool -> 1x1 conv -> BN -> ReLU.
    """

    def __init__(self, in_ch: int, out_ch: int, mid_ch: int | None = None, stride: int = 1, kernel: int = 5):
        super().__init__()
        if mid_ch is None:
            self.conv = nn.Sequential(separable(in_ch, out_ch, kernel, stride, final_relu=False))
        else:
            self.conv = nn.Sequential(
                separable(in_ch, mid_ch, kernel, stride, final_relu=False),
                nn.ReLU(inplace=True),
                separable(mid_ch, out_ch, kernel, 1, depthwise=False, final_relu=False),
                nn.ReLU(inplace=True),
            )
        if stride != 1:
            self.shortcut = nn.Sequential(
                nn.MaxPool2d(stride, stride),
                nn.Conv2d(in_ch, out_ch, 1),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(inplace=True),
            )
        elif in_ch != out_ch:
            raise ValueError("a stride-1 BlazeBlock keeps its channel count")
        else:
            self.shortcut = nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x) + self.shortcut(x))


class Blaze(FaceDetectorNet):
    """``kernel``: the spatial kernel of the BlazeBlocks up to stride 8 (conv2-conv9), ``kernel16`` that of
    the stride-16 stage (conv10-conv12; default ``kernel``). BlazeFace has 5 for both; the stem and heads
    are 3x3 in every variant. ``stride2_blocks``: BlazeBlocks after the stem at stride 2 (conv2, conv3;
    BlazeFace has 2). ``stride2_width``: the channels of the stem and the stride-2 blocks (BlazeFace: 24).
    Module names do not depend on these, so a 5x5 checkpoint's state dict names every
    parameter of a smaller variant."""

    head_inputs = ("conv9", "conv12")

    def __init__(self, config: ModelConfig, kernel: int = 5, kernel16: int | None = None, stride2_blocks: int = 2,
                 stride2_width: int = 24):
        super().__init__()
        k, k16 = kernel, kernel if kernel16 is None else kernel16
        if stride2_blocks not in (1, 2):
            raise ValueError("stride2_blocks is 1 or 2")
        w = stride2_width
        self.conv1 = conv_bn_relu(3, w, 3, stride=2)
        self.conv2 = BlazeBlock(w, w, kernel=k)
        # Without a second block, conv3 is an identity: no parameters, and exports drop it.
        self.conv3 = BlazeBlock(w, w, kernel=k) if stride2_blocks == 2 else nn.Identity()
        self.conv4 = BlazeBlock(w, 48, stride=2, kernel=k)
        self.conv5 = BlazeBlock(48, 48, kernel=k)
        self.conv6 = BlazeBlock(48, 48, kernel=k)
        self.conv7 = BlazeBlock(48, 96, mid_ch=24, stride=2, kernel=k)
        self.conv8 = BlazeBlock(96, 96, mid_ch=24, kernel=k)
        self.conv9 = BlazeBlock(96, 96, mid_ch=24, kernel=k)
        self.conv10 = BlazeBlock(96, 96, mid_ch=24, stride=2, kernel=k16)
        self.conv11 = BlazeBlock(96, 96, mid_ch=24, kernel=k16)
        self.conv12 = BlazeBlock(96, 96, mid_ch=24, kernel=k16)
        anchors = config.priors.priors_per_cell
        self.loc = nn.Sequential(*[depthwise_head(96, a * 4) for a in anchors])
        self.conf = nn.Sequential(*[depthwise_head(96, a * 2) for a in anchors])
        self.landm = nn.Sequential(*[depthwise_head(96, a * 10) for a in anchors])

    def head_outputs(self, x):
        x = self.conv1(x)
        for block in (self.conv2, self.conv3, self.conv4, self.conv5, self.conv6, self.conv7, self.conv8):
            x = block(x)
        stride8 = self.conv9(x)
        stride16 = self.conv12(self.conv11(self.conv10(stride8)))
        feats = (stride8, stride16)
        return ([h(f) for h, f in zip(self.loc, feats)],
                [h(f) for h, f in zip(self.conf, feats)],
                [h(f) for h, f in zip(self.landm, feats)])


BLAZE_CONFIG = ModelConfig(
    name="blaze",
    description="BlazeFace: 5x5 BlazeBlocks, strides 8/16 (zineos/Blazeface layout)",
    priors=PriorConfig(min_sizes=((8, 11), (14, 19, 26, 38, 64, 149)), steps=(8, 16)),
    # Four stride-2 stages with floor-rounding max-pool shortcuts: H and W must be multiples of 16.
    size_multiple=16,
    weights_file="blaze.pth",
    train=TrainConfig(optimizer="adamw", lr=2e-3, weight_decay=5e-4, batch_size=32, epochs=200,
                      cls_loss="ohem", loc_weight=2.0),
)


@register_model(BLAZE_CONFIG)
def blaze(config: ModelConfig) -> nn.Module:
    return Blaze(config)


# blaze's priors, heads, input multiple and recipe; only the name, weights and learning rate differ.
@register_model(replace(
    BLAZE_CONFIG,
    name="blazelite",
    description="BlazeFace-lite: blaze without conv3, 16 channels at stride 2, 3x3 BlazeBlocks up to stride 8, "
                "5x5 at stride 16 (blaze's priors and heads)",
    weights_file="blazelite.pth",
    # Trained by shrinking blaze's kernels (tools/shrink_kernels.py) and distilling from blaze, whose
    # priors it shares: a smaller learning rate than from scratch keeps what the shrink carried over.
    train=replace(BLAZE_CONFIG.train, lr=1e-3),
))
def blazelite(config: ModelConfig) -> nn.Module:
    # Most of blaze's time is spent at strides 2-8, where 3x3 kernels save it; the stride-16 stage is
    # cheap and its 5x5 kernels give the large-face head its receptive field. The second block at stride
    # 2 (conv3, 320x240 x 24 channels at a 640x480 input) costs a tenth of the rest. On AVX-512, ONNX
    # Runtime's blocked (NCHWc) layout works in blocks of 16 channels: 24 are padded to 32, and the max-pool
    # of conv4's shortcut over them leaves the blocked layout (the largest tensor reordered out and back).
    # With 16 channels at stride 2 the network takes 0.74x the time (docs/MODELS.md).
    return Blaze(config, kernel=3, kernel16=5, stride2_blocks=1, stride2_width=16)
