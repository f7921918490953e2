import numpy as np
import pytest
import torch

from blazeface.box_coding import decode_boxes, decode_landmarks, encode_boxes, encode_landmarks
from blazeface.models import get_config
from blazeface.priors import num_priors, prior_boxes, prior_size_groups


def test_prior_counts_match_design():
    expected = {"blaze": (4200, 16800), "blazelite": (4200, 16800), "slim": (4420, 17640), "slimlite": (4420, 17640), "rfb": (4420, 17640), "mnet": (3160, 12600)}
    for name, (small, large) in expected.items():
        cfg = get_config(name).priors
        assert num_priors(cfg, 240, 320) == small == len(prior_boxes(cfg, 240, 320))
        assert num_priors(cfg, 480, 640) == large


def test_prior_order_level_cell_size():
    cfg = get_config("blaze").priors
    p = prior_boxes(cfg, 32, 48)  # stride-8 map 4x6, two sizes
    step = 8
    assert np.allclose(p[0], [0.5 * step / 48, 0.5 * step / 32, 8 / 48, 8 / 32])
    assert np.allclose(p[1], [0.5 * step / 48, 0.5 * step / 32, 11 / 48, 11 / 32])
    assert np.allclose(p[2, :2], [1.5 * step / 48, 0.5 * step / 32])  # next cell along the row
    assert np.allclose(p[2 * 6, :2], [0.5 * step / 48, 1.5 * step / 32])  # next row
    first16 = 4 * 6 * 2
    assert np.allclose(p[first16], [0.5 * 16 / 48, 0.5 * 16 / 32, 14 / 48, 14 / 32])
    assert prior_boxes(cfg, 32, 48) is p  # cached


@pytest.mark.parametrize("name", ["slim", "blaze", "mnet"])
def test_prior_size_groups_follow_the_prior_order(name):
    cfg = get_config(name).priors
    h, w = 72, 104  # not multiples of the coarsest stride: partial cells at the edges
    groups, boxes = prior_size_groups(cfg, h, w), prior_boxes(cfg, h, w)
    sizes = np.array([s for level in cfg.min_sizes for s in level], np.float64)
    assert groups.shape == (len(boxes),) and groups.min() == 0 and groups.max() == len(sizes) - 1
    np.testing.assert_allclose(boxes[:, 2] * w, sizes[groups], rtol=1e-5)  # each prior has its group's size


def test_coding_round_trip_numpy_and_torch():
    rng = np.random.default_rng(0)
    priors = np.c_[rng.uniform(0.1, 0.9, (50, 2)), rng.uniform(0.02, 0.4, (50, 2))].astype(np.float32)
    xy = rng.uniform(0, 0.6, (50, 2))
    boxes = np.c_[xy, xy + rng.uniform(0.01, 0.4, (50, 2))].astype(np.float32)
    points = rng.uniform(0, 1, (50, 10)).astype(np.float32)
    assert np.allclose(decode_boxes(encode_boxes(boxes, priors), priors), boxes, atol=1e-6)
    assert np.allclose(decode_landmarks(encode_landmarks(points, priors), priors), points, atol=1e-6)
    tb = encode_boxes(torch.from_numpy(boxes), torch.from_numpy(priors))
    assert torch.allclose(tb, torch.from_numpy(encode_boxes(boxes, priors)), atol=1e-5)


def test_decode_matches_design_formula():
    priors = np.array([[0.5, 0.5, 0.1, 0.2]], np.float32)
    loc = np.array([[1.0, -1.0, 0.0, np.log(2) / 0.2]], np.float32)
    cx, cy = 0.5 + 1.0 * 0.1 * 0.1, 0.5 - 1.0 * 0.1 * 0.2
    w, h = 0.1, 0.4
    assert np.allclose(decode_boxes(loc, priors), [[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]], atol=1e-6)


def test_box_iou_continuous():
    from blazeface.geometry import box_iou

    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], np.float32)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    iou = box_iou(a, b)
    assert iou.shape == (2, 2)
    assert iou[0, 0] == 50 / 150 and iou[0, 1] == 0 and iou[1, 0] == 0  # empty box: 0, not NaN
