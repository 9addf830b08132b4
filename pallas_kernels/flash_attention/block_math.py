"""Per-block mathematics of flash attention (online softmax), shared by the TPU and Triton kernels.

A query block ``q [bq, D]`` meets a key block ``k [bk, D], v [bk, Dv]``; ``keep [bq, bk]`` says
which pairs may attend (causal, same segment, key inside the sequence). Row statistics are
columns ``[bq, 1]``. Forward (Dao et al., FlashAttention-2), per key block:

    ``s = scale q k^T`` (masked), ``m' = max(m, rowmax s)``, ``p = exp(s - m')``,
    ``l' = e^(m - m') l + rowsum p``, ``acc' = e^(m - m') acc + p v``;  finally
    ``o = acc / l``, ``lse = m + log l``.

Backward with ``P = exp(s - lse)`` and ``delta = rowsum(dO .* O)``:
    ``dV += P^T dO``, ``dP = dO V^T``, ``dS = P .* (dP - delta)``,
    ``dQ += scale dS K``, ``dK += scale dS^T Q``.

See docs/softmax_attention.md#flash-attention.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.dot import dot

_F32 = jnp.float32
# Finite, so that a row with every key masked so far gives exp(0), not exp(-inf + inf) = NaN;
# the correction factor exp(m - m') = 0 removes those terms once a real key arrives.
MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)


class Positions(NamedTuple):
    """Where a (query block, key block) pair sits: first query and key positions, the causal offset
    (query i sees keys ``j <= i + offset``; None: not causal), the number of real keys, and the
    segment ids of the block's queries ``[bq, 1]`` and keys ``[1, bk]`` (or None)."""

    q_start: jax.Array
    k_start: jax.Array
    causal_offset: object
    num_keys: int
    q_segments: object = None
    k_segments: object = None


def keep_mask(pos: Positions, block_q: int, block_k: int) -> jax.Array:
    """``[bq, bk]`` bool: pairs that may attend."""
    rows = pos.q_start + jax.lax.broadcasted_iota(jnp.int32, (block_q, block_k), 0)
    cols = pos.k_start + jax.lax.broadcasted_iota(jnp.int32, (block_q, block_k), 1)
    keep = cols < pos.num_keys
    if pos.causal_offset is not None:
        keep = keep & (cols <= rows + pos.causal_offset)
    if pos.q_segments is not None:
        keep = keep & (pos.q_segments == pos.k_segments)
    return keep


def scores(q, k, keep, scale: float) -> jax.Array:
    """``scale q k^T`` ``[bq, bk]`` fp32 with masked pairs at :data:`MASK_VALUE`."""
    return jnp.where(keep, scale * dot(q, k, (1, 1)), MASK_VALUE)


class SoftmaxCarry(NamedTuple):
    """Running row maximum ``m [bq, 1]``, row sum ``l [bq, 1]`` and output accumulator ``acc [bq, Dv]``."""

    m: jax.Array
    l: jax.Array  # noqa: E741
    acc: jax.Array


def initial_carry(block_q: int, value_dim: int) -> SoftmaxCarry:
    return SoftmaxCarry(
        jnp.full((block_q, 1), MASK_VALUE, _F32), jnp.zeros((block_q, 1), _F32), jnp.zeros((block_q, value_dim), _F32)
    )


def online_softmax_step(carry: SoftmaxCarry, s: jax.Array, v: jax.Array) -> SoftmaxCarry:
    m = jnp.maximum(carry.m, jnp.max(s, axis=1, keepdims=True))
    correction = jnp.exp(carry.m - m)
    p = jnp.exp(s - m)
    l = correction * carry.l + jnp.sum(p, axis=1, keepdims=True)  # noqa: E741
    return SoftmaxCarry(m, l, correction * carry.acc + dot(p.astype(v.dtype), v))


def finish(carry: SoftmaxCarry) -> tuple[jax.Array, jax.Array]:
    """``(o [bq, Dv], lse [bq, 1])``."""
    return carry.acc / carry.l, carry.m + jnp.log(carry.l)


def probabilities_and_score_gradient(q, k, v, do, lse, delta, keep, scale: float):
    """``(P, dS)`` ``[bq, bk]`` fp32 of one block pair (masked pairs exactly 0)."""
    p = jnp.where(keep, jnp.exp(scores(q, k, keep, scale) - lse), 0.0)
    dp = dot(do, v, (1, 1))
    return p, p * (dp - delta)


def dq_step(dq, q, k, v, do, lse, delta, keep, scale: float):
    """``dQ += scale dS K``."""
    _, ds = probabilities_and_score_gradient(q, k, v, do, lse, delta, keep, scale)
    return dq + scale * dot(ds.astype(k.dtype), k)


def dkv_step(dk, dv, q, k, v, do, lse, delta, keep, scale: float):
    """``dK += scale dS^T Q``, ``dV += P^T dO``."""
    p, ds = probabilities_and_score_gradient(q, k, v, do, lse, delta, keep, scale)
    return dk + scale * dot(ds.astype(q.dtype), q, (0, 0)), dv + dot(p.astype(do.dtype), do, (0, 0))
