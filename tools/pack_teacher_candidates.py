"""Pack a run's cached teacher candidates small enough to carry to a GPU machine, and unpack them there.

``blazeface train --cache-teacher`` keeps every training photo's YuNet candidates in ``teacher_candidates.npz``
(float32, ~100 MB for the usual mix at 1x and 2x). A device machine of this workplace takes at most 64 MiB of
working tree per call, and computing the candidates there once took longer than the whole call (session 44:
the machine's cache step ran in one process, not 16, and did not finish in 9 minutes): so they are computed
here, against the same paths the machine will see, and carried packed:

    python tools/pack_teacher_candidates.py pack RUN/teacher_candidates.npz .gpudata/cand/candidates.npz
    python tools/pack_teacher_candidates.py unpack candidates.npz --shared-dir DIR   # on the machine

``pack`` stores scores as 16-bit fractions, box corners in 1/32 px and landmarks in 1/32 px from their box's
centre, all compressed (~46 MiB): boxes come back within 1/64 px, landmarks within 1/32, scores within 1e-5.
``unpack`` writes the float32 file under the name ``train --teacher-cache DIR`` looks for with the same key, so a run
of the same photos and teacher reads it instead of running the teacher.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from blazeface.errors import BlazefaceError
from blazeface.training.teacher_cache import PhotoCandidates, save_photo_candidates, shared_cache_path

FORMAT = "blazeface-packed-candidates-1"
PIXEL_STEPS = 32  # fixed-point steps per pixel


def _fixed(values: np.ndarray) -> np.ndarray:
    return np.round(values.astype(np.float64) * PIXEL_STEPS).astype(np.int32)


def pack(source: Path, target: Path) -> None:
    with np.load(source, allow_pickle=False) as saved:
        scores, boxes, points = saved["scores"], saved["boxes"], saved["points"]
        offsets, key = saved["offsets"], saved["key"]
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as fh:
        np.savez_compressed(fh, format=np.array(FORMAT), key=key, offsets=offsets,
                            scores=np.round(scores.astype(np.float64) * 65535).astype(np.uint16),
                            boxes=_fixed(boxes), points=_fixed(points - centres[:, None, :]))


def unpack(source: Path) -> tuple[PhotoCandidates, str]:
    with np.load(source, allow_pickle=False) as saved:
        if "format" not in saved.files or str(saved["format"]) != FORMAT:
            raise BlazefaceError(f"{source}: not a file written by `pack_teacher_candidates.py pack`")
        boxes = saved["boxes"].astype(np.float32) / PIXEL_STEPS
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        points = saved["points"].astype(np.float32) / PIXEL_STEPS + centres[:, None, :]
        scores = saved["scores"].astype(np.float32) / 65535
        return PhotoCandidates(scores, boxes, points, saved["offsets"]), str(saved["key"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="a run's teacher_candidates.npz -> a packed copy")
    p.add_argument("source", type=Path)
    p.add_argument("target", type=Path)
    u = sub.add_parser("unpack", help="a packed copy -> the shared cache file `train --teacher-cache DIR` reads")
    u.add_argument("source", type=Path)
    u.add_argument("--shared-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "pack":
        if args.target.exists():
            raise BlazefaceError(f"{args.target}: exists; not written over")
        pack(args.source, args.target)
        print(f"{args.target}: {args.target.stat().st_size / 2**20:.1f} MiB", file=sys.stderr)
    else:
        candidates, key = unpack(args.source)
        target = shared_cache_path(args.shared_dir, key)
        save_photo_candidates(candidates, key, target)
        print(f"{target}: candidates of {len(candidates)} photos", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
