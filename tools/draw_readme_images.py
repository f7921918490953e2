#!/usr/bin/env python
"""Redraw the README's pictures from the shipped weights with the README's own commands.

    python tools/draw_readme_images.py            # writes docs/images/blur_before_after.jpg, align_crops.jpg
    python tools/draw_readme_images.py --web      # and docs/images/web_demo.png (needs web/node_modules, chromium)

`blazeface blur` and `blazeface align` run on the bundled CC0 photo with their defaults (blaze, the blur
threshold the model card derives), so the pictures show what a user gets today; redraw them whenever shipped
weights or defaults change. ``--web`` also serves what `blazeface web` serves by default and screenshots the
page in headless Chromium as it opens (on the bundled photo, detected on load, ``?threads=2``); its latency line
is this machine's at that moment, so take it on a quiet machine. Prints how many faces each picture holds, for
the README's captions.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from blazeface.errors import BlazefaceError

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "src" / "blazeface" / "assets" / "sample.jpg"
GAP = 4  # white pixels between panels
PER_ROW = 9


def blazeface(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "blazeface", *args], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise BlazefaceError(f"blazeface {args[0]} failed (exit {done.returncode}): {last}")


def screenshot_web_page(out: Path) -> str:
    """The demo page as `blazeface web` serves it by default, screenshot once it has detected its sample ->
    its latency line."""
    from blazeface.webserver import DemoServer, check_web_files, prepare_models, resolve_models

    web, node = ROOT / "web", shutil.which("node")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    check_web_files(web)
    if node is None or not Path(chromium).exists():
        raise BlazefaceError("--web needs node and chromium on PATH")
    models = prepare_models(resolve_models([], []))
    with DemoServer(models, port=0, root=web).start() as server:
        options = {"url": server.url, "image": str(SAMPLE), "screenshot": str(out), "chromium": chromium,
                   "query": "threads=2", "timeoutMs": 120000}
        done = subprocess.run([node, str(web / "tests" / "e2e.mjs"), json.dumps(options)], capture_output=True,
                              text=True, timeout=300, cwd=web, check=False)
    if done.returncode != 0:
        raise BlazefaceError(f"the page in headless Chromium failed: {done.stderr.strip()[-300:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result.get("error") or result.get("pageErrors"):
        raise BlazefaceError(f"the page reported an error: {result.get('error') or result['pageErrors'][0]}")
    return result["onLoadText"]


def grid(tiles: list[np.ndarray], per_row: int = PER_ROW, gap: int = GAP) -> np.ndarray:
    """Tiles of one size, ``per_row`` to a row, on white."""
    height, width = tiles[0].shape[:2]
    rows, cols = -(-len(tiles) // per_row), min(per_row, len(tiles))
    canvas = np.full((rows * (height + gap) - gap, cols * (width + gap) - gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, per_row)
        canvas[r * (height + gap): r * (height + gap) + height, c * (width + gap): c * (width + gap) + width] = tile
    return canvas


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="folder of the README's pictures")
    p.add_argument("--web", action="store_true", help="also screenshot the demo page (web_demo.png)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        blazeface("blur", str(SAMPLE), "--out", str(work / "blurred"), "--json", str(work / "masks.jsonl"))
        masks = [json.loads(line) for line in (work / "masks.jsonl").read_text().splitlines() if line.strip()]
        blurred = cv2.imread(str(work / "blurred" / SAMPLE.name))
        before_after = grid([cv2.imread(str(SAMPLE)), blurred], per_row=2)

        blazeface("align", str(SAMPLE), "--out", str(work / "crops"), "--size", "112")
        records = [json.loads(line) for line in (work / "crops" / "faces.jsonl").read_text().splitlines()
                   if line.strip()]
        # Largest faces first: the picture leads with the crops a reader can judge by eye.
        records.sort(key=lambda r: -(r["box"][2] - r["box"][0]) * (r["box"][3] - r["box"][1]))
        crops = [cv2.imread(str(work / "crops" / r["crop"])) for r in records]
        aligned = grid(crops)

    args.out.mkdir(parents=True, exist_ok=True)
    for name, image in (("blur_before_after.jpg", before_after), ("align_crops.jpg", aligned)):
        cv2.imwrite(str(args.out / name), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    faces_blurred = sum(len(m["faces"]) for m in masks)
    print(f"{args.out / 'blur_before_after.jpg'}: {faces_blurred} faces masked")
    print(f"{args.out / 'align_crops.jpg'}: {len(crops)} aligned crops")
    if args.web:
        print(f"{args.out / 'web_demo.png'}: {screenshot_web_page(args.out / 'web_demo.png')}")
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
