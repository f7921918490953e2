import json

import cv2
import numpy as np
import pytest

from blazeface import BlazefaceError
from blazeface.cli import main
from blazeface.geometry import box_iou
from blazeface.inference import FaceDetector, letterbox_size
from blazeface.models import list_models
from conftest import DATA, SAMPLE, requires_shared

BLAZE_640 = DATA / "reference_weights" / "Blaze_Final_640.pth"


def iou(a, b) -> float:
    return float(box_iou(a, b)[0, 0])


def test_letterbox_sizes():
    box = letterbox_size(400, 210, 640, 16)
    assert box.resized_size == (640, 336) and box.input_size == (640, 336)
    box = letterbox_size(401, 211, 0, 16)
    assert box.resized_size == (401, 211) and box.input_size == (416, 224)
    assert letterbox_size(300, 300, 320, 1).input_size == (320, 320)


@pytest.fixture(scope="module")
def blaze():
    """The shipped blaze weights at detect's settings."""
    return FaceDetector("blaze", long_side=640, conf=0.5, nms=0.4)


@requires_shared
def test_sample_matches_original_implementation():
    # The original code with the original checkpoint finds 18 faces here, scores 0.997 .. 0.519.
    faces = FaceDetector("blaze", weights=BLAZE_640, long_side=640, conf=0.5, nms=0.4).detect(SAMPLE)
    assert len(faces) == 18
    assert abs(faces[0].score - 0.997) < 1e-3 and abs(faces[-1].score - 0.519) < 1e-3
    scores = [f.score for f in faces]
    assert scores == sorted(scores, reverse=True)
    for f in faces:  # landmarks of confident faces sit inside their boxes
        if f.score > 0.9:
            x1, y1, x2, y2 = f.box
            assert np.all((f.landmarks[:, 0] >= x1 - 2) & (f.landmarks[:, 0] <= x2 + 2))
            assert f.landmarks[0, 0] < f.landmarks[1, 0]  # left eye has the smaller x


def test_input_types_agree(blaze):
    from PIL import Image

    bgr = cv2.imread(str(SAMPLE))
    by_path = blaze.detect(SAMPLE)
    by_array = blaze.detect(bgr)
    by_pil = blaze.detect(Image.open(SAMPLE))
    for other in (by_array, by_pil):
        assert len(other) == len(by_path)
        assert np.allclose([f.box for f in other], [f.box for f in by_path], atol=1e-4)


def test_a_16_bit_pil_image_is_read_as_its_file_is(blaze, tmp_path):
    """A 16-bit grey PNG opened by PIL (mode I;16) gives the faces its path gives: PIL's own convert("RGB")
    clips it to white and found none. 32-bit PIL modes, of no fixed range, are refused with a hint."""
    from PIL import Image

    from blazeface.io import as_bgr

    grey = cv2.imread(str(SAMPLE), cv2.IMREAD_GRAYSCALE).astype(np.uint16) * 257
    path = tmp_path / "grey16.png"
    cv2.imwrite(str(path), grey)
    with Image.open(path) as image:
        assert image.mode == "I;16"
        assert np.array_equal(as_bgr(image), cv2.imread(str(path), cv2.IMREAD_COLOR))
        faces = blaze.detect(image)
    assert len(faces) >= 5 and faces == blaze.detect(path)
    for mode in ("I", "F"):
        with pytest.raises(BlazefaceError, match=f"mode {mode} .*convert it to 8 bits"):
            as_bgr(Image.new(mode, (8, 8)))


def test_results_map_back_to_input_pixels(blaze):
    """The same photo at twice the size gives boxes at twice the coordinates (same network input)."""
    bgr = cv2.imread(str(SAMPLE))
    big = cv2.resize(bgr, (bgr.shape[1] * 2, bgr.shape[0] * 2), interpolation=cv2.INTER_LINEAR)
    small_faces = blaze.detect(bgr)
    big_faces = blaze.detect(big)
    matched = 0
    for f in small_faces:
        if f.score < 0.8:
            continue
        best = max(big_faces, key=lambda g: iou(g.box / 2, f.box))
        assert iou(best.box / 2, f.box) > 0.9
        assert np.abs(best.landmarks / 2 - f.landmarks).max() < 2.0
        matched += 1
    assert matched >= 10


def test_batch_equals_single(blaze):
    bgr = cv2.imread(str(SAMPLE))
    flipped = bgr[:, ::-1].copy()
    single = [blaze.detect(bgr), blaze.detect(flipped)]
    batch = blaze.detect_batch([bgr, flipped])
    for a, b in zip(single, batch):
        assert len(a) == len(b)
        assert np.allclose([f.box for f in a], [f.box for f in b], atol=1e-3)


def test_calling_the_detector(blaze):
    """detector(image) is detect(image); detector([images]) is detect_batch, keyword overrides included."""
    from PIL import Image

    bgr = cv2.imread(str(SAMPLE))
    assert blaze(SAMPLE) == blaze.detect(SAMPLE)
    assert blaze(str(SAMPLE), conf=0.9) == blaze.detect(SAMPLE, conf=0.9)
    assert blaze(Image.open(SAMPLE)) == blaze.detect(Image.open(SAMPLE))
    batch = blaze([bgr, SAMPLE], conf=0.9)
    assert isinstance(batch, list) and batch == blaze.detect_batch([bgr, SAMPLE], conf=0.9)
    assert blaze(bgr) == blaze.detect(bgr)
    assert blaze(iter([bgr])) == blaze.detect_batch([bgr])  # an iterator is a batch too
    assert "model='blaze'" in repr(blaze)


def test_bad_inputs_are_one_line_errors(tmp_path):
    from blazeface.io import as_bgr, read_image

    with pytest.raises(BlazefaceError, match="no such file"):
        read_image(tmp_path / "none.jpg")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(BlazefaceError, match="corrupt.jpg: not a readable image"):
        read_image(corrupt)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(BlazefaceError, match="empty file"):
        read_image(tmp_path / "empty.jpg")
    with pytest.raises(BlazefaceError, match="is a folder"):
        read_image(tmp_path)
    with pytest.raises(BlazefaceError, match="cannot read an image from int"):
        as_bgr(3)


def test_cli_detect_json_and_errors(tmp_path, capsys):
    folder = tmp_path / "in" / "sub"
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "a.png"), cv2.imread(str(SAMPLE)))
    (folder / "broken.jpg").write_bytes(b"garbage")
    out = tmp_path / "out"
    rc = main(["detect", "--json", "-", "--out", str(out), str(tmp_path / "in"), str(SAMPLE)])
    captured = capsys.readouterr()
    assert rc == 1  # one input failed, the rest went on
    assert "broken.jpg: not a readable image" in captured.err
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["image"] for r in records] == [str(folder / "a.png"), str(SAMPLE)]
    for r in records:
        assert (r["width"], r["height"]) == (400, 210) and len(r["faces"]) >= 12
        face = r["faces"][0]
        assert len(face["box"]) == 4 and len(face["landmarks"]) == 5 and 0 < face["score"] <= 1
        assert all(0 <= face["box"][k] <= (400, 210)[k % 2] for k in range(4))
    # The folder argument keeps its name under --out: in/sub/a.png, not sub/a.png.
    assert (out / "in" / "sub" / "a.png").is_file() and (out / "sample.jpg").is_file()


def test_cli_detect_missing_weights_and_inputs(tmp_path, capsys):
    rc = main(["detect", "--weights", str(tmp_path / "none.pth"), str(SAMPLE)])
    assert rc == 2 and "none.pth: weights file not found" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["detect", str(empty), str(tmp_path / "missing.jpg")])
    err = capsys.readouterr().err
    assert rc == 1 and "folder holds no images" in err and "missing.jpg: no such file" in err


def test_cli_detect_video(tmp_path, capsys):
    frame = cv2.imread(str(SAMPLE))
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (frame.shape[1], frame.shape[0]))
    for k in range(5):
        writer.write(np.roll(frame, 3 * k, axis=1))
    writer.release()
    rc = main(["detect", "--json", str(tmp_path / "d.jsonl"), "--out",
               str(tmp_path / "out"), str(video)])
    assert rc == 0
    records = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(5))
    assert all(len(r["faces"]) >= 12 for r in records)
    cap = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5


@pytest.mark.parametrize("name", list_models())
def test_shipped_weights_find_the_sample_faces(name, capsys):
    """`blazeface detect` with no --weights on the bundled photo (18 faces found by the original blaze)."""
    assert main(["detect", "--model", name, "--json", "-", str(SAMPLE)]) == 0
    record = json.loads(capsys.readouterr().out)
    faces = record["faces"]
    assert len(faces) >= 10
    for face in faces:
        x1, y1, x2, y2 = face["box"]
        (lx, ly), (rx, ry) = face["landmarks"][:2]
        assert x1 - 3 <= min(lx, rx) and max(lx, rx) <= x2 + 3 and y1 - 3 <= min(ly, ry) <= y2 + 3
        if face["score"] > 0.9:
            assert lx < rx  # the left eye has the smaller x
