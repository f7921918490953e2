"""Anonymisation: pixels change inside every mask and nowhere else; videos keep frames, size, rate, audio."""
import json

import cv2
import numpy as np
import pytest

from blazeface import BlazefaceError, Face, anonymize
from blazeface.cli import main
from blazeface.media import has_audio, image_write_params, jpeg_info, write_image_like
from blazeface.privacy import (DEFAULT_BLUR_CONF, BlurSettings, MaskHold, anonymize_video, face_mask, mask_boxes)
from conftest import DATA, REPO, SAMPLE, requires_shared

BLAZE_640 = DATA / "reference_weights" / "Blaze_Final_640.pth"
# Boxes on a 160x120 noise image: one plain, two overlapping, one running off the bottom-right corner,
# one tiny.
BOXES = np.array([[20, 15, 50, 55], [80, 30, 110, 70], [100, 40, 125, 75], [140, 100, 170, 130], [5, 95, 9, 100]],
                 np.float64)


def noise(h=120, w=160, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def face(box, score=0.9):
    x1, y1, x2, y2 = box
    points = np.array([[x1 + 0.3 * (x2 - x1), y1 + 0.4 * (y2 - y1)], [x1 + 0.7 * (x2 - x1), y1 + 0.4 * (y2 - y1)],
                       [x1 + 0.5 * (x2 - x1), y1 + 0.6 * (y2 - y1)], [x1 + 0.35 * (x2 - x1), y1 + 0.8 * (y2 - y1)],
                       [x1 + 0.65 * (x2 - x1), y1 + 0.8 * (y2 - y1)]])
    return Face(np.asarray(box, np.float32), score, points.astype(np.float32))


def test_mask_geometry():
    # deface's --mask-scale convention: each side moves out by 0.3 of the box size.
    assert mask_boxes([[10, 20, 30, 60]], 100, 100, 1.3).tolist() == [[4, 8, 36, 72]]
    assert mask_boxes([[10, 20, 30, 60]], 100, 100, 1.0).tolist() == [[10, 20, 30, 60]]
    assert mask_boxes([[90, -5, 120, 20]], 100, 50, 1.3).tolist() == [[81, 0, 100, 28]]  # clipped
    ellipse = face_mask((120, 160), BOXES[:1], "ellipse", 1.3)
    box = face_mask((120, 160), BOXES[:1], "box", 1.3)
    x1, y1, x2, y2 = mask_boxes(BOXES[:1], 160, 120, 1.3)[0]
    assert box.sum() == (x2 - x1) * (y2 - y1) and box[y1:y2, x1:x2].all()
    assert not (ellipse & ~box).any() and 0.7 < ellipse.sum() / box.sum() < 0.85  # ~pi/4 of the rectangle
    assert ellipse[15:55, 20:50].all()  # the inscribed ellipse still covers the whole face box
    with pytest.raises(BlazefaceError, match="unknown shape"):
        face_mask((10, 10), BOXES[:1], "circle")


@pytest.mark.parametrize("method", ["blur", "mosaic", "solid"])
@pytest.mark.parametrize("shape", ["box", "ellipse"])
def test_anonymize_changes_inside_every_mask_and_nothing_outside(method, shape):
    image = noise()
    before = image.copy()
    out = anonymize(image, BOXES, method=method, shape=shape)
    assert np.array_equal(image, before)  # the input is not modified
    assert out.shape == image.shape and out.dtype == np.uint8
    mask = face_mask(image.shape, BOXES, shape)
    assert np.array_equal(out[~mask], image[~mask])  # identical outside, to the bit
    changed = (out != image).any(axis=2)
    for k in range(len(BOXES)):
        own = face_mask(image.shape, BOXES[k:k + 1], shape)
        assert own.any()
        assert changed[own].mean() > 0.9, f"face {k}: only {changed[own].mean():.2f} of its mask changed"
    if method == "solid":
        assert (out[mask] == 0).all()


def test_anonymize_inputs_and_options():
    image = noise()
    faces = [face(b) for b in BOXES]
    by_array = anonymize(image, BOXES)
    assert np.array_equal(anonymize(image, faces), by_array)
    assert np.array_equal(anonymize(image, [f.to_dict() for f in faces]), by_array)
    assert np.array_equal(anonymize(image, np.column_stack([BOXES, np.ones(len(BOXES))])), by_array)  # + scores
    assert np.array_equal(anonymize(image, BOXES, method="none"), image)
    assert np.array_equal(anonymize(image, []), image)
    red = anonymize(image, BOXES[:1], method="solid", shape="box", colour=(0, 0, 255))
    assert (red[20, 30] == (0, 0, 255)).all()
    inplace = image.copy()
    assert anonymize(inplace, BOXES, copy=False) is inplace and np.array_equal(inplace, by_array)
    # A bigger scale masks a superset.
    small, big = face_mask(image.shape, BOXES, "ellipse", 1.1), face_mask(image.shape, BOXES, "ellipse", 1.5)
    assert big.sum() > small.sum() and not (small & ~big).any()
    with pytest.raises(BlazefaceError, match="unknown method"):
        anonymize(image, BOXES, method="pixelate")


def test_blur_removes_detail():
    """A strong blur: the high-frequency content inside a face box is gone."""
    image = noise(200, 200, seed=1)
    out = anonymize(image, [[50, 50, 150, 150]], method="blur", shape="box")
    detail = lambda a: np.abs(np.diff(a[60:140, 60:140].astype(np.float64), axis=1)).mean()  # noqa: E731
    assert detail(out) < 0.05 * detail(image)


def test_mask_hold_keeps_faces_through_short_gaps():
    hold = MaskHold(hold=3)
    a, b = face([10, 10, 40, 40]), face([100, 10, 130, 40])
    masked, held = hold.update([a, b])
    assert len(masked) == 2 and held == [False, False]
    for gap in range(1, 4):  # a vanishes: held for 3 frames at its last place
        moved_b = face([102, 10, 132, 40])  # b moves a little: replaced, not duplicated
        masked, held = hold.update([moved_b])
        assert len(masked) == 2 and held == [False, True]
        assert np.allclose(masked[1].box, a.box)
    masked, held = hold.update([face([104, 10, 134, 40])])
    assert len(masked) == 1 and held == [False]  # fourth frame without a: released
    assert MaskHold(hold=0).update([a]) == ([a], [False])
    zero = MaskHold(hold=0)
    zero.update([a])
    assert zero.update([]) == ([], [])


def test_jpeg_settings_follow_the_source(tmp_path):
    image = noise(64, 96)
    for quality, factor, hv in [(83, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444, (1, 1)),
                                (60, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420, (2, 2))]:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                                               factor])
        info = jpeg_info(buf.tobytes())
        assert info["quality"] == quality and info["sampling"] == hv and info["components"] == 3
        src = tmp_path / f"q{quality}.jpg"
        buf.tofile(str(src))
        params = image_write_params(".jpg", src, "keep")
        assert params[:2] == [cv2.IMWRITE_JPEG_QUALITY, quality] and params[3] == factor
    # "max" keeps every pixel of a decoded JPEG within a few levels, even for noise.
    decoded = cv2.imread(str(src))
    write_image_like(tmp_path / "out.jpg", decoded, src)
    assert np.abs(cv2.imread(str(tmp_path / "out.jpg")).astype(int) - decoded).max() <= 4
    assert image_write_params(".jpg", src, 70) == [cv2.IMWRITE_JPEG_QUALITY, 70]
    with pytest.raises(BlazefaceError, match="JPEG quality"):
        image_write_params(".jpg", src, 0)
    write_image_like(tmp_path / "out.png", image)
    assert np.array_equal(cv2.imread(str(tmp_path / "out.png")), image)
    assert jpeg_info(b"not a jpeg")["quality"] is None


# ---------------------------------------------------------------------------------------------------
# Video


class StubDetector:
    """One face in every frame except frames 4 and 5 (a short gap the mask must bridge)."""

    def __init__(self):
        self.calls = 0

    def detect_batch(self, frames, batch_size=8):
        out = []
        for frame in frames:
            index = self.calls
            self.calls += 1
            out.append([] if index in (4, 5) else [face([20, 16, 52, 50])])
        return out


def make_video(path, frames=12, fps=12.5, size=(96, 64), audio=False, tmp=None):
    writer = cv2.VideoWriter(str(path if not audio else tmp), cv2.VideoWriter_fourcc(*("XVID" if path.suffix == ".avi"
                                                                                         else "mp4v")), fps, size)
    assert writer.isOpened()
    for k in range(frames):
        writer.write(noise(size[1], size[0], seed=k))
    writer.release()
    if audio:
        import subprocess

        from blazeface.media import ffmpeg_exe

        subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(tmp), "-f", "lavfi", "-i",
                        f"sine=frequency=440:duration={frames / fps}", "-map", "0:v", "-map", "1:a", "-c:v", "copy",
                        "-c:a", "aac", str(path)], check=True)


def probe(path):
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return fps, (w, h), frames


def _have_ffmpeg():
    from blazeface.media import ffmpeg_exe

    try:
        return bool(ffmpeg_exe())
    except BlazefaceError:
        return False


needs_ffmpeg = pytest.mark.skipif(not _have_ffmpeg(), reason="no ffmpeg (pip install imageio-ffmpeg)")


@needs_ffmpeg
@pytest.mark.parametrize("suffix,audio", [(".mp4", True), (".avi", False)])
def test_video_keeps_frames_size_rate_and_audio(tmp_path, suffix, audio):
    src = tmp_path / f"in{suffix}"
    make_video(src, audio=audio, tmp=tmp_path / f"silent{suffix}")
    assert has_audio(src) == audio
    dst = tmp_path / "out" / src.name
    records = []
    summary = anonymize_video(StubDetector(), src, dst, BlurSettings(hold=2), batch_size=5, on_frame=records.append,
                              progress=False)
    assert summary["frames"] == 12 and summary["audio"] == audio
    assert has_audio(dst) == audio
    fps_in, size_in, frames_in = probe(src)
    fps_out, size_out, frames_out = probe(dst)
    assert len(frames_out) == len(frames_in) == 12
    assert size_out == size_in == (96, 64)
    assert abs(fps_out - fps_in) < 1e-3 and abs(fps_out - 12.5) < 1e-3
    assert not list(dst.parent.glob(".*"))  # no temporary file left behind
    # Frames 4 and 5 had no detection: the face stays masked (held) there.
    assert [r["frame"] for r in records] == list(range(12))
    assert [len(r["faces"]) for r in records] == [1] * 12
    assert [r["faces"][0]["held"] for r in records] == [k in (4, 5) for k in range(12)]
    # The masked region is blurred in every frame (lossy codecs: compare far above the codec noise).
    mask = face_mask((64, 96), [[20, 16, 52, 50]], "ellipse")
    for a, b in zip(frames_in, frames_out):
        diff = np.abs(a.astype(int) - b).max(axis=2)
        assert np.median(diff[mask]) > 40


def test_unreadable_video_is_an_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(BlazefaceError, match="bad.mp4"):
        anonymize_video(StubDetector(), bad, tmp_path / "out" / "bad.mp4", BlurSettings(), progress=False)
    assert not (tmp_path / "out" / "bad.mp4").exists()


# ---------------------------------------------------------------------------------------------------
# The command, with the original checkpoint


def mcu_blocks(mask, mcu, grow=0):
    """The pixels of every mcu x mcu block that touches ``mask``, grown by ``grow`` pixels."""
    h, w = mask.shape
    padded = np.zeros((-(-h // mcu) * mcu, -(-w // mcu) * mcu), bool)
    padded[:h, :w] = mask
    touched = padded.reshape(padded.shape[0] // mcu, mcu, padded.shape[1] // mcu, mcu).any(axis=(1, 3))
    blocks = np.kron(touched, np.ones((mcu, mcu), bool))[:h, :w]
    if grow:
        blocks = cv2.dilate(blocks.astype(np.uint8), np.ones((2 * grow + 1,) * 2, np.uint8)).astype(bool)
    return blocks


def original_faces_on_sample(conf=0.5):
    """The original implementation's detections on the sample (its outputs at 640x480), in sample pixels."""
    from blazeface.models import get_config
    from blazeface.postprocess import PostprocessConfig, postprocess
    from blazeface.priors import prior_boxes

    ref = np.load(DATA / "reference_outputs" / "blaze_640.npz")
    cfg = get_config("blaze")
    dets = postprocess(ref["loc_640x480"], ref["conf_640x480"], ref["landm_640x480"],
                       prior_boxes(cfg.priors, 480, 640), (640, 480), PostprocessConfig(conf=conf, nms=0.4),
                       cfg.priors.variances)
    return dets.boxes * np.array([400 / 640, 210 / 480, 400 / 640, 210 / 480])


@requires_shared
def test_cli_blur_masks_every_original_face_and_nothing_else(tmp_path, capsys):
    src = tmp_path / "sample.png"  # lossless, so "nothing outside the masks" is exact
    cv2.imwrite(str(src), cv2.imread(str(SAMPLE)))
    rc = main(["blur", "--weights", str(BLAZE_640), str(src), str(SAMPLE), "--out", str(tmp_path / "out"),
               "--json", "-"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["image"] for r in records] == [str(src), str(SAMPLE)]
    original = cv2.imread(str(SAMPLE))
    for record in records:
        out = cv2.imread(record["output"])
        assert out.shape == original.shape
        faces = record["faces"]
        assert len(faces) >= 18 and all(f["score"] >= DEFAULT_BLUR_CONF for f in faces) and not any(f["held"] for f in faces)
        mask = face_mask(original.shape, faces, "ellipse")
        diff = np.abs(out.astype(int) - original).max(axis=2)
        if record["output"].endswith(".png"):
            assert (diff[~mask] == 0).all()
        else:  # JPEG, block by block: every pixel outside the re-encoded 16x16 MCUs (and the one-pixel
            # reach of the decoder's chroma upsampling) is bit-identical
            assert (diff[~mcu_blocks(mask, 16, grow=1)] == 0).all()
        for x1, y1, x2, y2 in original_faces_on_sample():  # every face the original code finds is masked
            x1, y1, x2, y2 = (int(round(v)) for v in (x1, y1, x2, y2))
            assert mask[y1:y2, x1:x2].mean() > 0.99
            assert (diff[y1:y2, x1:x2] > 0).mean() > 0.9
    assert len(original_faces_on_sample()) >= 15


@requires_shared
def test_cli_blur_video_and_errors(tmp_path, capsys):
    image = cv2.imread(str(SAMPLE))
    src = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"MJPG"), 10, (400, 210))
    for _ in range(3):
        writer.write(image)
    writer.release()
    out = tmp_path / "out"
    rc = main(["blur", "--weights", str(BLAZE_640), "--method", "mosaic", "--shape", "box", str(src),
               str(tmp_path / "missing.jpg"), "--out", str(out), "--json", str(tmp_path / "m.jsonl")])
    captured = capsys.readouterr()
    assert rc == 1 and "missing.jpg: no such file" in captured.err
    fps, size, frames = probe(out / "clip.avi")
    assert len(frames) == 3 and size == (400, 210) and abs(fps - 10) < 1e-3
    records = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == [0, 1, 2] and all(len(r["faces"]) >= 18 for r in records)
    # Writing over the input is refused; without --out the copy goes beside the input.
    rc = main(["blur", "--weights", str(BLAZE_640), str(src), "--out", str(tmp_path)])
    assert rc == 1 and "would overwrite the input" in capsys.readouterr().err
    copy = tmp_path / "in" / "a.png"
    copy.parent.mkdir()
    cv2.imwrite(str(copy), image)
    assert main(["blur", "--weights", str(BLAZE_640), "--method", "solid", str(copy.parent)]) == 0
    assert (copy.parent / "a_anonymized.png").is_file()
    assert main(["blur", "--weights", str(BLAZE_640), str(copy.parent)]) == 0  # earlier output is not an input
    assert sorted(p.name for p in copy.parent.iterdir()) == ["a.png", "a_anonymized.png"]


def test_default_blur_conf_belongs_to_the_shipped_weights():
    """DEFAULT_BLUR_CONF was chosen for the shipped blaze weights by benchmarks/blur_threshold.py, which
    records their SHA-256 beside it. New weights need a new threshold."""
    from blazeface.metadata import file_sha256
    from blazeface.models import shipped_weights
    from blazeface.privacy import DEFAULT_BLUR_CONF_WEIGHTS_SHA256

    assert file_sha256(shipped_weights("blaze")) == DEFAULT_BLUR_CONF_WEIGHTS_SHA256, (
        "the shipped blaze weights changed since DEFAULT_BLUR_CONF was derived: run "
        "python benchmarks/blur_threshold.py --write (and update the README's table)")
    readme = (REPO / "README.md").read_text()
    assert f"**Default threshold {DEFAULT_BLUR_CONF}, recall first.**" in readme
    assert f"| **{DEFAULT_BLUR_CONF} (blur)** |" in readme
