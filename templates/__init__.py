"""Jinja2 prompt text (*.jinja) and the one small renderer."""
from .render import BUILTIN, Renderer

__all__ = ["BUILTIN", "Renderer"]
