"""Measure a trained model the way docs/MODELS.md reports it, with the public commands only.

Runs, one after the other (one thread each, so a training run beside it is disturbed as little as possible):

* ``blazeface evaluate widerface`` on the 263-image dev split at long side 640 and 320 (conf 0.01, NMS 0.4);
* ``blazeface evaluate landmarks`` on MTFL dev (original photo size, the contract's default);
* ``blazeface detect`` on the bundled sample photo (faces at the display threshold 0.5);

and prints one JSON object, plus the model card's table row with ``--markdown``.

    python benchmarks/model_card.py --model blaze                         # the shipped weights
    python benchmarks/model_card.py --model blaze --weights /work/runs/blaze/weights.pth --markdown
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SAMPLE = REPO / "src" / "blazeface" / "assets" / "sample.jpg"


def blazeface(*args: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "blazeface", *args], capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"blazeface {' '.join(args)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="blaze")
    parser.add_argument("--weights", help="checkpoint to measure (default: the shipped weights)")
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    parser.add_argument("--markdown", action="store_true", help="also print the model card's table cells")
    args = parser.parse_args()

    model = ["--model", args.model] + (["--weights", args.weights] if args.weights else [])
    wider = args.data / "widerface"
    card = {"model": args.model, "weights": args.weights or "shipped"}
    for long_side in (640, 320):
        out = blazeface("evaluate", "widerface", *model, "--images", str(wider / "val" / "images"),
                        "--list", str(wider / "val" / "wider_val.txt"), "--gt", str(wider / "ground_truth"),
                        "--long-side", str(long_side), "--conf", "0.01", "--nms", "0.4", "--json", "--threads", "1")
        card[f"ap{long_side}"] = json.loads(out)
    card["landmarks"] = json.loads(blazeface("evaluate", "landmarks", *model, "--data", str(args.data / "mtfl" / "dev"),
                                             "--json", "--threads", "1"))
    detections = json.loads(blazeface("detect", *model, "--json", "-", str(SAMPLE)).splitlines()[0])
    card["sample_faces"] = len(detections["faces"])
    print(json.dumps(card))
    if args.markdown:
        def ap(r):
            return " / ".join(f"{r[k]:.3f}" for k in ("easy", "medium", "hard"))
        lm = card["landmarks"]
        print(f"| {ap(card['ap640'])} | {ap(card['ap320'])} | {lm['nme']:.3f} ({100 * lm['detected']:.1f} %) "
              f"| {card['sample_faces']} |")


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
