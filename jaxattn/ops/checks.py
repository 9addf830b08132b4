"""Argument checks shared by the public ops, so that each mistake is refused in the same words
everywhere: a wrong rank never passes as another layout (a ``[T, D]`` array read as ``[B, T]``),
an empty sequence or a float segment id never reaches the math as an ``IndexError`` or a silent mask.

Every check raises ``ValueError`` (shape, value) or ``TypeError`` (dtype, Python type) with a message
``"{op}: `{name}` must be ..., got ..."``.

See docs/ops.md#validation.
"""

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np


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


def require_floating(op: str, name: str, x: Any, *, complex_ok: bool = False) -> None:
    """Raises ``TypeError`` unless ``x`` has a floating (or, with ``complex_ok``, complex) dtype."""
    dtype = jnp.result_type(x)
    if jnp.issubdtype(dtype, jnp.floating) or (complex_ok and jnp.issubdtype(dtype, jnp.complexfloating)):
        return
    kind = "real or complex floating" if complex_ok else "floating point"
    raise TypeError(f"{op}: `{name}` must be {kind}, got {dtype}")


def require_nonempty(op: str, name: str, length: int, axis: str = "T") -> None:
    """Raises ``ValueError`` for a sequence of length 0 (the scans and blocked paths index its ends)."""
    if length < 1:
        raise ValueError(f"{op}: `{name}` is an empty sequence ({axis} = 0); pass at least one step")


def require_positive_int(op: str, name: str, value: Any) -> None:
    """Raises ``ValueError`` unless ``value`` is a Python int >= 1 (not a bool)."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{op}: `{name}` must be a positive int, got {value!r}")


def require_scale(op: str, scale: Any) -> None:
    """Raises ``TypeError`` unless ``scale`` is None or a Python number (it is a static factor)."""
    if scale is not None and (not isinstance(scale, (int, float, np.number)) or isinstance(scale, bool)):
        raise TypeError(f"{op}: `scale` must be a Python number, got {type(scale).__name__}")


def require_segment_ids(op: str, segment_ids: Optional[jax.Array], shape: tuple, layout: str = "B, T",
                        name: str = "segment_ids") -> None:
    """Raises unless ``segment_ids`` (if given; called ``name`` in messages) are integers (or bools)
    of ``shape`` ``[layout]``.

    Float ids are refused: equality of floats is a fragile way to say "same sequence".
    """
    if segment_ids is None:
        return
    if jnp.shape(segment_ids) != tuple(shape):
        raise ValueError(f"{op}: `{name}` must be [{layout}] = {tuple(shape)}, got {jnp.shape(segment_ids)}")
    dtype = jnp.result_type(segment_ids)
    if not (jnp.issubdtype(dtype, jnp.integer) or dtype == jnp.bool_):
        raise TypeError(f"{op}: `{name}` must be integers (one id per packed sequence), got {dtype}")


def concrete_or_none(x: Any) -> Optional[np.ndarray]:
    """``x`` as a NumPy array when its values are known now, None under a trace (``jax.jit``): value
    checks run eagerly and are skipped, not faked, inside a compiled function."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def require_lengths(op: str, name: str, lengths: jax.Array, batch: int, maximum: int) -> None:
    """Raises unless ``lengths`` are ``[B]`` integers in ``[0, maximum]`` (values checked when concrete)."""
    if jnp.shape(lengths) != (batch,):
        raise ValueError(f"{op}: `{name}` must be [B] = {(batch,)}, got {jnp.shape(lengths)}")
    if not jnp.issubdtype(jnp.result_type(lengths), jnp.integer):
        raise TypeError(f"{op}: `{name}` must be integers, got {jnp.result_type(lengths)}")
    values = concrete_or_none(lengths)
    if values is not None and values.size and (values.min() < 0 or values.max() > maximum):
        raise ValueError(f"{op}: `{name}` must lie in [0, {maximum}] (the sequence's length), got "
                         f"{values.min()} .. {values.max()}")
