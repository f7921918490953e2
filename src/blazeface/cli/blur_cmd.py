"""``blazeface blur``: anonymise every face in images, folders (recursive) and videos."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from . import add_model_args, jsonl_writer
from .outputs import check_json_target, check_out_folder, expand_inputs, plan_targets
from .validate import non_negative_int, positive_float, positive_int, probability
from .. import defaults
from ..errors import BlazefaceError
from ..inference import FaceDetector
from ..io import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from ..privacy import (DEFAULT_BLUR_CONF, DEFAULT_HOLD_FRAMES, DEFAULT_SCALE, METHODS, SHAPES, BlurSettings,
                       anonymize_image_file, anonymize_video)

ALL_FILES = "all"  # expand_inputs: every file in a folder
SUFFIX = "_anonymized"  # without --out, the copy goes beside its input as <stem>_anonymized<ext>


def add_parser(sub) -> None:
    p = sub.add_parser("blur", help="anonymise faces in images, folders and videos",
                       description="Blur, pixelate or fill every face. Images keep their format, videos their "
                                   "container, frame rate and audio. Pixels outside the masks are not touched "
                                   "(lossless formats keep them exactly; see --jpeg-quality for JPEG).")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (searched recursively) or videos")
    add_model_args(p)
    p.add_argument("--out", type=Path, default=None,
                   help=f"folder for the anonymised copies, under their input names (default: beside each input "
                        f"as <name>{SUFFIX}.<ext>)")
    p.add_argument("--method", default="blur", choices=METHODS,
                   help="blur (default), mosaic, solid (black) or none (only report the masks)")
    p.add_argument("--shape", default="ellipse", choices=SHAPES, help="mask shape (default: ellipse)")
    p.add_argument("--scale", type=positive_float, default=DEFAULT_SCALE,
                   help="mask growth as deface's --mask-scale: each side of the face box moves out by "
                        f"(scale - 1) x its size (default {DEFAULT_SCALE}: a mask 1.6 x the box)")
    p.add_argument("--conf", type=probability, default=DEFAULT_BLUR_CONF,
                   help=f"score threshold (default {DEFAULT_BLUR_CONF}: recall-first, see the README)")
    p.add_argument("--nms", type=probability, default=defaults.NMS, help=f"NMS IoU threshold (default {defaults.NMS})")
    p.add_argument("--long-side", type=non_negative_int, default=defaults.LONG_SIDE,
                   help=f"detect with the long side resized to this (0: original size; default {defaults.LONG_SIDE})")
    p.add_argument("--hold", type=non_negative_int, default=DEFAULT_HOLD_FRAMES,
                   help=f"video: frames a face stays masked after its last detection (default {DEFAULT_HOLD_FRAMES})")
    p.add_argument("--jpeg-quality", default="blocks", type=_jpeg_quality, metavar="blocks|max|keep|Q",
                   help="JPEG outputs: blocks (default: only the 8x8/16x16 blocks that touch a mask are "
                        "re-encoded, with the file's own tables; every other block keeps its coefficients, so "
                        "no generation loss and about the same file size), or the whole image re-encoded: max "
                        "(quality 100 without chroma subsampling, every pixel within a few levels), keep (the "
                        "input's own quality and subsampling) or a quality 1-100")
    p.add_argument("--batch-size", type=positive_int, default=8, help="video frames per forward pass (default 8)")
    p.add_argument("--json", default=None, metavar="PATH|-",
                   help="write what was masked as JSON Lines here ('-' = stdout): one object per image or "
                        "video frame, each face with its box, score, landmarks, mask rectangle and 'held'")
    p.set_defaults(func=run)


def _jpeg_quality(text: str) -> int | str:
    if text in ("blocks", "max", "keep"):
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"expected blocks, max, keep or a quality 1-100, not {text!r}")
    return value


def output_path(path: Path, rel: Path, out: Path | None) -> Path:
    return out / rel if out is not None else path.with_name(f"{path.stem}{SUFFIX}{path.suffix}")


def run(args: argparse.Namespace) -> int:
    check_out_folder(args.out)
    check_json_target(args.json)  # before the model loads; again below, once inputs and outputs are known
    settings = BlurSettings(args.method, args.shape, args.scale, args.hold, args.jpeg_quality)
    detector = FaceDetector(args.model, weights=args.weights, backend=args.backend, long_side=args.long_side,
                            conf=args.conf, nms=args.nms)
    files, errors = [], []
    for text in args.inputs:
        # every file in a folder is blurred or reported
        found, bad = expand_inputs([text], suffixes=ALL_FILES, out=args.out, json_target=args.json)
        if Path(text).is_dir() and args.out is None:  # earlier outputs beside their inputs are not inputs
            found = [(p, r) for p, r in found if not p.stem.endswith(SUFFIX)]
        files += found
        errors += bad
    for line in errors:
        print(f"blazeface blur: error: {line}", file=sys.stderr)
    report = sys.stderr if args.json == "-" else sys.stdout  # keep stdout pure JSON with --json -
    failed = len(errors)
    supported = [(p, r) for p, r in files if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES | {".gif"}]
    for path, _ in files:
        if (path, _) not in supported:
            failed += 1
            print(f"blazeface blur: error: {path}: not an image or video blur reads "
                  f"({', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))})", file=sys.stderr)
    planned = []  # (path, rel, target): one input named twice is written twice, under distinct names
    for (path, rel), (_, target, error) in zip(supported, plan_targets(supported,
                                                                       lambda p, r: output_path(p, r, args.out))):
        if error:
            failed += 1
            print(f"blazeface blur: error: {error}", file=sys.stderr)
        else:
            planned.append((path, rel, target))
    check_json_target(args.json, [p for p, _ in files], [t for _, _, t in planned])
    with jsonl_writer(args.json) as emit:
        images = [t for t in planned if t[0].suffix.lower() not in VIDEO_SUFFIXES]
        videos = [t for t in planned if t[0].suffix.lower() in VIDEO_SUFFIXES]
        for path, rel, target in tqdm(images, unit="img", disable=len(images) < 2, file=sys.stderr, leave=False):
            try:
                record = anonymize_image_file(detector, path, target, settings)
            except BlazefaceError as exc:
                failed += 1
                tqdm.write(f"blazeface blur: error: {exc}", file=sys.stderr)
                continue
            emit({**record, "output": str(target)})
            n = len(record["faces"])
            frames = f" in {len(record['frames'])} frames" if "frames" in record else ""
            tqdm.write(f"{path} -> {target}: {n} face{'s' if n != 1 else ''} masked{frames}", file=report)
        for path, rel, target in videos:
            try:
                summary = anonymize_video(detector, path, target, settings, batch_size=args.batch_size,
                                          on_frame=lambda r, t=target: emit({**r, "output": str(t)}))
            except BlazefaceError as exc:
                failed += 1
                print(f"blazeface blur: error: {exc}", file=sys.stderr)
                continue
            print(f"{path} -> {target}: {summary['frames']} frames, {summary['faces']} face detections"
                  f"{', audio copied' if summary['audio'] else ''}", file=report)
    if failed:
        print(f"blazeface blur: {failed} input(s) failed", file=sys.stderr)
    return 1 if failed else 0
