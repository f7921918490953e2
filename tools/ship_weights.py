#!/usr/bin/env python
"""Ship a run's weights: OUT/weights.pth (EMA state dict) -> src/blazeface/weights/<model's file>.

    python tools/ship_weights.py /work/runs/s18/rfb_ens/weights.pth --model rfb

The shipped file's metadata describes the model's registered configuration, not the run's overrides (its
learning rate, epochs, ...): those belong to the model card (docs/MODELS.md), and the package reads the
shipped file's configuration as the model's. The tensors are copied as they are, after a check that they
load into the model.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from blazeface.checkpoint import load_weights, read_state_dict, with_metadata
from blazeface.io import atomic_target
from blazeface.models import create_model, get_config, shipped_weights


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", type=Path, help="a run's weights.pth (or last.pth: its EMA weights)")
    p.add_argument("--model", required=True)
    args = p.parse_args()
    state = {k: v.detach().cpu().contiguous() for k, v in read_state_dict(args.weights).items()}
    load_weights(create_model(args.model, weights=None), args.weights)  # strict, one line: a wrong model fails here, not later
    target = shipped_weights(args.model)
    with atomic_target(target) as partial:
        torch.save(with_metadata(state, get_config(args.model)), partial)
    print(f"{args.weights} -> {target}")
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
