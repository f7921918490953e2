"""tools/project_meta.py: what the Makefile reads from pyproject.toml (Python version, extras)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("project_meta", REPO / "tools" / "project_meta.py")
project_meta = importlib.util.module_from_spec(spec)
spec.loader.exec_module(project_meta)


def test_regexes_read_what_tomllib_reads():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in Python 3.11+")
    text = project_meta.read_pyproject()
    data = tomllib.loads(text)
    assert project_meta.requires_python(text) == data["project"]["requires-python"]
    assert project_meta.extras(text) == list(data["project"]["optional-dependencies"])


def test_extras_of_a_table_between_others():
    text = ('[project]\nname = "x"\n[project.optional-dependencies]\n# comment\ntest = ["pytest>=7",\n'
            '    "pillow"]\n"lint" = ["ruff"]\nbench = ["x[test]"]\n\n[project.scripts]\nx = "x:main"\n')
    assert project_meta.extras(text) == ["test", "lint", "bench"]
    assert project_meta.extras('[project]\nname = "x"\n') == []


@pytest.mark.parametrize("version, specifier, ok", [
    ((3, 10, 0), ">=3.10", True),
    ((3, 9, 18), ">=3.10", False),
    ((3, 13, 0), ">=3.10,<3.13", False),
    ((3, 12, 1), ">=3.10, <3.13", True),
    ((3, 11, 7), "==3.11.*", True),
    ((3, 12, 1), "==3.11.*", False),
    ((3, 11, 7), "!=3.11.*", False),
    ((3, 11, 7), "~=3.10", True),
    ((4, 0, 0), "~=3.10", False),
    ((3, 10, 13), ">3.10", True),
    ((3, 10, 0), ">3.10", False),
])
def test_satisfies(version, specifier, ok):
    assert project_meta.satisfies(version, specifier) is ok


def test_unreadable_clause_is_an_error():
    with pytest.raises(ValueError, match="3.10a"):
        project_meta.satisfies((3, 11, 0), ">=3.10a")


def test_message_for_too_old_a_python_is_one_line():
    assert project_meta.check_python('requires-python = ">=3.0"\n') is None
    message = project_meta.check_python('requires-python = ">=99"\n')
    assert message.count("\n") == 0 and ">=99" in message and sys.executable in message


def test_command_line():
    run = [sys.executable, str(REPO / "tools" / "project_meta.py")]
    assert subprocess.run(run + ["check-python"], capture_output=True, text=True).returncode == 0
    extras = subprocess.run(run + ["extras"], capture_output=True, text=True, check=True).stdout.strip()
    assert {"test", "onnx", "ncnn"} <= set(extras.split(","))
    assert subprocess.run(run + ["nonsense"], capture_output=True, text=True).returncode == 2
