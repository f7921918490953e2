"""Write a compact copy of training folders (WebP images, the same labels) to carry to a GPU machine.

A device machine of this workplace takes at most 64 MiB of working tree per call, the repository included,
so the 180 MB of training photos travel re-encoded: WebP at a chosen quality (about half the bytes of the
source JPEGs at equal PSNR), optionally split into parts that travel in separate calls and are merged there
(``cp -r PART/. DEST/``). Label files are rewritten with the new names; nothing else changes, so
``blazeface train --data COPY/widerface/train`` reads the copy exactly like the original.

    python tools/compact_training_data.py --out .gpudata --quality 50 --parts 2 \\
        ../shared/data/widerface/train ../shared/data/facemask ../shared/data/mtfl/train

writes ``.gpudata/part0/<name>/...`` and ``.gpudata/part1/<name>/...`` where ``<name>`` is the source's
path below the common data root (``widerface/train``, ``facemask``, ``mtfl/train``). Images are assigned
to parts by a hash of their path; the label files go into the first part only (bytes are scarce, and the
first call can already train on it).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2

from blazeface.data.labels import find_label_file, load_source


def _renamed(name: str) -> str:
    return str(Path(name).with_suffix(".webp"))


def rewrite_labels(source: Path) -> tuple[Path, str, list[str]]:
    """The source's label file, its text with every image name ending in .webp, and those names.

    The names come from the project's own reader (``load_source``: every label format it reads); a
    whitespace-separated token equal to one of them is renamed, so the format is not parsed twice here."""
    label_file = find_label_file(source)
    images = label_file.parent / "images"
    names = list(dict.fromkeys(str(s.image_path.relative_to(images)) for s in load_source(source)))
    known = set(names)
    lines = [" ".join(_renamed(t) if t in known else t for t in line.split()) if line.strip() else line
             for line in label_file.read_text().splitlines()]
    return label_file, "\n".join(lines) + "\n", names


def _encode(job: tuple[Path, Path, int]) -> int:
    src, dst, quality = job
    image = cv2.imread(str(src), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise SystemExit(f"{src}: cannot be read as an image")
    ok, data = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, quality])
    if not ok:
        raise SystemExit(f"{src}: WebP encoding failed")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data.tobytes())
    return len(data)


def part_of(name: str, parts: int) -> int:
    return int(hashlib.sha1(name.encode()).hexdigest(), 16) % parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", type=Path, help="training folders (images/ + a label file)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quality", type=int, default=55, help="WebP quality 1-100 (default 55)")
    parser.add_argument("--parts", type=int, default=1)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    root = Path(os.path.commonpath([s.resolve() for s in args.sources]))
    if len(args.sources) == 1:
        root = root.parent
    jobs = []
    for source in args.sources:
        label_file, text, names = rewrite_labels(source)
        rel = source.resolve().relative_to(root)
        target = args.out / "part0" / rel
        target.mkdir(parents=True, exist_ok=True)
        (target / label_file.name).write_text(text)
        for name in names:
            k = part_of(f"{rel}/{name}", args.parts)
            jobs.append((label_file.parent / "images" / name,
                         args.out / f"part{k}" / rel / "images" / _renamed(name), args.quality))
    with ProcessPoolExecutor(args.workers) as pool:
        total = sum(pool.map(_encode, jobs, chunksize=16))
    print(f"{len(jobs)} images, {total / 2**20:.1f} MiB of WebP (quality {args.quality}) in {args.parts} "
          f"part(s) under {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
