"""Optional dependencies (onnx, onnxruntime, ncnn, pnnx, ...): imported on first use, or a one-line error
naming the package extra that provides them."""
from __future__ import annotations

import importlib

from .errors import BlazefaceError


def require(module: str, extra: str):
    """Import an optional dependency, or fail in one line naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise BlazefaceError(f"this needs the optional package {module!r}: pip install 'blazeface[{extra}]'") from None
