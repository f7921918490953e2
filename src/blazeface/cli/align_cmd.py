"""``blazeface align``: aligned face crops (ArcFace five-point template) with a JSON Lines index."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from . import add_model_args
from .outputs import check_out_folder, expand_inputs
from .validate import non_negative_int, positive_int, probability
from ..alignment import ARCFACE_SIZE, align_face
from .. import defaults
from ..errors import BlazefaceError
from ..inference import FaceDetector
from ..io import VIDEO_SUFFIXES, read_image
from ..media import write_image_like

INDEX = "faces.jsonl"


def add_parser(sub) -> None:
    p = sub.add_parser("align", help="aligned face crops for recognition models",
                       description="For every face, the least-squares similarity transform of its five landmarks "
                                   "onto the ArcFace 112x112 template (scaled for other sizes). Writes "
                                   "DIR/<input stem>_face<i>.png (i by descending score) and DIR/faces.jsonl "
                                   "(source, box, score, landmarks, transform per crop).")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders (searched recursively)")
    add_model_args(p)
    p.add_argument("--out", type=Path, default=Path("aligned"), help="folder for the crops and faces.jsonl "
                                                                     "(default: ./aligned)")
    p.add_argument("--size", type=positive_int, default=ARCFACE_SIZE, help="crop side in pixels (default 112)")
    p.add_argument("--conf", type=probability, default=0.5, help="score threshold (default 0.5)")
    p.add_argument("--nms", type=probability, default=defaults.NMS, help=f"NMS IoU threshold (default {defaults.NMS})")
    p.add_argument("--long-side", type=non_negative_int, default=defaults.LONG_SIDE,
                   help=f"detect with the long side resized to this (0: original size; default {defaults.LONG_SIDE})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    detector = FaceDetector(args.model, weights=args.weights, backend=args.backend, long_side=args.long_side,
                            conf=args.conf, nms=args.nms)
    files, errors = expand_inputs(args.inputs, out=args.out)
    for line in errors:
        print(f"blazeface align: error: {line}", file=sys.stderr)
    failed = len(errors)
    check_out_folder(args.out)
    inputs = {p.resolve() for p, _ in files}
    try:
        index = open(args.out / INDEX, "w")
    except OSError as exc:
        raise BlazefaceError(f"{args.out}: cannot write ({exc.strerror or exc})") from None
    owners: dict[Path, Path] = {}  # crop name prefix -> the input that uses it
    crops = 0
    with index:
        for path, rel in tqdm(files, unit="img", disable=len(files) < 2, file=sys.stderr, leave=False):
            prefix = rel.parent / rel.stem
            try:
                if path.suffix.lower() in VIDEO_SUFFIXES:
                    raise BlazefaceError(f"{path}: align takes images, not videos (extract frames first)")
                if prefix in owners:
                    raise BlazefaceError(f"{path}: its crops would overwrite those of {owners[prefix]} "
                                         f"({prefix}_face<i>.png)")
                owners[prefix] = path
                image = read_image(path)
                faces = detector.detect(image)
                for i, face in enumerate(faces):
                    crop, matrix = align_face(image, face, args.size, return_transform=True)
                    name = prefix.parent / f"{prefix.name}_face{i}.png"
                    if (args.out / name).resolve() in inputs:
                        raise BlazefaceError(f"{path}: its crop {args.out / name} would overwrite an input; "
                                             f"choose another --out folder")
                    write_image_like(args.out / name, crop)
                    index.write(json.dumps({"crop": name.as_posix(), "source": str(path), "face": i, **face.to_dict(),
                                            "size": args.size,
                                            "transform": [[round(float(v), 6) for v in row] for row in matrix]}) + "\n")
                    crops += 1
            except BlazefaceError as exc:
                failed += 1
                tqdm.write(f"blazeface align: error: {exc}", file=sys.stderr)
                continue
            n = len(faces)
            tqdm.write(f"{path}: {n} face{'s' if n != 1 else ''}")
    print(f"wrote {crops} crop{'s' if crops != 1 else ''} of {args.size}x{args.size} and {args.out / INDEX}")
    if failed:
        print(f"blazeface align: {failed} input(s) failed", file=sys.stderr)
    return 1 if failed else 0
