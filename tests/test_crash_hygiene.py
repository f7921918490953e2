"""A training run killed with SIGKILL: its data workers, fork server and resource tracker exit; the next start
removes the temporary files it left and cuts metrics.jsonl back to the checkpoint."""
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from blazeface.training.checkpointing import load_checkpoint, remove_stale_temporaries, truncate_metrics
from blazeface.training.trainer import Trainer, TrainOptions
from conftest import REPO
from test_training import make_dataset


def tagged_processes(tag: str) -> list[int]:
    """Processes whose environment holds ``tag`` (this test's children and their descendants)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if tag.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def wait_for(condition, timeout: float, step: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def test_sigkill_leaves_no_helpers_and_the_next_start_cleans_up(tmp_path):
    data = make_dataset(tmp_path / "data", images=32)
    out = tmp_path / "out"
    tag = uuid.uuid4().hex
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"), BLAZEFACE_TEST_TAG=tag)
    common = ["--model", "slim", "--data", str(data), "--epochs", "40", "--batch-size", "4", "--input-size", "64",
              "--eval-every", "0", "--log-every", "1", "--no-bf16", "--threads", "1", "--out", str(out)]
    run = subprocess.Popen([sys.executable, "-m", "blazeface", "train", *common, "--workers", "2",
                            "--checkpoint-minutes", "0.005"], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        metrics = out / "metrics.jsonl"
        # Killed while its workers run: trainer, fork server, 2 workers (+ the resource tracker).
        assert wait_for(lambda: (out / "last.pth").is_file() and metrics.is_file()
                        and len(tagged_processes(tag)) >= 4, timeout=300), "training did not start"
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    try:
        assert wait_for(lambda: not tagged_processes(tag), timeout=60), \
            f"helpers still running: {tagged_processes(tag)}"
    finally:
        for pid in tagged_processes(tag):
            os.kill(pid, signal.SIGKILL)
    # What a kill during a save leaves: a temporary file beside last.pth; and metrics past the checkpoint.
    (out / ".last.pth.4242.partial").write_bytes(b"")
    step = load_checkpoint(out / "last.pth")["position"]["step"]
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"step": step + 1, "loss": 1.0}) + "\n")
    Trainer(TrainOptions(model="slim", data=[str(data)], out=out, epochs=40, batch_size=4, input_size=64, workers=0,
                         eval_every=0, progress=False, log_every=1, bf16=False, threads=1,
                         resume=out / "last.pth", max_steps=step + 2)).run()
    assert not list(out.glob(".*.partial"))
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == step + 2  # each step logged once, in order


def test_truncate_metrics_and_remove_temporaries(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3, 4))
                       + json.dumps({"epoch": 1, "ap": 0.5}) + "\n" + '{"step": 5, "lo')  # torn last line
    assert truncate_metrics(metrics, 2) == 3
    assert [json.loads(line) for line in metrics.read_text().splitlines()] == [{"step": 1}, {"step": 2},
                                                                               {"epoch": 1, "ap": 0.5}]
    for name in (".last.pth.123.partial", ".weights.pth.45.partial", ".other.onnx.6.partial", ".last.pth.x.partial",
                 "keep.pth"):
        (tmp_path / name).write_bytes(b"")
    assert sorted(p.name for p in remove_stale_temporaries(tmp_path)) == [".last.pth.123.partial",
                                                                          ".weights.pth.45.partial"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".last.pth.x.partial", ".other.onnx.6.partial",
                                                          "keep.pth", "metrics.jsonl"]
