"""Flush denormal (subnormal) float32 weights to zero.

On x86 every multiply with a subnormal operand takes a slow microcode path (tens to a hundred times a
normal one). Training with weight decay leaves some weights there: the original Blaze_Final_640.pth
has 3,616 of them in 30 tensors, most in its stride-8 heads, which made those three tiny depthwise
heads take ~45% of blaze's CPU inference time. Zeroing them changes no output measurably (a
subnormal weight contributes < 1.2e-38 times its input) and makes blaze ~1.5x faster in PyTorch and
ONNX Runtime. Exports and the PyTorch runner apply it.
"""
from __future__ import annotations

import numpy as np
import torch

TINY = float(np.finfo(np.float32).tiny)  # the smallest normal float32


@torch.no_grad()
def flush_module(model: torch.nn.Module) -> int:
    """Zero every subnormal value of the module's float parameters and buffers, in place; returns the count."""
    count = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point():
            mask = (tensor.abs() < TINY) & (tensor != 0)
            n = int(mask.sum())
            if n:
                tensor[mask] = 0
                count += n
    return count


def flush_onnx(proto) -> int:
    """Zero every subnormal value of the float32 initializers of an ``onnx.ModelProto``, in place."""
    from onnx import TensorProto, numpy_helper

    count = 0
    for k, init in enumerate(proto.graph.initializer):
        if init.data_type != TensorProto.FLOAT:
            continue
        array = numpy_helper.to_array(init)
        mask = (np.abs(array) < TINY) & (array != 0)
        n = int(mask.sum())
        if n:
            array = array.copy()
            array[mask] = 0
            proto.graph.initializer[k].CopyFrom(numpy_helper.from_array(array, init.name))
            count += n
    return count
