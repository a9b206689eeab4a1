"""Base-model resolution: presets, .gguf files, local directories, hub ids."""
from .adapters import check_adapter, load_policy, stack_adapters, stack_into
from .resolve import PRESETS, load_model, resolve_model

__all__ = ["PRESETS", "check_adapter", "load_model", "load_policy", "resolve_model", "stack_adapters",
           "stack_into"]
