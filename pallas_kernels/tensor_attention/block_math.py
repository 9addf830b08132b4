"""Per-tile mathematics of exact 2-simplicial (tensor) attention, shared by the TPU and Triton kernels.

A tile is a query block ``i`` (``bi`` tokens), a k1 block ``j`` (``bj``) and a k2 block ``k``
(``bk``). Its pairs ``(i, j)`` are the rows of ``[bi * bj, .]`` matrices, row ``i * bj + j``:

    ``pairs = q_i .* k1_j`` ``[bi * bj, D]``,  ``s = scale pairs k2^T`` ``[bi * bj, bk]`` (one matmul),

viewed as ``[bi, bj, bk]`` for the per-query statistics, which run over both ``j`` and ``k``.
``keep [bi, bj, bk]`` says which triples may attend. Row statistics are columns ``[bi, 1]``.
Forward (online softmax over the pairs), per tile:

    ``m' = max(m, max_{j,k} s)``, ``p = exp(s - m')``, ``l' = e^(m - m') l + sum_{j,k} p``,
    ``acc' = e^(m - m') acc + sum_j (p V2)_(i,j) .* v1_j``;  finally ``o = acc / l``, ``lse = m + log l``
    (``o = 0`` for a row that saw no pair).

Backward with ``P = exp(s - lse)``, ``delta = rowsum(dO .* O)`` and ``dov1 = dO_i .* v1_j`` ``[bi * bj, Dv]``:
    ``dP = dov1 V2^T``, ``dS = P .* (dP - delta)``, ``dsk2 = dS K2`` ``[bi * bj, D]``,
    ``dq_i += scale sum_j dsk2 .* k1_j``, ``dk1_j += scale sum_i dsk2 .* q_i``,
    ``dv1_j += sum_i (P V2) .* dO_i``, ``dk2 += scale dS^T pairs``, ``dv2 += P^T dov1``.

See docs/tensor_attention.md#the-streaming-algorithm.
"""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.dot import dot

_F32 = jnp.float32
# Finite, so that a row with every pair masked so far gives exp(0), not exp(-inf + inf) = NaN;
# the correction factor exp(m - m') = 0 removes those terms once a visible pair arrives.
MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)


class Positions(NamedTuple):
    """Where a tile sits: its first query, k1 and k2 positions, the number of real tokens, and the
    mask: ``causal`` (``j, k <= i``) and ``window`` ``(w1, w2)`` (``i - w1 < j``, ``i - w2 < k``; needs causal)."""

    i_start: jax.Array
    j_start: jax.Array
    k_start: jax.Array
    length: int
    causal: bool
    window: Optional[tuple[int, int]]


def _visible(query, key, length, causal, width):
    keep = key < length
    if causal:
        keep = keep & (key <= query)
    if width is not None:
        keep = keep & (key > query - width)
    return keep


def keep_mask(pos: Positions, block_i: int, block_j: int, block_k: int) -> jax.Array:
    """``[bi, bj, bk]`` bool: may query i attend to the pair (j, k)? The mask factorises into a
    k1 part ``[bi, bj, 1]`` and a k2 part ``[bi, 1, bk]``."""
    w1, w2 = pos.window if pos.window is not None else (None, None)
    iota = lambda shape, axis: jax.lax.broadcasted_iota(jnp.int32, shape, axis)  # noqa: E731
    by_j, by_k = (block_i, block_j, 1), (block_i, 1, block_k)
    keep_j = _visible(pos.i_start + iota(by_j, 0), pos.j_start + iota(by_j, 1), pos.length, pos.causal, w1)
    keep_k = _visible(pos.i_start + iota(by_k, 0), pos.k_start + iota(by_k, 2), pos.length, pos.causal, w2)
    return keep_j & keep_k


def pair_products(a: jax.Array, b: jax.Array, dtype) -> jax.Array:
    """``[bi, d] x [bj, d] -> [bi * bj, d]``: row ``i * bj + j`` is ``a_i .* b_j`` (fp32 product, cast to ``dtype``)."""
    return (a.astype(_F32)[:, None, :] * b.astype(_F32)[None, :, :]).reshape(-1, a.shape[-1]).astype(dtype)


def _by_query(x: jax.Array, block_i: int) -> jax.Array:
    """``[bi * bj, w] -> [bi, bj, w]``."""
    return x.reshape(block_i, -1, x.shape[-1])


def sum_over_j(x: jax.Array, b: jax.Array, block_i: int) -> jax.Array:
    """``sum_j x_(i,j) .* b_j`` ``[bi, w]`` of ``x [bi * bj, w]`` and ``b [bj, w]``."""
    return jnp.sum(_by_query(x, block_i) * b.astype(_F32)[None, :, :], axis=1)


def sum_over_i(x: jax.Array, a: jax.Array) -> jax.Array:
    """``sum_i x_(i,j) .* a_i`` ``[bj, w]`` of ``x [bi * bj, w]`` and ``a [bi, w]``."""
    return jnp.sum(_by_query(x, a.shape[0]) * a.astype(_F32)[:, None, :], axis=0)


def _row_reduce(reduce, x3: jax.Array) -> jax.Array:
    """``[bi, bj, bk] -> [bi, 1]`` over the pairs of each query: over j, then over k (the other
    order needs a sublane gather that TPU v4 lacks)."""
    return reduce(reduce(x3, axis=1), axis=1, keepdims=True)


def scores(q, k1, k2, scale: float) -> tuple[jax.Array, jax.Array]:
    """``(pairs [bi * bj, D], s [bi, bj, bk])``: the pair products and ``scale pairs k2^T`` fp32 (unmasked)."""
    pairs = pair_products(q, k1, k2.dtype)
    return pairs, scale * _by_query(dot(pairs, k2, (1, 1)), q.shape[0])


class SoftmaxCarry(NamedTuple):
    """Running row maximum ``m [bi, 1]``, row sum ``l [bi, 1]`` and output accumulator ``acc [bi, Dv]``."""

    m: jax.Array
    l: jax.Array  # noqa: E741
    acc: jax.Array


def initial_carry(block_i: int, value_dim: int) -> list[tuple[tuple[int, ...], float]]:
    """``[(shape, fill)]`` of the :class:`SoftmaxCarry` fields."""
    return [((block_i, 1), MASK_VALUE), ((block_i, 1), 0.0), ((block_i, value_dim), 0.0)]


def online_softmax_step(carry: SoftmaxCarry, q, k1, k2, v1, v2, keep, scale: float) -> SoftmaxCarry:
    block_i = q.shape[0]
    s = jnp.where(keep, scores(q, k1, k2, scale)[1], MASK_VALUE)
    m = jnp.maximum(carry.m, _row_reduce(jnp.max, s))
    correction = jnp.exp(carry.m - m)
    p = jnp.exp(s - m[:, :, None])
    l = correction * carry.l + _row_reduce(jnp.sum, p)  # noqa: E741
    p_v2 = dot(p.reshape(-1, p.shape[-1]).astype(v2.dtype), v2)  # [bi * bj, Dv]
    return SoftmaxCarry(m, l, correction * carry.acc + sum_over_j(p_v2, v1, block_i))


def finish(carry: SoftmaxCarry) -> tuple[jax.Array, jax.Array]:
    """``(o [bi, Dv], lse [bi, 1])``; a row that saw no visible pair (its maximum never rose above
    :data:`MASK_VALUE`, or no tile ran) gives ``o = 0`` and ``lse = MASK_VALUE``."""
    seen = carry.m > MASK_VALUE
    l = jnp.where(seen, carry.l, 1.0)  # noqa: E741
    return jnp.where(seen, carry.acc / l, 0.0), jnp.where(seen, carry.m + jnp.log(l), MASK_VALUE)


class TileGradients(NamedTuple):
    """A tile's recomputed ``pairs [bi * bj, D]`` and ``dov1 [bi * bj, Dv]`` (in the operand
    dtypes), and ``P``, ``dS`` ``[bi * bj, bk]`` fp32 (masked triples exactly 0)."""

    pairs: jax.Array
    dov1: jax.Array
    p: jax.Array
    ds: jax.Array


def tile_gradients(q, k1, k2, v1, v2, do, lse, delta, keep, scale: float) -> TileGradients:
    pairs, s = scores(q, k1, k2, scale)
    p = jnp.where(keep, jnp.exp(s - lse[:, :, None]), 0.0)
    dov1 = pair_products(do, v1, v2.dtype)
    dp = _by_query(dot(dov1, v2, (1, 1)), q.shape[0])
    ds = p * (dp - delta[:, :, None])
    flat = lambda x: x.reshape(-1, x.shape[-1])  # noqa: E731
    return TileGradients(pairs, dov1, flat(p), flat(ds))


def dq_step(dq, q, k1, k2, v1, v2, do, lse, delta, keep, scale: float):
    """``dq += scale sum_j (dS K2) .* k1_j``."""
    t = tile_gradients(q, k1, k2, v1, v2, do, lse, delta, keep, scale)
    return dq + scale * sum_over_j(dot(t.ds.astype(k2.dtype), k2), k1, q.shape[0])


def dk1_dv1_step(dk1, dv1, q, k1, k2, v1, v2, do, lse, delta, keep, scale: float):
    """``dk1 += scale sum_i (dS K2) .* q_i``, ``dv1 += sum_i (P V2) .* dO_i``."""
    t = tile_gradients(q, k1, k2, v1, v2, do, lse, delta, keep, scale)
    return (dk1 + scale * sum_over_i(dot(t.ds.astype(k2.dtype), k2), q),
            dv1 + sum_over_i(dot(t.p.astype(v2.dtype), v2), do))


def dk2_dv2_step(dk2, dv2, q, k1, k2, v1, v2, do, lse, delta, keep, scale: float):
    """``dk2 += scale dS^T pairs``, ``dv2 += P^T dov1``."""
    t = tile_gradients(q, k1, k2, v1, v2, do, lse, delta, keep, scale)
    return (dk2 + scale * dot(t.ds.astype(t.pairs.dtype), t.pairs, (0, 0)),
            dv2 + dot(t.p.astype(t.dov1.dtype), t.dov1, (0, 0)))
