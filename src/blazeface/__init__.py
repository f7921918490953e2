"""blazeface: tiny, fast face detectors with five facial landmarks."""
from .config import ModelConfig, PriorConfig, TrainConfig
from .errors import BlazefaceError
from .draw import draw_faces
from .inference import FaceDetector
from .results import Detections, Face
from .models import create_model, get_config, list_models
from .privacy import anonymize
from .alignment import align_face
from .version import __version__

__all__ = ["BlazefaceError", "Detections", "Face", "FaceDetector", "ModelConfig", "PriorConfig", "TrainConfig",
           "__version__", "align_face", "anonymize", "create_model", "draw_faces", "get_config", "list_models"]
