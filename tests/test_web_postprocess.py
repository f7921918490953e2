"""The browser demo's JavaScript port (web/src) against the Python implementation, run under Node.

Priors, post-processing (threshold -> top-k -> decode -> greedy NMS -> keep-top-k -> landmark vote), the letterbox sizes
and the mapping back to image pixels must give what src/blazeface computes: the same kept detections
(scores equal, in the same order) with coordinates within 1e-3. The ONNX metadata reader must read
what the export writes. Raw outputs are synthetic (every registered model, heavy overlaps, tied scores,
top-k limits) and, where ../shared is present, the original checkpoints' real outputs.
"""
import json
import subprocess

import numpy as np
import pytest

from blazeface import list_models
from blazeface.inference import Letterbox, letterbox_size, to_faces
from blazeface.models import get_config
from blazeface.postprocess import PostprocessConfig, nms, postprocess
from blazeface.priors import prior_boxes
from conftest import DATA, NODE, REPO, SAMPLE

RUNNER = REPO / "web" / "tests" / "run_postprocess.mjs"
pytestmark = pytest.mark.skipif(NODE is None, reason="needs Node.js (node) to run the page's JavaScript")

REFERENCE = {"blaze_640": "blaze", "blaze_320": "blaze", "slim": "slim", "rfb": "rfb", "mnet": "mnet"}
CONFIGS = [
    PostprocessConfig(),  # detect's defaults: conf 0.5, nms 0.4
    PostprocessConfig(conf=0.01, nms=0.4, top_k=5000, keep_top_k=750),  # evaluation settings
    PostprocessConfig(conf=0.2, nms=0.3, top_k=300, keep_top_k=40),  # both limits bite
    PostprocessConfig(conf=0.4, nms=0.6, top_k=5000, keep_top_k=750),  # 0.4 > 0.4 in float32: tied scores at it
    PostprocessConfig(conf=0.2, nms=0.4, landmark_vote=None),  # each detection's own landmarks
    PostprocessConfig(conf=0.05, nms=0.5, landmark_vote=0.3),  # votes across neighbouring faces too
]


def run_node(cases: list[dict], tmp_path) -> list:
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(cases))
    done = subprocess.run([NODE, str(RUNNER), str(path)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def save(tmp_path, name: str, array: np.ndarray) -> str:
    path = tmp_path / f"{name}.f32"
    np.ascontiguousarray(array, "<f4").tofile(path)
    return str(path)


def prior_spec(name: str) -> dict:
    priors = get_config(name).priors
    return {"minSizes": [list(m) for m in priors.min_sizes], "steps": list(priors.steps),
            "variances": list(priors.variances)}


def synthetic_outputs(n: int, seed: int):
    """Raw outputs that stress the port: hundreds of heavily overlapping candidates above any threshold,
    a third of the scores quantised to multiples of 0.05 (ties, and scores exactly at thresholds such
    as 0.4, which is above 0.4 in float64 but not in float32)."""
    rng = np.random.default_rng(seed)
    loc = rng.normal(0, 0.6, (n, 4)).astype(np.float32)
    scores = rng.uniform(0, 1, n) ** 6  # ~10% above 0.5, ~20% above 0.2, most above 0.01
    tied = rng.random(n) < 0.33
    scores[tied] = np.round(scores[tied] * 20) / 20
    conf = np.stack([1 - scores, scores], 1).astype(np.float32)
    landm = rng.normal(0, 1.5, (n, 10)).astype(np.float32)
    return loc, conf, landm


def compare(python_dets, js: dict, where: str):
    n = len(python_dets)
    assert len(js["scores"]) == n, f"{where}: {len(js['scores'])} detections in JS, {n} in Python"
    np.testing.assert_array_equal(np.float32(js["scores"]), python_dets.scores, err_msg=where)
    np.testing.assert_allclose(np.float32(js["boxes"]).reshape(-1, 4), python_dets.boxes, atol=1e-3, rtol=0,
                               err_msg=where)
    np.testing.assert_allclose(np.float32(js["landmarks"]).reshape(-1, 5, 2), python_dets.landmarks, atol=1e-3,
                               rtol=0, err_msg=where)


def postprocess_cases(tmp_path, tag, name, loc, conf, landm, width, height):
    """One case per config, with the Python answer alongside."""
    spec = prior_spec(name)
    priors = prior_boxes(get_config(name).priors, height, width)
    assert len(priors) == len(loc), f"{tag}: {len(loc)} outputs, {len(priors)} priors"
    files = {"loc": save(tmp_path, f"{tag}_loc", loc), "conf": save(tmp_path, f"{tag}_conf", conf),
             "landm": save(tmp_path, f"{tag}_landm", landm)}
    # A letterbox that undoes an upscale of an odd-sized image, to check the mapping back too.
    box = Letterbox((int(width / 1.37), int(height / 1.37)), (width, height), (width, height))
    out = []
    for k, cfg in enumerate(CONFIGS):
        dets = postprocess(loc, conf, landm, priors, (width, height), cfg, get_config(name).priors.variances)
        js_cfg = {"conf": cfg.conf, "nms": cfg.nms, "topK": cfg.top_k, "keepTopK": cfg.keep_top_k,
                  "landmarkVote": cfg.landmark_vote}
        if cfg == PostprocessConfig():
            js_cfg = {}  # the page's DEFAULT_CONFIG must be the library's defaults
        letterbox = {"imageSize": list(box.image_size), "resizedSize": list(box.resized_size),
                     "inputSize": list(box.input_size)}
        case = {"kind": "postprocess", **spec, **files, "width": width, "height": height, "config": js_cfg,
                "letterbox": letterbox}
        out.append((f"{tag} config {k} ({cfg})", case, dets, to_faces(dets, box)))
    return out


def check_postprocess(cases, tmp_path):
    results = run_node([c for _, c, _, _ in cases], tmp_path)
    total = 0
    for (where, _, dets, faces), js in zip(cases, results):
        compare(dets, js, where)
        assert len(js["faces"]) == len(faces)
        for face, js_face in zip(faces, js["faces"]):
            np.testing.assert_allclose(js_face["box"], face.box, atol=1e-3, rtol=0, err_msg=where)
            np.testing.assert_allclose(js_face["landmarks"], face.landmarks, atol=1e-3, rtol=0, err_msg=where)
            assert np.float32(js_face["score"]) == np.float32(face.score)
        total += len(dets)
    assert total > 0


@pytest.mark.parametrize("name", list_models())
def test_priors_match(name, tmp_path):
    sizes = [(160, 128), (333, 250), (640, 480)]
    spec = prior_spec(name)
    cases = [{"kind": "priors", **spec, "width": w, "height": h, "out": str(tmp_path / f"p{w}x{h}.f32")}
             for w, h in sizes]
    run_node(cases, tmp_path)
    for (w, h), case in zip(sizes, cases):
        js = np.fromfile(case["out"], "<f4").reshape(-1, 4)
        np.testing.assert_array_equal(js, prior_boxes(get_config(name).priors, h, w), err_msg=f"{name} {w}x{h}")


@pytest.mark.parametrize("name", list_models())
def test_postprocess_matches_python_synthetic(name, tmp_path):
    width, height = 320, 240
    n = len(prior_boxes(get_config(name).priors, height, width))
    cases = postprocess_cases(tmp_path, name, name, *synthetic_outputs(n, seed=len(name)), width, height)
    check_postprocess(cases, tmp_path)


@pytest.mark.skipif(not (DATA / "reference_outputs").is_dir(), reason="../shared/data is not present")
@pytest.mark.parametrize("ref", list(REFERENCE))
def test_postprocess_matches_python_reference_outputs(ref, tmp_path):
    """Real raw outputs of the original checkpoints on the CC0 photo, at both sizes."""
    data = np.load(DATA / "reference_outputs" / f"{ref}.npz")
    cases = []
    for width, height in [(320, 240), (640, 480)]:
        key = f"{width}x{height}"
        if f"loc_{key}" not in data:
            continue
        loc, conf, landm = (data[f"{part}_{key}"].reshape(-1, d).astype(np.float32)
                            for part, d in (("loc", 4), ("conf", 2), ("landm", 10)))
        cases += postprocess_cases(tmp_path, f"{ref}_{key}", REFERENCE[ref], loc, conf, landm, width, height)
    assert cases
    check_postprocess(cases, tmp_path)


def test_nms_exact_ties(tmp_path):
    """Boxes on an integer grid: many IoUs land exactly on the threshold (0.4 is 0.4000000059604645 in
    float32, and an IoU of 2/5 must not suppress at nms 0.4), and scores tie."""
    rng = np.random.default_rng(7)
    xy = rng.integers(0, 12, (400, 2))
    wh = rng.integers(1, 10, (400, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = (rng.integers(0, 8, 400) / 8).astype(np.float32)
    cases, expected = [], []
    for t in (0.25, 0.3, 0.4, 0.5, 0.6, 0.75):
        cases.append({"kind": "nms", "boxes": save(tmp_path, "grid_boxes", boxes),
                      "scores": save(tmp_path, "grid_scores", scores), "threshold": t})
        expected.append(nms(boxes, scores, t).tolist())
    for t, want, got in zip((0.25, 0.3, 0.4, 0.5, 0.6, 0.75), expected, run_node(cases, tmp_path)):
        assert got == want, f"nms {t}"


def test_letterbox_sizes_match(tmp_path):
    # Includes sizes where width * ratio lands on .5 (Python's round goes to even) and a zero long side.
    sizes = [(400, 210, 640, 16), (640, 480, 640, 1), (1001, 333, 640, 16), (333, 1001, 320, 32),
             (5, 3, 640, 16), (1280, 721, 640, 16), (300, 301, 0, 16), (4000, 3000, 960, 64),
             (800, 5, 640, 1), (1600, 3, 320, 16), (1000, 625, 400, 1), (1000, 375, 200, 1)]
    # More .5 cases, found by search: width * long / max(width, height) with a fraction of exactly .5.
    for w in range(3, 400, 7):
        for h in range(w + 1, w + 60):
            if (w * 64 / h) % 1 == 0.5:
                sizes.append((w, h, 64, 8))
    (js,) = run_node([{"kind": "letterbox", "sizes": sizes}], tmp_path)
    for (w, h, long_side, multiple), got in zip(sizes, js):
        box = letterbox_size(w, h, long_side, multiple)
        assert (tuple(got["imageSize"]), tuple(got["resizedSize"]), tuple(got["inputSize"])) == (
            box.image_size, box.resized_size, box.input_size), (w, h, long_side, multiple)


def test_onnx_metadata_reader(tmp_path):
    """The page reads the prior configuration from the ONNX metadata the export writes."""
    onnx = pytest.importorskip("onnx", reason="needs the 'onnx' extra")
    from onnx import TensorProto, helper

    from blazeface.metadata import model_metadata, priors_from_metadata

    cases, expected = [], []
    for name in list_models():
        config = get_config(name)
        meta = model_metadata(config, "ab" * 32) | {"note": "non-ASCII survives: é ✓"}
        # A big initializer ahead of the metadata: the reader must skip multi-byte lengths.
        weights = helper.make_tensor("w", TensorProto.FLOAT, [300_000], np.zeros(300_000, np.float32))
        graph = helper.make_graph([helper.make_node("Identity", ["input"], ["loc"])], name,
                                  [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                                  [helper.make_tensor_value_info("loc", TensorProto.FLOAT, [1, 3, 8, 8])],
                                  initializer=[weights])
        model = helper.make_model(graph, producer_name="blazeface")
        helper.set_model_props(model, meta)
        path = tmp_path / f"{name}.onnx"
        onnx.save(model, path)
        cases.append({"kind": "metadata", "onnx": str(path)})
        expected.append((config, meta))
    bare = tmp_path / "bare.onnx"
    onnx.save(helper.make_model(helper.make_graph([], "bare", [], [])), bare)
    cases.append({"kind": "metadata", "onnx": str(bare)})

    results = run_node(cases, tmp_path)
    for (config, meta), got in zip(expected, results[:-1]):
        assert got["meta"] == meta and got["error"] is None
        priors = priors_from_metadata(meta)
        c = got["config"]
        assert c["model"] == config.name
        assert [tuple(map(float, m)) for m in c["minSizes"]] == [tuple(map(float, m)) for m in priors.min_sizes]
        assert tuple(c["steps"]) == priors.steps and tuple(c["variances"]) == priors.variances
        assert tuple(c["meanBgr"]) == tuple(config.mean_bgr) and c["sizeMultiple"] == config.size_multiple
    assert results[-1]["meta"] == {} and "min_sizes" in results[-1]["error"]


def test_resize_matches_opencv(tmp_path):
    """The page resizes in JavaScript exactly as cv2.resize's INTER_LINEAR does (its fixed-point weights and
    rounding), on photos and on noise, up and down, by exactly 2 (where OpenCV switches to INTER_AREA), to sizes
    that are no multiple of its SIMD width, and to one row or column."""
    import cv2

    photo = cv2.imread(str(SAMPLE))  # 400x210
    noise = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    cases, expected = [], []
    plan = [(photo, (640, 336)), (photo, (161, 85)), (photo, (200, 105)), (photo, (1000, 7)), (noise, (120, 80)),
            (noise, (20, 11)), (noise, (53, 37)), (noise, (1, 90)), (noise, (7, 5))]
    for k, (image, size) in enumerate(plan):
        rgba = cv2.cvtColor(image, cv2.COLOR_BGR2RGBA)
        (tmp_path / f"in{k}.raw").write_bytes(rgba.tobytes())
        cases.append({"kind": "resize", "rgba": str(tmp_path / f"in{k}.raw"), "width": image.shape[1],
                      "height": image.shape[0], "dstWidth": size[0], "dstHeight": size[1],
                      "out": str(tmp_path / f"out{k}.raw")})
        expected.append(cv2.cvtColor(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGBA))
    run_node(cases, tmp_path)
    for k, want in enumerate(expected):
        got = np.frombuffer((tmp_path / f"out{k}.raw").read_bytes(), np.uint8).reshape(want.shape)
        assert np.array_equal(got, want), (k, int(np.abs(got.astype(int) - want.astype(int)).max()))


def test_network_input_matches_python(tmp_path):
    """The page's network input (resize, BGR minus the mean, CHW, zero padding; in one pass into a reused
    buffer) is Python's preprocess() exactly, padding 0."""
    import cv2

    from blazeface.letterbox import preprocess

    photo = cv2.imread(str(SAMPLE))  # 400x210
    noise = np.random.default_rng(1).integers(0, 256, (45, 31, 3), dtype=np.uint8)
    mean = [104.0, 117.0, 123.0]
    # (image, long side, size multiple, reuse): up, down, unchanged size with padding only, odd multiples.
    plan = [(photo, 640, 32, False), (photo, 640, 32, True), (photo, 320, 1, True), (photo, 400, 32, True),
            (noise, 97, 8, True), (noise, 20, 1, False)]
    cases, expected = [], []
    for k, (image, long_side, multiple, reuse) in enumerate(plan):
        (tmp_path / f"in{k}.raw").write_bytes(cv2.cvtColor(image, cv2.COLOR_BGR2RGBA).tobytes())
        cases.append({"kind": "input", "rgba": str(tmp_path / f"in{k}.raw"), "width": image.shape[1],
                      "height": image.shape[0], "longSide": long_side, "multiple": multiple, "meanBgr": mean,
                      "reuse": reuse, "out": str(tmp_path / f"out{k}.f32")})
        box = letterbox_size(image.shape[1], image.shape[0], long_side, multiple)
        expected.append((box, preprocess(image, box, mean)))
    results = run_node(cases, tmp_path)
    for k, ((box, want), got_meta) in enumerate(zip(expected, results)):
        assert tuple(got_meta["inputSize"]) == box.input_size and got_meta["reused"] == plan[k][3]
        got = np.fromfile(tmp_path / f"out{k}.f32", "<f4").reshape(want.shape)
        assert np.array_equal(got, want), (k, float(np.abs(got - want).max()))
        rw, rh = box.resized_size
        assert not got[:, rh:, :].any() and not got[:, :, rw:].any(), k  # stale values cleared from the padding
