"""Is a change of dev AP more than the dev split's luck? A paired bootstrap over its images.

    python benchmarks/compare_ap.py --base shipped=DIR --new run=DIR2 [--rounds 400] [--markdown] [--write-json FILE]   # ~1 min

Each DIR is a predictions folder of ``blazeface evaluate widerface ... --save-predictions DIR`` over the same
images. Every round draws the listed images (the 263 of the dev split) with replacement (the same draw for both
folders, so the two models are compared on the same photos) and evaluates both with the protocol's own code
(:func:`blazeface.evaluation.widerface.evaluate_matches`, each image matched to its faces once); the spread of
``new - base`` over the rounds is how much of an observed difference the choice of photos alone could make. Printed per setting: the observed
difference, the 2.5-97.5 % interval of the rounds' differences and the share of rounds in which ``new`` is
worse. Needs ../shared/data (the dev split's ground truth).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from blazeface.cli.validate import int_at_least
from blazeface.evaluation import widerface as wf
from blazeface.io import atomic_target

REPO = Path(__file__).resolve().parents[1]
WIDER = REPO.parent / "shared" / "data" / "widerface"


def named_folder(text: str) -> tuple[str, Path]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=DIR")
    return name, Path(folder)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=named_folder, required=True, help="NAME=DIR: the predictions compared against")
    p.add_argument("--new", type=named_folder, required=True, help="NAME=DIR: the candidate's predictions")
    p.add_argument("--gt", type=Path, default=WIDER / "ground_truth")
    p.add_argument("--list", type=Path, default=WIDER / "val" / "wider_val.txt")
    p.add_argument("--rounds", type=int_at_least(1), default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--markdown", action="store_true", help="a markdown table (default: JSON)")
    p.add_argument("--write-json", type=Path, metavar="FILE",
                   help="also write the JSON report here (with --markdown: one bootstrap for both)")
    args = p.parse_args()

    gt = wf.load_ground_truth(args.gt)
    keys = wf.read_image_list(args.list, gt)
    # Matching does not depend on the draw: match once, then count each round's images (an image drawn twice
    # counts as two images, as in the protocol every image counts once).
    matched = [wf.match_images(wf.read_predictions(folder, keys)[0], gt) for _, folder in (args.base, args.new)]
    observed = [wf.evaluate_matches(m) for m in matched]
    rng = np.random.default_rng(args.seed)
    diffs = {s: [] for s in wf.SETTINGS}
    for _ in range(args.rounds):
        draw = rng.integers(0, len(keys), len(keys))
        base, new = (wf.evaluate_matches([m[n] for n in draw]) for m in matched)
        for s in wf.SETTINGS:
            diffs[s].append(new.ap(s) - base.ap(s))
    report = {}
    for s in wf.SETTINGS:
        d = np.array(diffs[s])
        report[s] = {"base": observed[0].ap(s), "new": observed[1].ap(s),
                     "difference": observed[1].ap(s) - observed[0].ap(s),
                     "interval": [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))],
                     "worse_share": float((d < 0).mean())}
    if args.write_json is not None:
        with atomic_target(args.write_json) as tmp:
            tmp.write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        (base_name, _), (new_name, _) = args.base, args.new
        print(f"{new_name} against {base_name}: {args.rounds} paired bootstrap rounds over {len(keys)} images\n")
        print(f"| setting | {base_name} | {new_name} | difference | 95 % of rounds | rounds worse |")
        print("|---|---:|---:|---:|---|---:|")
        for s, r in report.items():
            lo, hi = r["interval"]
            print(f"| {s} | {r['base']:.3f} | {r['new']:.3f} | {r['difference']:+.3f} | {lo:+.3f} .. {hi:+.3f} "
                  f"| {r['worse_share']:.0%} |")
    else:
        print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
