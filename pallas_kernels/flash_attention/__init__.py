"""Flash softmax attention (FlashAttention-2) as Pallas kernels with a ``custom_vjp``.

``o_i = sum_j softmax_j(scale q_i . k_j + mask) v_j`` computed block by block with an online
softmax, never forming the ``[Tq, Tk]`` score matrix. The backward recomputes the probabilities
from the saved row log-sum-exp: one pass over key blocks per query block for ``dQ`` and one over
query blocks per key block for ``dK, dV``, with ``dS = P .* (dP - rowsum(dO .* O))``. The math is
in :mod:`.block_math`, the passes in :mod:`.passes`, the block loops in :mod:`.tpu` and
:mod:`.triton`, chosen by lowering platform.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from pallas_kernels.flash_attention import passes, tpu, triton
from pallas_kernels.platform import run_on_platform


def _run(make_pass, outer, inner, q_segments, k_segments, *, outer_is_query, causal_offset, num_keys):
    """One pass on the platform's kernel, with that backend's block sizes."""

    def on(backend):
        def run(outer, inner, q_segments, k_segments, interpret):
            outer_length, inner_length = outer[0].shape[2], inner[0].shape[2]
            operands = [*outer, *inner]
            layout = passes.Layout(
                outer, inner, q_segments, k_segments, outer_is_query, backend.block_size(outer_length, operands),
                backend.block_size(inner_length, operands), causal_offset, num_keys,
            )
            return backend.run(make_pass, layout, interpret=interpret)

        return run

    return run_on_platform(list(outer), list(inner), q_segments, k_segments, tpu=on(tpu), gpu=on(triton))


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _attention(q, k, v, q_segments, k_segments, scale, causal_offset, num_keys):
    return _forward(q, k, v, q_segments, k_segments, scale, causal_offset, num_keys)[0]


def _forward(q, k, v, q_segments, k_segments, scale, causal_offset, num_keys):
    out, lse = _run(passes.forward_pass(scale), [q], [k, v], q_segments, k_segments, outer_is_query=True,
                    causal_offset=causal_offset, num_keys=num_keys)
    return out, (q, k, v, q_segments, k_segments, out, lse)


def _backward(scale, causal_offset, num_keys, residuals, d_out):
    q, k, v, q_segments, k_segments, out, lse = residuals
    delta = jnp.sum(d_out * out, axis=-1, keepdims=True)  # rowsum(dO .* O) [B, H, Tq, 1]
    d_out = d_out.astype(v.dtype)
    mask = dict(causal_offset=causal_offset, num_keys=num_keys)
    (dq,) = _run(passes.dq_pass(scale), [q, d_out, lse, delta], [k, v], q_segments, k_segments,
                 outer_is_query=True, **mask)
    dk, dv = _run(passes.dkv_pass(scale), [k, v], [q, d_out, lse, delta], q_segments, k_segments,
                  outer_is_query=False, **mask)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None, None


_attention.defvjp(_forward, _backward)


def _padded_length(length: int) -> int:
    """A length every backend's block divides: a multiple of 128, or a power of two >= 16 below it."""
    if length >= tpu.BLOCK:
        return -(-length // tpu.BLOCK) * tpu.BLOCK
    return max(16, pl.next_power_of_2(length))


def flash_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, *, scale: float, causal: bool, segment_ids: Optional[jax.Array] = None
) -> jax.Array:
    """``[B, Tq, H, D] x [B, Tk, H, D] x [B, Tk, H, Dv] -> [B, Tq, H, Dv]`` fp32.

    With ``causal`` queries are aligned with the last keys (query i sees keys ``j <= i + Tk - Tq``).
    ``segment_ids [B, T]`` (needs ``Tq == Tk``) masks pairs from different segments.
    """
    length_q, length_k = q.shape[1], k.shape[1]

    def head_major(a, length):
        a = jnp.swapaxes(a, 1, 2)
        return jnp.pad(a, ((0, 0), (0, 0), (0, _padded_length(length) - length), (0, 0)))

    q_segments = k_segments = None
    if segment_ids is not None:
        q_segments = jnp.pad(segment_ids, ((0, 0), (0, _padded_length(length_q) - length_q)), constant_values=-1)
        k_segments = jnp.pad(segment_ids, ((0, 0), (0, _padded_length(length_k) - length_k)), constant_values=-2)
    out = _attention(
        head_major(q, length_q), head_major(k, length_k), head_major(v, length_k), q_segments, k_segments,
        float(scale), (length_k - length_q) if causal else None, length_k,
    )
    return jnp.swapaxes(out[:, :, :length_q], 1, 2)
