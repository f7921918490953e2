import numpy as np
import pytest
import torch

from blazeface import BlazefaceError, create_model, list_models
from blazeface.models import shipped_weights
from blazeface.priors import num_priors
from conftest import DATA, REFERENCE, requires_shared


@pytest.mark.parametrize("name", list_models())
def test_forward_shapes_match_priors(name):
    model = create_model(name, weights=None).eval()
    cfg = model.config
    h, w = 96, 128
    with torch.no_grad():
        loc, conf, landm = model(torch.zeros(2, 3, h, w))
    p = num_priors(cfg.priors, h, w)
    assert loc.shape == (2, p, 4) and conf.shape == (2, p, 2) and landm.shape == (2, p, 10)
    assert torch.allclose(conf.sum(-1), torch.ones(2, p), atol=1e-5)  # eval mode: softmax


@pytest.mark.parametrize("name", list_models())
def test_train_mode_returns_logits(name):
    model = create_model(name, weights=None).train()
    _, conf, _ = model(torch.randn(2, 3, 64, 64))
    assert not torch.allclose(conf.sum(-1), torch.ones_like(conf[..., 0]))


@pytest.mark.parametrize("name", list_models())
def test_shift_face_logits_moves_each_prior_size_by_its_offset(name):
    model = create_model(name, weights=None).eval()
    sizes = model.config.priors.min_sizes
    offsets = [[0.25 * (level + 1) - 0.1 * k for k in range(len(s))] for level, s in enumerate(sizes)]
    x = torch.randn(1, 3, 96, 128)
    face_logit = lambda conf: torch.logit(conf[0, :, 1].double())  # noqa: E731
    with torch.no_grad():
        before = face_logit(model(x)[1])
        model.shift_face_logits(offsets)
        after = face_logit(model(x)[1])
    # Expected per prior: the prior generator's order (level, cell, size).
    expected = torch.cat([torch.tensor(level, dtype=torch.float64).repeat(h * w)
                          for level, (h, w) in zip(offsets, ((-(-96 // s), -(-128 // s))
                                                             for s in model.config.priors.steps))])
    assert torch.allclose(after - before, expected, atol=1e-4)
    with pytest.raises(ValueError, match="values per level"):
        model.shift_face_logits([[0.0]])


@pytest.mark.parametrize("name", list_models())
def test_shipped_weights_load_and_differ_from_random_init(name):
    shipped = create_model(name).state_dict()
    random = create_model(name, weights=None).state_dict()
    assert shipped.keys() == random.keys()
    assert any(not torch.equal(shipped[k], random[k]) for k in shipped if shipped[k].is_floating_point())


@pytest.mark.parametrize("name", list_models())
def test_shipped_weights_hold_cpu_tensors(name):
    """A file written on a GPU machine with CUDA tensors fails a plain torch.load on a machine without CUDA
    (weights trained on a lent GPU once did); the trainer writes weights.pth on the CPU."""
    state = torch.load(shipped_weights(name), weights_only=True)  # no map_location, on purpose
    assert all(v.device.type == "cpu" for v in state.values() if isinstance(v, torch.Tensor))


def test_missing_shipped_weights_is_a_clear_error(monkeypatch, tmp_path):
    import blazeface.models.registry as registry

    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(BlazefaceError, match="missing the shipped weights of 'slim'"):
        create_model("slim")


def test_unknown_model():
    with pytest.raises(BlazefaceError, match="unknown model 'nope'"):
        create_model("nope")


@requires_shared
@pytest.mark.parametrize("name,weights,ref", REFERENCE)
@pytest.mark.parametrize("size", ["320x240", "640x480"])
def test_reference_outputs(name, weights, ref, size):
    import cv2

    model = create_model(name, weights=DATA / "reference_weights" / weights).eval()
    image = cv2.imread(str(DATA / "reference_outputs" / f"input_{size}.png")).astype(np.float32)
    x = torch.from_numpy((image - np.array([104, 117, 123], np.float32)).transpose(2, 0, 1))[None]
    with torch.no_grad():
        outputs = model(x)
    expected = np.load(DATA / "reference_outputs" / f"{ref}.npz")
    for key, out in zip(("loc", "conf", "landm"), outputs):
        want = expected[f"{key}_{size}"]
        got = out[0].numpy()
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4, key


@requires_shared
def test_checkpoint_mismatch_is_one_line():
    with pytest.raises(BlazefaceError) as info:
        create_model("blaze", weights=DATA / "reference_weights" / "slim_Final.pth")
    msg = str(info.value)
    assert "slim_Final.pth" in msg and "'conv1.0.weight'" in msg and "\n" not in msg


def test_checkpoint_errors(tmp_path):
    model = create_model("slim", weights=None)
    state = model.state_dict()
    with pytest.raises(BlazefaceError, match="not found"):
        create_model("slim", weights=tmp_path / "missing.pth")
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(BlazefaceError, match=r"not a readable PyTorch weights file \(neither a torch.save archive"):
        create_model("slim", weights=bad)
    exported = tmp_path / "slim.onnx"
    exported.write_bytes(b"\x08\x07\x12\x09blazeface")  # how an ONNX file starts: not a checkpoint
    with pytest.raises(BlazefaceError, match=r"slim.onnx: an exported model, not PyTorch weights"):
        create_model("slim", weights=exported)
    extra = dict(state, **{"extra.weight": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(BlazefaceError, match="unexpected key 'extra.weight'"):
        create_model("slim", weights=tmp_path / "extra.pth")
    missing = {k: v for k, v in state.items() if k != "conv14.0.bias"}
    torch.save(missing, tmp_path / "missing_key.pth")
    with pytest.raises(BlazefaceError, match="missing key 'conv14.0.bias'"):
        create_model("slim", weights=tmp_path / "missing_key.pth")
    # DataParallel prefix and training-checkpoint wrapping both load.
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "dp.pth")
    create_model("slim", weights=tmp_path / "dp.pth")
    torch.save({"model": state, "position": {"step": 0}}, tmp_path / "ckpt.pth")
    create_model("slim", weights=tmp_path / "ckpt.pth")


class Payload:
    """An arbitrary pickled object: weights_only loading must refuse it."""


def test_weights_only_refuses_pickled_objects(tmp_path):
    torch.save({"model": Payload()}, tmp_path / "evil.pth")
    # One line naming the object, not torch's paragraph of advice on how to load it anyway.
    with pytest.raises(BlazefaceError, match=r"not a readable PyTorch weights file \(it pickles a Python object, "
                                             r"\S*Payload; only tensors") as caught:
        create_model("slim", weights=tmp_path / "evil.pth")
    assert "\n" not in str(caught.value)
