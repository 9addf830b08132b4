"""Pieces of linear attention that its wrappers share with :func:`jaxattn.ops.linear_attention`.

docs/linear_attention.md#one-recurrence. The normaliser as an extra value column, the per-token
decay ``g_t + g_gamma``, and the sign folding that turns signed transitions ``sigma_t exp(g_t)``
into the unsigned recurrence on ``s_t q_t, s_t k_t`` (``s_t = sigma_1 ... sigma_t``; derivation in
:mod:`jaxattn.ops.linear_attention`). Used by the op itself, the sequence-parallel wrapper, the
polynomial tensor attention and the linear-attention layer.
"""

from typing import Optional

import jax
import jax.numpy as jnp


def with_normalizer_column(v: jax.Array) -> jax.Array:
    """``[B, T, H, V] -> [B, T, H, V + 1]``: a last column of ones, whose recurrence is the
    normaliser's ``z_t`` (``scale q_t z_t`` is then the output's last column)."""
    return jnp.concatenate([v, jnp.ones((*v.shape[:3], 1), v.dtype)], axis=-1)


def normalized(o: jax.Array, eps: float) -> jax.Array:
    """``o[..., :V] / (o[..., V] + eps)`` for the outputs of :func:`with_normalizer_column` values."""
    return o[..., :-1] / (o[..., -1:] + eps)


def combined_log_decay(g: Optional[jax.Array], g_gamma: Optional[jax.Array], shape) -> Optional[jax.Array]:
    """Per-token log decay ``g_t + g_gamma`` ``[B, T, H]`` fp32, or None without either."""
    if g is None and g_gamma is None:
        return None
    log_decay = jnp.zeros(shape, jnp.float32)
    log_decay = log_decay + (0.0 if g is None else g.astype(jnp.float32))
    return log_decay + (0.0 if g_gamma is None else g_gamma.astype(jnp.float32))


def transition_sign_parity(g_negative: jax.Array) -> jax.Array:
    """``s_t = sigma_1 ... sigma_t`` ``[B, T, H]`` fp32 (+-1): -1 where an odd number of the
    transitions up to and including token t are negative (a running count mod 2)."""
    odd = jnp.cumsum(g_negative.astype(jnp.int32), axis=1) % 2
    return (1 - 2 * odd).astype(jnp.float32)


def fold_transition_signs(q: jax.Array, k: jax.Array, g_negative: jax.Array):
    """``(s_t q_t, s_t k_t, s_T)``: the unsigned recurrence on these queries and keys, with the
    magnitudes ``exp(g_t)`` as transitions, gives the outputs of the signed one, and its final state
    times ``s_T [B, H]`` is the signed final state (module docstring). Exact: a product with +-1.
    For wrappers that take no signs, such as the sequence-parallel one."""
    parity = transition_sign_parity(g_negative)[..., None]
    flip = lambda a: a * parity.astype(a.dtype)  # noqa: E731
    return flip(q), flip(k), parity[:, -1, :, 0]
