"""Human-readable sizes and shapes: what a finding's message and the renderers print."""

from __future__ import annotations


def human_bytes(n: int | None) -> str:
    """Decimal units, as model cards and `du --si` use: 16.58 GB, 121.6 MB, 512 B."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{n} B" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def human_shape(shape: tuple[int, ...] | list[int] | None) -> str:
    if shape is None:
        return "?"
    return "[" + ", ".join(str(d) for d in shape) + "]"
