"""PyTorch model -> one self-contained, simplified ONNX file with dynamic batch, height and width.

The graph comes from the TorchScript-based exporter (``dynamo=False``): ``torch.export`` cannot express
blaze's floor-rounding max-pool shortcuts for a symbolic height and width (it raises a constraint
violation), and takes 15-20 s per model where this takes about one. The graph is then simplified with
onnxslim, subnormal weights are flushed to zero (see :mod:`blazeface.denormals`), the outputs
named ``loc``, ``conf``, ``landm`` and the prior configuration written into the metadata (see
:mod:`blazeface.metadata`).
"""
from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import torch

from ..denormals import flush_module, flush_onnx
from ..errors import BlazefaceError
from ..geometry import round_up
from ..io import atomic_target
from ..metadata import INPUT_NAME, OUTPUT_NAMES, model_metadata, state_dict_sha256
from ..optional import require

OPSET = 17
# The trace input; any size works since every spatial dimension is exported as symbolic.
TRACE_SIZE = (320, 240)



def trace_input(model: torch.nn.Module, size: tuple[int, int] = TRACE_SIZE, batch: int = 1) -> torch.Tensor:
    """A (batch, 3, H, W) input of about ``size`` (width, height), padded to the model's size multiple."""
    multiple = getattr(getattr(model, "config", None), "size_multiple", 1) or 1
    w, h = (round_up(v, multiple) for v in size)
    return torch.zeros(batch, 3, h, w)


def export_copy(module: torch.nn.Module) -> torch.nn.Module:
    """What an export traces: a CPU, eval-mode, NCHW copy of ``module`` with its subnormal weights flushed
    (the module itself is left as it was)."""
    net = copy.deepcopy(module).cpu().eval().to(memory_format=torch.contiguous_format)
    flush_module(net)
    return net


def traced_graph(net: torch.nn.Module, example: torch.Tensor, output_names: list[str], dynamic_axes: dict, *,
                 opset: int = OPSET, simplify: bool = True):
    """The simplified ``onnx.ModelProto`` of ``net`` (an :func:`export_copy` of any module from one image
    batch to tensors) traced on ``example``, subnormals flushed again after onnxslim folds BatchNorm. The
    one trace-and-simplify path of the detector export and of a teacher's feature graph."""
    onnx = require("onnx", "onnx")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(net, (example.cpu().contiguous(),), buffer, dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=list(output_names), dynamic_axes=dynamic_axes,
                          do_constant_folding=True)
    proto = onnx.load_from_string(buffer.getvalue())
    if simplify:
        onnxslim = require("onnxslim", "onnx")
        proto = onnxslim.slim(proto)
        if proto is None:
            raise BlazefaceError("onnxslim failed to simplify the exported graph")
    flush_onnx(proto)  # folding BatchNorm into convolutions can make new subnormals
    outputs = [o.name for o in proto.graph.output]
    if outputs != list(output_names) or [i.name for i in proto.graph.input] != [INPUT_NAME]:
        raise BlazefaceError(f"exported graph lost its input/output names (outputs: {outputs})")
    return proto


def to_onnx_model(model: torch.nn.Module, *, opset: int = OPSET, simplify: bool = True,
                  weights_sha256: str | None = None):
    """The ``onnx.ModelProto`` of a detector (in eval mode, so ``conf`` is the softmax)."""
    onnx = require("onnx", "onnx")
    config = getattr(model, "config", None)
    if config is None:
        raise BlazefaceError("export needs a model built by blazeface.create_model (it carries its configuration)")
    dynamic = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
    dynamic.update({name: {0: "batch", 1: "priors"} for name in OUTPUT_NAMES})
    net = export_copy(model)  # the hash below is of the weights the file holds
    proto = traced_graph(net, trace_input(net), list(OUTPUT_NAMES), dynamic, opset=opset, simplify=simplify)
    meta = model_metadata(config, weights_sha256 or state_dict_sha256(net))
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "blazeface"
    proto.doc_string = f"blazeface {config.name}: {config.description}"
    onnx.checker.check_model(proto)
    return proto


def export_onnx(model: torch.nn.Module, path: str | Path, *, opset: int = OPSET, simplify: bool = True,
                weights_sha256: str | None = None) -> Path:
    """Write ``model`` to ``path`` as one ONNX file (weights inside, no external data)."""
    onnx = require("onnx", "onnx")
    proto = to_onnx_model(model, opset=opset, simplify=simplify, weights_sha256=weights_sha256)
    path = Path(path)
    with atomic_target(path) as partial:
        onnx.save_model(proto, str(partial), save_as_external_data=False)
    return path
