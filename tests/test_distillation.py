"""Distillation: the dense loss, detection-teacher targets, fusion, teacher specs, and training with teachers."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from blazeface import BlazefaceError
from blazeface.config import TrainConfig
from blazeface.data.transforms import make_target
from blazeface.models import create_model, shipped_weights
from blazeface.box_coding import decode_boxes, decode_landmarks
from blazeface.matching import priors_to_corners
from blazeface.priors import prior_boxes
from blazeface.training.loss import DenseDistillationLoss
from blazeface.matching import PriorMatcher
from blazeface.training.teachers import (DenseEnsembleRunner, TeacherFaces, TeacherTargets, fuse_detections,
                                         load_teacher, merge_teacher_faces, parse_teacher_spec)
from blazeface.training.checkpointing import load_checkpoint
from blazeface.training.trainer import Trainer
from conftest import REPO, requires_shared, DATA
from test_training import make_dataset, options, train_one_and_two_processes

SLIM = shipped_weights("slim")
MNET = shipped_weights("mnet")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("faces"))


def outputs(model, images):
    """Eval-mode outputs with the class part as logits (the log of the eval-mode softmax), as the trainer
    gets them from a dense teacher."""
    with torch.no_grad():
        loc, conf, landm = model(images)
    return loc, torch.log(conf.clamp_min(1e-12)), landm


def test_dense_teacher_gives_logits_whose_softmax_is_the_models_probabilities():
    """In eval mode a detector returns softmax probabilities; the distillation loss takes logits."""
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    teacher = load_teacher(f"slim:{SLIM}")
    _, logits, _ = teacher.dense(images)
    with torch.no_grad():
        _, probabilities, _ = teacher.model()(images)
    assert torch.allclose(logits.softmax(-1), probabilities, atol=1e-6)
    assert probabilities[..., 1].mean() < 0.1  # mostly background: a second softmax would push this to ~0.3


def test_a_teacher_through_onnx_runtime_gives_pytorchs_outputs():
    """The trainer runs per-prior teachers through ONNX Runtime on a CPU (half PyTorch's time there): the
    export folds BatchNorm, so the outputs agree to float rounding, not bit for bit. The class part is compared
    as the distillation uses it, through its softmax: a confident background prior's logit pair may differ by
    2e-3 (2e-4 relative) while its probabilities differ by 6e-8."""
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    images = torch.rand(3, 3, 96, 128) * 255 - 110
    teacher = load_teacher(f"rfb:{shipped_weights('rfb')}")
    reference = teacher.dense(images)
    teacher.use_onnx_runtime(threads=1)
    through_onnx = teacher.dense(images.contiguous(memory_format=torch.channels_last))
    tolerances = {"loc": {"atol": 2e-4, "rtol": 1e-4}, "class probabilities": {"atol": 1e-5, "rtol": 0},
                  "landm": {"atol": 2e-4, "rtol": 1e-4}}

    def as_used(loc, logits, landm):
        return loc, logits.softmax(-1), landm

    for (name, tolerance), a, b in zip(tolerances.items(), as_used(*reference), as_used(*through_onnx)):
        assert a.shape == b.shape and b.dtype == torch.float32, name
        assert torch.allclose(a, b, **tolerance), (name, (a - b).abs().max())


def test_the_teacher_runtime_is_chosen_once_and_checked(data, tmp_path):
    from blazeface.training.trainer import teacher_runtime

    pytest.importorskip("onnxruntime")
    assert teacher_runtime("auto", "cpu") == "onnx" and teacher_runtime("auto", "cuda:0") == "torch"
    with pytest.raises(BlazefaceError, match="CPU only"):
        teacher_runtime("onnx", "cuda")
    with pytest.raises(BlazefaceError, match="expected one of"):
        teacher_runtime("tensorrt", "cpu")
    forced = Trainer(options(data, tmp_path / "a", model="slim", max_steps=1, teachers=[f"rfb:{shipped_weights('rfb')}"],
                             teacher_runtime="torch"))
    assert all(t._onnx is None for t in forced.dense_teachers)
    forced.run()
    assert '"kd_cls"' in (tmp_path / "a" / "metrics.jsonl").read_text()


def test_a_dense_ensemble_detects_as_its_teachers_average():
    """benchmarks/teacher_ap.py measures what the student is distilled towards through DenseEnsembleRunner:
    one teacher detects as its model does, the same teacher twice as once, and two different teachers give
    each prior the mean of their regressions and the normalised geometric mean of their probabilities."""
    from blazeface import FaceDetector
    from conftest import SAMPLE

    slim, lite = load_teacher(f"slim:{SLIM}"), load_teacher(f"slimlite:{shipped_weights('slimlite')}")
    alone = FaceDetector("slim", backend="torch").detect(SAMPLE)
    one = FaceDetector("slim", runner=DenseEnsembleRunner([slim], "slim")).detect(SAMPLE)
    twice = FaceDetector("slim", runner=DenseEnsembleRunner([slim, slim], "slim")).detect(SAMPLE)
    assert len(alone) >= 5 and len(one) == len(alone) == len(twice)
    assert np.allclose(one.boxes, alone.boxes, atol=1e-3) and np.allclose(twice.boxes, one.boxes, atol=1e-5)
    batch = np.random.default_rng(0).normal(size=(1, 3, 64, 96)).astype(np.float32)
    (loc_a, conf_a, landm_a), (loc_b, conf_b, landm_b) = (DenseEnsembleRunner([t], "slim")(batch) for t in (slim, lite))
    loc, conf, landm = DenseEnsembleRunner([slim, lite], "slim")(batch)
    assert np.allclose(loc, (loc_a + loc_b) / 2, atol=1e-5) and np.allclose(landm, (landm_a + landm_b) / 2, atol=1e-5)
    geometric = np.sqrt(conf_a * conf_b)
    assert np.allclose(conf, geometric / geometric.sum(-1, keepdims=True), atol=1e-5)


def mapped_runner(teacher, mapping):
    """A detector runner giving ``teacher``'s outputs carried by ``mapping`` onto its student's priors."""
    def run(batch):
        outputs = teacher.dense(torch.from_numpy(batch))
        loc, logits, landm = mapping(outputs, batch.shape[2], batch.shape[3])
        return loc.numpy(), logits.softmax(-1).numpy(), landm.numpy()
    return run


def test_prior_mapping_onto_the_same_priors_keeps_the_teachers_faces():
    """Carried onto its own priors, a teacher still detects what it detects: every prior takes the most
    probable candidate its matching rule gives it, so the best face of each cluster survives with its box,
    landmarks and score."""
    from blazeface import FaceDetector
    from blazeface.models import get_config
    from blazeface.training.teachers import PriorMapping
    from conftest import SAMPLE

    slim = load_teacher(f"slim:{SLIM}")
    priors = get_config("slim").priors
    # Each prior's own landmarks: the vote would average the carried copies of a face, not its neighbours.
    own = FaceDetector("slim", backend="torch", landmark_vote=None).detect(SAMPLE)
    mapped = FaceDetector("slim", runner=mapped_runner(slim, PriorMapping(priors, priors)),
                          landmark_vote=None).detect(SAMPLE)
    assert len(own) >= 5 and len(mapped) == len(own)
    assert np.allclose(mapped.scores, own.scores, atol=1e-4)
    assert np.abs(mapped.boxes - own.boxes).max() < 0.5 and np.abs(mapped.landmarks - own.landmarks).max() < 0.5


def test_prior_mapping_carries_a_teacher_onto_other_priors():
    """slim's outputs carried onto blaze's priors (strides 8 and 16, other sizes) find slim's faces there, and
    a prior no candidate reaches is plain background."""
    from blazeface import FaceDetector
    from blazeface.geometry import box_iou
    from blazeface.models import get_config
    from blazeface.training.teachers import PriorMapping
    from conftest import SAMPLE

    slim = load_teacher(f"slim:{SLIM}")
    mapping = PriorMapping(get_config("slim").priors, get_config("blaze").priors)
    own = FaceDetector("slim", backend="torch").detect(SAMPLE)
    on_blaze = FaceDetector("blaze", runner=mapped_runner(slim, mapping)).detect(SAMPLE)
    iou = box_iou(own.boxes, on_blaze.boxes)
    assert len(own) >= 5 and (iou.max(1) > 0.9).mean() >= 0.8, iou.max(1)
    # One candidate face on a background the teacher is sure of: it goes to every blaze prior it overlaps
    # at IoU >= 0.35 (and to its best one), with its probability, box and landmarks; the rest is background.
    slim_priors = torch.tensor(prior_boxes(get_config("slim").priors, 64, 96))
    blaze_priors = torch.tensor(prior_boxes(get_config("blaze").priors, 64, 96))
    logits = torch.log(torch.tensor([0.999, 0.001])).repeat(1, len(slim_priors), 1)
    k = int(torch.argmin((slim_priors - torch.tensor([40 / 96, 28 / 64, 16 / 96, 16 / 64])).abs().sum(1)))
    logits[0, k] = torch.log(torch.tensor([0.4, 0.6]))
    loc, landm = torch.zeros(1, len(slim_priors), 4), torch.zeros(1, len(slim_priors), 10)
    loc[0, k] = torch.tensor([0.5, -0.5, 0.3, 0.1])
    out_loc, out_logits, out_landm = mapping((loc, logits, landm), 64, 96)
    assert out_logits.shape == (1, len(blaze_priors), 2) and out_loc.shape == (1, len(blaze_priors), 4)
    face = out_logits.softmax(-1)[0, :, 1]
    box = decode_boxes(loc[0, k:k + 1], slim_priors[k:k + 1])
    overlap = box_iou(box, priors_to_corners(blaze_priors))[0]
    chosen = (overlap >= 0.35) | (torch.arange(len(blaze_priors)) == overlap.argmax())
    assert torch.allclose(face[chosen], torch.tensor(0.6)) and torch.allclose(face[~chosen], torch.tensor(1e-4))
    assert torch.allclose(decode_boxes(out_loc[0, chosen], blaze_priors[chosen]), box.expand(int(chosen.sum()), 4),
                          atol=1e-5)
    points = decode_landmarks(landm[0, k:k + 1], slim_priors[k:k + 1])
    assert torch.allclose(decode_landmarks(out_landm[0, chosen], blaze_priors[chosen]),
                          points.expand(int(chosen.sum()), 10), atol=1e-5)
    # The background priors ask for their own box (zero offsets), not for the far candidate's: with the
    # floor probability as weight, tens of thousands of huge offsets were half of a carried teacher's box term.
    assert (out_loc[0, ~chosen] == 0).all() and (out_landm[0, ~chosen] == 0).all()


def test_dense_loss_is_zero_for_the_teacher_itself_and_positive_otherwise():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    teacher = create_model("slim").eval()
    other = create_model("slim", weights=None).eval()
    loss = DenseDistillationLoss(TrainConfig(kd_temperature=2.0))
    same = loss(outputs(teacher, images), outputs(teacher, images), torch.tensor(4.0))
    assert all(v.item() == pytest.approx(0.0, abs=1e-6) for v in same.values())
    differ = loss(outputs(other, images), outputs(teacher, images), torch.tensor(4.0))
    assert all(v.item() > 0 for v in differ.values())


def losses_while_learning(parameters, step_loss, steps: int, lr: float = 3e-3) -> list[float]:
    """``step_loss()`` at each of ``steps`` AdamW steps on ``parameters``: a tiny run of a distillation loss."""
    optimizer = torch.optim.AdamW(parameters, lr=lr)
    losses = []
    for _ in range(steps):
        loss = step_loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_dense_loss_falls_when_a_student_learns_from_it():
    torch.manual_seed(0)
    images = torch.randn(4, 3, 64, 64)
    teacher = outputs(create_model("slim").eval(), images)
    student = create_model("slim", weights=None).train()
    loss_fn = DenseDistillationLoss(TrainConfig())
    totals = losses_while_learning(list(student.parameters()),
                                   lambda: sum(loss_fn(student(images), teacher, torch.tensor(8.0)).values()), 12)
    assert totals[-1] < 0.5 * totals[0]


def test_merge_teacher_faces_on_a_hand_made_crop():
    """One labelled face without landmarks, covered by a teacher face; one confident face nobody labelled;
    one doubtful face nobody labelled; one teacher detection under the minimum score."""
    target = make_target([[10, 10, 50, 50]], ignore_background=True)
    points = np.tile(np.array([[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]], np.float32),
                     (4, 1, 1))
    boxes = np.array([[11, 10, 51, 50], [100, 100, 140, 140], [200, 20, 230, 50], [60, 200, 90, 230]], np.float32)
    landmarks = boxes[:, None, :2] + points * (boxes[:, None, 2:] - boxes[:, None, :2])
    faces = TeacherFaces(boxes, landmarks, np.array([0.9, 0.8, 0.6, 0.3], np.float32))
    merged = merge_teacher_faces(target, faces, TeacherTargets(min_score=0.5, positive_score=0.7,
                                                               landmark_weight=0.5))
    # The label keeps its box and takes the teacher's landmarks at score x weight.
    np.testing.assert_array_equal(merged["boxes"][0], [10, 10, 50, 50])
    assert merged["has_landmarks"].tolist() == [True, True]
    np.testing.assert_allclose(merged["landmarks"][0], landmarks[0])
    np.testing.assert_allclose(merged["landmark_weight"], [0.45, 0.4])
    # The confident unlabelled face is a positive weighted by its score; the doubtful one is ignored.
    np.testing.assert_array_equal(merged["boxes"][1], boxes[1])
    np.testing.assert_allclose(merged["face_weight"], [1.0, 0.8])
    np.testing.assert_array_equal(merged["ignore_boxes"], boxes[2:3])
    assert merged["ignore_background"] is False  # the teacher vouches for the rest of the photo
    # The input target is untouched.
    assert target["boxes"].shape == (1, 4) and not target["has_landmarks"][0]


def test_matcher_applies_face_weights_and_ignore_regions():
    from blazeface.models import get_config

    priors = torch.from_numpy(prior_boxes(get_config("slim").priors, 128, 128).copy())
    matcher = PriorMatcher(priors)
    boxes = np.array([[0.1, 0.1, 0.4, 0.4], [0.6, 0.6, 0.9, 0.9]], np.float32)
    plain = matcher(boxes, np.zeros((2, 10)), [False, False])
    assert set(plain["pos_weight"][plain["labels"] == 1].tolist()) == {1.0}
    weighted = matcher(boxes, np.zeros((2, 10)), [False, False], face_weight=[1.0, 0.25],
                       ignore_boxes=np.array([[0.0, 0.6, 0.3, 0.9]]))
    assert set(weighted["pos_weight"][weighted["labels"] == 1].tolist()) == {1.0, 0.25}
    centre_inside = ((priors[:, 0] < 0.3) & (priors[:, 1] >= 0.6) & (priors[:, 1] < 0.9))
    assert (weighted["labels"][centre_inside] == -1).all() and (plain["labels"][centre_inside] == 0).all()
    assert torch.equal(weighted["labels"] == 1, plain["labels"] == 1)


def test_fusion_averages_agreeing_teachers_and_halves_a_lone_face():
    a = TeacherFaces(np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32), np.zeros((2, 5, 2), np.float32),
                     np.array([0.9, 0.8], np.float32))
    b = TeacherFaces(np.array([[1, 1, 11, 11]], np.float32), np.ones((1, 5, 2), np.float32),
                     np.array([0.3], np.float32))
    fused = fuse_detections([a, b])
    assert len(fused) == 2
    order = np.argsort(fused.boxes[:, 0])
    np.testing.assert_allclose(fused.boxes[order[0]], [0.25, 0.25, 10.25, 10.25], atol=1e-5)
    np.testing.assert_allclose(fused.scores[order], [0.6, 0.4], atol=1e-6)
    np.testing.assert_allclose(fused.landmarks[order[0]], 0.25, atol=1e-6)
    assert fuse_detections([a]) is a


def test_teacher_specs_fail_in_one_line(tmp_path):
    with pytest.raises(BlazefaceError, match="expected KIND:PATH"):
        parse_teacher_spec("yunet")
    with pytest.raises(BlazefaceError, match="unknown teacher 'resnet'"):
        parse_teacher_spec(f"resnet:{SLIM}")
    with pytest.raises(BlazefaceError, match="file not found"):
        parse_teacher_spec(f"yunet:{tmp_path / 'missing.onnx'}")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(os.urandom(256))
    with pytest.raises(BlazefaceError, match="junk.onnx: OpenCV cannot load"):
        load_teacher(f"yunet:{junk}")
    # The shipped weights name their model, so the mismatch is stated as such.
    with pytest.raises(BlazefaceError, match="slim.pth holds model 'slim', not 'rfb'"):
        load_teacher(f"rfb:{SLIM}")


def assert_train_fails_in_one_line(data, tmp_path, *flags: str, says: str) -> None:
    """``blazeface train --model slim`` with ``flags`` exits non-zero with one line of stderr holding ``says``,
    before any training step (no checkpoint)."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    run = subprocess.run([sys.executable, "-m", "blazeface", "train", "--model", "slim", "--data", str(data), *flags,
                          "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert run.stderr.strip().count("\n") == 0 and says in run.stderr, run.stderr
    assert not (tmp_path / "out" / "last.pth").exists()


def test_cli_bad_teacher_is_one_line_before_training(data, tmp_path):
    assert_train_fails_in_one_line(data, tmp_path, "--teacher", f"yunet:{tmp_path / 'nope.onnx'}",
                                   says="nope.onnx: file not found")


@pytest.mark.parametrize("given, teachers, flag", [
    ({"kd_cls_weight": 2.0}, [], "--kd-cls-weight"),
    ({"teacher_ignore_score": 0.5}, [f"mnet:{MNET}"], "--teacher-ignore-score"),  # a detection teacher only
    ({"teacher_positive_score": 0.6}, [f"slim:{SLIM}"], "--teacher-positive-score"),  # a per-prior teacher only
])
def test_a_teacher_setting_no_teacher_reads_is_an_error(data, tmp_path, given, teachers, flag):
    with pytest.raises(BlazefaceError, match=f"{flag}: no teacher of this run reads it"):
        Trainer(options(data, tmp_path / "a", teachers=teachers, **given))


def test_cli_teacher_setting_without_a_teacher_is_one_line(data, tmp_path):
    assert_train_fails_in_one_line(data, tmp_path, "--kd-loc-weight", "1",
                                   says="--kd-loc-weight: no teacher of this run reads it")


def test_student_never_starts_from_a_teacher(data, tmp_path):
    with pytest.raises(BlazefaceError, match="is a teacher's file"):
        Trainer(options(data, tmp_path / "a", init_weights=SLIM, teachers=[f"slim:{SLIM}"]))


@pytest.mark.parametrize("teacher", [f"slim:{SLIM}", f"mnet:{MNET}"], ids=["dense", "detections"])
def test_resume_with_a_teacher_continues_exactly(data, tmp_path, teacher):
    kw = dict(teachers=[teacher], model="slim")
    straight = Trainer(options(data, tmp_path / "a", max_steps=4, **kw))
    straight.run()
    Trainer(options(data, tmp_path / "b", max_steps=2, **kw)).run()
    resumed = Trainer(options(data, tmp_path / "b", max_steps=4, resume=tmp_path / "b" / "last.pth", **kw))
    resumed.run()
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    logged = (tmp_path / "a" / "metrics.jsonl").read_text()
    if teacher.startswith("slim"):
        assert '"kd_cls"' in logged and '"kd_landm"' in logged


def test_a_teacher_with_the_students_priors_is_dense(data, tmp_path):
    """blazelite shares blaze's priors and head layout, rfb and slimlite slim's: per-prior distillation applies across
    them; mnet's priors differ from slim's, so it teaches through its detections."""
    from blazeface.training.teachers import is_dense, teaches_per_prior

    blaze_spec = f"blaze:{shipped_weights('blaze')}"
    blaze, rfb = load_teacher(blaze_spec), load_teacher(f"rfb:{shipped_weights('rfb')}")
    assert is_dense(blaze, "blazelite") and is_dense(blaze, "blaze") and is_dense(rfb, "slim")
    assert is_dense(rfb, "slimlite")
    assert not is_dense(load_teacher(f"mnet:{MNET}"), "slim") and not is_dense(blaze, "slim")
    assert teaches_per_prior(rfb, "slim") and not teaches_per_prior(blaze, "slim")
    assert teaches_per_prior(blaze, "slim", map_priors=True)
    not_a_teacher = TeacherFaces.empty()  # only model teachers and YuNet ever teach per prior
    assert not teaches_per_prior(not_a_teacher, "slim", map_priors=True)
    trainer = Trainer(options(data, tmp_path / "a", model="blazelite", max_steps=2, teachers=[blaze_spec]))
    assert len(trainer.dense_teachers) == 1
    trainer.run()
    assert '"kd_cls"' in (tmp_path / "a" / "metrics.jsonl").read_text()


def test_map_teacher_priors_makes_a_teacher_of_other_priors_dense(data, tmp_path):
    """With --map-teacher-priors, slim's weights teach blaze per prior (carried onto blaze's priors) instead
    of through detections in the data workers; the step logs the dense terms, and a resumed run continues
    exactly (the mapping holds no state)."""
    spec = f"slim:{SLIM}"
    plain = Trainer(options(data, tmp_path / "plain", model="blaze", max_steps=1, teachers=[spec]))
    assert len(plain.dense_teachers) == 0  # a detection teacher by default
    straight = Trainer(options(data, tmp_path / "a", model="blaze", max_steps=4, teachers=[spec],
                               map_teacher_priors=True))
    assert len(straight.dense_teachers) == 1
    straight.run()
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["kd_cls"] > 0 and r["kd_loc"] >= 0 for r in records if "step" in r)
    Trainer(options(data, tmp_path / "b", model="blaze", max_steps=2, teachers=[spec], map_teacher_priors=True)).run()
    Trainer(options(data, tmp_path / "b", model="blaze", max_steps=4, teachers=[spec], map_teacher_priors=True,
                    resume=tmp_path / "b" / "last.pth")).run()
    a, b = (load_checkpoint(tmp_path / d / "last.pth")["model"] for d in ("a", "b"))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_two_processes_equal_one_with_a_dense_teacher(data, tmp_path):
    a, b = train_one_and_two_processes(data, tmp_path, "--teacher", f"slim:{SLIM}", steps=2)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=1e-4), key


@requires_shared
def test_yunet_and_centerface_teachers_find_the_faces_of_a_crowd_photo():
    import cv2

    image = cv2.imread(str(DATA / "facemask" / "images" / "maksssksksss209.jpg"))
    yunet = load_teacher(f"yunet:{DATA / 'teachers' / 'yunet_n_dynamic.onnx'}").detect(image)
    centerface = load_teacher(f"centerface:{DATA / 'teachers' / 'centerface.onnx'}").detect(image)
    confident = [f for f in (yunet, centerface)]
    assert all((f.scores >= 0.5).sum() >= 10 for f in confident)
    # The two agree on most confident faces, landmarks included (same order: image-left eye first).
    from blazeface.geometry import box_iou

    a = yunet.scores >= 0.5
    b = centerface.scores >= 0.5
    overlap = box_iou(yunet.boxes[a], centerface.boxes[b])
    pairs = np.argwhere(overlap >= 0.5)
    assert len(pairs) >= 10
    for i, j in pairs:
        size = yunet.boxes[a][i, 2] - yunet.boxes[a][i, 0]
        assert np.abs(yunet.landmarks[a][i] - centerface.landmarks[b][j]).max() < 0.25 * size
        assert yunet.landmarks[a][i][0, 0] < yunet.landmarks[a][i][1, 0]


YUNET = DATA / "teachers" / "yunet_n_dynamic.onnx"


@requires_shared
@pytest.mark.parametrize("runtime", ["opencv", "onnxruntime"])
def test_yunet_candidates_decode_as_opencvs_face_detector(runtime):
    """YuNet's raw grid outputs on a student's (mean-subtracted, padded) batch, decoded into candidate faces,
    give FaceDetectorYN's own detections after the same threshold and NMS, through OpenCV's DNN and through
    ONNX Runtime alike."""
    import cv2

    from blazeface.config import MEAN_BGR
    from blazeface.geometry import box_iou
    from blazeface.training.teachers import teaches_per_prior

    from blazeface.training.teachers import YuNetTeacher

    # A size of multiples of 32, so that neither side pads (FaceDetectorYN pads with black, the batch with the mean).
    image = cv2.resize(cv2.imread(str(DATA / "facemask" / "images" / "maksssksksss209.jpg")), (416, 256))
    h, w = image.shape[:2]
    teacher = load_teacher(f"yunet:{YUNET}")
    assert teaches_per_prior(teacher, "blaze", map_priors=True) and not teaches_per_prior(teacher, "blaze")
    if runtime == "onnxruntime":
        pytest.importorskip("onnxruntime")
        teacher.use_onnx_runtime(threads=1)
    batch = torch.from_numpy(image.astype(np.float32) - np.float32(MEAN_BGR)).permute(2, 0, 1)[None]
    (found,) = teacher.candidates(batch, MEAN_BGR, min_probability=0.5)
    boxes = found.boxes.numpy() * [w, h, w, h]
    keep = cv2.dnn.NMSBoxes([[float(a), float(b), float(c - a), float(d - b)] for a, b, c, d in boxes],
                            found.probability.tolist(), 0.5, 0.3)
    keep = np.array(keep).ravel()
    reference = YuNetTeacher(YUNET, score_threshold=0.5, nms=0.3).detect(image)
    assert len(keep) >= 10 and len(keep) == len(reference)
    iou = box_iou(boxes[keep], reference.boxes)
    assert (iou.max(1) > 0.999).all(), iou.max(1)
    points = found.points.numpy()[keep].reshape(-1, 5, 2) * [w, h]
    assert np.abs(points - reference.landmarks[iou.argmax(1)]).max() < 0.01


@requires_shared
def test_yunet_enlarged_offers_the_small_faces_it_misses_at_the_students_scale():
    """--yunet-scales 1 2: the 1x candidates unchanged, then those of the batch enlarged 2x, in the same
    normalised coordinates. On the crowd photo shrunk until its faces are a few pixels wide, the 2x pass finds
    faces the 1x pass misses, and the faces of the 1x pass are found again at 2x in the same place (all but one
    here, which the 2x pass drops below 0.5)."""
    import cv2

    from blazeface.config import MEAN_BGR
    from blazeface.geometry import box_iou

    size = (224, 128)
    image = cv2.resize(cv2.imread(str(DATA / "facemask" / "images" / "maksssksksss209.jpg")), size,
                       interpolation=cv2.INTER_AREA)
    batch = torch.from_numpy(image.astype(np.float32) - np.float32(MEAN_BGR)).permute(2, 0, 1)[None]
    (single,) = load_teacher(f"yunet:{YUNET}").candidates(batch, MEAN_BGR, min_probability=0.5)
    (both,) = load_teacher(f"yunet:{YUNET}", yunet_scales=(1, 2)).candidates(batch, MEAN_BGR, min_probability=0.5)
    k = len(single.probability)
    assert torch.equal(both.probability[:k], single.probability) and torch.equal(both.boxes[:k], single.boxes)

    def faces(probability, boxes):
        boxes = boxes.numpy() * [size[0], size[1], size[0], size[1]]
        keep = cv2.dnn.NMSBoxes([[float(a), float(b), float(c - a), float(d - b)] for a, b, c, d in boxes],
                                probability.tolist(), 0.5, 0.3)
        return boxes[np.array(keep, dtype=int).ravel()]

    at_1x, at_2x = faces(single.probability, single.boxes), faces(both.probability[k:], both.boxes[k:])
    assert len(at_1x) >= 10 and len(at_2x) > len(at_1x)
    assert (box_iou(at_1x, at_2x).max(1) > 0.5).mean() >= 0.9
    with pytest.raises(BlazefaceError, match="scales must be positive"):
        load_teacher(f"yunet:{YUNET}", yunet_scales=(1, 0))


@requires_shared
def test_yunet_carried_onto_blazes_priors_finds_yunets_faces():
    """YuNet as a per-prior teacher of blaze (train --map-teacher-priors): its candidate faces carried onto
    blaze's priors and decoded as blaze's outputs find the faces YuNet itself finds."""
    from blazeface import FaceDetector
    from blazeface.geometry import box_iou
    from conftest import SAMPLE

    import cv2

    teacher = load_teacher(f"yunet:{YUNET}")
    image = cv2.imread(str(SAMPLE))
    own = teacher.detect(image)
    own_boxes = own.boxes[own.scores >= 0.5]
    carried = FaceDetector("blaze", runner=DenseEnsembleRunner([teacher], "blaze"), long_side=0, conf=0.5).detect(image)
    assert len(own_boxes) >= 5 and abs(len(carried) - len(own_boxes)) <= 2
    iou = box_iou(own_boxes, carried.boxes)
    assert (iou.max(1) > 0.8).mean() >= 0.8, iou.max(1)


@requires_shared
def test_training_with_yunet_per_prior(data, tmp_path):
    """--teacher yunet:... --map-teacher-priors: YuNet teaches per prior (its distillation terms are logged)
    rather than in the data workers; --yunet-scales reaches it."""
    spec = f"yunet:{YUNET}"
    trainer = Trainer(options(data, tmp_path / "a", model="blaze", max_steps=2, teachers=[spec],
                              map_teacher_priors=True, yunet_scales=[1.0, 2.0]))
    assert len(trainer.dense_teachers) == 1 and trainer.dense_teachers.gridded[0].scales == (1.0, 2.0)
    trainer.run()
    logged = (tmp_path / "a" / "metrics.jsonl").read_text()
    assert '"kd_cls"' in logged and '"kd_loc"' in logged


@requires_shared
def test_cached_yunet_candidates_carry_as_the_live_teacher_on_an_unchanged_view():
    """train --cache-teacher: YuNet's candidates of a whole photo, carried by the data worker onto slim's priors,
    are what the live per-prior teacher gives on the same view (a photo already at the training size, no crop)."""
    import cv2

    from blazeface.config import MEAN_BGR
    from blazeface.data import transforms as T
    from blazeface.models import get_config
    from blazeface.training.teacher_cache import CARRIED_KEYS, CarriedCandidates, photo_candidates
    from blazeface.training.teachers import DenseTeachers, PriorMapping

    config = get_config("slim")
    size = config.train.input_size
    image = cv2.resize(cv2.imread(str(DATA / "facemask" / "images" / "maksssksksss209.jpg")), (size, size))
    teacher = load_teacher(f"yunet:{YUNET}")
    carrier = PriorMapping(None, config.priors)
    scores, boxes, points = photo_candidates([teacher], image, MEAN_BGR, carrier.min_probability)
    assert len(scores) >= 20 and boxes.max() > size / 2
    target = make_target(np.zeros((0, 4)))
    target.update(teacher_boxes=boxes, teacher_points=points, teacher_scores=scores)
    tensor, out = CarriedCandidates(T.Compose([T.RandomResize(size), T.ToTensor(MEAN_BGR)]), carrier)(
        image, target, np.random.default_rng(0))
    live = DenseTeachers([teacher], "slim")(tensor[None])
    assert not any(key.startswith("teacher_") for key in out)
    for key, expected in zip(CARRIED_KEYS, live):
        torch.testing.assert_close(out[key], expected[0], atol=1e-4, rtol=0)
    assert (out["prior_kd_logits"].exp()[:, 1] > 0.5).sum() >= 10


@requires_shared
@pytest.mark.parametrize("onnx", [False, True])
def test_teacher_candidates_computed_in_a_pool_equal_one_process(onnx):
    """--cache-processes: the photos' candidates computed by two pool processes (several tasks each, an
    unreadable photo among them) are the serial computation's, in the same order."""
    from blazeface.config import MEAN_BGR
    from blazeface.training import teacher_cache
    from blazeface.training.teacher_cache import build_photo_candidates

    photos = sorted((DATA / "facemask" / "images").glob("*"))[:teacher_cache._CHUNK + 9]
    photos.insert(5, DATA / "facemask" / "missing.jpg")
    teacher = load_teacher(f"yunet:{YUNET}")
    if onnx:
        teacher.use_onnx_runtime(threads=1)
    one = build_photo_candidates([teacher], photos, MEAN_BGR, 0.05, progress=False)
    pooled = build_photo_candidates([teacher], photos, MEAN_BGR, 0.05, progress=False, processes=2, onnx=onnx)
    assert len(one) == len(pooled) == len(photos) and len(one[5]["teacher_scores"]) == 0
    np.testing.assert_array_equal(one.offsets, pooled.offsets)
    for name in ("scores", "boxes", "points"):
        np.testing.assert_allclose(getattr(one, name), getattr(pooled, name), rtol=0, atol=1e-5)
    assert len(one.scores) > 100


@requires_shared
def test_training_with_a_cached_yunet_resumes_exactly(data, tmp_path):
    """--cache-teacher: the candidates are computed once into the run folder (read back, not recomputed, on
    resume), the step logs the distillation terms without a live teacher, and a resumed run continues exactly."""
    kw = dict(model="slim", teachers=[f"yunet:{YUNET}"], map_teacher_priors=True, yunet_scales=[1.0, 2.0],
              cache_teacher=True)
    straight = Trainer(options(data, tmp_path / "a", max_steps=4, **kw))
    assert len(straight.dense_teachers) == 0 and len(straight.dataset.teacher_candidates) == len(straight.dataset)
    straight.run()
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["kd_cls"] > 0 for r in records if "step" in r)
    Trainer(options(data, tmp_path / "b", max_steps=2, **kw)).run()
    cache = tmp_path / "b" / "teacher_candidates.npz"
    written = cache.stat().st_mtime_ns
    Trainer(options(data, tmp_path / "b", max_steps=4, resume=tmp_path / "b" / "last.pth", **kw)).run()
    assert cache.stat().st_mtime_ns == written
    a, b = (load_checkpoint(tmp_path / d / "last.pth")["model"] for d in ("a", "b"))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    with pytest.raises(BlazefaceError, match="--cache-teacher needs a YuNet or CenterFace teacher"):
        Trainer(options(data, tmp_path / "c", **{**kw, "teachers": [f"slim:{SLIM}"]}))


def dense_carry(mapping, p, boxes, points, height, width):
    """The carry by the dense (K, P) IoU matrix: the matching rule as written (the reference PriorMapping's
    windowed search must reproduce)."""
    from blazeface.box_coding import encode_boxes, encode_landmarks
    from blazeface.geometry import box_iou

    priors = torch.from_numpy(prior_boxes(mapping.student_priors, height, width).copy())
    variances = mapping.student_priors.variances
    iou = box_iou(boxes, priors_to_corners(priors))
    eligible = iou >= mapping.pos_iou
    best_iou, best_prior = iou.max(1)
    forced = torch.nonzero(best_iou >= mapping.forced_min_iou).squeeze(1)
    eligible[forced, best_prior[forced]] = True
    for k in range(len(boxes)):  # scale compensation: the best further priors while a candidate has too few
        need = mapping.min_positives - int(eligible[k].sum())
        spare = torch.nonzero(~eligible[k] & (iou[k] >= mapping.compensation_iou)).squeeze(1)
        if need > 0 and spare.numel():
            eligible[k, spare[torch.argsort(-iou[k, spare], stable=True)[:need]]] = True
    face, chosen = torch.where(eligible, p[:, None], torch.zeros_like(iou)).max(0)
    reached = torch.nonzero(face > 0).squeeze(1)
    loc = torch.zeros(priors.shape[0], 4)
    landm = torch.zeros(priors.shape[0], 10)
    loc[reached] = encode_boxes(boxes[chosen[reached]], priors[reached], variances)
    landm[reached] = encode_landmarks(points[chosen[reached]], priors[reached], variances)
    face = face.clamp(mapping.floor, 1 - mapping.floor)
    return loc, torch.stack([torch.log1p(-face), torch.log(face)], -1), landm


@pytest.mark.parametrize("min_positives", [0, 3])
@pytest.mark.parametrize("student,height,width", [("slim", 320, 320), ("blaze", 320, 320), ("mnet", 224, 320)])
def test_prior_mapping_carries_as_the_dense_matching_rule(student, height, width, min_positives):
    """PriorMapping looks only at the priors each candidate can reach (prior_pairs): the same targets as the
    dense IoU matrix over all priors, on candidates of every size from 1 pixel to larger than the input,
    some hanging over the border, some crowded onto one face; with the scale compensation too."""
    from blazeface.models import get_config
    from blazeface.training.teachers import Candidates, PriorMapping

    rng = np.random.default_rng(3)
    mapping = PriorMapping(None, get_config(student).priors, min_positives=min_positives)
    for trial in range(6):
        k = int(rng.integers(1, 400))
        side = np.exp(rng.uniform(np.log(1), np.log(1.3 * max(height, width)), k))
        aspect = rng.uniform(0.6, 1.6, k)
        cx, cy = rng.uniform(-0.1, 1.1, k) * width, rng.uniform(-0.1, 1.1, k) * height
        if trial % 2:  # a crowd of overlapping candidates on one face, as a teacher's grid gives
            cx[: k // 2], cy[: k // 2] = cx[0] + rng.normal(0, 3, k // 2), cy[0] + rng.normal(0, 3, k // 2)
        w, h = side * aspect, side
        boxes = torch.tensor(np.stack([(cx - w / 2) / width, (cy - h / 2) / height, (cx + w / 2) / width,
                                       (cy + h / 2) / height], 1), dtype=torch.float32)
        points = torch.tensor(rng.uniform(0, 1, (k, 10)), dtype=torch.float32)
        p = torch.tensor(rng.uniform(0.05, 1, k), dtype=torch.float32)
        carried = mapping.carry([Candidates(p, boxes, points)], height, width)
        for got, expected in zip(carried, dense_carry(mapping, p, boxes, points, height, width)):
            torch.testing.assert_close(got[0], expected, rtol=0, atol=0)


@requires_shared
def test_two_processes_equal_one_with_a_cached_yunet(data, tmp_path):
    """--cache-teacher under torchrun: the main process computes the candidates, the other reads them after the
    barrier, and 2 processes x batch 2 reach the weights of 1 process x batch 4."""
    a, b = train_one_and_two_processes(data, tmp_path, "--teacher", f"yunet:{YUNET}", "--map-teacher-priors",
                                       "--cache-teacher", steps=2)
    assert (tmp_path / "two" / "teacher_candidates.npz").is_file()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=1e-4), key


CENTERFACE = DATA / "teachers" / "centerface.onnx"


@requires_shared
def test_centerface_candidates_decode_as_its_detections():
    """CenterFace per prior (--map-teacher-priors): its heatmap cells decoded from a student's mean-subtracted
    batch give, after the same threshold and NMS, CenterFace's own detections of the uint8 photo; at 2x its
    candidates of the enlarged batch follow those of 1x, in the same normalised coordinates."""
    import cv2

    from blazeface.config import MEAN_BGR
    from blazeface.geometry import box_iou
    from blazeface.training.teachers import CenterFaceTeacher, teaches_per_prior

    image = cv2.resize(cv2.imread(str(DATA / "facemask" / "images" / "maksssksksss209.jpg")), (416, 256))
    h, w = image.shape[:2]
    teacher = load_teacher(f"centerface:{CENTERFACE}")
    assert teaches_per_prior(teacher, "blaze", map_priors=True) and not teaches_per_prior(teacher, "blaze")
    batch = torch.from_numpy(image.astype(np.float32) - np.float32(MEAN_BGR)).permute(2, 0, 1)[None]
    (found,) = teacher.candidates(batch, MEAN_BGR, min_probability=0.5)
    boxes = found.boxes.numpy() * [w, h, w, h]
    keep = np.array(cv2.dnn.NMSBoxes([[float(a), float(b), float(c - a), float(d - b)] for a, b, c, d in boxes],
                                     found.probability.tolist(), 0.5, 0.3)).ravel()
    reference = CenterFaceTeacher(CENTERFACE, score_threshold=0.5, nms=0.3).detect(image)
    assert len(keep) >= 10 and len(keep) == len(reference.scores)
    iou = box_iou(boxes[keep], reference.boxes)
    assert (iou.max(1) > 0.999).all(), iou.max(1)
    points = found.points.numpy()[keep].reshape(-1, 5, 2) * [w, h]
    assert np.abs(points - reference.landmarks[iou.argmax(1)]).max() < 0.01
    (both,) = load_teacher(f"centerface:{CENTERFACE}", centerface_scales=(1, 2)).candidates(batch, MEAN_BGR, 0.5)
    k = len(found.probability)
    assert torch.equal(both.boxes[:k], found.boxes) and len(both.probability) > k
    with pytest.raises(BlazefaceError, match="CenterFace teacher scales must be positive"):
        load_teacher(f"centerface:{CENTERFACE}", centerface_scales=(0,))


@requires_shared
def test_pooled_grid_teachers_give_each_prior_the_more_probable_teachers_face():
    """YuNet and CenterFace per prior together: their candidates are pooled before the carry, so every prior of
    the student gets the larger of the two face probabilities that each teacher alone gives it (a face one of
    them misses keeps the other's probability), with the boxes of whichever teacher that was."""
    import cv2

    from blazeface.config import MEAN_BGR
    from blazeface.training.teachers import DenseTeachers

    image = cv2.resize(cv2.imread(str(DATA / "facemask" / "images" / "maksssksksss209.jpg")), (320, 320))
    batch = torch.from_numpy(image.astype(np.float32) - np.float32(MEAN_BGR)).permute(2, 0, 1)[None]
    yunet, centerface = load_teacher(f"yunet:{YUNET}"), load_teacher(f"centerface:{CENTERFACE}")
    (loc_y, logits_y, _), (loc_c, logits_c, _), (loc, logits, _) = (
        DenseTeachers(teachers, "blaze")(batch) for teachers in ([yunet], [centerface], [yunet, centerface]))
    p_y, p_c, p = (t[0, :, 1].exp() for t in (logits_y, logits_c, logits))
    torch.testing.assert_close(p, torch.maximum(p_y, p_c), rtol=0, atol=1e-6)
    faces = p > 0.5
    from_yunet, from_centerface = faces & (p_y > p_c), faces & (p_c > p_y)
    assert from_yunet.sum() >= 5 and from_centerface.sum() >= 5
    torch.testing.assert_close(loc[0, from_yunet], loc_y[0, from_yunet])
    torch.testing.assert_close(loc[0, from_centerface], loc_c[0, from_centerface])


@requires_shared
def test_cached_yunet_and_centerface_pool_their_candidates(data, tmp_path):
    """--cache-teacher with YuNet and CenterFace per prior: each photo's cached candidates are YuNet's, then
    CenterFace's, keyed by both teachers (a cache of YuNet alone keeps its key: older run folders still read);
    the run trains on them."""
    import cv2

    from blazeface.config import MEAN_BGR
    from blazeface.training.teacher_cache import cache_key, photo_candidates

    teachers = [f"yunet:{YUNET}", f"centerface:{CENTERFACE}"]
    trainer = Trainer(options(data, tmp_path / "a", model="slim", max_steps=1, map_teacher_priors=True,
                              teachers=teachers, cache_teacher=True))
    assert len(trainer.dense_teachers) == 0
    sample = trainer.dataset.samples[0]
    image = cv2.imread(str(sample.image_path))
    yunet, centerface = (load_teacher(spec) for spec in teachers)
    alone = [photo_candidates([t], image, MEAN_BGR, 0.05)[0] for t in (yunet, centerface)]
    cached = trainer.dataset.teacher_candidates[0]["teacher_scores"]
    np.testing.assert_allclose(cached, np.concatenate(alone), atol=1e-5)
    paths = [s.image_path for s in trainer.dataset.samples]
    assert json.loads(cache_key([yunet], paths, 0.05))["teacher"] == str(YUNET.resolve())
    assert cache_key([yunet, centerface], paths, 0.05) != cache_key([yunet], paths, 0.05)
    trainer.run()
    assert '"kd_cls"' in (tmp_path / "a" / "metrics.jsonl").read_text()
    with pytest.raises(BlazefaceError, match="--cache-teacher needs a YuNet or CenterFace teacher"):
        Trainer(options(data, tmp_path / "b", teachers=[f"yunet:{YUNET}"], cache_teacher=True))


@requires_shared
def test_runs_sharing_a_teacher_cache_compute_the_candidates_once(tmp_path):
    """--teacher-cache DIR: the first run computes the candidates into its folder and the shared one; a second
    run of the same photos and teacher links that file (the same inode: read, not computed again); another scale
    set is another entry."""
    from blazeface.config import MEAN_BGR
    from blazeface.training import teacher_cache
    from blazeface.training.checkpointing import TEACHER_CANDIDATES_FILE

    photos = sorted((DATA / "facemask" / "images").glob("*"))[:3]
    shared = tmp_path / "shared"
    first = teacher_cache.photo_candidates_for_run([load_teacher(f"yunet:{YUNET}")], photos, MEAN_BGR, 0.05,
                                                   tmp_path / "a", shared=shared)
    [entry] = shared.iterdir()
    assert (tmp_path / "a" / TEACHER_CANDIDATES_FILE).stat().st_ino == entry.stat().st_ino
    second = teacher_cache.photo_candidates_for_run([load_teacher(f"yunet:{YUNET}")], photos, MEAN_BGR, 0.05,
                                                    tmp_path / "b", shared=shared)
    assert (tmp_path / "b" / TEACHER_CANDIDATES_FILE).stat().st_ino == entry.stat().st_ino
    np.testing.assert_array_equal(first.scores, second.scores)
    assert len(first.scores) > 0
    teacher_cache.photo_candidates_for_run([load_teacher(f"yunet:{YUNET}", yunet_scales=[1.0, 2.0])], photos,
                                           MEAN_BGR, 0.05, tmp_path / "c", shared=shared)
    assert len(list(shared.iterdir())) == 2


@requires_shared
def test_a_run_listing_the_photos_in_another_order_reads_the_same_cache(tmp_path):
    """The cache keeps the photos sorted by path: a run that lists them in another order (its --data folders
    swapped) links the same file and gets each photo's own candidates, in its order."""
    from blazeface.config import MEAN_BGR
    from blazeface.training import teacher_cache
    from blazeface.training.checkpointing import TEACHER_CANDIDATES_FILE

    photos = sorted((DATA / "facemask" / "images").glob("*"))[:4]
    swapped = photos[2:] + photos[:2]
    shared = tmp_path / "shared"
    first = teacher_cache.photo_candidates_for_run([load_teacher(f"yunet:{YUNET}")], photos, MEAN_BGR, 0.05,
                                                   tmp_path / "a", shared=shared)
    second = teacher_cache.photo_candidates_for_run([load_teacher(f"yunet:{YUNET}")], swapped, MEAN_BGR, 0.05,
                                                    tmp_path / "b", shared=shared)
    [entry] = shared.iterdir()
    assert (tmp_path / "b" / TEACHER_CANDIDATES_FILE).stat().st_ino == entry.stat().st_ino
    assert [len(first[k]["teacher_scores"]) for k in range(4)] != [len(second[k]["teacher_scores"]) for k in range(4)]
    for k, photo in enumerate(swapped):
        mine = second[k]
        theirs = first[photos.index(photo)]
        assert len(theirs["teacher_scores"]) > 0
        for name in ("teacher_scores", "teacher_boxes", "teacher_points"):
            np.testing.assert_array_equal(mine[name], theirs[name])


def test_photo_candidates_take_photos_in_any_order():
    from blazeface.training.teacher_cache import PhotoCandidates

    scores = np.arange(6, dtype=np.float32)  # photo 0: 0-1, photo 1: none, photo 2: 2-5
    found = PhotoCandidates(scores, np.repeat(scores[:, None], 4, 1), np.repeat(scores[:, None, None], 5, 1)
                            .repeat(2, 2), np.array([0, 2, 2, 6]))
    taken = found.take([2, 0, 1, 0])
    assert len(taken) == 4 and list(taken.offsets) == [0, 4, 6, 6, 8]
    assert taken[0]["teacher_scores"].tolist() == [2, 3, 4, 5] and taken[1]["teacher_scores"].tolist() == [0, 1]
    assert len(taken[2]["teacher_scores"]) == 0 and taken[3]["teacher_boxes"][:, 0].tolist() == [0, 1]
    assert taken[0]["teacher_points"].shape == (4, 5, 2)


@requires_shared
def test_candidates_made_while_a_photo_is_missing_are_used_but_not_kept(tmp_path):
    """A photo that cannot be read gets no candidates; such a set is not saved (the key names the photos, so a
    later run with the photo in place would read it as faceless); with every photo there it is saved as usual."""
    import shutil

    from blazeface.config import MEAN_BGR
    from blazeface.training import teacher_cache
    from blazeface.training.checkpointing import TEACHER_CANDIDATES_FILE

    photos = [tmp_path / f"{i}.jpg" for i in range(2)]
    for source, photo in zip(sorted((DATA / "facemask" / "images").glob("*"))[:1] * 2, photos):
        shutil.copyfile(source, photo)
    away = photos[1].rename(tmp_path / "away.jpg")
    partial = teacher_cache.photo_candidates_for_run([load_teacher(f"yunet:{YUNET}")], photos, MEAN_BGR, 0.05,
                                                     tmp_path / "a", shared=tmp_path / "shared")
    assert partial.unreadable == 1 and len(partial) == 2 and len(partial[1]["teacher_scores"]) == 0
    assert len(partial[0]["teacher_scores"]) > 0
    assert not (tmp_path / "a" / TEACHER_CANDIDATES_FILE).exists() and not any((tmp_path / "shared").glob("*"))
    away.rename(photos[1])
    whole = teacher_cache.photo_candidates_for_run([load_teacher(f"yunet:{YUNET}")], photos, MEAN_BGR, 0.05,
                                                   tmp_path / "a", shared=tmp_path / "shared")
    assert whole.unreadable == 0 and (tmp_path / "a" / TEACHER_CANDIDATES_FILE).exists()
    np.testing.assert_array_equal(whole[1]["teacher_scores"], whole[0]["teacher_scores"])


@requires_shared
def test_packed_teacher_candidates_unpack_where_a_run_of_the_same_photos_reads_them(tmp_path):
    """tools/pack_teacher_candidates.py (the candidates carried to a GPU machine): pack, then unpack into a
    shared folder, and a run of the same photos and teacher reads that file (the same inode) instead of running
    the teacher; every value comes back within 1/32 px (scores 1e-5). A packed file is never written over, and
    a file that is not one is a one-line error."""
    from blazeface.config import MEAN_BGR
    from blazeface.training import teacher_cache
    from blazeface.training.checkpointing import TEACHER_CANDIDATES_FILE

    photos = sorted((DATA / "facemask" / "images").glob("*"))[:3]
    teacher = load_teacher(f"yunet:{YUNET}", yunet_scales=[1.0, 2.0])
    made = teacher_cache.photo_candidates_for_run([teacher], photos, MEAN_BGR, 0.05, tmp_path / "made")
    tool = [sys.executable, str(REPO / "tools" / "pack_teacher_candidates.py")]
    packed = tmp_path / "carry" / "candidates.npz"

    def run(*args):
        return subprocess.run([*tool, *map(str, args)], capture_output=True, text=True, timeout=120)

    assert run("pack", tmp_path / "made" / TEACHER_CANDIDATES_FILE, packed).returncode == 0
    again = run("pack", tmp_path / "made" / TEACHER_CANDIDATES_FILE, packed)
    assert again.returncode != 0 and "not written over" in again.stderr and "Traceback" not in again.stderr
    assert run("unpack", packed, "--shared-dir", tmp_path / "shared").returncode == 0
    [entry] = (tmp_path / "shared").iterdir()
    read = teacher_cache.photo_candidates_for_run([load_teacher(f"yunet:{YUNET}", yunet_scales=[1.0, 2.0])], photos,
                                                  MEAN_BGR, 0.05, tmp_path / "run", shared=tmp_path / "shared")
    assert (tmp_path / "run" / TEACHER_CANDIDATES_FILE).stat().st_ino == entry.stat().st_ino
    assert len(made.scores) > 0 and np.array_equal(made.offsets, read.offsets)
    np.testing.assert_allclose(read.scores, made.scores, atol=1e-5)
    np.testing.assert_allclose(read.boxes, made.boxes, atol=1 / 64 + 1e-4)
    np.testing.assert_allclose(read.points, made.points, atol=1 / 32 + 1e-4)
    wrong = run("unpack", tmp_path / "made" / TEACHER_CANDIDATES_FILE, "--shared-dir", tmp_path / "x")
    assert wrong.returncode != 0 and "not a file written by" in wrong.stderr and "Traceback" not in wrong.stderr


def test_a_torn_teacher_cache_is_a_one_line_error(tmp_path):
    from blazeface.training.teacher_cache import load_photo_candidates

    torn = tmp_path / "teacher_candidates.npz"
    torn.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(BlazefaceError, match="cannot read the cached teacher candidates"):
        load_photo_candidates(torn, "key")
    assert load_photo_candidates(tmp_path / "missing.npz", "key") is None


def test_where_labels_and_teacher_disagree_each_loss_keeps_to_what_it_knows():
    """A background prior (0) the per-prior teacher calls a face at teacher_ignore_score or above becomes ignore
    (-1); a labelled-face prior (1) it gives less than kd_ignore_labelled_below leaves the class distillation.
    Other priors keep their labels; logits and log-probabilities decide alike; both settings off change nothing."""
    from blazeface.training.trainer import labels_and_teacher_disagree

    labels = torch.tensor([[0, 0, 0, 1, 1, -1, 0]])
    face = torch.tensor([[0.9, 0.5, 0.49, 0.9, 0.2, 0.9, 0.0001]])
    log_probs = torch.stack([torch.log1p(-face), torch.log(face)], -1)
    both = TrainConfig(teacher_ignore_score=0.5, kd_ignore_labelled_below=0.3)
    for teacher in (log_probs, log_probs + 3.0):  # shifted logits: the same softmax
        vetoed, missed = labels_and_teacher_disagree(labels, teacher, both)
        assert torch.equal(vetoed, torch.tensor([[-1, -1, 0, 1, 1, -1, 0]]))
        assert missed.tolist() == [[False, False, False, False, True, False, False]]
    same, none = labels_and_teacher_disagree(labels, log_probs, TrainConfig())
    assert torch.equal(same, labels) and none is None


def test_where_the_labels_say_background_and_the_teacher_a_face_the_labels_can_win():
    """kd_ignore_background_above: a background prior (0) the teacher calls a face at the threshold or above keeps
    its label (it is mined as before) and leaves the class distillation; labelled and ignored priors stay in it.
    With kd_ignore_labelled_below the two masks add up; with teacher_ignore_score a run refuses to start."""
    from blazeface.training.trainer import labels_and_teacher_disagree

    labels = torch.tensor([[0, 0, 0, 1, 1, -1, 0]])
    face = torch.tensor([[0.9, 0.5, 0.49, 0.9, 0.2, 0.9, 0.0001]])
    log_probs = torch.stack([torch.log1p(-face), torch.log(face)], -1)
    kept, skipped = labels_and_teacher_disagree(labels, log_probs, TrainConfig(kd_ignore_background_above=0.5))
    assert torch.equal(kept, labels)
    assert skipped.tolist() == [[True, True, False, False, False, False, False]]
    _, both = labels_and_teacher_disagree(
        labels, log_probs, TrainConfig(kd_ignore_background_above=0.5, kd_ignore_labelled_below=0.3))
    assert both.tolist() == [[True, True, False, False, True, False, False]]


def test_the_class_distillation_skips_masked_priors():
    student = (torch.zeros(1, 3, 4), torch.tensor([[[2.0, -2.0], [0.0, 0.0], [-1.0, 1.0]]]), torch.zeros(1, 3, 10))
    teacher = (torch.zeros(1, 3, 4), torch.tensor([[[-2.0, 2.0], [0.0, 0.0], [-1.0, 1.0]]]), torch.zeros(1, 3, 10))
    loss = DenseDistillationLoss(TrainConfig())
    full = loss(student, teacher, torch.tensor(1.0))["kd_cls"]
    masked = loss(student, teacher, torch.tensor(1.0), cls_mask=torch.tensor([[False, True, True]]))["kd_cls"]
    assert full > 0 and masked == 0  # only the first prior disagrees


def test_training_with_the_teachers_veto_on_negatives(data, tmp_path):
    """The same step with and without --teacher-ignore-score: the ground truth's class loss differs (fewer priors
    mined where the teacher sees faces), the distillation terms do not; with --kd-ignore-labelled-below too, the
    class distillation changes and the ground truth's does not. The options are kept in the run's options."""
    # A trained student (the shipped slim, taught by the shipped rfb on slim's priors). On these drawn 64-pixel
    # faces the teacher's face probabilities stay under 0.01, hence the low threshold.
    kw = dict(model="slim", max_steps=1, teachers=[f"rfb:{shipped_weights('rfb')}"], init_weights=SLIM, log_every=1)
    logged = []
    for name, extra in (("off", {}), ("on", {"teacher_ignore_score": 0.002}),
                        ("both", {"teacher_ignore_score": 0.002, "kd_ignore_labelled_below": 0.005})):
        Trainer(options(data, tmp_path / name, **kw, **extra)).run()
        logged.append(json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[0]))
    off, on, both = logged
    assert on["cls"] != off["cls"] and on["kd_cls"] == pytest.approx(off["kd_cls"], rel=1e-6)
    assert both["cls"] == pytest.approx(on["cls"], rel=1e-6) and both["kd_cls"] < on["kd_cls"]
    saved = json.loads((tmp_path / "both" / "options.json").read_text())
    assert saved["teacher_ignore_score"] == 0.002 and saved["kd_ignore_labelled_below"] == 0.005
    # The labels' way: the same priors stay mined (the ground truth's class loss is off's) and leave the class
    # distillation; the teacher's way and the labels' way at once is refused before training starts.
    Trainer(options(data, tmp_path / "labels_win", **kw, kd_ignore_background_above=0.002)).run()
    labels_win = json.loads((tmp_path / "labels_win" / "metrics.jsonl").read_text().splitlines()[0])
    assert labels_win["cls"] == pytest.approx(off["cls"], rel=1e-6) and labels_win["kd_cls"] < off["kd_cls"]
    with pytest.raises(BlazefaceError, match="choose one"):
        Trainer(options(data, tmp_path / "opposite", **kw, teacher_ignore_score=0.002,
                        kd_ignore_background_above=0.002)).run()


@requires_shared
def test_teacher_agreement_reports_the_student_where_the_teacher_sees_faces():
    """benchmarks/teacher_agreement.py on two photos of each part: one entry per prior size of the model, the
    student's probabilities are probabilities, and the teacher sees faces on some priors of each part."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "teacher_agreement.py"), "--model", "slim",
                           "--photos", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["prior_sizes"] == [10, 16, 24, 32, 48, 64, 96, 128, 192, 256]
    for part in ("train", "dev"):
        seen, mean = report[part]["priors"], report[part]["student_mean_p"]
        assert len(seen) == len(mean) == 10 and sum(seen) > 0
        assert all(0 <= m <= 1 for m in mean) and all(m == 0 for n, m in zip(seen, mean) if n == 0)
