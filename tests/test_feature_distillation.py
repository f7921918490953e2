"""Feature imitation (training/feature_distillation.py): the taps, the level pairing, the loss and its adapters,
and training with a feature teacher (resume, two processes, one-line errors)."""
import json

import pytest
import torch

from blazeface import BlazefaceError
from blazeface.models import create_model, get_config, list_models, shipped_weights
from blazeface.training.checkpointing import load_checkpoint
from blazeface.training.feature_distillation import (FeatureImitationLoss, FeatureTeacher, HeadInputGraph,
                                                      HeadInputTap, build_feature_imitation, pair_levels)
from blazeface.training.trainer import Trainer
from test_distillation import assert_train_fails_in_one_line, losses_while_learning
from test_training import make_dataset, options, train_one_and_two_processes

SLIM = shipped_weights("slim")
MNET = shipped_weights("mnet")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("faces"))


@pytest.mark.parametrize("name", list_models())
def test_the_tap_catches_the_maps_the_heads_read(name):
    """Every model names its head inputs: one map per level, whose cells times the level's priors per cell
    are the priors of its outputs."""
    model = create_model(name, weights=None).eval()
    tap = HeadInputTap(model)
    with torch.no_grad():
        loc, _, _ = model(torch.zeros(1, 3, 128, 96))
    maps = tap.take()
    per_cell = get_config(name).priors.priors_per_cell
    assert len(maps) == len(per_cell)
    assert sum(m.shape[-2] * m.shape[-1] * a for m, a in zip(maps, per_cell)) == loc.shape[1]
    with pytest.raises(RuntimeError, match="no forward pass"):
        tap.take()  # taken once: no step's maps outlive it
    tap.remove()
    model(torch.zeros(1, 3, 64, 64))
    with pytest.raises(RuntimeError):
        tap.take()


def test_levels_pair_by_stride():
    assert pair_levels((8, 16), (8, 16, 32, 64)) == [(0, 0), (1, 1)]  # blaze from slim
    assert pair_levels((8, 16, 32, 64), (8, 16, 32)) == [(0, 0), (1, 1), (2, 2)]  # slim from mnet
    assert pair_levels((16, 32), (8, 16, 32)) == [(0, 1), (1, 2)]
    with pytest.raises(BlazefaceError, match="share no stride"):
        pair_levels((8, 16), (32, 64))


def maps_of(model, images):
    tap = HeadInputTap(model)
    model(images)
    maps = tap.take()
    tap.remove()
    return maps


def test_the_loss_is_zero_for_the_teacher_itself_and_positive_otherwise():
    """The adapters start as the least-squares map of the first batch: the identity when the student's maps are
    the teacher's (the loss then ~0), and a partial fit for another network (the loss well above 0)."""
    torch.manual_seed(0)
    images = torch.randn(4, 3, 64, 64) * 50
    teacher = create_model("slim", weights=SLIM).eval()
    with torch.no_grad():
        target = maps_of(teacher, images)
    channels = [m.shape[1] for m in target]
    pairs = pair_levels((8, 16, 32, 64), (8, 16, 32, 64))
    same = FeatureImitationLoss(pairs, channels, channels)
    assert same(target, target).item() == pytest.approx(0.0, abs=1e-2)
    assert bool(same.fitted)
    # The stride-8 level has 4x more cells than channels: its fit is near the identity (the ridge shrinks the
    # channels of little variance a little; the coarse levels have fewer cells than channels).
    adapter = same.adapters[0]
    assert (adapter.weight[..., 0, 0] - torch.eye(adapter.in_channels)).abs().mean() < 0.01
    other = create_model("slim", weights=None).eval()
    with torch.no_grad():
        student = maps_of(other, images)
    assert FeatureImitationLoss(pairs, channels, channels)(student, target).item() > 0.05


def test_the_loss_falls_when_a_student_learns_from_it():
    torch.manual_seed(0)
    images = torch.randn(4, 3, 64, 64) * 50
    with torch.no_grad():
        target = maps_of(create_model("mnet", weights=MNET).eval(), images)
    student = create_model("slim", weights=None).train()
    tap = HeadInputTap(student)
    pairs = pair_levels((8, 16, 32, 64), (8, 16, 32))
    loss_fn = FeatureImitationLoss(pairs, [64, 128, 256, 256], [m.shape[1] for m in target])
    loss_fn.fitted.fill_(True)  # from the random adapters: the fit would start the loss at its linear optimum

    def step_loss():
        student(images)
        return loss_fn(tap.take(), target)

    losses = losses_while_learning([*student.parameters(), *loss_fn.parameters()], step_loss, 15)
    assert losses[-1] < 0.7 * losses[0]


def test_maps_that_do_not_line_up_are_a_one_line_error():
    """Levels paired by their declared strides must have the same map sizes: a teacher declared at the wrong
    strides (mnet's levels as 16/32/64) is caught before training."""
    slim, mnet = create_model("slim", weights=None), create_model("mnet", weights=None)
    build_feature_imitation(slim, (8, 16, 32, 64), mnet, (8, 16, 32), 1.0, 100)  # they line up at any size
    with pytest.raises(BlazefaceError, match="do not line up"):
        build_feature_imitation(slim, (8, 16, 32, 64), mnet, (16, 32, 64), 1.0, 96)


def test_the_teacher_stays_in_eval_mode_without_gradients():
    teacher = FeatureTeacher(create_model("mnet", weights=MNET).train())
    maps = teacher(torch.zeros(2, 3, 64, 64))
    assert not teacher.model.training and all(not m.requires_grad for m in maps)


@pytest.mark.parametrize("name", list_models())
def test_the_feature_teacher_through_onnx_runtime_gives_pytorchs_maps(name):
    """The trainer runs the feature teacher through ONNX Runtime on a CPU (a third of PyTorch's time for
    mobilenet0.25_Final): its head inputs exported as a graph of their own. BatchNorm is folded there, so the
    maps agree to float rounding, at any batch and size; the PyTorch model is left as it was."""
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = create_model(name, weights=shipped_weights(name)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    teacher = FeatureTeacher(model)
    teacher.use_onnx_runtime(threads=1)
    for shape in ((2, 3, 64, 96), (3, 3, 128, 64)):
        images = torch.rand(*shape) * 255 - 110
        with torch.no_grad():
            reference = HeadInputGraph(model)(images)
        through_onnx = teacher(images.contiguous(memory_format=torch.channels_last))
        assert len(through_onnx) == len(reference) == len(teacher.tap.names)
        for level, (a, b) in enumerate(zip(reference, through_onnx)):
            assert a.shape == b.shape and b.dtype == torch.float32, level
            assert torch.allclose(a, b, atol=1e-3, rtol=1e-4), (level, (a - b).abs().max())
    assert not model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not any(m._forward_hooks for m in model.modules())  # no tap left behind


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_the_trainer_runs_the_feature_teacher_where_the_teachers_run(data, tmp_path, runtime):
    pytest.importorskip("onnxruntime")
    trainer = Trainer(feature_options(data, tmp_path / "a", max_steps=1, teacher_runtime=runtime))
    assert (trainer.feature_teacher._session is not None) == (runtime == "onnx")
    trainer.run()
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert records and all(r["kd_feature"] > 0 for r in records)


def feature_options(data, out, **kw):
    return options(data, out, feature_teacher=f"mnet:{MNET}", kd_feature_weight=2.0, **kw)


def test_training_with_a_feature_teacher_resumes_exactly(data, tmp_path):
    """The adapters are trained with the student and checkpointed with it: a run stopped and resumed ends
    where a straight one does, and logs the feature term."""
    straight = Trainer(feature_options(data, tmp_path / "a", max_steps=4))
    straight.run()
    Trainer(feature_options(data, tmp_path / "b", max_steps=2)).run()
    resumed = Trainer(feature_options(data, tmp_path / "b", max_steps=4, resume=tmp_path / "b" / "last.pth"))
    resumed.run()
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    for key, value in straight.feature_loss_fn.state_dict().items():
        assert torch.equal(value, resumed.feature_loss_fn.state_dict()[key]), key
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["kd_feature"] > 0 for r in records)
    assert "feature_adapters" in load_checkpoint(tmp_path / "a" / "last.pth")
    # The shipped weights are the student's alone: no adapter in them.
    weights = torch.load(tmp_path / "a" / "weights.pth", weights_only=True)
    assert not any(k.startswith("adapters") for k in weights)


def test_a_checkpoint_without_adapters_does_not_resume_with_a_feature_teacher(data, tmp_path):
    Trainer(options(data, tmp_path / "a", max_steps=1)).run()
    with pytest.raises(BlazefaceError, match="without a feature teacher"):
        Trainer(feature_options(data, tmp_path / "a", resume=tmp_path / "a" / "last.pth"))


@pytest.mark.parametrize("kw, message", [
    (dict(kd_feature_weight=2.0), "--kd-feature-weight: no teacher of this run reads it"),
    (dict(feature_teacher="yunet:missing.onnx"), "yunet"),
    (dict(feature_teacher=f"mnet:{MNET}", init_weights=MNET, model="mnet"), "is a teacher's file"),
])
def test_feature_teacher_mistakes_are_errors_before_training(data, tmp_path, kw, message):
    with pytest.raises(BlazefaceError, match=message):
        Trainer(options(data, tmp_path / "a", **kw))
    assert not (tmp_path / "a" / "last.pth").exists()


def test_cli_feature_teacher_that_does_not_load_is_one_line(data, tmp_path):
    assert_train_fails_in_one_line(data, tmp_path, "--feature-teacher", f"slim:{tmp_path / 'missing.pth'}",
                                   says="missing.pth")


def test_two_processes_equal_one_with_a_feature_teacher(data, tmp_path):
    """Both processes fit the same adapters (normal equations summed over them) and average their gradients."""
    a, b = train_one_and_two_processes(data, tmp_path, "--feature-teacher", f"mnet:{MNET}", "--kd-feature-weight",
                                       "2", steps=2)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=1e-4), key
