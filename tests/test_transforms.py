"""Augmentation properties over many random seeds on synthetic faces.

"Cut" faces: a crop may cut a face whose centre it keeps; its box is then clipped to the crop while its
landmarks keep their true positions (possibly outside the box). A kept face whose box does not touch the
output border cannot have been cut, so for those the landmarks must still lie inside the box."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from blazeface.data import transforms as T

SIZE = 96
SEEDS = range(150)


def synthetic(rng: np.random.Generator, max_faces: int = 6, ignore_background: bool = False):
    """A random image with random faces whose five points lie inside their boxes, left points left of
    right ones. ``landmark_weight`` carries a face id so tests can follow each face."""
    h, w = (int(v) for v in rng.integers(40, 260, 2))
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    n = int(rng.integers(0, max_faces + 1))
    size = rng.uniform(4, 0.6 * min(h, w), n)
    x1 = rng.uniform(0, w - size)
    y1 = rng.uniform(0, h - size)
    boxes = np.stack([x1, y1, x1 + size, y1 + size], 1)
    u = rng.uniform(0.05, 0.95, (n, 5, 2))
    u[:, [0, 3], 0] = np.minimum(u[:, [0, 3], 0], u[:, [1, 4], 0])  # left eye / left mouth corner: smaller x
    u[:, [1, 4], 0] = np.maximum(u[:, [0, 3], 0], u[:, [1, 4], 0])
    points = boxes[:, None, :2] + u * size[:, None, None]
    ids = np.arange(1, n + 1, dtype=np.float32)
    target = T.make_target(boxes, points, ids % 2 == 1, ids, ignore_background=ignore_background)
    return image, target


def check_target(target: dict, side: float, ignore_background: bool, n_in: int):
    boxes = np.asarray(target["boxes"], np.float64)
    points = np.asarray(target["landmarks"], np.float64)
    ids = np.asarray(target["landmark_weight"])
    n = boxes.shape[0]
    assert points.shape == (n, 5, 2) and target["has_landmarks"].shape == (n,) and ids.shape == (n,)
    # Per-face arrays stay aligned: has_landmarks was defined from the face id.
    assert (np.asarray(target["has_landmarks"]) == (ids % 2 == 1)).all()
    assert len(set(ids.tolist())) == n
    eps = 1e-4 * side
    assert (boxes >= -eps).all() and (boxes <= side + eps).all(), "boxes are clipped to the image"
    assert (boxes[:, 2:] > boxes[:, :2]).all()
    uncut = ((boxes[:, :2] > eps) & (boxes[:, 2:] < side - eps)).all(1)
    inside = ((points >= boxes[:, None, :2] - eps) & (points <= boxes[:, None, 2:] + eps)).all((1, 2))
    assert inside[uncut].all(), "landmarks of a face no crop cut left its box"
    assert (points[:, 0, 0] <= points[:, 1, 0] + eps).all() and (points[:, 3, 0] <= points[:, 4, 0] + eps).all()
    if ignore_background:  # non-exhaustive: every labelled face survives, uncut (square boxes stay square)
        assert n == n_in
        np.testing.assert_allclose(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1], rtol=1e-3, atol=eps)


@pytest.mark.parametrize("preset", ["small-faces", "retinaface", "plain"])
@pytest.mark.parametrize("ignore_background", [False, True])
def test_presets_keep_faces_consistent(preset, ignore_background):
    pipeline = T.build_preset(preset, SIZE, zoom_out_p=0.5)
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        image, target = synthetic(rng, ignore_background=ignore_background)
        n_in = target["boxes"].shape[0]
        tensor, out = pipeline(image, target, rng)
        assert tensor.shape == (3, SIZE, SIZE) and tensor.dtype == torch.float32
        assert out["boxes"].dtype == torch.float32 and out["ignore_background"] == ignore_background
        check_target({k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in out.items()}, 1.0,
                     ignore_background, n_in)


def test_exhaustive_crop_keeps_a_whole_face():
    crop = T.RandomSquareCrop()
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        image, target = synthetic(rng)
        if target["boxes"].shape[0] == 0:
            continue
        out_image, out = crop(image, target, rng)
        h, w = out_image.shape[:2]
        assert h == w
        if (h, w) == (max(image.shape[:2]),) * 2 and out["boxes"].shape == target["boxes"].shape:
            continue  # fell back to padding the whole image
        # At least one face kept its full size (lies fully inside the crop).
        ids_in = target["landmark_weight"].tolist()
        sizes_in = dict(zip(ids_in, target["boxes"][:, 2] - target["boxes"][:, 0]))
        full = [abs((b[2] - b[0]) - sizes_in[i]) < 1e-3 and abs((b[3] - b[1]) - sizes_in[i]) < 1e-3
                for b, i in zip(out["boxes"], out["landmark_weight"].tolist())]
        assert any(full)


def test_transforms_without_faces():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 80, 3), dtype=np.uint8)
    tensor, out = T.build_preset("small-faces", SIZE, zoom_out_p=1.0)(image, T.make_target(np.zeros((0, 4))), rng)
    assert tensor.shape == (3, SIZE, SIZE) and out["boxes"].shape == (0, 4) and out["landmarks"].shape == (0, 5, 2)


def test_mirror_twice_is_identity():
    for seed in range(20):
        rng = np.random.default_rng(seed)
        image, target = synthetic(rng)
        once_image, once = T.mirror(image, target)
        twice_image, twice = T.mirror(once_image, once)
        np.testing.assert_array_equal(twice_image, image)
        for key in T.PER_FACE_KEYS:
            np.testing.assert_allclose(twice[key], target[key], atol=1e-4)
        if target["boxes"].shape[0]:
            # Once: left eye is the old right eye, mirrored.
            np.testing.assert_allclose(once["landmarks"][:, 0, 0], image.shape[1] - target["landmarks"][:, 1, 0],
                                       atol=1e-4)


@pytest.mark.parametrize("pipeline", [
    T.Compose([T.RandomZoomOut(p=0.5), T.RandomSquareCrop(), T.RandomMirror(), T.RandomResize(SIZE)]),
    T.Compose([T.RandomMirror(), T.RandomResize(SIZE)]),  # non-square input: stretched
], ids=["crop", "stretch"])
def test_painted_rectangle_stays_under_its_box(pipeline):
    """Crop (with zoom-out) + mirror + resize with every interpolation: the painted pixels of the kept face
    span its (clipped) box, to within a pixel plus half an upscaled source pixel."""
    checked = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        h, w = (int(v) for v in rng.integers(40, 200, 2))
        image = np.zeros((h, w, 3), np.uint8)
        bw, bh = (int(v) for v in rng.integers(6, [w // 2, h // 2]))
        x1, y1 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        image[y1:y1 + bh, x1:x1 + bw] = 255
        target = T.make_target([[x1, y1, x1 + bw, y1 + bh]])
        out_image, out = pipeline(image, target, rng)
        if out["boxes"].shape[0] == 0:
            continue
        box = out["boxes"][0]
        scale = max((box[2] - box[0]) / bw, (box[3] - box[1]) / bh)  # >= the resize factor of this sample
        ys, xs = np.nonzero(out_image[..., 0] >= 128)
        assert xs.size, f"seed {seed}: the kept face has no pixels"
        painted = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)
        tolerance = 1.0 + 0.5 * max(scale, 1.0)
        assert np.abs(painted - box).max() <= tolerance, (seed, painted, box)
        checked += 1
    assert checked > 150


def test_zoom_out_shrinks_and_shifts_faces():
    rng = np.random.default_rng(1)
    image, target = synthetic(rng, max_faces=3)
    out_image, out = T.RandomZoomOut(p=1.0, max_ratio=3.0)(image, target, rng)
    assert out_image.shape[0] >= image.shape[0] and out_image.shape[1] >= image.shape[1]
    shift = out["boxes"][:, :2] - target["boxes"][:, :2]
    np.testing.assert_allclose(out["boxes"][:, 2:] - target["boxes"][:, 2:], shift, atol=1e-3)
    # Everything outside the pasted image is the mean colour.
    assert (out_image[0, 0] == np.round(np.array(T.MEAN_BGR))).all() or (out_image[-1, -1] ==
                                                                           np.round(np.array(T.MEAN_BGR))).all()


def test_photometric_distortion_only_touches_pixels():
    rng = np.random.default_rng(0)
    image, target = synthetic(rng)
    for seed in range(10):
        out_image, out = T.PhotometricDistort(p=1.0)(image, target, np.random.default_rng(seed))
        assert out_image.shape == image.shape and out_image.dtype == np.uint8
        assert out is target
    same, _ = T.PhotometricDistort(p=0.0)(image, target, rng)
    np.testing.assert_array_equal(same, image)


def test_to_tensor_subtracts_the_mean_and_normalises():
    image = np.full((4, 8, 3), (104, 117, 123), np.uint8)
    image[0, 0] = (0, 0, 0)
    tensor, out = T.ToTensor()(image, T.make_target([[0, 0, 8, 4]], np.full((1, 5, 2), 2.0), [True]))
    assert tensor.shape == (3, 4, 8) and float(tensor[:, 1:, 1:].abs().max()) == 0
    assert tensor[:, 0, 0].tolist() == [-104, -117, -123]
    assert out["boxes"].tolist() == [[0, 0, 1, 1]]
    assert out["landmarks"][0, 0].tolist() == [0.25, 0.5]


def test_same_seed_same_augmentation():
    pipeline = T.build_preset("small-faces", SIZE, zoom_out_p=0.5)
    image, target = synthetic(np.random.default_rng(5))
    a, ta = pipeline(image, target, np.random.default_rng(42))
    b, tb = pipeline(image, target, np.random.default_rng(42))
    assert torch.equal(a, b) and torch.equal(ta["boxes"], tb["boxes"])


def test_unknown_preset():
    from blazeface.errors import BlazefaceError
    with pytest.raises(BlazefaceError, match="unknown augmentation preset"):
        T.build_preset("fancy", SIZE)


def test_interpolations_are_opencv_flags():
    assert set(T.INTERPOLATIONS) == {cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA, cv2.INTER_NEAREST,
                                     cv2.INTER_LANCZOS4}


@pytest.mark.parametrize("seed", range(12))
def test_teacher_candidates_follow_the_geometry_as_the_labels_do(seed):
    """A teacher's candidates placed exactly on the labelled faces stay exactly on them through zoom-out, crop,
    mirror and resize: the same shifts, scales, flips (points swapped left for right) and the same centre rule."""
    rng = np.random.default_rng(seed)
    image, target = synthetic(rng)
    target.update(teacher_boxes=target["boxes"].copy(), teacher_points=target["landmarks"].copy(),
                  teacher_scores=target["landmark_weight"].copy())
    pipeline = T.Compose([T.RandomZoomOut(p=0.5), T.RandomSquareCrop(), T.RandomMirror(), T.RandomResize(SIZE),
                          T.ToTensor()])
    _, out = pipeline(image, target, rng)
    assert torch.equal(out["teacher_scores"], out["landmark_weight"])  # the same faces, in the same order
    torch.testing.assert_close(out["teacher_boxes"], out["boxes"])
    torch.testing.assert_close(out["teacher_points"], out["landmarks"])


def test_mosaic_keeps_every_face_under_its_pixels():
    """Four photos of different sizes on one canvas: each photo's pixels land where its faces' (and its teacher
    candidates') boxes moved, nothing overlaps, the rest is the mean colour."""
    rng = np.random.default_rng(3)
    tiles = []
    for k in range(4):
        h, w = (int(v) for v in rng.integers(30, 90, 2))
        image = np.zeros((h, w, 3), np.uint8)
        x1, y1 = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 10))
        image[y1:y1 + 10, x1:x1 + 10] = 50 * (k + 1)  # photo k's face, painted in its own grey
        target = T.make_target([[x1, y1, x1 + 10, y1 + 10]], landmark_weight=[k + 1])
        target.update(teacher_boxes=np.array([[x1, y1, x1 + 10, y1 + 10]], np.float32),
                      teacher_points=np.full((1, 5, 2), [x1 + 5, y1 + 5], np.float32),
                      teacher_scores=np.array([0.1 * (k + 1)], np.float32))
        tiles.append((image, target))
    canvas, out = T.mosaic(tiles)
    assert canvas.shape[0] >= max(t[0].shape[0] for t in tiles) * 2 - 60 and canvas.dtype == np.uint8
    assert out["boxes"].shape == (4, 4) and out["teacher_boxes"].shape == (4, 4) and not out["ignore_background"]
    np.testing.assert_array_equal(out["boxes"], out["teacher_boxes"])
    np.testing.assert_allclose(out["teacher_points"][:, 0], (out["boxes"][:, :2] + out["boxes"][:, 2:]) / 2)
    for k, box in enumerate(out["boxes"].astype(int)):
        assert out["landmark_weight"][k] == k + 1 and out["teacher_scores"][k] == np.float32(0.1 * (k + 1))
        assert (canvas[box[1]:box[3], box[0]:box[2]] == 50 * (k + 1)).all()
        assert (canvas == 50 * (k + 1)).all(2).sum() == 100  # painted once: the photos do not overlap
    filled = np.isin(canvas[..., 0], [0, 50, 100, 150, 200])
    assert (canvas[~filled] == np.round(np.array(T.MEAN_BGR))).all()
    assert filled.sum() == sum(t[0].shape[0] * t[0].shape[1] for t in tiles)
    with pytest.raises(ValueError, match="4 photos"):
        T.mosaic(tiles[:3])


def test_mosaic_then_the_preset_keeps_faces_consistent():
    """The training preset after a mosaic of random photos: the same invariants as after one photo."""
    preset = T.Compose([T.RandomZoomOut(p=0.3), T.RandomSquareCrop(), T.RandomMirror(), T.RandomResize(SIZE)])
    kept = 0
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        tiles = [synthetic(rng) for _ in range(4)]
        for k, (_, target) in enumerate(tiles):  # face ids unique over the four photos
            target["landmark_weight"] = target["landmark_weight"] + 10 * k
            target["has_landmarks"] = target["landmark_weight"] % 2 == 1
        image, target = T.mosaic(tiles)
        n_in = len(target["boxes"])
        image, out = preset(image, target, rng)
        assert image.shape == (SIZE, SIZE, 3)
        check_target(out, SIZE, False, n_in)
        kept += len(out["boxes"])
    assert kept > 100


def painted_disc(rng: np.random.Generator):
    """A black photo with one white disc and its five points inside the disc (the box's inscribed circle)."""
    h, w = (int(v) for v in rng.integers(60, 200, 2))
    radius = float(rng.uniform(6, min(h, w) / 4))
    cx, cy = rng.uniform(radius, w - radius), rng.uniform(radius, h - radius)
    ys, xs = np.mgrid[:h, :w] + 0.5  # continuous coordinates: pixel i's centre is at i + 0.5
    image = np.repeat(np.where(np.hypot(xs - cx, ys - cy) <= radius, 255, 0).astype(np.uint8)[..., None], 3, 2)
    angles = rng.uniform(0, 2 * np.pi, 5)
    points = np.stack([cx + 0.7 * radius * np.cos(angles), cy + 0.7 * radius * np.sin(angles)], 1)
    target = T.make_target([[cx - radius, cy - radius, cx + radius, cy + radius]], points[None], [True])
    return image, target


@pytest.mark.parametrize("degrees", [0.0, 17.0, -45.0, 90.0, 180.0, -133.0])
def test_rotation_keeps_a_disc_under_its_box_and_its_points_on_their_pixels(degrees):
    """A disc's box is its inscribed circle's, so after any turn the white pixels still span the box; a marked
    pixel under the left eye is still under it; the canvas is just large enough for the whole turned photo."""
    for seed in range(20):
        rng = np.random.default_rng(seed)
        image, target = painted_disc(rng)
        px, py = np.floor(target["landmarks"][0, 0]).astype(int)
        image[py, px] = (0, 0, 255)  # one red pixel under the left eye
        out_image, out = T.rotate(image, target, degrees)
        box = out["boxes"][0]
        np.testing.assert_allclose(box[2:] - box[:2], target["boxes"][0, 2:] - target["boxes"][0, :2], atol=1e-3)
        ys, xs = np.nonzero(out_image[..., 0] >= 128)
        painted = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)
        assert np.abs(painted - box).max() <= 1.5, (seed, painted, box)  # a pixel plus interpolation
        red = out_image[..., 2].astype(int) - out_image[..., 0]
        ry, rx = np.unravel_index(red.argmax(), red.shape)
        assert np.abs(np.array([rx + 0.5, ry + 0.5]) - out["landmarks"][0, 0]).max() <= 1.5
        h, w = image.shape[:2]
        theta = np.deg2rad(degrees)
        assert out_image.shape[1] == pytest.approx(abs(w * np.cos(theta)) + abs(h * np.sin(theta)), abs=1)
        assert out_image.shape[0] == pytest.approx(abs(w * np.sin(theta)) + abs(h * np.cos(theta)), abs=1)


def test_rotation_by_zero_is_the_identity_and_teacher_candidates_turn_with_the_labels():
    rng = np.random.default_rng(3)
    image, target = synthetic(rng)
    same_image, same = T.rotate(image, target, 0.0)
    np.testing.assert_array_equal(same_image, image)
    np.testing.assert_allclose(same["boxes"], target["boxes"], atol=1e-4)
    np.testing.assert_allclose(same["landmarks"], target["landmarks"], atol=1e-4)
    target.update(teacher_boxes=target["boxes"].copy(), teacher_points=target["landmarks"].copy(),
                  teacher_scores=target["landmark_weight"].copy())
    _, out = T.rotate(image, target, 31.0)
    np.testing.assert_array_equal(out["teacher_boxes"], out["boxes"])
    np.testing.assert_array_equal(out["teacher_points"], out["landmarks"])
    # A turn keeps each face's points where they were relative to one another (distances unchanged).
    before = np.linalg.norm(target["landmarks"][:, 0] - target["landmarks"][:, 1], axis=-1)
    after = np.linalg.norm(out["landmarks"][:, 0] - out["landmarks"][:, 1], axis=-1)
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-3)


def test_presets_with_rotation_keep_every_face_in_the_crop():
    """Rotation first, then the usual crop: boxes stay inside the output, per-face arrays stay aligned, and a
    photo whose faces must all survive (``ignore_background``) keeps them all."""
    pipeline = T.build_preset("small-faces", SIZE, zoom_out_p=0.5, rotate_p=1.0, max_rotation=180)
    assert isinstance(pipeline.transforms[0], T.RandomRotate)
    assert not any(isinstance(t, T.RandomRotate) for t in T.build_preset("small-faces", SIZE).transforms)
    for seed in range(60):
        for ignore_background in (False, True):
            rng = np.random.default_rng(seed)
            image, target = synthetic(rng, ignore_background=ignore_background)
            _, out = pipeline(image, target, rng)
            boxes = out["boxes"].numpy()
            ids = out["landmark_weight"].numpy()
            assert ((boxes >= -1e-4) & (boxes <= 1 + 1e-4)).all() and (boxes[:, 2:] > boxes[:, :2]).all()
            assert (out["has_landmarks"].numpy() == (ids % 2 == 1)).all()
            if ignore_background:
                assert len(ids) == target["boxes"].shape[0]


def test_rotation_rejects_an_angle_beyond_half_a_turn():
    with pytest.raises(ValueError, match="max_degrees"):
        T.RandomRotate(0.5, 200)
