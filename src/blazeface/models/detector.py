"""What every detector shares: flattening per-level head outputs into (loc, conf, landm)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def flatten_levels(maps: list[torch.Tensor], values_per_prior: int) -> torch.Tensor:
    """NCHW head outputs of several levels -> (N, priors, values), level by level, cell by cell
    (row-major), prior by prior: the order the prior generator uses."""
    return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, values_per_prior) for m in maps], dim=1)


# (l0, l1) -> (l0 - l1, l1 - l0): softmax over two classes is the sigmoid of these differences.
_DIFFERENCES = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])


def two_class_softmax(logits: torch.Tensor) -> torch.Tensor:
    """``softmax(logits, -1)`` over a last axis of 2, as ``sigmoid(logits @ [[1, -1], [-1, 1]])``.

    The same probabilities (within 2e-7), but exported graphs run it as a tiny MatMul and a Sigmoid:
    ONNX Runtime's Softmax over 16,800 rows of two values took 0.6-0.8 ms at 640x480 on one thread,
    these two ops 0.17 ms (profiled), about 3 % of slim's whole network time.
    """
    return torch.sigmoid(logits @ _DIFFERENCES.to(logits))


class FaceDetectorNet(nn.Module):
    """Base class: subclasses implement ``head_outputs(x) -> (loc_maps, conf_maps, landm_maps)``.

    ``forward`` returns ``(loc (N,P,4), conf (N,P,2), landm (N,P,10))``; ``conf`` holds logits in
    training mode and softmax probabilities in eval mode (as the originals, so exported graphs
    carry the softmax).
    """

    config = None  # set by create_model
    # The submodules whose outputs the heads read, level by level (strides of the prior layout, finest first):
    # what feature distillation (training/feature_distillation.py) taps with forward hooks.
    head_inputs: tuple[str, ...] = ()
    # The attribute holding the class head of each level (its last convolution writes the two logits of
    # every prior size of a cell: background, face).
    class_heads: str = "conf"

    def face_logit_biases(self) -> list[torch.Tensor]:
        """Per level, the bias of the face logit of each prior size (views into the class heads' last
        convolutions, ``(sizes,)`` each, in the prior layout's order)."""
        biases = []
        for head in getattr(self, self.class_heads):
            last = [m for m in head.modules() if isinstance(m, nn.Conv2d)][-1]
            biases.append(last.bias.data[1::2])
        return biases

    @torch.no_grad()
    def shift_face_logits(self, offsets: Sequence[Sequence[float]]) -> None:
        """Add ``offsets[level][size]`` to the face logit of every prior of that level and size: its score
        ``p`` becomes ``sigmoid(logit(p) + offset)``, a change of the odds by ``exp(offset)``. Scores are
        then ranked differently across prior sizes, never within one (tools/calibrate_scores.py fits them)."""
        biases = self.face_logit_biases()
        if len(offsets) != len(biases) or any(len(o) != len(b) for o, b in zip(offsets, biases)):
            raise ValueError(f"offsets need {[len(b) for b in biases]} values per level, got "
                             f"{[len(o) for o in offsets]}")
        for bias, level in zip(biases, offsets):
            bias += torch.as_tensor(level, dtype=bias.dtype)

    def head_outputs(self, x: torch.Tensor):
        raise NotImplementedError

    def forward(self, x: torch.Tensor):
        loc_maps, conf_maps, landm_maps = self.head_outputs(x)
        loc = flatten_levels(loc_maps, 4)
        conf = flatten_levels(conf_maps, 2)
        landm = flatten_levels(landm_maps, 10)
        if not self.training:
            conf = two_class_softmax(conf)
        return loc, conf, landm
