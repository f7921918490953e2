"""RetinaFace with a MobileNetV1-0.25 body (Face-Detector-1MB / Pytorch_Retinaface layout):
FPN over strides 8/16/32, an SSH context module per level, 1x1 heads."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig, PriorConfig, TrainConfig
from .blocks import conv_bn, conv_bn_relu, separable
from .detector import FaceDetectorNet
from .registry import register_model


class MobileNetV1(nn.Module):
    """MobileNetV1 at width 0.25, cut into the three stages the FPN reads (64/128/256 channels)."""

    def __init__(self):
        super().__init__()
        self.stage1 = nn.Sequential(
            conv_bn_relu(3, 8, 3, stride=2),
            separable(8, 16), separable(16, 32, stride=2), separable(32, 32),
            separable(32, 64, stride=2), separable(64, 64),
        )
        self.stage2 = nn.Sequential(separable(64, 128, stride=2), *[separable(128, 128) for _ in range(5)])
        self.stage3 = nn.Sequential(separable(128, 256, stride=2), separable(256, 256))

    def forward(self, x):
        c8 = self.stage1(x)
        c16 = self.stage2(c8)
        c32 = self.stage3(c16)
        return c8, c16, c32


class FPN(nn.Module):
    def __init__(self, in_channels: tuple[int, ...], out_ch: int):
        super().__init__()
        self.output1 = conv_bn_relu(in_channels[0], out_ch, 1)
        self.output2 = conv_bn_relu(in_channels[1], out_ch, 1)
        self.output3 = conv_bn_relu(in_channels[2], out_ch, 1)
        self.merge1 = conv_bn_relu(out_ch, out_ch, 3)
        self.merge2 = conv_bn_relu(out_ch, out_ch, 3)

    def forward(self, feats):
        p8, p16, p32 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        p16 = self.merge2(p16 + F.interpolate(p32, size=p16.shape[-2:], mode="nearest"))
        p8 = self.merge1(p8 + F.interpolate(p16, size=p8.shape[-2:], mode="nearest"))
        return p8, p16, p32


class SSH(nn.Module):
    """Single-stage context module: 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) branches, concatenated."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv3X3 = conv_bn(in_ch, out_ch // 2)
        self.conv5X5_1 = conv_bn_relu(in_ch, out_ch // 4)
        self.conv5X5_2 = conv_bn(out_ch // 4, out_ch // 4)
        self.conv7X7_2 = conv_bn_relu(out_ch // 4, out_ch // 4)
        self.conv7x7_3 = conv_bn(out_ch // 4, out_ch // 4)

    def forward(self, x):
        b5 = self.conv5X5_1(x)
        b7 = self.conv7X7_2(b5)
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(b5), self.conv7x7_3(b7)], dim=1))


class Head1x1(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1x1 = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x):
        return self.conv1x1(x)


class RetinaFace(FaceDetectorNet):
    head_inputs = ("ssh1", "ssh2", "ssh3")
    class_heads = "ClassHead"  # the original checkpoints' names

    def __init__(self, config: ModelConfig, width: int = 64):
        super().__init__()
        self.body = MobileNetV1()
        self.fpn = FPN((64, 128, 256), width)
        self.ssh1, self.ssh2, self.ssh3 = SSH(width, width), SSH(width, width), SSH(width, width)
        anchors = config.priors.priors_per_cell
        self.ClassHead = nn.ModuleList([Head1x1(width, a * 2) for a in anchors])
        self.BboxHead = nn.ModuleList([Head1x1(width, a * 4) for a in anchors])
        self.LandmarkHead = nn.ModuleList([Head1x1(width, a * 10) for a in anchors])

    def head_outputs(self, x):
        p8, p16, p32 = self.fpn(self.body(x))
        feats = (self.ssh1(p8), self.ssh2(p16), self.ssh3(p32))
        return ([h(f) for h, f in zip(self.BboxHead, feats)],
                [h(f) for h, f in zip(self.ClassHead, feats)],
                [h(f) for h, f in zip(self.LandmarkHead, feats)])


@register_model(ModelConfig(
    name="mnet",
    description="RetinaFace-MobileNet-0.25: FPN + SSH over strides 8/16/32 (Face-Detector-1MB variant, ReLU)",
    priors=PriorConfig(min_sizes=((10, 20), (32, 64), (128, 256)), steps=(8, 16, 32)),
    weights_file="mnet.pth",
    channels_last=False,
    train=TrainConfig(optimizer="sgd", lr=1e-2, momentum=0.9, weight_decay=5e-4, batch_size=32,
                      epochs=250, input_size=320, cls_loss="ohem", loc_weight=2.0, bf16=True),
))
def mnet(config: ModelConfig) -> nn.Module:
    return RetinaFace(config)
