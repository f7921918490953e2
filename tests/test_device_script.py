"""tools/device_train.sh runs only where a session is lent a GPU machine, which is rare; a broken line there costs
that session's whole device time (session 44 lost it to two). Its pieces are checked here on every run: the
script parses, every model's options are ones `blazeface train` accepts, and the epoch plan is arithmetic."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from blazeface.cli import build_parser
from blazeface.cli.train_cmd import train_options
from conftest import REPO

SCRIPT = REPO / "tools" / "device_train.sh"


def _function(name: str) -> str:
    """The text of one shell function of the script, from ``name() {`` to its closing brace."""
    found = re.search(rf"^{name}\(\) \{{.*?^\}}\n", SCRIPT.read_text(), re.M | re.S)
    assert found, f"{name}() is gone from {SCRIPT.name}"
    return found.group(0)


def _bash(snippet: str, **env: str) -> str:
    done = subprocess.run(["bash", "-c", snippet], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", **env})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_device_script_parses():
    _bash(f"bash -n {SCRIPT}")


@pytest.mark.parametrize("model", ["slim", "rfb", "mnet", "blaze", "blazelite", "slimlite"])
def test_every_models_options_are_ones_train_accepts(model, tmp_path):
    """The options a model trains with on the machine parse as `blazeface train` flags into TrainOptions; the
    mosaics close for the last quarter of the epochs, and none for a model named in PLAIN."""
    variables = ("R=/data; T=/data/teachers; EPOCH_SIZE=4000; SHARED=/shared; "
                 "YUNET='--teacher yunet:/data/teachers/yunet_n_dynamic.onnx --map-teacher-priors "
                 "--yunet-scales 1 2 --cache-teacher'; ")
    for plain in ("", model):
        flags = _bash(_function("options") + variables + f"options {model} 20", PLAIN=plain).split()
        args = build_parser().parse_args(["train", *flags, "--out", str(tmp_path / "run")])
        opts = train_options(args)
        assert opts.model == model and opts.epochs == 20 and opts.device == "cuda"
        assert opts.init_weights is not None and f"weights/{model}.pth" in str(opts.init_weights)
        assert (opts.mosaic_p, opts.close_mosaic) == ((0.5, 5) if not plain else (0.0, 0))
        assert opts.cache_teacher and str(opts.teacher_cache) == "/shared"
        assert opts.lr == (5e-4 if model.startswith("blaze") else 2e-3)


def test_the_epoch_plan_fits_the_calibrated_rate_in_the_time_left(tmp_path):
    calibration = tmp_path / "calib.json"
    calibration.write_text(json.dumps({"slim": 400.0}))

    def plan(model: str, seconds: int) -> int:
        out = _bash(_function("plan_epochs") + f"EPOCH_SIZE=4000; PY={sys.executable}; plan_epochs {model} {seconds}",
                    CALIBRATION=str(calibration))
        return int(out)

    assert plan("slim", 480) == int(0.95 * 400 * (480 - 25) / 4000)  # 43
    assert plan("rfb", 480) == int(0.95 * 300 * (480 - 25) / 4000)  # not calibrated: the cautious guess
    assert plan("slim", 30) == 2  # never fewer than two
