"""``blazeface web``: serve the browser demo (web/) with exported ONNX models on localhost."""
from __future__ import annotations

import argparse
import sys


def _split(values: list[str] | None) -> list[str]:
    """Repeatable options that also take comma lists: ['a,b', 'c'] -> ['a', 'b', 'c']."""
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "web", help="serve the browser demo (detection runs in the browser)",
        description="Serve the browser demo on localhost: the page runs the exported ONNX models with "
                    "onnxruntime-web (WebGPU or WebAssembly), so photos and camera frames never leave the browser. "
                    "Models are exported on first use and cached. Needs the page's files (web/ of the "
                    "repository, with `npm ci --prefix web` run once) and the 'onnx' extra.")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000; 0: any free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1; browsers allow the webcam only on localhost "
                        "or https)")
    p.add_argument("--model", action="append", metavar="M[,M...]",
                   help="models to serve, repeatable or a comma list (default: every model with shipped weights, the "
                        "fastest in the browser first: the page opens on it)")
    p.add_argument("--weights", action="append", metavar="P[,P...]",
                   help="a checkpoint or exported .onnx per --model, in the same order (default: the shipped "
                        "weights); .onnx files need no --model")
    p.add_argument("--verbose", action="store_true", help="log every request")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..errors import BlazefaceError
    from ..webserver import DemoServer, check_web_files, prepare_models, resolve_models

    if not 0 <= args.port <= 65535:
        raise BlazefaceError(f"--port must be 0..65535, not {args.port}")
    root = check_web_files()  # before any export work
    pairs = resolve_models(_split(args.model), _split(args.weights))
    # Listen first, so a taken port is reported before the (first-time) exports run.
    with DemoServer([], port=args.port, host=args.host, root=root, verbose=args.verbose) as server:
        server.models = prepare_models(pairs)
        names = ", ".join(m.label for m in server.models)
        print(f"serving {names} at {server.url} (Ctrl+C to stop)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("stopped", file=sys.stderr)
    return 0
