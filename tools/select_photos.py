#!/usr/bin/env python
"""A training folder of the photos of a WIDER training folder that hold a face with a given official label,
for oversampling them as a second ``--data`` source (e.g. profiles, which our students miss most):

    python tools/select_photos.py ../shared/data/widerface/train --where pose=atypical --out /work/data/wider_profiles
    blazeface train ... --data ../shared/data/widerface/train:3000 --data /work/data/wider_profiles:1000 ...

The photos are chosen by the official ``wider_face_*_bbx_gt.txt`` beside the folder's label file (blur,
expression, illumination, occlusion and pose per face; faces flagged invalid never count), and OUT gets the
folder's own label file (``label_landmarks.txt`` or ``label.txt``) cut to those photos, with the same faces and
landmarks, plus an ``images`` link to the folder's images: nothing is copied, and OUT must not exist yet.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from blazeface.data.labels import WIDER_COLUMNS, read_wider_faces
from blazeface.errors import BlazefaceError
from blazeface.evaluation.widerface import ATTRIBUTES
from blazeface.io import atomic_target


def condition(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or name not in ATTRIBUTES or value not in ATTRIBUTES[name]:
        choices = "; ".join(f"{a}={'|'.join(v)}" for a, v in ATTRIBUTES.items())
        raise argparse.ArgumentTypeError(f"{text!r}: expected one of {choices}")
    return name, ATTRIBUTES[name].index(value)


def photos_where(official: Path, name: str, code: int) -> set[str]:
    """The photos of an official ground-truth file with a valid face whose ``name`` label is ``code``."""
    invalid, column = 4 + WIDER_COLUMNS.index("invalid"), 4 + WIDER_COLUMNS.index(name)
    return {photo for photo, faces in read_wider_faces(official).items()
            if ((faces[:, invalid] == 0) & (faces[:, column] == code)).any()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", type=Path, help="a WIDER training folder (images/, its label file, the official file)")
    p.add_argument("--where", type=condition, required=True, metavar="LABEL=VALUE", help="e.g. pose=atypical")
    p.add_argument("--out", type=Path, required=True, help="the new folder (must not exist)")
    args = p.parse_args()
    official = sorted(args.source.glob("wider_face_*_bbx_gt.txt"))
    labels = [args.source / n for n in ("label_landmarks.txt", "label.txt") if (args.source / n).is_file()]
    if not official or not labels:
        raise BlazefaceError(f"{args.source}: needs a wider_face_*_bbx_gt.txt and a label_landmarks.txt or label.txt")
    if args.out.exists():
        raise BlazefaceError(f"{args.out}: already exists (a selection never replaces a folder)")
    chosen = photos_where(official[0], *args.where)
    kept, keep = [], False
    for line in labels[0].read_text().splitlines(keepends=True):
        if line.startswith("#"):
            keep = line[1:].strip() in chosen
        if keep:
            kept.append(line)
    photos = sum(line.startswith("#") for line in kept)
    if photos == 0:
        raise BlazefaceError(f"{args.source}: no photo has a face with {args.where[0]}={ATTRIBUTES[args.where[0]][args.where[1]]}")
    args.out.mkdir(parents=True)
    with atomic_target(args.out / labels[0].name) as partial:
        partial.write_text("".join(kept))
    (args.out / "images").symlink_to((args.source / "images").resolve(), target_is_directory=True)
    print(f"{args.out}: {photos} of {len(chosen)} chosen photos ({labels[0].name} of {args.source})")
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
