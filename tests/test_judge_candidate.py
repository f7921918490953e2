"""benchmarks/judge_candidate.py: the ship rule on hand-made bootstrap reports, and the whole judge end to end on a
few dev images (the shipped blaze judged against itself ties, exactly)."""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from blazeface.io import exclusive_folder
from conftest import DATA, REPO, requires_shared

SCRIPT = REPO / "benchmarks" / "judge_candidate.py"
spec = importlib.util.spec_from_file_location("judge_candidate", SCRIPT)
judge_candidate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(judge_candidate)


def report(*rows):
    """(difference, worse_share) for easy, medium, hard -> compare_ap.py's JSON report."""
    return {s: {"difference": d, "worse_share": w} for s, (d, w) in zip(("easy", "medium", "hard"), rows)}


@pytest.mark.parametrize("rows, nme, max_nme, verdict", [
    # better on medium in every round, the rest within luck: wins (session 34's mnet)
    (((0.010, 0.01), (0.016, 0.0), (-0.000, 0.50)), 0.0755, None, "wins"),
    # better on one subset, but worse on another in 96 % of the rounds: loses (session 33's blaze_long33)
    (((-0.004, 0.96), (0.003, 0.02), (0.001, 0.30)), 0.072, 0.075, "loses"),
    # nothing sure either way: ties (session 34's slim_cf)
    (((0.002, 0.24), (0.001, 0.41), (-0.003, 0.79)), 0.079, None, "ties"),
    # a 5 % share still counts as sure; a positive difference is needed for "better"
    (((0.001, 0.05), (0.0, 0.0), (0.0, 0.5)), None, None, "wins"),
    (((0.0, 0.0), (0.0, 0.0), (0.0, 0.0)), None, None, "ties"),
    # better on AP, but the landmarks went over the model's bar: does not win
    (((0.004, 0.01), (0.0, 0.4), (0.0, 0.5)), 0.0752, 0.075, "ties"),
])
def test_ship_verdict(rows, nme, max_nme, verdict):
    got, reason = judge_candidate.ship_verdict(report(*rows), nme, max_nme)
    assert got == verdict, reason


@requires_shared
def test_judge_the_shipped_blaze_against_itself(tmp_path):
    """Every step runs on 6 dev images and 4 MTFL photos; the candidate is the shipped blaze, so its predictions
    equal the base's (evaluated by the judge itself), every bootstrap difference is 0 and the verdict is a tie.
    A second judge into the same folder is refused (it would replace outputs) unless told to --resume, which
    reuses every step, and is refused while another judge holds the folder."""
    val_list = DATA / "widerface" / "val" / "wider_val.txt"
    listing = tmp_path / "list.txt"
    listing.write_text("".join(val_list.read_text().splitlines(keepends=True)[:6]))
    mtfl = tmp_path / "mtfl"
    (mtfl / "images").mkdir(parents=True)
    lines = (DATA / "mtfl" / "dev" / "labels.txt").read_text().splitlines(keepends=True)
    header, rows = [li for li in lines if li.startswith("#")], [li for li in lines if not li.startswith("#")][:4]
    for row in rows:
        name = row.split()[0]
        (mtfl / "images" / name).symlink_to(DATA / "mtfl" / "dev" / "images" / name)
    (mtfl / "labels.txt").write_text("".join(header + rows))
    weights = REPO / "src" / "blazeface" / "weights" / "blaze.pth"
    out = tmp_path / "judge"

    def judge(*extra):
        return subprocess.run([sys.executable, str(SCRIPT), str(weights), "--model", "blaze", "--no-calibrate",
                               "--name", "same", "--list", str(listing), "--landmarks", str(mtfl),
                               "--rounds", "20", "--out", str(out), *extra],
                              capture_output=True, text=True, timeout=600)

    done = judge()
    assert done.returncode == 0, done.stderr
    assert "verdict: **ties**" in done.stdout
    compare = json.loads((out / "compare.json").read_text())
    assert all(r["difference"] == 0 and r["worse_share"] == 0 for r in compare.values())
    for name in ("ap640.json", "ap320.json", "base_ap640.json", "nme.json", "compare.md", "recall.md", "verdict.md"):
        assert (out / name).is_file(), name
    assert json.loads((out / "ap640.json").read_text()) == json.loads((out / "base_ap640.json").read_text())
    assert sorted(p.name for p in (out / "predictions").rglob("*.txt")) == \
        sorted(p.name for p in (out / "base_predictions").rglob("*.txt"))
    assert not list(out.glob(".*partial*"))

    verdict = (out / "verdict.md").read_bytes()
    again = judge()
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert again.stderr.strip().endswith(f"{out}: not empty; choose a new folder, or pass --resume to reuse its "
                                         "finished steps")
    with exclusive_folder(out):  # another judge (here this process) still working in the folder
        raced = judge("--resume")
    assert raced.returncode == 2 and "Traceback" not in raced.stderr
    assert raced.stderr.strip().endswith(f"--out {out}: in use by another running process (pid {os.getpid()}); "
                                         "wait for it to end or choose another folder")
    resumed = judge("--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "judge:" not in resumed.stderr  # every step's output was reused
    assert (out / "verdict.md").read_bytes() == verdict


def test_photo_count():
    assert judge_candidate.photo_count("all") == "all" and judge_candidate.photo_count("800") == 800
    for bad in ("5", "al", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            judge_candidate.photo_count(bad)
