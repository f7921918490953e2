"""What every detector shares: flattening per-level head outputs into (loc, conf, landm)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def flatten_levels(maps: list[torch.Tensor], values_per_prior: int) -> torch.Tensor:
    """NCHW head outputs of several levels -> (N, priors, values), level by level, cell by cell
    (row-major), prior by prior: the order the prior generator uses."""
    return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, values_per_prior) for m in maps], dim=1)


class FaceDetectorNet(nn.Module):
    """Base class: subclasses implement ``head_outputs(x) -> (loc_maps, conf_maps, landm_maps)``.

    ``forward`` returns ``(loc (N,P,4), conf (N,P,2), landm (N,P,10))``; ``conf`` holds logits in
    training mode and softmax probabilities in eval mode (as the originals, so exported graphs
    carry the softmax).
    """

    config = None  # set by create_model

    def head_outputs(self, x: torch.Tensor):
        raise NotImplementedError

    def forward(self, x: torch.Tensor):
        loc_maps, conf_maps, landm_maps = self.head_outputs(x)
        loc = flatten_levels(loc_maps, 4)
        conf = flatten_levels(conf_maps, 2)
        landm = flatten_levels(landm_maps, 10)
        if not self.training:
            conf = F.softmax(conf, dim=-1)
        return loc, conf, landm
