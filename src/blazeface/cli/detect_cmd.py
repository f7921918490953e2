"""``blazeface detect``: images, folders (recursive) and videos -> annotated copies and/or JSON Lines."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
from tqdm import tqdm

from . import add_model_args, jsonl_writer, split_videos
from .. import defaults
from ..draw import draw_faces
from ..errors import BlazefaceError
from ..inference import FaceDetector
from ..io import IMAGE_SUFFIXES, VIDEO_SUFFIXES, find_files, read_image
from ..video import VideoReader, VideoWriter


def add_parser(sub) -> None:
    p = sub.add_parser("detect", help="detect faces in images, folders and videos",
                       description="Detect faces and five landmarks. Writes annotated copies (--out) and/or "
                                   "JSON Lines (--json); without either, prints a line per input.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (searched recursively) or videos")
    add_model_args(p)
    p.add_argument("--long-side", type=int, default=defaults.LONG_SIDE,
                   help="resize the long side to this (0: original size)")
    p.add_argument("--conf", type=float, default=defaults.CONF, help="score threshold")
    p.add_argument("--nms", type=float, default=defaults.NMS, help="NMS IoU threshold")
    p.add_argument("--top-k", type=int, default=defaults.TOP_K, help="candidates entering NMS")
    p.add_argument("--keep-top-k", type=int, default=defaults.KEEP_TOP_K, help="detections kept after NMS")
    p.add_argument("--batch-size", type=int, default=defaults.BATCH_SIZE, help="images per forward pass")
    p.add_argument("--out", type=Path, default=None, help="folder for annotated images and videos")
    p.add_argument("--json", default=None, metavar="PATH|-", help="write JSON Lines here ('-' = stdout)")
    p.set_defaults(func=run)


def expand_inputs(inputs: list[str]) -> tuple[list[tuple[Path, Path]], list[str]]:
    """-> ([(path, path relative to its input root for --out)], [error lines]). Folders are searched for images
    and videos; an input file of any type is kept (it fails later, with a message, if unreadable)."""
    found, errors = [], []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            files = find_files(path, IMAGE_SUFFIXES | VIDEO_SUFFIXES)
            if not files:
                errors.append(f"{path}: folder holds no images or videos")
            found.extend((f, f.relative_to(path)) for f in files)
        elif path.exists():
            found.append((path, Path(path.name)))
        else:
            errors.append(f"{path}: no such file or folder")
    return found, errors


def run(args: argparse.Namespace) -> int:
    detector = FaceDetector(args.model, weights=args.weights, backend=args.backend, long_side=args.long_side,
                            conf=args.conf, nms=args.nms, top_k=args.top_k, keep_top_k=args.keep_top_k)
    files, errors = expand_inputs(args.inputs)
    for line in errors:
        print(f"blazeface detect: error: {line}", file=sys.stderr)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    failed = len(errors)
    with jsonl_writer(args.json) as emit:
        images, videos = split_videos(files)
        bar = tqdm(total=len(images), unit="img", disable=len(images) < 2, file=sys.stderr)
        for start in range(0, len(images), args.batch_size):
            batch, arrays = [], []
            for path, rel in images[start:start + args.batch_size]:
                try:
                    arrays.append(read_image(path))
                    batch.append((path, rel))
                except BlazefaceError as exc:
                    failed += 1
                    tqdm.write(f"blazeface detect: error: {exc}", file=sys.stderr)
            for (path, rel), image, faces in zip(batch, arrays, detector.detect_batch(arrays, args.batch_size)):
                emit({"image": str(path), "width": image.shape[1], "height": image.shape[0],
                      "faces": [f.to_dict() for f in faces]})
                if args.out:
                    target = args.out / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if not cv2.imwrite(str(target), draw_faces(image, faces)):
                        failed += 1
                        tqdm.write(f"blazeface detect: error: {target}: could not write", file=sys.stderr)
                if not args.json and not args.out:
                    tqdm.write(f"{path}: {len(faces)} face{'s' if len(faces) != 1 else ''}")
            bar.update(len(images[start:start + args.batch_size]))
        bar.close()
        for path, rel in videos:
            try:
                detect_video(detector, path, args.out / rel.with_suffix(".mp4") if args.out else None, emit,
                             args.batch_size, quiet=bool(args.json or args.out))
            except BlazefaceError as exc:
                failed += 1
                print(f"blazeface detect: error: {exc}", file=sys.stderr)
    if failed:
        print(f"blazeface detect: {failed} input(s) failed", file=sys.stderr)
    return 1 if failed else 0


def detect_video(detector: FaceDetector, path: Path, out: Path | None, emit, batch_size: int, quiet: bool) -> None:
    """Detect on every frame; JSON record per frame (with "frame"), annotated video to ``out``."""
    with VideoReader(path) as reader:
        writer = VideoWriter(out, reader.fps, reader.size) if out else None
        total = 0
        with tqdm(total=reader.frame_count or None, unit="frame", desc=path.name, file=sys.stderr) as bar:
            for index, frames in reader.batches(batch_size):
                for k, (frame, faces) in enumerate(zip(frames, detector.detect_batch(frames, batch_size))):
                    emit({"image": str(path), "frame": index + k, "width": frame.shape[1],
                          "height": frame.shape[0], "faces": [f.to_dict() for f in faces]})
                    if writer:
                        writer.write(draw_faces(frame, faces))
                    total += len(faces)
                bar.update(len(frames))
        if writer:
            writer.close()
    if not quiet:
        print(f"{path}: {total} face detections in {reader.frames_read} frames")
