"""The one thread policy (blazeface.threads): --threads on every command, set once for every library, and
the default backend of the commands."""
import argparse
import importlib.util

import cv2
import pytest
import torch

from blazeface import BlazefaceError, threads
from blazeface.cli import COMMANDS, build_parser, main
from blazeface.backends import backend_for, default_backend
from conftest import SAMPLE


def leaf_parsers(parser, path=()):
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not actions:
        yield path, parser
    for action in actions:
        for name, child in action.choices.items():
            yield from leaf_parsers(child, path + (name,))


@pytest.fixture
def restore_threads():
    before = (torch.get_num_threads(), cv2.getNumThreads(), threads._configured)
    yield
    torch.set_num_threads(before[0])
    cv2.setNumThreads(before[1])
    threads._configured = before[2]


def test_every_command_takes_threads():
    leaves = dict(leaf_parsers(build_parser()))
    assert {path[0] for path in leaves} == set(COMMANDS)
    for path, parser in leaves.items():
        assert "--threads" in parser._option_string_actions, path


def test_configure_sets_every_library_and_never_exceeds_the_cores(restore_threads, monkeypatch):
    monkeypatch.setattr(threads, "cpu_count", lambda: 2)
    assert threads.configure(None) == threads.DEFAULT_THREADS == 1
    assert torch.get_num_threads() == 1 and cv2.getNumThreads() == 1 and threads.current() == 1
    assert threads.configure(8) == 2  # capped at the cores
    assert torch.get_num_threads() == 2 and cv2.getNumThreads() == 2
    with pytest.raises(BlazefaceError, match=">= 0"):
        threads.resolve(-1)


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs the 'onnx' extra")
def test_cli_threads_reach_onnx_runtime(restore_threads, tmp_path, monkeypatch, capsys):
    from blazeface.runtime.onnx_runner import OnnxRunner

    monkeypatch.setenv("BLAZEFACE_CACHE", str(tmp_path))
    sessions = []
    original = OnnxRunner.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        sessions.append(self.session)

    monkeypatch.setattr(OnnxRunner, "__init__", spy)
    assert main(["detect", str(SAMPLE), "--model", "slim", "--threads", "1", "--json", "-"]) == 0
    assert '"faces"' in capsys.readouterr().out
    assert threads.current() == 1 and torch.get_num_threads() == 1
    # No --backend: onnx, the default where onnxruntime is installed; its session got the policy's count.
    assert len(sessions) == 1
    assert sessions[0].get_session_options().intra_op_num_threads == 1


def test_bad_thread_count_is_one_line(capsys):
    assert main(["detect", str(SAMPLE), "--threads", "-2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--threads" in err


def test_default_backend(monkeypatch):
    assert backend_for("m.onnx") == "onnx"
    assert backend_for("m.param") == "ncnn"
    have_ort = all(importlib.util.find_spec(m) for m in ("onnxruntime", "onnx", "onnxslim"))
    assert default_backend() == ("onnx" if have_ort else "torch")
    assert backend_for("ckpt.pth") == backend_for(None) == default_backend()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert default_backend() == "torch"
