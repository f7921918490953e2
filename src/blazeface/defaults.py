"""Every user-facing default in one place: the library's keyword arguments and the CLI's flags read them
from here, so a default changes in one line."""
from __future__ import annotations

# Detection: resize the long side to this many pixels (0: keep the image size).
LONG_SIDE = 640
CONF = 0.5  # keep candidates with face score > CONF (detect's display threshold)
NMS = 0.4  # suppress a box whose IoU with a better kept box is > NMS
TOP_K = 5000  # best candidates entering NMS
KEEP_TOP_K = 750  # detections kept after NMS
BATCH_SIZE = 8  # images per forward pass in detect_batch

MODEL = "blaze"  # when neither the caller nor the weights file names one
# The registered models, for the CLI's help, which must not import torch to print (tests check this list
# against the registry).
MODELS = ("blaze", "blazelite", "slim", "slimlite", "rfb", "mnet")

# Inference backends, and the fallback when neither the caller nor the weights file decides and ONNX Runtime
# is not installed (backends.default_backend picks onnx when it is).
BACKENDS = ("torch", "onnx", "ncnn")
BACKEND = "torch"
# Weights-file suffixes that name their backend (a checkpoint, .pth, runs on any).
BACKEND_SUFFIXES = {".onnx": "onnx", ".param": "ncnn", ".bin": "ncnn"}
