import os

# One thread per test process: on a busy 2-core machine, torch's default thread pool oversubscribes
# the cores and a forward pass slows down ~100x.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
SAMPLE = REPO / "src" / "blazeface" / "assets" / "sample.jpg"

requires_shared = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not present")

# A real browser for the page and video tests: Debian's chromium (its media stack has H.264 and AAC),
# driven from Node.js by playwright-core out of web/node_modules.
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
NODE = shutil.which("node")


def chromium_skip_reason() -> str | None:
    """Why a test that drives headless Chromium cannot run here, or None."""
    if CHROMIUM is None:
        return "needs Chromium (Debian: apt-get install chromium)"
    if NODE is None:
        return "needs Node.js (node)"
    if not (REPO / "web" / "node_modules" / "playwright-core").is_dir():
        return "needs the page's npm packages: npm ci --prefix web"
    return None

# Reference checkpoints of the original repositories: (model, file, reference output file).
REFERENCE = [
    ("blaze", "Blaze_Final_640.pth", "blaze_640"),
    ("blaze", "Blaze_Final_320.pth", "blaze_320"),
    ("slim", "slim_Final.pth", "slim"),
    ("rfb", "RBF_Final.pth", "rfb"),
    ("mnet", "mobilenet0.25_Final.pth", "mnet"),
]
