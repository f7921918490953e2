"""Per-frame time of ``blazeface blur`` against deface (CenterFace) on the same 640-wide frames, one thread.

Each tool gets the same decoded frames in memory and is timed from the frame to the anonymised frame
(detection + blur, no file input or output), both at their default settings: blazeface's recall-first
threshold with an elliptic blur at mask scale 1.3; deface's threshold 0.2, ellipse, mask scale 1.3.
deface runs in its own virtual environment (``--deface-python``), driven through a subprocess that pins
ONNX Runtime (or OpenCV's DNN) to one thread. Rounds alternate between the two tools so that both see the
same load on a shared machine.

    python3 -m venv /tmp/deface-venv && /tmp/deface-venv/bin/pip install deface onnx onnxruntime
    python benchmarks/bench_blur.py --detector blaze:../shared/data/reference_weights/Blaze_Final_640.pth \\
        --detector slim:../shared/data/reference_weights/slim_Final.pth --backends torch,onnx \\
        --deface-python /tmp/deface-venv/bin/python
    python benchmarks/bench_blur.py ... --json           # one JSON object

Frames: the first ``--frames`` photos of ``../shared/data/facemask/images`` (CC0 street and crowd scenes)
resized to 640 wide (the bundled sample when that folder is absent).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"

# Runs inside deface's environment: python -c WORKER FRAMES.npz BACKEND ROUNDS -> JSON on stdout.
WORKER = r'''
import json, os, sys, time
os.environ["OMP_NUM_THREADS"] = "1"
import numpy as np, cv2
cv2.setNumThreads(1)
try:
    import onnxruntime
    _Session = onnxruntime.InferenceSession
    def _one_thread(*args, **kwargs):
        options = kwargs.pop("sess_options", None) or onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        return _Session(*args, sess_options=options, **kwargs)
    onnxruntime.InferenceSession = _one_thread
except ImportError:
    pass
import deface
from deface.centerface import CenterFace
from deface.deface import anonymize_frame
with np.load(sys.argv[1]) as data:
    frames = [data[key] for key in sorted(data.files)]
backend, rounds = sys.argv[2], int(sys.argv[3])
centerface = CenterFace(in_shape=None, backend=backend)
for frame in frames[:3]:  # warm-up
    centerface(frame.copy(), threshold=0.2)
total, detect, faces = [], [], []
for _ in range(rounds):
    for frame in frames:
        frame = frame.copy()
        t0 = time.perf_counter()
        dets, _ = centerface(frame, threshold=0.2)
        t1 = time.perf_counter()
        anonymize_frame(dets, frame, mask_scale=1.3, replacewith="blur", ellipse=True, draw_scores=False,
                        replaceimg=None, mosaicsize=20)
        t2 = time.perf_counter()
        total.append(t2 - t0)
        detect.append(t1 - t0)
        faces.append(len(dets))
print(json.dumps({"total": total, "detect": detect, "faces": faces, "backend": centerface.backend,
                  "version": getattr(deface, "__version__", "?")}))
'''


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--detector", action="append", default=None, metavar="MODEL[:WEIGHTS]",
                   help="a blazeface model to time, with its checkpoint (default: the shipped one); repeatable "
                        "(default: blaze)")
    p.add_argument("--backends", default="torch,onnx",
                   help="blazeface backends to time, comma-separated (default torch,onnx; onnx needs onnxruntime)")
    p.add_argument("--images", type=Path, default=DATA / "facemask" / "images")
    p.add_argument("--frames", type=int, default=20, help="photos used as frames (default 20)")
    p.add_argument("--width", type=int, default=640, help="frame width (default 640)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds over all frames (default 3)")
    p.add_argument("--deface-python", default=None, metavar="PATH",
                   help="python of a virtual environment with deface installed (omit: blazeface only)")
    p.add_argument("--deface-backend", default="auto", choices=["auto", "onnxrt", "opencv"],
                   help="deface's model runtime (auto: ONNX Runtime when installed, as deface does)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


def load_frames(args) -> list[np.ndarray]:
    paths = sorted(args.images.glob("*.jpg"))[:args.frames] if args.images.is_dir() else []
    if not paths:
        paths = [REPO / "src" / "blazeface" / "assets" / "sample.jpg"]
    frames = []
    for path in paths:
        image = cv2.imread(str(path))
        height = round(image.shape[0] * args.width / image.shape[1])
        frames.append(cv2.resize(image, (args.width, height), interpolation=cv2.INTER_AREA))
    return frames


def bench_blazeface(detector, frames: list[np.ndarray]) -> dict:
    from blazeface import anonymize

    total, detect, faces = [], [], []
    for frame in frames:
        t0 = time.perf_counter()
        found = detector.detect(frame)
        t1 = time.perf_counter()
        anonymize(frame, found, method="blur", shape="ellipse", copy=False)
        t2 = time.perf_counter()
        total.append(t2 - t0)
        detect.append(t1 - t0)
        faces.append(len(found))
    return {"total": total, "detect": detect, "faces": faces}


def bench_deface(python: str, backend: str, frames_file: Path) -> dict:
    result = subprocess.run([python, "-c", WORKER, str(frames_file), backend, "1"], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    if result.returncode != 0:
        last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "no message"
        sys.exit(f"bench_blur: deface failed: {last}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def summary(times: list[float]) -> dict:
    ms = np.asarray(times) * 1000
    return {"median": round(float(np.median(ms)), 2), "p10": round(float(np.percentile(ms, 10)), 2),
            "p90": round(float(np.percentile(ms, 90)), 2), "n": int(len(ms))}


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from blazeface import FaceDetector
    from blazeface.privacy import DEFAULT_BLUR_CONF

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    frames = load_frames(args)
    detectors, settings = {}, {}
    for spec in args.detector or ["blaze"]:
        model, _, weights = spec.partition(":")
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            name = f"blazeface {model} {backend}"
            kwargs = {} if backend == "torch" else {"backend": backend, "threads": 1}
            detectors[name] = FaceDetector(model, weights=weights or None, long_side=args.width,
                                           conf=DEFAULT_BLUR_CONF, **kwargs)
            settings[name] = f"{Path(weights).name if weights else 'shipped weights'}, conf {DEFAULT_BLUR_CONF}"
            for frame in frames[:3]:
                detectors[name].detect(frame)  # warm-up
    runs = {name: {"total": [], "detect": [], "faces": []} for name in detectors}
    with tempfile.TemporaryDirectory() as tmp:
        frames_file = Path(tmp) / "frames.npz"
        # deface reads frames with imageio: RGB.
        np.savez(frames_file, **{f"frame{k:05d}": np.ascontiguousarray(f[:, :, ::-1]) for k, f in enumerate(frames)})
        if args.deface_python:
            runs["deface"] = {"total": [], "detect": [], "faces": []}
        for _ in range(args.rounds):
            for name, detector in detectors.items():
                for key, value in bench_blazeface(detector, [f.copy() for f in frames]).items():
                    runs[name][key] += value
            if args.deface_python:
                out = bench_deface(args.deface_python, args.deface_backend, frames_file)
                settings["deface"] = f"deface {out['version']} (CenterFace, {out['backend']}), thresh 0.2"
                for key in ("total", "detect", "faces"):
                    runs["deface"][key] += out[key]
    report = {"frames": len(frames), "width": args.width,
              "mean_height": round(float(np.mean([f.shape[0] for f in frames])), 1), "rounds": args.rounds,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "threads": 1}
    for name, run in runs.items():
        report[name] = {"total_ms": summary(run["total"]), "detect_ms": summary(run["detect"]),
                        "faces_per_frame": round(float(np.mean(run["faces"])), 2), "settings": settings[name]}
    if args.deface_python:
        report["speedup"] = {name: round(report["deface"]["total_ms"]["median"] / report[name]["total_ms"]["median"], 2)
                             for name in detectors}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{report['frames']} frames {args.width} wide (mean height {report['mean_height']}), {args.rounds} rounds, "
          f"one thread, {report['machine']}")
    print(f"{'tool':<26} {'per frame (ms)':>15} {'p10':>7} {'p90':>7} {'detect only':>12} {'faces/frame':>12}  "
          f"settings")
    for name in runs:
        r = report[name]
        print(f"{name:<26} {r['total_ms']['median']:>15.1f} {r['total_ms']['p10']:>7.1f} {r['total_ms']['p90']:>7.1f} "
              f"{r['detect_ms']['median']:>12.1f} {r['faces_per_frame']:>12.1f}  {r['settings']}")
    for name, factor in report.get("speedup", {}).items():
        print(f"{name} is {factor}x as fast as deface per frame (medians)")
    return 0


if __name__ == "__main__":
    from blazeface.cli import run_script

    run_script(main)
