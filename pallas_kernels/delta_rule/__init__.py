"""The chunked (gated) delta rule as Pallas kernels with a ``custom_vjp``.

Per (batch, head), over a sequence of delta steps ``t`` (DeltaProduct's ``n`` steps per token are
consecutive steps; a token's output is read at its last step, where its query sits):

    S_t = exp(a_t) (I - beta_t k_t^T k_t) S_{t-1} + beta_t k_t^T v_t,     o_t = scale q_t S_t

The per-chunk mathematics is :mod:`.chunk_math`. Forward: a parallel kernel computes every chunk's
WY/UT terms ``W, U`` (:func:`pallas_kernels.chunked.chunkwise`), then one sweep over the chunks
carries the fp32 ``[K, V]`` state and writes the outputs (:func:`pallas_kernels.chunked.sweep`).
Backward, from the inputs alone (nothing per chunk is saved by the forward): ``W, U`` again, a
forward sweep recording the state entering each chunk, a reverse sweep recording the state
gradient leaving each chunk, then a parallel kernel computing all input gradients chunk by
chunk. The two records are ``[B, H, T / C, K, V]`` fp32 and live only during the backward.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from pallas_kernels.chunked import chunkwise, sweep
from pallas_kernels.chunked.decay import ChunkDecay, chunk_cumsum
from pallas_kernels.delta_rule import chunk_math
from pallas_kernels.platform import Interpret

_NAME = "delta rule"


def _blocks(a: jax.Array, chunk_size: int) -> jax.Array:
    """``[B, H, T, D] -> [B, H, N, C, D]``."""
    return a.reshape(*a.shape[:2], -1, chunk_size, a.shape[-1])


def _columns(a: jax.Array, chunk_size: int) -> jax.Array:
    """``[B, H, T] -> [B, H, N, C, 1]``."""
    return a.astype(jnp.float32).reshape(*a.shape[:2], -1, chunk_size, 1)


def _decay_blocks(b: Optional[jax.Array], chunk_size: int) -> list:
    """``b`` as columns and rows per chunk, or nothing without gates."""
    if b is None:
        return []
    return [_columns(b, chunk_size), b.reshape(*b.shape[:2], -1, 1, chunk_size)]


def _decay(rest) -> Optional[ChunkDecay]:
    return ChunkDecay.from_col_row(*rest) if rest else None


def _prepare(k, v, beta, b, chunk_size, kernel_options):
    """Every chunk's ``W [B, H, T, K]`` and ``U [B, H, T, V]`` (fp32)."""
    def body(blocks):
        k, v, beta, *rest = blocks
        return chunk_math.prepare_chunk(k, v, beta, _decay(rest))

    inputs = [_blocks(k, chunk_size), _blocks(v, chunk_size), _columns(beta, chunk_size), *_decay_blocks(b, chunk_size)]
    w, u = chunkwise(body, inputs, [(chunk_size, k.shape[-1]), (chunk_size, v.shape[-1])], name=f"{_NAME} prepare",
                     **kernel_options)
    return w.reshape(k.shape), u.reshape(v.shape)


def _forward_body(scale):
    def body(blocks, decay, state):
        out, state = chunk_math.forward_chunk(*blocks, decay, state, scale)
        return [out], state

    return body


def _state_body(blocks, decay, state):
    return [], chunk_math.state_chunk(*blocks, decay, state)


def _reverse_body(scale):
    def body(blocks, decay, d_state):
        return [], chunk_math.reverse_chunk(*blocks, decay, d_state, scale)

    return body


def _kernel_options(block_sizes, interpret) -> dict:
    return dict(block_sizes=block_sizes, interpret=interpret)


def _forward(q, k, v, beta, log_decay, initial_state, scale, chunk_size, block_sizes, interpret):
    options = _kernel_options(block_sizes, interpret)
    b = chunk_cumsum(log_decay, chunk_size)
    w, u = _prepare(k, v, beta, b, chunk_size, options)
    (out,), final = sweep(_forward_body(scale), (q, k, w, u), b, initial_state, [v.shape[-1]], chunk_size=chunk_size,
                          name=_NAME, **options)
    return (out, final), (q, k, v, beta, log_decay, initial_state)


def _backward(scale, chunk_size, block_sizes, interpret, residuals, cotangents):
    q, k, v, beta, log_decay, initial_state = residuals
    d_out, d_final = cotangents
    gated = log_decay is not None
    options = _kernel_options(block_sizes, interpret)
    b = chunk_cumsum(log_decay, chunk_size)
    w, u = _prepare(k, v, beta, b, chunk_size, options)
    _, _, states = sweep(_state_body, (k, w, u), b, initial_state, [], chunk_size=chunk_size, name=_NAME,
                         carry_history=True, **options)
    _, d_initial, d_states = sweep(_reverse_body(scale), (q, k, w, d_out), b, d_final, [], chunk_size=chunk_size,
                                   name=_NAME, reverse=True, carry_history=True, **options)

    def body(blocks):
        q, k, v, beta, *rest = blocks
        decay_blocks, (state, d_state, do) = rest[:-3], rest[-3:]
        return chunk_math.gradient_chunk(q, k, v, beta, _decay(decay_blocks), state, d_state, do, scale)

    inputs = [_blocks(q, chunk_size), _blocks(k, chunk_size), _blocks(v, chunk_size), _columns(beta, chunk_size),
              *_decay_blocks(b, chunk_size), states, d_states, _blocks(d_out, chunk_size)]
    key_dim, value_dim = k.shape[-1], v.shape[-1]
    out_blocks = [(chunk_size, key_dim), (chunk_size, key_dim), (chunk_size, value_dim), (chunk_size, 1)]
    if gated:
        out_blocks += [(chunk_size, 1), (1, chunk_size)]
    dq, dk, dv, d_beta, *d_b = chunkwise(body, inputs, out_blocks, name=f"{_NAME} gradients", **options)
    d_log_decay = None
    if gated:  # b is the in-chunk cumulative sum of the log decay: its gradient is a reverse one
        d_cum = d_b[0][..., 0] + d_b[1][..., 0, :]  # [B, H, N, C]
        d_log_decay = jnp.flip(jnp.cumsum(jnp.flip(d_cum, -1), -1), -1).reshape(log_decay.shape).astype(log_decay.dtype)
    return (dq.reshape(q.shape).astype(q.dtype), dk.reshape(k.shape).astype(k.dtype), dv.reshape(v.shape).astype(v.dtype),
            d_beta.reshape(beta.shape).astype(beta.dtype), d_log_decay, d_initial)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8, 9))
def chunked_delta_rule(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    beta: jax.Array,
    log_decay: Optional[jax.Array],
    initial_state: jax.Array,
    scale: float,
    chunk_size: int,
    block_sizes=None,
    interpret: Interpret = None,
) -> tuple[jax.Array, jax.Array]:
    """The delta rule over delta steps, head-major.

    Args:
      q: ``[B, H, T, K]`` queries, zero at steps whose output is not read.
      k: ``[B, H, T, K]`` keys; v: ``[B, H, T, V]`` values; beta: ``[B, H, T]`` step sizes.
      log_decay: ``[B, H, T]`` per-step log decay ``a_t``, or None.
      initial_state: ``[B, H, K, V]`` fp32.
      scale: multiplies ``q_t S_t``.
      chunk_size: steps per chunk, T a multiple of it (Triton: a power of two >= 16; TPU: a
        multiple of 8).
      block_sizes: a :class:`~pallas_kernels.chunked.block_sizes.ChunkedBlockSizes`, one per
        platform, or None (the defaults).
      interpret: see :func:`pallas_kernels.platform.interpreter_mode`.

    Returns:
      ``o [B, H, T, V]`` fp32 and the final state ``[B, H, K, V]`` fp32.
    """
    return _forward(q, k, v, beta, log_decay, initial_state, scale, chunk_size, block_sizes, interpret)[0]


chunked_delta_rule.defvjp(_forward, _backward)
