"""Hedgehog's attention distillation loss (Zhang et al. 2024; docs/linear_attention.md#hedgehog).

Cross-entropy between a softmax teacher's attention weights and a linear attention's normalised
weights over the same queries and keys, averaged over batch, heads and queries:

    A = softmax(scale q k^T + mask),   W = (phi(q) phi(k)^T .* M) / rowsum,
    loss = -mean_{b,h,i} sum_j A_ij log W_ij.

Shapes: ``q, k [B, T, H, D]`` (the teacher's, after any rotary embedding), ``phi_q, phi_k
[B, T, H, F]`` (positive features). Quadratic in T: meant for the short distillation sequences.
"""

import jax
import jax.numpy as jnp

from jaxattn.ops.checks import require_rank
from jaxattn.ops.softmax_attention import softmax_attention_weights


def attention_distillation_loss(
    q: jax.Array, k: jax.Array, phi_q: jax.Array, phi_k: jax.Array, *, causal: bool = True, scale=None, eps: float = 1e-6
) -> jax.Array:
    """Scalar loss; zero only if the linear weights equal the teacher's (its entropy aside).

    Args:
      q, k: the teacher's queries and keys ``[B, T, H, D]``.
      phi_q, phi_k: the student's positive features ``[B, T, H, F]``.
      causal: both attend to ``j <= i`` only.
      scale: the teacher's, default ``D ** -0.5``.
      eps: keeps the student's normaliser and log finite.

    Example::

        q = k = jnp.ones((2, 16, 4, 8))  # [B, T, H, D]
        loss = attention_distillation_loss(q, k, jax.nn.elu(q) + 1, jax.nn.elu(k) + 1)
    """
    for name, a, layout in (("q", q, "B, T, H, D"), ("k", k, "B, T, H, D"), ("phi_q", phi_q, "B, T, H, F"),
                            ("phi_k", phi_k, "B, T, H, F")):
        require_rank("attention_distillation_loss", name, a, layout)
    if q.shape != k.shape or phi_q.shape != phi_k.shape or q.shape[:3] != phi_q.shape[:3]:
        raise ValueError(
            f"attention_distillation_loss: need q, k [B, T, H, D] and phi_q, phi_k [B, T, H, F]; got "
            f"{q.shape}, {k.shape}, {phi_q.shape}, {phi_k.shape}"
        )
    teacher = jax.lax.stop_gradient(softmax_attention_weights(q, k, scale=scale, causal=causal))
    scores = jnp.einsum("bihf,bjhf->bhij", phi_q.astype(jnp.float32), phi_k.astype(jnp.float32))
    if causal:
        scores = jnp.tril(scores)
    student = scores / (jnp.sum(scores, axis=-1, keepdims=True) + eps)
    # Pairs the teacher gives no weight (masked) contribute 0; the inner where keeps log (and its
    # gradient) finite there.
    log_student = jnp.log(jnp.where(teacher > 0, student + eps, 1.0))
    return -jnp.mean(jnp.sum(teacher * log_student, axis=-1))
