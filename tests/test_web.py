"""`blazeface web`: the demo server (files, headers, errors) and the page end to end in headless Chromium.

The end-to-end test needs Debian's chromium, Node.js and `npm ci --prefix web` (onnxruntime-web and
playwright-core); it skips with the reason when one is missing. It serves the shipped blaze (and slim)
weights, or until they exist the original Blaze_Final_640.pth (and slim_Final.pth) from ../shared.
"""
import json
import os
import socket
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pytest

from blazeface import BlazefaceError, FaceDetector, list_models
from blazeface.cli import main
from blazeface.geometry import box_iou
from blazeface.models import get_config
from blazeface.webserver import (DEFAULT_MODELS, ORT_FILES, DemoServer, ServedModel, check_web_files, ort_dir,
                                 resolve_models)
from conftest import CHROMIUM, NODE, REPO, SAMPLE, chromium_skip_reason

WEB = REPO / "web"
ISOLATION = {"cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp"}


@pytest.fixture
def fake_web(tmp_path):
    """A page folder with placeholder files where web/ and onnxruntime-web's dist/ would be."""
    root = tmp_path / "web"
    (root / "src").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>demo</title>")
    (root / "src" / "app.js").write_text("export {};\n")
    (root / "package.json").write_text("{}")
    dist = ort_dir(root)
    dist.mkdir(parents=True)
    for name in ORT_FILES:
        (dist / name).write_bytes(b"\0asm" if name.endswith(".wasm") else b"export {};\n")
    (root / "node_modules" / "secret.js").write_text("no")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not really onnx, but served as is")
    return root, ServedModel("blaze-x", "blaze", "blaze (x.pth)", model)


def fetch(url: str, method: str = "GET"):
    """(status, headers with lower-case names, body)."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def test_server_files_and_isolation_headers(fake_web):
    root, model = fake_web
    with DemoServer([model], port=0, root=root).start() as server:
        status, headers, body = fetch(server.url)
        assert status == 200 and b"<title>demo" in body and headers["content-type"].startswith("text/html")
        assert {k: headers[k] for k in ISOLATION} == ISOLATION
        status, headers, body = fetch(server.url + "models.json")
        assert status == 200 and json.loads(body) == [
            {"id": "blaze-x", "model": "blaze", "label": "blaze (x.pth)", "url": "models/blaze-x.onnx"}]
        status, _, body = fetch(server.url + "models/blaze-x.onnx")
        assert status == 200 and body == model.path.read_bytes()
        status, headers, _ = fetch(server.url + "ort/ort.wasm.min.mjs")
        assert status == 200 and headers["content-type"] == "text/javascript"
        status, headers, _ = fetch(server.url + "ort/ort-wasm-simd-threaded.wasm")
        assert status == 200 and headers["content-type"] == "application/wasm"
        for name in ORT_FILES:  # both builds the page may import (wasm, WebGPU) and what each loads
            status, headers, _ = fetch(server.url + "ort/" + name, method="HEAD")
            want = "application/wasm" if name.endswith(".wasm") else "text/javascript"
            assert status == 200 and headers["content-type"] == want, name
            assert {k: headers[k] for k in ISOLATION} == ISOLATION, name
        assert fetch(server.url + "src/app.js")[0] == 200
        status, headers, body = fetch(server.url + "src/app.js", method="HEAD")
        assert status == 200 and body == b"" and headers["content-length"] == str(len("export {};\n"))
        assert fetch(server.url + "sample.jpg")[2] == SAMPLE.read_bytes()
        # Nothing outside the page's files: node_modules only through /ort/, no package files, no escapes.
        for path in ("node_modules/secret.js", "package.json", "../m.onnx", "%2e%2e/m.onnx", "ort/../../package.json",
                     "models/other.onnx", "nothing.html"):
            status, headers, _ = fetch(server.url + path)
            assert status == 404, path
            assert {k: headers.get(k) for k in ISOLATION} == ISOLATION  # error pages too


def test_port_taken_is_one_clear_error(fake_web):
    root, model = fake_web
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(BlazefaceError, match=f"port {port} .* already in use.*--port"):
            DemoServer([model], port=port, root=root)


def test_cli_errors(fake_web, tmp_path, monkeypatch, capsys):
    root, _ = fake_web
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "index.html").write_text("<!doctype html>")
    monkeypatch.setenv("BLAZEFACE_WEB_DIR", str(bare))
    assert main(["web", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "npm ci --prefix" in err
    monkeypatch.setenv("BLAZEFACE_WEB_DIR", str(root))
    assert main(["web", "--model", "blaze,slim", "--weights", "a.pth", "--port", "0"]) == 2
    assert "one --weights per --model" in capsys.readouterr().err
    assert main(["web", "--model", "nope", "--port", "0"]) == 2
    assert "unknown model" in capsys.readouterr().err
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        # The port is checked before any model is exported (a.pth does not even exist).
        assert main(["web", "--model", "blaze", "--weights", "a.pth", "--port", str(port)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "already in use" in err


def test_cli_with_shipped_weights_missing_says_so(fake_web, monkeypatch, tmp_path, capsys):
    """A broken install (weights folder emptied) is a one-line error naming the missing file."""
    import blazeface.models.registry as registry

    monkeypatch.setenv("BLAZEFACE_WEB_DIR", str(fake_web[0]))
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    assert main(["web", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing the shipped weights of 'slimlite'" in err  # the first served


def test_resolve_models(tmp_path):
    # Without --model: every registered model, the fastest in the browser first (the page opens on it).
    default = resolve_models(None, None)
    assert sorted(default) == sorted((m, None) for m in list_models())
    assert [m for m, _ in default[:len(DEFAULT_MODELS)]] == list(DEFAULT_MODELS) and default[0] == ("slimlite", None)
    assert resolve_models(["blaze", "slim"], ["a.pth", "b.pth"]) == [("blaze", "a.pth"), ("slim", "b.pth")]
    with pytest.raises(BlazefaceError, match="one --weights per --model"):
        resolve_models(["blaze"], ["a.pth", "b.pth"])
    onnx = pytest.importorskip("onnx", reason="needs the 'onnx' extra")
    from onnx import helper

    from blazeface.metadata import model_metadata

    model = helper.make_model(helper.make_graph([], "g", [], []))
    helper.set_model_props(model, model_metadata(get_config("slim")))
    onnx.save(model, tmp_path / "exported.onnx")
    # An exported file names its own model.
    assert resolve_models([], [str(tmp_path / "exported.onnx")]) == [("slim", str(tmp_path / "exported.onnx"))]


# --- the page in a real browser ------------------------------------------------------------------------


def demo_models():
    """[(model, weights)] to serve: blaze first, then slim (to switch to), with their shipped weights."""
    return [("blaze", None), ("slim", None)], None


def browser_skip_reason() -> str | None:
    if reason := chromium_skip_reason():
        return reason
    try:
        check_web_files(WEB)
    except BlazefaceError as exc:
        return str(exc)
    for module in ("onnx", "onnxslim", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            return f"needs the 'onnx' extra ({module})"
    return demo_models()[1]


def iou(a, b) -> float:
    return float(box_iou(a, b)[0, 0])


@pytest.mark.skipif(browser_skip_reason() is not None, reason=browser_skip_reason() or "")
def test_page_in_headless_chromium(tmp_path, monkeypatch):
    """Serve the page in headless Chromium: it detects the CC0 sample on load (drawn on its canvas, with its
    backend and per-frame time), as the Python API does; then open the same photo through the file input,
    time a few frames, move the threshold, switch model, and run the webcam mode on Chromium's fake camera."""
    from blazeface.webserver import prepare_models

    monkeypatch.setenv("BLAZEFACE_CACHE", str(tmp_path / "cache"))  # a fresh export, not a stale cached one
    pairs, _ = demo_models()
    models = prepare_models([(name, None if w is None else str(w)) for name, w in pairs])
    weights = pairs[0][1]
    screenshot = os.environ.get("BLAZEFACE_WEB_SCREENSHOT") or str(tmp_path / "web_demo.png")
    long_side = get_config("blaze").long_side
    with DemoServer(models, port=0, root=WEB).start() as server:
        options = {"url": server.url, "image": str(SAMPLE), "screenshot": screenshot, "webcam": True,
                   "threshold": 0.9, "switchTo": models[1].id if len(models) > 1 else None, "timeFrames": 3,
                   # WebGPU asked for where this Chromium (--disable-gpu) has no adapter: wasm, saying why.
                   "secondQuery": f"backend=webgpu&model={models[-1].id}&conf=0.5&long={long_side}",
                   "chromium": CHROMIUM, "timeoutMs": 90000,
                   # Two wasm threads, so the threaded build really runs (the page's own default is one per
                   # core, at most 4).
                   "query": f"threads=2&conf=0.5&long={long_side}"}
        done = subprocess.run([NODE, str(WEB / "tests" / "e2e.mjs"), json.dumps(options)], capture_output=True,
                              text=True, timeout=180, cwd=WEB, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result.get("error") is None, result
    assert result["crossOriginIsolated"] is True  # the server's COOP/COEP headers work
    assert result["foreignRequests"] == [] and result["pageErrors"] == [] and result["console"] == [], result
    # The multi-threaded SIMD build, served with its MIME types, running on two threads (two Web Workers
    # besides the page would mean more; one is the second thread). This Chromium has no GPU, so no WebGPU:
    # the page says why and runs WebAssembly.
    assert result["ortFiles"]["ort-wasm-simd-threaded.wasm"] == [200, "application/wasm"], result["ortFiles"]
    assert result["ortFiles"]["ort-wasm-simd-threaded.mjs"] == [200, "text/javascript"], result["ortFiles"]
    assert "ort.webgpu.min.mjs" not in result["ortFiles"]  # only the build in use is downloaded
    runtime = result["runtime"]
    assert (runtime["backend"], runtime["threads"], runtime["requested"]) == ("wasm", 2, "auto"), runtime
    assert "WebGPU" in runtime["note"] and result["workers"] >= 1, result

    # On load, without a click: the sample, detected and drawn, with what ran and how fast.
    on_load = result["onLoad"]
    assert (on_load["source"], on_load["width"], on_load["height"]) == ("sample.jpg", 400, 210)
    assert (on_load["model"], on_load["backend"], on_load["threads"]) == (models[0].id, "wasm", 2)
    assert on_load["frames"] == 5 and on_load["frameMs"] > 0  # the first frame, a warm-up, is not counted
    assert result["onLoadText"].startswith("blaze · wasm ×2 threads · ") and " ms/frame (median of 5 frames;" in \
        result["onLoadText"], result["onLoadText"]
    assert f"{len(on_load['faces'])} faces" in result["onLoadText"] and "sample.jpg" in result["onLoadStatus"]
    canvas = result["canvas"]
    assert (canvas["width"], canvas["height"]) == (800, 420) and canvas["brightFraction"] > 0.5, canvas
    assert canvas["counts"]["box"] > 100 and all(n > 20 for n in canvas["counts"].values()), canvas

    photo = result["photo"]  # the same photo through the file input: the same faces
    assert (photo["source"], photo["width"], photo["height"]) == ("sample.jpg", 400, 210)
    assert photo["faces"] == on_load["faces"] and photo["frames"] == 6

    # Every face the Python API finds above 0.7 is found in the browser (its resize differs a little, so
    # only borderline faces may differ), with box IoU >= 0.9 and the five landmarks in the same places.
    python_faces = FaceDetector("blaze", weights=weights, conf=0.7).detect(str(SAMPLE))
    assert len(python_faces) >= 10
    browser = on_load["faces"]
    for face in python_faces:
        best = max(browser, key=lambda b: iou(face.box, b["box"]))
        assert iou(face.box, best["box"]) >= 0.9, (face.to_dict(), best)
        size = face.box[2] - face.box[0]
        assert np.abs(np.array(best["landmarks"]) - face.landmarks).max() < 0.05 * size, (face.to_dict(), best)
        assert abs(best["score"] - face.score) < 0.1
    assert os.path.getsize(screenshot) > 10_000

    # The page's timer (the "Time 20 frames" button): more frames, the same faces, the median shown.
    timed = result["timed"]
    assert len(timed["times"]) == 3 and timed["frameMs"] > 0
    assert result["timedLast"]["faces"] == browser and result["timedLast"]["frames"] == 9
    assert " ms/frame (median of 9 frames;" in result["timedText"], result["timedText"]

    # The threshold slider re-runs only the post-processing: the same detections, cut at 0.9 (landmarks
    # included: the candidates that vote on them do not depend on the threshold).
    assert result["thresholded"]["faces"] == [f for f in browser if f["score"] > 0.9]
    if len(models) > 1:  # switching models runs the other network on the same photo
        switched = result["switched"]
        assert switched["model"] == models[1].id and switched["source"] == "sample.jpg"
        assert len(switched["faces"]) >= 5

    webcam = result["webcam"]
    assert webcam["error"] is None and webcam["frames"] >= 3
    assert webcam["last"]["source"] == "webcam" and webcam["last"]["width"] > 0
    assert " ms/frame (median of " in result["webcamText"] and "frames/s" in result["webcamText"], result

    second = result["second"]
    assert second["error"] is None and second["last"]["model"] == models[-1].id, second
    assert (second["runtime"]["requested"], second["runtime"]["backend"]) == ("webgpu", "wasm"), second
    assert "WebGPU" in second["runtime"]["note"] and len(second["last"]["faces"]) >= 5, second
    assert " · wasm ×" in result["secondText"], result["secondText"]


@pytest.mark.skipif(browser_skip_reason() is not None, reason=browser_skip_reason() or "")
def test_readme_screenshot_is_the_page_blazeface_web_opens(tmp_path, monkeypatch):
    """tools/draw_readme_images.py --web: the page `blazeface web` serves by default (the fastest model in the
    browser first), screenshot once it has detected the bundled photo."""
    import importlib.util

    import cv2

    monkeypatch.setenv("BLAZEFACE_CACHE", str(tmp_path / "cache"))
    spec = importlib.util.spec_from_file_location("draw_readme_images", REPO / "tools" / "draw_readme_images.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    latency = tool.screenshot_web_page(tmp_path / "web_demo.png")
    first = DEFAULT_MODELS[0]
    assert latency.startswith(f"{first} · wasm ×2 threads · ") and " faces" in latency, latency
    shot = cv2.imread(str(tmp_path / "web_demo.png"))
    assert shot is not None and shot.shape[1] == 880 and shot.shape[0] >= 640
