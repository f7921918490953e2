"""Inference backends behind one interface: ``runner(batch (N, 3, H, W) float32) -> (loc, conf, landm)``.

Every runner feeds the one post-processing path (:func:`blazeface.postprocess.postprocess`). The runners
only load what they are given; :func:`blazeface.backends.make_runner` picks one and exports a checkpoint
for onnx / ncnn on first use.

=========  =======================  ===================================================================
runner     loads                    needs
=========  =======================  ===================================================================
torch      a built ``nn.Module``    (core)
onnx       an exported ``.onnx``    ``pip install 'blazeface[onnx]'`` (onnxruntime)
ncnn       an ncnn ``.param``       ``pip install 'blazeface[ncnn]'`` (ncnn)
=========  =======================  ===================================================================
"""
from __future__ import annotations

from .ncnn_runner import NcnnRunner
from .onnx_runner import OnnxRunner
from .torch_runner import TorchRunner

__all__ = ["NcnnRunner", "OnnxRunner", "TorchRunner"]
