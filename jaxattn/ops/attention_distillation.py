"""Hedgehog's attention distillation loss (Zhang et al. 2024; docs/linear_attention.md#hedgehog).

Cross-entropy between a softmax teacher's attention weights and a linear attention's normalised
weights over the same queries and keys, averaged over batch, heads and queries:

    A = softmax(scale q k^T + mask),   W = (phi(q) phi(k)^T .* M) / rowsum,
    loss = -mean_{b,h,i} sum_j A_ij log W_ij.

Shapes: ``q, k [B, T, H, D]`` (the teacher's, after any rotary embedding), ``phi_q, phi_k
[B, T, H, F]`` (positive features). Quadratic in T: meant for the short distillation sequences.

``impl="xla"`` (the default, by ``"auto"``) works on whole ``[B, H, T, T]`` weight matrices;
``impl="reference"`` builds each query's teacher and student weights from the definition, in fp32
at HIGHEST precision, the oracle. The teacher is a fixed target: no gradient reaches ``q`` or ``k``.
"""

import jax
import jax.numpy as jnp

from jaxattn.ops.checks import require_nonempty, require_rank
from jaxattn.ops.dispatch import resolve_impl
from jaxattn.ops.softmax_attention import softmax_attention_weights


def _loss_xla(q, k, phi_q, phi_k, causal, scale, eps):
    teacher = jax.lax.stop_gradient(softmax_attention_weights(q, k, scale=scale, causal=causal))
    scores = jnp.einsum("bihf,bjhf->bhij", phi_q.astype(jnp.float32), phi_k.astype(jnp.float32))
    if causal:
        scores = jnp.tril(scores)
    student = scores / (jnp.sum(scores, axis=-1, keepdims=True) + eps)
    # Pairs the teacher gives no weight (masked) contribute 0; the inner where keeps log (and its
    # gradient) finite there.
    log_student = jnp.log(jnp.where(teacher > 0, student + eps, 1.0))
    return -jnp.mean(jnp.sum(teacher * log_student, axis=-1))


def _loss_reference(q, k, phi_q, phi_k, causal, scale, eps):
    """For each query ``i`` (of each batch row and head), over the keys ``j`` it may see (``j <= i``
    when causal): ``A_ij = exp(a_ij - max_j a_ij) / sum_j exp(...)`` with ``a_ij = scale q_i . k_j``,
    ``W_ij = phi(q_i) . phi(k_j) / (sum_j phi(q_i) . phi(k_j) + eps)``, and the query's loss
    ``-sum_j A_ij log(W_ij + eps)``; the mean over all queries."""
    q, k, phi_q, phi_k = (jnp.moveaxis(a.astype(jnp.float32), 2, 1) for a in (q, k, phi_q, phi_k))  # [B, H, T, .]
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    length = q.shape[2]

    def query_loss(q_i, phi_q_i, keys, phi_keys, i):  # one query: [D], [F], [T, D], [T, F]
        visible = jnp.arange(length) <= i if causal else jnp.ones(length, bool)
        logits = jnp.where(visible, scale * jnp.matmul(keys, q_i, precision=jax.lax.Precision.HIGHEST), -jnp.inf)
        numerators = jnp.where(visible, jnp.exp(logits - jnp.max(logits)), 0.0)
        teacher = jax.lax.stop_gradient(numerators / jnp.sum(numerators))
        similarities = jnp.where(visible, jnp.matmul(phi_keys, phi_q_i, precision=jax.lax.Precision.HIGHEST), 0.0)
        student = similarities / (jnp.sum(similarities) + eps)
        # Keys the query cannot see contribute 0; the inner where keeps log (and its gradient) finite there.
        return -jnp.sum(jnp.where(visible, teacher * jnp.log(jnp.where(visible, student + eps, 1.0)), 0.0))

    over_queries = jax.vmap(query_loss, in_axes=(0, 0, None, None, 0))  # [T] queries of one head
    over_heads = jax.vmap(jax.vmap(over_queries, in_axes=(0, 0, 0, 0, None)), in_axes=(0, 0, 0, 0, None))
    return jnp.mean(over_heads(q, phi_q, k, phi_k, jnp.arange(length)))


_IMPLEMENTATIONS = {"reference": _loss_reference, "xla": _loss_xla}


def attention_distillation_loss(
    q: jax.Array, k: jax.Array, phi_q: jax.Array, phi_k: jax.Array, *, causal: bool = True, scale=None,
    eps: float = 1e-6, impl: str = "auto",
) -> jax.Array:
    """Scalar loss; zero only if the linear weights equal the teacher's (its entropy aside).

    Args:
      q, k: the teacher's queries and keys ``[B, T, H, D]``.
      phi_q, phi_k: the student's positive features ``[B, T, H, F]``.
      causal: both attend to ``j <= i`` only.
      scale: the teacher's, default ``D ** -0.5``.
      eps: keeps the student's normaliser and log finite.
      impl: ``"xla"`` (whole weight matrices; ``"auto"``) or ``"reference"`` (query by query).

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
    require_nonempty("attention_distillation_loss", "q", q.shape[1])
    return resolve_impl("attention_distillation_loss", impl, _IMPLEMENTATIONS)(q, k, phi_q, phi_k, causal, scale, eps)
