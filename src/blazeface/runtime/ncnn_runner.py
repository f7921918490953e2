"""ncnn backend (the ``ncnn`` Python package), one image at a time."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..errors import BlazefaceError
from ..metadata import INPUT_NAME, OUTPUT_NAMES, check_metadata, ncnn_paths, read_sidecar
from ..optional import require


class NcnnRunner:
    """(N, 3, H, W) float32 batch -> (loc, conf, landm) through an ncnn ``.param`` (``.bin`` beside it).

    ``threads``: ncnn's thread count (None: ncnn's default). ``precise=True`` switches off Winograd
    convolution and fp16 storage/arithmetic, for bit-closer agreement with PyTorch (parity checks);
    the default keeps ncnn's fast paths.
    """

    name = "ncnn"

    def __init__(self, param: str | Path, threads: int | None = None, config: ModelConfig | None = None,
                 precise: bool = False):
        ncnn = require("ncnn", "ncnn")
        param, weights = ncnn_paths(param)
        if param.suffix != ".param":
            raise BlazefaceError(f"{param}: an ncnn model is given by its .param file (the .bin beside it)")
        for path in (param, weights):
            if not path.is_file():
                raise BlazefaceError(f"{path}: no such file (ncnn needs the .param and the .bin beside it)")
        self.metadata = read_sidecar(param)
        if config is not None:
            check_metadata(self.metadata, config, param)
        self._ncnn = ncnn
        net = ncnn.Net()
        if threads is None:
            from ..threads import current

            threads = current()  # the process's thread policy, when the CLI set one
        if threads:
            net.opt.num_threads = int(threads)
        if precise:
            net.opt.use_winograd_convolution = False
            net.opt.use_fp16_storage = False
            net.opt.use_fp16_packed = False
            net.opt.use_fp16_arithmetic = False
            net.opt.use_bf16_storage = False
        if net.load_param(str(param)) != 0 or net.load_model(str(weights)) != 0:
            raise BlazefaceError(f"{param}: ncnn could not load this model")
        inputs, outputs = list(net.input_names()), list(net.output_names())
        if len(inputs) != 1 or len(outputs) != 3:
            raise BlazefaceError(f"{param}: expected one input and three outputs, found {len(inputs)} and {len(outputs)}")
        self.input_name = INPUT_NAME if INPUT_NAME in inputs else inputs[0]
        # Our exports name the outputs; raw pnnx output calls them out0..out2 in (loc, conf, landm) order.
        self.output_names = (list(OUTPUT_NAMES) if set(OUTPUT_NAMES) <= set(outputs)
                             else [f"out{k}" for k in range(3)])
        self.net = net
        self.threads = threads
        self.path = param

    def _one(self, image: np.ndarray) -> list[np.ndarray]:
        ex = self.net.create_extractor()
        ex.input(self.input_name, self._ncnn.Mat(np.ascontiguousarray(image, np.float32)))
        out = []
        for name in self.output_names:
            status, mat = ex.extract(name)
            if status != 0:
                raise BlazefaceError(f"{self.path}: ncnn failed to compute {name!r} (status {status})")
            out.append(np.array(mat))
        return out

    def __call__(self, batch: np.ndarray):
        per_image = [self._one(image) for image in batch]
        return tuple(np.stack([outputs[k] for outputs in per_image]) for k in range(3))
