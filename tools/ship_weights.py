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

from blazeface.checkpoint import with_metadata
from blazeface.models import create_model, get_config, shipped_weights
from blazeface.training.checkpointing import save_atomic


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", type=Path, help="a run's weights.pth (or last.pth: its EMA weights)")
    p.add_argument("--model", required=True)
    args = p.parse_args()
    # Loaded strictly (one line for a file of another model) and read once: the tensors as the model holds them.
    model = create_model(args.model, weights=args.weights)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    target = shipped_weights(args.model)
    save_atomic(with_metadata(state, get_config(args.model)), target)
    print(f"{args.weights} -> {target}")
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
