"""PyTorch model -> ncnn ``.param`` / ``.bin`` through pnnx, with dynamic input size.

The route that keeps height and width dynamic in ncnn is pnnx from the traced TorchScript model with
two input shapes (``inputshape`` and ``inputshape2``): pnnx then writes shape expressions into the
Reshape layers instead of constants. (pnnx from an ONNX file with dynamic axes does not.)
Weights are fp32 unless ``fp16=True``. Blob names are rewritten to ``input`` / ``loc`` / ``conf`` /
``landm`` (pnnx writes ``in0`` / ``out0..2``), and the metadata goes into ``<stem>.json`` beside the
``.param``.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

from ..errors import BlazefaceError
from ..io import atomic_target
from ..metadata import INPUT_NAME, OUTPUT_NAMES, model_metadata, ncnn_paths, state_dict_sha256, write_sidecar
from ..optional import require
from .onnx import export_copy, trace_input

# Two different shapes, both multiples of every model's size multiple (16): pnnx compares the two
# traces to find which dimensions are dynamic.
TRACE_SIZES = ((320, 240), (256, 160))
PNNX_TIMEOUT_S = 600


def rename_blobs(param_text: str, names: dict[str, str]) -> str:
    """Rename blobs (and the Input layer named like its blob) in an ncnn ``.param`` text."""
    lines = param_text.splitlines()
    out = lines[:2]
    for line in lines[2:]:
        tokens = line.split()
        if len(tokens) < 4:
            out.append(line)
            continue
        kind, name, n_in, n_out = tokens[0], tokens[1], int(tokens[2]), int(tokens[3])
        blobs = [names.get(b, b) for b in tokens[4:4 + n_in + n_out]]
        if kind == "Input":
            name = names.get(name, name)
        out.append(" ".join([kind, name, str(n_in), str(n_out), *blobs, *tokens[4 + n_in + n_out:]]))
    return "\n".join(out) + "\n"


def export_ncnn(model: torch.nn.Module, param_path: str | Path, *, fp16: bool = False,
                weights_sha256: str | None = None) -> tuple[Path, Path]:
    """Write ``model`` as ncnn ``param_path`` and the ``.bin`` beside it (plus ``.json`` metadata)."""
    pnnx = require("pnnx", "ncnn")
    config = getattr(model, "config", None)
    if config is None:
        raise BlazefaceError("export needs a model built by blazeface.create_model (it carries its configuration)")
    param_path, bin_path = ncnn_paths(param_path)
    if param_path.suffix != ".param":
        raise BlazefaceError(f"{param_path}: an ncnn model path must end in .param (its .bin goes beside it)")
    net = export_copy(model)  # subnormal weights are slow on CPUs (see blazeface.denormals)
    x1, x2 = (trace_input(net, size) for size in TRACE_SIZES)
    shape = lambda x: "[" + ",".join(map(str, x.shape)) + "]f32"  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="blazeface-pnnx-") as tmp:
        tmp = Path(tmp)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.jit.trace(net, x1, check_trace=False).save(str(tmp / "model.pt"))
        outputs = {k: str(tmp / f"model.{k}") for k in ("pnnxparam", "pnnxbin", "pnnxpy", "pnnxonnx", "ncnnpy")}
        cmd = [pnnx.EXEC_PATH, str(tmp / "model.pt"), f"inputshape={shape(x1)}", f"inputshape2={shape(x2)}",
               "device=cpu", f"fp16={int(fp16)}", f"ncnnparam={tmp / 'model.ncnn.param'}",
               f"ncnnbin={tmp / 'model.ncnn.bin'}", *(f"{k}={v}" for k, v in outputs.items())]
        try:
            result = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=PNNX_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BlazefaceError(f"pnnx could not run: {exc}") from None
        param_src, bin_src = tmp / "model.ncnn.param", tmp / "model.ncnn.bin"
        if result.returncode != 0 or not param_src.is_file() or not bin_src.is_file():
            tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
            raise BlazefaceError(f"pnnx failed (exit {result.returncode}): {tail}")
        text = rename_blobs(param_src.read_text(), {"in0": INPUT_NAME,
                                                     **{f"out{k}": n for k, n in enumerate(OUTPUT_NAMES)}})
        # .bin first, .param last: a reader that finds the .param finds its .bin (the export cache's test)
        with atomic_target(bin_path) as partial:
            shutil.copyfile(bin_src, partial)
        with atomic_target(param_path) as partial:
            partial.write_text(text)
    meta = model_metadata(config, weights_sha256 or state_dict_sha256(net))
    meta["weights_dtype"] = "fp16" if fp16 else "fp32"
    write_sidecar(param_path, meta)
    return param_path, bin_path
