import os

# One thread per test process: on a busy 2-core machine, torch's default thread pool oversubscribes
# the cores and a forward pass slows down ~100x.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
SAMPLE = REPO / "src" / "blazeface" / "assets" / "sample.jpg"

requires_shared = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not present")

# Reference checkpoints of the original repositories: (model, file, reference output file).
REFERENCE = [
    ("blaze", "Blaze_Final_640.pth", "blaze_640"),
    ("blaze", "Blaze_Final_320.pth", "blaze_320"),
    ("slim", "slim_Final.pth", "slim"),
    ("rfb", "RBF_Final.pth", "rfb"),
    ("mnet", "mobilenet0.25_Final.pth", "mnet"),
]
