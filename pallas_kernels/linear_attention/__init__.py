"""Chunked linear attention (the simple-GLA core) as Pallas kernels with a ``custom_vjp``.

``S_t = exp(a_t) S_{t-1} + k_t^T v_t``, ``o_t = scale q_t S_t`` per (batch, head), computed chunk by
chunk (:mod:`.chunk_math`) in sweeps over the chunks (:func:`pallas_kernels.chunked.sweep`: TPU or
Triton kernels, chosen by lowering platform). The backward recomputes instead of saving per-chunk states: one
forward-order sweep for ``dQ`` (recomputing ``S``) and one reverse sweep for ``dK, dV`` and the
initial state's gradient. The forward's columns of ``V``, ``O`` and ``S`` are independent, so it may
run one program per (batch, head, block of ``block_v`` value columns)
(:class:`~pallas_kernels.chunked.block_sizes.ChunkedBlockSizes`); the backward's ``dQ`` and ``dK``
sum over all of V, so its sweeps run whole heads. The log decay's gradient follows from those in closed form:
``da_t = sum_{s >= t} (q_s . dq_s - k_s . dk_s) + <dS_T, S_T>``.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from pallas_kernels.chunked import sweep
from pallas_kernels.chunked.decay import chunk_cumsum
from pallas_kernels.linear_attention import chunk_math
from pallas_kernels.platform import Interpret

_NAME = "linear attention"


def _forward_body(scale):
    def body(blocks, decay, state):
        out, state = chunk_math.forward_chunk(*blocks, decay, state, scale)
        return [out], state

    return body


def _dq_body(scale):
    def body(blocks, decay, state):
        k, v, do = blocks
        return [chunk_math.dq_chunk(k, v, do, decay, state, scale)], chunk_math.next_state(k, v, decay, state)

    return body


def _dkv_body(scale):
    def body(blocks, decay, d_state):
        dk, dv, d_state = chunk_math.dkv_chunk(*blocks, decay, d_state, scale)
        return [dk, dv], d_state

    return body


def _forward(q, k, v, log_decay, initial_state, scale, chunk_size, block_sizes, interpret):
    b = chunk_cumsum(log_decay, chunk_size)
    # Each value column is its own recurrence: ChunkedBlockSizes.block_v may split V across programs.
    (out,), final = sweep(_forward_body(scale), (q, k, v), b, initial_state, [v.shape[-1]], chunk_size=chunk_size,
                          name=_NAME, value_inputs=(2,), value_outputs=(0,), block_sizes=block_sizes,
                          interpret=interpret)
    return (out, final), (q, k, v, log_decay, initial_state, final)


def _backward(scale, chunk_size, block_sizes, interpret, residuals, cotangents):
    q, k, v, log_decay, initial_state, final = residuals
    d_out, d_final = cotangents
    d_out = d_out.astype(v.dtype)
    b = chunk_cumsum(log_decay, chunk_size)
    options = dict(chunk_size=chunk_size, name=_NAME, block_sizes=block_sizes, interpret=interpret)
    (dq,), _ = sweep(_dq_body(scale), (k, v, d_out), b, initial_state, [q.shape[-1]], **options)
    (dk, dv), d_initial = sweep(
        _dkv_body(scale), (q, k, v, d_out), b, d_final, [k.shape[-1], v.shape[-1]], reverse=True, **options,
    )
    d_log_decay = None
    if log_decay is not None:
        per_token = jnp.sum(q * dq, axis=-1) - jnp.sum(k * dk, axis=-1)  # [B, H, T]
        through_final = jnp.sum(d_final * final, axis=(-2, -1))[..., None]
        d_log_decay = (jnp.flip(jnp.cumsum(jnp.flip(per_token, -1), -1), -1) + through_final).astype(log_decay.dtype)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), d_log_decay, d_initial


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8))
def chunked_linear_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    log_decay: Optional[jax.Array],
    initial_state: jax.Array,
    scale: float,
    chunk_size: int,
    block_sizes=None,
    interpret: Interpret = None,
) -> tuple[jax.Array, jax.Array]:
    """Causal linear attention on head-major inputs.

    Args:
      q, k: ``[B, H, T, K]``; v: ``[B, H, T, V]``; T a multiple of ``chunk_size``.
      log_decay: ``[B, H, T]`` per-token log decay ``a_t`` (gate plus constant), or None.
      initial_state: ``[B, H, K, V]`` fp32.
      scale: multiplies ``q_t S_t``.
      chunk_size: tokens per chunk (Triton: a power of two >= 16; TPU: a multiple of 8).
      block_sizes: a :class:`~pallas_kernels.chunked.block_sizes.ChunkedBlockSizes`, one per
        platform, or None (the defaults).
      interpret: see :func:`pallas_kernels.platform.interpreter_mode`.

    Returns:
      ``o [B, H, T, V]`` fp32 and the final state ``[B, H, K, V]`` fp32.
    """
    return _forward(q, k, v, log_decay, initial_state, scale, chunk_size, block_sizes, interpret)[0]


chunked_linear_attention.defvjp(_forward, _backward)
