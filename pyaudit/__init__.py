"""pyaudit: audit ML model checkpoints without loading a single weight."""

from __future__ import annotations

__version__ = "0.1.0"
