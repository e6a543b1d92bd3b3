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


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """'1 checkpoint', '2 checkpoints', '1,024 tensors'."""
    return f"{n:,} {noun if n == 1 else nouns or noun + 's'}"


def noun(n: int, singular: str, plural_form: str | None = None) -> str:
    """The noun alone, as ``n`` takes it: 'tensor' for 1, else 'tensors'."""
    return singular if n == 1 else plural_form or singular + "s"
