"""The model zoo. Importing the family modules registers them."""
from . import blaze, retinaface, slim  # noqa: F401  (registration side effects)
from .registry import create_model, get_config, list_models, model_name_for, register_model, resolve_weights, shipped_weights

__all__ = ["create_model", "get_config", "list_models", "model_name_for", "register_model", "resolve_weights", "shipped_weights"]
