"""Rotary position embedding (RoPE, Su et al. 2021): rotate feature pairs by position-dependent angles.

For pairs ``(x_i, x_{i + D/2})`` and frequencies ``theta_i = base^(-2i/D)``:
``(x_i cos(p theta_i) - x_{i+D/2} sin(p theta_i), x_{i+D/2} cos(p theta_i) + x_i sin(p theta_i))``,
so ``rope(q, m) . rope(k, n)`` depends on ``m - n`` only.
"""

import jax
import jax.numpy as jnp

from jaxattn.ops.checks import require_rank


def apply_rotary(x: jax.Array, positions: jax.Array, *, base: float = 10_000.0) -> jax.Array:
    """``x [B, T, H, D]`` (D even), ``positions [B, T]`` or ``[T]`` -> rotated ``x``."""
    require_rank("apply_rotary", "x", x, "B, T, H, D")
    if x.shape[-1] % 2:
        raise ValueError(f"apply_rotary: `x` must be [B, T, H, D] with even D, got {x.shape}")
    if jnp.shape(positions) not in (x.shape[1:2], x.shape[:2]):
        raise ValueError(f"apply_rotary: `positions` must be [B, T] = {x.shape[:2]} or [T], got {jnp.shape(positions)}")
    half = x.shape[-1] // 2
    frequencies = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = jnp.asarray(positions, jnp.float32)[..., None] * frequencies  # [(B,) T, D/2]
    if angles.ndim == 2:
        angles = angles[None]
    cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]
    first, second = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
    return rotated.astype(x.dtype)
