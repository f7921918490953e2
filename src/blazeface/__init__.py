"""blazeface: tiny, fast face detectors with five facial landmarks."""
from .config import ModelConfig, PriorConfig, TrainConfig
from .errors import BlazefaceError
from .draw import draw_faces
from .inference import FaceDetector
from .results import Detections, Face
from .models import create_model, get_config, list_models
from .privacy import anonymize
from .alignment import align_face

__version__ = "0.1.0"
__all__ = ["BlazefaceError", "Detections", "Face", "draw_faces", "FaceDetector", "ModelConfig", "PriorConfig", "TrainConfig", "create_model", "get_config",
           "list_models", "anonymize", "align_face"]
