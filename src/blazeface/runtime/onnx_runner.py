"""ONNX Runtime backend (CPU execution provider)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..errors import BlazefaceError
from ..metadata import OUTPUT_NAMES, check_metadata
from ..optional import require


def cpu_session(model: str | Path | bytes, threads: int | None, what: str):
    """An ONNX Runtime session on the CPU for a file (or its bytes): every graph optimisation, ``threads``
    intra-op threads (None: the process's thread policy, :mod:`blazeface.threads`, when it was set, else ONNX
    Runtime's one per core), warnings off. A file it cannot load is a one-line error naming ``what``."""
    ort = require("onnxruntime", "onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is None:
        from ..threads import current

        threads = current()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise BlazefaceError(f"{what}: not a loadable ONNX model ({str(exc).strip().splitlines()[0]})") from None


class OnnxRunner:
    """(N, 3, H, W) float32 batch -> (loc, conf, landm) through an exported ``.onnx``.

    ``threads``: ONNX Runtime's intra-op threads (None: the process's policy, :mod:`blazeface.threads`, when
    it was set, else ONNX Runtime's default of one per core).
    ``config``: when given, the file's metadata must describe this model (name, priors, mean).
    """

    name = "onnx"

    def __init__(self, path: str | Path, threads: int | None = None, config: ModelConfig | None = None):
        path = Path(path)
        if not path.is_file():
            raise BlazefaceError(f"{path}: no such ONNX file")
        self.session = cpu_session(path, threads, str(path))
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        # "int8" for quantized exports (blazeface.export.quantize); files from elsewhere say nothing.
        self.precision = self.metadata.get("precision", "fp32")
        if config is not None:
            check_metadata(self.metadata, config, path)
        inputs = self.session.get_inputs()
        outputs = [o.name for o in self.session.get_outputs()]
        if len(inputs) != 1 or len(outputs) != 3:
            raise BlazefaceError(f"{path}: expected one input and three outputs (loc, conf, landm), "
                                 f"found {len(inputs)} and {len(outputs)}")
        self.input_name = inputs[0].name
        # Named outputs when the file has them, else positional (loc, conf, landm).
        self.output_names = list(OUTPUT_NAMES) if set(OUTPUT_NAMES) <= set(outputs) else outputs
        self.path = path

    def __call__(self, batch: np.ndarray):
        loc, conf, landm = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(batch, np.float32)})
        return loc, conf, landm
