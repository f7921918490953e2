"""Face-Detector-1MB's ``slim`` and ``RFB`` detectors: depthwise-separable backbone, four levels
(strides 8/16/32/64)."""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig, PriorConfig, TrainConfig
from .blocks import depthwise_head, separable, conv_bn_relu
from .detector import FaceDetectorNet
from .registry import register_model


class BasicConv(nn.Module):
    """Conv (no bias) -> BN [-> ReLU], with the originals' attribute names (conv/bn)."""

    def __init__(self, in_ch, out_ch, kernel=1, stride=1, padding=0, dilation=1, relu=True):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=1e-5, momentum=0.01)
        self.relu = nn.ReLU(inplace=True) if relu else None

    def forward(self, x):
        x = self.bn(self.conv(x))
        return self.relu(x) if self.relu is not None else x


class BasicRFB(nn.Module):
    """Receptive Field Block: three branches with dilations 2, 3, 5, a linear 1x1 fusion and a
    linear 1x1 shortcut; output ReLU(fusion * scale + shortcut)."""

    def __init__(self, in_ch: int, out_ch: int, scale: float = 1.0, map_reduce: int = 8):
        super().__init__()
        inter = in_ch // map_reduce
        self.scale = scale

        def dilated(ch, d):
            return BasicConv(ch, ch, 3, padding=d, dilation=d, relu=False)

        self.branch0 = nn.Sequential(BasicConv(in_ch, inter, relu=False),
                                     BasicConv(inter, 2 * inter, 3, padding=1), dilated(2 * inter, 2))
        self.branch1 = nn.Sequential(BasicConv(in_ch, inter, relu=False),
                                     BasicConv(inter, 2 * inter, 3, padding=1), dilated(2 * inter, 3))
        self.branch2 = nn.Sequential(BasicConv(in_ch, inter, relu=False),
                                     BasicConv(inter, inter // 2 * 3, 3, padding=1),
                                     BasicConv(inter // 2 * 3, 2 * inter, 3, padding=1), dilated(2 * inter, 5))
        self.ConvLinear = BasicConv(6 * inter, out_ch, relu=False)
        self.shortcut = BasicConv(in_ch, out_ch, relu=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)
        return self.relu(self.ConvLinear(out) * self.scale + self.shortcut(x))


class Slim(FaceDetectorNet):
    """``conv2_channels``: conv2's output width (the originals' 32). Its 1x1 convolution is the largest at the
    320x240 stage of a 640x480 input; with 16 channels it and conv3's depthwise layer halve, for 0.87x slim's
    network time: that is slimlite, shrunk from slim by keeping the 16 channels conv3 rebuilds its output from
    best (``training/shrink.py``) and distilled.

    ``early_stride``: the stride-2 stage (half the input resolution) ends after the stem: conv2 takes the stride
    that conv3 had, so conv2's 1x1 and conv3 run at a quarter of the pixels, and conv4 is left out (an
    ``nn.Identity``, so the blocks keep the originals' names and a shrink can map them); the feature maps the
    heads see keep their sizes. Faster (0.77x slim's network) but it loses what a per-layer refit cannot
    restore; trained for 2 h it stayed at -0.05 to -0.07 AP under slim (docs/MODELS.md), so nothing ships it."""

    head_inputs = ("conv8", "conv11", "conv13", "conv14")

    def __init__(self, config: ModelConfig, rfb: bool = False, conv2_channels: int = 32, early_stride: bool = False):
        super().__init__()
        self.conv1 = conv_bn_relu(3, 16, 3, stride=2)
        self.conv2 = separable(16, conv2_channels, stride=2 if early_stride else 1)
        self.conv3 = separable(conv2_channels, 32, stride=1 if early_stride else 2)
        self.conv4 = nn.Identity() if early_stride else separable(32, 32)
        self.conv5 = separable(32, 64, stride=2)
        self.conv6 = separable(64, 64)
        self.conv7 = separable(64, 64)
        self.conv8 = BasicRFB(64, 64) if rfb else separable(64, 64)
        self.conv9 = separable(64, 128, stride=2)
        self.conv10 = separable(128, 128)
        self.conv11 = separable(128, 128)
        self.conv12 = separable(128, 256, stride=2)
        self.conv13 = separable(256, 256)
        self.conv14 = nn.Sequential(
            nn.Conv2d(256, 64, 1),
            nn.ReLU(inplace=True),
            depthwise_head(64, 256, stride=2),
            nn.ReLU(inplace=True),
        )
        anchors = config.priors.priors_per_cell
        channels = (64, 128, 256)

        def heads(values):
            layers = [depthwise_head(c, a * values) for c, a in zip(channels, anchors)]
            layers.append(nn.Conv2d(256, anchors[3] * values, 3, padding=1))
            return nn.Sequential(*layers)

        self.loc, self.conf, self.landm = heads(4), heads(2), heads(10)

    def head_outputs(self, x):
        x = self.conv1(x)
        for block in (self.conv2, self.conv3, self.conv4, self.conv5, self.conv6, self.conv7):
            x = block(x)
        f8 = self.conv8(x)
        f16 = self.conv11(self.conv10(self.conv9(f8)))
        f32 = self.conv13(self.conv12(f16))
        f64 = self.conv14(f32)
        feats = (f8, f16, f32, f64)
        return ([h(f) for h, f in zip(self.loc, feats)],
                [h(f) for h, f in zip(self.conf, feats)],
                [h(f) for h, f in zip(self.landm, feats)])


_SLIM_PRIORS = PriorConfig(min_sizes=((10, 16, 24), (32, 48), (64, 96), (128, 192, 256)), steps=(8, 16, 32, 64))
_SLIM_TRAIN = TrainConfig(optimizer="sgd", lr=1e-2, momentum=0.9, weight_decay=5e-4, batch_size=32,
                          epochs=250, input_size=320, cls_loss="ohem", loc_weight=2.0, bf16=True)


@register_model(ModelConfig(
    name="slim",
    description="Face-Detector-1MB slim: depthwise-separable backbone, strides 8/16/32/64",
    priors=_SLIM_PRIORS, weights_file="slim.pth", train=_SLIM_TRAIN,
))
def slim(config: ModelConfig) -> nn.Module:
    return Slim(config, rfb=False)


@register_model(ModelConfig(
    name="slimlite",
    description="slim-lite: slim with conv2 narrowed to 16 channels (shrunk from slim, distilled)",
    priors=_SLIM_PRIORS, weights_file="slimlite.pth", train=_SLIM_TRAIN,
))
def slimlite(config: ModelConfig) -> nn.Module:
    return Slim(config, conv2_channels=16)


@register_model(ModelConfig(
    name="rfb",
    description="Face-Detector-1MB RFB: slim with a receptive-field block at stride 8",
    priors=_SLIM_PRIORS, weights_file="rfb.pth", train=_SLIM_TRAIN,
))
def rfb(config: ModelConfig) -> nn.Module:
    return Slim(config, rfb=True)
