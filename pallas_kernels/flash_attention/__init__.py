"""Flash softmax attention (FlashAttention-2) as Pallas kernels with a ``custom_vjp``.

``o_i = sum_j softmax_j(scale q_i . k_j + mask) v_j`` computed block by block with an online
softmax, never forming the ``[Tq, Tk]`` score matrix. The backward recomputes the probabilities
from the saved row log-sum-exp: one pass over key blocks per query block for ``dQ`` and one over
query blocks per key block for ``dK, dV``, with ``dS = P .* (dP - rowsum(dO .* O))``. The math is
in :mod:`.block_math`, the passes in :mod:`.passes`, the block loops in :mod:`.tpu` and
:mod:`.triton`, chosen by lowering platform, their tile sizes in
:class:`~pallas_kernels.flash_attention.block_sizes.FlashBlockSizes`.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from pallas_kernels.block_sizes import operand_class, padded_length
from pallas_kernels.flash_attention import mosaic_gpu, passes, tpu, triton
from pallas_kernels.flash_attention.block_sizes import MOSAIC_GPU, FlashBlockSizes
from pallas_kernels.platform import Interpret, run_on_platform


def _run(make_pass, outer, inner, q_segments, k_segments, *, outer_is_query, causal_offset, num_keys, sizes,
         interpret, mosaic=None):
    """One pass on the platform's kernel with its block sizes (``sizes``: TPU's, Triton's and Mosaic
    GPU's :class:`FlashBlockSizes`); ``mosaic``: the pass's Mosaic GPU branch, if any."""

    def on(backend, block_sizes):
        def run(outer, inner, q_segments, k_segments, interpret):
            outer_length, inner_length = outer[0].shape[2], inner[0].shape[2]
            blocks = (block_sizes.block_q, block_sizes.block_k)
            block_outer, block_inner = blocks if outer_is_query else blocks[::-1]
            layout = passes.Layout(
                outer, inner, q_segments, k_segments, outer_is_query, backend.block_size(outer_length, block_outer),
                backend.block_size(inner_length, block_inner), causal_offset, num_keys,
            )
            return backend.run(make_pass, layout, block_sizes, interpret=interpret)

        return run

    tpu_sizes, triton_sizes, _ = sizes
    return run_on_platform(list(outer), list(inner), q_segments, k_segments, tpu=on(tpu, tpu_sizes),
                           gpu=on(triton, triton_sizes), interpret=interpret, mosaic_gpu=mosaic)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8, 9))
def _attention(q, k, v, q_segments, k_segments, scale, causal_offset, num_keys, sizes, interpret):
    return _forward(q, k, v, q_segments, k_segments, scale, causal_offset, num_keys, sizes, interpret)[0]


def _forward(q, k, v, q_segments, k_segments, scale, causal_offset, num_keys, sizes, interpret):
    mosaic = mosaic_gpu.forward_branch(q, k, v, q_segments, scale=scale, causal_offset=causal_offset,
                                       num_keys=num_keys, block_sizes=sizes[2])
    out, lse = _run(passes.forward_pass(scale), [q], [k, v], q_segments, k_segments, outer_is_query=True,
                    causal_offset=causal_offset, num_keys=num_keys, sizes=sizes, interpret=interpret, mosaic=mosaic)
    return out, (q, k, v, q_segments, k_segments, out, lse)


def _backward(scale, causal_offset, num_keys, sizes, interpret, residuals, d_out):
    q, k, v, q_segments, k_segments, out, lse = residuals
    delta = jnp.sum(d_out * out, axis=-1, keepdims=True)  # rowsum(dO .* O) [B, H, Tq, 1]
    d_out = d_out.astype(v.dtype)
    # The backward passes are Triton's: interpreting the Mosaic GPU forward interprets them.
    interpret = True if interpret == "mosaic_gpu" else interpret
    mask = dict(causal_offset=causal_offset, num_keys=num_keys, sizes=sizes, interpret=interpret)
    (dq,) = _run(passes.dq_pass(scale), [q, d_out, lse, delta], [k, v], q_segments, k_segments,
                 outer_is_query=True, **mask)
    dk, dv = _run(passes.dkv_pass(scale), [k, v], [q, d_out, lse, delta], q_segments, k_segments,
                  outer_is_query=False, **mask)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None, None


_attention.defvjp(_forward, _backward)


def flash_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, *, scale: float, causal: bool, segment_ids: Optional[jax.Array] = None,
    block_sizes=None, interpret: Interpret = None,
) -> jax.Array:
    """``[B, Tq, H, D] x [B, Tk, H, D] x [B, Tk, H, Dv] -> [B, Tq, H, Dv]`` fp32.

    With ``causal`` queries are aligned with the last keys (query i sees keys ``j <= i + Tk - Tq``).
    ``segment_ids [B, T]`` (needs ``Tq == Tk``) masks pairs from different segments.
    ``block_sizes``: a :class:`FlashBlockSizes`, one per platform, or None (the defaults);
    ``interpret``: see :func:`pallas_kernels.platform.interpreter_mode`. Sequences are padded to a
    length every block of both platforms divides.
    """
    length_q, length_k = q.shape[1], k.shape[1]
    mosaic_sizes = FlashBlockSizes.resolve(block_sizes, MOSAIC_GPU)  # not tuned: no lookup for its platform
    block_sizes = FlashBlockSizes.tuned(block_sizes, "softmax_attention", operand_class([q, k, v])[0], queries=length_q,
                                        keys=length_k, head_dim=q.shape[-1], value_dim=v.shape[-1],
                                        batch_heads=q.shape[0] * q.shape[2])
    sizes = FlashBlockSizes.for_each_platform(block_sizes, *operand_class([q, k, v]))
    padded_q = padded_length(length_q, [s.block_q for s in sizes])  # the Mosaic GPU kernel pads its own
    padded_k = padded_length(length_k, [s.block_k for s in sizes])
    sizes += (mosaic_sizes,)

    def head_major(a, length, padded):
        a = jnp.swapaxes(a, 1, 2)
        return jnp.pad(a, ((0, 0), (0, 0), (0, padded - length), (0, 0)))

    q_segments = k_segments = None
    if segment_ids is not None:
        q_segments = jnp.pad(segment_ids, ((0, 0), (0, padded_q - length_q)), constant_values=-1)
        k_segments = jnp.pad(segment_ids, ((0, 0), (0, padded_k - length_k)), constant_values=-2)
    out = _attention(
        head_major(q, length_q, padded_q), head_major(k, length_k, padded_k), head_major(v, length_k, padded_k),
        q_segments, k_segments, float(scale), (length_k - length_q) if causal else None, length_k, sizes, interpret,
    )
    return jnp.swapaxes(out[:, :, :length_q], 1, 2)
