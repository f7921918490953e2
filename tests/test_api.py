"""The Python API as a user meets it: the README's snippets run as written, ``Detections``, validated
settings and inputs, and weights files that say which model they hold."""
import json
import re
import shutil

import cv2
import numpy as np
import pytest
import torch

from blazeface import BlazefaceError, Detections, Face, FaceDetector, create_model, draw_faces, get_config
from blazeface.checkpoint import META_KEY, with_metadata
from blazeface.cli import cli_message, main
from blazeface.models import shipped_weights
from conftest import REPO, SAMPLE


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


@pytest.fixture(scope="module")
def image():
    return cv2.imread(str(SAMPLE))


def readme_python_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("\n## Python\n"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_python_snippets_run_as_written(tmp_path, monkeypatch, capsys):
    blocks = readme_python_blocks()
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    shutil.copy(SAMPLE, tmp_path / "photo.jpg")
    exec(compile(blocks[0], "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert re.search(r"\(\d+, 4\) \(\d+,\) \(\d+, 5, 2\)", out)
    assert cv2.imread("annotated.jpg").shape == cv2.imread("photo.jpg").shape and (tmp_path / "face.jpg").is_file()
    # The second block needs a trained weights.pth and an ONNX export (the 'onnx' extra).
    pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")
    pytest.importorskip("onnxslim", reason="needs the 'onnx' extra")
    from blazeface.export import export_model

    (tmp_path / "runs" / "train").mkdir(parents=True)
    slim = create_model("slim")
    torch.save(with_metadata(slim.state_dict(), slim.config), tmp_path / "runs" / "train" / "weights.pth")
    export_model("slim", None, tmp_path / "slim.onnx")
    scope = {}
    exec(compile(blocks[1], "README.md", "exec"), scope)
    assert scope["detector"].model_name == "slim" and scope["detector"].runner.name == "onnx"


# --- Detections ----------------------------------------------------------------------------------------


def test_detections_are_a_sequence_of_faces_and_arrays(detector, image):
    faces = detector.detect(image)
    assert isinstance(faces, Detections) and len(faces) >= 10
    assert faces.boxes.shape == (len(faces), 4) and faces.scores.shape == (len(faces),)
    assert faces.landmarks.shape == (len(faces), 5, 2) and faces.boxes.dtype == np.float32
    assert list(faces.scores) == sorted(faces.scores, reverse=True)
    listed = list(faces)
    assert all(isinstance(f, Face) for f in listed) and len(listed) == len(faces)
    assert faces[0].score == faces.scores[0] and np.array_equal(faces[-1].box, faces.boxes[-1])
    top = faces[:3]
    assert isinstance(top, Detections) and len(top) == 3 and np.array_equal(top.scores, faces.scores[:3])
    with pytest.raises(IndexError):
        faces[len(faces)]
    assert faces == listed and bool(faces) and not Detections.empty()


def test_a_boolean_mask_selects_faces(detector, image):
    """As numpy and ultralytics' results: ``faces[faces.scores > t]``, ``faces[faces.widths >= 20]``."""
    faces = detector.detect(image)
    wide = faces[faces.widths >= 20]
    assert isinstance(wide, Detections) and 0 < len(wide) < len(faces)
    assert np.all(wide.widths >= 20) and list(wide.scores) == sorted(wide.scores, reverse=True)
    assert np.array_equal(faces.heights, faces.boxes[:, 3] - faces.boxes[:, 1])
    assert faces[faces.scores > 2] == Detections.empty() and faces[np.ones(len(faces), bool)] == faces
    for bad in (np.array([0, 1]), np.ones(len(faces) + 1, bool), [True]):
        with pytest.raises(BlazefaceError, match="boolean mask of shape"):
            faces[bad]


def test_draw_crop_and_json(detector, image):
    faces = detector.detect(image)
    drawn = faces.draw(image)
    assert drawn.shape == image.shape and not np.array_equal(drawn, image)
    assert np.array_equal(drawn, draw_faces(image, faces))  # the same drawing as the public helper
    assert np.array_equal(image, cv2.imread(str(SAMPLE)))  # the input is left alone
    x1, y1, x2, y2 = faces.boxes[0]
    crop = faces.crop(image, 0)
    assert abs(crop.shape[1] - (x2 - x1)) <= 2 and abs(crop.shape[0] - (y2 - y1)) <= 2
    assert faces.crop(image, 0, margin=0.5).shape[0] > crop.shape[0]
    crop[:] = 0
    assert image.any()  # a copy, not a view
    with pytest.raises(BlazefaceError, match="out of range"):
        faces.crop(image, len(faces))
    records = json.loads(faces.to_json())
    assert len(records) == len(faces) and records[0] == faces[0].to_dict()
    assert set(records[0]) == {"box", "score", "landmarks"} and len(records[0]["landmarks"]) == 5


# --- settings ------------------------------------------------------------------------------------------


def test_thresholds_are_attributes_that_take_effect(image):
    detector = FaceDetector(conf=0.5)
    default = len(detector.detect(image))
    detector.conf = 0.2
    assert len(detector.detect(image)) > default
    assert len(detector.detect(image, conf=0.9)) < default  # per call, without changing the attribute
    assert detector.conf == 0.2
    detector.long_side = 320
    assert detector.detect(image).boxes.max() <= 400  # still image pixels
    for name, bad in (("conf", 2), ("conf", -0.1), ("nms", 1.5), ("long_side", -1), ("top_k", 0),
                      ("keep_top_k", 2.5), ("color", "hsv"), ("conf", "0.3")):
        with pytest.raises(BlazefaceError, match=f"^{name} must be"):
            setattr(detector, name, bad)
    with pytest.raises(BlazefaceError, match="^nms must be"):
        detector.detect(image, nms=-1)
    assert detector.conf == 0.2  # a refused value leaves the setting as it was


def test_landmark_vote_is_a_setting_that_moves_only_landmarks(image):
    """Voted landmarks (the default) differ from each detection's own prior's, boxes and scores do not;
    None turns the vote off; anything but None or a number in [0, 1] is refused."""
    detector = FaceDetector()
    voted = detector.detect(image)
    assert detector.landmark_vote == 0.7
    detector.landmark_vote = None
    own = detector.detect(image)
    np.testing.assert_array_equal(voted.boxes, own.boxes)
    np.testing.assert_array_equal(voted.scores, own.scores)
    assert not np.allclose(voted.landmarks, own.landmarks, atol=1e-3)
    assert np.abs(voted.landmarks - own.landmarks).max() < 0.2 * (own.boxes[:, 2] - own.boxes[:, 0]).min()
    for bad in (1.5, "0.7", True):
        with pytest.raises(BlazefaceError, match="^landmark_vote must be"):
            detector.landmark_vote = bad
    assert detector.landmark_vote is None


def test_cli_names_flags_where_the_library_names_arguments():
    assert cli_message("long_side must be an integer >= 0, got -1") == "--long-side must be an integer >= 0, got -1"
    assert cli_message("m.onnx holds model 'slim', not 'blaze': pass model='slim'") == (
        "m.onnx holds model 'slim', not 'blaze': pass --model slim")
    assert cli_message("fp16=True applies to ncnn exports") == "--fp16 applies to ncnn exports"


def test_cli_reports_a_bad_threshold_as_a_flag(capsys):
    assert main(["detect", "--conf", "3", str(SAMPLE)]) == 2
    err = capsys.readouterr().err  # checked when parsed: a usage error naming the flag, one line
    assert "--conf" in err and "must be a number in [0, 1]" in err and err.count("\n") == 1


# --- inputs --------------------------------------------------------------------------------------------


def test_rgb_arrays_with_color_rgb_match_bgr(detector, image):
    rgb = np.ascontiguousarray(image[:, :, ::-1])
    bgr_faces = detector.detect(image)
    assert detector.detect(rgb, color="rgb") == bgr_faces
    rgb_detector = FaceDetector(color="rgb")
    assert rgb_detector.detect(rgb) == bgr_faces
    assert rgb_detector.detect(SAMPLE) == bgr_faces  # files and PIL images know their own channel order


@pytest.mark.parametrize("bad, message", [
    (np.zeros((32, 32, 3), np.float32), r"dtype float32: expected a uint8 array \(H, W, 3\).*\* 255"),
    (np.zeros((32, 32, 3), np.uint16), r"dtype uint16: .*\(image >> 8\)\.astype\(np\.uint8\)"),
    (np.zeros((0, 0, 3), np.uint8), r"empty .*expected a uint8 array"),
    (np.zeros((32, 0, 3), np.uint8), r"empty"),
    (np.zeros((3, 32, 48), np.uint8), r"channels-first.*transpose\(1, 2, 0\)"),
    (np.zeros((32, 32, 5), np.uint8), r"shape \(32, 32, 5\): expected"),
    (np.zeros((2, 32, 32, 3), np.uint8), r"shape \(2, 32, 32, 3\): expected"),
    ([[0, 1], [2, 3]], r"cannot read an image from list"),
    (None, r"cannot read an image from NoneType"),
])
def test_unexpected_arrays_are_refused_saying_what_is_expected(detector, bad, message):
    with pytest.raises(BlazefaceError, match=message):
        detector.detect(bad)


def test_grayscale_and_alpha_arrays_are_accepted(detector, image):
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    assert len(detector.detect(gray)) > 0 and len(detector.detect(gray[:, :, None])) > 0
    assert detector.detect(cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)) == detector.detect(image)


# --- weights files -------------------------------------------------------------------------------------


def test_trained_weights_name_their_model(tmp_path, image):
    """A weights.pth with the trainer's metadata entry loads without naming the model; it stays a plain
    state dict for torch.load(weights_only=True)."""
    slim = create_model("slim")
    path = tmp_path / "weights.pth"
    torch.save(with_metadata(slim.state_dict(), slim.config), path)
    raw = torch.load(path, weights_only=True)
    assert json.loads(raw[META_KEY])["model"] == "slim"
    assert json.loads(raw[META_KEY])["config"]["priors"]["steps"] == list(get_config("slim").priors.steps)
    detector = FaceDetector(weights=path)
    assert detector.model_name == "slim"
    assert detector.detect(image) == FaceDetector("slim").detect(image)
    with pytest.raises(BlazefaceError, match="holds model 'slim', not 'blaze': pass model='slim'"):
        FaceDetector("blaze", weights=path)
    with pytest.raises(BlazefaceError, match="holds model 'slim'"):
        create_model("rfb", weights=path)


def test_weights_without_metadata_default_to_blaze(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save(torch.load(shipped_weights("blaze"), weights_only=True), path)
    assert FaceDetector(weights=path).model_name == "blaze"


def test_backend_comes_from_the_suffix(tmp_path):
    with pytest.raises(BlazefaceError, match="no such file"):
        FaceDetector(weights=tmp_path / "m.onnx")  # onnx backend chosen from the suffix, then the file checked
    with pytest.raises(BlazefaceError, match="is an onnx model: pass backend='onnx'"):
        FaceDetector(weights=tmp_path / "m.onnx", backend="torch")
    with pytest.raises(BlazefaceError, match="^backend must be one of torch, onnx, ncnn; got 'tf'"):
        FaceDetector(backend="tf")
