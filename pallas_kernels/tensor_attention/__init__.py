"""Exact 2-simplicial (Kronecker) tensor attention as Pallas kernels with a ``custom_vjp``.

``out_i = sum_{j,k} softmax_{(j,k)}(scale sum_l q_il k1_jl k2_kl) (v1_j .* v2_k)`` computed tile by
tile (a query block x a k1 block x a k2 block) with an online softmax over the pairs ``(j, k)``,
never forming more than one ``[bi * bj, bk]`` score tile: the pair products ``q_i .* k1_j`` of a
query block and a k1 block are the rows of a matrix multiplied by the k2 tile. The backward
recomputes the probabilities from the saved row log-sum-exp, with ``dS = P .* (dP - rowsum(dO .* O))``,
in three passes: over k1 and k2 blocks per query block for ``dq``, over query and k2 blocks per k1
block for ``dk1, dv1``, over query and k1 blocks per k2 block for ``dk2, dv2``. The math is in
:mod:`.block_math`, the passes in :mod:`.passes`, the tile loops in :mod:`.tpu` and :mod:`.triton`,
chosen by lowering platform, their tile sizes in
:class:`~pallas_kernels.tensor_attention.block_sizes.TensorBlockSizes`. Tiles that the causal or
window mask (or the padding) hides entirely are skipped.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from pallas_kernels.block_sizes import padded_length
from pallas_kernels.platform import Interpret, run_on_platform
from pallas_kernels.tensor_attention import passes, tpu, triton
from pallas_kernels.tensor_attention.block_sizes import TensorBlockSizes


def _run(make_pass, queries, k1s, k2s, mask, sizes, interpret):
    """One pass on the platform's kernel with its block sizes (``sizes``: TPU's and Triton's
    :class:`TensorBlockSizes`)."""

    def on(backend, block_sizes):
        def run(queries, k1s, k2s, interpret):
            layout = passes.Layout((queries, k1s, k2s), backend.block_sizes(queries[0].shape[1], block_sizes), **mask)
            return backend.run(make_pass, layout, block_sizes, interpret=interpret)

        return run

    tpu_sizes, triton_sizes = sizes
    return run_on_platform(list(queries), list(k1s), list(k2s), tpu=on(tpu, tpu_sizes), gpu=on(triton, triton_sizes),
                           interpret=interpret)


def _mask(length, causal, window):
    return dict(length=length, causal=causal, window=window)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8, 9, 10))
def _attention(q, k1, k2, v1, v2, scale, length, causal, window, sizes, interpret):
    return _forward(q, k1, k2, v1, v2, scale, length, causal, window, sizes, interpret)[0]


def _forward(q, k1, k2, v1, v2, scale, length, causal, window, sizes, interpret):
    out, lse = _run(passes.forward_pass(scale), [q], [k1, v1], [k2, v2], _mask(length, causal, window), sizes,
                    interpret)
    return out, (q, k1, k2, v1, v2, out, lse)


def _backward(scale, length, causal, window, sizes, interpret, residuals, d_out):
    q, k1, k2, v1, v2, out, lse = residuals
    delta = jnp.sum(d_out * out, axis=-1, keepdims=True)  # rowsum(dO .* O) [G, T, 1]
    operands = ([q, d_out.astype(v1.dtype), lse, delta], [k1, v1], [k2, v2])
    options = (_mask(length, causal, window), sizes, interpret)
    (dq,) = _run(passes.dq_pass(scale), *operands, *options)
    dk1, dv1 = _run(passes.dk1_dv1_pass(scale), *operands, *options)
    dk2, dv2 = _run(passes.dk2_dv2_pass(scale), *operands, *options)
    grads = (dq, dk1, dk2, dv1, dv2)
    return tuple(g.astype(a.dtype) for g, a in zip(grads, (q, k1, k2, v1, v2)))


_attention.defvjp(_forward, _backward)


def tensor_attention(
    q: jax.Array, k1: jax.Array, k2: jax.Array, v1: jax.Array, v2: jax.Array, *, scale: float, causal: bool = False,
    window: Optional[tuple[int, int]] = None, block_sizes=None, interpret: Interpret = None,
) -> jax.Array:
    """``[B, T, H, D]^3 x [B, T, H, Dv]^2 -> [B, T, H, Dv]`` fp32.

    ``causal``: pairs with ``j, k <= i``; ``window=(w1, w2)``: ``i - w1 < j <= i``, ``i - w2 < k <= i``
    (implies causal). Inputs run in their (common) dtype; softmax statistics and accumulators are fp32.
    ``block_sizes``: a :class:`TensorBlockSizes`, one per platform, or None (the defaults);
    ``interpret``: see :func:`pallas_kernels.platform.interpreter_mode`. The sequence is padded to a
    length every block of both platforms divides.
    """
    batch, length, heads = q.shape[:3]
    key_dtype, value_dtype = jnp.result_type(q, k1, k2), jnp.result_type(v1, v2)
    block_sizes = TensorBlockSizes.tuned(block_sizes, "tensor_attention", key_dtype, length=length,
                                         head_dim=q.shape[-1], value_dim=v1.shape[-1], batch_heads=batch * heads)
    sizes = TensorBlockSizes.for_each_platform(block_sizes, key_dtype, q.shape[-1])
    padded = padded_length(length, [b for s in sizes for b in s.blocks])

    def head_major(a, dtype):
        a = jnp.swapaxes(a.astype(dtype), 1, 2).reshape(batch * heads, length, a.shape[-1])
        return jnp.pad(a, ((0, 0), (0, padded - length), (0, 0)))

    window = None if window is None else (int(window[0]), int(window[1]))
    out = _attention(
        *(head_major(a, key_dtype) for a in (q, k1, k2)), *(head_major(a, value_dtype) for a in (v1, v2)),
        float(scale), length, bool(causal) or window is not None, window, sizes, interpret,
    )
    return jnp.swapaxes(out[:, :length].reshape(batch, heads, length, -1), 1, 2)
