"""ONNX and ncnn exports of every registered model: parity with PyTorch, dynamic shapes, metadata, the
runners behind FaceDetector, the export command and the export cache.

Uses the shipped weights (so detections are real faces). Exports are made once per model (module
fixtures) at small sizes.
"""
import json
import sys

import cv2
import numpy as np
import pytest
import torch

from blazeface import BlazefaceError, FaceDetector, create_model, list_models
from blazeface.cli import main
from blazeface.geometry import box_iou
from blazeface.inference import letterbox_size, preprocess
from blazeface.models import shipped_weights
from conftest import SAMPLE

onnx = pytest.importorskip("onnx", reason="needs the 'onnx' extra")
ort = pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")
pytest.importorskip("onnxslim", reason="needs the 'onnx' extra")

SIZES = [(160, 128), (320, 240)]  # (width, height): multiples of 16, so every model takes them unpadded
MODELS = list_models()


def have_ncnn() -> bool:
    try:
        import ncnn  # noqa: F401
        import pnnx  # noqa: F401
    except ImportError:
        return False
    return True


requires_ncnn = pytest.mark.skipif(not have_ncnn(), reason="needs the 'ncnn' extra (ncnn, pnnx)")


def weights_for(name):
    return shipped_weights(name)


def sample_batch(config, size, n=1):
    """The bundled photo resized to ``size``, preprocessed as FaceDetector does; n copies (shifted)."""
    image = cv2.resize(cv2.imread(str(SAMPLE)), size, interpolation=cv2.INTER_AREA)
    box = letterbox_size(size[0], size[1], 0, config.size_multiple)
    one = preprocess(image, box, config.mean_bgr)
    return np.stack([np.roll(one, 7 * k, axis=2) for k in range(n)]).astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """model name -> {"model", "weights", "onnx", "ncnn"}: each model exported once."""
    from blazeface.export.onnx import export_onnx

    out, root = {}, tmp_path_factory.mktemp("exports")
    for name in MODELS:
        weights = weights_for(name)
        model = create_model(name, weights=weights).eval()
        entry = {"model": model, "weights": weights, "onnx": export_onnx(model, root / f"{name}.onnx")}
        if have_ncnn():
            from blazeface.export.ncnn import export_ncnn

            entry["ncnn"] = export_ncnn(model, root / f"{name}.param")[0]
        out[name] = entry
    return out


def torch_outputs(model, batch):
    with torch.no_grad():
        return [t.numpy() for t in model(torch.from_numpy(batch))]


@pytest.mark.parametrize("name", MODELS)
def test_onnx_matches_torch_at_two_sizes_and_batch(exported, name):
    from blazeface.runtime.onnx_runner import OnnxRunner

    entry = exported[name]
    runner = OnnxRunner(entry["onnx"], threads=1, config=entry["model"].config)
    for size, n in ((SIZES[0], 2), (SIZES[1], 1)):
        batch = sample_batch(entry["model"].config, size, n)
        ref = torch_outputs(entry["model"], batch)
        got = runner(batch)
        for r, g, what in zip(ref, got, ("loc", "conf", "landm")):
            assert g.shape == r.shape, (what, size)
            diff = float(np.abs(g - r).max())
            print(f"parity onnx {name} {size[0]}x{size[1]} {what} {diff:.2e}", file=sys.stderr)
            assert diff <= 1e-4, (what, size, diff)


@requires_ncnn
@pytest.mark.parametrize("name", MODELS)
def test_ncnn_matches_torch_at_two_sizes(exported, name):
    from blazeface.runtime.ncnn_runner import NcnnRunner

    entry = exported[name]
    runner = NcnnRunner(entry["ncnn"], threads=1, config=entry["model"].config, precise=True)
    for size in SIZES:
        batch = sample_batch(entry["model"].config, size, 1)
        ref = torch_outputs(entry["model"], batch)
        got = runner(batch)
        for r, g, what in zip(ref, got, ("loc", "conf", "landm")):
            assert g.shape == r.shape, (what, size)
            diff = float(np.abs(g - r).max())
            print(f"parity ncnn {name} {size[0]}x{size[1]} {what} {diff:.2e}", file=sys.stderr)
            assert diff <= 1e-3, (what, size, diff)


def assert_same_faces(ref, got, margin=0.005):
    """Every face clearly above the threshold in one set is in the other with box IoU >= 0.99 (faces whose
    score is within ``margin`` of conf 0.5 may fall on either side of it in float32)."""
    for a_set, b_set in ((ref, got), (got, ref)):
        for a in a_set:
            if a.score < 0.5 + margin:
                continue
            best = float(box_iou(a.box, b_set.boxes).max(initial=0.0))
            assert best >= 0.99, (a.box, a.score, best)


@pytest.mark.parametrize("backend", ["onnx", "ncnn"])
@pytest.mark.parametrize("name", MODELS)
def test_detections_agree_with_torch(exported, name, backend):
    entry = exported[name]
    if backend not in entry:
        pytest.skip("needs the 'ncnn' extra")
    image = cv2.imread(str(SAMPLE))
    ref = FaceDetector(name, weights=entry["weights"], long_side=320, conf=0.5).detect(image)
    got = FaceDetector(name, weights=entry[backend], backend=backend, long_side=320, conf=0.5).detect(image)
    assert len(ref) > 0
    assert_same_faces(ref, got)


@pytest.mark.parametrize("name", MODELS)
def test_onnx_file_is_self_contained_dynamic_named_with_metadata(exported, name):
    from blazeface.metadata import priors_from_metadata

    entry = exported[name]
    path = entry["onnx"]
    proto = onnx.load(str(path), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(name + ".")) == sorted(
        [f"{name}.onnx"] + ([f"{name}.param", f"{name}.bin", f"{name}.json"] if "ncnn" in entry else []))
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert [o.name for o in proto.graph.output] == ["loc", "conf", "landm"]
    meta = {p.key: p.value for p in proto.metadata_props}
    config = entry["model"].config
    assert meta["model"] == name
    assert priors_from_metadata(meta).steps == config.priors.steps
    assert json.loads(meta["min_sizes"]) == [list(m) for m in config.priors.min_sizes]
    assert json.loads(meta["mean_bgr"]) == list(config.mean_bgr)
    assert int(meta["size_multiple"]) == config.size_multiple
    if "ncnn" in entry:
        side = json.loads(entry["ncnn"].with_suffix(".json").read_text())
        assert side["model"] == name and side["weights_dtype"] == "fp32"
        assert "Input input 0 1 input" in entry["ncnn"].read_text()


def test_metadata_alone_decodes_the_onnx_output(exported):
    """A consumer without this package: priors rebuilt from the metadata decode the same boxes."""
    entry = exported["slim"]
    session = ort.InferenceSession(str(entry["onnx"]), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    w, h = SIZES[1]
    priors = []
    for step, sizes in zip(json.loads(meta["steps"]), json.loads(meta["min_sizes"])):
        for i in range(-(-h // step)):
            for j in range(-(-w // step)):
                for s in sizes:
                    priors.append(((j + 0.5) * step / w, (i + 0.5) * step / h, s / w, s / h))
    priors = np.array(priors, np.float32)
    from blazeface.priors import prior_boxes

    assert np.allclose(priors, prior_boxes(entry["model"].config.priors, h, w), atol=1e-6)
    loc, conf, _ = session.run(None, {"input": sample_batch(entry["model"].config, (w, h))})
    assert loc.shape[1] == len(priors) and np.allclose(conf.sum(-1), 1, atol=1e-5)


def test_wrong_model_for_file_is_a_one_line_error(exported, capsys):
    with pytest.raises(BlazefaceError, match="holds model 'slim'.*pass model='slim'"):
        FaceDetector("mnet", weights=exported["slim"]["onnx"], backend="onnx")
    with pytest.raises(BlazefaceError, match="is an onnx model: pass backend='onnx'"):
        FaceDetector("slim", weights=exported["slim"]["onnx"], backend="ncnn")
    # The CLI says the same in flags.
    assert main(["detect", "--model", "mnet", "--weights", str(exported["slim"]["onnx"]), str(SAMPLE)]) == 2
    assert "pass --model slim" in capsys.readouterr().err


def test_exported_files_say_which_model_and_backend(exported, capsys):
    """No model or backend to name: the suffix picks the backend, the file's metadata the model."""
    for backend in ("onnx", "ncnn"):
        if backend not in exported["slim"]:
            continue
        detector = FaceDetector(weights=exported["slim"][backend], long_side=320)
        assert detector.model_name == "slim" and detector.runner.name == backend
        assert len(detector.detect(SAMPLE)) >= 10
    assert main(["detect", "--weights", str(exported["rfb"]["onnx"]), "--json", "-", str(SAMPLE)]) == 0
    assert len(json.loads(capsys.readouterr().out)["faces"]) >= 10


def test_damaged_weights_are_refused_at_load(exported, tmp_path):
    """A model whose weights do not belong to its file (random bytes, NaN) is refused at load with one
    line naming the file, instead of reporting "0 faces"."""
    import shutil

    from onnx import numpy_helper

    model = onnx.load(str(exported["blaze"]["onnx"]))
    weight = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    values = numpy_helper.to_array(weight).copy()
    values.flat[::7] = np.nan
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    onnx.save(model, str(tmp_path / "nan.onnx"))
    with pytest.raises(BlazefaceError, match=r"nan\.onnx: the model computes non-finite"):
        FaceDetector("blaze", weights=tmp_path / "nan.onnx", backend="onnx")
    if "ncnn" not in exported["blaze"]:
        return
    param = exported["blaze"]["ncnn"]
    for suffix in (".param", ".json"):
        shutil.copy(param.with_suffix(suffix), tmp_path / f"random{suffix}")
    size = param.with_suffix(".bin").stat().st_size
    (tmp_path / "random.bin").write_bytes(np.random.default_rng(0).integers(0, 256, size, np.uint8).tobytes())
    with pytest.raises(BlazefaceError, match=r"random\.param: .*(non-finite|not probabilities)"):
        FaceDetector("blaze", weights=tmp_path / "random.param", backend="ncnn")
    assert len(FaceDetector("blaze", weights=param, backend="ncnn").detect(SAMPLE)) >= 0  # the real one loads


@requires_ncnn
def test_export_command_writes_param_and_bin(tmp_path):
    weights = weights_for("slim")
    args = ["export", "--model", "slim", "--format", "ncnn", "--out", str(tmp_path / "m.param")]
    assert main(args + ["--weights", str(weights)]) == 0
    assert (tmp_path / "m.param").is_file() and (tmp_path / "m.bin").is_file()
    assert main(args + ["--weights", str(weights), "--fp16", "--out", str(tmp_path / "h.param")]) == 0
    # fp16 weights take about half the space of fp32 ones.
    assert (tmp_path / "h.bin").stat().st_size < 0.6 * (tmp_path / "m.bin").stat().st_size
    runner_out = FaceDetector("slim", weights=tmp_path / "h.param", backend="ncnn", long_side=320).detect(SAMPLE)
    assert len(runner_out) > 0


def test_export_command_errors_are_one_line(tmp_path, capsys):
    assert main(["export", "--model", "slim", "--format", "onnx", "--out", str(tmp_path / "m.onnx"), "--fp16",
                 "--weights", "x.pth"]) == 2
    assert main(["export", "--model", "nope", "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("blazeface export: error:") for line in err)


def test_export_never_overwrites_what_it_did_not_write(tmp_path, capsys):
    """--out may replace an earlier export (a re-export), never a photo, another project's model, a JSON file
    that is not an export's metadata, nor the weights being exported; and a failed export leaves no file."""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(SAMPLE.read_bytes())
    other = tmp_path / "other.onnx"
    onnx.save_model(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])), str(other))
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    base = ["export", "--model", "slim", "--format", "onnx"]
    assert main(base + ["--out", str(photo)]) == 2  # named for another format
    assert main(base + ["--out", str(other)]) == 2  # an ONNX file blazeface did not write
    assert main(["export", "--model", "slim", "--format", "ncnn", "--out", str(tmp_path / "notes.param")]) == 2
    weights = tmp_path / "w.onnx"  # a checkpoint oddly named .onnx, exported onto itself
    weights.write_bytes(weights_for("slim").read_bytes())
    assert main(base + ["--weights", str(weights), "--out", str(weights)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [line.split(": ")[2] for line in err] == [str(photo), str(other), str(notes), str(weights)], err
    assert "ends in .onnx" in err[0] and "not an earlier blazeface export" in err[1] and "being exported" in err[3]
    assert photo.read_bytes() == SAMPLE.read_bytes() and notes.read_text() == '{"mine": 1}'
    assert onnx.load(str(other)).producer_name != "blazeface"
    ours = tmp_path / "ours.onnx"
    assert main(base + ["--out", str(ours)]) == 0
    first = ours.stat().st_mtime_ns
    assert main(base + ["--out", str(ours)]) == 0  # an earlier export is replaced
    assert ours.stat().st_mtime_ns >= first and onnx.load(str(ours)).producer_name == "blazeface"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.json", "other.onnx", "ours.onnx", "photo.jpg",
                                                         "w.onnx"]  # no partial files left behind


def test_missing_extra_names_it(monkeypatch):
    from blazeface.optional import require

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now fails as if not installed
    with pytest.raises(BlazefaceError, match=r"pip install 'blazeface\[onnx\]'"):
        require("onnxruntime", "onnx")
    monkeypatch.setitem(sys.modules, "ncnn", None)
    with pytest.raises(BlazefaceError, match=r"pip install 'blazeface\[ncnn\]'"):
        FaceDetector("slim", weights="m.param", backend="ncnn")


def test_shipped_model_is_exported_once_and_cached(tmp_path, monkeypatch):
    """Without --weights the shipped checkpoint is exported on first use, then taken from the cache."""
    import blazeface.export.onnx as onnx_export
    import blazeface.models.registry as registry
    from blazeface.backends import exported_model, make_runner

    checkpoint = tmp_path / "slim.pth"
    torch.save(create_model("slim", weights=None).state_dict(), checkpoint)
    monkeypatch.setenv("BLAZEFACE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(registry, "shipped_weights", lambda name: checkpoint)
    first = exported_model("onnx", "slim", None)
    assert first.parent == tmp_path / "cache" / "exports" and first.suffix == ".onnx"
    monkeypatch.setattr(onnx_export, "export_onnx", lambda *a, **k: pytest.fail("exported twice"))
    assert exported_model("onnx", "slim", None) == first
    runner = make_runner("onnx", "slim", None, threads=1)
    assert runner(np.zeros((1, 3, 64, 96), np.float32))[0].shape[-1] == 4
    monkeypatch.setattr(registry, "shipped_weights", lambda name: tmp_path / "missing.pth")
    with pytest.raises(BlazefaceError, match="missing.pth: weights file not found"):
        exported_model("onnx", "slim", tmp_path / "missing.pth")


def test_detect_command_with_onnx_backend(exported, capsys):
    path = exported["slim"]["onnx"]
    assert main(["detect", str(SAMPLE), "--model", "slim", "--backend", "onnx", "--weights", str(path),
                 "--long-side", "320", "--json", "-"]) == 0
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert record["width"] == 400 and len(record["faces"]) >= 10  # the shipped slim finds most of the 18 faces


def test_subnormal_weights_are_flushed_in_exports(tmp_path):
    """Subnormal weights (slow on x86) become zeros in the exported graph; outputs do not change."""
    from blazeface.denormals import TINY, flush_module
    from blazeface.export.onnx import to_onnx_model
    from onnx import numpy_helper

    model = create_model("slim", weights=None).eval()
    with torch.no_grad():
        model.loc[0][0].weight[:2] = 1e-40  # subnormal in float32
    proto = to_onnx_model(model)
    for init in proto.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32:
            assert not ((np.abs(array) < TINY) & (array != 0)).any(), init.name
    assert model.loc[0][0].weight[0, 0, 0, 0].item() != 0  # the caller's model is left alone
    assert flush_module(model) == 2 * 9 and flush_module(model) == 0
