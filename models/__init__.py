"""Base-model resolution: presets, .gguf files, local directories, hub ids."""
from .resolve import PRESETS, load_model, resolve_model

__all__ = ["PRESETS", "load_model", "resolve_model"]
