"""Nothing lost, nothing overwritten: outputs never replace inputs or each other; blur keeps bit depth, alpha,
frames and audio; JPEGs are edited block by block; videos are H.264 yuv420p at about the input's bitrate."""
import json
import re
import subprocess

import cv2
import numpy as np
import pytest

from blazeface import FaceDetector
from blazeface.cli import main
from blazeface.errors import BlazefaceError
from blazeface.jpeg_blocks import edit_region
from blazeface.privacy import face_mask
from blazeface.video import ffmpeg_exe, probe, video_encoder
from conftest import SAMPLE

FFMPEG = ffmpeg_exe()


@pytest.fixture(scope="module")
def sample():
    return cv2.imread(str(SAMPLE))


def make_clip(path, frames=4, fps=10, audio=True, faststart=False):
    """A short H.264 clip of the sample photo (shifted a little per frame), with a sine audio track."""
    command = [FFMPEG, "-v", "error", "-y", "-loop", "1", "-i", str(SAMPLE)]
    if audio:
        command += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={frames / fps}"]
    command += ["-vf", "scroll=h=0.002", "-frames:v", str(frames), "-r", str(fps), "-c:v", "libx264",
                "-pix_fmt", "yuv420p", "-b:v", "300k"]
    if audio:
        command += ["-c:a", "aac", "-shortest"]
    if faststart:
        command += ["-movflags", "+faststart"]
    subprocess.run(command + [str(path)], check=True)
    return path


def frames_of(path):
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame)
    return out


# ---------------------------------------------------------------------------------------------------
# Outputs never replace inputs, nor each other


def test_detect_refuses_to_write_over_its_input(tmp_path, monkeypatch, capsys):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(SAMPLE.read_bytes())
    clip = make_clip(tmp_path / "clip.mp4", frames=2)
    before = clip.read_bytes()
    monkeypatch.chdir(tmp_path)
    rc = main(["detect", "photo.jpg", "clip.mp4", "--out", "."])
    err = capsys.readouterr().err
    assert rc == 1 and "photo.jpg would overwrite the input" in err and "clip.mp4 would overwrite the input" in err
    assert photo.read_bytes() == SAMPLE.read_bytes() and clip.read_bytes() == before
    # An output that would replace another input is refused too: clip.mov becomes clip.mp4.
    (tmp_path / "clip.mov").write_bytes(before)
    rc = main(["detect", "clip.mov", "clip.mp4", "--out", "."])
    assert rc == 1 and "clip.mp4 would overwrite an input" in capsys.readouterr().err
    assert clip.read_bytes() == before


def test_same_names_keep_their_folders_or_get_distinct_names(tmp_path, capsys):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.jpg").write_bytes(SAMPLE.read_bytes())
    make_clip(tmp_path / "clip.mp4", frames=2, audio=False)
    (tmp_path / "clip.mov").write_bytes((tmp_path / "clip.mp4").read_bytes())
    out = tmp_path / "out"
    rc = main(["detect", str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "clip.mp4"),
               str(tmp_path / "clip.mov"), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "a/x.jpg", "b/x.jpg", "clip-2.mp4", "clip.mp4"]
    blurred = tmp_path / "blurred"
    rc = main(["blur", "--method", "solid", str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "a" / "x.jpg"),
               "--out", str(blurred)])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.relative_to(blurred).as_posix() for p in blurred.rglob("*") if p.is_file()) == [
        "a/x.jpg", "b/x.jpg", "x.jpg"]


@pytest.mark.parametrize("command, out", [("blur", "photos/anonymized"), ("blur", "photos"),
                                          ("detect", "photos/annotated"), ("align", "photos/crops")])
def test_a_rerun_into_an_out_folder_inside_its_input_folder_reads_only_the_inputs(tmp_path, monkeypatch, capsys,
                                                                                   command, out):
    """Outputs written inside the folder being read are not inputs the next time: a second run writes the
    same files as the first (no blurred copies of blurred copies, no outputs nested one level deeper)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "x.jpg").write_bytes(SAMPLE.read_bytes())
    extra = ["--method", "solid"] if command == "blur" else []
    runs = []
    for _ in range(2):
        assert main([command, "photos", "--out", out, *extra]) == 0
        files = (tmp_path / "photos").rglob("*")
        runs.append((sorted(p.relative_to(tmp_path).as_posix() for p in files if p.is_file()), capsys.readouterr().err))
    (first, _), (second, note) = runs
    assert first == second and "photos/x.jpg" in first and len(first) > 1
    outputs = [f for f in first if f != "photos/x.jpg" and not f.endswith(".jsonl")]
    skipped = out if out != "photos" else "photos/photos"  # the folder's own subtree of --out
    assert f"photos: left out {len(outputs)} file(s) under {skipped}, where this command writes" in note


def test_a_rerun_with_its_json_file_inside_the_input_folder_reads_only_the_inputs(tmp_path, monkeypatch, capsys):
    """blur reports every file of a folder it cannot anonymise, but not the JSON Lines an earlier run wrote
    there; a photo named by --json stays an input, so --json is refused and the photo kept."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "x.jpg").write_bytes(SAMPLE.read_bytes())
    for _ in range(2):
        assert main(["blur", "photos", "--out", "anon", "--method", "solid", "--json", "photos/masks.jsonl"]) == 0
    assert "photos: left out 1 file(s) under photos/masks.jsonl, where" in capsys.readouterr().err
    assert len((tmp_path / "photos" / "masks.jsonl").read_text().splitlines()) == 1
    assert main(["blur", "photos", "--out", "anon", "--json", "photos/x.jpg"]) == 2
    assert "--json photos/x.jpg: is an input" in capsys.readouterr().err
    assert (tmp_path / "photos" / "x.jpg").read_bytes() == SAMPLE.read_bytes()


def test_out_naming_a_file_and_json_naming_a_folder_are_one_line_errors(tmp_path, capsys):
    for command in ("detect", "blur"):
        assert main([command, str(SAMPLE), "--out", str(SAMPLE)]) == 2
        assert main([command, str(SAMPLE), "--json", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"blazeface {command}: error: --out {SAMPLE}: is a file; --out names a folder",
                       f"blazeface {command}: error: --json {tmp_path}: is a folder; --json names a file "
                       f"(or '-' for stdout)"]


def test_json_naming_an_input_or_an_output_is_refused_before_anything_is_written(tmp_path, capsys):
    """Opening --json for writing empties the file: were it an input, the photo would be gone before it was read."""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(SAMPLE.read_bytes())
    out = tmp_path / "out"
    cases = [(["detect", str(photo), "--json", str(photo)], "is an input"),
             (["blur", str(photo), "--json", str(photo)], "is an input"),
             (["detect", str(photo), "--out", str(out), "--json", str(out / "photo.jpg")], "copy goes"),
             (["blur", str(photo), "--json", str(tmp_path / "photo_anonymized.jpg")], "copy goes")]
    for argv, problem in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"blazeface {argv[0]}: error: --json ") and problem in err[0], err
    assert photo.read_bytes() == SAMPLE.read_bytes()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["photo.jpg"]  # nothing written


# ---------------------------------------------------------------------------------------------------
# Faithful images in blur


@pytest.fixture(scope="module")
def faces(sample):
    from blazeface.privacy import DEFAULT_BLUR_CONF

    return FaceDetector("blaze", conf=DEFAULT_BLUR_CONF).detect(sample)


def test_blur_keeps_16_bits_and_alpha(tmp_path, sample, capsys):
    rng = np.random.default_rng(0)
    deep = sample.astype(np.uint16) * 257 + rng.integers(0, 200, sample.shape).astype(np.uint16)  # real low bits
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    alpha = rng.integers(1, 256, sample.shape[:2]).astype(np.uint8)
    rgba = np.dstack([sample, alpha])
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    grey = cv2.cvtColor(sample, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    out = tmp_path / "out"
    rc = main(["blur", str(tmp_path / "deep.png"), str(tmp_path / "rgba.png"), str(tmp_path / "grey.png"),
               "--out", str(out), "--json", str(tmp_path / "masks.jsonl")])
    assert rc == 0, capsys.readouterr().err
    records = {r["image"]: r for r in map(json.loads, (tmp_path / "masks.jsonl").read_text().splitlines())}
    for name, original in (("deep.png", deep), ("rgba.png", rgba), ("grey.png", grey)):
        written = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert written.dtype == original.dtype and written.shape == original.shape, name
        mask = face_mask(original.shape, records[str(tmp_path / name)]["faces"], "ellipse")
        assert len(records[str(tmp_path / name)]["faces"]) >= 10  # the sample's crowd (~15 at blur's threshold)
        assert np.array_equal(written[~mask], original[~mask]), name
        colour = written if written.ndim == 2 else written[..., :3]
        before = original if original.ndim == 2 else original[..., :3]
        assert (colour[mask] != before[mask]).mean() > 0.5, name
    assert np.array_equal(cv2.imread(str(out / "rgba.png"), cv2.IMREAD_UNCHANGED)[..., 3], alpha)  # alpha kept


def test_blur_keeps_a_grey_and_alpha_png_grey_and_alpha(tmp_path, sample, capsys):
    """OpenCV reads grey + alpha as BGRA and cannot write two channels: the copy must still be grey + alpha."""
    from PIL import Image

    grey = cv2.cvtColor(sample, cv2.COLOR_BGR2GRAY)
    alpha = np.random.default_rng(1).integers(1, 256, grey.shape).astype(np.uint8)
    Image.fromarray(np.dstack([grey, alpha]), "LA").save(tmp_path / "la.png")
    assert main(["blur", str(tmp_path / "la.png"), "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    written = Image.open(tmp_path / "out" / "la.png")
    assert written.mode == "LA"
    pixels = np.asarray(written)
    assert np.array_equal(pixels[..., 1], alpha) and (pixels[..., 0] != grey).mean() > 0.05  # alpha kept, faces blurred


def test_blur_keeps_every_frame_of_an_animation_and_reports_gif(tmp_path, sample, capsys):
    animation = cv2.Animation()
    animation.frames = [np.roll(sample, 4 * k, axis=1) for k in range(3)]
    animation.durations = [100, 100, 100]
    assert cv2.imwriteanimation(str(tmp_path / "anim.webp"), animation, [cv2.IMWRITE_WEBP_QUALITY, 101])
    pil = pytest.importorskip("PIL.Image")
    frames = [pil.fromarray(f[:, :, ::-1]) for f in animation.frames]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    (tmp_path / "notes.txt").write_text("not an image")
    cv2.imwrite(str(tmp_path / "still.png"), sample)
    out = tmp_path / "out"
    rc = main(["blur", str(tmp_path), "--out", str(out), "--json", str(tmp_path.parent / "anim.jsonl")])
    err = capsys.readouterr().err
    assert rc == 1  # the GIF and the text file are reported, the others written
    assert "anim.gif: blur does not write GIF" in err and "notes.txt: not an image or video" in err
    root = out / tmp_path.name
    ok, written = cv2.imreadanimation(str(root / "anim.webp"))
    assert ok and len(written.frames) == 3 and list(written.durations) == [100, 100, 100]
    record = next(r for r in map(json.loads, (tmp_path.parent / "anim.jsonl").read_text().splitlines())
                  if r["image"].endswith("anim.webp"))
    assert [f["frame"] for f in record["frames"]] == [0, 1, 2]
    for original, result, frame in zip(animation.frames, written.frames, record["frames"]):
        mask = face_mask(original.shape, frame["faces"], "ellipse")
        assert len(frame["faces"]) >= 15
        assert np.array_equal(result[..., :3][~mask], original[~mask])  # lossless WebP: exact outside
        assert (result[..., :3][mask] != original[mask]).any(axis=-1).mean() > 0.5
    assert (root / "still.png").is_file() and not (root / "anim.gif").exists()


def test_blur_edits_a_jpeg_block_by_block(tmp_path, capsys):
    import jpeglib

    out = tmp_path / "out"
    rc = main(["blur", str(SAMPLE), "--out", str(out), "--json", str(tmp_path / "m.jsonl")])
    assert rc == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "m.jsonl").read_text())
    mask = face_mask((210, 400), record["faces"], "ellipse")
    written = out / "sample.jpg"
    assert written.stat().st_size <= 1.5 * SAMPLE.stat().st_size
    # The sample is 4:2:0 (16x16 MCUs): the blocks that touch no mask keep their coefficients.
    before, after = jpeglib.read_dct(str(SAMPLE)), jpeglib.read_dct(str(written))
    assert (before.qt == after.qt).all()
    touched = _touched(mask, 16)
    luma = np.kron(touched, np.ones((2, 2), bool))[:before.Y.shape[0], :before.Y.shape[1]]
    assert np.array_equal(before.Y[~luma], after.Y[~luma]) and not np.array_equal(before.Y[luma], after.Y[luma])
    assert np.array_equal(before.Cb[~touched[:before.Cb.shape[0]]], after.Cb[~touched[:before.Cb.shape[0]]])
    assert record["jpeg_blocks"] == touched.sum()
    # Decoded pixels: without chroma upsampling, identical outside the re-encoded 16-pixel blocks; with the
    # default fancy upsampling (OpenCV, PIL, browsers) their new chroma reaches the next pixel, so identical
    # outside the blocks and the ring of blocks around them (whose coefficients were kept above).
    blocks = np.kron(touched, np.ones((16, 16), bool))[:210, :400]
    exact = jpeglib.read_spatial(str(SAMPLE), flags=["-DO_FANCY_UPSAMPLING"]).spatial
    edited = jpeglib.read_spatial(str(written), flags=["-DO_FANCY_UPSAMPLING"]).spatial
    assert np.array_equal(exact[~blocks], edited[~blocks])
    region = _touched_pixels(mask, (16, 16), ring=(1, 1))
    assert np.array_equal(edit_region(SAMPLE, mask), region)
    assert_same_outside(SAMPLE, written, region)
    assert not np.array_equal(cv2.imread(str(SAMPLE))[~blocks], cv2.imread(str(written))[~blocks])  # the ring
    diff = np.abs(cv2.imread(str(written)).astype(int) - cv2.imread(str(SAMPLE))).max(axis=2)
    assert np.median(diff[mask]) > 10  # the faces are blurred
    # ... in colour too: the chroma of every MCU the masks touch is re-encoded.
    def chroma(path):
        return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2YCrCb)[..., 1:].astype(int)

    hue = np.abs(chroma(written) - chroma(SAMPLE)).max(axis=2)
    assert (hue[mask] > 0).mean() > 0.8


def assert_same_outside(before, after, region):
    """The two JPEGs decode to the same pixels outside ``region`` with OpenCV and with PIL (both libjpeg-turbo
    with its default fancy chroma upsampling, as browsers decode)."""
    from PIL import Image

    assert np.array_equal(cv2.imread(str(before), cv2.IMREAD_UNCHANGED)[~region],
                          cv2.imread(str(after), cv2.IMREAD_UNCHANGED)[~region])
    with Image.open(before) as a, Image.open(after) as b:
        assert a.mode == b.mode
        assert np.array_equal(np.asarray(a)[~region], np.asarray(b)[~region])


@pytest.mark.parametrize("sampling,mcu,ring", [
    ("444", (8, 8), (0, 0)), ("422", (8, 16), (0, 1)), ("440", (16, 8), (1, 0)), ("420", (16, 16), (1, 1)),
    ("grey", (8, 8), (0, 0)), ("progressive", (16, 16), (1, 1)),
    ("pil444", (8, 8), (0, 0)), ("pil420", (16, 16), (1, 1))])
def test_jpeg_block_edit_stays_inside_the_touched_mcus(tmp_path, sample, sampling, mcu, ring):
    """Every pixel outside the touched MCUs (and, with subsampled chroma, the ring of MCUs that a decoder's
    chroma upsampling reaches) decodes bit-identically; in the ring only the pixel next to a touched MCU."""
    from PIL import Image

    from blazeface.jpeg_blocks import edit_region, read_jpeg, write_jpeg_blocks

    image = sample[:201, :397]  # sizes that are no multiple of a block
    src = tmp_path / "in.jpg"
    if sampling.startswith("pil"):
        Image.fromarray(image[..., ::-1]).save(src, quality=88, subsampling={"pil444": 0, "pil420": 2}[sampling])
    else:
        params = [cv2.IMWRITE_JPEG_QUALITY, 88]
        if sampling == "grey":
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        elif sampling == "progressive":
            params += [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
        else:
            params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, getattr(cv2, f"IMWRITE_JPEG_SAMPLING_FACTOR_{sampling}")]
        cv2.imwrite(str(src), image, params)
    upright, orientation = read_jpeg(src)
    mask = np.zeros(upright.shape[:2], bool)
    mask[50:90, 100:160] = True
    mask[195:, 390:] = True  # the padded corner block
    edited = upright.copy()
    edited[mask] = 0
    write_jpeg_blocks(src, tmp_path / "out.jpg", edited, mask, orientation)
    blocks = _touched_pixels(mask, mcu)
    region = _touched_pixels(mask, mcu, ring)
    assert np.array_equal(edit_region(src, mask, orientation), region)
    assert_same_outside(src, tmp_path / "out.jpg", region)
    before, after = cv2.imread(str(src)), cv2.imread(str(tmp_path / "out.jpg"))
    seam = cv2.dilate(blocks.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert np.array_equal(before[~seam], after[~seam])  # in the ring, only the pixel next to a touched MCU
    if ring == (0, 0):
        assert np.array_equal(before[~blocks], after[~blocks])
    assert after[mask].mean() < 8  # the edit is there, within the file's own quantisation
    assert (tmp_path / "out.jpg").stat().st_size <= 1.5 * src.stat().st_size


def _touched_pixels(mask, mcu, ring=(0, 0)):
    """The pixels of every (height, width) ``mcu`` block that touches ``mask``, with the ``ring`` (rows,
    columns) of blocks around each."""
    h, w = mask.shape
    my, mx = mcu
    padded = np.zeros((-(-h // my) * my, -(-w // mx) * mx), bool)
    padded[:h, :w] = mask
    touched = padded.reshape(padded.shape[0] // my, my, padded.shape[1] // mx, mx).any(axis=(1, 3))
    kernel = np.ones((2 * ring[0] + 1, 2 * ring[1] + 1), np.uint8)
    touched = cv2.dilate(touched.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    return np.kron(touched, np.ones((my, mx), bool))[:h, :w]


def _touched(mask, mcu):
    h, w = mask.shape
    padded = np.zeros((-(-h // mcu) * mcu, -(-w // mcu) * mcu), bool)
    padded[:h, :w] = mask
    return padded.reshape(padded.shape[0] // mcu, mcu, padded.shape[1] // mcu, mcu).any(axis=(1, 3))


def test_jpeg_block_edit_follows_exif_orientation(tmp_path, capsys):
    """A JPEG stored sideways with an EXIF orientation: detection runs upright, the edit lands on the stored
    blocks, the EXIF marker stays."""
    import jpeglib

    stored = cv2.rotate(cv2.imread(str(SAMPLE)), cv2.ROTATE_90_COUNTERCLOCKWISE)  # upright = rotate back
    plain = tmp_path / "plain.jpg"
    cv2.imwrite(str(plain), stored, [cv2.IMWRITE_JPEG_QUALITY, 90])
    exif = (b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00"
            b"\x00\x00\x00\x00")  # one IFD entry: Orientation = 6 (rotate 90 clockwise to view)
    data = plain.read_bytes()
    rotated = tmp_path / "rotated.jpg"
    rotated.write_bytes(data[:2] + b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif + data[2:])
    assert cv2.imread(str(rotated)).shape == (210, 400, 3)
    rc = main(["blur", str(rotated), "--out", str(tmp_path / "out"), "--json", str(tmp_path / "m.jsonl")])
    assert rc == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "m.jsonl").read_text())
    assert (record["width"], record["height"]) == (400, 210) and len(record["faces"]) >= 15
    written = tmp_path / "out" / "rotated.jpg"
    assert cv2.imread(str(written)).shape == (210, 400, 3)  # still viewed upright
    mask = face_mask((210, 400), record["faces"], "ellipse")
    diff = np.abs(cv2.imread(str(written)).astype(int) - cv2.imread(str(rotated))).max(axis=2)
    assert np.median(diff[mask]) > 10
    assert b"Exif" in written.read_bytes()[:200]
    region = edit_region(rotated, mask)  # the stored 4:2:0 blocks of the mask, and their ring, seen upright
    assert np.array_equal(np.rot90(region), _touched_pixels(np.rot90(mask), (16, 16), ring=(1, 1)))
    assert np.array_equal(cv2.imread(str(rotated))[~region], cv2.imread(str(written))[~region])
    assert jpeglib.read_dct(str(written)).Y.shape == jpeglib.read_dct(str(rotated)).Y.shape


# ---------------------------------------------------------------------------------------------------
# Videos: H.264 yuv420p, about the input's bitrate, audio kept, no partial output


def test_encoder_is_h264():
    assert video_encoder(".mp4") == "libx264"  # the bundled ffmpeg has it
    assert video_encoder(".webm") == "libvpx-vp9"


@pytest.mark.parametrize("command", ["detect", "blur"])
def test_video_outputs_are_h264_with_audio_at_the_input_bitrate(tmp_path, command, capsys):
    src = make_clip(tmp_path / "clip.mp4", frames=5)
    source = probe(src)
    assert source["audio"] and source["video_kbps"]
    out = tmp_path / "out"
    rc = main([command, str(src), "--out", str(out), "--json", str(tmp_path / "r.jsonl")])
    assert rc == 0, capsys.readouterr().err
    written = probe(out / "clip.mp4")
    assert written["video_codec"] == "h264" and written["pix_fmt"] == "yuv420p" and written["audio"]
    assert 0.4 < written["video_kbps"] / source["video_kbps"] < 2.0
    assert len(frames_of(out / "clip.mp4")) == 5
    records = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(5))
    assert [r["time"] for r in records] == pytest.approx([k / 10 for k in range(5)], abs=1e-3)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.mark.parametrize("command", ["detect", "blur"])
def test_truncated_video_is_an_error_and_leaves_no_output(tmp_path, command, capsys):
    whole = make_clip(tmp_path / "whole.mp4", frames=20, faststart=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    out = tmp_path / "out"
    rc = main([command, str(cut), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1
    line = next(line for line in err.splitlines() if "cut.mp4" in line and "error" in line)
    assert "cut short" in line and "of its 20 frames" in line
    assert not list(out.iterdir())  # nothing half-written


def test_stream_yields_every_frame_with_time_and_faces(tmp_path):
    src = make_clip(tmp_path / "clip.mp4", frames=4, audio=False)
    detector = FaceDetector("blaze")
    seen = list(detector.stream(src, batch_size=3))
    assert [f.index for f in seen] == [0, 1, 2, 3]
    assert [f.timestamp for f in seen] == pytest.approx([0, 0.1, 0.2, 0.3], abs=1e-3)
    index, timestamp, image, faces = seen[2]
    assert image.shape == (210, 400, 3) and len(faces) >= 15
    assert [len(f.faces) for f in seen] == [len(d) for d in detector.detect_batch([f.image for f in seen])]



@pytest.mark.parametrize("source, message", [(-1, "camera -1: a camera index is >= 0"),
                                             (1.5, "expected a video file's path or a camera index"),
                                             (None, "expected a video file's path or a camera index"),
                                             (True, "expected a video file's path or a camera index")])
def test_stream_refuses_a_source_opencv_would_crash_on(source, message):
    """stream(-1) crashed the process (OpenCV's "any camera", SIGSEGV with none there); floats, None and bools
    were a TypeError from deep inside: each is a one-line error before OpenCV sees it."""
    with pytest.raises(BlazefaceError, match=re.escape(message)):
        next(iter(FaceDetector("slim").stream(source)))

# ---------------------------------------------------------------------------------------------------
# Bad inputs: one line each, the other inputs still processed


def huge_png(path, side=40000):
    """A PNG whose header says side x side (over OpenCV's pixel limit); its data is a few rows of zeros."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (side + 1) * 4)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("command", ["detect", "blur", "align"])
def test_image_over_the_pixel_limit_is_reported_and_the_rest_processed(tmp_path, command, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    huge_png(folder / "a_huge.png")
    (folder / "b_good.jpg").write_bytes(SAMPLE.read_bytes())
    rc = main([command, str(folder), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1 and "a_huge.png: image too large for OpenCV" in err and "Traceback" not in err
    assert any(p.name.startswith("b_good") for p in (tmp_path / "out").rglob("*"))


@pytest.mark.parametrize("argv,problem", [
    (["detect", "--conf", "2"], "argument --conf: must be a number in [0, 1], not 2"),
    (["detect", "--long-side", "-5"], "argument --long-side: must be an integer >= 0, not -5"),
    (["detect", "--batch-size", "0"], "argument --batch-size: must be an integer >= 1, not 0"),
    (["detect", "--nms", "nan"], "argument --nms: expected a finite number, not 'nan'"),
    (["blur", "--conf", "-0.1"], "argument --conf: must be a number in [0, 1], not -0.1"),
    (["blur", "--scale", "0"], "argument --scale: must be a number > 0, not 0"),
    (["blur", "--hold", "x"], "argument --hold: expected an integer, not 'x'"),
    (["align", "--size", "0"], "argument --size: must be an integer >= 1, not 0"),
    (["train", "--epochs", "0"], "argument --epochs: must be an integer >= 1, not 0"),
    (["train", "--batch-size", "0"], "argument --batch-size: must be an integer >= 1, not 0"),
])
def test_numeric_options_are_checked_with_one_line_errors(argv, problem, capsys):
    assert main(argv + [str(SAMPLE)] if argv[0] != "train" else argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and problem in err[0] and err[0].startswith(f"blazeface {argv[0]}: error:")


# ---------------------------------------------------------------------------------------------------
# The demo server: a path no file system can hold is a 400, not a dropped connection

@pytest.mark.parametrize("raw", [b"/%00", b"/index.html%00.js", b"/%ff%fe", b"/src/\x00app.js", b"/%01",
                                 b"/" + b"a" * 5000 + b".js"])
def test_web_answers_bad_paths_with_400_or_404(tmp_path, raw):
    import socket

    from blazeface.webserver import ORT_FILES, DemoServer, ServedModel, ort_dir

    root = tmp_path / "web"  # placeholder page files where web/ and onnxruntime-web's dist/ would be
    (root / "src").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>demo</title>")
    (root / "src" / "app.js").write_text("export {};\n")
    ort_dir(root).mkdir(parents=True)
    for name in ORT_FILES:
        (ort_dir(root) / name).write_bytes(b"export {};\n")
    (tmp_path / "m.onnx").write_bytes(b"served as is")
    model = ServedModel("blaze-x", "blaze", "blaze (x.pth)", tmp_path / "m.onnx")
    with DemoServer([model], port=0, root=root).start() as server:
        host, port = server.server_address[:2]
        with socket.create_connection((host, port), timeout=10) as conn:
            conn.sendall(b"GET " + raw + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := conn.recv(65536):
                reply += chunk
        status = int(reply.split(b" ", 2)[1])
        assert status == (404 if raw.endswith(b"a.js") else 400), reply[:200]
        assert fetch_ok(server)  # and it still serves


def fetch_ok(server) -> bool:
    import urllib.request

    with urllib.request.urlopen(server.url, timeout=10) as response:
        return response.status == 200
