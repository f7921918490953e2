"""What an exported model carries so that any runtime can decode it without this package.

ONNX files hold these keys in their ``metadata_props``; ncnn models, whose ``.param`` has no room for
them, get the same keys in a JSON file beside it (``m.param`` -> ``m.json``). Every value is a string;
the structured ones are JSON.

    model           registry name ("blaze", "blazelite", "slim", "slimlite", "rfb", "mnet")
    min_sizes       per detection level, the prior sizes in input pixels, e.g. [[10, 16, 24], [32, 48], ...]
    steps           per detection level, the stride in input pixels, e.g. [8, 16, 32, 64]
    variances       box coding variances, [0.1, 0.2]
    mean_bgr        subtracted from the BGR input, [104, 117, 123] (no scaling)
    size_multiple   the input height and width must be multiples of this (pad bottom/right)
    input           layout of the input tensor, in words
    outputs         layout of the three outputs, in words
    prior_order     how priors are ordered, in words
    weights_sha256  SHA-256 of the weights file the model was exported from (or of its state dict)
    blazeface_version, export_revision
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Mapping

from .config import ModelConfig, PriorConfig
from .errors import BlazefaceError
from .io import atomic_target
from .version import __version__

INPUT_DOC = ("input: float32 NCHW, BGR channel order, pixel values minus mean_bgr (no scaling); height and "
             "width multiples of size_multiple (pad bottom/right with zeros)")
OUTPUTS_DOC = ("loc (N, P, 4): box offsets (dcx, dcy, dw, dh), decoded as centre = prior_c + d * variances[0] * "
               "prior_wh, size = prior_wh * exp(d * variances[1]); conf (N, P, 2): softmax, column 1 = face; "
               "landm (N, P, 10): five (x, y) points (left eye, right eye, nose, left mouth corner, right mouth "
               "corner), each prior_c + d * variances[0] * prior_wh; all normalised by the input width/height")
PRIOR_ORDER_DOC = ("level by level (steps order); per level a ceil(H/step) x ceil(W/step) grid, row-major; per "
                   "cell one prior per min_size: (cx, cy, w, h) = ((j + 0.5) * step / W, (i + 0.5) * step / H, "
                   "min_size / W, min_size / H); no clipping")
OUTPUT_NAMES = ("loc", "conf", "landm")
# Bumped whenever what an export writes changes, so cached exports of older revisions are redone.
EXPORT_REVISION = 2  # 2: the two-class softmax as MatMul + Sigmoid (models/detector.py)
INPUT_NAME = "input"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_dict_sha256(model) -> str:
    """A stable hash of a module's parameters and buffers (names, dtypes, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def model_metadata(config: ModelConfig, weights_sha256: str | None = None) -> dict[str, str]:
    meta = {
        "model": config.name,
        "min_sizes": json.dumps([list(m) for m in config.priors.min_sizes]),
        "steps": json.dumps(list(config.priors.steps)),
        "variances": json.dumps(list(config.priors.variances)),
        "mean_bgr": json.dumps(list(config.mean_bgr)),
        "size_multiple": str(config.size_multiple),
        "input": INPUT_DOC,
        "outputs": OUTPUTS_DOC,
        "prior_order": PRIOR_ORDER_DOC,
        "blazeface_version": __version__,
        "export_revision": str(EXPORT_REVISION),
    }
    if weights_sha256:
        meta["weights_sha256"] = weights_sha256
    return meta


def priors_from_metadata(meta: Mapping[str, str]) -> PriorConfig:
    try:
        return PriorConfig(min_sizes=tuple(tuple(float(v) for v in level) for level in json.loads(meta["min_sizes"])),
                           steps=tuple(int(s) for s in json.loads(meta["steps"])),
                           variances=tuple(float(v) for v in json.loads(meta["variances"])))
    except (KeyError, ValueError, TypeError) as exc:
        raise BlazefaceError(f"exported model metadata has no valid prior configuration ({exc})") from None


def check_metadata(meta: Mapping[str, str], config: ModelConfig, source: str | Path) -> None:
    """Raise a one-line error when an exported file's metadata says it is not ``config``'s model.

    Files without our metadata (exported elsewhere) pass: only what is stated is checked.
    """
    name = meta.get("model")
    if name is not None and name != config.name:
        raise BlazefaceError(f"{source} holds model {name!r}, not {config.name!r}: pass model={name!r}")
    if "min_sizes" in meta or "steps" in meta:
        priors = priors_from_metadata(meta)
        ours = config.priors
        same = (priors.steps == ours.steps and priors.variances == ours.variances
                and [list(map(float, m)) for m in priors.min_sizes] == [list(map(float, m)) for m in ours.min_sizes])
        if not same:
            raise BlazefaceError(f"{source} was exported with priors {meta.get('min_sizes')} / steps "
                                 f"{meta.get('steps')}, which differ from model {config.name!r}'s")
    if "mean_bgr" in meta and [float(v) for v in json.loads(meta["mean_bgr"])] != [float(v) for v in config.mean_bgr]:
        raise BlazefaceError(f"{source} expects mean {meta['mean_bgr']}, model {config.name!r} uses "
                             f"{list(config.mean_bgr)}")


def ncnn_paths(param: str | Path) -> tuple[Path, Path]:
    """``m.param`` -> (``m.param``, ``m.bin``)."""
    param = Path(param)
    return param, param.with_suffix(".bin")


def sidecar_path(param_path: str | Path) -> Path:
    """``m.param`` -> ``m.json`` (the metadata of an ncnn model)."""
    return Path(param_path).with_suffix(".json")


def write_sidecar(param_path: str | Path, meta: Mapping[str, str]) -> Path:
    path = sidecar_path(param_path)
    with atomic_target(path) as partial:
        partial.write_text(json.dumps(dict(meta), indent=1) + "\n")
    return path


def read_sidecar(param_path: str | Path) -> dict[str, str]:
    """The metadata beside an ncnn ``.param``, or {} when there is none."""
    path = sidecar_path(param_path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BlazefaceError(f"{path}: unreadable metadata ({exc})") from None
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
