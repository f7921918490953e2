"""Prior matching and the multibox loss on hand-made cases."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from blazeface.box_coding import decode_boxes, decode_landmarks
from blazeface.config import PriorConfig, TrainConfig
from blazeface.errors import BlazefaceError
from blazeface.priors import prior_boxes
from blazeface.training.loss import MultiBoxLoss
from blazeface.matching import PriorMatcher, box_iou, match, priors_to_corners

# A 10 x 10 grid of 0.1 x 0.1 priors (cell (i, j) centred at (0.05 + 0.1 j, 0.05 + 0.1 i)).
GRID = torch.from_numpy(prior_boxes(PriorConfig(min_sizes=((10,),), steps=(10,)), 100, 100).copy())


def prior_index(i: int, j: int) -> int:
    return i * 10 + j


def centred_box(cx: float, cy: float, side: float) -> list[float]:
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def no_points(n: int):
    return torch.full((n, 10), -1.0), torch.zeros(n, dtype=torch.bool)


def test_box_equal_to_a_prior_is_positive_with_zero_target():
    k = prior_index(3, 4)
    box = priors_to_corners(GRID[k:k + 1])
    points = torch.rand(1, 10)
    out = match(GRID, box, points, torch.tensor([True]))
    assert out["labels"][k] == 1 and int((out["labels"] == 1).sum()) == 1
    assert torch.allclose(out["loc_t"][k], torch.zeros(4), atol=1e-5)
    assert out["landm_mask"].nonzero().squeeze(1).tolist() == [k]
    assert torch.allclose(decode_landmarks(out["landm_t"][k:k + 1], GRID[k:k + 1]), points, atol=1e-5)
    assert out["labels"].dtype == torch.int64 and out["loc_t"].shape == (100, 4) and out["landm_t"].shape == (100, 10)


def test_forced_match_below_035():
    box = torch.tensor([centred_box(0.45, 0.55, 0.18)])  # IoU 0.309 with prior (5, 4), ~0.1 with neighbours
    iou = box_iou(box, priors_to_corners(GRID))[0]
    assert 0.2 <= float(iou.max()) < 0.35 and int((iou >= 0.2).sum()) == 1
    out = match(GRID, box, *no_points(1))
    k = prior_index(5, 4)
    assert (out["labels"] == 1).nonzero().squeeze(1).tolist() == [k]
    assert torch.allclose(decode_boxes(out["loc_t"][k:k + 1], GRID[k:k + 1]), box, atol=1e-5)
    assert not out["landm_mask"].any()  # positive but unlabelled landmarks


def test_no_match_below_02():
    box = torch.tensor([centred_box(0.45, 0.55, 0.25)])  # IoU 0.16 at best
    out = match(GRID, box, *no_points(1))
    assert (out["labels"] == 0).all()


def test_a_face_too_small_for_any_prior_is_ignored_not_background():
    box = torch.tensor([centred_box(0.45, 0.55, 0.03)])  # IoU 0.09: unmatched, but inside prior (5, 4)
    out = match(GRID, box, *no_points(1))
    assert (out["labels"] == -1).nonzero().squeeze(1).tolist() == [prior_index(5, 4)]
    assert (match(GRID, box, *no_points(1), ignore_unmatched=False)["labels"] == 0).all()


def test_scale_compensation_gives_a_small_face_its_best_further_priors():
    # S3FD's second stage; large faces are left alone since they have their positives already. This face reaches IoU 0.28 with one prior (forced), 0.18 and 0.11 with two more and
    # 0.08 with a fourth; min_positives=3 adds the two, in IoU order; 4 cannot add the fourth (under 0.1).
    box = torch.tensor([centred_box(0.48, 0.49, 0.11)])
    iou = box_iou(box, priors_to_corners(GRID))[0]
    ranked = iou.argsort(descending=True).tolist()
    assert [round(float(iou[k]), 2) for k in ranked[:4]] == [0.28, 0.18, 0.11, 0.08]
    assert (match(GRID, box, *no_points(1))["labels"] == 1).nonzero().squeeze(1).tolist() == [ranked[0]]
    for wanted in (2, 3, 4):
        out = match(GRID, box, *no_points(1), min_positives=wanted)
        assert sorted((out["labels"] == 1).nonzero().squeeze(1).tolist()) == sorted(ranked[:min(wanted, 3)])
    assert torch.allclose(decode_boxes(out["loc_t"][ranked[:3]], GRID[ranked[:3]]), box.expand(3, 4), atol=1e-5)
    # A face that has its one prior already needs nothing at min_positives=1.
    assert torch.equal(match(GRID, box, *no_points(1), min_positives=1)["labels"],
                       match(GRID, box, *no_points(1))["labels"])


def test_face_weight_floor_weighs_a_tiny_faces_one_prior_like_several_and_leaves_large_faces_alone():
    # Priors of two sizes per cell (0.1 and 0.3): a face the size of a small prior has one positive, a face the
    # size of a large one five (its own cell's and the four next to it). With a floor of 3 the first's prior
    # weighs 3 (times its own face weight), the second's stay at 1, and no label or target changes.
    grid = torch.from_numpy(prior_boxes(PriorConfig(min_sizes=((10, 30),), steps=(10,)), 100, 100).copy())
    boxes = torch.tensor([centred_box(0.25, 0.25, 0.1), centred_box(0.65, 0.65, 0.3)])
    plain = match(grid, boxes, *no_points(2))
    floored = match(grid, boxes, *no_points(2), face_weight_floor=3)
    for key in ("labels", "loc_t", "landm_mask"):
        assert torch.equal(plain[key], floored[key])
    positive = plain["labels"] == 1
    small_prior = prior_index(2, 2) * 2
    assert positive[small_prior] and int(positive.sum()) == 6
    assert float(floored["pos_weight"][small_prior]) == pytest.approx(3.0)
    others = positive.clone()
    others[small_prior] = False
    assert torch.equal(floored["pos_weight"][others], plain["pos_weight"][others])
    weighted = PriorMatcher(grid, face_weight_floor=3)(boxes, *no_points(2), face_weight=[0.5, 1.0])
    assert float(weighted["pos_weight"][small_prior]) == pytest.approx(1.5)
    # The loss sees it: the small face's box error counts three times.
    loss = MultiBoxLoss(TrainConfig())
    loc = torch.zeros(1, 200, 4)
    loc[0, small_prior] = 1.0
    conf, landm = torch.zeros(1, 200, 2), torch.zeros(1, 200, 10)
    base = loss(loc, conf, landm, {k: v[None] for k, v in plain.items()})["loc"]
    tripled = loss(loc, conf, landm, {k: v[None] for k, v in floored.items()})["loc"]
    error = float(F.smooth_l1_loss(loc[0, small_prior], plain["loc_t"][small_prior], reduction="sum"))
    assert float(tripled - base) == pytest.approx(2 * error * TrainConfig().loc_weight / 6, rel=1e-5)
    with pytest.raises(BlazefaceError, match="face_weight_floor"):
        PriorMatcher(grid, face_weight_floor=-1)


def test_scale_compensation_reaches_no_lower_than_its_iou_and_takes_no_other_faces_prior():
    tiny = torch.tensor([centred_box(0.45, 0.45, 0.02)])  # IoU 0.04 with its own prior: below 0.1, no positive
    assert not (match(GRID, tiny, *no_points(1), min_positives=3)["labels"] == 1).any()
    # Mirror images of the face above: each forces its own prior (IoU 0.28), which the other would take third
    # (0.12); so each adds only its second (0.18), and its fourth is under 0.1.
    pair = torch.tensor([centred_box(0.48, 0.49, 0.11), centred_box(0.52, 0.49, 0.11)])
    out = match(GRID, pair, *no_points(2), min_positives=3)
    faces = {0: [prior_index(4, 4), prior_index(5, 4)], 1: [prior_index(4, 5), prior_index(5, 5)]}
    assert sorted((out["labels"] == 1).nonzero().squeeze(1).tolist()) == sorted(faces[0] + faces[1])
    for face, priors in faces.items():
        decoded = decode_boxes(out["loc_t"][priors], GRID[priors])
        assert torch.allclose(decoded, pair[face].expand(2, 4), atol=1e-5)


def test_no_faces_is_all_background():
    out = match(GRID, torch.zeros(0, 4), torch.zeros(0, 10), torch.zeros(0, dtype=torch.bool))
    assert (out["labels"] == 0).all() and not out["landm_mask"].any() and (out["loc_t"] == 0).all()
    ignored = match(GRID, torch.zeros(0, 4), torch.zeros(0, 10), torch.zeros(0, dtype=torch.bool),
                    ignore_background=True)
    assert (ignored["labels"] == -1).all()


def test_landmark_mask_and_weight_follow_the_matched_face():
    a, b = prior_index(2, 2), prior_index(7, 7)
    boxes = priors_to_corners(GRID[[a, b]])
    out = match(GRID, boxes, torch.rand(2, 10), torch.tensor([True, False]), torch.tensor([0.6, 0.9]))
    assert set((out["labels"] == 1).nonzero().squeeze(1).tolist()) == {a, b}
    assert out["landm_mask"].nonzero().squeeze(1).tolist() == [a]
    assert out["landm_weight"][a] == pytest.approx(0.6) and out["landm_weight"].sum() == pytest.approx(0.6)
    assert (out["landm_t"][b] == 0).all()


def test_threshold_positives_and_vectorised_assignment():
    # A face covering 2 x 2 cells exactly: IoU 0.25 with each of the four priors inside, so only the forced
    # one is positive; a face of one cell's size shifted by 0.2 cell has IoU 0.667 with one prior, 0.11 with
    # the next: one positive.
    big = [0.2, 0.2, 0.4, 0.4]
    shifted = [0.62, 0.6, 0.72, 0.7]
    out = match(GRID, torch.tensor([big, shifted]), *no_points(2))
    positives = (out["labels"] == 1).nonzero().squeeze(1)
    assert len(positives) == 2
    decoded = decode_boxes(out["loc_t"][positives], GRID[positives])
    assert torch.allclose(decoded.sort(0).values, torch.tensor([big, shifted]).sort(0).values, atol=1e-5)


def test_two_faces_forcing_one_prior_the_better_one_wins():
    k = prior_index(4, 4)
    cx, cy = GRID[k, 0].item(), GRID[k, 1].item()
    boxes = torch.tensor([centred_box(cx, cy, 0.17), centred_box(cx, cy, 0.18)])  # IoU 0.346, 0.309
    for order in ([0, 1], [1, 0]):
        out = match(GRID, boxes[order], *no_points(2))
        assert (out["labels"] == 1).nonzero().squeeze(1).tolist() == [k]
        decoded = decode_boxes(out["loc_t"][k:k + 1], GRID[k:k + 1])
        assert torch.allclose(decoded, boxes[:1], atol=1e-5)


def test_ignore_background_keeps_negatives_near_labelled_faces_only():
    box = torch.tensor([[0.4, 0.4, 0.6, 0.6]])
    out = match(GRID, box, *no_points(1), ignore_background=True)
    labels = out["labels"].view(10, 10)
    assert labels[0, 0] == -1 and labels[9, 9] == -1  # far away: might be an unlabelled face
    assert labels[3, 3] == 0 and labels[6, 6] == 0  # within half a face of it: a safe negative
    assert (labels == 1).sum() == 1


def test_ignore_iou_option():
    box = torch.tensor([[0.2, 0.2, 0.4, 0.4]])  # IoU 0.25 with four priors, one of them forced
    out = match(GRID, box, *no_points(1), ignore_iou=0.2)
    assert int((out["labels"] == 1).sum()) == 1 and int((out["labels"] == -1).sum()) == 3


def test_matcher_on_a_real_prior_set_is_consistent():
    priors = torch.from_numpy(prior_boxes(PriorConfig(((8, 11), (14, 19, 26, 38, 64, 149)), (8, 16)), 320, 320)
                              .copy())
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 0.8, (30, 2))
    boxes = torch.tensor(np.concatenate([xy, xy + rng.uniform(0.02, 0.2, (30, 2))], 1), dtype=torch.float32)
    out = PriorMatcher(priors)(boxes, torch.rand(30, 10), torch.ones(30, dtype=torch.bool))
    pos = out["labels"] == 1
    iou = box_iou(decode_boxes(out["loc_t"][pos], priors[pos]), boxes)
    assert (iou.max(1).values > 0.999).all()  # every positive decodes exactly onto one face
    assert torch.equal(out["landm_mask"], pos)


# ---------------------------------------------------------------- loss

def make_targets(labels, landm_mask=None):
    labels = torch.as_tensor(labels, dtype=torch.int64)
    b, p = labels.shape
    return {"labels": labels, "loc_t": torch.randn(b, p, 4), "landm_t": torch.randn(b, p, 10),
            "landm_mask": torch.zeros(b, p, dtype=torch.bool) if landm_mask is None else landm_mask}


def test_ohem_picks_the_hardest_negatives_at_the_ratio():
    torch.manual_seed(0)
    b, p = 3, 30
    labels = torch.zeros(b, p, dtype=torch.int64)
    labels[0, 0] = 1
    labels[1, [0, 1]] = 1
    labels[1, 2] = -1  # ignored: the hardest of all, never picked
    # image 2 has no face: it still gets min_negatives (= neg_pos_ratio) negatives
    conf = torch.randn(b, p, 2)
    conf[1, 2] = torch.tensor([-20.0, 20.0])
    loss = MultiBoxLoss(TrainConfig(cls_loss="ohem", neg_pos_ratio=3, cls_weight=1.0))
    parts = loss(torch.zeros(b, p, 4), conf, torch.zeros(b, p, 10), make_targets(labels))

    ce = F.cross_entropy(conf.view(-1, 2), labels.clamp(min=0).view(-1), reduction="none").view(b, p)
    expected = 0.0
    for i, wanted in enumerate([3, 6, 3]):
        candidates = ce[i][labels[i] == 0]
        expected += candidates.sort(descending=True).values[:wanted].sum() + ce[i][labels[i] == 1].sum()
    assert parts["cls"].item() == pytest.approx(expected.item() / 3, rel=1e-5)


def test_ohem_without_enough_negatives_takes_them_all():
    labels = torch.tensor([[1, 0, 0, -1]])
    conf = torch.randn(1, 4, 2)
    parts = MultiBoxLoss(TrainConfig(neg_pos_ratio=7))(torch.zeros(1, 4, 4), conf, torch.zeros(1, 4, 10),
                                                       make_targets(labels))
    ce = F.cross_entropy(conf[0], labels[0].clamp(min=0), reduction="none")
    assert parts["cls"].item() == pytest.approx(ce[:3].sum().item(), rel=1e-5)


def test_focal_loss_on_a_hand_computed_example():
    ln3 = math.log(3.0)
    conf = torch.tensor([[[0.0, ln3], [ln3, 0.0], [50.0, -50.0]]])  # p(true class) = 3/4 for the first two
    labels = torch.tensor([[1, 0, -1]])
    loss = MultiBoxLoss(TrainConfig(cls_loss="focal", cls_weight=6.0))
    parts = loss(torch.zeros(1, 3, 4), conf, torch.zeros(1, 3, 10), make_targets(labels))
    by_hand = -(0.25 + 0.75) * (1 / 4) ** 2 * math.log(3 / 4)  # alpha_face 0.25, alpha_background 0.75
    assert parts["cls"].item() == pytest.approx(6.0 * by_hand, rel=1e-5)


@pytest.mark.parametrize("cls_loss", ["ohem", "focal"])
def test_ignored_priors_contribute_nothing(cls_loss):
    torch.manual_seed(1)
    labels = torch.tensor([[1, 0, 0, 0, -1, -1], [0, 1, -1, 0, 0, 0]])
    targets = make_targets(labels)
    loss = MultiBoxLoss(TrainConfig(cls_loss=cls_loss, neg_pos_ratio=2))
    conf = torch.randn(2, 6, 2, requires_grad=True)
    loc, landm = torch.randn(2, 6, 4, requires_grad=True), torch.randn(2, 6, 10, requires_grad=True)
    parts = loss(loc, conf, landm, targets)
    sum(parts.values()).backward()
    ignored = labels == -1
    assert (conf.grad[ignored] == 0).all() and (loc.grad[labels != 1] == 0).all()
    other = conf.detach().clone()
    other[ignored] = torch.randn(int(ignored.sum()), 2) * 100
    again = loss(loc, other, landm, targets)
    assert again["cls"].item() == pytest.approx(parts["cls"].item(), rel=1e-6)


def test_box_and_landmark_parts_are_weighted_and_normalised():
    labels = torch.tensor([[1, 1, 0, 0]])
    mask = torch.tensor([[True, False, False, False]])
    targets = make_targets(labels, mask)
    targets["loc_t"].zero_()
    targets["landm_t"].zero_()
    loc = torch.zeros(1, 4, 4)
    loc[0, 0, 0] = 0.5  # smooth-L1: 0.5 * 0.5^2 = 0.125
    loc[0, 2] = 9.0  # a negative: no box loss
    landm = torch.zeros(1, 4, 10)
    landm[0, 0, :2] = 3.0  # 2 * (3 - 0.5) = 5
    landm[0, 1] = 7.0  # positive without landmarks: no landmark loss
    config = TrainConfig(loc_weight=2.0, landm_weight=0.5)
    parts = MultiBoxLoss(config)(loc, torch.zeros(1, 4, 2), landm, targets)
    assert set(parts) == {"loc", "cls", "landm"}
    assert parts["loc"].item() == pytest.approx(2.0 * 0.125 / 2)  # two positives
    assert parts["landm"].item() == pytest.approx(0.5 * 5.0 / 1)  # one landmark positive
    targets["landm_weight"] = torch.tensor([[0.5, 0.0, 0.0, 0.0]])
    assert MultiBoxLoss(config)(loc, torch.zeros(1, 4, 2), landm, targets)["landm"].item() == pytest.approx(1.25)


def test_batch_without_faces_has_finite_loss():
    labels = torch.zeros(2, 50, dtype=torch.int64)
    for kind in ("ohem", "focal"):
        parts = MultiBoxLoss(replace(TrainConfig(), cls_loss=kind))(torch.randn(2, 50, 4), torch.randn(2, 50, 2),
                                                                   torch.randn(2, 50, 10), make_targets(labels))
        assert all(torch.isfinite(v) for v in parts.values())
        assert parts["loc"] == 0 and parts["landm"] == 0 and parts["cls"] > 0


def test_unknown_cls_loss():
    from blazeface.errors import BlazefaceError
    with pytest.raises(BlazefaceError, match="unknown cls_loss"):
        MultiBoxLoss(TrainConfig(cls_loss="hinge"))


def test_normalizers_from_a_global_batch():
    """Two halves normalised by the whole batch's counts add up to the whole batch's loss."""
    torch.manual_seed(2)
    labels = torch.randint(-1, 2, (4, 40))
    mask = (labels == 1) & (torch.rand(4, 40) > 0.5)
    targets = make_targets(labels, mask)
    loc, conf, landm = torch.randn(4, 40, 4), torch.randn(4, 40, 2), torch.randn(4, 40, 10)
    loss = MultiBoxLoss(TrainConfig(cls_loss="ohem", neg_pos_ratio=3))
    whole = loss(loc, conf, landm, targets)
    norms = loss.counts(targets)
    assert norms["positives"] == (labels == 1).sum() and norms["landmarks"] == mask.sum()
    halves = [loss(loc[s], conf[s], landm[s], {k: v[s] for k, v in targets.items()}, normalizers=norms)
              for s in (slice(0, 2), slice(2, 4))]
    for key in whole:
        assert (halves[0][key] + halves[1][key]).item() == pytest.approx(whole[key].item(), rel=1e-5)


def test_the_mining_ratio_and_the_labels_way_are_train_flags(tmp_path):
    """`blazeface train --neg-pos-ratio N --kd-ignore-background-above P` reach the run's TrainConfig; without
    them the model's defaults stand."""
    from blazeface.cli import build_parser
    from blazeface.cli.train_cmd import train_options
    from blazeface.models.registry import get_config

    def config(*flags):
        args = build_parser().parse_args(["train", "--model", "slim", "--data", "d", "--out", str(tmp_path), *flags])
        return train_options(args).train_config(get_config("slim"))

    given = config("--neg-pos-ratio", "15", "--kd-ignore-background-above", "0.2")
    assert given.neg_pos_ratio == 15 and given.kd_ignore_background_above == 0.2
    default = config()
    assert default.neg_pos_ratio == TrainConfig().neg_pos_ratio and default.kd_ignore_background_above is None
    with pytest.raises(SystemExit):
        config("--neg-pos-ratio", "0")
