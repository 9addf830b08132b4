"""Rotary position embedding (RoPE, Su et al. 2021): rotate feature pairs by position-dependent angles.

For pairs ``(x_i, x_{i + D/2})`` and frequencies ``theta_i = base^(-2i/D)``:
``(x_i cos(p theta_i) - x_{i+D/2} sin(p theta_i), x_{i+D/2} cos(p theta_i) + x_i sin(p theta_i))``,
so ``rope(q, m) . rope(k, n)`` depends on ``m - n`` only.

Implementations:
  * ``"reference"``: each pair as the complex number ``x_i + i x_{i+D/2}`` times ``exp(i p theta_i)``.
  * ``"xla"``: the cosines and sines written out (real arithmetic only).

See docs/ops.md#short-convolution-and-rotary-positions.
"""

import jax
import jax.numpy as jnp

from jaxattn.ops.checks import require_floating, require_nonempty, require_rank
from jaxattn.ops.dispatch import resolve_impl


def _angles(positions: jax.Array, half: int, base: float) -> jax.Array:
    """``[B or 1, T, 1, D/2]`` angles ``p theta_i``."""
    frequencies = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = jnp.asarray(positions, jnp.float32)[..., None] * frequencies  # [(B,) T, D/2]
    return (angles[None] if angles.ndim == 2 else angles)[:, :, None, :]


def _reference(x, positions, base):
    half = x.shape[-1] // 2
    pairs = jax.lax.complex(x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32))
    rotated = pairs * jnp.exp(1j * _angles(positions, half, base))
    return jnp.concatenate([rotated.real, rotated.imag], axis=-1)


def _xla(x, positions, base):
    half = x.shape[-1] // 2
    angles = _angles(positions, half, base)
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    first, second = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)


_IMPLEMENTATIONS = {"reference": _reference, "xla": _xla}


def apply_rotary(x: jax.Array, positions: jax.Array, *, base: float = 10_000.0, impl: str = "auto") -> jax.Array:
    """Rotates the feature pairs ``(x_i, x_{i + D/2})`` of each token by ``positions * theta_i``.

    Args:
      x: queries or keys ``[B, T, H, D]``, D even.
      positions: ``[B, T]`` or ``[T]`` token positions (ints or floats).
      base: ``theta_i = base^(-2i/D)``.
      impl: ``"reference"``, ``"xla"`` or ``"auto"`` (xla).

    Returns:
      the rotated ``x`` ``[B, T, H, D]`` in ``x``'s dtype (computed in fp32).

    Example::

        q = jnp.ones((2, 16, 4, 32))  # [B, T, H, D]
        q = apply_rotary(q, jnp.arange(16))
    """
    require_rank("apply_rotary", "x", x, "B, T, H, D")
    require_floating("apply_rotary", "x", x)
    require_nonempty("apply_rotary", "x", x.shape[1])
    if x.shape[-1] % 2:
        raise ValueError(f"apply_rotary: `x` must be [B, T, H, D] with even D, got {x.shape}")
    if jnp.shape(positions) not in (x.shape[1:2], x.shape[:2]):
        raise ValueError(f"apply_rotary: `positions` must be [B, T] = {x.shape[:2]} or [T], got {jnp.shape(positions)}")
    rotate = resolve_impl("apply_rotary", impl, _IMPLEMENTATIONS)
    return rotate(x, positions, base).astype(x.dtype)
