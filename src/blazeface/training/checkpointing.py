"""Training checkpoints: written atomically, read back with ``weights_only=True``; packed with xz for the
repository, whose files stay under 5 MB."""
from __future__ import annotations

import io
import json
import lzma
import random
from pathlib import Path

import numpy as np
import torch

from ..errors import BlazefaceError
from ..io import atomic_target, same_file, stale_partials


def save_atomic(obj, path: str | Path) -> None:
    """torch.save through :func:`~blazeface.io.atomic_target` with fsync: a crash at any moment leaves either
    the old or the new checkpoint, never a torn one."""
    with atomic_target(path, durable=True) as partial:
        with open(partial, "wb") as fh:
            torch.save(obj, fh)


# What a run folder's atomic writers write: a kill mid-write leaves a temporary of one of these.
TEACHER_CANDIDATES_FILE = "teacher_candidates.npz"  # train --cache-teacher (training/teacher_cache.py)
RUN_FILES = ("last.pth", "weights.pth", "metrics.jsonl", TEACHER_CANDIDATES_FILE)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries a run killed while saving left in its folder; call at the start of a run, when
    no save of this folder is in flight."""
    removed = stale_partials(folder, RUN_FILES)
    for partial in removed:
        partial.unlink(missing_ok=True)
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
        with atomic_target(path) as partial:
            partial.write_text("".join(f"{line}\n" for line in kept))
    return removed


# The first bytes of an xz stream: a checkpoint packed by pack_checkpoint.
XZ_MAGIC = b"\xfd7zXZ\x00"


def load_checkpoint(path: str | Path) -> dict:
    """A training checkpoint as ``save_atomic`` wrote it, or packed by :func:`pack_checkpoint` (told apart by
    its first bytes, not its name)."""
    return _read_checkpoint(path)[1]


def _read_checkpoint(path: str | Path) -> tuple[bytes, dict]:
    """-> (the checkpoint's torch.save bytes, unpacked where packed; the checkpoint), the file read once."""
    path = Path(path)
    if not path.is_file():
        raise BlazefaceError(f"{path}: checkpoint not found")
    try:
        data = path.read_bytes()
        if data.startswith(XZ_MAGIC):
            data = lzma.decompress(data)
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BlazefaceError(f"{path}: not a readable checkpoint ({first})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "position" not in ckpt:
        raise BlazefaceError(f"{path}: not a blazeface training checkpoint (no model/position)")
    return data, ckpt


def pack_checkpoint(source: str | Path, target: str | Path) -> tuple[int, int]:
    """Write ``source`` (a training checkpoint, plain or already packed) xz-compressed to ``target``,
    atomically -> (bytes unpacked, bytes packed). A state with feature adapters (5.4-5.8 MB: weights, EMA,
    momentum, adapters) packs to 4-4.6 MB, under the repository's 5 MB file limit; ``--resume`` reads the
    packed file as it is."""
    source, target = Path(source), Path(target)
    if same_file(source, target):
        raise BlazefaceError(f"{target}: is the checkpoint being packed; name another file")
    data, _ = _read_checkpoint(source)  # one line, before anything is written, for a file that is not one
    packed = lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)
    with atomic_target(target, durable=True) as partial:
        partial.write_bytes(packed)
    return len(data), len(packed)


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
