"""Aligned crops: least-squares similarity onto the ArcFace template, checked on drawn landmarks."""
import json

import cv2
import numpy as np
import pytest

from blazeface import BlazefaceError, Face, align_face
from blazeface.alignment import (ARCFACE_TEMPLATE, alignment_transform, similarity_transform, template,
                                 transform_points)
from blazeface.cli import main
from conftest import DATA, SAMPLE, requires_shared

BLAZE_640 = DATA / "reference_weights" / "Blaze_Final_640.pth"


def similarity(angle_deg, scale, tx, ty):
    a, b = scale * np.cos(np.radians(angle_deg)), scale * np.sin(np.radians(angle_deg))
    return np.array([[a, -b, tx], [b, a, ty]])


def test_template():
    assert np.allclose(template(112), ARCFACE_TEMPLATE)
    assert np.allclose(template(224), 2 * ARCFACE_TEMPLATE)
    left, right = ARCFACE_TEMPLATE[0], ARCFACE_TEMPLATE[1]
    assert left[0] < right[0] and abs(left[1] - right[1]) < 0.25  # eyes level
    with pytest.raises(BlazefaceError):
        template(0)


def test_similarity_recovers_an_exact_transform():
    truth = similarity(-33.0, 0.37, 12.5, -4.0)
    src = np.random.default_rng(0).uniform(0, 300, (5, 2))
    assert np.allclose(similarity_transform(src, transform_points(truth, src)), truth, atol=1e-9)


def test_similarity_is_the_least_squares_fit():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, (5, 2))
    dst = transform_points(similarity(10, 1.5, 3, 7), src) + rng.normal(0, 2.0, (5, 2))
    best = similarity_transform(src, dst)
    cost = lambda m: ((transform_points(m, src) - dst) ** 2).sum()  # noqa: E731
    a, b, tx, ty = best[0, 0], best[1, 0], best[0, 2], best[1, 2]
    for k in range(4):  # any nudge of the four parameters costs more
        for step in (-1e-3, 1e-3):
            p = np.array([a, b, tx, ty])
            p[k] += step
            assert cost(np.array([[p[0], -p[1], p[2]], [p[1], p[0], p[3]]])) > cost(best)
    # ... and it is a similarity: equal scale on both axes, no shear, no reflection.
    assert np.isclose(best[0, 0], best[1, 1]) and np.isclose(best[0, 1], -best[1, 0])
    with pytest.raises(BlazefaceError, match="degenerate"):
        similarity_transform(np.ones((5, 2)), dst)


def drawn_face(angle, scale, size=(480, 420)):
    """A dark image with a Gaussian dot (sigma 1.5 px in the crop) centred exactly on each landmark: the
    template mapped by a known similarity (the inverse of what alignment must find). -> (image, landmarks)."""
    truth = similarity(angle, scale, 140.0, 60.0)
    points = transform_points(truth, ARCFACE_TEMPLATE)
    ys, xs = np.mgrid[:size[1], :size[0]].astype(np.float64)
    sigma = 1.5 * scale
    level = sum(np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2)) for x, y in points)
    image = np.repeat(np.round(20 + 220 * level).astype(np.uint8)[..., None], 3, axis=2)
    return image, points


def dot_centres(crop, expected, radius=9):
    """Brightness-weighted centre of the dot near each expected point (windows of ``radius`` px, far
    wider than the dots, so an offset dot is measured where it is)."""
    grey = crop[..., 0].astype(np.float64) - 20
    ys, xs = np.mgrid[:crop.shape[0], :crop.shape[1]].astype(np.float64)
    centres = []
    for x, y in expected:
        w = np.where((xs - x) ** 2 + (ys - y) ** 2 <= radius ** 2, np.clip(grey, 0, None), 0.0)
        centres.append([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])
    return np.array(centres)  # pixel (row i, column j) sits at (x=j, y=i), warpAffine's convention


@pytest.mark.parametrize("angle,scale,size", [(0.0, 1.0, 112), (25.0, 2.5, 112), (-40.0, 1.7, 112), (12.0, 2.0, 224)])
def test_drawn_landmarks_align_back_onto_the_template(angle, scale, size):
    image, points = drawn_face(angle, scale)
    face = Face(np.array([0, 0, 10, 10], np.float32), 0.99, points.astype(np.float32))
    crop, matrix = align_face(image, face, size=size, return_transform=True)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    assert np.allclose(transform_points(matrix, points), template(size), atol=1e-3)
    error = np.linalg.norm(dot_centres(crop, template(size), radius=9 * size / 112) - template(size), axis=1)
    assert error.max() < 0.25, f"landmarks land {error.round(2)} px from the template"  # the spec: < 1 px


def test_align_face_inputs():
    image, points = drawn_face(15.0, 2.0)
    face = Face(np.zeros(4, np.float32), 0.9, points.astype(np.float32))
    crop = align_face(image, face)
    assert np.array_equal(align_face(image, points), crop)
    assert np.array_equal(align_face(image, face.to_dict()), align_face(image, np.round(points, 2)))
    assert np.allclose(alignment_transform(points), similarity_transform(points, ARCFACE_TEMPLATE))
    # Outside the image the crop is the border value.
    corner = Face(np.zeros(4, np.float32), 0.9, (ARCFACE_TEMPLATE - 60).astype(np.float32))
    assert (align_face(image, corner, border_value=(1, 2, 3))[0, 0] == (1, 2, 3)).all()
    with pytest.raises(BlazefaceError, match="five"):
        align_face(image, np.zeros((4, 2)))


@requires_shared
def test_cli_align_sample(tmp_path, capsys):
    out = tmp_path / "crops"
    rc = main(["align", "--weights", str(BLAZE_640), str(SAMPLE), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (out / "faces.jsonl").read_text().splitlines()]
    assert len(records) == 18  # one per face the original code finds (conf 0.5)
    assert [r["crop"] for r in records] == [f"sample_face{i}.png" for i in range(18)]
    scores = [r["score"] for r in records]
    assert scores == sorted(scores, reverse=True)
    for r in records:
        crop = cv2.imread(str(out / r["crop"]))
        assert crop.shape == (112, 112, 3)
        assert r["source"] == str(SAMPLE) and r["size"] == 112 and len(r["box"]) == 4
        matrix = np.array(r["transform"])
        mapped = transform_points(matrix, np.array(r["landmarks"]))
        assert abs(mapped[0, 1] - mapped[1, 1]) < 3.0  # eyes level in the crop
        assert np.abs(mapped - ARCFACE_TEMPLATE).max() < 12.0
    # Other sizes, a video and a missing input: the crops of the good input, one line per bad one.
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    rc = main(["align", "--weights", str(BLAZE_640), str(SAMPLE), str(video), str(tmp_path / "none.jpg"),
               "--out", str(tmp_path / "big"), "--size", "224"])
    err = capsys.readouterr().err
    assert rc == 1 and "clip.mp4: align takes images" in err and "none.jpg: no such file" in err
    assert cv2.imread(str(tmp_path / "big" / "sample_face0.png")).shape == (224, 224, 3)
    assert main(["align", "--weights", str(BLAZE_640), str(SAMPLE), "--size", "0"]) == 2
