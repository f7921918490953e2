"""Exactness of the fast NMS against the plain greedy loop it replaces.

The reference below is the classic loop of the original repositories, written out independently: every
case must give the same kept indices in the same order, not merely a similar result.
"""
import numpy as np
import pytest

from blazeface import postprocess as pp
from blazeface.box_coding import decode_boxes, decode_landmarks
from blazeface.postprocess import PostprocessConfig, nms, nms_pairs, pair_iou, postprocess


def reference_nms(boxes, scores, thresh):
    """Greedy NMS, float32, +1 pixel convention; ties in score broken by index."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.lexsort((np.arange(len(b)), -np.asarray(scores)))
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        w = np.maximum(0.0, xx2 - xx1 + 1)
        h = np.maximum(0.0, yy2 - yy1 + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= thresh)[0] + 1]
    return np.array(keep, dtype=np.int64)


def assert_same(boxes, scores, thresh):
    got = nms(boxes, scores, thresh)
    want = reference_nms(boxes, scores, thresh)
    np.testing.assert_array_equal(got, want)
    assert got.dtype.kind == "i"


# --- box generators ----------------------------------------------------------------------------------

def uniform_boxes(rng, n, span=200.0, max_side=60.0):
    xy = rng.uniform(-10, span, (n, 2))
    wh = rng.uniform(1, max_side, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32)


def detector_like(rng, n, span=(640, 480)):
    """Clusters of jittered boxes around 'faces' of many scales, plus background boxes: the shape of
    a detector's candidates at a low confidence."""
    n_faces = max(1, n // 25)
    size = np.exp(rng.uniform(np.log(6), np.log(160), n_faces))
    centre = rng.uniform(0, 1, (n_faces, 2)) * span
    face = rng.integers(0, n_faces, n)
    s = size[face] * np.exp(rng.normal(0, 0.15, n))
    aspect = np.exp(rng.normal(-0.2, 0.1, n))
    c = centre[face] + rng.normal(0, 0.12, (n, 2)) * s[:, None]
    background = rng.random(n) < 0.2
    c[background] = rng.uniform(0, 1, (background.sum(), 2)) * span
    w, h = s * aspect, s
    boxes = np.stack([c[:, 0] - w / 2, c[:, 1] - h / 2, c[:, 0] + w / 2, c[:, 1] + h / 2], 1)
    return boxes.astype(np.float32)


def random_scores(rng, n, ties):
    s = rng.random(n).astype(np.float32)
    return np.round(s, 1) if ties else s


# Force each candidate-pair method in turn (the automatic choice depends on n).
@pytest.fixture(params=["auto", "sweep", "index"])
def method(request, monkeypatch):
    if request.param == "sweep":
        monkeypatch.setattr(pp, "_SWEEP_MAX", 10 ** 9)
    elif request.param == "index":
        monkeypatch.setattr(pp, "_SWEEP_MAX", 0)
    return request.param


# --- exactness -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_random_uniform_boxes(method, seed):
    rng = np.random.default_rng(seed)
    for case in range(25):
        n = int(rng.integers(0, 300))
        boxes = uniform_boxes(rng, n)
        scores = random_scores(rng, n, ties=case % 3 == 0)
        assert_same(boxes, scores, float(rng.choice([0.3, 0.4, 0.45, 0.5, 0.6, 0.7])))


@pytest.mark.parametrize("seed", range(4))
def test_random_detector_like_boxes(method, seed):
    rng = np.random.default_rng(100 + seed)
    for case in range(15):
        n = int(rng.integers(2, 500))
        boxes = detector_like(rng, n)
        scores = random_scores(rng, n, ties=case % 2 == 0)
        assert_same(boxes, scores, float(rng.uniform(0.3, 0.7)))


@pytest.mark.parametrize("n,thresh", [(800, 0.5), (1200, 0.4), (2000, 0.5), (2000, 0.3), (2000, 0.7)])
def test_large_inputs(n, thresh):
    rng = np.random.default_rng(n + int(thresh * 10))
    boxes = detector_like(rng, n)
    assert_same(boxes, random_scores(rng, n, ties=False), thresh)
    assert_same(boxes, random_scores(rng, n, ties=True), thresh)


def test_large_input_uses_the_index(monkeypatch):
    calls = []
    real = pp._index_pairs
    monkeypatch.setattr(pp, "_index_pairs", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(7)
    boxes = detector_like(rng, 1500)
    assert_same(boxes, random_scores(rng, 1500, ties=False), 0.5)
    assert calls


def test_integer_boxes_with_exact_threshold_ties(method):
    # Integer coordinates make many IoUs land exactly on thresholds such as 0.5 (e.g. 10x20 boxes
    # shifted by a third): the comparison must be the loop's float32 one, not a rounded variant.
    rng = np.random.default_rng(3)
    for _ in range(40):
        n = int(rng.integers(2, 200))
        xy = rng.integers(0, 40, (n, 2))
        wh = rng.integers(0, 12, (n, 2))
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        scores = random_scores(rng, n, ties=True)
        for thresh in (0.3, 1 / 3, np.float64(1 / 3), np.float32(1 / 3), 0.4, 0.5, 0.6, 0.7):
            assert_same(boxes, scores, thresh)


def test_sub_pixel_boxes(method):
    # Widths under a pixel: with the +1 convention two boxes overlap while x1_j < x2_i + 1, so a box
    # may start after another one ends and still suppress it.
    rng = np.random.default_rng(4)
    for _ in range(30):
        n = int(rng.integers(2, 300))
        xy = rng.uniform(0, 15, (n, 2))
        wh = rng.uniform(0, 1.5, (n, 2))
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        assert_same(boxes, random_scores(rng, n, ties=True), float(rng.uniform(0.3, 0.7)))
    boxes = np.array([[0, 0, 0.5, 10], [0.7, 0, 1.2, 10]], np.float32)  # IoU 0.36
    np.testing.assert_array_equal(nms(boxes, np.array([0.9, 0.8]), 0.3), [0])


def test_empty_and_single():
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).shape == (0,)
    np.testing.assert_array_equal(nms(np.array([[1, 2, 3, 4]], np.float32), np.array([0.3]), 0.5), [0])


def test_identical_boxes(method):
    boxes = np.tile(np.array([[10, 10, 50, 60]], np.float32), (700, 1))
    rng = np.random.default_rng(0)
    for scores in (np.full(700, 0.5, np.float32), random_scores(rng, 700, ties=True)):
        assert_same(boxes, scores, 0.5)
        assert len(nms(boxes, scores, 0.5)) == 1
    # IoU of identical boxes is exactly 1, which does not exceed a threshold of 1.
    assert_same(boxes, np.full(700, 0.5, np.float32), 1.0)


def test_nested_boxes(method):
    # Concentric boxes: each inside the previous one, IoU = area ratio.
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(2, 80))
        half = np.sort(rng.uniform(1, 100, n))[::-1]
        centre = rng.uniform(100, 200, 2)
        boxes = np.stack([centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half], 1)
        boxes = boxes.astype(np.float32)
        assert_same(boxes, random_scores(rng, n, ties=False), float(rng.uniform(0.3, 0.7)))


def test_mixed_scales_and_far_apart_boxes(method):
    rng = np.random.default_rng(5)
    tiny = uniform_boxes(rng, 300, span=50, max_side=3)
    huge = uniform_boxes(rng, 100, span=3000, max_side=900)
    far = uniform_boxes(rng, 300, span=20, max_side=10) + np.float32(1e5)
    boxes = np.concatenate([tiny, huge, far, detector_like(rng, 400)])
    for thresh in (0.3, 0.5, 0.7):
        assert_same(boxes, random_scores(rng, len(boxes), ties=True), thresh)


def test_input_types():
    rng = np.random.default_rng(9)
    boxes = detector_like(rng, 300).astype(np.float64)
    scores = rng.random(300)  # float64 scores
    for thresh in (0.5, np.float32(0.4), np.float64(0.45)):
        assert_same(boxes, scores, thresh)
        assert_same(boxes.tolist(), scores, thresh)


@pytest.mark.parametrize("thresh", [-0.1, 0.0, 0.1, 1.0, 1.5, float("nan")])
def test_thresholds_outside_the_usual_range(method, thresh):
    rng = np.random.default_rng(11)
    boxes = detector_like(rng, 250)
    assert_same(boxes, random_scores(rng, 250, ties=True), thresh)


def test_degenerate_boxes_follow_the_loop():
    rng = np.random.default_rng(12)
    boxes = detector_like(rng, 200)
    boxes[::7, 2] = boxes[::7, 0] - 1  # zero width: the IoU is 0/0 against an identical box
    boxes[::11, 3] = boxes[::11, 1] - 3  # negative height
    scores = random_scores(rng, 200, ties=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        assert_same(boxes, scores, 0.5)
        boxes[5] = np.nan
        assert_same(boxes, scores, 0.5)


# --- the building blocks -------------------------------------------------------------------------------

def brute_force_iou(boxes):
    b = boxes.astype(np.float32)
    x1, y1, x2, y2 = (b[:, k] for k in range(4))
    iw = np.maximum(np.minimum(x2[:, None], x2) - np.maximum(x1[:, None], x1) + 1, 0)
    ih = np.maximum(np.minimum(y2[:, None], y2) - np.maximum(y1[:, None], y1) + 1, 0)
    inter = iw * ih
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    return inter / (area[:, None] + area - inter)


@pytest.mark.parametrize("n", [50, 700])
@pytest.mark.parametrize("thresh", [0.3, 0.5, 0.7])
def test_nms_pairs_is_a_superset_with_each_pair_once(n, thresh):
    rng = np.random.default_rng(n)
    boxes = detector_like(rng, n)
    i, j = nms_pairs(boxes, thresh)
    assert not np.any(i == j)
    key = np.minimum(i, j) * n + np.maximum(i, j)
    assert len(np.unique(key)) == len(key)
    iou = brute_force_iou(boxes)
    a, b = np.nonzero(np.triu(iou > thresh, 1))
    assert np.isin(a * n + b, key).all()
    np.testing.assert_array_equal(pair_iou(boxes, i, j), iou[i, j])


# --- postprocess ---------------------------------------------------------------------------------------

def test_postprocess_hand_made_case():
    width, height = 100, 80
    # Priors (cx, cy, w, h), normalised; zero offsets decode to the priors themselves.
    priors = np.array([
        [0.30, 0.5, 0.2, 0.25],  # A: x 20..40, y 30..50
        [0.31, 0.5, 0.2, 0.25],  # B: A shifted 1 px, IoU 0.91 with A, better score: suppresses A
        [0.80, 0.5, 0.2, 0.25],  # C: far from A and B
        [0.50, 0.2, 0.2, 0.25],  # D: below the confidence threshold
        [0.92, 0.5, 0.2, 0.25],  # E: overlaps C with IoU 0.27 < 0.4: kept
    ], np.float32)
    scores = np.array([0.9, 0.95, 0.7, 0.3, 0.6], np.float32)
    conf = np.stack([1 - scores, scores], 1)
    loc = np.zeros((5, 4), np.float32)
    landm = np.zeros((5, 10), np.float32)
    dets = postprocess(loc, conf, landm, priors, (width, height), PostprocessConfig(conf=0.5, nms=0.4,
                                                                                    landmark_vote=None))
    np.testing.assert_allclose(dets.scores, [0.95, 0.7, 0.6])
    np.testing.assert_allclose(dets.boxes, [[21, 30, 41, 50], [70, 30, 90, 50], [82, 30, 102, 50]], atol=1e-4)
    np.testing.assert_allclose(dets.landmarks, np.repeat([[[31, 40]], [[80, 40]], [[92, 40]]], 5, axis=1),
                               atol=1e-4)
    # The landmark vote (the default): B's landmarks become the score-weighted mean of B's and A's (IoU 0.91 >
    # 0.7), C and E (IoU 0.27) keep their own; boxes and scores are what NMS kept.
    voted = postprocess(loc, conf, landm, priors, (width, height), PostprocessConfig(conf=0.5, nms=0.4))
    np.testing.assert_array_equal(voted.boxes, dets.boxes)
    np.testing.assert_array_equal(voted.scores, dets.scores)
    mean_x = (0.95 * 31 + 0.9 * 30) / (0.95 + 0.9)
    np.testing.assert_allclose(voted.landmarks, np.repeat([[[mean_x, 40]], [[80, 40]], [[92, 40]]], 5, axis=1),
                               atol=1e-4)
    assert voted.landmarks.dtype == np.float32
    assert dets.boxes.dtype == dets.scores.dtype == dets.landmarks.dtype == np.float32
    # keep_top_k truncates after NMS; face scores may come as (P,).
    dets = postprocess(loc, scores, landm, priors, (width, height), PostprocessConfig(conf=0.5, nms=0.4, keep_top_k=2))
    np.testing.assert_allclose(dets.scores, [0.95, 0.7])
    # Nothing above the threshold.
    assert len(postprocess(loc, conf, landm, priors, (width, height), PostprocessConfig(conf=0.99))) == 0


def test_postprocess_matches_reference_pipeline():
    rng = np.random.default_rng(21)
    p = 3000
    priors = np.concatenate([rng.uniform(0, 1, (p, 2)), rng.uniform(0.02, 0.3, (p, 2))], 1).astype(np.float32)
    # Repeat priors with small offsets so that candidates overlap as a detector's do.
    priors = np.repeat(priors[: p // 6], 6, axis=0)
    loc = rng.normal(0, 0.5, (len(priors), 4)).astype(np.float32)
    landm = rng.normal(0, 1, (len(priors), 10)).astype(np.float32)
    face = np.round(rng.random(len(priors)), 2).astype(np.float32)  # many score ties
    conf = np.stack([1 - face, face], 1)
    size = (640, 480)
    for cfg in (PostprocessConfig(conf=0.5, nms=0.4, landmark_vote=None),
                PostprocessConfig(conf=0.01, nms=0.5, top_k=1000, landmark_vote=None)):
        dets = postprocess(loc, conf, landm, priors, size, cfg)
        cand = np.flatnonzero(face > cfg.conf)
        cand = cand[np.argsort(-face[cand], kind="stable")][: cfg.top_k]
        scale = np.array([*size, *size], np.float32)
        boxes = decode_boxes(loc[cand], priors[cand]) * scale
        keep = reference_nms(boxes, face[cand], cfg.nms)[: cfg.keep_top_k]
        np.testing.assert_array_equal(dets.boxes, boxes[keep])
        np.testing.assert_array_equal(dets.scores, face[cand][keep])
        points = decode_landmarks(landm[cand], priors[cand]).reshape(-1, 5, 2) * scale[:2]
        np.testing.assert_array_equal(dets.landmarks, points[keep])


def reference_vote(boxes, scores, points, keep, thresh, voters=0.5):
    """Each kept candidate's landmarks: the score-weighted mean over the candidates scoring > voters whose
    float32 IoU with it (+1 pixel convention) is > thresh, itself included; a plain loop."""
    b = np.asarray(boxes, np.float32)
    area = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    out = []
    for k in keep:
        w = np.maximum(np.float32(0), np.minimum(b[k, 2], b[:, 2]) - np.maximum(b[k, 0], b[:, 0]) + 1)
        h = np.maximum(np.float32(0), np.minimum(b[k, 3], b[:, 3]) - np.maximum(b[k, 1], b[:, 1]) + 1)
        inter = w * h
        votes = (inter / (area[k] + area - inter) > thresh) & (scores > np.float32(voters))
        votes[k] = True
        weight = scores[votes].astype(np.float64)
        out.append((points[votes] * weight[:, None, None]).sum(0) / weight.sum())
    return np.array(out, np.float32).reshape(-1, 5, 2)


@pytest.mark.parametrize("vote", [0.3, 0.7, 0.9])
def test_landmark_vote_matches_the_loop(method, vote):
    """postprocess's landmark vote against the plain loop, on detector-like clusters (both pair methods)."""
    rng = np.random.default_rng(int(vote * 10))
    p = 2400
    priors = np.concatenate([rng.uniform(0, 1, (p, 2)), rng.uniform(0.01, 0.2, (p, 2))], 1).astype(np.float32)
    priors = np.repeat(priors[: p // 8], 8, axis=0)
    loc = rng.normal(0, 0.3, (len(priors), 4)).astype(np.float32)
    landm = rng.normal(0, 1, (len(priors), 10)).astype(np.float32)
    face = rng.random(len(priors)).astype(np.float32)
    size = (640, 480)
    cfg = PostprocessConfig(conf=0.05, nms=0.4, landmark_vote=vote)
    dets = postprocess(loc, face, landm, priors, size, cfg)
    own = postprocess(loc, face, landm, priors, size, PostprocessConfig(conf=0.05, nms=0.4, landmark_vote=None))
    np.testing.assert_array_equal(dets.boxes, own.boxes)
    cand = np.flatnonzero(face > cfg.conf)
    cand = cand[np.argsort(-face[cand], kind="stable")]
    scale = np.array([*size, *size], np.float32)
    boxes = decode_boxes(loc[cand], priors[cand]) * scale
    points = decode_landmarks(landm[cand], priors[cand]).reshape(-1, 5, 2) * scale[:2]
    keep = reference_nms(boxes, face[cand], cfg.nms)
    want = reference_vote(boxes, face[cand], points, keep, vote)
    np.testing.assert_allclose(dets.landmarks, want, atol=1e-3, rtol=0)
    moved = np.abs(dets.landmarks - own.landmarks).max(axis=(1, 2)) > 1e-3
    assert moved.any()  # the vote did something (and the loop agrees on what)


def test_detections_do_not_depend_on_the_threshold_above_it():
    """Detections at conf 0.9 are those at 0.5 that score > 0.9, landmarks included (the voters are the same
    candidates at every threshold), and at 0.05 those at 0.5 plus lower ones."""
    rng = np.random.default_rng(5)
    priors = np.concatenate([rng.uniform(0, 1, (300, 2)), rng.uniform(0.02, 0.2, (300, 2))], 1).astype(np.float32)
    priors = np.repeat(priors, 8, axis=0)
    loc = rng.normal(0, 0.3, (len(priors), 4)).astype(np.float32)
    landm = rng.normal(0, 1, (len(priors), 10)).astype(np.float32)
    face = rng.random(len(priors)).astype(np.float32)
    run = lambda conf: postprocess(loc, face, landm, priors, (640, 480), PostprocessConfig(conf=conf))  # noqa: E731
    low, mid, high = run(0.05), run(0.5), run(0.9)
    assert len(low) > len(mid) > len(high) > 0
    for dets, conf in ((mid, 0.9), (low, 0.5), (low, 0.9)):
        cut = dets.scores > conf
        np.testing.assert_array_equal(dets.boxes[cut], (high if conf == 0.9 else mid).boxes)
        np.testing.assert_array_equal(dets.landmarks[cut], (high if conf == 0.9 else mid).landmarks)
