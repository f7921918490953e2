"""The browser demo's server: static files of ``web/``, onnxruntime-web's builds, and exported models.

Everything the page needs comes from this server (no CDN): the page and its JavaScript (``web/``),
onnxruntime-web's ``dist/`` files (``web/node_modules``, installed with ``npm ci --prefix web``), the
served models as ONNX files (their metadata carries the prior configuration the page decodes with)
and ``models.json``, which lists them. Every response carries the cross-origin isolation headers that
multi-threaded WebAssembly needs (``SharedArrayBuffer``). The server only reads: photos and camera
frames stay in the browser.
"""
from __future__ import annotations

import errno
import json
import mimetypes
import os
import shutil
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .errors import BlazefaceError

# onnxruntime-web's builds the page imports and the files each loads: the WebAssembly-only one (SIMD,
# multi-threaded) and the WebGPU one (its own asyncify variant of the wasm runs what WebGPU does not).
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm",
             "ort.webgpu.min.mjs", "ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm")
# Served without --model, in this order: the page opens on the first, the fastest in the browser
# (benchmarks/bench_web.py), so the demo is quick on any machine.
DEFAULT_MODELS = ("slimlite", "slim", "rfb", "mnet", "blazelite", "blaze")
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}
CONTENT_TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
                 ".onnx": "application/octet-stream", ".json": "application/json", ".css": "text/css",
                 ".html": "text/html; charset=utf-8", ".map": "application/json"}
# Files of web/ the server hands out (never node_modules, tests or package files).
STATIC_SUFFIXES = {".html", ".js", ".css", ".png", ".svg", ".ico"}


def web_dir() -> Path:
    """The page's folder: ``$BLAZEFACE_WEB_DIR``, else ``web/`` of the repository checkout this runs from."""
    if os.environ.get("BLAZEFACE_WEB_DIR"):
        return Path(os.environ["BLAZEFACE_WEB_DIR"])
    return Path(__file__).resolve().parents[2] / "web"


def ort_dir(root: Path) -> Path:
    return root / "node_modules" / "onnxruntime-web" / "dist"


def check_web_files(root: Path | None = None) -> Path:
    """The page's folder, or a one-line error saying what is missing and how to get it."""
    root = web_dir() if root is None else Path(root)
    if not (root / "index.html").is_file():
        raise BlazefaceError(
            f"the browser demo's page is not at {root} (it lives in web/ of the source repository, not in the "
            "installed package): run from a clone of the repository or set BLAZEFACE_WEB_DIR")
    missing = [name for name in ORT_FILES if not (ort_dir(root) / name).is_file()]
    if missing:
        raise BlazefaceError(
            f"onnxruntime-web is not installed for the page ({ort_dir(root) / missing[0]} is missing): "
            f"run `npm ci --prefix {root}` (Node.js and npm; nothing is fetched at page load)")
    return root


@dataclass(frozen=True)
class ServedModel:
    id: str  # URL-safe, unique: models/<id>.onnx
    model: str  # registry name
    label: str  # shown in the page's model list
    path: Path  # the exported .onnx

    def to_json(self) -> dict:
        return {"id": self.id, "model": self.model, "label": self.label, "url": f"models/{self.id}.onnx"}


def _onnx_model_name(path: Path) -> str | None:
    """The ``model`` entry of an exported file's metadata (None when it has none)."""
    from .optional import require

    onnx = require("onnx", "onnx")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises several types for a broken file
        raise BlazefaceError(f"{path}: not a readable ONNX file ({str(exc).splitlines()[0]})") from None
    return next((p.value for p in proto.metadata_props if p.key == "model"), None)


def resolve_models(models: list[str] | None, weights: list[str] | None) -> list[tuple[str, str | None]]:
    """``--model`` / ``--weights`` lists -> (model name, weights or None for the shipped ones) pairs.

    No weights: the named models (default: every registered model, fastest first) with their shipped
    weights. Weights: paired in order with the models; exported ``.onnx`` files need no model name (their
    metadata has it).
    """
    from .models import get_config, list_models

    models = list(models or [])
    weights = list(weights or [])
    for name in models:
        get_config(name)  # unknown names fail in one line
    if not weights:
        return [(m, None) for m in models or _default_models(list_models())]
    if not models and all(Path(w).suffix == ".onnx" for w in weights):
        pairs = []
        for w in weights:
            if not Path(w).is_file():
                raise BlazefaceError(f"{w}: no such file")
            name = _onnx_model_name(Path(w))
            if name is None:
                raise BlazefaceError(f"{w} has no blazeface metadata: name its model with --model")
            pairs.append((get_config(name).name, w))
        return pairs
    if len(models) != len(weights):
        raise BlazefaceError(f"give one --weights per --model ({len(models)} model(s), {len(weights)} weights)")
    return list(zip(models, weights))


def _default_models(registered: list[str]) -> list[str]:
    """Every registered model, the ones of DEFAULT_MODELS first in its order (any others after, as listed)."""
    return sorted(registered, key=lambda m: DEFAULT_MODELS.index(m) if m in DEFAULT_MODELS else len(DEFAULT_MODELS))


def prepare_models(pairs: list[tuple[str, str | None]]) -> list[ServedModel]:
    """Export (or find in the export cache) each model's ONNX file."""
    from .backends import exported_model
    from .optional import require

    require("onnx", "onnx")  # exporting needs the onnx extra; fail before any work
    served: list[ServedModel] = []
    for name, weights in pairs:
        path = exported_model("onnx", name, weights)
        if weights is not None and Path(weights).suffix == ".onnx":
            found = _onnx_model_name(path)
            if found is not None and found != name:
                raise BlazefaceError(f"{path} holds model {found!r}, not {name!r}")
        source = "shipped weights" if weights is None else Path(weights).name
        base = name if weights is None else f"{name}-{Path(weights).stem}"
        ident = "".join(c if c.isalnum() or c in "-_." else "_" for c in base)
        taken = {m.id for m in served}
        unique, k = ident, 2
        while unique in taken:
            unique, k = f"{ident}-{k}", k + 1
        served.append(ServedModel(unique, name, f"{name} ({source})", path))
    return served


class _Handler(BaseHTTPRequestHandler):
    server: DemoServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        if self.server.verbose:
            super().log_message(format, *args)

    def _route(self) -> tuple[Path | None, bytes | None]:
        """(file, None) or (None, bytes) for the request path; (None, None) when there is nothing."""
        app = self.server.app
        try:
            path = unquote(urlsplit(self.path).path, errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise _BadPath("the path is not valid UTF-8") from None
        if "\0" in path or any(ord(c) < 32 for c in path):
            raise _BadPath("the path holds a NUL or control character")
        if path in ("/", "/index.html"):
            return app.root / "index.html", None
        if path == "/models.json":
            return None, json.dumps([m.to_json() for m in app.models]).encode()
        if path == "/sample.jpg":
            return Path(__file__).resolve().parent / "assets" / "sample.jpg", None
        if path.startswith("/models/") and path.endswith(".onnx"):
            model = next((m for m in app.models if m.id == path[len("/models/"):-len(".onnx")]), None)
            return (model.path if model else None), None
        if path.startswith("/ort/"):
            return _inside(ort_dir(app.root), path[len("/ort/"):]), None
        target = _inside(app.root, path.lstrip("/"))
        if target is None or target.suffix not in STATIC_SUFFIXES or "node_modules" in target.parts:
            return None, None
        return target, None

    def _respond(self, head_only: bool) -> None:
        try:
            file, body = self._route()
            if file is not None and not file.is_file():
                file = None
        except _BadPath as exc:
            self.send_error(HTTPStatus.BAD_REQUEST, str(exc))
            return
        except (OSError, ValueError):  # e.g. a name too long for the file system
            file, body = None, None
        if file is None and body is None:
            self.send_error(HTTPStatus.NOT_FOUND, "not found")
            return
        name = file.name if file is not None else self.path
        suffix = Path(urlsplit(name).path).suffix
        ctype = CONTENT_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
        size = file.stat().st_size if file is not None else len(body)
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(size))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        if head_only:
            return
        try:
            if file is not None:
                with open(file, "rb") as f:
                    shutil.copyfileobj(f, self.wfile, 1 << 20)
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away (a reload): nothing to do

    def end_headers(self):
        # Every response, error pages included: a page is cross-origin isolated only if all it loads is.
        for key, value in ISOLATION_HEADERS.items():
            self.send_header(key, value)
        super().end_headers()

    def do_GET(self):
        self._respond(head_only=False)

    def do_HEAD(self):
        self._respond(head_only=True)


class _BadPath(Exception):
    """A request path that names no file on any system (undecodable, NUL bytes): answered with 400."""


def _inside(base: Path, relative: str) -> Path | None:
    """``base / relative`` if it stays inside ``base`` (no ``..`` escapes), else None."""
    base = base.resolve()
    target = (base / relative).resolve()
    return target if target.is_relative_to(base) and target != base else None


@dataclass
class _App:
    root: Path
    models: list[ServedModel]


class DemoServer(ThreadingHTTPServer):
    """The demo's HTTP server; ``url`` is where the page is. Use as a context manager or call ``close()``."""

    daemon_threads = True

    def __init__(self, models: list[ServedModel], port: int = 8000, host: str = "127.0.0.1",
                 root: Path | None = None, verbose: bool = False):
        self.app = _App(check_web_files(root), list(models))
        self.verbose = verbose
        try:
            super().__init__((host, port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise BlazefaceError(f"port {port} on {host} is already in use (another `blazeface web`?): "
                                     "choose another with --port N") from None
            if exc.errno == errno.EACCES:
                raise BlazefaceError(f"no permission to listen on port {port}: choose one above 1023 with "
                                     "--port N") from None
            raise BlazefaceError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
        self._thread: threading.Thread | None = None

    @property
    def models(self) -> list[ServedModel]:
        return self.app.models

    @models.setter
    def models(self, models: list[ServedModel]) -> None:
        self.app.models = list(models)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def start(self) -> DemoServer:
        """Serve in a background thread (for tests and embedding); ``serve_forever()`` blocks instead."""
        self._thread = threading.Thread(target=self.serve_forever, name="blazeface-web", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()

    def __enter__(self) -> DemoServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
