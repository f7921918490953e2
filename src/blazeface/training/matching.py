"""Prior matching lives in :mod:`blazeface.matching` (below both data/ and training/); re-exported here."""
from ..matching import PriorMatcher, box_iou, match, priors_to_corners

__all__ = ["PriorMatcher", "box_iou", "match", "priors_to_corners"]
