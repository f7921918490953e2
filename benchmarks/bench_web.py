#!/usr/bin/env python
"""Per-frame time of the browser demo, as the page itself measures and shows it, per model and backend.

    python benchmarks/bench_web.py --models slim,rfb,mnet,blaze --threads 1,2,4 --long-side 640 --markdown

Starts `blazeface web` on a free port (the shipped weights, exported to ONNX on first use), opens the page in
headless Chromium (Debian's /usr/bin/chromium through playwright-core from web/node_modules, driven by
benchmarks/web_page_driver.mjs) once per model x backend: WebAssembly with each --threads count, and WebGPU
when the browser finds a hardware adapter (--webgpu; headless Chromium on a machine without a GPU offers only
SwiftShader, WebGPU emulated on the CPU, far slower than wasm). Each page detects the bundled sample on load; the script then calls the
page's own timer (window.blazeface.timeFrames, the "Time 20 frames" button) so the numbers are what the page
shows: preprocess (canvas read, resize, normalise) + inference + postprocess (decode, NMS), drawing not
included.

The same models also run in native ONNX Runtime (Python, --native-threads) on the same picture at the same
input size. Every configuration warms up first, then each round times --per-round frames of each in a shuffled
order, so load from other processes (this 2-core machine is shared with training runs) falls on all alike:
read the ratios to native ONNX Runtime when the machine is busy. Reported: median ms per frame.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
DRIVER = REPO / "benchmarks" / "web_page_driver.mjs"


class Page:
    """One page configuration (model, backend, threads) in the driver's browser."""

    def __init__(self, model: str, backend: str, threads: int, long_side: int):
        self.model, self.backend, self.threads = model, backend, threads
        self.id = f"{model}-{backend}-{threads}"
        self.query = f"model={model}&backend={backend}&threads={threads}&long={long_side}"
        self.times: list[float] = []
        self.stages: dict[str, list[float]] = {"preprocess": [], "inference": [], "postprocess": []}
        self.info: dict = {}

    @property
    def label(self) -> str:
        rt = self.info.get("runtime", {})
        if rt.get("backend") == "webgpu":
            return f"WebGPU ({rt.get('adapter')})"
        return f"wasm x{rt.get('threads')} thread{'s' if rt.get('threads') != 1 else ''}"


class Driver:
    """benchmarks/web_page_driver.mjs as a subprocess: one JSON command per line, one answer per line."""

    def __init__(self, url: str, chromium: str, webgpu: bool):
        options = {"url": url, "chromium": chromium, "webgpu": webgpu}
        self.proc = subprocess.Popen(["node", str(DRIVER), json.dumps(options)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=REPO / "web")

    def __call__(self, **command) -> dict:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the browser driver stopped (exit {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def start_server(models: list[str]) -> tuple[subprocess.Popen, str]:
    """`blazeface web --port 0` serving ``models``; returns the process and the page's URL."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "blazeface", "web", "--port", "0", "--model", ",".join(models)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()  # "serving ... at http://127.0.0.1:PORT/ (Ctrl+C to stop)", after the exports
    found = re.search(r" at (http://\S+/) ", line)
    if not found:
        proc.kill()
        raise SystemExit(f"blazeface web did not start: {line.strip() or proc.stderr.read().strip()}")
    return proc, found.group(1)


def native_sessions(models: list[str], size: tuple[int, int], threads: int) -> dict:
    """The same models in native ONNX Runtime on the sample resized to the page's input (before padding)."""
    from blazeface.benchmarking import SAMPLE, BenchSession

    return {m: BenchSession(m, backend="onnx", size=size, threads=threads, image=SAMPLE) for m in models}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="slim,rfb,mnet,blaze")
    p.add_argument("--threads", default=None, help="wasm thread counts, comma list (default: 1 and the cores)")
    p.add_argument("--long-side", type=int, default=640)
    p.add_argument("--frames", type=int, default=30, help="timed frames per configuration")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--per-round", type=int, default=5)
    p.add_argument("--webgpu", choices=("auto", "software", "off"), default="auto",
                   help="auto: time WebGPU when the browser has a hardware adapter; software: also on a software "
                        "one (SwiftShader: minutes for the first frame on 2 cores); off: never")
    p.add_argument("--native-threads", type=int, default=1, help="threads of the native ONNX Runtime reference "
                   "(0: no native reference)")
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    p.add_argument("--screenshot", default=None, help="save the first page, after timing, to this PNG")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    models = args.models.split(",")
    cores = os.cpu_count() or 1
    threads = sorted({int(t) for t in args.threads.split(",")}) if args.threads else sorted({1, cores})
    pages = [Page(m, "wasm", n, args.long_side) for m in models for n in threads]
    load_before = os.getloadavg()
    server, url = start_server(models)
    driver = Driver(url, args.chromium, webgpu=args.webgpu != "off")
    try:
        if args.webgpu != "off":  # what the page picks by itself says whether there is a hardware adapter
            probe = driver(cmd="open", id="probe", query=f"model={models[0]}&threads=1&long={args.long_side}")
            runtime = probe.get("runtime", {})
            if runtime.get("backend") == "webgpu" or args.webgpu == "software":
                pages += [Page(m, "webgpu", 1, args.long_side) for m in models]
            else:
                print(f"# WebGPU not timed: {runtime.get('note') or probe.get('error')}", file=sys.stderr)
        for page in list(pages):
            page.info = driver(cmd="open", id=page.id, query=page.query)
            if page.info.get("error") or page.info["runtime"]["backend"] != page.backend:
                why = page.info.get("error") or page.info["runtime"].get("note")
                print(f"# {page.id}: skipped ({why})", file=sys.stderr)
                pages.remove(page)
                continue
            driver(cmd="time", id=page.id, frames=args.warmup)
            print(f"# {page.id}: {page.label}, loaded and warmed up", file=sys.stderr, flush=True)
        input_size = next(p.info["inputSize"] for p in pages)
        natives = {}
        if args.native_threads:  # the sample resized to the page's letterbox (FaceDetector pads as the page does)
            scale = args.long_side / 400  # the bundled sample is 400x210
            natives = native_sessions(models, (args.long_side, round(210 * scale)), args.native_threads)
            for session in natives.values():
                session.warmup(args.warmup)
        rng = random.Random(args.seed)
        contenders = [("page", page) for page in pages] + [("native", m) for m in natives]
        done = 0
        while done < args.frames:
            n = min(args.per_round, args.frames - done)
            rng.shuffle(contenders)
            for kind, who in contenders:
                if kind == "page":
                    answer = driver(cmd="time", id=who.id, frames=n)
                    if "error" in answer:
                        raise SystemExit(f"{who.id}: {answer['error']}")
                    who.times += answer["times"]
                    for stage, values in answer["stages"].items():
                        who.stages[stage] += values
                else:
                    natives[who].run(n)
            done += n
            print(f"# {done}/{args.frames} frames each", file=sys.stderr, flush=True)
        if args.screenshot and pages:
            driver(cmd="screenshot", id=pages[0].id, path=str(Path(args.screenshot).resolve()))
    finally:
        driver.close()
        server.terminate()
        server.wait(timeout=30)
    load_after = os.getloadavg()

    native = {m: s.result.medians() for m, s in natives.items()}
    rows = []  # model, runtime, preprocess, inference, postprocess, total, total / native total, faces
    for page in pages:
        stages = [statistics.median(page.stages[s]) for s in ("preprocess", "inference", "postprocess")]
        ms = statistics.median(page.times)
        ratio = ms / native[page.model]["total"] if page.model in native else float("nan")
        rows.append((page.model, page.label, *stages, ms, ratio, page.info.get("faces")))
    for m, med in native.items():
        rows.append((m, f"native ONNX Runtime x{args.native_threads} (Python)", med["preprocess"], med["inference"],
                     med["postprocess"], med["total"], 1.0, natives[m].result.faces))
    command = "python benchmarks/bench_web.py " + " ".join(sys.argv[1:])
    meta = (f"{platform.processor() or platform.machine()}, {cores} cores, load average {load_before[0]:.1f} "
            f"before / {load_after[0]:.1f} after; Chromium headless, long side {args.long_side} "
            f"(input {input_size[0]}x{input_size[1]}), median of {args.frames} frames after {args.warmup} warm-up, "
            f"{time.strftime('%Y-%m-%d', time.gmtime())}")
    if args.markdown:
        print(f"`{command}`\n\n{meta}\n")
        print("| model | runtime | preprocess | inference | postprocess | ms / frame | / native ORT | faces |\n"
              "|---|---|---:|---:|---:|---:|---:|---:|")
        for model, label, pre, inf, post, ms, ratio, faces in rows:
            print(f"| `{model}` | {label} | {pre:.1f} | {inf:.1f} | {post:.1f} | **{ms:.1f}** | {ratio:.2f} | {faces} |")
    else:
        print(meta)
        width = max(len(r[1]) for r in rows)
        print(f"{'model':6}  {'runtime':{width}}  {'pre':>6}  {'infer':>7}  {'post':>5}  {'ms/frame':>8}  "
              f"{'/native':>7}  faces")
        for model, label, pre, inf, post, ms, ratio, faces in rows:
            print(f"{model:6}  {label:{width}}  {pre:6.1f}  {inf:7.1f}  {post:5.1f}  {ms:8.1f}  {ratio:7.2f}  {faces}")
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
