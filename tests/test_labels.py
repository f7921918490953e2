"""Label readers: every format on small hand-written files, errors that name file and line, and (when the
shared data is present) the real label files."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from blazeface.data import labels
from blazeface.data.labels import clip_to_images, find_label_file, load_source, read_mtfl, read_retinaface, read_wider
from blazeface.errors import BlazefaceError
from conftest import REPO

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent")


def write(folder: Path, name: str, text: str) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


RETINAFACE = """\
# a/one.jpg
10.5 20.25 30.5 40.0 15.0 30.0 0.0 30.0 30.0 0.0 22.0 40.0 1.0 16.0 50.0 0.0 29.0 50.0 0.0 0.83
5 5 0.5 10 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0
100 100 20 20 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0
# b/empty.jpg
# c/short.jpg
1 2 3 4
1 2 30 40 5 6 7 8 9 10 11 12 13 14
"""


def test_retinaface_format(tmp_path):
    samples = read_retinaface(write(tmp_path, "label.txt", RETINAFACE))
    assert [s.image_path for s in samples] == [tmp_path / "images" / n for n in ("a/one.jpg", "b/empty.jpg",
                                                                               "c/short.jpg")]
    one, empty, short = samples
    # Float coordinates, x2 = x + w; the 0.5-pixel-wide face is dropped and counted.
    np.testing.assert_allclose(one.boxes, [[10.5, 20.25, 41.0, 60.25], [100, 100, 120, 120]])
    assert samples.dropped["degenerate"] == 1
    np.testing.assert_allclose(one.landmarks[0], [[15, 30], [30, 30], [22, 40], [16, 50], [29, 50]])
    assert one.has_landmarks.tolist() == [True, False]
    np.testing.assert_allclose(one.landmark_weight, [0.83, 1.0])  # the score weighs landmarked faces only
    assert one.exhaustive and empty.num_faces == 0 and empty.boxes.shape == (0, 4)
    assert empty.landmarks.shape == (0, 5, 2)
    np.testing.assert_allclose(short.boxes, [[1, 2, 4, 6], [1, 2, 31, 42]])
    assert short.has_landmarks.tolist() == [False, True]  # 4 values: none; 10 plain x y values: five points
    np.testing.assert_allclose(short.landmarks[1].ravel(), np.arange(5, 15))
    assert one.boxes.dtype == np.float32 and one.landmarks.dtype == np.float32


@pytest.mark.parametrize("bad, line, problem", [
    ("# a.jpg\n1 2 3 4\n1 2 3\n", 3, "got 3 values"),
    ("# a.jpg\n1 2 3 4\n1 2 x 4\n", 3, "not a number: 'x'"),
    ("1 2 3 4\n", 1, "before the first"),
    ("# a.jpg\n\n1 2 nan 4\n", 3, "non-finite"),
])
def test_retinaface_malformed_line_names_file_and_line(tmp_path, bad, line, problem):
    path = write(tmp_path, "label.txt", bad)
    with pytest.raises(BlazefaceError, match=problem) as info:
        read_retinaface(path)
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert "\n" not in str(info.value)


WIDER = """\
e/first.jpg
3
10.5 10 20 20 0 0 0 0 0 0
50 50 30 30 1 0 0 1 0 0
80 80 0.4 12 0 0 0 0 0 0
e/none.jpg
0
0 0 0 0 0 0 0 0 0 0
e/last.jpg
1
1 1 8.25 9 2 0 0 0 1 0
"""


def test_wider_format_leaves_out_invalid_faces(tmp_path):
    samples = read_wider(write(tmp_path, "wider_face_val_bbx_gt.txt", WIDER))
    assert [s.image_path.name for s in samples] == ["first.jpg", "none.jpg", "last.jpg"]
    np.testing.assert_allclose(samples[0].boxes, [[10.5, 10, 30.5, 30]])
    assert samples[1].num_faces == 0  # the dummy line after a count of 0 is not a face
    np.testing.assert_allclose(samples[2].boxes, [[1, 1, 9.25, 10]])
    assert samples.dropped == {"invalid": 1, "degenerate": 1}
    assert not samples[0].has_landmarks.any()


def test_wider_malformed(tmp_path):
    path = write(tmp_path, "wider_face_val_bbx_gt.txt", "e/a.jpg\ntwo\n")
    with pytest.raises(BlazefaceError, match=rf"^{path}:2: expected the face count"):
        read_wider(path)
    path = write(tmp_path, "wider_face_val_bbx_gt.txt", "e/a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n")
    with pytest.raises(BlazefaceError, match=rf"^{path}:3: file ends"):
        read_wider(path)
    path = write(tmp_path, "wider_face_val_bbx_gt.txt", "e/a.jpg\n1\n1 2 3 4 0 0\n")
    with pytest.raises(BlazefaceError, match=rf"^{path}:3: expected x y w h"):
        read_wider(path)


MTFL = """\
# image  left top right bottom  5 x,y
p1.jpg 103 107 285 289 131.00 169.00 210.00 155.00 165.00 208.00 151.00 266.00 215.00 259.00
p2.jpg 54.5 52 107 105 69 64 95 64 83 79 65 87 97 87
p2.jpg 10 10 30 30 12 15 25 15 20 20 14 25 24 25
"""


def test_mtfl_format_is_corner_boxes_and_not_exhaustive(tmp_path):
    samples = read_mtfl(write(tmp_path, "labels.txt", MTFL))
    assert [s.image_path.name for s in samples] == ["p1.jpg", "p2.jpg"]
    np.testing.assert_allclose(samples[0].boxes, [[103, 107, 285, 289]])
    np.testing.assert_allclose(samples[0].landmarks[0, 1], [210, 155])  # right eye (image right)
    assert samples[1].num_faces == 2 and samples[1].boxes[0, 0] == 54.5
    assert all(not s.exhaustive and s.has_landmarks.all() for s in samples)


def test_mtfl_malformed(tmp_path):
    path = write(tmp_path, "labels.txt", MTFL + "p3.jpg 1 2 3 4 5\n")
    with pytest.raises(BlazefaceError, match=rf"^{path}:5: expected name left top"):
        read_mtfl(path)


def test_load_source_picks_the_format(tmp_path):
    write(tmp_path, "label.txt", RETINAFACE)
    write(tmp_path, "wider_face_val_bbx_gt.txt", WIDER)
    assert find_label_file(tmp_path).name == "label.txt"
    write(tmp_path, "label_landmarks.txt", "# only.jpg\n1 1 5 5\n")
    assert len(load_source(tmp_path)) == 1  # label_landmarks.txt wins over label.txt
    mtfl = tmp_path / "m"
    write(mtfl, "labels.txt", MTFL)
    assert not load_source(mtfl)[0].exhaustive
    wider = tmp_path / "w"
    write(wider, "wider_face_val_bbx_gt.txt", WIDER)
    assert len(load_source(wider)) == 3
    assert len(load_source(wider / "wider_face_val_bbx_gt.txt")) == 3  # a label file directly


def test_load_source_errors(tmp_path):
    with pytest.raises(BlazefaceError, match="no such folder"):
        load_source(tmp_path / "missing")
    with pytest.raises(BlazefaceError, match="no label file"):
        load_source(tmp_path)
    (tmp_path / "label.txt").write_text(RETINAFACE)
    with pytest.raises(BlazefaceError, match="no images/ folder"):
        load_source(tmp_path)


@needs_shared
def test_real_widerface_labels_parse():
    """The real training labels (parsing speed: benchmarks/bench_evaluation.py)."""
    samples = load_source(SHARED / "widerface" / "train")
    assert samples.source.name == "label_landmarks.txt"
    assert len(samples) == 2451
    assert int(sum(s.has_landmarks.sum() for s in samples)) == 8102
    weights = np.concatenate([s.landmark_weight[s.has_landmarks] for s in samples])
    assert 0.85 < np.median(weights) < 0.95  # the teacher's score (median 0.91)
    plain = load_source(SHARED / "widerface" / "train" / "label.txt")
    assert plain.num_faces == samples.num_faces
    official = load_source(SHARED / "widerface" / "train" / "wider_face_train_bbx_gt.txt")
    assert len(official) == 2451 and official.dropped["invalid"] > 0


@needs_shared
@pytest.mark.parametrize("folder, images, faces", [("mtfl/train", 2000, 2000), ("facemask", 853, 4072)])
def test_real_other_sources(folder, images, faces):
    samples = load_source(SHARED / folder)
    assert len(samples) == images and samples.num_faces == faces
    assert samples[0].image_path.is_file()


def test_boxes_are_clipped_to_their_image_and_counted(tmp_path):
    import cv2

    write(tmp_path, "label.txt", "# a.jpg\n-10 5 30 20\n50 40 30 30\n10 10 20 20\n90 90 40 40\n")
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), np.zeros((60, 80, 3), np.uint8))
    samples = load_source(tmp_path)
    clip_to_images(samples)
    assert samples.clipped == 2 and samples.dropped["outside"] == 1  # the last box lies wholly outside
    assert samples[0].boxes.tolist() == [[0, 5, 20, 25], [50, 40, 80, 60], [10, 10, 30, 30]]


def test_absurd_values_and_empty_files_name_the_file(tmp_path):
    path = write(tmp_path, "label.txt", "# a.jpg\n1 2 3 4\n3e38 2 3e38 4\n")
    with pytest.raises(BlazefaceError, match=rf"^{path}:3: value 3e38 is out of range"):
        load_source(tmp_path)
    path.write_text("")
    with pytest.raises(BlazefaceError, match=rf"^{path}: the label file names no images"):
        load_source(tmp_path)


@pytest.mark.parametrize("params", [[cv2.IMWRITE_WEBP_QUALITY, 50], [cv2.IMWRITE_WEBP_QUALITY, 101]],
                         ids=["lossy", "lossless"])
@pytest.mark.parametrize("shape", [(37, 53, 3), (480, 641, 3), (5, 3, 4)])
def test_image_size_reads_webp_headers(tmp_path, params, shape):
    """WebP (the compact training copies of tools/compact_training_data.py) is sized from its header, like
    JPEG and PNG, and agrees with a decode; odd sizes and alpha (the extended VP8X header) included."""
    rng = np.random.default_rng(0)
    path = tmp_path / "x.webp"
    path.write_bytes(cv2.imencode(".webp", rng.integers(0, 255, shape, dtype=np.uint8), params)[1].tobytes())
    head = path.read_bytes()[:30]
    assert labels._webp_size(head) == (shape[1], shape[0])
    assert labels.image_size(path) == (shape[1], shape[0])


def test_select_photos_keeps_the_photos_with_a_labelled_attribute(tmp_path):
    """tools/select_photos.py: the photos whose official file marks a valid face atypical in pose, with the
    folder's own label lines unchanged (landmarks included) and its images linked, never over an existing
    folder; an invalid face does not count."""
    source = tmp_path / "train"
    (source / "images" / "0--A").mkdir(parents=True)
    (source / "wider_face_train_bbx_gt.txt").write_text(
        "0--A/a.jpg\n1\n1 2 30 30 0 0 0 0 0 1\n"          # atypical pose
        "0--A/b.jpg\n2\n1 2 30 30 0 0 0 0 0 0\n5 5 9 9 0 0 0 0 2 0\n"
        "0--A/c.jpg\n1\n1 2 30 30 0 0 0 1 0 1\n"          # atypical but invalid
        "0--A/d.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n"
        "0--A/e.jpg\n1\n4 4 20 20 2 0 0 0 0 1\n")
    label = ("# 0--A/a.jpg\n1 2 30 30 5 6 7 8 9 10 11 12 13 14\n# 0--A/b.jpg\n1 2 30 30\n5 5 9 9\n"
             "# 0--A/c.jpg\n1 2 30 30\n# 0--A/d.jpg\n# 0--A/e.jpg\n4 4 20 20\n")
    (source / "label_landmarks.txt").write_text(label)
    out = tmp_path / "profiles"

    def select(*extra):
        return subprocess.run([sys.executable, str(REPO / "tools" / "select_photos.py"), str(source), "--out", str(out),
                               *extra], capture_output=True, text=True, timeout=120)

    done = select("--where", "pose=atypical")
    assert done.returncode == 0, done.stderr
    assert (out / "label_landmarks.txt").read_text() == ("# 0--A/a.jpg\n1 2 30 30 5 6 7 8 9 10 11 12 13 14\n"
                                                         "# 0--A/e.jpg\n4 4 20 20\n")
    assert (out / "images").resolve() == (source / "images").resolve()
    assert [s.image_path.name for s in load_source(out)] == ["a.jpg", "e.jpg"]
    again = select("--where", "pose=atypical")
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
    wrong = select("--where", "pose=sideways")
    assert wrong.returncode == 2 and "expected one of" in wrong.stderr
    (source / "wider_face_train_bbx_gt.txt").write_text("0--A/a.jpg\n1\n1 2 30 30 0 0\n")
    out = tmp_path / "other"
    broken = select("--where", "pose=atypical")
    assert broken.returncode == 2 and "wider_face_train_bbx_gt.txt:3: expected x y w h" in broken.stderr
    assert "Traceback" not in broken.stderr and not out.exists()
