"""``blazeface bench`` and the timing library: shape of the results, never their values."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

from blazeface import create_model
from blazeface.benchmarking import STAGES, BenchSession, bench, bench_image, bench_many, format_table
from blazeface.cli import main
from conftest import REPO, requires_shared


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random-init slim checkpoint: timing does not care about the weights."""
    path = tmp_path_factory.mktemp("bench") / "slim.pth"
    torch.manual_seed(0)
    torch.save(create_model("slim", weights=None).state_dict(), path)
    return path


def test_bench_image_has_the_requested_size():
    assert bench_image((160, 120)).shape == (120, 160, 3)


def test_bench_reports_stage_medians(checkpoint):
    result = bench("slim", checkpoint, "torch", size=(160, 120), threads=1, repeats=3, warmup=1)
    medians = result.medians()
    assert set(medians) == set(STAGES)
    assert all(v > 0 for v in medians.values())
    assert result.repeats == 3 and all(len(v) == 3 for v in result.samples.values())
    # total is one interval around the three stages of the same run
    for k in range(3):
        parts = sum(result.samples[s][k] for s in ("preprocess", "inference", "postprocess"))
        assert result.samples["total"][k] >= parts * 0.999


def test_bench_many_interleaves_to_the_same_count(checkpoint):
    sessions = [BenchSession("slim", checkpoint, "torch", (96, 64), 1) for _ in range(2)]
    results = bench_many(sessions, repeats=4, warmup=0, per_round=3)
    assert [r.repeats for r in results] == [4, 4]
    assert format_table(results).splitlines()[0].split()[:2] == ["model", "backend"]


def test_bench_command_json_has_the_contract_keys(checkpoint, capsys):
    assert main(["bench", "--model", "slim", "--weights", str(checkpoint), "--size", "160x120", "--repeats", "2",
                 "--warmup", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"preprocess", "inference", "postprocess", "total"}


def test_bench_command_onnx_backend_table(checkpoint, capsys, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")
    pytest.importorskip("onnxslim", reason="needs the 'onnx' extra")
    monkeypatch.setenv("BLAZEFACE_CACHE", str(tmp_path))  # the checkpoint is exported into this cache
    assert main(["bench", "--model", "slim", "--weights", str(checkpoint), "--backend", "onnx", "--size", "160x120",
                 "--repeats", "2", "--warmup", "0"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["model", "backend", "size"]
    assert lines[1].split()[:3] == ["slim", "onnx", "160x120"]
    assert list((tmp_path / "exports").glob("slim-*.onnx"))


def test_bench_command_errors_are_one_line(checkpoint, capsys):
    assert main(["bench", "--model", "slim", "--backend", "tensorrt"]) == 2
    assert main(["bench", "--model", "all", "--weights", str(checkpoint)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("blazeface bench: error:") for line in err)


def test_peer_benchmark_script_runs_our_driver(checkpoint, tmp_path):
    """benchmarks/bench_peers.py end to end with no peers: its driver protocol and report."""
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_peers.py"), "--peers", "none", "--models", "slim",
           "--backends", "torch", "--weights", f"slim={checkpoint}", "--size", "96x64", "--rounds", "2",
           "--per-round", "1", "--warmup", "0", "--json", str(out), "--markdown", "--yunet-model", "none"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    (row,) = data["results"]
    assert row["name"] == "slim-torch" and row["runs"] == 2 and set(STAGES) <= set(row)
    assert "| blazeface slim | PyTorch | 96x64 |" in result.stdout


YUNET = REPO.parent / "shared" / "data" / "teachers" / "yunet_n_dynamic.onnx"


@pytest.mark.skipif(not YUNET.is_file(), reason="needs ../shared/data/teachers/yunet_n_dynamic.onnx")
def test_peer_benchmark_reference_is_yunet_through_opencv(checkpoint, tmp_path):
    """The reference column: YuNet through cv2.FaceDetectorYN, every total divided by its time."""
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_peers.py"), "--peers", "none", "--models", "slim",
           "--backends", "torch", "--weights", f"slim={checkpoint}", "--size", "160x120", "--rounds", "2",
           "--per-round", "1", "--warmup", "0", "--json", str(out), "--markdown", "--yunet-model", str(YUNET)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {r["name"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"slim-torch", "yunet-opencv"}
    assert rows["yunet-opencv"]["runs"] == 2 and rows["yunet-opencv"]["total"] > 0
    line = next(li for li in result.stdout.splitlines() if li.startswith("| YuNet (yunet_n_dynamic)"))
    assert "FaceDetectorYN" in line and "| 1.00 |" in line


SCRIPTS = sorted([*REPO.glob("benchmarks/*.py"), *REPO.glob("tools/*.py")])


def test_every_script_reports_library_errors_in_one_line():
    """Scripts end in blazeface.cli.run_script (as the CLI's commands: one line, exit 2), except
    tools/project_meta.py, which the Makefile runs before the package is installed."""
    missing = [p.relative_to(REPO).as_posix() for p in SCRIPTS
               if p.name != "project_meta.py" and "run_script(main)" not in p.read_text()]
    assert not missing


def test_a_script_given_a_missing_or_wrong_file_says_so_in_one_line(tmp_path):
    wrong = tmp_path / "slim.pth"
    shutil.copy(REPO / "src" / "blazeface" / "weights" / "slim.pth", wrong)
    for given, message in ((tmp_path / "none.pth", ": weights file not found"),
                           (wrong, " holds model 'slim', not 'blaze': pass --model slim")):
        done = subprocess.run([sys.executable, str(REPO / "tools" / "ship_weights.py"), str(given), "--model", "blaze"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and done.stderr.strip() == f"ship_weights.py: error: {given}{message}"
        assert "Traceback" not in done.stderr and done.stdout == ""


def _average_weights(*args):
    return subprocess.run([sys.executable, str(REPO / "tools" / "average_weights.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_average_weights_writes_the_mean_of_its_inputs(tmp_path):
    """tools/average_weights.py: each float tensor is the inputs' mean (a file averaged with a copy of itself
    shifted by 2 comes out shifted by 1), integer tensors are the first file's, and the result loads as the
    model it names."""
    shipped = create_model("blazelite").state_dict()
    shifted = {k: v + 2 if v.is_floating_point() else v + 5 for k, v in shipped.items()}
    a, b, out = tmp_path / "a.pth", tmp_path / "b.pth", tmp_path / "soup.pth"
    torch.save(shipped, a)
    torch.save(shifted, b)
    done = _average_weights(a, b, "--model", "blazelite", "--write", out)
    assert done.returncode == 0, done.stderr
    soup = create_model("blazelite", weights=out).state_dict()
    for key, value in shipped.items():
        expected = value + 1 if value.is_floating_point() else value
        assert torch.allclose(soup[key], expected, atol=1e-5), key


def test_average_weights_refuses_to_replace_an_input_or_mix_models(tmp_path):
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    shutil.copy(REPO / "src" / "blazeface" / "weights" / "blaze.pth", a)
    shutil.copy(REPO / "src" / "blazeface" / "weights" / "slim.pth", b)
    before = a.read_bytes()
    done = _average_weights(a, a, "--model", "blaze", "--write", a)
    assert done.returncode == 2 and done.stderr.strip() == f"average_weights.py: error: {a}: would replace an input; choose another file"
    link = tmp_path / "link.pth"  # another name of an input is the input
    link.hardlink_to(a)
    done = _average_weights(a, a, "--model", "blaze", "--write", link)
    assert done.returncode == 2 and done.stderr.strip().endswith(f"{link}: would replace an input; choose another file")
    assert a.read_bytes() == before
    done = _average_weights(a, b, "--model", "blaze", "--write", tmp_path / "soup.pth")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"average_weights.py: error: {b} holds model 'slim', not 'blaze': pass --model slim"
    assert not (tmp_path / "soup.pth").exists()


@requires_shared
def test_calibrate_scores_changes_only_the_face_logit_biases(tmp_path):
    """tools/calibrate_scores.py on a small sample: the written weights are the input's, except the face
    channels of the class heads' last biases, moved by the offsets it prints."""
    out = tmp_path / "calibrated.pth"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "calibrate_scores.py"),
                           str(REPO / "src" / "blazeface" / "weights" / "slim.pth"), "--model", "slim",
                           "--photos", "40", "--write", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    line = next(li for li in done.stdout.splitlines() if li.startswith("offsets by level and size: "))
    offsets = json.loads(line.split(": ", 1)[1])
    assert "dev split (263): easy / medium / hard" in done.stdout
    assert any(v != 0 for level in offsets for v in level)  # the search moved something on these photos
    shipped = create_model("slim")
    for bias, level in zip(shipped.face_logit_biases(), offsets):
        bias += torch.tensor(level)
    expected, got = shipped.state_dict(), create_model("slim", weights=out).state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.allclose(got[k], expected[k], atol=1e-6) for k in got)


def test_readme_images_are_the_readme_commands_on_the_sample(tmp_path):
    """tools/draw_readme_images.py: the before/after picture is the sample beside its blurred copy (the left
    half unchanged, the right half changed), the crops picture a grid of 112-px tiles, one per aligned face."""
    import cv2
    import numpy as np

    done = subprocess.run([sys.executable, str(REPO / "tools" / "draw_readme_images.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    sample = cv2.imread(str(REPO / "src" / "blazeface" / "assets" / "sample.jpg")).astype(np.int16)
    pair = cv2.imread(str(tmp_path / "blur_before_after.jpg")).astype(np.int16)
    height, width = sample.shape[:2]
    assert pair.shape == (height, 2 * width + 4, 3)
    assert np.abs(pair[:, :width] - sample).mean() < 3  # JPEG noise only
    assert np.abs(pair[:, width + 4:] - sample).mean() > 3  # the masked faces
    crops = int(done.stdout.split("align_crops.jpg: ")[1].split()[0])
    grid = cv2.imread(str(tmp_path / "align_crops.jpg"))
    rows, cols = -(-crops // 9), min(crops, 9)
    assert crops > 0 and grid.shape == (rows * 116 - 4, cols * 116 - 4, 3)
