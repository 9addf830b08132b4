"""Argument checks shared by the public ops, so that each mistake is refused in the same words
everywhere: a wrong rank never passes as another layout (a ``[T, D]`` array read as ``[B, T]``)."""

from typing import Any


def require_rank(op: str, name: str, x: Any, layout: str, hint: str = "") -> None:
    """Raises ``ValueError`` unless ``x`` has the axes ``layout`` names, e.g. ``"B, T, H, D"``;
    a trailing ``"..."`` (``"B, T, D, ..."``) admits more axes after the named ones.

    ``hint`` is appended to the message (how to fix a common mistake).
    """
    axes = [axis.strip() for axis in layout.split(",")]
    variadic = axes[-1] == "..."
    named = len(axes) - variadic
    ndim = len(getattr(x, "shape", ()))
    if ndim < named or (ndim > named and not variadic):
        raise ValueError(f"{op}: `{name}` must be [{layout}], got shape {tuple(getattr(x, 'shape', ()))}"
                         + (f"; {hint}" if hint else ""))
