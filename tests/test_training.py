"""The trainer: exact resume, data-parallel gradient averaging, checkpoints, CLI."""
import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from blazeface import BlazefaceError, FaceDetector
from blazeface.checkpoint import META_KEY, read_state_dict
from blazeface.training.checkpointing import load_checkpoint, pack_checkpoint, save_atomic
from blazeface.models import get_config
from blazeface.training.trainer import Trainer, TrainOptions
from conftest import REPO


def make_dataset(root, images=16, size=96, seed=0):
    """RetinaFace-format folder of synthetic 'faces': bright boxes with five landmark dots inside."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    lines = []
    for k in range(images):
        image = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
        lines.append(f"# img{k}.jpg")
        for _ in range(rng.integers(1, 3)):
            w = h = float(rng.uniform(16, 40))
            x, y = rng.uniform(0, size - w, 2)
            cv2.rectangle(image, (int(x), int(y)), (int(x + w), int(y + h)), (200, 180, 160), -1)
            pts = [(x + w * fx, y + h * fy) for fx, fy in ((.3, .35), (.7, .35), (.5, .55), (.35, .75), (.65, .75))]
            for px, py in pts:
                cv2.circle(image, (int(px), int(py)), 1, (20, 20, 20), -1)
            lm = " ".join(f"{px:.2f} {py:.2f} 0.0" for px, py in pts)
            lines.append(f"{x:.2f} {y:.2f} {w:.2f} {h:.2f} {lm} 1.0")
        cv2.imwrite(str(root / "images" / f"img{k}.jpg"), image)
    (root / "label.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("faces"))


def options(data, out, **kw):
    base = dict(model="slim", data=[str(data)], out=out, epochs=2, batch_size=4, input_size=64, workers=0,
                eval_every=0, progress=False, log_every=1, checkpoint_minutes=60.0)
    base.update(kw)
    return TrainOptions(**base)


@pytest.mark.parametrize("packed", [False, True], ids=["last.pth", "packed"])
def test_resume_continues_exactly(data, tmp_path, packed):
    straight = Trainer(options(data, tmp_path / "a", max_steps=6))
    straight.run()
    first = Trainer(options(data, tmp_path / "b", max_steps=3))  # stops mid-epoch (4 steps per epoch)
    first.run()
    state, out = tmp_path / "b" / "last.pth", tmp_path / "b"
    if packed:  # the repository's form of a run's state (tools/pack_checkpoint.py), resumed into a new folder
        before, after = pack_checkpoint(state, tmp_path / "b.pth.xz")
        assert after < before
        state, out = tmp_path / "b.pth.xz", tmp_path / "c"
    ckpt = load_checkpoint(state)
    assert ckpt["position"]["step"] == 3
    resumed = Trainer(options(data, out, max_steps=6, resume=state))
    resumed.run()
    a = straight.model.state_dict()
    b = resumed.model.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    for key, value in straight.ema.module.state_dict().items():
        assert torch.equal(value, resumed.ema.module.state_dict()[key]), key
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == ([4, 5, 6] if packed else [1, 2, 3, 4, 5, 6])
    assert (out / "weights.pth").is_file() and (out / "loss.png").is_file()


def test_a_packed_checkpoint_is_never_its_own_target_nor_packed_twice_and_a_torn_one_is_one_line(data, tmp_path):
    Trainer(options(data, tmp_path / "a", max_steps=1)).run()
    state = tmp_path / "a" / "last.pth"
    with pytest.raises(BlazefaceError, match="is the checkpoint being packed"):
        pack_checkpoint(state, state)
    with pytest.raises(BlazefaceError, match="not a readable checkpoint"):
        pack_checkpoint(REPO / "README.md", tmp_path / "readme.xz")
    assert not (tmp_path / "readme.xz").exists()
    packed, repacked = tmp_path / "a.pth.xz", tmp_path / "again.pth.xz"
    pack_checkpoint(state, packed)
    pack_checkpoint(packed, repacked)  # packed once, not twice: load_checkpoint unpacks one layer
    assert repacked.read_bytes() == packed.read_bytes()
    torn = tmp_path / "torn.pth.xz"
    torn.write_bytes(packed.read_bytes()[: packed.stat().st_size // 2])
    with pytest.raises(BlazefaceError, match=r"torn\.pth\.xz: not a readable checkpoint") as err:
        load_checkpoint(torn)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("native", [True, False], ids=["bf16-cpu", "avx2-cpu"])
@pytest.mark.parametrize("bf16", [None, False], ids=["default", "off"])
def test_a_run_writes_the_recipe_it_ran_and_says_its_precision(data, tmp_path, capsys, monkeypatch, bf16, native):
    """options.json keeps what was asked (None: the default); train_config.json what ran, which for bf16 depends
    on the CPU: slim's default is on where the CPU runs bf16 natively and falls back to fp32 elsewhere (the CPU's
    answer is set here, so both cases run on any machine; one 64-pixel step is quick even where bf16 is emulated)."""
    monkeypatch.setattr("blazeface.training.trainer.native_bf16", lambda device: native)
    Trainer(options(data, tmp_path / "a", max_steps=1, bf16=bf16, lr=3e-3)).run()
    ran = json.loads((tmp_path / "a" / "train_config.json").read_text())
    asked = json.loads((tmp_path / "a" / "options.json").read_text())
    assert asked["bf16"] is bf16 and asked["lr"] == ran["lr"] == 3e-3
    assert ran["bf16"] is (bf16 is None and native)
    assert ran["input_size"] == 64 and ran["neg_pos_ratio"] == get_config("slim").train.neg_pos_ratio
    said = capsys.readouterr().err
    assert f"slim on cpu, {'bf16 autocast' if ran['bf16'] else 'fp32'}" in said
    assert ("no native bf16" in said) is (bf16 is None and not native)


def test_resume_refuses_other_model_or_batch(data, tmp_path):
    Trainer(options(data, tmp_path / "a", max_steps=1)).run()
    with pytest.raises(BlazefaceError, match="for model 'slim', not 'rfb'"):
        Trainer(options(data, tmp_path / "a", model="rfb", resume=tmp_path / "a" / "last.pth"))
    with pytest.raises(BlazefaceError, match="steps per epoch"):
        Trainer(options(data, tmp_path / "a", batch_size=8, resume=tmp_path / "a" / "last.pth"))


def test_resume_with_other_epochs_replans_the_schedule(data, tmp_path, capsys):
    Trainer(options(data, tmp_path / "a", epochs=4, max_steps=5)).run()
    resumed = Trainer(options(data, tmp_path / "a", epochs=2, resume=tmp_path / "a" / "last.pth"))
    assert "re-planned from 16 to 8 steps (2 epochs) at step 5" in capsys.readouterr().err
    fresh = Trainer(options(data, tmp_path / "b", epochs=2))
    # The learning rate at step 5 is the new (2-epoch) schedule's, not the old one's.
    for _ in range(5):
        fresh.optimizer.step()
        fresh.scheduler.step()
    assert resumed.scheduler.get_last_lr() == pytest.approx(fresh.scheduler.get_last_lr())
    resumed.run()
    assert load_checkpoint(tmp_path / "a" / "last.pth")["position"]["step"] == 8


HOLD_FOLDER = """
import sys, time
from blazeface.io import exclusive_folder
with exclusive_folder(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_one_live_run_per_folder(data, tmp_path):
    """A run resumed twice into one folder would delete the other's temporaries and write checkpoints over
    them: while one process holds the folder, a new trainer fails at once and a built one fails at run(), each
    in one line naming the folder and the holder's pid; killing the holder frees the folder."""
    Trainer(options(data, tmp_path / "a", max_steps=1)).run()
    resume = dict(max_steps=2, resume=tmp_path / "a" / "last.pth")
    built = Trainer(options(data, tmp_path / "a", **resume))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_FOLDER, str(tmp_path / "a")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        in_use = rf"--out {re.escape(str(tmp_path / 'a'))}: in use by another running process \(pid {holder.pid}\)"
        with pytest.raises(BlazefaceError, match=in_use):
            Trainer(options(data, tmp_path / "a", **resume))
        with pytest.raises(BlazefaceError, match=in_use):
            built.run()
    finally:
        holder.kill()
        holder.wait()
    built.run()
    assert load_checkpoint(tmp_path / "a" / "last.pth")["position"]["step"] == 2


def test_a_run_never_writes_over_another(data, tmp_path):
    Trainer(options(data, tmp_path / "a", max_steps=1)).run()
    before = (tmp_path / "a" / "last.pth").read_bytes()
    with pytest.raises(BlazefaceError, match=r"holds another run \(last.pth\); continue it with --resume"):
        Trainer(options(data, tmp_path / "a", max_steps=1))
    Trainer(options(data, tmp_path / "b", max_steps=1)).run()
    with pytest.raises(BlazefaceError, match="holds another run"):  # resuming run b into a's folder
        Trainer(options(data, tmp_path / "a", resume=tmp_path / "b" / "last.pth"))
    (tmp_path / "b" / "last.pth").unlink()
    with pytest.raises(BlazefaceError, match="holds a run's weights.pth"):
        Trainer(options(data, tmp_path / "b", max_steps=1))
    assert (tmp_path / "a" / "last.pth").read_bytes() == before
    Trainer(options(data, tmp_path / "a", max_steps=2, resume=tmp_path / "a" / "last.pth")).run()  # its own: fine


def test_init_weights_start_model_and_ema_from_them(data, tmp_path):
    Trainer(options(data, tmp_path / "a", max_steps=3)).run()
    weights = tmp_path / "a" / "weights.pth"
    tuned = Trainer(options(data, tmp_path / "b", seed=7, init_weights=weights))
    saved = read_state_dict(weights)
    for key, value in saved.items():
        assert torch.equal(tuned.model.state_dict()[key], value), key
        assert torch.equal(tuned.ema.module.state_dict()[key], value), key
    assert tuned.step == 0  # a fresh schedule, not a resume
    with pytest.raises(BlazefaceError, match="holds model 'slim', not 'rfb'"):
        Trainer(options(data, tmp_path / "c", model="rfb", init_weights=weights))


def test_a_fine_tune_resumes_without_the_weights_it_started_from(data, tmp_path):
    Trainer(options(data, tmp_path / "a", max_steps=2)).run()
    init = tmp_path / "init.pth"
    (tmp_path / "a" / "weights.pth").rename(init)
    straight = Trainer(options(data, tmp_path / "b", init_weights=init, max_steps=4))
    straight.run()
    Trainer(options(data, tmp_path / "c", init_weights=init, max_steps=2)).run()
    init.unlink()  # e.g. a checkpoint committed to the repository, its start file left on another machine
    resumed = Trainer(options(data, tmp_path / "c", init_weights=init, max_steps=4, resume=tmp_path / "c" / "last.pth"))
    resumed.run()
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_atomic_save_keeps_old_checkpoint_on_failure(tmp_path):
    path = tmp_path / "last.pth"
    save_atomic({"model": {}, "position": {"step": 1}}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        save_atomic({"model": Unpicklable(), "position": {}}, path)
    assert load_checkpoint(path)["position"]["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]  # no temp file left behind
    path.write_bytes(b"torn")
    with pytest.raises(BlazefaceError, match="not a readable checkpoint"):
        load_checkpoint(path)


def train_one_and_two_processes(data, tmp_path, *extra: str, steps: int = 3):
    """The final weights of 1 process x batch 4 and of torchrun with 2 processes x batch 2 (same data order)."""
    common = ["--model", "slim", "--data", str(data), "--epochs", "1", "--batch-size", "4", "--input-size", "64",
              "--workers", "0", "--eval-every", "0", "--max-steps", str(steps), "--freeze-bn", "--no-bf16",
              "--threads", "1", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    one = subprocess.run([sys.executable, "-m", "blazeface", "train", *common, "--out", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "blazeface", "train", *common, "--out", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    return (load_checkpoint(tmp_path / "one" / "last.pth")["model"],
            load_checkpoint(tmp_path / "two" / "last.pth")["model"])


def test_two_processes_equal_one(data, tmp_path):
    """torchrun with 2 processes x batch 2 reaches the weights of 1 process x batch 4 (same data order)."""
    a, b = train_one_and_two_processes(data, tmp_path)
    start = Trainer(options(data, tmp_path / "init", max_steps=0)).model.state_dict()
    moved = max((a[k] - start[k]).abs().max().item() for k in a if a[k].is_floating_point())
    assert moved > 1e-4  # training really changed the weights
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=1e-4), key


def test_weights_file_names_its_model(data, tmp_path):
    """weights.pth is a plain state dict plus one string entry naming the model: no --model to load it."""
    Trainer(options(data, tmp_path / "a", max_steps=1)).run()
    raw = torch.load(tmp_path / "a" / "weights.pth", weights_only=True)
    assert json.loads(raw[META_KEY])["model"] == "slim"
    assert all(isinstance(v, torch.Tensor) for k, v in raw.items() if k != META_KEY)
    assert FaceDetector(weights=tmp_path / "a" / "weights.pth").model_name == "slim"


def test_cli_resume_alone_continues_the_run(data, tmp_path, capsys):
    """`train --resume OUT/last.pth` needs no --model or --data: they come from the checkpoint."""
    from blazeface.cli import main

    out = tmp_path / "run"
    assert main(["train", "--model", "slim", "--data", str(data), "--out", str(out), "--epochs", "2",
                 "--batch-size", "4", "--input-size", "64", "--workers", "0", "--eval-every", "0",
                 "--max-steps", "2"]) == 0
    assert main(["train", "--resume", str(out / "last.pth"), "--max-steps", "3"]) == 0
    ckpt = load_checkpoint(out / "last.pth")
    assert ckpt["position"]["step"] == 3 and ckpt["model_name"] == "slim"
    resumed = json.loads(ckpt["options"])
    assert resumed["data"] == [str(data)] and resumed["input_size"] == 64 and resumed["batch_size"] == 4
    assert main(["train", "--out", str(tmp_path / "x")]) == 2
    assert "--data is required (or --resume" in capsys.readouterr().err


def test_cli_train_bad_data(tmp_path, capsys):
    from blazeface.cli import main

    bad = tmp_path / "bad"
    (bad / "images").mkdir(parents=True)
    (bad / "label.txt").write_text("# a.jpg\n1 2 3\n")
    rc = main(["train", "--model", "slim", "--data", str(bad), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "label.txt:2" in err and err.count("\n") == 1


WORKERS_AFTER_EVAL = """
import sys, cv2, numpy as np
from pathlib import Path
from blazeface.training.trainer import Trainer, TrainOptions

def evaluate(module):  # like the dev evaluation: OpenCV's thread pool busy in this process
    cv2.setNumThreads(2)
    for _ in range(20):
        cv2.resize(np.zeros((1200, 1600, 3), np.uint8), (800, 600))
    return {"easy": 0.0}

opts = TrainOptions(model="slim", data=[sys.argv[1]], out=Path(sys.argv[2]), epochs=3, batch_size=8, input_size=64,
                    workers=1, eval_every=1, progress=False, bf16=False)
Trainer(opts, evaluate).run()
"""


def test_data_workers_start_after_evaluation(data, tmp_path):
    """Epochs after a dev evaluation start new data workers; they must not inherit locked thread pools."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    done = subprocess.run([sys.executable, "-c", WORKERS_AFTER_EVAL, str(data), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    evals = [line for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert len(evals) == 3


def test_augmentation_options_reach_the_preset(data, tmp_path):
    """--zoom-out-p, --max-zoom-out, --crop-scale and --mosaic-p override the model's TrainConfig and build the
    preset (the mosaic: the dataset); an inverted crop range is a one-line error."""
    from blazeface.data import transforms as T

    trainer = Trainer(options(data, tmp_path / "a", zoom_out_p=1.0, max_zoom_out=3.0, crop_scale=[0.5, 0.8],
                              mosaic_p=0.5))
    assert trainer.dataset.mosaic_p == 0.5
    steps = {type(step): step for step in trainer.dataset.transform.transforms}
    assert steps[T.RandomZoomOut].p == 1.0 and steps[T.RandomZoomOut].max_ratio == 3.0
    assert steps[T.RandomSquareCrop].scale == (0.5, 0.8)
    default = Trainer(options(data, tmp_path / "b"))
    steps = {type(step): step for step in default.dataset.transform.transforms}
    assert steps[T.RandomZoomOut].p == 0.3 and steps[T.RandomSquareCrop].scale == (0.3, 1.0)
    assert default.dataset.mosaic_p == 0.0
    with pytest.raises(BlazefaceError, match="MIN must not exceed MAX"):
        Trainer(options(data, tmp_path / "c", crop_scale=[0.9, 0.5]))


def test_ema_options_from_the_command_line(data, tmp_path):
    """--ema-decay and --ema-warmup reach the trainer's average (a short run's decay ramps over fewer updates:
    with the default 2,000 a 500-step run ends near its raw weights); a decay of 1 (an average that never
    leaves the initial weights) or more is a usage error."""
    from blazeface.cli import build_parser
    from blazeface.cli.train_cmd import train_options

    parser = build_parser()
    args = parser.parse_args(["train", "--model", "slim", "--data", str(data), "--out", str(tmp_path / "a"),
                              "--batch-size", "4", "--ema-decay", "0.998", "--ema-warmup", "100"])
    trainer = Trainer(train_options(args))
    assert trainer.ema.decay == 0.998 and trainer.ema.warmup_updates == 100
    trainer.ema.updates = 500
    assert trainer.ema.current_decay() > 0.99
    default = Trainer(options(data, tmp_path / "b"))
    default.ema.updates = 500
    assert default.ema.warmup_updates == 2000 and default.ema.current_decay() < 0.25
    for bad in ("1", "1.5"):
        with pytest.raises(SystemExit):
            parser.parse_args(["train", "--data", str(data), "--ema-decay", bad])


def test_loss_weights_from_the_command_line(data, tmp_path):
    """--loc-weight, --cls-weight and --landm-weight override the model's TrainConfig and reach the loss; the
    others keep the model's defaults; a negative weight is a usage error."""
    from blazeface.cli import build_parser
    from blazeface.cli.train_cmd import train_options

    parser = build_parser()
    args = parser.parse_args(["train", "--model", "blaze", "--data", str(data), "--out", str(tmp_path / "a"),
                              "--batch-size", "4", "--landm-weight", "3", "--cls-weight", "0.5"])
    loss = Trainer(train_options(args)).loss_fn
    assert (loss.loc_weight, loss.cls_weight, loss.landm_weight) == (2.0, 0.5, 3.0)
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--data", str(data), "--loc-weight", "-1"])


def test_face_weight_floor_from_the_command_line_reaches_the_matcher(data, tmp_path):
    """--face-weight-floor sets the model's TrainConfig and the training data's matcher; off (0) by default."""
    from blazeface.cli import build_parser
    from blazeface.cli.train_cmd import train_options

    parser = build_parser()
    common = ["train", "--model", "slim", "--data", str(data), "--batch-size", "4"]
    floored = Trainer(train_options(parser.parse_args(common + ["--out", str(tmp_path / "a"),
                                                               "--face-weight-floor", "4"])))
    assert floored.train_cfg.face_weight_floor == 4.0 and floored.dataset.matcher.face_weight_floor == 4.0
    plain = Trainer(train_options(parser.parse_args(common + ["--out", str(tmp_path / "b")])))
    assert plain.dataset.matcher.face_weight_floor == 0.0
    with pytest.raises(SystemExit):
        parser.parse_args(common + ["--face-weight-floor", "-1"])


def test_rotation_from_the_command_line(data, tmp_path):
    """--rotate-p and --max-rotation put a RandomRotate first in the training augmentation (none by default);
    an angle beyond half a turn is a usage error."""
    from blazeface.cli import build_parser
    from blazeface.cli.train_cmd import train_options
    from blazeface.data.transforms import RandomRotate

    parser = build_parser()
    args = parser.parse_args(["train", "--model", "slim", "--data", str(data), "--out", str(tmp_path / "a"),
                              "--batch-size", "4", "--rotate-p", "0.25", "--max-rotation", "40"])
    first = Trainer(train_options(args)).dataset.transform.transforms[0]
    assert isinstance(first, RandomRotate) and (first.p, first.max_degrees) == (0.25, 40.0)
    default = Trainer(options(data, tmp_path / "b")).dataset.transform.transforms
    assert not any(isinstance(t, RandomRotate) for t in default)
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--data", str(data), "--max-rotation", "200"])


def test_close_mosaic_switches_at_the_same_step_when_resumed(data, tmp_path):
    """--close-mosaic: the last epochs are drawn without mosaics; a run stopped before the switch and resumed
    switches at the same step and ends with the straight run's weights. Closing every epoch is a one-line error."""
    def run(out, **kw):
        trainer = Trainer(options(data, out, mosaic_p=1.0, close_mosaic=1, **kw))
        phases, loader = [], trainer.loader

        def recording_loader(first, last):  # each loader's steps and the mosaic chance its workers receive
            phases.append((first, last, trainer.dataset.mosaic_p))
            return loader(first, last)

        trainer.loader = recording_loader
        trainer.run()
        return trainer, phases

    straight, phases = run(tmp_path / "a")
    assert phases == [(0, 4, 1.0), (4, 8, 0.0)]  # 2 epochs of 4 steps
    _, phases = run(tmp_path / "b", max_steps=3)
    assert phases == [(0, 3, 1.0)]
    resumed, phases = run(tmp_path / "b", resume=tmp_path / "b" / "last.pth")
    assert phases == [(3, 4, 1.0), (4, 8, 0.0)]
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    with pytest.raises(BlazefaceError, match="leaves none of the 2 epochs"):
        Trainer(options(data, tmp_path / "c", mosaic_p=0.5, close_mosaic=2))
