"""The WIDER FACE protocol (see blazeface.evaluation.widerface) pinned on hand-made cases, against a literal loop
implementation on random ones, on the real ground truth, and through ``blazeface evaluate widerface``."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from scipy.io import savemat

from blazeface import BlazefaceError
from blazeface.cli import main
from blazeface.evaluation import widerface as wf
from blazeface.evaluation.widerface import GroundTruth, evaluate_predictions
from blazeface.inference import Face
from conftest import DATA, REPO, requires_shared

GT_DIR = DATA / "widerface" / "ground_truth"
VAL = DATA / "widerface" / "val"
BLAZE_640 = DATA / "reference_weights" / "Blaze_Final_640.pth"


def make_gt(images) -> GroundTruth:
    """images: [(key, boxes xywh, {setting: kept 0-based indices})]; a setting left out keeps nothing."""
    events, names, boxes, keep = [], [], [], {s: [] for s in wf.SETTINGS}
    for key, faces, kept in images:
        event, name = key.split("/")
        events.append(event)
        names.append(name)
        boxes.append(np.asarray(faces, np.float64).reshape(-1, 4))
        for s in wf.SETTINGS:
            keep[s].append(np.asarray(kept.get(s, []), np.int64))
    return GroundTruth(events, names, boxes, keep)


def all_kept(n):
    return {s: list(range(n)) for s in wf.SETTINGS}


def aps(result):
    return [result.easy, result.medium, result.hard]


# --------------------------------------------------------------------------------------------------
# A literal, loop-by-loop implementation of the protocol (the module docstring of
# blazeface.evaluation.widerface): the oracle for the vectorised one.


def oracle(predictions, gt):
    lo, hi = 1.0, 0.0
    for rows in predictions.values():
        rows = np.asarray(rows, float).reshape(-1, 5)
        if len(rows):
            lo, hi = min(lo, rows[:, 4].min()), max(hi, rows[:, 4].max())
    result = []
    for setting in wf.SETTINGS:
        proposals, hits, faces = np.zeros(1000), np.zeros(1000), 0
        for key, rows in predictions.items():
            rows = np.array(rows, float).reshape(-1, 5)
            rows[:, 4] = (rows[:, 4] - lo) / (hi - lo)
            i = gt.index[key]
            boxes, kept = gt.boxes[i], set(gt.keep[setting][i].tolist())
            faces += len(kept)
            if len(boxes) == 0 or len(rows) == 0:
                continue
            state = [0] * len(boxes)  # 0 unseen, 1 recalled, -1 ignored
            is_proposal, recalled = [], []
            for x, y, w, h, _ in rows:
                best, best_j = 0.0, 0
                for j, (gx, gy, gw, gh) in enumerate(boxes):
                    iw = min(x + w, gx + gw) - max(x, gx) + 1
                    ih = min(y + h, gy + gh) - max(y, gy) + 1
                    if iw > 0 and ih > 0:
                        iou = iw * ih / ((w + 1) * (h + 1) + (gw + 1) * (gh + 1) - iw * ih)
                        if iou > best:
                            best, best_j = iou, j
                ignored = False
                if best >= 0.5:
                    if best_j not in kept:
                        state[best_j], ignored = -1, True
                    elif state[best_j] == 0:
                        state[best_j] = 1
                is_proposal.append(not ignored)
                recalled.append(state.count(1))
            for t in range(1000):
                passing = [k for k, s in enumerate(rows[:, 4]) if s >= 1 - (t + 1) / 1000]
                if passing:
                    last = passing[-1]
                    proposals[t] += sum(is_proposal[:last + 1])
                    hits[t] += recalled[last]
        with np.errstate(all="ignore"):
            precision, recall = hits / proposals, hits / faces
        mrec = [0.0, *recall, 1.0]
        mpre = [0.0, *np.nan_to_num(precision), 0.0]
        for k in range(len(mpre) - 1, 0, -1):
            mpre[k - 1] = max(mpre[k - 1], mpre[k])
        result.append(float(np.sum([(mrec[k + 1] - mrec[k]) * mpre[k + 1] for k in range(len(mrec) - 1)
                                    if mrec[k + 1] != mrec[k]])))
    return result


def synthesize(n_images, rng, max_faces=12, max_random=30, shuffle=False):
    """Random faces and settings; predictions = jittered faces (some twice, some missed) + random boxes."""
    images, predictions = [], {}
    for i in range(n_images):
        n = int(rng.integers(0, max_faces))
        faces = np.round(np.c_[rng.uniform(0, 500, (n, 2)), rng.uniform(2, 120, (n, 2))])
        hard = np.flatnonzero(rng.random(n) < 0.8)
        medium = hard[rng.random(len(hard)) < 0.6]
        easy = medium[rng.random(len(medium)) < 0.5]
        key = f"{i % 7}--Event/img_{i}"
        images.append((key, faces, {"easy": easy, "medium": medium, "hard": hard}))
        j = rng.integers(0, n, int(rng.integers(0, 2 * n + 1))) if n else np.zeros(0, int)
        jittered = faces[j] + rng.normal(0, 0.1, (len(j), 4)) * np.c_[faces[j, 2:], faces[j, 2:]]
        r = int(rng.integers(0, max_random))
        noise = np.c_[rng.uniform(0, 500, (r, 2)), rng.uniform(2, 100, (r, 2))]
        rows = np.r_[np.c_[jittered, rng.uniform(0.3, 1, len(j))], np.c_[noise, rng.uniform(0.01, 0.7, r)]]
        if shuffle:
            rng.shuffle(rows)
        else:
            rows = rows[np.argsort(-rows[:, 4], kind="stable")]
        predictions[key] = rows if rng.random() > 0.05 else rows[:0]
    return make_gt(images), predictions


# --------------------------------------------------------------------------------------------------
# Hand-made cases


def test_iou_uses_the_plus_one_convention():
    iou = wf.box_overlaps(np.array([[0, 0, 10, 10], [0, 0, 9, 9], [30, 30, 5, 5]]),
                          np.array([[5, 0, 10, 10], [0, 0, 9, 9]]))
    assert iou[0, 0] == pytest.approx(66 / (121 + 121 - 66))  # x2 = x + w, widths x2 - x1 + 1
    assert iou[1, 1] == 1.0
    assert iou[2].tolist() == [0.0, 0.0]


def test_perfect_predictions_score_one():
    gt = make_gt([("0--A/a", [[10, 10, 40, 40], [100, 100, 20, 30]], all_kept(2)),
                  ("0--A/b", [[5, 5, 50, 60]], all_kept(1))])
    preds = {"0--A/a": [[10, 10, 40, 40, 0.9], [100, 100, 20, 30, 0.8]], "0--A/b": [[5, 5, 50, 60, 0.7]]}
    result = evaluate_predictions(preds, gt)
    assert aps(result) == [1.0, 1.0, 1.0]
    assert result.images == 2 and result.curves["hard"].faces == 3


def test_a_match_to_a_face_outside_the_setting_is_ignored_not_false():
    # Face 0 is kept by every setting, face 1 only by hard; the best prediction hits face 1.
    gt = make_gt([("0--A/a", [[10, 10, 40, 40], [200, 10, 40, 40]], {"easy": [0], "medium": [0], "hard": [0, 1]})])
    preds = {"0--A/a": [[200, 10, 40, 40, 0.9], [10, 10, 40, 40, 0.5]]}
    result = evaluate_predictions(preds, gt)
    assert aps(result) == [1.0, 1.0, 1.0]
    easy = result.curves["easy"]
    assert easy.proposals[-1] == 1 and easy.true_positives[-1] == 1 and easy.faces == 1
    # A setting keeping no face of the image: everything it matches is ignored; no face, no AP.
    gt = make_gt([("0--A/a", [[10, 10, 40, 40]], {"hard": [0]})])
    result = evaluate_predictions({"0--A/a": [[10, 10, 40, 40, 0.9]]}, gt)
    assert np.isnan(result.easy) and result.hard == 1.0
    assert result.to_dict()["easy"] is None


def test_a_duplicate_is_a_false_positive():
    # Normalised scores 1, 0.5, 0: the duplicate (0.5) costs precision until face 2 is found at 0.
    gt = make_gt([("0--A/a", [[10, 10, 40, 40], [200, 10, 40, 40]], all_kept(2))])
    preds = {"0--A/a": [[10, 10, 40, 40, 0.9], [11, 10, 40, 40, 0.8], [200, 10, 40, 40, 0.7]]}
    result = evaluate_predictions(preds, gt)
    assert result.hard == pytest.approx(0.5 * 1 + 0.5 * 2 / 3, abs=1e-12)
    curve = result.curves["hard"]
    assert curve.proposals[-1] == 3 and curve.true_positives[-1] == 2


def test_an_image_without_predictions_still_counts_its_faces():
    gt = make_gt([("0--A/a", [[10, 10, 40, 40]], all_kept(1)), ("0--A/b", [[10, 10, 40, 40]], all_kept(1))])
    result = evaluate_predictions({"0--A/a": [[10, 10, 40, 40, 0.9]], "0--A/b": np.zeros((0, 5))}, gt)
    assert aps(result) == [0.5, 0.5, 0.5]


def test_an_image_without_faces_only_counts_for_normalisation():
    gt = make_gt([("0--A/a", [[10, 10, 40, 40], [200, 10, 40, 40]], all_kept(2)), ("1--B/empty", [], {})])
    preds = {"0--A/a": [[10, 10, 40, 40, 0.6], [200, 10, 40, 40, 0.4502], [500, 500, 40, 40, 0.45]]}
    # Alone, the scores normalise to 1 / 0.0013 / 0: the second hit passes threshold 0.001 before the false
    # positive (at 0) does, so precision is 1 until recall is 1.
    assert aps(evaluate_predictions(preds, gt)) == [1.0, 1.0, 1.0]
    # The faceless image's predictions are no false positives, but they stretch the score range: the second
    # hit (0.38954) and the false positive (0.38932) now enter at the same threshold (0.389).
    preds["1--B/empty"] = [[0, 0, 50, 50, 0.999], [60, 0, 50, 50, 0.1]]
    stretched = evaluate_predictions(preds, gt)
    assert stretched.hard == pytest.approx(0.5 + 0.5 * 2 / 3, abs=1e-12)
    assert stretched.images == 2 and stretched.predictions == 5
    assert stretched.curves["hard"].proposals.max() == 3
    assert aps(stretched) == pytest.approx(oracle(preds, gt), abs=1e-12, rel=0)


def test_score_normalisation():
    assert wf.normalize_scores(np.array([0.2, 0.4, 0.6])) == pytest.approx([0, 0.5, 1])
    # The reference's running minimum starts at 1 and its maximum at 0.
    assert wf.normalize_scores(np.array([2.0, 3.0])) == pytest.approx([0.5, 1.0])
    assert wf.normalize_scores(np.array([-1.0, -0.5])) == pytest.approx([0, 1 / 2])
    assert wf.normalize_scores(np.array([1.0, 1.0])).tolist() == [1.0, 1.0]  # empty range: all pass
    assert wf.normalize_scores(np.zeros(0)).shape == (0,)
    # AP depends on scores only through their normalised order and threshold steps.
    gt, preds = synthesize(20, np.random.default_rng(3))
    scaled = {k: np.c_[v[:, :4], v[:, 4] * 0.5 + 0.2] for k, v in preds.items()}
    assert aps(evaluate_predictions(scaled, gt)) == pytest.approx(aps(evaluate_predictions(preds, gt)), abs=1e-12)


def test_thresholds_take_every_prediction_up_to_the_last_passing_one_in_file_order():
    gt = make_gt([("0--A/a", [[10, 10, 40, 40]], all_kept(1))])
    # File order: a low-score false positive BEFORE the high-score hit. Sorted, AP would be 1.
    result = evaluate_predictions({"0--A/a": [[300, 300, 40, 40, 0.2], [10, 10, 40, 40, 0.9]]}, gt)
    assert aps(result) == [0.5, 0.5, 0.5]
    assert result.curves["easy"].proposals[0] == 2


def test_thousand_thresholds_and_voc_ap():
    th = wf.thresholds()
    assert len(th) == 1000 and th[0] == 1 - 1 / 1000 and th[-1] == 0.0
    assert wf.voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(0.5 + 1 / 3)
    assert wf.voc_ap(np.array([0.25, 0.5]), np.array([0.5, 1.0])) == pytest.approx(0.5)  # envelope


def test_no_predictions_at_all():
    gt = make_gt([("0--A/a", [[10, 10, 40, 40]], all_kept(1))])
    result = evaluate_predictions({"0--A/a": np.zeros((0, 5))}, gt)
    assert aps(result) == [0.0, 0.0, 0.0] and result.predictions == 0


def test_unknown_image_and_bad_shapes_are_errors():
    gt = make_gt([("0--A/a", [[10, 10, 40, 40]], all_kept(1))])
    with pytest.raises(BlazefaceError, match="not an image of the ground truth"):
        evaluate_predictions({"0--A/zzz": np.zeros((0, 5))}, gt)
    with pytest.raises(BlazefaceError, match="x y w h score"):
        evaluate_predictions({"0--A/a": np.zeros((3, 4))}, gt)


@pytest.mark.parametrize("seed", range(6))
def test_matches_the_literal_protocol_exactly(seed):
    gt, preds = synthesize(25, np.random.default_rng(seed), shuffle=seed % 2 == 1)
    assert aps(evaluate_predictions(preds, gt)) == pytest.approx(oracle(preds, gt), abs=1e-12, rel=0)


@pytest.mark.parametrize("seed", range(3))
def test_matched_images_drawn_twice_count_as_two_images(seed):
    """evaluate_matches over a draw with repeats (compare_ap.py's bootstrap) equals the literal protocol over a
    ground truth in which each repeat is an image of its own."""
    rng = np.random.default_rng(seed)
    gt, preds = synthesize(20, rng)
    keys = list(preds)
    matches = wf.match_images(preds, gt)
    draw = rng.integers(0, len(keys), len(keys))
    images, drawn = [], {}
    for copy, n in enumerate(draw):
        i = gt.index[keys[n]]
        key = f"{keys[n]}#{copy}"
        images.append((key, gt.boxes[i], {s: gt.keep[s][i] for s in wf.SETTINGS}))
        drawn[key] = preds[keys[n]]
    expected = oracle(drawn, make_gt(images))
    assert aps(wf.evaluate_matches([matches[n] for n in draw])) == pytest.approx(expected, abs=1e-12, rel=0)


def test_3226_images_with_700k_predictions():
    """A full val-set-sized run (its speed is measured by benchmarks/bench_evaluation.py)."""
    gt, preds = synthesize(3226, np.random.default_rng(11), max_faces=25, max_random=500)
    n = sum(len(p) for p in preds.values())
    assert n > 700_000
    result = evaluate_predictions(preds, gt)
    assert result.images == 3226 and result.predictions == n and 0 < result.hard < 1


# --------------------------------------------------------------------------------------------------
# Prediction files, lists, ground-truth files


def test_prediction_files_round_trip(tmp_path):
    preds = {"0--A/a": np.array([[1.234, 2, 30.5, 40, 0.987654321], [5, 6, 7, 8, 0.5]]), "1--B/b": np.zeros((0, 5))}
    wf.write_predictions(tmp_path, preds)
    text = (tmp_path / "0--A" / "a.txt").read_text()
    assert text.splitlines()[:2] == ["a", "2"] and text.splitlines()[2] == "1.23 2.00 30.50 40.00 0.987654"
    back, missing = wf.read_predictions(tmp_path, list(preds))
    assert not missing and back["1--B/b"].shape == (0, 5)
    assert back["0--A/a"] == pytest.approx(np.array([[1.23, 2, 30.5, 40, 0.987654], [5, 6, 7, 8, 0.5]]))
    gt = make_gt([(k, [], {}) for k in ["0--A/a", "1--B/b", "1--B/c"]])
    assert wf.find_prediction_keys(tmp_path, gt) == ["0--A/a", "1--B/b"]


def test_faces_to_rows_is_what_gets_written():
    faces = [Face(np.array([10.123, 20.5, 50.777, 80.0], np.float32), 0.3, np.zeros((5, 2))),
             Face(np.array([1.0, 2.0, 3.0, 4.0], np.float32), 0.91234567, np.zeros((5, 2)))]
    rows = wf.faces_to_rows(faces)
    assert rows[:, 4].tolist() == [0.912346, 0.3]  # by descending score
    assert rows[1, :4] == pytest.approx([10.12, 20.5, 40.65, 59.5], abs=0.006)
    assert np.array_equal(wf.parse_predictions(wf.format_predictions("x", rows)), rows)
    assert wf.faces_to_rows([]).shape == (0, 5)


def test_other_tools_layouts_parse():
    # Trailing spaces, integer boxes, extra columns (landmarks), a trailing blank line, CRLF.
    rows = wf.parse_predictions("0--A/a.jpg\r\n2\r\n1 2 3 4 0.9 \r\n5 6 7 8 0.8 1 2 3\r\n\r\n")
    assert rows.tolist() == [[1, 2, 3, 4, 0.9], [5, 6, 7, 8, 0.8]]
    assert wf.parse_predictions("a\n0\n").shape == (0, 5)


@pytest.mark.parametrize("text, where, problem", [
    ("", "", "expected the image name"),
    ("a\nthree\n1 2 3 4 0.5\n", ":2:", "expected the number of boxes"),
    ("a\n2\n1 2 3 4 0.5\n", ":2:", "says 2 boxes but 1"),
    ("a\n2\n1 2 3 4 0.5\n1 2 3 x 0.5\n", ":4:", "not a number"),
    ("a\n1\n1 2 3 4\n", ":3:", "expected x y w h score"),
    ("a\n1\n1 2 3 4 nan\n", ":3:", "non-finite"),
])
def test_corrupt_prediction_files_name_file_and_line(tmp_path, text, where, problem):
    path = tmp_path / "0--A" / "a.txt"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(BlazefaceError, match=problem) as info:
        wf.read_prediction_file(path)
    assert f"{path}{where}" in str(info.value) and "\n" not in str(info.value)


def test_missing_prediction_file(tmp_path):
    (tmp_path / "0--A").mkdir()
    with pytest.raises(BlazefaceError, match="0--A/a.txt: no prediction file for listed image 0--A/a"):
        wf.read_predictions(tmp_path, ["0--A/a"])
    preds, missing = wf.read_predictions(tmp_path, ["0--A/a"], allow_missing=True)
    assert missing == ["0--A/a"] and preds["0--A/a"].shape == (0, 5)
    with pytest.raises(BlazefaceError, match="no such predictions folder"):
        wf.read_predictions(tmp_path / "nope", ["0--A/a"])


def test_image_lists(tmp_path):
    gt = make_gt([("0--A/a", [], {}), ("0--A/b", [], {}), ("1--B/c", [], {})])
    good = tmp_path / "list.txt"
    good.write_text("/1--B/c.jpg\n\n0--A/a.jpg\n")
    assert wf.read_image_list(good, gt) == ["1--B/c", "0--A/a"]
    for text, line, problem in [("/0--A/a.jpg\n/0--A/zz.jpg\n", 2, "not an image of the WIDER FACE val"),
                                ("/0--A/a.jpg\njunk\n", 2, "expected /event/name.jpg"),
                                ("/0--A/a.jpg\n/0--A/a.jpg\n", 2, "listed twice")]:
        good.write_text(text)
        with pytest.raises(BlazefaceError, match=problem) as info:
            wf.read_image_list(good, gt)
        assert f"{good}:{line}:" in str(info.value)
    with pytest.raises(BlazefaceError, match="no such file"):
        wf.read_image_list(tmp_path / "nope.txt", gt)


def cell(items):
    out = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        out[i, 0] = item
    return out


def write_gt_mats(folder, gt: GroundTruth):
    """The official .mat layout (cell arrays per event) for a hand-made ground truth, with its per-face
    attribute labels where it has them."""
    folder.mkdir(parents=True, exist_ok=True)
    events = list(dict.fromkeys(gt.events))
    per_event = [[i for i in range(len(gt)) if gt.events[i] == e] for e in events]
    common = {"event_list": cell([np.array([e]) for e in events]),
              "file_list": cell([cell([np.array([gt.names[i]]) for i in idx]) for idx in per_event]),
              "face_bbx_list": cell([cell([gt.boxes[i].astype(np.int32) for i in idx]) for idx in per_event])}
    labels = {f"{name}_label_list": cell([cell([codes[i].reshape(-1, 1).astype(np.int32) for i in idx])
                                          for idx in per_event]) for name, codes in gt.attributes.items()}
    savemat(folder / "wider_face_val.mat", {**common, **labels})
    for s in wf.SETTINGS:
        gt_list = cell([cell([(gt.keep[s][i] + 1).reshape(-1, 1).astype(np.uint16) for i in idx]) for idx in per_event])
        savemat(folder / f"wider_{s}_val.mat", {**common, "gt_list": gt_list})
    return folder


def test_ground_truth_mat_round_trip_and_errors(tmp_path):
    gt, _ = synthesize(9, np.random.default_rng(5))
    loaded = wf.load_ground_truth(write_gt_mats(tmp_path / "gt", gt))
    assert sorted(loaded.keys) == sorted(gt.keys)  # the .mat groups images by event
    for key, i in gt.index.items():
        j = loaded.index[key]
        assert np.array_equal(loaded.boxes[j], gt.boxes[i])
        assert all(np.array_equal(loaded.keep[s][j], gt.keep[s][i]) for s in wf.SETTINGS)
    assert loaded.attributes == {}  # a ground truth without per-face labels
    with pytest.raises(BlazefaceError, match="no such folder"):
        wf.load_ground_truth(tmp_path / "nope")
    (tmp_path / "gt" / "wider_hard_val.mat").unlink()
    with pytest.raises(BlazefaceError, match="wider_hard_val.mat: no such file"):
        wf.load_ground_truth(tmp_path / "gt")
    (tmp_path / "gt" / "wider_hard_val.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(BlazefaceError, match="wider_hard_val.mat"):
        wf.load_ground_truth(tmp_path / "gt")


def test_ground_truth_reads_wider_per_face_labels(tmp_path):
    """blur / occlusion / pose / illumination / expression codes come with their faces (the diagnostics'
    --by); a label list that misses faces is the one-line error of a broken ground truth."""
    gt, _ = synthesize(9, np.random.default_rng(6))
    rng = np.random.default_rng(7)
    gt.attributes = {name: [rng.integers(0, len(codes), len(b)) for b in gt.boxes]
                     for name, codes in wf.ATTRIBUTES.items()}
    loaded = wf.load_ground_truth(write_gt_mats(tmp_path / "gt", gt))
    assert set(loaded.attributes) == set(wf.ATTRIBUTES)
    for key, i in gt.index.items():
        j = loaded.index[key]
        assert all(np.array_equal(loaded.attributes[a][j], gt.attributes[a][i]) for a in wf.ATTRIBUTES)
    short = next(i for i, b in enumerate(gt.boxes) if len(b))
    gt.attributes["pose"][short] = gt.attributes["pose"][short][:-1]
    with pytest.raises(BlazefaceError, match="pose_label_list does not label every face"):
        wf.load_ground_truth(write_gt_mats(tmp_path / "bad", gt))


@requires_shared
def test_the_official_ground_truth_labels_pose_and_occlusion():
    gt = wf.load_ground_truth(GT_DIR)
    assert set(gt.attributes) == set(wf.ATTRIBUTES)
    pose = np.concatenate(gt.attributes["pose"])
    assert len(pose) == gt.num_faces and set(np.unique(pose)) == {0, 1}


# --------------------------------------------------------------------------------------------------
# Running a detector over a folder (a stand-in detector: same-size batching, order, missing images)


class FakeDetector:
    """Input size = the image size; one face per image whose score is the image's pixel value / 255."""

    def __init__(self):
        self.batches = []

    def letterbox(self, width, height):
        from blazeface.inference import letterbox_size

        return letterbox_size(width, height, 0, 16)

    def detect_batch(self, images, batch_size=8):
        self.batches.append([im.shape[:2] for im in images])
        return [[Face(np.array([1, 2, 11, 22], np.float32), float(im[0, 0, 0]) / 255, np.zeros((5, 2)))]
                for im in images]


def write_images(root, keys, sizes):
    for n, (key, (w, h)) in enumerate(zip(keys, sizes)):
        path = root / f"{key}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((h, w, 3), 10 * (n + 1), np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 100])


def test_predict_folder_batches_same_sizes_and_keeps_order(tmp_path):
    keys = [f"0--A/im{i}" for i in range(7)]
    sizes = [(64, 48), (48, 64), (64, 48), (64, 48), (48, 64), (32, 32), (64, 48)]
    write_images(tmp_path, keys, sizes)
    detector = FakeDetector()
    preds = wf.predict_folder(detector, tmp_path, keys, batch_size=2, progress=False)
    assert list(preds) == keys
    assert [round(p[0, 4] * 255) for p in preds.values()] == [10 * (i + 1) for i in range(7)]
    assert preds[keys[0]][0, :4].tolist() == [1, 2, 10, 20]  # x y w h
    for batch in detector.batches:
        assert len(set(batch)) == 1 and len(batch) <= 2
    with pytest.raises(BlazefaceError, match="im9.jpg: no such image"):
        wf.predict_folder(detector, tmp_path, keys + ["0--A/im9"], progress=False)


# --------------------------------------------------------------------------------------------------
# The command


@pytest.fixture()
def tiny(tmp_path):
    """A hand-made ground truth written as .mat files, and a predictions folder for it."""
    gt = make_gt([("0--A/a", [[10, 10, 40, 40], [200, 10, 40, 40]], {"easy": [0], "medium": [0, 1], "hard": [0, 1]}),
                  ("0--A/b", [[10, 10, 40, 40]], all_kept(1)),
                  ("1--B/c", [[50, 50, 20, 20]], {"hard": [0]})])
    preds = {"0--A/a": np.array([[10, 10, 40, 40, 0.9], [300, 300, 40, 40, 0.6], [200, 10, 40, 40, 0.5]]),
             "0--A/b": np.array([[12, 10, 40, 40, 0.8]]),
             "1--B/c": np.array([[50, 50, 20, 20, 0.4]])}
    write_gt_mats(tmp_path / "gt", gt)
    wf.write_predictions(tmp_path / "pred", preds)
    (tmp_path / "list.txt").write_text("/0--A/a.jpg\n/0--A/b.jpg\n")
    return tmp_path, gt, preds


def evaluate_cli(capsys, *args):
    code = main(["evaluate", "widerface", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_json_is_exactly_the_contract(tiny, capsys):
    root, gt, preds = tiny
    code, out, _ = evaluate_cli(capsys, "--gt", root / "gt", "--predictions", root / "pred", "--json")
    assert code == 0
    data = json.loads(out)
    assert list(data) == ["easy", "medium", "hard", "images"] and data["images"] == 3
    expected = evaluate_predictions(wf.read_predictions(root / "pred", gt.keys)[0], gt)
    assert [data["easy"], data["medium"], data["hard"]] == aps(expected)
    assert aps(expected) == pytest.approx(oracle(preds, gt), abs=1e-12, rel=0)


def test_cli_table_and_subset(tiny, capsys):
    root, gt, preds = tiny
    code, out, _ = evaluate_cli(capsys, "--gt", root / "gt", "--predictions", root / "pred")
    assert code == 0 and "3 of the 3 ground-truth images" in out
    for setting in wf.SETTINGS:
        assert setting in out
    code, out, _ = evaluate_cli(capsys, "--gt", root / "gt", "--predictions", root / "pred", "--list",
                                root / "list.txt", "--json", "--plot", root / "pr.png")
    assert code == 0 and json.loads(out)["images"] == 2
    subset = {k: preds[k] for k in ["0--A/a", "0--A/b"]}
    assert json.loads(out)["hard"] == pytest.approx(oracle(subset, gt)[2], abs=1e-12)
    image = cv2.imread(str(root / "pr.png"))
    assert image is not None and image.shape[0] > 100


def test_cli_missing_prediction_file(tiny, capsys):
    root, _, _ = tiny
    (root / "pred" / "0--A" / "b.txt").unlink()
    code, out, err = evaluate_cli(capsys, "--gt", root / "gt", "--predictions", root / "pred", "--list",
                                  root / "list.txt")
    assert code == 2 and out == ""
    assert "b.txt: no prediction file for listed image 0--A/b" in err and err.count("\n") == 1
    code, out, err = evaluate_cli(capsys, "--gt", root / "gt", "--predictions", root / "pred", "--list",
                                  root / "list.txt", "--allow-missing")
    assert code == 0 and "1 of them had no prediction file and count as NO DETECTIONS" in out and "0--A/b" in out
    code, out, err = evaluate_cli(capsys, "--gt", root / "gt", "--predictions", root / "pred", "--list",
                                  root / "list.txt", "--allow-missing", "--json")
    assert code == 0 and json.loads(out)["images"] == 2 and "count as no detections" in err


@pytest.mark.parametrize("case, problem", [
    ("corrupt", "a.txt:4: not a number"),
    ("bad_list", "list.txt:2: expected /event/name.jpg"),
    ("no_gt", "no such folder"),
    ("weights_with_predictions", "--model/--weights run a detector"),
    ("no_images", "no such images folder"),
    ("empty_folder", "holds no ground-truth image"),
])
def test_cli_bad_inputs_are_one_line_errors(tiny, capsys, case, problem):
    root, _, _ = tiny
    args = ["--gt", root / "gt", "--predictions", root / "pred"]
    if case == "corrupt":
        (root / "pred" / "0--A" / "a.txt").write_text("a\n2\n1 2 3 4 0.5\n1 2 3 oops 0.5\n")
    elif case == "bad_list":
        (root / "list.txt").write_text("/0--A/a.jpg\nnot-a-path\n")
        args += ["--list", root / "list.txt"]
    elif case == "no_gt":
        args[1] = root / "missing"
    elif case == "weights_with_predictions":
        args += ["--weights", "x.pth"]
    elif case == "no_images":
        args = ["--gt", root / "gt", "--images", root / "nope"]
    elif case == "empty_folder":
        (root / "empty").mkdir()
        args[3] = root / "empty"
    code, out, err = evaluate_cli(capsys, *args)
    assert code == 2 and problem in err and err.count("\n") == 1 and out == ""


# --------------------------------------------------------------------------------------------------
# The real ground truth and model (skipped without ../shared)


@pytest.fixture(scope="module")
def real_gt():
    if not GT_DIR.is_dir():
        pytest.skip("../shared/data is not present")
    return wf.load_ground_truth(GT_DIR)


@requires_shared
def test_real_ground_truth(real_gt):
    assert len(real_gt) == 3226 and real_gt.num_faces == 39708
    assert len(set(real_gt.events)) == 61
    assert [real_gt.kept_faces(s) for s in wf.SETTINGS] == [7211, 13319, 31958]
    keys = wf.read_image_list(VAL / "wider_val.txt", real_gt)
    assert len(keys) == 263
    # The ground truth itself, with scores, scores AP 1 in every setting, on the subset and in full.
    rng = np.random.default_rng(0)
    perfect = {k: np.c_[real_gt.boxes[real_gt.index[k]], rng.uniform(0.1, 1, len(real_gt.boxes[real_gt.index[k]]))]
               for k in real_gt.keys}
    assert aps(evaluate_predictions({k: perfect[k] for k in keys}, real_gt)) == [1.0, 1.0, 1.0]
    full = evaluate_predictions(perfect, real_gt)
    # Two hard faces cannot be recalled even by themselves: 21_Festival_Festival_21_604 lists one face twice
    # (the second copy's prediction matches the first, already recalled: a false positive), and
    # 39_Ice_Skating_iceskiing_39_583 has a box of width -2 (no overlap with anything). The protocol.
    assert aps(full) == pytest.approx([1.0, 1.0, 1.0], abs=2e-4) and min(aps(full)) < 1
    assert full.curves["hard"].true_positives[-1] == 31958 - 2


@requires_shared
def test_real_model_save_and_reevaluate(real_gt, tmp_path, capsys):
    if not BLAZE_640.is_file():
        pytest.skip("reference weights are not present")
    keys = wf.read_image_list(VAL / "wider_val.txt", real_gt)[:12]
    (tmp_path / "list.txt").write_text("".join(f"/{k}.jpg\n" for k in keys))
    common = ["--gt", GT_DIR, "--list", tmp_path / "list.txt", "--json"]
    code, out, _ = evaluate_cli(capsys, *common, "--images", VAL / "images", "--weights", BLAZE_640, "--long-side", 320,
                                "--save-predictions", tmp_path / "pred")
    assert code == 0
    by_model = json.loads(out)
    assert by_model["images"] == 12 and 0.5 < by_model["easy"] <= 1 and 0.1 < by_model["hard"] < by_model["easy"]
    assert len(list((tmp_path / "pred").rglob("*.txt"))) == 12
    code, out, _ = evaluate_cli(capsys, *common, "--predictions", tmp_path / "pred")
    assert code == 0 and json.loads(out) == by_model  # what is evaluated is exactly what is written
    # A listed ground-truth image that is not in the images folder (only 263 of 3,226 are).
    absent = next(k for k in real_gt.keys if not wf.image_path(VAL / "images", k).is_file())
    (tmp_path / "list.txt").write_text(f"/{keys[0]}.jpg\n/{absent}.jpg\n")
    code, out, err = evaluate_cli(capsys, *common, "--images", VAL / "images", "--weights", BLAZE_640,
                                  "--long-side", 320)
    assert code == 2 and f"{absent}.jpg: no such image" in err and err.count("\n") == 1
    code, out, err = evaluate_cli(capsys, *common[:-1], "--images", VAL / "images", "--weights", BLAZE_640,
                                  "--long-side", 320, "--allow-missing", "--save-predictions", tmp_path / "pred2")
    assert code == 0 and "1 of them had no image and count as NO DETECTIONS" in out and absent in out
    assert [p.stem for p in (tmp_path / "pred2").rglob("*.txt")] == [keys[0].split("/")[1]]


def test_compare_ap_bootstraps_two_prediction_folders(tmp_path):
    """benchmarks/compare_ap.py end to end on a hand-made split: a folder against itself differs by exactly 0 in
    every round; against a copy that lost a third of its images' detections, the observed differences are the
    protocol's and every round finds the copy worse on the hard setting."""
    gt, predictions = synthesize(40, np.random.default_rng(11))
    gt_dir = write_gt_mats(tmp_path / "gt", gt)
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"/{key}.jpg\n" for key in gt.keys))
    worse = {key: rows[:0] if i % 3 == 0 else rows for i, (key, rows) in enumerate(predictions.items())}
    for name, rows in (("base", predictions), ("worse", worse)):
        wf.write_predictions(tmp_path / name, rows)

    def compare(new):
        done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "compare_ap.py"), "--gt", str(gt_dir),
                               "--list", str(listing), "--rounds", "30", "--base", f"a={tmp_path / 'base'}",
                               "--new", f"b={tmp_path / new}"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    same = compare("base")
    assert all(r["difference"] == 0 and r["interval"] == [0, 0] and r["worse_share"] == 0 for r in same.values())
    report = compare("worse")
    written = [wf.evaluate_predictions(wf.read_predictions(tmp_path / n, gt.keys)[0], gt) for n in ("base", "worse")]
    for s in wf.SETTINGS:
        assert report[s]["difference"] == pytest.approx(written[1].ap(s) - written[0].ap(s), abs=1e-12)
    assert report["hard"]["difference"] < 0 and report["hard"]["worse_share"] == 1.0


def test_recall_by_attribute(tmp_path):
    """benchmarks/recall_by_size.py --by pose on a hand-made split: a model that finds exactly the typical-pose
    faces has recall 1 there and 0 on the atypical ones, and its stray box is its one false positive, of the
    background kind; a box shifted off a face by half its width is a mislocalised one."""
    gt, _ = synthesize(12, np.random.default_rng(3))
    rng = np.random.default_rng(4)
    gt.attributes = {"pose": [rng.integers(0, 2, len(b)) for b in gt.boxes]}
    predictions = {}
    for key, i in gt.index.items():
        typical = gt.boxes[i][gt.attributes["pose"][i] == 0]
        stray = [[900, 900, 20, 20, 0.9]] if i == 0 else []
        if i == 1:  # IoU (w/2 + 1) h / ((3w/2 + 1) h) of a w x h face: 0.3-0.5 for any w over 2 pixels
            x, y, w, h = gt.boxes[i][0]
            stray = [[x + w / 2, y, w, h, 0.9]]
        predictions[key] = np.array([*(list(b) + [0.9] for b in typical), *stray]).reshape(-1, 5)
    wf.write_predictions(tmp_path / "pred", predictions)
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"/{key}.jpg\n" for key in gt.keys))
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "recall_by_size.py"), "--by", "pose",
                           "--gt", str(write_gt_mats(tmp_path / "gt", gt)), "--list", str(listing),
                           "--setting", "hard", "--thresholds", "0.5", "--predictions", f"m={tmp_path / 'pred'}",
                           "--false-positive-kinds"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["bins"] == ["typical", "atypical"]
    assert report["recall"]["m@0.5"] == [1.0, 0.0] and report["false_positives"]["m@0.5"] == 2
    assert report["false_positive_kinds"]["m@0.5"] == {"mislocalised": 1, "near a face": 0, "background": 1}
