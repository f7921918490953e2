"""Periodic dev evaluation during training: WIDER FACE AP of the EMA weights at a small test scale."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch import nn

from ..evaluation.widerface import (evaluate_predictions, find_image_keys, load_ground_truth, predict_folder,
                                    read_image_list)
from ..defaults import NMS
from ..inference import FaceDetector
from ..runtime import TorchRunner


def make_dev_evaluator(model_name: str, images_dir: Path, gt_dir: Path, list_file: Path | None = None,
                       long_side: int = 320) -> Callable[[nn.Module], dict]:
    """-> ``evaluate(module) -> {"easy", "medium", "hard", "images"}`` (ground truth loaded once)."""
    gt = load_ground_truth(gt_dir)
    keys = read_image_list(list_file, gt) if list_file else find_image_keys(images_dir, gt)

    def evaluate(module: nn.Module) -> dict:
        detector = FaceDetector(model_name, runner=TorchRunner(module), long_side=long_side, conf=0.01, nms=NMS)
        predictions = predict_folder(detector, images_dir, keys, progress=False)
        result = evaluate_predictions(predictions, gt).to_dict()
        result["long_side"] = long_side
        return result

    return evaluate
