"""Every user-facing default in one place: the library's keyword arguments and the CLI's flags read them
from here, so a default changes in one line."""
from __future__ import annotations

# Detection: resize the long side to this many pixels (0: keep the image size).
LONG_SIDE = 640
CONF = 0.5  # keep candidates with face score > CONF (detect's display threshold)
NMS = 0.4  # suppress a box whose IoU with a better kept box is > NMS
TOP_K = 5000  # best candidates entering NMS
KEEP_TOP_K = 750  # detections kept after NMS
# Each detection's landmarks: the score-weighted mean over the candidates scoring > LANDMARK_VOTERS whose box
# overlaps its box by IoU > LANDMARK_VOTE (the same face seen by neighbouring priors), itself included; None: its
# own prior's only. Boxes and scores are NMS's either way. The voters do not depend on ``conf``, so a face's
# landmarks are the same at every display threshold (the web page's slider re-runs only the post-processing).
LANDMARK_VOTE = 0.7
LANDMARK_VOTERS = 0.5
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
