"""``blazeface detect``: images, folders (recursive) and videos -> annotated copies and/or JSON Lines."""
from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from pathlib import Path

from tqdm import tqdm

from . import add_model_args, jsonl_writer
from .outputs import check_json_target, check_out_folder, expand_inputs, plan_targets
from .validate import non_negative_int, positive_int, probability
from .. import defaults
from ..draw import draw_faces
from ..errors import BlazefaceError
from ..inference import FaceDetector
from ..io import VIDEO_SUFFIXES, read_image
from ..media import write_image_like
from ..video import VideoOutput, VideoReader, stream_faces


def add_parser(sub) -> None:
    p = sub.add_parser("detect", help="detect faces in images, folders and videos",
                       description="Detect faces and five landmarks. Writes annotated copies (--out) and/or "
                                   "JSON Lines (--json); without either, prints a line per input.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (searched recursively) or videos")
    add_model_args(p)
    p.add_argument("--long-side", type=non_negative_int, default=defaults.LONG_SIDE,
                   help="resize the long side to this (0: original size)")
    p.add_argument("--conf", type=probability, default=defaults.CONF, help="score threshold")
    p.add_argument("--nms", type=probability, default=defaults.NMS, help="NMS IoU threshold")
    p.add_argument("--top-k", type=positive_int, default=defaults.TOP_K, help="candidates entering NMS")
    p.add_argument("--keep-top-k", type=positive_int, default=defaults.KEEP_TOP_K, help="detections kept after NMS")
    p.add_argument("--batch-size", type=positive_int, default=defaults.BATCH_SIZE, help="images per forward pass")
    p.add_argument("--out", type=Path, default=None, help="folder for annotated images and videos")
    p.add_argument("--json", default=None, metavar="PATH|-", help="write JSON Lines here ('-' = stdout)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_out_folder(args.out)
    check_json_target(args.json)  # before the model loads; again below, once inputs and outputs are known
    detector = FaceDetector(args.model, weights=args.weights, backend=args.backend, long_side=args.long_side,
                            conf=args.conf, nms=args.nms, top_k=args.top_k, keep_top_k=args.keep_top_k)
    files, errors = expand_inputs(args.inputs, out=args.out, json_target=args.json)
    for line in errors:
        print(f"blazeface detect: error: {line}", file=sys.stderr)
    failed = len(errors)
    # [(path, rel, annotated copy or None)]: videos become .mp4 (H.264); one input named twice is written
    # twice, under distinct names
    planned = [(p, r, None) for p, r in files]
    if args.out:
        planned = []
        wanted = lambda p, r: args.out / (r.with_suffix(".mp4") if p.suffix.lower() in VIDEO_SUFFIXES else r)  # noqa: E731
        for (path, rel), (_, target, error) in zip(files, plan_targets(files, wanted)):
            if error:
                failed += 1
                print(f"blazeface detect: error: {error}", file=sys.stderr)
            else:
                planned.append((path, rel, target))
    check_json_target(args.json, [p for p, _ in files], [t for _, _, t in planned if t is not None])
    images = [t for t in planned if t[0].suffix.lower() not in VIDEO_SUFFIXES]
    videos = [t for t in planned if t[0].suffix.lower() in VIDEO_SUFFIXES]
    with jsonl_writer(args.json) as emit:
        bar = tqdm(total=len(images), unit="img", disable=len(images) < 2, file=sys.stderr)
        for start in range(0, len(images), args.batch_size):
            batch, arrays = [], []
            for path, rel, target in images[start:start + args.batch_size]:
                try:
                    arrays.append(read_image(path))
                    batch.append((path, target))
                except BlazefaceError as exc:
                    failed += 1
                    tqdm.write(f"blazeface detect: error: {exc}", file=sys.stderr)
            for (path, target), image, faces in zip(batch, arrays, detector.detect_batch(arrays, args.batch_size)):
                emit({"image": str(path), "width": image.shape[1], "height": image.shape[0],
                      "faces": [f.to_dict() for f in faces]})
                if target is not None:
                    try:  # cv2.imwrite's own quality (95): an annotated copy, not an archive of the photo
                        write_image_like(target, draw_faces(image, faces), jpeg_quality=95)
                    except BlazefaceError as exc:
                        failed += 1
                        tqdm.write(f"blazeface detect: error: {exc}", file=sys.stderr)
                if not args.json and not args.out:
                    tqdm.write(f"{path}: {len(faces)} face{'s' if len(faces) != 1 else ''}")
            bar.update(len(images[start:start + args.batch_size]))
        bar.close()
        for path, rel, target in videos:
            try:
                detect_video(detector, path, target, emit, args.batch_size,
                             quiet=bool(args.json or args.out))
            except BlazefaceError as exc:
                failed += 1
                print(f"blazeface detect: error: {exc}", file=sys.stderr)
    if failed:
        print(f"blazeface detect: {failed} input(s) failed", file=sys.stderr)
    return 1 if failed else 0


def detect_video(detector: FaceDetector, path: Path, out: Path | None, emit, batch_size: int, quiet: bool) -> None:
    """Detect on every frame; JSON record per frame (with "frame" and "time"), annotated video (H.264, the
    input's audio) to ``out``, which appears only when the whole video was read."""
    with VideoReader(path) as reader, (VideoOutput(out, like=path, fps=reader.fps) if out else nullcontext()) as video:
        total = 0
        with tqdm(total=reader.frame_count or None, unit="frame", desc=path.name, file=sys.stderr) as bar:
            for frame in stream_faces(detector, path, batch_size, reader=reader):
                emit({"image": str(path), "frame": frame.index, "time": round(frame.timestamp, 6),
                      "width": frame.image.shape[1], "height": frame.image.shape[0],
                      "faces": [f.to_dict() for f in frame.faces]})
                if video is not None:
                    video.write(draw_faces(frame.image, frame.faces))
                total += len(frame.faces)
                bar.update(1)
    if not quiet:
        print(f"{path}: {total} face detections in {reader.frames_read} frames")
