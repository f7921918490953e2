"""Training checkpoints: written atomically, read back with ``weights_only=True``."""
from __future__ import annotations

import json
import os
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import BlazefaceError


def save_atomic(obj, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``: a crash at any
    moment leaves either the old or the new checkpoint, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files :func:`save_atomic` leaves when its process is killed mid-write
    (``.<name>.<random>.tmp``); call at the start of a run, when no save of this folder is in flight."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        if tmp.is_file() and (re.fullmatch(r"\..+\.pth\.\w+\.tmp", tmp.name) or tmp.name == ".metrics.jsonl.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def truncate_metrics(path: str | Path, step: int) -> int:
    """Cut a metrics JSON Lines file back to the records of steps <= ``step`` (a resumed run logs the steps
    after its checkpoint again); records without a step are kept. -> the number of lines removed."""
    import json

    path = Path(path)
    if not path.is_file():
        return 0
    kept, removed = [], 0
    for line in path.read_text().splitlines():
        try:
            record_step = json.loads(line).get("step")
        except (ValueError, AttributeError):
            record_step = None  # a line torn by the kill: drop it
            if line.strip():
                removed += 1
                continue
        if isinstance(record_step, (int, float)) and record_step > step:
            removed += 1
            continue
        kept.append(line)
    if removed:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        os.replace(tmp, path)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise BlazefaceError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BlazefaceError(f"{path}: not a readable checkpoint ({first})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "position" not in ckpt:
        raise BlazefaceError(f"{path}: not a blazeface training checkpoint (no model/position)")
    return ckpt


# Options of a run that apply to one invocation only and are not carried over by a resume.
NOT_RESUMED = ("resume", "max_steps")


def saved_options(path: str | Path) -> dict:
    """The training options a checkpoint was written with (``TrainOptions`` fields; paths as strings),
    less the per-invocation ones, so that ``--resume CKPT`` alone continues the run."""
    ckpt = load_checkpoint(path)
    try:
        options = json.loads(ckpt.get("options", "{}"))
    except (TypeError, ValueError):
        raise BlazefaceError(f"{path}: unreadable training options in the checkpoint") from None
    if not isinstance(options, dict) or "model" not in options or "data" not in options:
        raise BlazefaceError(f"{path}: the checkpoint does not record its model and data: pass model=... and data=...")
    return {k: v for k, v in options.items() if k not in NOT_RESUMED}


def rng_state() -> dict:
    """Every RNG the training loop touches, in a form ``weights_only`` loading accepts."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))


def _tuplify(obj):
    """random.setstate needs tuples; a checkpoint round trip may give lists."""
    return tuple(_tuplify(v) for v in obj) if isinstance(obj, (list, tuple)) else obj
