#!/usr/bin/env python
"""Pack a run's resumable state for the repository: RUN/last.pth -> checkpoints/<model>_run_last.pth.xz.

    python tools/pack_checkpoint.py /work/runs/s48/slim_mosf48/last.pth checkpoints/slim_run_last.pth.xz
    blazeface train --resume checkpoints/slim_run_last.pth.xz --out RUN     # continues it, bit for bit

A state with feature adapters (5.4-5.8 MB) is over the repository's 5 MB file limit; xz brings it to 4-4.6 MB.
The packed file holds the same bytes, so a run resumed from it is the run resumed from the original.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from blazeface.training.checkpointing import pack_checkpoint


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="a run's last.pth")
    p.add_argument("target", type=Path, help="the packed file, written atomically (e.g. checkpoints/M_run_last.pth.xz)")
    args = p.parse_args()
    before, after = pack_checkpoint(args.checkpoint, args.target)
    print(f"{args.checkpoint} ({before / 1e6:.2f} MB) -> {args.target} ({after / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
