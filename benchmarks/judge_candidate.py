"""Judge a trained candidate against the shipped weights of its model, by the project's ship rule, in one command.

    python benchmarks/judge_candidate.py RUN/weights.pth --model mnet --out JUDGE   # ~15 min on one thread
    python benchmarks/judge_candidate.py CAND.pth --model blaze --no-calibrate --base PRED_SHIPPED --out JUDGE

The steps every candidate of docs/MODELS.md went through, each the project's own command, each output kept in
``--out`` (a killed judge started again with ``--resume`` reuses the finished steps):

1. ``tools/calibrate_scores.py --photos 800``: one face-logit offset per prior size, fitted on training photos
   (``calibrated.pth``; ``--photos all`` fits on all of them; skipped with ``--no-calibrate``, for weights that
   already are);
2. ``blazeface evaluate widerface`` on the dev split at long side 640 with ``--save-predictions``
   (``ap640.json``, ``predictions/``) and at 320 (``ap320.json``);
3. the same at 640 for the shipped weights of ``--model`` (``base_predictions/``), unless ``--base`` names a
   predictions folder already made (the shipped model's, kept from an earlier judge);
4. ``blazeface evaluate landmarks`` on MTFL's dev photos (``nme.json``);
5. ``benchmarks/compare_ap.py``: the paired bootstrap over the dev images (``compare.md``, ``compare.json``);
6. ``benchmarks/recall_by_size.py --false-positives 1000``: where the hard faces are won or lost (``recall.md``);
7. the verdict (``verdict.md``, also printed with the tables): the candidate *wins* when it is better on some
   subset in at least 95 % of the rounds and worse on none in 95 % (a difference within the split's luck on the
   others is allowed), *loses* when it is worse on some subset in 95 % of the rounds, and otherwise *ties*; a
   candidate whose landmark NME is over its model's bar (``--max-nme``; blaze: 0.075, issue 17's) does not win.

The rule and its reasons are in docs/MODELS.md ("a ship rule that knows the split's luck"). Needs ../shared/data.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from blazeface.cli.validate import int_at_least
from blazeface.errors import BlazefaceError
from blazeface.io import FOLDER_LOCK_NAME, atomic_target, exclusive_folder

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
WIDER = DATA / "widerface"
SURE = 0.95  # a difference counts when the paired bootstrap shows it in this share of rounds
# The landmark bars a candidate must keep (issue 17 sets one for blaze, the model `align` defaults to).
MAX_NME = {"blaze": 0.075}


def ship_verdict(compare: dict, nme: float | None = None, max_nme: float | None = None) -> tuple[str, str]:
    """(``wins`` | ``ties`` | ``loses``, the reason) from compare_ap.py's JSON report: per subset the observed
    ``difference`` and the share of bootstrap rounds in which the candidate is ``worse_share``."""
    better = [s for s, r in compare.items() if r["difference"] > 0 and r["worse_share"] <= 1 - SURE]
    worse = [s for s, r in compare.items() if r["worse_share"] >= SURE]
    if worse:
        return "loses", f"worse on {', '.join(worse)} in at least {SURE:.0%} of the rounds"
    if not better:
        return "ties", f"better on no subset in {SURE:.0%} of the rounds"
    if max_nme is not None and nme is not None and nme > max_nme:
        return "ties", f"better on {', '.join(better)}, but its landmark NME {nme:.4f} is over the bar {max_nme}"
    return "wins", f"better on {', '.join(better)} in at least {SURE:.0%} of the rounds, worse on none"


def photo_count(text: str) -> int | str:
    return "all" if text == "all" else int_at_least(20)(text)


def blazeface(*args: str) -> list[str]:
    """argv of a ``blazeface`` command in this interpreter."""
    return [sys.executable, "-m", "blazeface", *args]


def script(path: str, *args: str) -> list[str]:
    """argv of one of the project's scripts (``tools/...``, ``benchmarks/...``)."""
    return [sys.executable, str(REPO / path), *args]


class Judge:
    """Runs the steps into ``out``; a step whose output exists is reused only with ``resume``."""

    def __init__(self, out: Path, resume: bool, threads: int):
        self.out, self.resume, self.threads = out, resume, threads

    def done(self, name: str) -> bool:
        return self.resume and (self.out / name).exists()

    def run(self, argv: list[str], what: str) -> str:
        print(f"judge: {what}", file=sys.stderr, flush=True)
        done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise BlazefaceError(f"{what} failed (exit status {done.returncode}): {last}")
        return done.stdout

    def write(self, name: str, text: str) -> None:
        with atomic_target(self.out / name) as tmp:
            tmp.write_text(text)

    def evaluate(self, model: str, weights: Path | None, long_side: int, json_name: str,
                 predictions: str | None, image_list: Path) -> dict:
        """Dev AP at ``long_side``; the predictions folder (when named) appears whole or not at all."""
        if self.done(json_name) and (predictions is None or (self.out / predictions).is_dir()):
            return json.loads((self.out / json_name).read_text())
        argv = blazeface("evaluate", "widerface", "--model", model, "--images", str(WIDER / "val" / "images"),
                              "--list", str(image_list), "--gt", str(WIDER / "ground_truth"),
                              "--long-side", str(long_side), "--conf", "0.01", "--nms", "0.4", "--json",
                              "--threads", str(self.threads))
        if weights is not None:
            argv += ["--weights", str(weights)]
        partial = None
        if predictions is not None:
            partial = self.out / f".{predictions}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            argv += ["--save-predictions", str(partial)]
        shown = weights.name if weights is not None else f"the shipped {model}"
        text = self.run(argv, f"dev AP of {shown} at long side {long_side}")
        if partial is not None:
            shutil.rmtree(self.out / predictions, ignore_errors=True)
            partial.rename(self.out / predictions)
        self.write(json_name, text)
        return json.loads(text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", type=Path, help="the candidate: a run's weights.pth (or any weights file of --model)")
    p.add_argument("--model", required=True)
    p.add_argument("--out", type=Path, required=True, help="a new folder for every step's output")
    p.add_argument("--name", default="candidate", help="the candidate's name in the tables")
    p.add_argument("--base", type=Path, metavar="PRED",
                   help="the shipped model's dev predictions at 640 (evaluate widerface --save-predictions); "
                        "default: evaluate the shipped weights of --model into OUT/base_predictions")
    p.add_argument("--no-calibrate", action="store_true", help="judge the weights as they are")
    p.add_argument("--photos", type=photo_count, default=800,
                   help="calibration photos: a seeded sample of this many, or 'all' (about 3x as long; default 800)")
    p.add_argument("--list", type=Path, default=WIDER / "val" / "wider_val.txt",
                   help="the dev images to judge on (default: the whole dev split)")
    p.add_argument("--landmarks", type=Path, default=DATA / "mtfl" / "dev", help="MTFL folder for the NME")
    p.add_argument("--max-nme", type=float, default=None,
                   help=f"landmark bar the candidate must keep to win (default: {MAX_NME} by model, else none)")
    p.add_argument("--rounds", type=int_at_least(1), default=400, help="bootstrap rounds (default 400)")
    p.add_argument("--threads", type=int_at_least(1), default=1)
    p.add_argument("--resume", action="store_true", help="reuse the finished steps' outputs in --out")
    args = p.parse_args()
    if not WIDER.is_dir():
        raise BlazefaceError(f"{WIDER}: not found; judging needs the WIDER FACE dev split")
    if args.out.exists() and any(p.name != FOLDER_LOCK_NAME for p in args.out.iterdir()) and not args.resume:
        raise BlazefaceError(f"{args.out}: not empty; choose a new folder, or pass --resume to reuse its finished steps")
    for path in (args.weights, args.base, args.list, args.landmarks):
        if path is not None and not path.exists():
            raise BlazefaceError(f"{path}: not found")
    with exclusive_folder(args.out):  # a second judge into the same folder fails here instead of racing
        return run_steps(args)


def run_steps(args: argparse.Namespace) -> int:
    judge = Judge(args.out, args.resume, args.threads)

    candidate = args.weights
    if not args.no_calibrate:
        candidate = args.out / "calibrated.pth"
        if not judge.done(candidate.name):
            sample = [] if args.photos == "all" else ["--photos", str(args.photos)]
            log = judge.run(script("tools/calibrate_scores.py", str(args.weights), "--model", args.model,
                                         *sample, "--write", str(candidate)),
                            f"calibrating {args.weights} on {args.photos} training photos")
            judge.write("calibration.log", log)
    ap = {side: judge.evaluate(args.model, candidate, side, f"ap{side}.json",
                               "predictions" if side == 640 else None, args.list) for side in (640, 320)}
    base = args.base
    if base is None:
        judge.evaluate(args.model, None, 640, "base_ap640.json", "base_predictions", args.list)
        base = args.out / "base_predictions"
    if judge.done("nme.json"):
        nme = json.loads((args.out / "nme.json").read_text())
    else:
        text = judge.run(blazeface("evaluate", "landmarks", "--model", args.model, "--weights", str(candidate),
                                         "--data", str(args.landmarks), "--json", "--threads", str(args.threads)),
                         f"landmark NME on {args.landmarks}")
        judge.write("nme.json", text)
        nme = json.loads(text)
    if not (judge.done("compare.json") and judge.done("compare.md")):
        table = judge.run(script("benchmarks/compare_ap.py", "--base", f"shipped={base}",
                                       "--new", f"{args.name}={args.out / 'predictions'}", "--list", str(args.list),
                                       "--rounds", str(args.rounds), "--markdown",
                                       "--write-json", str(args.out / "compare.json")),
                          f"paired bootstrap over {args.rounds} rounds")
        judge.write("compare.md", table)
    compare = json.loads((args.out / "compare.json").read_text())
    if not judge.done("recall.md"):
        table = judge.run(script("benchmarks/recall_by_size.py", "--false-positives", "1000",
                                       "--list", str(args.list), "--predictions", f"shipped={base}",
                                       "--predictions", f"{args.name}={args.out / 'predictions'}", "--markdown"),
                          "recall of the hard faces by size at 1,000 false positives")
        judge.write("recall.md", table)

    max_nme = args.max_nme if args.max_nme is not None else MAX_NME.get(args.model)
    verdict, reason = ship_verdict(compare, nme["nme"], max_nme)
    aps = {side: " / ".join(f"{a[s]:.3f}" for s in ("easy", "medium", "hard")) for side, a in ap.items()}
    summary = (f"{args.name} ({args.model}{', calibrated' if not args.no_calibrate else ''}): "
               f"dev AP @640 {aps[640]}, @320 {aps[320]}; MTFL NME {nme['nme']:.4f} "
               f"({nme['detected']:.1%} of faces detected)\n\n"
               f"verdict: **{verdict}** ({reason})\n")
    judge.write("verdict.md", summary)
    print(summary)
    print((args.out / "compare.md").read_text())
    print((args.out / "recall.md").read_text())
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
