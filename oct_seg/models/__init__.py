"""The six networks, their building blocks and the name registry.

Importing this package registers every custom layer for `.keras` loading.
"""
from oct_seg.models import blocks, transformer  # noqa: F401  (registers custom layers)
from oct_seg.models.registry import MODELS, PRESETS, build_model

__all__ = ["MODELS", "PRESETS", "build_model"]
