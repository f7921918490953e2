"""The code's own rules, checked by the tools that define them: the import layers (import-linter, the
contract in pyproject.toml) and a small ruff rule set."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO


def tool(name: str) -> str:
    """The console script installed beside this Python (the test extra), else one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    found = beside if os.path.exists(beside) else shutil.which(name)
    if found is None:
        pytest.skip(f"needs {name}: pip install -e '.[test]'")
    return found


def run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_import_layers_are_kept():
    result = run([tool("lint-imports"), "--no-cache"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def test_ruff_passes():
    result = run([tool("ruff"), "check", "--no-cache", "--output-format", "concise", "src", "tests", "benchmarks"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_box_iou_is_defined_in_one_module():
    """Box IoU lives in blazeface.geometry; nothing else in src/ computes a union of two boxes."""
    offenders = []
    for path in (REPO / "src" / "blazeface").rglob("*.py"):
        text = path.read_text()
        if path.name != "geometry.py" and ("def box_iou" in text or "def _pair_iou" in text
                                           or "- inter)" in text or "area_b - inter" in text):
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
