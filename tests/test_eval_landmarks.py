"""Landmark NME and detection rate (see blazeface.evaluation.landmarks) and ``blazeface evaluate landmarks``."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from blazeface import BlazefaceError
from blazeface.geometry import box_iou
from blazeface.cli import main
from blazeface.evaluation import landmarks as lm
from blazeface.inference import Face
from conftest import DATA, requires_shared

MTFL_DEV = DATA / "mtfl" / "dev"
BLAZE_640 = DATA / "reference_weights" / "Blaze_Final_640.pth"

TRUTH = np.array([[0, 0], [10, 0], [5, 5], [1, 9], [9, 9]], np.float64)  # eyes 10 px apart


def face(box, score, points=TRUTH):
    return Face(np.asarray(box, np.float32), float(score), np.asarray(points, np.float32))


def labelled(box=(-5, -5, 15, 15), points=TRUTH):
    return lm.LabelledFace(image=None, box=np.asarray(box, np.float64), points=np.asarray(points, np.float64))


def test_face_nme_is_mean_point_error_over_eye_distance():
    assert lm.face_nme(TRUTH, TRUTH) == 0.0
    assert lm.face_nme(TRUTH + [1.0, 0.0], TRUTH) == pytest.approx(0.1)
    shifted = TRUTH.copy()
    shifted[2] += [3, 4]  # only the nose, 5 px off: mean error 1 px
    assert lm.face_nme(shifted, TRUTH) == pytest.approx(0.1)


def test_match_takes_the_best_scoring_detection_passing_score_and_iou():
    box = np.array([0, 0, 100, 100], np.float64)
    good = face([0, 0, 100, 100], 0.7)
    better = face([10, 0, 110, 100], 0.9)  # IoU 0.82
    too_low = face([0, 0, 100, 100], 0.49)  # the best box, but under the score threshold
    too_far = face([60, 0, 160, 100], 0.99)  # IoU 0.25
    assert lm.match_detection(box, [good, better, too_low, too_far]) is better
    assert lm.match_detection(box, [too_low, too_far]) is None
    assert lm.match_detection(box, [face([0, 0, 100, 100], 0.5)]) is not None  # >= 0.5 counts
    assert lm.match_detection(box, []) is None
    assert box_iou(box, np.array([[50, 0, 150, 100]]))[0, 0] == pytest.approx(1 / 3)


def test_score_reports_nme_over_matched_faces_and_the_detection_rate():
    faces = [labelled(), labelled(), labelled(), labelled()]
    detections = [[face([-5, -5, 15, 15], 0.9, TRUTH + [1, 0])],  # NME 0.1
                  [face([-5, -5, 15, 15], 0.8, TRUTH + [0, 3])],  # NME 0.3
                  [face([-5, -5, 15, 15], 0.3)],  # score too low: missed
                  []]  # nothing found
    result = lm.score_landmarks(faces, detections)
    assert result.faces == 4 and result.matched == 2
    assert result.detected == 0.5 and result.nme == pytest.approx(0.2)
    assert result.to_dict() == pytest.approx({"nme": 0.2, "detected": 0.5, "faces": 4})
    nothing = lm.score_landmarks(faces, [[], [], [], []])
    assert np.isnan(nothing.nme) and nothing.to_dict() == {"nme": None, "detected": 0.0, "faces": 4}


def write_mtfl(root, rows):
    """rows: [(name, box, points, pixel value)] -> an MTFL folder with 64x64 images."""
    (root / "images").mkdir(parents=True)
    lines = ["# image  left top right bottom  5 x,y"]
    for name, box, points, value in rows:
        cv2.imwrite(str(root / "images" / name), np.full((64, 64, 3), value, np.uint8))
        lines.append(" ".join([name, *map(str, box), *(f"{v:.2f}" for v in np.ravel(points))]))
    (root / "labels.txt").write_text("\n".join(lines) + "\n")
    return root


class FakeDetector:
    """Finds one face at the labelled box; its landmarks are the truth shifted by (pixel value / 10) px."""

    def letterbox(self, width, height):
        from blazeface.inference import letterbox_size

        return letterbox_size(width, height, 0, 16)

    def detect_batch(self, images, batch_size=1):
        out = []
        for im in images:
            shift = float(im[0, 0, 0]) / 10
            out.append([face([10, 10, 50, 50], 0.9, TRUTH + 20 + [shift, 0])] if shift < 20 else [])
        return out


def test_evaluate_landmarks_on_a_folder(tmp_path):
    box = (10, 10, 50, 50)
    root = write_mtfl(tmp_path / "mtfl", [("a.jpg", box, TRUTH + 20, 10), ("b.jpg", box, TRUTH + 20, 30),
                                          ("c.jpg", box, TRUTH + 20, 250)])
    result = lm.evaluate_landmarks(FakeDetector(), root, progress=False)
    # a: 1 px off, b: 3 px off, c: not detected.
    assert result.faces == 3 and result.matched == 2
    assert result.nme == pytest.approx(0.2, abs=1e-6) and result.detected == pytest.approx(2 / 3)


def test_bad_folders_are_one_line_errors(tmp_path):
    with pytest.raises(BlazefaceError, match="no such folder"):
        lm.read_faces(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BlazefaceError, match="labels.txt: no such file"):
        lm.read_faces(tmp_path / "empty")
    root = write_mtfl(tmp_path / "bad", [("a.jpg", (10, 10, 50, 50), TRUTH + 20, 10)])
    with open(root / "labels.txt", "a") as f:
        f.write("b.jpg 1 2 3\n")
    with pytest.raises(BlazefaceError, match=r"labels.txt:3:"):
        lm.read_faces(root)
    root = write_mtfl(tmp_path / "missing", [("a.jpg", (10, 10, 50, 50), TRUTH + 20, 10)])
    (root / "images" / "a.jpg").unlink()
    with pytest.raises(BlazefaceError, match="a.jpg: no such image"):
        lm.evaluate_landmarks(FakeDetector(), root, progress=False)
    code = main(["evaluate", "landmarks", "--data", str(tmp_path / "nope")])
    assert code == 2


@requires_shared
def test_cli_on_real_mtfl(tmp_path, capsys):
    if not BLAZE_640.is_file():
        pytest.skip("reference weights are not present")
    # The first 16 labelled faces of mtfl/dev.
    lines = [ln for ln in (MTFL_DEV / "labels.txt").read_text().splitlines() if ln and not ln.startswith("#")][:16]
    (tmp_path / "images").mkdir()
    for line in lines:
        shutil.copy(MTFL_DEV / "images" / line.split()[0], tmp_path / "images")
    (tmp_path / "labels.txt").write_text("\n".join(lines) + "\n")
    args = ["evaluate", "landmarks", "--model", "blaze", "--weights", str(BLAZE_640), "--data", str(tmp_path)]
    assert main(args + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data) == ["nme", "detected", "faces"] and data["faces"] == 16
    assert data["detected"] >= 0.6 and 0 < data["nme"] < 0.2
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "NME" in out and "detected" in out and "of 16 faces" in out and "landmark vote IoU > 0.7" in out
