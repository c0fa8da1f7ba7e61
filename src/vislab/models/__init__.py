"""Model registry and model helpers."""

from vislab.models.registry import create_model, register_model, vislab_models

__all__ = ["create_model", "register_model", "vislab_models"]
