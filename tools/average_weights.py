#!/usr/bin/env python
"""Average the weights of several runs of one model (a "model soup"): every float tensor's mean.

    python tools/average_weights.py RUN_A/weights.pth RUN_B/weights.pth ... --model blaze --write soup.pth
    python tools/calibrate_scores.py soup.pth --model blaze --photos 800 --write soup_calibrated.pth

Meant for runs that left the same weights by a few hundred steps each with different seeds (docs/MODELS.md,
"Session 30"): such siblings stay in one basin, so their mean is a network of its own whose dev AP carries less of
one seed's luck than any sibling picked for its dev AP. Runs from different starts need not average into anything
useful. Integer tensors (BatchNorm's step counters) are taken from the first file. Each input must load into the
model (a wrong file fails here with one line); the output is written atomically, with the model's metadata, and
never over an input.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from blazeface.checkpoint import with_metadata
from blazeface.errors import BlazefaceError
from blazeface.io import same_file
from blazeface.models import create_model, get_config
from blazeface.training.checkpointing import save_atomic


def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of each floating-point tensor over ``states`` (same keys and shapes); other tensors from the first."""
    first = states[0]
    mean = {}
    for key, value in first.items():
        if value.is_floating_point():
            total = sum(state[key].double() for state in states)
            mean[key] = (total / len(states)).to(value.dtype).contiguous()
        else:
            mean[key] = value.clone()
    return mean


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", type=Path, nargs="+", help="two or more weights files of the same model")
    p.add_argument("--model", required=True)
    p.add_argument("--write", type=Path, required=True, help="the averaged weights (a state dict with metadata)")
    args = p.parse_args()
    if len(args.weights) < 2:
        raise BlazefaceError("give two or more weights files to average")
    if any(same_file(args.write, w) for w in args.weights):  # hard links and symlinks too
        raise BlazefaceError(f"{args.write}: would replace an input; choose another file")
    # Loaded strictly, one line for a file of another model, before anything is written.
    states = [create_model(args.model, weights=path).state_dict() for path in args.weights]
    save_atomic(with_metadata(average_state_dicts(states), get_config(args.model)), args.write)
    print(f"mean of {len(states)} files -> {args.write}")
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
