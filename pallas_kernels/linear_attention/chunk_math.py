"""Per-chunk mathematics of chunked linear attention, shared by the TPU and the Triton kernels.

One chunk of C tokens of one (batch, head): ``q, k [C, K]``, ``v, do [C, V]``, the state
``S [K, V]`` fp32, and ``b [C]`` the in-chunk inclusive cumulative log decay with ``lam = b[C-1]``,
given as a :class:`ChunkDecay` (``None`` without decay).
With ``W_ij = exp(b_i - b_j) [i >= j]`` (masked before ``exp``):

  forward   ``O = s (Q K^T .* W) V + s (Q .* e^b) S``,   ``S' = e^lam S + (K .* e^(lam-b))^T V``
  dq sweep  ``dQ = s (dO V^T .* W) K + s (dO .* e^b) S^T``  (forward order, S recomputed)
  dkv sweep ``dK = s (dO V^T .* W)^T Q + e^(lam-b) .* (V dS'^T)``,
            ``dV = s (Q K^T .* W)^T dO + e^(lam-b) .* (K dS')``,
            ``dS = e^lam dS' + s (Q .* e^b)^T dO``  (reverse order; ``dS'`` is the gradient of the
            state after the chunk)

Everything accumulates in fp32. The functions take and return arrays, so a kernel body is loads,
one call and stores.

See docs/linear_attention.md#the-pallas-kernels.
"""

from typing import Optional

from pallas_kernels.chunked.decay import ChunkDecay, decay_factors, decay_matrix
from pallas_kernels.dot import dot


def next_state(k, v, decay: Optional[ChunkDecay], state):
    """``S' = e^lam S + (K .* e^(lam - b))^T V``."""
    _, to_end, total = decay_factors(decay)
    return total * state + dot((k * to_end).astype(v.dtype), v, (0, 0))


def forward_chunk(q, k, v, decay: Optional[ChunkDecay], state, scale: float):
    """``(O [C, V] fp32, S' [K, V])`` for one chunk."""
    weights = decay_matrix(q.shape[0], decay)
    from_start, _, _ = decay_factors(decay)
    scores = (scale * dot(q, k, (1, 1)) * weights).astype(v.dtype)
    out = dot(scores, v) + scale * dot((q * from_start).astype(q.dtype), state.astype(q.dtype))
    return out, next_state(k, v, decay, state)


def dq_chunk(k, v, do, decay: Optional[ChunkDecay], state, scale: float):
    """``dQ [C, K]`` fp32 of one chunk given the state before it."""
    weights = decay_matrix(do.shape[0], decay)
    from_start, _, _ = decay_factors(decay)
    d_scores = (scale * dot(do, v, (1, 1)) * weights).astype(k.dtype)
    return dot(d_scores, k) + scale * dot((do * from_start).astype(do.dtype), state.astype(do.dtype), (1, 1))


def dkv_chunk(q, k, v, do, decay: Optional[ChunkDecay], d_state, scale: float):
    """``(dK [C, K], dV [C, V], dS [K, V])`` of one chunk given ``dS'``, the gradient of the state after it."""
    weights = decay_matrix(q.shape[0], decay)
    from_start, to_end, total = decay_factors(decay)
    d_scores = (scale * dot(do, v, (1, 1)) * weights).astype(q.dtype)
    scores = (scale * dot(q, k, (1, 1)) * weights).astype(do.dtype)
    d_state_in = d_state.astype(v.dtype)
    dk = dot(d_scores, q, (0, 0)) + to_end * dot(v, d_state_in, (1, 1))
    dv = dot(scores, do, (0, 0)) + to_end * dot(k, d_state_in.astype(k.dtype))
    d_state_before = total * d_state + scale * dot((q * from_start).astype(do.dtype), do, (0, 0))
    return dk, dv, d_state_before
