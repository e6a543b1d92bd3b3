"""Sizes and shapes as the renderers print them (the same formatting the findings' messages
use: :mod:`pyaudit.units`)."""

from __future__ import annotations

from pyaudit.units import human_bytes, human_shape, plural

__all__ = ["human_bytes", "human_shape", "plural"]
