"""Evaluation: WIDER FACE easy / medium / hard AP (the official protocol, in numpy) and landmark NME."""
from .landmarks import LandmarkResult, evaluate_landmarks
from .widerface import (GroundTruth, WiderFaceResult, evaluate_predictions, load_ground_truth, predict_folder,
                        read_image_list, read_predictions, write_predictions)

__all__ = ["GroundTruth", "LandmarkResult", "WiderFaceResult", "evaluate_landmarks", "evaluate_predictions",
           "load_ground_truth", "predict_folder", "read_image_list", "read_predictions", "write_predictions"]
